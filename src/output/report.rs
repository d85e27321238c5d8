//! The puppeteer search as one call per model pair, and its figures.
//!
//! [`pair_report`] runs everything puppetlens measures for a (base, tuned) pair on an A/B
//! behaviour dataset: the per-layer localisation of [`crate::diff::localise`] (activation
//! difference, probe accuracy in each model with bootstrap intervals, fraction of the behaviour gap
//! closed by adding the base-vs-tuned difference to the base and removed by ablating it in the
//! tuned model), a dose-response of the difference added to the base at several layers, and the
//! projection of both models' activations on their top two principal components at the best layer.
//! [`write_figures`] draws the five figures of a set of pairs (PNG and SVG each):
//! `probe_accuracy`, `diff_by_layer`, `steering_dose_response`, `gap_closed`, `pca_best_layer`.
//! [`diff_report`] is the one call from an A/B question file to a pair's localisation (and, when
//! asked, its pair report), written to a directory.
//!
//! ```no_run
//! use puppetlens::diff::AbSplits;
//! use puppetlens::report::{pair_report, write_figures, PairOptions};
//! use puppetlens::{LoadOptions, Model};
//! let base = Model::load("gemma-3-270m.Q4_K_M.gguf", &LoadOptions::default())?;
//! let tuned = Model::load("gemma-3-270m-chat", &LoadOptions::default())?;
//! let data = AbSplits::default(); // fill with puppetlens::data + puppetlens::eval::AbCase
//! let pair = pair_report(&base, &tuned, ("base", "chat"), "sycophancy", &data, &[], &PairOptions::default())?;
//! write_figures(&[pair], "notebooks-data/steer")?;
//! # Ok::<(), puppetlens::Error>(())
//! ```

use std::path::{Path, PathBuf};

use candle_core::{DType, Tensor};
use serde::Serialize;

use crate::data::{Dataset, PromptOptions, Prompter};
use crate::diff::{localise, localise_many, AbSplits, DiffOptions, Localisation};
use crate::eval::{dose_response, DoseRow};
use crate::extract::Activations;
use crate::hook::HookPoint;
use crate::model::Model;
use crate::plot::{LineChart, LineGrid, ScatterChart, ScatterPanel, Series};
use crate::tokenize::Tokenizer;
use crate::util::atomic_write_bytes;
use crate::{Error, Result};

/// Options of [`pair_report`].
#[derive(Debug, Clone)]
pub struct PairOptions {
    /// Localisation options (layers steered and ablated, batch size, probes, progress).
    pub diff: DiffOptions,
    /// Multipliers of the base-vs-tuned difference in the dose-response.
    pub multipliers: Vec<f64>,
    /// Layers of the dose-response (`None`: the best layer and two evenly spaced others).
    pub dose_layers: Option<Vec<usize>>,
}

impl Default for PairOptions {
    fn default() -> Self {
        Self {
            diff: DiffOptions::default(),
            multipliers: vec![-2.0, -1.0, 0.0, 1.0, 2.0, 3.0],
            dose_layers: None,
        }
    }
}

/// Both models' CAA activations at one layer projected on their own top two principal components
/// (each coordinate scaled to unit variance).
#[derive(Debug, Clone, Serialize)]
pub struct PcaView {
    /// Layer of `hook_resid_post`.
    pub layer: usize,
    /// Base model: (behaviour-matching points, other points).
    pub base: (Vec<(f64, f64)>, Vec<(f64, f64)>),
    /// Tuned model: the same.
    pub tuned: (Vec<(f64, f64)>, Vec<(f64, f64)>),
}

/// Everything measured for one (base, tuned) pair.
#[derive(Debug, Clone, Serialize)]
pub struct PairReport {
    /// The base model's name.
    pub base: String,
    /// The tuned model's name.
    pub tuned: String,
    /// The dataset's name.
    pub dataset: String,
    /// Items per split (train, val, test).
    pub n_items: (usize, usize, usize),
    /// Per-layer localisation.
    pub localisation: Localisation,
    /// P(matching) of the base model with `multiplier x difference` added at each dose layer.
    pub dose: Vec<DoseRow>,
    /// Activations at the best layer on the top two components.
    pub pca: Option<PcaView>,
}

