//! The one-call crosscoder: paired corpus, training, metrics, the latent table and the dashboard
//! of a (base, tuned) pair, and the directory that holds them; the corpus from dataset files.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{DType, Device, Tensor};

use super::corpus::{paired_corpus, CorpusOptions, PairedCorpus, PromptSet};
use super::dashboard::{Dashboard, DashboardOptions};
use super::latents::{latents, LabelOptions, LatentStats};
use super::metrics::{evaluate, Metrics};
use super::store::{paired_corpus_to_dir, CorpusStore};
use super::train::{train, train_streamed, DictLog, DictOptions};
use super::Dictionary;
use crate::data::{load_sharegpt, Dataset, PromptOptions, Prompter, TurnFilter};
use crate::extract::StoreMeta;
use crate::fetch::fetch_data;
use crate::model::Model;
use crate::tokenize::{ChatMessage, Tokenizer};
use crate::util::atomic_write_bytes;
use crate::{Error, Result};

/// The training log file of a crosscoder directory.
pub const TRAIN_LOG: &str = "train_log.json";
/// The per-latent table of a crosscoder directory.
pub const LATENTS_CSV: &str = "latents.csv";

/// Options of [`crosscoder`]: each stage's own options, and the two models' names.
#[derive(Debug, Clone)]
pub struct CrosscoderOptions {
    /// The paired corpus (hook point, batch size, skipped first positions).
    pub corpus: CorpusOptions,
    /// The trainer (latents, k, steps, seed, ...).
    pub train: DictOptions,
    /// The labels of the latent table.
    pub labels: LabelOptions,
    /// What the dashboard shows.
    pub dashboard: DashboardOptions,
    /// Names of the base and the tuned model, kept in the crosscoder's metadata.
    pub names: [String; 2],
    /// Tokens per batch while encoding the corpus for metrics and contexts (2048).
    pub eval_batch: usize,
}

impl Default for CrosscoderOptions {
    fn default() -> Self {
        Self {
            corpus: CorpusOptions::default(),
            train: DictOptions::default(),
            labels: LabelOptions::default(),
            dashboard: DashboardOptions::default(),
            names: ["base".into(), "tuned".into()],
            eval_batch: 2048,
        }
    }
}

/// What [`crosscoder`] produced.
#[derive(Debug, Clone)]
pub struct CrosscoderRun {
    /// The trained crosscoder (metadata: `hook_name`, `model.0`, `model.1`).
    pub dict: Dictionary,
    /// Its training log.
    pub log: DictLog,
    /// Its metrics on the corpus.
    pub metrics: Metrics,
    /// The per-latent table.
    pub latents: Vec<LatentStats>,
    /// The paired corpus (`[n_tokens, 2, d_model]`).
    pub corpus: PairedCorpus,
    /// Latent activations of the corpus, `[n_tokens, n_latents]` f32 on the CPU.
    pub f: Tensor,
    /// The dashboard.
    pub dashboard: Dashboard,
    /// Seconds spent collecting the corpus (0 from [`crosscoder_on`]).
    pub corpus_seconds: f64,
}

/// Trains a crosscoder between `base` and `tuned` on the prompts of `sets` (identical ids in both
/// models) and measures it: [`paired_corpus`], [`train`], [`evaluate`], [`latents`] and the
/// [`Dashboard`], `decode` giving each token's text for the contexts.
///
/// ```no_run
/// use puppetlens::dict::{crosscoder, CrosscoderOptions, PromptSet};
/// use puppetlens::HookPoint;
/// let (base, tok) = puppetlens::open("gemma-3-270m", &Default::default())?;
/// let (tuned, _) = puppetlens::open("sycophant", &Default::default())?;
/// let sets = [PromptSet::new("neutral", vec![tok.encode("The capital of France is Paris.")?])];
/// let mut opts = CrosscoderOptions::default();
/// opts.corpus.point = HookPoint::ResidPost(8);
/// let run = crosscoder(&base, &tuned, &sets, |t| tok.decode(&[t]).unwrap_or_default(), &opts)?;
/// println!("FVU {:?}, L0 {:.1}", run.metrics.fvu, run.metrics.l0);
/// run.save("runs/crosscoder", candle_core::DType::BF16)?; // then open runs/crosscoder/dashboard.html
/// # Ok::<(), puppetlens::Error>(())
/// ```
pub fn crosscoder(
    base: &Model,
    tuned: &Model,
    sets: &[PromptSet],
    decode: impl Fn(u32) -> String,
    opts: &CrosscoderOptions,
) -> Result<CrosscoderRun> {
    let t0 = Instant::now();
    let corpus = paired_corpus(base, tuned, sets, &opts.corpus)?;
    let mut run = crosscoder_on(corpus, decode, opts)?;
    run.corpus_seconds = t0.elapsed().as_secs_f64();
    Ok(run)
}

