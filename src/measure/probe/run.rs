//! Probes from a dataset file in one call: prompts, activations of every layer, the per-layer
//! table, `probe.json` and `probe.csv` (see the [module docs](super)).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use candle_core::Tensor;
use serde::Serialize;

use super::{
    best_by_val, best_by_val_r2, cross_validate, regress, regression_csv, regression_table,
    reports_csv, reports_table, sweep_as, CvReport, LayerReport, ProbeKind, ProbeOptions,
    RegressionReport,
};
use crate::data::{Dataset, NumericDataset, PromptOptions, Prompter};
use crate::extract::{extract, ExtractOptions, Site};
use crate::model::Model;
use crate::tokenize::Tokenizer;
use crate::util::atomic_write_bytes;
use crate::{Error, Result};

/// Options of [`probe_report`] and [`regression_report`].
#[derive(Debug, Clone)]
pub struct DatasetProbeOptions {
    /// The probe of [`probe_report`] (logistic by default; [`regression_report`] is always ridge).
    pub kind: ProbeKind,
    /// Also cross-validate the logistic probe with this many folds on train + val
    /// ([`cross_validate`]; [`probe_report`] only, with [`ProbeKind::Logistic`]).
    pub folds: Option<usize>,
    /// How the records become prompts ([`regression_report`] reads `chat` only).
    pub prompts: PromptOptions,
    /// Fitting and bootstrap options.
    pub probe: ProbeOptions,
    /// Prompts per forward pass (8).
    pub batch_size: usize,
    /// Progress on stderr (true).
    pub progress: bool,
    /// The model's name, for the report.
    pub model: String,
}

impl Default for DatasetProbeOptions {
    fn default() -> Self {
        Self {
            kind: ProbeKind::Logistic,
            folds: None,
            prompts: PromptOptions::default(),
            probe: ProbeOptions::default(),
            batch_size: 8,
            progress: true,
            model: String::new(),
        }
    }
}

/// What [`probe_report`] measured: the per-layer table with its provenance (written as
/// `probe.json`).
#[derive(Debug, Clone, Serialize)]
pub struct DatasetProbe {
    /// The model's name.
    pub model: String,
    /// The dataset file.
    pub dataset: String,
    /// What its records are (`labeled statements`, `contrast pairs`, `A/B questions`).
    pub records: String,
    /// How the records were written as prompts.
    pub prompts: String,
    /// How the records were split.
    pub split: String,
    /// Prompts per part (`train`, `val`, `test`).
    pub n: BTreeMap<String, usize>,
    /// The probe fitted (written as the CLI's `--kind` names it: `Logistic`, `MeanDiff`).
    #[serde(serialize_with = "kind_as_flag")]
    pub kind: ProbeKind,
    /// The layer with the best validation accuracy ([`best_by_val`]).
    pub best_layer_by_val: Option<usize>,
    /// One row per layer.
    pub layers: Vec<LayerReport>,
    /// The k-fold cross-validation, when asked for.
    pub cross_validation: Option<Vec<CvReport>>,
    /// Its number of folds.
    #[serde(skip)]
    pub folds: Option<usize>,
}

/// What [`regression_report`] measured: the per-layer ridge table with its provenance (written
/// as `probe.json`).
#[derive(Debug, Clone, Serialize)]
pub struct DatasetRegression {
    /// The model's name.
    pub model: String,
    /// The dataset file.
    pub dataset: String,
    /// The target's field.
    pub target: String,
    /// The probe fitted (always [`ProbeKind::Ridge`]).
    pub kind: ProbeKind,
    /// How the texts were written as prompts.
    pub prompts: String,
    /// How the items were split.
    pub split: String,
    /// Prompts per part (`train`, `val`, `test`).
    pub n: BTreeMap<String, usize>,
    /// The layer with the best validation `R²` ([`best_by_val_r2`]).
    pub best_layer_by_val: Option<usize>,
    /// One row per layer.
    pub layers: Vec<RegressionReport>,
}

/// The last token's `hook_resid_post` of every layer for `prompts`: one `[n, d_model]` per layer.
fn last_token_layers(
    model: &Model,
    prompts: &[Vec<u32>],
    opts: &DatasetProbeOptions,
) -> Result<Vec<Tensor>> {
    let eopts = ExtractOptions {
        batch_size: opts.batch_size,
        progress: opts.progress,
        ..ExtractOptions::resid_post(model, Site::Last)
    };
    extract(model, prompts, &eopts)?.layers(model.config().n_layers)
}

/// Writes `report` as `probe.json` (keys in alphabetical order, at every depth) and `csv` as
/// `probe.csv` into `dir`, atomically; returns the two paths.
fn write_probe_files(dir: &Path, report: &impl Serialize, csv: &str) -> Result<[PathBuf; 2]> {
    let bad = |e: serde_json::Error| Error::InvalidArgument {
        name: "json".into(),
        msg: e.to_string(),
    };
    let json =
        serde_json::to_string_pretty(&serde_json::to_value(report).map_err(bad)?).map_err(bad)?;
    let files = [dir.join("probe.json"), dir.join("probe.csv")];
    atomic_write_bytes(&files[1], csv.as_bytes())?;
    atomic_write_bytes(&files[0], json.as_bytes())?;
    Ok(files)
}