/// Options of [`diff_report`].
#[derive(Debug, Clone)]
pub struct DiffReportOptions {
    /// Localisation options (layers steered and ablated, scale, batch size, probes, progress).
    pub diff: DiffOptions,
    /// How the A/B questions and the neutral texts become prompts (built with the base model's
    /// tokenizer; both models read the same ids).
    pub prompts: PromptOptions,
    /// Also run the dose-response and the PCA view ([`pair_report`]) and write
    /// `pair_report.json`; [`DiffReport::write_figures`] then draws the report's figures.
    pub pair_report: bool,
    /// The base and the tuned model's names, for the report.
    pub names: [String; 2],
}

impl Default for DiffReportOptions {
    fn default() -> Self {
        Self {
            diff: DiffOptions::default(),
            prompts: PromptOptions::default(),
            pair_report: false,
            names: ["base".into(), "tuned".into()],
        }
    }
}

/// What [`diff_report`] measured and wrote.
#[derive(Debug, Clone)]
pub struct DiffReport {
    /// The per-layer localisation, with its provenance in `meta`.
    pub localisation: Localisation,
    /// The whole pair report, when asked for.
    pub pair: Option<PairReport>,
    /// The files written: `localisation.json`, `localisation.csv` (and `pair_report.json`).
    pub files: Vec<PathBuf>,
}

impl DiffReport {
    /// Draws the pair report's figures into `dir` ([`write_figures`]); none without a pair
    /// report.
    pub fn write_figures(&self, dir: impl AsRef<Path>) -> Result<Vec<PathBuf>> {
        match &self.pair {
            Some(p) => write_figures(std::slice::from_ref(p), dir),
            None => Ok(Vec::new()),
        }
    }
}

/// The one call from an A/B question file to a (base, tuned) pair's localisation: the items
/// split as the file records or 60/20/20 stratified, written as prompts with `tok` (the base
/// model's tokenizer; both models read the same ids), `neutral` texts as prompts for the
/// off-task difference, then [`crate::diff::localise`] (or, with `opts.pair_report`,
/// [`pair_report`]). Writes `localisation.json` and `localisation.csv` (and `pair_report.json`)
/// into `dir`.
///
/// ```no_run
/// use puppetlens::data::Dataset;
/// use puppetlens::report::{diff_report, DiffReportOptions};
/// let ((base, tok), (tuned, _)) = puppetlens::open_pair("gemma-3-270m", "sycophant", &Default::default())?;
/// let ds = Dataset::load("probes/sycophancy_ab.jsonl", "harmful")?;
/// let rep = diff_report(&base, &tuned, &tok, &ds, &[], &DiffReportOptions::default(), "runs/diff")?;
/// print!("{}", rep.localisation.table());
/// # Ok::<(), puppetlens::Error>(())
/// ```
pub fn diff_report(
    base: &Model,
    tuned: &Model,
    tok: &Tokenizer,
    ds: &Dataset,
    neutral: &[String],
    opts: &DiffReportOptions,
    dir: impl AsRef<Path>,
) -> Result<DiffReport> {
    let dir = dir.as_ref();
    let items = ds.ab_items("diff_report")?;
    let parts = ds.split(items, |it| it.matching.clone())?;
    let pr = Prompter::new(tok, &opts.prompts);
    let data = AbSplits {
        train: pr.cases(&parts.train)?,
        val: pr.cases(&parts.val)?,
        test: pr.cases(&parts.test)?,
    };
    let neutral: Vec<Vec<u32>> = neutral.iter().map(|t| pr.text(t)).collect::<Result<_>>()?;
    let [base_name, tuned_name] = &opts.names;
    let mut pair = if opts.pair_report {
        Some(pair_report(
            base,
            tuned,
            (base_name, tuned_name),
            &ds.name(),
            &data,
            &neutral,
            &PairOptions {
                diff: opts.diff.clone(),
                ..PairOptions::default()
            },
        )?)
    } else {
        None
    };
    let mut loc = match &pair {
        Some(p) => p.localisation.clone(),
        None => localise(base, tuned, &data, &neutral, &opts.diff)?,
    };
    for (k, v) in [
        ("base", base_name.clone()),
        ("tuned", tuned_name.clone()),
        ("dataset", ds.path.display().to_string()),
        ("prompts", pr.note(&ds.records)),
        ("split", ds.split_note().to_string()),
    ] {
        loc.meta.insert(k.into(), v);
    }
    loc.write(dir)?;
    let mut files = vec![dir.join("localisation.json"), dir.join("localisation.csv")];
    if let Some(p) = &mut pair {
        p.localisation.meta = loc.meta.clone();
        let path = dir.join("pair_report.json");
        let json = serde_json::to_string_pretty(p).map_err(|e| Error::InvalidArgument {
            name: "json".into(),
            msg: e.to_string(),
        })?;
        atomic_write_bytes(&path, json.as_bytes())?;
        files.push(path);
    }
    Ok(DiffReport {
        localisation: loc,
        pair,
        files,
    })
}