/// [`crosscoder`] on a paired corpus already collected (so that several settings share one
/// corpus: other `train` options, a variant of the dictionary); `opts.corpus` is not used
/// (the hook point is the corpus's) and [`CrosscoderRun::corpus_seconds`] is 0.
pub fn crosscoder_on(
    corpus: PairedCorpus,
    decode: impl Fn(u32) -> String,
    opts: &CrosscoderOptions,
) -> Result<CrosscoderRun> {
    let corpus_seconds = 0.0;
    let (mut dict, log) = train(&corpus.acts, &opts.train)?;
    dict.meta
        .insert("hook_name".into(), corpus.point.to_string());
    dict.meta.insert("model.0".into(), opts.names[0].clone());
    dict.meta.insert("model.1".into(), opts.names[1].clone());
    let metrics = evaluate(&dict, &corpus.acts, opts.eval_batch)?;
    let stats = latents(&dict, &corpus.acts, &opts.labels)?;
    let f = corpus.latent_activations(&dict, opts.eval_batch)?; // [n_tokens, n_latents]
    let dashboard = Dashboard::build(
        &dict,
        &corpus,
        &f,
        stats.clone(),
        Some(metrics.clone()),
        decode,
        &opts.dashboard,
    )?;
    Ok(CrosscoderRun {
        dict,
        log,
        metrics,
        latents: stats,
        corpus,
        f,
        dashboard,
        corpus_seconds,
    })
}

/// The prompts of a crosscoder's corpus, from dataset files (the options of
/// [`crosscoder_datasets`]).
#[derive(Debug, Clone)]
pub struct DatasetCorpus {
    /// Dataset files of any of the project's formats ([`Dataset::load`]); each is one prompt
    /// set, named by its file stem.
    pub files: Vec<PathBuf>,
    /// Add the opening user turns of this many real ShareGPT conversations (the first ones of
    /// 20-500 mostly ASCII characters, as chat turns; fetched into the cache when absent) as the
    /// prompt set `sharegpt` (0: none).
    pub sharegpt: usize,
    /// Use every split of each file (default: its training part only, so that held-out items
    /// stay unseen).
    pub all_splits: bool,
    /// For labeled instruction files: the `label` value counted as true (`harmful`).
    pub positive_label: String,
    /// How the records become prompts ([`Prompter::corpus`]: texts, both sides of each pair, A/B
    /// questions up to their answer).
    pub prompts: PromptOptions,
}

impl Default for DatasetCorpus {
    fn default() -> Self {
        Self {
            files: Vec::new(),
            sharegpt: 0,
            all_splits: false,
            positive_label: "harmful".into(),
            prompts: PromptOptions::default(),
        }
    }
}

impl DatasetCorpus {
    /// The prompt sets, in order (each file, then `sharegpt`), written with `tok`; a line per
    /// set on stderr when `progress`. Errors when the corpus names no file and no ShareGPT
    /// conversation.
    pub fn prompt_sets(&self, tok: &Tokenizer, progress: bool) -> Result<Vec<PromptSet>> {
        let pr = Prompter::new(tok, &self.prompts);
        let mut sets = Vec::new();
        for f in &self.files {
            let ds = Dataset::load(f, &self.positive_label)?;
            let ids = if self.all_splits {
                pr.corpus(&ds.records)?
            } else {
                let [(_, train), _, _] = ds.split_records()?;
                pr.corpus(&train)?
            };
            let name = ds.name();
            if progress {
                crate::progress::note(&format!("{name}: {} prompts", ids.len()));
            }
            sets.push(PromptSet::new(name, ids));
        }
        if self.sharegpt > 0 {
            let chats = load_sharegpt(fetch_data("sharegpt")?)?;
            let turns = chats.first_user_turns(&TurnFilter::default());
            let ids = turns
                .iter()
                .take(self.sharegpt)
                .map(|t| tok.encode_chat(&[ChatMessage::user(t)], true))
                .collect::<Result<Vec<_>>>()?;
            if progress {
                crate::progress::note(&format!("sharegpt: {} prompts", ids.len()));
            }
            sets.push(PromptSet::new("sharegpt", ids));
        }
        if sets.is_empty() {
            return Err(Error::InvalidArgument {
                name: "files".into(),
                msg: "no prompts: give at least one dataset file or ShareGPT conversations".into(),
            });
        }
        Ok(sets)
    }
}

