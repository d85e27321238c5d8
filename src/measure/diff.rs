//! Base-versus-tuned comparisons per layer: where did fine-tuning change the representation, and
//! does the change drive the behaviour?
//!
//! [`base_tuned_vector`] is the mean over identical inputs of `tuned - base` residual at each layer
//! ([`base_tuned_vectors`]: several tuned siblings of one base, chosen layers, the base run once).
//! [`localise`] builds the localisation report for a (base, tuned) pair on an A/B behaviour dataset:
//! per layer, the norm of the mean difference (on behaviour prompts and on the first tokens of neutral
//! text), its cosine with the behaviour vector found in the tuned model, probe accuracy in each model
//! and across them, and the fraction of the behaviour gap closed by adding the difference to the base
//! model, `(P_steered_base - P_base) / (P_tuned - P_base)`, and removed by ablating it in the tuned
//! model, `(P_tuned - P_ablated) / (P_tuned - P_base)`. Both models must see the same token ids.
//!
//! ```no_run
//! use puppetlens::diff::{localise, AbSplits, DiffOptions};
//! use puppetlens::{LoadOptions, Model};
//! let base = Model::load("base.gguf", &LoadOptions::default())?;
//! let tuned = Model::load("tuned", &LoadOptions::default())?;
//! let data = AbSplits { train: vec![], val: vec![], test: vec![] }; // built with puppetlens::data
//! let report = localise(&base, &tuned, &data, &[], &DiffOptions::default())?;
//! report.write("notebooks-data/diff")?;
//! # Ok::<(), puppetlens::Error>(())
//! ```

use std::collections::BTreeMap;
use std::path::Path;

use candle_core::Tensor;
use serde::Serialize;

use crate::eval::{
    ab_summary, add_sweep, answer_ids, check_cases, score_rows, summarize, AbCase, AbScore,
    Intervention,
};
use crate::extract::{extract, Activations, ExtractOptions, Site};
use crate::hook::HookPoint;
use crate::model::Model;
use crate::probe::{sweep, transfer, ProbeOptions};
use crate::steer::SteeringVector;
use crate::util::{atomic_write_bytes, Progress};
use crate::{Error, Result};

/// A/B items split for probing and evaluation.
#[derive(Debug, Clone, Default)]
pub struct AbSplits {
    /// Builds the vectors and trains the probes.
    pub train: Vec<AbCase>,
    /// Chooses the probes' regularisation.
    pub val: Vec<AbCase>,
    /// Held out: probe accuracy and every behaviour number.
    pub test: Vec<AbCase>,
}

/// Options of [`localise`].
#[derive(Debug, Clone)]
pub struct DiffOptions {
    /// Layers to steer and ablate (all when `None`; the cheap per-layer numbers cover all layers).
    pub layers: Option<Vec<usize>>,
    /// Multiplier of the base-vs-tuned vector when added to the base model.
    pub scale: f64,
    /// Neutral-text tokens compared per prompt (activation-difference-lens style).
    pub neutral_k: usize,
    /// Prompts per forward pass.
    pub batch_size: usize,
    /// Probe options.
    pub probe: ProbeOptions,
    /// Progress on stderr.
    pub progress: bool,
}

impl Default for DiffOptions {
    fn default() -> Self {
        Self {
            layers: None,
            scale: 1.0,
            neutral_k: 8,
            batch_size: 8,
            probe: ProbeOptions::default(),
            progress: true,
        }
    }
}

/// Errors unless the two models have the same shape of residual stream.
pub(crate) fn check_pair(base: &Model, tuned: &Model) -> Result<()> {
    let (b, t) = (base.config(), tuned.config());
    if b.d_model != t.d_model || b.n_layers != t.n_layers {
        return Err(Error::Shape {
            what: "base and tuned models".into(),
            expected: format!("{} layers of width {}", b.n_layers, b.d_model),
            got: format!("{} layers of width {}", t.n_layers, t.d_model),
        });
    }
    Ok(())
}

/// Mean over `prompts` (and over the site's tokens) of `tuned - base` at `hook_resid_post` of every
/// layer: the direction fine-tuning added, as a steering vector (method `base_vs_tuned`).
pub fn base_tuned_vector(
    base: &Model,
    tuned: &Model,
    prompts: &[Vec<u32>],
    site: Site,
    batch_size: usize,
) -> Result<SteeringVector> {
    let opts = TunedVectorOptions {
        site,
        batch_size,
        layers: None,
    };
    let mut v = base_tuned_vectors(base, &[tuned], prompts, &opts)?;
    v.pop().ok_or_else(|| Error::InvalidArgument {
        name: "tuned".into(),
        msg: "no vector computed".into(),
    })
}