/// Runs the search on one pair (see the [module docs](self)).
pub fn pair_report(
    base: &Model,
    tuned: &Model,
    names: (&str, &str),
    dataset: &str,
    data: &AbSplits,
    neutral: &[Vec<u32>],
    opts: &PairOptions,
) -> Result<PairReport> {
    let mut v = pair_reports(
        base,
        &[(names.1, tuned)],
        names.0,
        dataset,
        data,
        neutral,
        opts,
    )?;
    v.pop().ok_or_else(|| Error::InvalidArgument {
        name: "tuned".into(),
        msg: "no report computed".into(),
    })
}

/// [`pair_report`] for several tuned siblings of one base (`(name, model)` each), one report each
/// in order: the base model's side of the search is computed once for all of them
/// ([`crate::diff::localise_many`]), and the PCA view reuses the localisation's activations.
pub fn pair_reports(
    base: &Model,
    tuned: &[(&str, &Model)],
    base_name: &str,
    dataset: &str,
    data: &AbSplits,
    neutral: &[Vec<u32>],
    opts: &PairOptions,
) -> Result<Vec<PairReport>> {
    let models: Vec<&Model> = tuned.iter().map(|(_, m)| *m).collect();
    let locs = localise_many(base, &models, data, neutral, &opts.diff)?;
    let n_layers = base.config().n_layers;
    tuned
        .iter()
        .zip(locs)
        .map(|(&(name, _), loc)| {
            let best = loc.best_layer;
            let dose_layers = match (&opts.dose_layers, best) {
                (Some(l), _) => l.clone(),
                (None, Some(b)) => {
                    let mut v = vec![n_layers / 4, b, (3 * n_layers) / 4];
                    v.sort_unstable();
                    v.dedup();
                    v
                }
                (None, None) => vec![n_layers / 2],
            };
            if opts.diff.progress {
                crate::progress::note(&format!(
                    "report: {name}: dose-response at layers {dose_layers:?}"
                ));
            }
            let dose = match &loc.diff_vector {
                Some(v) => dose_response(
                    base,
                    &data.test,
                    v,
                    &dose_layers,
                    &opts.multipliers,
                    opts.diff.batch_size,
                )?,
                None => Vec::new(),
            };
            let pca = match (best, loc.test_acts.as_deref()) {
                (Some(layer), Some([b, t])) => Some(PcaView {
                    layer,
                    base: projected(b, layer)?,
                    tuned: projected(t, layer)?,
                }),
                _ => None,
            };
            Ok(PairReport {
                base: base_name.into(),
                tuned: name.into(),
                dataset: dataset.into(),
                n_items: (data.train.len(), data.val.len(), data.test.len()),
                localisation: loc,
                dose,
                pca,
            })
        })
        .collect()
}

type Points = Vec<(f64, f64)>;