/// The one call from dataset files to a crosscoder of a (base, tuned) pair: the prompt sets of
/// `corpus` ([`DatasetCorpus::prompt_sets`], written with `tok`, which both models share), then
/// [`crosscoder`], tokens spelled with `tok` for the dashboard. Errors when `corpus` names no
/// prompts (no file and no ShareGPT conversations).
///
/// ```no_run
/// use puppetlens::dict::{crosscoder_datasets, CrosscoderOptions, DatasetCorpus};
/// use puppetlens::HookPoint;
/// let ((base, tok), (tuned, _)) = puppetlens::open_pair("gemma-3-270m", "sycophant", &Default::default())?;
/// let corpus = DatasetCorpus { files: vec!["probes/true_false.csv".into()], ..Default::default() };
/// let mut opts = CrosscoderOptions::default();
/// opts.corpus.point = HookPoint::ResidPost(8);
/// let run = crosscoder_datasets(&base, &tuned, &tok, &corpus, &opts)?;
/// run.save("runs/cc", candle_core::DType::F32)?;
/// println!("{}", run.summary());
/// # Ok::<(), puppetlens::Error>(())
/// ```
pub fn crosscoder_datasets(
    base: &Model,
    tuned: &Model,
    tok: &Tokenizer,
    corpus: &DatasetCorpus,
    opts: &CrosscoderOptions,
) -> Result<CrosscoderRun> {
    let sets = corpus.prompt_sets(tok, opts.corpus.progress)?;
    crosscoder(
        base,
        tuned,
        &sets,
        |t| tok.decode(&[t]).unwrap_or_default(),
        opts,
    )
}

/// [`crosscoder_datasets`] with the paired corpus streamed to shards in `corpus_dir`
/// ([`crosscoder_streamed`]): extraction memory stays flat as the corpus grows, and an
/// interrupted corpus resumes.
///
/// ```no_run
/// use puppetlens::dict::{crosscoder_datasets_streamed, CrosscoderOptions, DatasetCorpus};
/// let (base, tok) = puppetlens::open("gemma-3-270m", &Default::default())?;
/// let (tuned, _) = puppetlens::open("sycophant", &Default::default())?;
/// let corpus = DatasetCorpus { sharegpt: 2000, ..Default::default() };
/// let run = crosscoder_datasets_streamed(&base, &tuned, &tok, &corpus, "runs/cc-corpus",
///                                        &CrosscoderOptions::default())?;
/// run.save("runs/cc", candle_core::DType::F32)?;
/// println!("{}", run.summary());
/// # Ok::<(), puppetlens::Error>(())
/// ```
pub fn crosscoder_datasets_streamed(
    base: &Model,
    tuned: &Model,
    tok: &Tokenizer,
    corpus: &DatasetCorpus,
    corpus_dir: impl AsRef<Path>,
    opts: &CrosscoderOptions,
) -> Result<StreamedRun> {
    let sets = corpus.prompt_sets(tok, opts.corpus.progress)?;
    crosscoder_streamed(
        base,
        tuned,
        &sets,
        corpus_dir,
        |t| tok.decode(&[t]).unwrap_or_default(),
        opts,
    )
}

/// One line for a terminal: corpus and training sizes and times, FVU per model, L0 and the
/// dead fraction.
fn run_summary(tokens: usize, corpus_seconds: f64, log: &DictLog, metrics: &Metrics) -> String {
    format!(
        "corpus {} tokens in {:.0} s; trained {} steps in {:.0} s ({:.0} tokens/s); FVU base {:.3}, tuned {:.3}; L0 {:.1}; dead {:.3}",
        tokens,
        corpus_seconds,
        log.steps.len(),
        log.seconds,
        log.tokens_per_s,
        metrics.fvu[0],
        metrics.fvu[1],
        metrics.l0,
        metrics.dead_fraction
    )
}