/// Options of [`base_tuned_vectors`].
#[derive(Debug, Clone)]
pub struct TunedVectorOptions {
    /// Token site per prompt (default: the last token).
    pub site: Site,
    /// Prompts per forward pass (default 8).
    pub batch_size: usize,
    /// Layers to compute (`None`, the default: all). The forward passes stop after the last one
    /// asked for.
    pub layers: Option<Vec<usize>>,
}

impl Default for TunedVectorOptions {
    fn default() -> Self {
        Self {
            site: Site::Last,
            batch_size: 8,
            layers: None,
        }
    }
}

/// [`base_tuned_vector`] for several tuned siblings of one base (a sycophant and its control, say)
/// and optionally a few layers: the base's activations are extracted once for all of them, and
/// the forward passes stop after the last layer asked for. One vector per tuned model, in order;
/// each layer's direction is the same as [`base_tuned_vector`]'s, bit for bit.
///
/// ```no_run
/// use puppetlens::diff::{base_tuned_vectors, TunedVectorOptions};
/// use puppetlens::{LoadOptions, Model};
/// let base = Model::load("base.gguf", &LoadOptions::default())?;
/// let (syc, ctl) = (Model::load("sycophant", &LoadOptions::default())?, Model::load("control", &LoadOptions::default())?);
/// let prompts: Vec<Vec<u32>> = vec![vec![2, 651, 6037]]; // token ids, the same for all models
/// let opts = TunedVectorOptions { layers: Some(vec![8]), ..Default::default() };
/// let v = base_tuned_vectors(&base, &[&syc, &ctl], &prompts, &opts)?; // v[0]: sycophant, v[1]: control
/// # Ok::<(), puppetlens::Error>(())
/// ```
pub fn base_tuned_vectors(
    base: &Model,
    tuned: &[&Model],
    prompts: &[Vec<u32>],
    opts: &TunedVectorOptions,
) -> Result<Vec<SteeringVector>> {
    let n_layers = base.config().n_layers;
    let layers: Vec<usize> = match &opts.layers {
        None => (0..n_layers).collect(),
        Some(ls) => {
            if ls.is_empty() {
                return Err(Error::InvalidArgument {
                    name: "layers".into(),
                    msg: "empty: name at least one layer, or None for all".into(),
                });
            }
            if let Some(&l) = ls.iter().find(|&&l| l >= n_layers) {
                return Err(Error::LayerOutOfRange { layer: l, n_layers });
            }
            let mut ls = ls.clone();
            ls.sort_unstable();
            ls.dedup();
            ls
        }
    };
    for t in tuned {
        check_pair(base, t)?;
    }
    let ex = ExtractOptions {
        points: layers.iter().map(|&l| HookPoint::ResidPost(l)).collect(),
        site: opts.site.clone(),
        batch_size: opts.batch_size,
        progress: false,
        ..ExtractOptions::default()
    };
    let a = extract(base, prompts, &ex)?;
    tuned
        .iter()
        .map(|t| {
            let b = extract(t, prompts, &ex)?;
            let mut d = BTreeMap::new();
            for &l in &layers {
                let p = HookPoint::ResidPost(l);
                let diff = (b.require(p)? - a.require(p)?)?; // [n, d_model] or [n, k, d_model]
                let diff = if diff.rank() == 3 {
                    diff.flatten(0, 1)?
                } else {
                    diff
                }; // [rows, d_model]
                d.insert(l, diff.mean(0)?);
            }
            Ok(
                SteeringVector::new(d, "base_vs_tuned")?
                    .with_meta("site", format!("{:?}", ex.site)),
            )
        })
        .collect()
}