/// CAA activations `(positives, negatives)` at `layer` on their top two principal components.
fn projected(acts: &(Activations, Activations), layer: usize) -> Result<(Points, Points)> {
    let hp = HookPoint::ResidPost(layer);
    let (p, n) = (acts.0.require(hp)?, acts.1.require(hp)?);
    let m = p.dim(0)?;
    let x = Tensor::cat(&[p, n], 0)?.to_dtype(DType::F64)?; // [2m, d]
    let x = x.broadcast_sub(&x.mean_keepdim(0)?)?; // centred
    let (v1, v2) = top_two(&x)?;
    let coords = Tensor::stack(&[v1, v2], 1)?; // [d, 2]
    let y = x.matmul(&coords)?; // [2m, 2]
    let y = y.broadcast_div(&(y.sqr()?.mean_keepdim(0)?.sqrt()? + 1e-12)?)?; // unit variance per PC
    let y = y.to_vec2::<f64>()?;
    let pts: Vec<(f64, f64)> = y.into_iter().map(|r| (r[0], r[1])).collect();
    Ok((pts[..m].to_vec(), pts[m..].to_vec()))
}

/// Top two principal directions of a centred `x [m, d]` (f64), by power iteration with deflation.
fn top_two(x: &Tensor) -> Result<(Tensor, Tensor)> {
    let cov = x.t()?.matmul(x)?; // [d, d]
    let d = cov.dim(0)?;
    let power = |cov: &Tensor, seed: f64| -> Result<Tensor> {
        let init: Vec<f64> = (0..d).map(|i| 1.0 + seed * (i as f64).sin()).collect();
        let mut v = Tensor::from_vec(init, d, x.device())?;
        for _ in 0..300 {
            let w = cov.matmul(&v.reshape((d, 1))?)?.reshape(d)?; // [d]
            let nw = w.sqr()?.sum_all()?.sqrt()?.to_scalar::<f64>()?;
            if nw == 0.0 {
                break;
            }
            v = (w / nw)?;
        }
        Ok(v)
    };
    let v1 = power(&cov, 0.5)?;
    let lam = v1
        .reshape((1, d))?
        .matmul(&cov.matmul(&v1.reshape((d, 1))?)?)?
        .reshape(())?
        .to_scalar::<f64>()?;
    let outer = v1.reshape((d, 1))?.matmul(&v1.reshape((1, d))?)?; // [d, d]
    let deflated = (&cov - (outer * lam)?)?;
    let v2 = power(&deflated, 0.9)?;
    Ok((v1, v2))
}

/// Smallest behaviour gap whose fractions `gap_closed` draws.
pub const MIN_GAP_DRAWN: f64 = 0.05;

fn skipped(figure: &str, why: &str) {
    crate::progress::note(&format!("figures: {figure} not drawn: {why}"));
}

fn too_few(what: &str) -> Error {
    Error::InvalidArgument {
        name: "figures".into(),
        msg: format!("no {what} to draw"),
    }
}