impl CrosscoderRun {
    /// One line for a terminal: corpus and training sizes and times, FVU per model, L0 and the
    /// dead fraction.
    pub fn summary(&self) -> String {
        run_summary(
            self.corpus.len(),
            self.corpus_seconds,
            &self.log,
            &self.metrics,
        )
    }

    /// Writes the run into `dir`: the crosscoder (`dict.json` + `dict.safetensors`, weights as
    /// `dtype`), `train_log.json`, `latents.csv` and the dashboard (`dashboard.json`,
    /// `dashboard.html`), each file atomically.
    pub fn save(&self, dir: impl AsRef<Path>, dtype: DType) -> Result<()> {
        save_run(
            dir.as_ref(),
            dtype,
            &self.dict,
            &self.log,
            &self.latents,
            &self.dashboard,
        )
    }
}

fn save_run(
    dir: &Path,
    dtype: DType,
    dict: &Dictionary,
    log: &DictLog,
    stats: &[LatentStats],
    dashboard: &Dashboard,
) -> Result<()> {
    dict.save_as(dir, dtype)?;
    let log = serde_json::to_string(log).map_err(|e| Error::InvalidArgument {
        name: "training log".into(),
        msg: e.to_string(),
    })?;
    atomic_write_bytes(&dir.join(TRAIN_LOG), log.as_bytes())?;
    atomic_write_bytes(&dir.join(LATENTS_CSV), latents_csv(stats).as_bytes())?;
    dashboard.save(dir)
}

/// What [`crosscoder_streamed`] produced: [`CrosscoderRun`] with the corpus on disk and no
/// latent-activation matrix (the dashboard's contexts were found in one pass over the shards).
#[derive(Debug, Clone)]
pub struct StreamedRun {
    /// The trained crosscoder (metadata: `hook_name`, `model.0`, `model.1`).
    pub dict: Dictionary,
    /// Its training log.
    pub log: DictLog,
    /// Its metrics on the corpus.
    pub metrics: Metrics,
    /// The per-latent table.
    pub latents: Vec<LatentStats>,
    /// The paired corpus on disk.
    pub corpus: CorpusStore,
    /// The dashboard.
    pub dashboard: Dashboard,
    /// Seconds spent writing the corpus (0 from [`crosscoder_on_store`]).
    pub corpus_seconds: f64,
}

impl StreamedRun {
    /// One line for a terminal, as [`CrosscoderRun::summary`] (tokens counted after the
    /// outlier filter).
    pub fn summary(&self) -> String {
        run_summary(
            self.corpus.len(),
            self.corpus_seconds,
            &self.log,
            &self.metrics,
        )
    }

    /// Writes the run into `dir` as [`CrosscoderRun::save`] does (the corpus stays where it is).
    pub fn save(&self, dir: impl AsRef<Path>, dtype: DType) -> Result<()> {
        save_run(
            dir.as_ref(),
            dtype,
            &self.dict,
            &self.log,
            &self.latents,
            &self.dashboard,
        )
    }
}

/// [`crosscoder`] with the paired corpus streamed to `corpus_dir`
/// ([`paired_corpus_to_dir`]; an interrupted corpus resumes) and everything after it read
/// shard by shard ([`train_streamed`] on the base model's device, [`CorpusStore::evaluate`],
/// [`CorpusStore::latents`], [`Dashboard::build_streamed`]): memory does not grow with the
/// corpus. `opts.corpus` sets the shard size and dtype; `opts.train.stream_window` the shards
/// held while training.
///
/// ```no_run
/// use puppetlens::dict::{crosscoder_streamed, CrosscoderOptions, PromptSet};
/// use puppetlens::HookPoint;
/// let (base, tok) = puppetlens::open("gemma-3-270m", &Default::default())?;
/// let (tuned, _) = puppetlens::open("sycophant", &Default::default())?;
/// let sets = [PromptSet::new("neutral", vec![tok.encode("The capital of France is Paris.")?])];
/// let mut opts = CrosscoderOptions::default();
/// opts.corpus.point = HookPoint::ResidPost(8);
/// let decode = |t| tok.decode(&[t]).unwrap_or_default();
/// let run = crosscoder_streamed(&base, &tuned, &sets, "runs/corpus", decode, &opts)?;
/// run.save("runs/crosscoder", candle_core::DType::BF16)?;
/// # Ok::<(), puppetlens::Error>(())
/// ```
pub fn crosscoder_streamed(
    base: &Model,
    tuned: &Model,
    sets: &[PromptSet],
    corpus_dir: impl AsRef<Path>,
    decode: impl Fn(u32) -> String,
    opts: &CrosscoderOptions,
) -> Result<StreamedRun> {
    let t0 = Instant::now();
    let meta = StoreMeta {
        model: format!("{} | {}", opts.names[0], opts.names[1]),
        dataset: sets
            .iter()
            .map(|s| s.name.as_str())
            .collect::<Vec<_>>()
            .join(","),
        notes: String::new(),
    };
    let corpus = paired_corpus_to_dir(base, tuned, sets, &opts.corpus, corpus_dir, &meta)?;
    let corpus_seconds = t0.elapsed().as_secs_f64();
    let mut run = crosscoder_on_store(corpus, decode, opts, base.device())?;
    run.corpus_seconds = corpus_seconds;
    Ok(run)
}