/// One layer of the localisation report. Fractions are `None` when the behaviour gap is too small
/// to divide by (|P_tuned - P_base| < 0.01).
#[derive(Debug, Clone, Serialize)]
pub struct LayerRow {
    /// Layer (`blocks.{layer}.hook_resid_post`).
    pub layer: usize,
    /// Norm of the mean `tuned - base` difference on the behaviour prompts.
    pub diff_norm: f64,
    /// Norm of the mean difference over the first tokens of neutral text.
    pub diff_norm_neutral: Option<f64>,
    /// Cosine between the base-vs-tuned vector and the tuned model's behaviour vector (CAA).
    pub cos_diff_behaviour: f64,
    /// Test accuracy of a logistic probe (matching vs other answer) in the base model.
    pub probe_acc_base: f64,
    /// Percentile-bootstrap 95% interval of `probe_acc_base`.
    pub probe_ci_base: (f64, f64),
    /// The same in the tuned model.
    pub probe_acc_tuned: f64,
    /// Percentile-bootstrap 95% interval of `probe_acc_tuned`.
    pub probe_ci_tuned: (f64, f64),
    /// The base model's probe applied to the tuned model's activations.
    pub probe_transfer: f64,
    /// Behaviour P(matching) of the base model steered with the difference at this layer.
    pub p_steered_base: Option<f64>,
    /// Behaviour P(matching) of the tuned model with the difference ablated.
    pub p_ablated_tuned: Option<f64>,
    /// Fraction of the gap closed by adding the difference to the base model.
    pub gap_closed: Option<f64>,
    /// Fraction of the gap removed by ablating the difference in the tuned model.
    pub gap_removed: Option<f64>,
}

/// The localisation report of a (base, tuned) pair.
#[derive(Debug, Clone, Serialize)]
pub struct Localisation {
    /// Mean normalised P(matching) of the base model on the test items.
    pub p_base: f64,
    /// The same for the tuned model.
    pub p_tuned: f64,
    /// Test items.
    pub n_test: usize,
    /// Per-layer numbers.
    pub rows: Vec<LayerRow>,
    /// The layer whose added difference closes the largest fraction of the gap (when measured).
    pub best_layer: Option<usize>,
    /// Provenance.
    pub meta: BTreeMap<String, String>,
    /// The base-vs-tuned vector (not serialised; save it with [`SteeringVector::save`]).
    #[serde(skip)]
    pub diff_vector: Option<SteeringVector>,
    /// The tuned model's behaviour vector.
    #[serde(skip)]
    pub behaviour_vector: Option<SteeringVector>,
    /// CAA activations of the test items, every layer: (positives, negatives) of the base and
    /// of the tuned model, for the report's PCA view without extracting them again.
    #[serde(skip)]
    pub(crate) test_acts: Option<Box<[(Activations, Activations); 2]>>,
}

impl Localisation {
    /// Writes `localisation.json` and `localisation.csv` into `dir` (atomically).
    pub fn write(&self, dir: impl AsRef<Path>) -> Result<()> {
        let dir = dir.as_ref();
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let json = serde_json::to_string_pretty(self).map_err(|e| Error::InvalidArgument {
            name: "report".into(),
            msg: e.to_string(),
        })?;
        atomic_write_bytes(&dir.join("localisation.json"), json.as_bytes())?;
        let f = |x: Option<f64>| x.map(|v| format!("{v:.6}")).unwrap_or_default();
        let mut csv = String::from("layer,diff_norm,diff_norm_neutral,cos_diff_behaviour,probe_acc_base,probe_acc_tuned,probe_transfer,p_steered_base,p_ablated_tuned,gap_closed,gap_removed\n");
        for r in &self.rows {
            csv.push_str(&format!(
                "{},{:.6},{},{:.6},{:.6},{:.6},{:.6},{},{},{},{}\n",
                r.layer,
                r.diff_norm,
                f(r.diff_norm_neutral),
                r.cos_diff_behaviour,
                r.probe_acc_base,
                r.probe_acc_tuned,
                r.probe_transfer,
                f(r.p_steered_base),
                f(r.p_ablated_tuned),
                f(r.gap_closed),
                f(r.gap_removed)
            ));
        }
        atomic_write_bytes(&dir.join("localisation.csv"), csv.as_bytes())
    }
}

impl Localisation {
    /// The per-layer numbers for a terminal, then the best layer.
    pub fn table(&self) -> String {
        let opt = |x: Option<f64>| x.map(|v| format!("{v:.3}")).unwrap_or_else(|| "-".into());
        let mut t = String::from(
            "layer      |diff|  cos(diff,beh)  probe base  probe tuned  transfer  P steered base  P \
             ablated tuned  gap closed  gap removed\n",
        );
        for r in &self.rows {
            t.push_str(&format!(
                "{:>5}  {:>10.3}  {:>13.3}  {:>10.3}  {:>11.3}  {:>8.3}  {:>14}  {:>15}  {:>10}  {:>11}\n",
                r.layer,
                r.diff_norm,
                r.cos_diff_behaviour,
                r.probe_acc_base,
                r.probe_acc_tuned,
                r.probe_transfer,
                opt(r.p_steered_base),
                opt(r.p_ablated_tuned),
                opt(r.gap_closed),
                opt(r.gap_removed)
            ));
        }
        match self.best_layer {
            Some(l) => t.push_str(&format!("best layer (largest gap closed): {l}\n")),
            None => t.push_str("best layer: none (the behaviour gap is too small to divide by)\n"),
        }
        t
    }
}