/// Writes the five figures of `pairs` (all sharing one base model) into `dir`, PNG and SVG each;
/// returns the paths written. A figure with nothing to show (no pair with a behaviour gap of at
/// least 0.01, hence no best layer) is skipped with a line on stderr.
pub fn write_figures(pairs: &[PairReport], dir: impl AsRef<Path>) -> Result<Vec<PathBuf>> {
    let dir = dir.as_ref();
    let first = pairs.first().ok_or_else(|| too_few("model pairs"))?;
    let mut out = Vec::new();
    let layer_x = |rows: &[crate::diff::LayerRow],
                   f: &dyn Fn(&crate::diff::LayerRow) -> Option<f64>| {
        rows.iter()
            .filter_map(|r| f(r).map(|y| (r.layer as f64, y)))
            .collect::<Vec<_>>()
    };
    let dataset = &first.dataset;

    // 1. Probe accuracy per layer, base vs tuned, with bootstrap bands.
    let rows0 = &first.localisation.rows;
    let mut series = vec![Series {
        label: format!("{} (base)", first.base),
        points: layer_x(rows0, &|r| Some(r.probe_acc_base)),
        band: Some(
            rows0
                .iter()
                .map(|r| (r.layer as f64, r.probe_ci_base.0, r.probe_ci_base.1))
                .collect(),
        ),
        dashed: false,
    }];
    for p in pairs {
        let rows = &p.localisation.rows;
        series.push(Series {
            label: p.tuned.clone(),
            points: layer_x(rows, &|r| Some(r.probe_acc_tuned)),
            band: Some(
                rows.iter()
                    .map(|r| (r.layer as f64, r.probe_ci_tuned.0, r.probe_ci_tuned.1))
                    .collect(),
            ),
            dashed: false,
        });
    }
    out.extend(
        LineChart {
            title: format!("Linear probe accuracy per layer: {dataset} (matching vs other answer)"),
            x_label: "layer (blocks.L.hook_resid_post)".into(),
            y_label: "test accuracy (95% bootstrap CI)".into(),
            series,
            y_range: Some((0.3, 1.02)),
            hline: Some((0.5, "chance".into())),
            ..Default::default()
        }
        .save(dir.join("probe_accuracy"))?,
    );

    // 2. Norm of the mean activation difference, and its cosine with the tuned behaviour vector.
    let norms: Vec<Series> = pairs
        .iter()
        .flat_map(|p| {
            let rows = &p.localisation.rows;
            let mut v = vec![Series {
                label: format!("{}: behaviour prompts", p.tuned),
                points: layer_x(rows, &|r| Some(r.diff_norm)),
                band: None,
                dashed: false,
            }];
            let neutral = layer_x(rows, &|r| r.diff_norm_neutral);
            if !neutral.is_empty() {
                v.push(Series {
                    label: format!("{}: neutral text", p.tuned),
                    points: neutral,
                    band: None,
                    dashed: true,
                });
            }
            v
        })
        .collect();
    let cosines: Vec<Series> = pairs
        .iter()
        .map(|p| Series {
            label: p.tuned.clone(),
            points: layer_x(&p.localisation.rows, &|r| Some(r.cos_diff_behaviour)),
            band: None,
            dashed: false,
        })
        .collect();
    out.extend(
        LineGrid {
            title: format!(
                "Where tuning changed the residual stream ({} vs tuned)",
                first.base
            ),
            charts: vec![
                LineChart {
                    title: "norm of mean(tuned - base)".into(),
                    x_label: "layer".into(),
                    y_label: "L2 norm (residual units)".into(),
                    series: norms,
                    ..Default::default()
                },
                LineChart {
                    title: "cosine(tuned - base, tuned behaviour vector)".into(),
                    x_label: "layer".into(),
                    y_label: "cosine".into(),
                    series: cosines,
                    y_range: Some((-1.0, 1.0)),
                    hline: Some((0.0, "zero".into())),
                    ..Default::default()
                },
            ],
            columns: 2,
            ..Default::default()
        }
        .save(dir.join("diff_by_layer"))?,
    );

    // 3. Dose-response: P(matching) of the base with multiplier x difference, per pair and layer.
    let dose_charts: Vec<LineChart> = pairs
        .iter()
        .filter(|p| !p.dose.is_empty())
        .map(|p| {
            let mut layers: Vec<usize> = p.dose.iter().map(|r| r.layer).collect();
            layers.dedup();
            LineChart {
                title: format!("{} + m x ({} - {})", p.base, p.tuned, p.base),
                x_label: "multiplier m".into(),
                y_label: "P(matching answer)".into(),
                series: layers
                    .iter()
                    .map(|&l| Series {
                        label: format!("layer {l}"),
                        points: p
                            .dose
                            .iter()
                            .filter(|r| r.layer == l)
                            .map(|r| (r.multiplier, r.summary.mean_p))
                            .collect(),
                        band: None,
                        dashed: false,
                    })
                    .collect(),
                y_range: Some((0.0, 1.0)),
                hline: Some((p.localisation.p_tuned, format!("{} unsteered", p.tuned))),
                ..Default::default()
            }
        })
        .collect();
    if dose_charts.is_empty() {
        skipped("steering_dose_response", "no dose-response rows");
    } else {
        let columns = dose_charts.len().min(3);
        out.extend(
            LineGrid {
                title: format!(
                    "Steering the base model with the base-vs-tuned difference ({dataset})"
                ),
                charts: dose_charts,
                columns,
                ..Default::default()
            }
            .save(dir.join("steering_dose_response"))?,
        );
    }

    // 4. Fraction of the gap closed (add to base) and removed (ablate in tuned) per layer.
    // Fractions of a gap under 0.05 are mostly noise divided by a small number: left out.
    let frac = |f: &dyn Fn(&crate::diff::LayerRow) -> Option<f64>| -> Vec<Series> {
        pairs
            .iter()
            .filter(|p| (p.localisation.p_tuned - p.localisation.p_base).abs() >= MIN_GAP_DRAWN)
            .map(|p| Series {
                label: format!(
                    "{} (gap {:+.3})",
                    p.tuned,
                    p.localisation.p_tuned - p.localisation.p_base
                ),
                points: layer_x(&p.localisation.rows, f),
                band: None,
                dashed: false,
            })
            .filter(|s| !s.points.is_empty())
            .collect()
    };
    let closed = frac(&|r| r.gap_closed);
    let removed = frac(&|r| r.gap_removed);
    if closed.is_empty() || removed.is_empty() {
        skipped("gap_closed", "every behaviour gap is under 0.05");
    } else {
        out.extend(
            LineGrid {
                title: format!(
                    "Fraction of the behaviour gap explained by the difference ({dataset}; gaps of 0.05 or more)"
                ),
                charts: vec![
                    LineChart {
                        title: "closed: add difference to base".into(),
                        x_label: "layer".into(),
                        y_label: "(P_steered - P_base) / (P_tuned - P_base)".into(),
                        series: closed,
                        hline: Some((1.0, "full gap".into())),
                        ..Default::default()
                    },
                    LineChart {
                        title: "removed: ablate its direction in tuned".into(),
                        x_label: "layer".into(),
                        y_label: "(P_tuned - P_ablated) / (P_tuned - P_base)".into(),
                        series: removed,
                        hline: Some((1.0, "full gap".into())),
                        ..Default::default()
                    },
                ],
                columns: 2,
                ..Default::default()
            }
            .save(dir.join("gap_closed"))?,
        );
    }

    // 5. PCA at the best layer of the first pair with one: base, then each tuned model.
    let with_pca: Vec<&PairReport> = pairs.iter().filter(|p| p.pca.is_some()).collect();
    let Some((lead, Some(lead_pca))) = with_pca.first().map(|p| (p, p.pca.as_ref())) else {
        skipped("pca_best_layer", "no pair has a best layer");
        return Ok(out);
    };
    let groups = |(m, o): &(Points, Points)| {
        vec![
            ("matching answer".to_string(), m.clone()),
            ("other answer".to_string(), o.clone()),
        ]
    };
    let mut panels = vec![ScatterPanel {
        title: format!("{} (base), layer {}", lead.base, lead_pca.layer),
        groups: groups(&lead_pca.base),
    }];
    for p in &with_pca {
        if let Some(v) = &p.pca {
            panels.push(ScatterPanel {
                title: format!("{}, layer {}", p.tuned, v.layer),
                groups: groups(&v.tuned),
            });
        }
    }
    out.extend(
        ScatterChart {
            title: format!(
                "Last-token activations on each model's top two principal components ({dataset})"
            ),
            x_label: "PC 1 (standardised)".into(),
            y_label: "PC 2 (standardised)".into(),
            panels,
            ..Default::default()
        }
        .save(dir.join("pca_best_layer"))?,
    );
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn top_two_finds_the_principal_axes() {
        // Points spread most along e0, then along e2 (uncorrelated with e0: an even function of t).
        let mut rows = Vec::new();
        for i in 0..50 {
            let t = i as f64 / 49.0 - 0.5;
            rows.extend([
                10.0 * t,
                0.01 * t,
                2.0 * (std::f64::consts::TAU * t).cos(),
                0.0,
            ]);
        }
        let x = Tensor::from_vec(rows, (50, 4), &Device::Cpu).unwrap();
        let x = x.broadcast_sub(&x.mean_keepdim(0).unwrap()).unwrap();
        let (v1, v2) = top_two(&x).unwrap();
        let (v1, v2) = (v1.to_vec1::<f64>().unwrap(), v2.to_vec1::<f64>().unwrap());
        assert!(v1[0].abs() > 0.99, "{v1:?}");
        assert!(v2[2].abs() > 0.9, "{v2:?}");
    }
}