/// The one call from a labeled dataset to per-layer probes: each record of `ds` written as
/// labeled prompts ([`Prompter::labeled`]), split as the file records or 60/20/20 stratified,
/// the last token's `hook_resid_post` of every layer extracted, a probe of `opts.kind` fitted per
/// layer ([`sweep_as`], L2 chosen on validation) and, with `opts.folds`, the logistic probe
/// cross-validated on train + val. Writes `probe.json` and `probe.csv` into `dir`.
///
/// Errors when a part of the split is empty, or when `folds` is asked of another probe than
/// the logistic one.
///
/// ```no_run
/// use puppetlens::data::Dataset;
/// use puppetlens::probe::{probe_report, DatasetProbeOptions};
/// let (model, tok) = puppetlens::open("smollm2-135m-instruct", &Default::default())?;
/// let ds = Dataset::load("probes/true_false.csv", "harmful")?;
/// let report = probe_report(&model, &tok, &ds, &DatasetProbeOptions::default(), "runs/probe")?;
/// print!("{}", report.summary());
/// # Ok::<(), puppetlens::Error>(())
/// ```
pub fn probe_report(
    model: &Model,
    tok: &Tokenizer,
    ds: &Dataset,
    opts: &DatasetProbeOptions,
    dir: impl AsRef<Path>,
) -> Result<DatasetProbe> {
    if opts.folds.is_some() && opts.kind != ProbeKind::Logistic {
        return Err(Error::InvalidArgument {
            name: "folds".into(),
            msg: "cross-validation runs the logistic probe".into(),
        });
    }
    let parts = ds.split_records()?;
    let pr = Prompter::new(tok, &opts.prompts);
    // xs[part][layer]: [n_part, d_model]; ys[part]: one label per row.
    let mut xs: Vec<Vec<Tensor>> = Vec::with_capacity(3);
    let mut ys: Vec<Vec<bool>> = Vec::with_capacity(3);
    let mut sizes = BTreeMap::new();
    for (part, records) in &parts {
        let rows = pr.labeled(records)?;
        if rows.is_empty() {
            return Err(Error::config(
                &ds.path,
                "split",
                format!(
                    "the {part} part is empty ({} records in all, {}); probes need train, val \
                     and test records",
                    ds.records.len(),
                    ds.split_note()
                ),
            ));
        }
        let prompts: Vec<Vec<u32>> = rows.iter().map(|(p, _)| p.clone()).collect();
        xs.push(last_token_layers(model, &prompts, opts)?);
        ys.push(rows.iter().map(|(_, y)| *y).collect());
        sizes.insert(part.to_string(), rows.len());
    }
    let reports = sweep_as(
        opts.kind,
        &xs[0],
        &ys[0],
        &xs[1],
        &ys[1],
        &xs[2],
        &ys[2],
        &opts.probe,
    )?;
    let best = best_by_val(&reports);
    let cv = match opts.folds {
        Some(k) => {
            // Per layer: train and val rows stacked, [n_train + n_val, d_model].
            let x: Vec<Tensor> = xs[0]
                .iter()
                .zip(&xs[1])
                .map(|(a, b)| Tensor::cat(&[a, b], 0))
                .collect::<candle_core::Result<_>>()?;
            let y: Vec<bool> = ys[0].iter().chain(&ys[1]).copied().collect();
            Some(cross_validate(&x, &y, k, &opts.probe)?)
        }
        None => None,
    };
    let report = DatasetProbe {
        model: opts.model.clone(),
        dataset: ds.path.display().to_string(),
        records: ds.records.kind().to_string(),
        prompts: pr.note(&ds.records),
        split: ds.split_note().to_string(),
        n: sizes,
        kind: opts.kind,
        best_layer_by_val: best,
        layers: reports,
        cross_validation: cv,
        folds: opts.folds,
    };
    report.write(dir)?;
    Ok(report)
}

impl DatasetProbe {
    /// Writes `probe.json` and `probe.csv` into `dir` (atomically); returns their paths.
    pub fn write(&self, dir: impl AsRef<Path>) -> Result<[PathBuf; 2]> {
        write_probe_files(dir.as_ref(), self, &reports_csv(&self.layers))
    }

    /// Prompts in part `part` (`train`, `val` or `test`).
    fn n(&self, part: &str) -> usize {
        self.n.get(part).copied().unwrap_or(0)
    }