/// CAA prompts: each item with its matching and its other answer letter appended.
pub fn caa_prompts(cases: &[AbCase]) -> (Vec<Vec<u32>>, Vec<Vec<u32>>) {
    let with = |c: &AbCase, t: u32| {
        let mut v = c.ids.clone();
        v.push(t);
        v
    };
    (
        cases.iter().map(|c| with(c, c.matching)).collect(),
        cases.iter().map(|c| with(c, c.not_matching)).collect(),
    )
}

/// Last-token residuals of every layer for the CAA prompts of `cases` (positives, negatives)
/// and the items' unsteered A/B scores: each question runs once into a KV cache, its two
/// answer letters as one-token cached steps on it, and the scores come from the question's own
/// last position ([`crate::extract::extract_endings`]).
fn caa_acts(
    model: &Model,
    cases: &[AbCase],
    batch_size: usize,
) -> Result<(Activations, Activations, Vec<AbScore>)> {
    check_cases(model, cases)?;
    let opts = ExtractOptions {
        batch_size,
        progress: false,
        ..ExtractOptions::resid_post(model, Site::Last)
    };
    let prefixes: Vec<&[u32]> = cases.iter().map(|c| c.ids.as_slice()).collect();
    let letters: Vec<[u32; 2]> = cases.iter().map(|c| [c.matching, c.not_matching]).collect();
    let endings: Vec<Vec<&[u32]>> = (0..2)
        .map(|j| letters.iter().map(|l| &l[j..j + 1]).collect())
        .collect();
    let all: Vec<usize> = (0..cases.len()).collect();
    let answers = answer_ids(cases, &all);
    let mut scores = vec![AbScore::NAN; cases.len()];
    let mut progress = crate::util::Progress::new("extract", cases.len(), false);
    let mut sets = crate::extract::extract_split(
        model,
        &prefixes,
        &endings,
        &opts,
        Some(&answers),
        |logits, idx| score_rows(logits, idx, &mut scores),
        &mut progress,
    )?;
    let neg = sets.pop();
    match (sets.pop(), neg) {
        (Some(pos), Some(neg)) => Ok((pos, neg, scores)),
        _ => Err(Error::InvalidArgument {
            name: "CAA activations".into(),
            msg: "extraction returned no sets".into(),
        }),
    }
}

/// Stacks positives and negatives per layer with labels (true = matching).
fn labelled(
    pos: &Activations,
    neg: &Activations,
    n_layers: usize,
) -> Result<(Vec<Tensor>, Vec<bool>)> {
    let mut xs = Vec::with_capacity(n_layers);
    for l in 0..n_layers {
        let p = HookPoint::ResidPost(l);
        xs.push(Tensor::cat(&[pos.require(p)?, neg.require(p)?], 0)?); // [2n, d_model]
    }
    let n = pos.len();
    let y = (0..2 * n).map(|i| i < n).collect();
    Ok((xs, y))
}

fn fraction(num: f64, gap: f64) -> Option<f64> {
    (gap.abs() >= 0.01).then(|| num / gap)
}

/// A stage line of the localisation on stderr, when `opts.progress`.
fn say(opts: &DiffOptions, msg: &str) {
    if opts.progress {
        crate::progress::note(&format!("localise: {msg}"));
    }
}

/// Builds the localisation report (see the [module docs](self)).
pub fn localise(
    base: &Model,
    tuned: &Model,
    data: &AbSplits,
    neutral: &[Vec<u32>],
    opts: &DiffOptions,
) -> Result<Localisation> {
    let mut v = localise_many(base, &[tuned], data, neutral, opts)?;
    v.pop().ok_or_else(|| Error::InvalidArgument {
        name: "tuned".into(),
        msg: "no report computed".into(),
    })
}