/// [`crosscoder_streamed`] on a corpus already on disk, training on `device`; `opts.corpus` is
/// not used and [`StreamedRun::corpus_seconds`] is 0.
pub fn crosscoder_on_store(
    corpus: CorpusStore,
    decode: impl Fn(u32) -> String,
    opts: &CrosscoderOptions,
    device: &Device,
) -> Result<StreamedRun> {
    let (mut dict, log) = train_streamed(&corpus, &opts.train, device)?;
    dict.meta
        .insert("hook_name".into(), corpus.point().to_string());
    dict.meta.insert("model.0".into(), opts.names[0].clone());
    dict.meta.insert("model.1".into(), opts.names[1].clone());
    let metrics = corpus.evaluate(&dict, opts.eval_batch)?;
    let stats = corpus.latents(&dict, &opts.labels)?;
    let dashboard = Dashboard::build_streamed(
        &dict,
        &corpus,
        stats.clone(),
        Some(metrics.clone()),
        decode,
        &opts.dashboard,
        opts.eval_batch,
    )?;
    Ok(StreamedRun {
        dict,
        log,
        metrics,
        latents: stats,
        corpus,
        dashboard,
        corpus_seconds: 0.0,
    })
}

/// The latent table as CSV: `latent,rel_norm,cosine,frequency,nu_error,nu_recon,label` (NaN
/// where Latent Scaling is undefined).
pub fn latents_csv(stats: &[LatentStats]) -> String {
    let mut csv = String::from("latent,rel_norm,cosine,frequency,nu_error,nu_recon,label\n");
    for s in stats {
        let (ne, nr) = s.nu();
        let _ = writeln!(
            csv,
            "{},{:.4},{:.4},{:.5},{:.4},{:.4},{:?}",
            s.index, s.rel_norm, s.cosine, s.frequency, ne, nr, s.label
        );
    }
    csv
}

/// A plain-text table of the `top` latents of highest relative decoder norm (most
/// tuned-specific first), with the label counts: what `puppetlens crosscoder latents` prints.
pub fn latents_table(stats: &[LatentStats], top: usize) -> String {
    let mut counts = std::collections::BTreeMap::<String, usize>::new();
    for s in stats {
        *counts.entry(format!("{:?}", s.label)).or_default() += 1;
    }
    let mut out = format!("{} latents: {counts:?}\n", stats.len());
    let _ = writeln!(
        out,
        "{:>6} {:<10} {:>9} {:>7} {:>9} {:>7} {:>7}",
        "latent", "label", "rel_norm", "cosine", "frequency", "nu_err", "nu_rec"
    );
    let mut order: Vec<&LatentStats> = stats.iter().collect();
    order.sort_by(|a, b| b.rel_norm.total_cmp(&a.rel_norm));
    for s in order.into_iter().take(top) {
        let (ne, nr) = s.nu();
        let _ = writeln!(
            out,
            "{:>6} {:<10} {:>9.3} {:>7.3} {:>9.4} {:>7.3} {:>7.3}",
            s.index,
            format!("{:?}", s.label),
            s.rel_norm,
            s.cosine,
            s.frequency,
            ne,
            nr
        );
    }
    out
}