    /// The report for a terminal: the dataset and its split, the per-layer table, the best
    /// layer and the cross-validation, when run.
    pub fn summary(&self) -> String {
        let mut s = format!(
            "{} ({}, {}; train {}, val {}, test {} prompts)\n",
            self.dataset,
            self.records,
            self.split,
            self.n("train"),
            self.n("val"),
            self.n("test")
        );
        s.push_str(&reports_table(&self.layers, self.best_layer_by_val));
        if let Some(b) = self.best_layer_by_val.and_then(|b| self.layers.get(b)) {
            let _ = writeln!(
                s,
                "best layer by validation accuracy: {} (val {:.3}, test {:.3} [{:.3}, {:.3}])",
                b.layer,
                b.val.accuracy,
                b.test.accuracy,
                b.test.accuracy_ci.0,
                b.test.accuracy_ci.1
            );
        }
        if let Some(cv) = &self.cross_validation {
            let _ = writeln!(
                s,
                "{}-fold cross-validation on train + val ({} prompts): layer, l2, pooled accuracy [95% CI]",
                self.folds.unwrap_or(0),
                self.n("train") + self.n("val")
            );
            for r in cv {
                let _ = writeln!(
                    s,
                    "{:>5}  {:.0e}  {:.3}  [{:.3}, {:.3}]",
                    r.layer,
                    r.l2,
                    r.pooled.accuracy,
                    r.pooled.accuracy_ci.0,
                    r.pooled.accuracy_ci.1
                );
            }
        }
        s
    }
}

/// The one call from texts with a numeric target to per-layer ridge probes: each text written
/// as a prompt (as it is, or as a chat turn with `opts.prompts.chat`), the last token's
/// `hook_resid_post` of every layer extracted, ridge regression fitted per layer ([`regress`],
/// L2 chosen on validation `R²`). Writes `probe.json` and `probe.csv` into `dir`. Each part of
/// the split needs at least 2 items.
///
/// ```no_run
/// use puppetlens::data::NumericDataset;
/// use puppetlens::probe::{regression_report, DatasetProbeOptions};
/// let (model, tok) = puppetlens::open("smollm2-135m-instruct", &Default::default())?;
/// let ds = NumericDataset::load("probes/numbers.jsonl", "value")?;
/// let report = regression_report(&model, &tok, &ds, &DatasetProbeOptions::default(), "runs/numbers")?;
/// print!("{}", report.summary());
/// # Ok::<(), puppetlens::Error>(())
/// ```
pub fn regression_report(
    model: &Model,
    tok: &Tokenizer,
    ds: &NumericDataset,
    opts: &DatasetProbeOptions,
    dir: impl AsRef<Path>,
) -> Result<DatasetRegression> {
    let pr = Prompter::new(tok, &opts.prompts);
    let mut xs = Vec::with_capacity(3);
    let mut ts: Vec<Vec<f64>> = Vec::with_capacity(3);
    let parts = &ds.parts;
    for (name, part) in [
        ("train", &parts.train),
        ("val", &parts.val),
        ("test", &parts.test),
    ] {
        if part.len() < 2 {
            return Err(Error::config(
                &ds.path,
                "split",
                format!(
                    "the {name} part has {} records; regression needs at least 2",
                    part.len()
                ),
            ));
        }
        let prompts = part
            .iter()
            .map(|x| pr.text(&x.text))
            .collect::<Result<Vec<_>>>()?;
        xs.push(last_token_layers(model, &prompts, opts)?);
        ts.push(part.iter().map(|x| x.value).collect());
    }
    let reports = regress(&xs[0], &ts[0], &xs[1], &ts[1], &xs[2], &ts[2], &opts.probe)?;
    let n = ["train", "val", "test"]
        .into_iter()
        .zip(&ts)
        .map(|(p, t)| (p.to_string(), t.len()))
        .collect();
    let report = DatasetRegression {
        model: opts.model.clone(),
        dataset: ds.path.display().to_string(),
        target: ds.field.clone(),
        kind: ProbeKind::Ridge,
        prompts: pr.text_note(),
        split: ds.split_note.to_string(),
        n,
        best_layer_by_val: best_by_val_r2(&reports),
        layers: reports,
    };
    report.write(dir)?;
    Ok(report)
}

impl DatasetRegression {
    /// Writes `probe.json` and `probe.csv` into `dir` (atomically); returns their paths.
    pub fn write(&self, dir: impl AsRef<Path>) -> Result<[PathBuf; 2]> {
        write_probe_files(dir.as_ref(), self, &regression_csv(&self.layers))
    }

    /// The report for a terminal: the dataset, its target and split, and the per-layer table.
    pub fn summary(&self) -> String {
        let n = |p: &str| self.n.get(p).copied().unwrap_or(0);
        format!(
            "{} (`{}`, {}; train {}, val {}, test {} prompts)\n{}",
            self.dataset,
            self.target,
            self.split,
            n("train"),
            n("val"),
            n("test"),
            regression_table(&self.layers, self.best_layer_by_val)
        )
    }
}

/// `probe.json`'s `kind`: the name of the CLI's `--kind` value that asks for it (the file's
/// field predates the library's names).
fn kind_as_flag<S: serde::Serializer>(
    kind: &ProbeKind,
    s: S,
) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_str(match kind {
        ProbeKind::Logistic => "Logistic",
        ProbeKind::DiffOfMeans => "MeanDiff",
        ProbeKind::Ridge => "Ridge",
    })
}