/// What the report needs from the base model alone: shared by every tuned sibling.
struct BaseSide {
    /// CAA activations (positives, negatives) of the train, val and test items.
    acts: [(Activations, Activations); 3],
    /// Per-layer probe reports and the fitted probes.
    probe: Vec<crate::probe::LayerReport>,
    fits: Vec<crate::probe::LinearProbe>,
    /// Unsteered P(matching) on the test items.
    p_base: f64,
}

/// [`localise`] for several tuned siblings of one base (a sycophant and its control, say), one
/// report each, in order: the base model's activations, probes, unsteered behaviour and
/// neutral-text activations are computed once for all of them. Each report equals
/// [`localise`]'s for that pair.
pub fn localise_many(
    base: &Model,
    tuned: &[&Model],
    data: &AbSplits,
    neutral: &[Vec<u32>],
    opts: &DiffOptions,
) -> Result<Vec<Localisation>> {
    for t in tuned {
        check_pair(base, t)?;
    }
    for (name, part) in [
        ("train", &data.train),
        ("val", &data.val),
        ("test", &data.test),
    ] {
        if part.is_empty() {
            return Err(Error::InvalidArgument {
                name: format!("{name} split"),
                msg: "no A/B items (empty dataset)".into(),
            });
        }
    }
    let n_layers = base.config().n_layers;
    let layers: Vec<usize> = opts
        .layers
        .clone()
        .unwrap_or_else(|| (0..n_layers).collect());
    if let Some(&l) = layers.iter().find(|&&l| l >= n_layers) {
        return Err(Error::LayerOutOfRange { layer: l, n_layers });
    }
    let say = |m: &str| say(opts, m);
    let bs = opts.batch_size;
    say("base model: CAA activations (train, val, test), probes, unsteered behaviour");
    let (tr, va, (te_pos, te_neg, scores)) = (
        caa_acts(base, &data.train, bs)?,
        caa_acts(base, &data.val, bs)?,
        caa_acts(base, &data.test, bs)?,
    );
    let acts = [(tr.0, tr.1), (va.0, va.1), (te_pos, te_neg)];
    let (xb_tr, y_tr) = labelled(&acts[0].0, &acts[0].1, n_layers)?;
    let (xb_va, y_va) = labelled(&acts[1].0, &acts[1].1, n_layers)?;
    let (xb_te, y_te) = labelled(&acts[2].0, &acts[2].1, n_layers)?;
    let (probe, fits) =
        crate::probe::sweep_fits(&xb_tr, &y_tr, &xb_va, &y_va, &xb_te, &y_te, &opts.probe)?;
    let side = BaseSide {
        acts,
        probe,
        fits,
        p_base: summarize(&scores).mean_p,
    };
    let neutral_norms: Vec<Option<BTreeMap<usize, f64>>> = if neutral.is_empty() {
        vec![None; tuned.len()]
    } else {
        say("neutral-text differences");
        let k = neutral
            .iter()
            .map(|p| p.len())
            .min()
            .unwrap_or(0)
            .min(opts.neutral_k)
            .max(1);
        let nopts = TunedVectorOptions {
            site: Site::FirstK(k),
            batch_size: bs,
            layers: None,
        };
        base_tuned_vectors(base, tuned, neutral, &nopts)?
            .iter()
            .map(|v| v.norms().map(Some))
            .collect::<Result<_>>()?
    };
    tuned
        .iter()
        .zip(neutral_norms)
        .enumerate()
        .map(|(i, (t, nn))| {
            if tuned.len() > 1 {
                say(&format!("tuned model {} of {}", i + 1, tuned.len()));
            }
            localise_one(base, &side, t, data, nn, &layers, opts)
        })
        .collect()
}

/// The report of one tuned model against the base's shared side.
fn localise_one(
    base: &Model,
    side: &BaseSide,
    tuned: &Model,
    data: &AbSplits,
    neutral_diff: Option<BTreeMap<usize, f64>>,
    layers: &[usize],
    opts: &DiffOptions,
) -> Result<Localisation> {
    let n_layers = base.config().n_layers;
    let say = |m: &str| say(opts, m);
    let bs = opts.batch_size;
    say("tuned model: CAA activations (train, val, test)");
    let [b_tr, _, b_te] = &side.acts;
    let (t_tr, t_va, t_te) = (
        caa_acts(tuned, &data.train, bs)?,
        caa_acts(tuned, &data.val, bs)?,
        caa_acts(tuned, &data.test, bs)?,
    );

    let behaviour =
        SteeringVector::mean_diff(&t_tr.0, &t_tr.1, n_layers)?.with_meta("model", "tuned");
    // Mean tuned - base over identical inputs (both answer letters of every training item).
    let mut d = BTreeMap::new();
    for l in 0..n_layers {
        let p = HookPoint::ResidPost(l);
        let diff = Tensor::cat(
            &[
                (t_tr.0.require(p)? - b_tr.0.require(p)?)?,
                (t_tr.1.require(p)? - b_tr.1.require(p)?)?,
            ],
            0,
        )?; // [2n, d_model]
        d.insert(l, diff.mean(0)?);
    }
    let diff = SteeringVector::new(d, "base_vs_tuned")?
        .with_meta("site", "last token of CAA prompts (train)");
    let norms = diff.norms()?;
    let cos = diff.cosine(&behaviour)?;

    say("probes");
    let (xt_tr, y_tr) = labelled(&t_tr.0, &t_tr.1, n_layers)?;
    let (xt_va, y_va) = labelled(&t_va.0, &t_va.1, n_layers)?;
    let (xt_te, y_te) = labelled(&t_te.0, &t_te.1, n_layers)?;
    let base_probe = &side.probe;
    let tuned_probe = sweep(&xt_tr, &y_tr, &xt_va, &y_va, &xt_te, &y_te, &opts.probe)?;
    let moved = transfer(&side.fits, &xt_te, &y_te, &opts.probe)?;

    say("behaviour under steering and ablation");
    let p_base = side.p_base;
    let p_tuned = summarize(&t_te.2).mean_p;
    let gap = p_tuned - p_base;
    // A zero difference has nothing to add and no direction to ablate.
    let swept: Vec<usize> = layers.iter().copied().filter(|l| norms[l] > 0.0).collect();
    // Adding at one layer branches there (the base's forward below it runs once); ablating a
    // direction everywhere cannot branch and runs whole forwards.
    let steered: BTreeMap<usize, f64> = if swept.is_empty() {
        BTreeMap::new()
    } else {
        let s = add_sweep(
            base,
            &data.test,
            &diff,
            &swept,
            &[opts.scale],
            bs,
            opts.progress,
        )?;
        swept
            .iter()
            .zip(&s)
            .map(|(&l, per)| (l, summarize(&per[0]).mean_p))
            .collect()
    };
    let mut bar = Progress::new("ablation", steered.len(), opts.progress);
    let mut rows = Vec::with_capacity(n_layers);
    for l in 0..n_layers {
        let (mut p_steer, mut p_abl) = (None, None);
        if let Some(&p) = steered.get(&l) {
            let v = diff.only(&[l])?;
            p_steer = Some(p);
            p_abl = Some(
                ab_summary(
                    tuned,
                    &data.test,
                    &Intervention::Ablate {
                        vector: &v,
                        layer: l,
                    },
                    bs,
                )?
                .mean_p,
            );
            bar.advance(1);
            if opts.progress {
                bar.say(&format!(
                    "localise: layer {l}: steered base {:.3}, ablated tuned {:.3}",
                    p_steer.unwrap_or(f64::NAN),
                    p_abl.unwrap_or(f64::NAN)
                ));
            }
        }
        rows.push(LayerRow {
            layer: l,
            diff_norm: norms[&l],
            diff_norm_neutral: neutral_diff.as_ref().map(|n| n[&l]),
            cos_diff_behaviour: cos[&l],
            probe_acc_base: base_probe[l].test.accuracy,
            probe_ci_base: base_probe[l].test.accuracy_ci,
            probe_acc_tuned: tuned_probe[l].test.accuracy,
            probe_ci_tuned: tuned_probe[l].test.accuracy_ci,
            probe_transfer: moved[l].accuracy,
            p_steered_base: p_steer,
            p_ablated_tuned: p_abl,
            gap_closed: p_steer.and_then(|p| fraction(p - p_base, gap)),
            gap_removed: p_abl.and_then(|p| fraction(p_tuned - p, gap)),
        });
    }
    bar.finish();
    let best_layer = rows
        .iter()
        .filter_map(|r| r.gap_closed.map(|g| (r.layer, g)))
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .map(|(l, _)| l);
    Ok(Localisation {
        p_base,
        p_tuned,
        n_test: data.test.len(),
        rows,
        best_layer,
        meta: BTreeMap::new(),
        diff_vector: Some(diff),
        behaviour_vector: Some(behaviour),
        test_acts: Some(Box::new([b_te.clone(), (t_te.0, t_te.1)])),
    })
}
