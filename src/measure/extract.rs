//! Batched activation extraction at chosen token sites, in memory or streamed to safetensors shards.
//!
//! [`extract`] runs prompts in left-padded batches, records the hook points asked for (the forward
//! stops after the last one) and keeps one vector per prompt and point, picked by a [`Site`]: the last
//! token, a token position, the mean over a span, or the first `k` tokens. [`extract_to_dir`] streams
//! the same to safetensors shards (TransformerLens keys such as `blocks.3.hook_resid_post`, metadata in
//! each header and in `store.json`), so memory does not grow with the dataset; an interrupted run
//! resumes from the last complete shard. Shards open in Python with `safetensors.safe_open`.
//! [`extract_dataset`] is the one call from a dataset file to such a store, with each row's label.
//! [`extract_pairs`] and [`extract_endings`] take prompts that share their beginning (a contrast
//! pair's question followed by each answer letter): the beginning runs once into a KV cache and
//! the endings run as cached steps on it, giving what [`extract`] gives on the joined prompts.
//!
//! ```no_run
//! use puppetlens::extract::{extract, ExtractOptions, Site};
//! use puppetlens::{HookPoint, LoadOptions, Model};
//! let model = Model::load("model.gguf", &LoadOptions::default())?;
//! let prompts = vec![vec![1u32, 2, 3], vec![4u32, 5]];
//! let acts = extract(&model, &prompts, &ExtractOptions::resid_post(&model, Site::Last))?;
//! let x = acts.require(HookPoint::ResidPost(3))?; // [2, d_model] f32
//! # Ok::<(), puppetlens::Error>(())
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::batch::Batch;
pub(crate) use crate::cache::write_safetensors;
use crate::cache::ActivationCache;
use crate::data::{Dataset, PromptOptions, Prompter, Records, SplitPart};
use crate::hook::{Hook, HookCtx, HookPoint, Hooks};
use crate::model::{KvCache, Model, Output};
use crate::tokenize::Tokenizer;
use crate::util::{atomic_write_bytes, Progress};
use crate::{Error, Result};

/// Which token(s) of each prompt to keep. Positions count from each prompt's first real token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Site {
    /// The last token (e.g. the A/B answer letter when the prompt ends with it).
    Last,
    /// The token at this position.
    At(usize),
    /// The mean over positions `start..end` (`end` = prompt length when `None`).
    Mean {
        /// First position.
        start: usize,
        /// One past the last position.
        end: Option<usize>,
    },
    /// Each of the first `k` tokens: a `[k, d_model]` block per prompt.
    FirstK(usize),
}

/// What to extract.
#[derive(Debug, Clone)]
pub struct ExtractOptions {
    /// Hook points to record.
    pub points: Vec<HookPoint>,
    /// Token site per prompt.
    pub site: Site,
    /// Prompts per forward pass.
    pub batch_size: usize,
    /// Prompts per shard (for [`extract_to_dir`]).
    pub shard_size: usize,
    /// Print progress to stderr.
    pub progress: bool,
}

impl ExtractOptions {
    /// Every `hook_resid_post` of `model` at `site`.
    pub fn resid_post(model: &Model, site: Site) -> Self {
        Self {
            points: (0..model.config().n_layers)
                .map(HookPoint::ResidPost)
                .collect(),
            site,
            ..Self::default()
        }
    }
}

impl Default for ExtractOptions {
    fn default() -> Self {
        Self {
            points: Vec::new(),
            site: Site::Last,
            batch_size: 8,
            shard_size: 512,
            progress: true,
        }
    }
}

/// Extracted activations: per hook point, `[n, d_model]` (or `[n, k, d_model]` for
/// [`Site::FirstK`]), f32 on the CPU: the one activation map, [`ActivationCache`] (`get` answers
/// an `Option`, `require` an error naming a missing point, `len` the number of prompts).
pub type Activations = ActivationCache;

/// A hook that keeps only the site's vectors of each row, as f32 on the CPU.
struct SiteRecorder<'a> {
    site: &'a Site,
    lens: Vec<usize>,
    out: BTreeMap<HookPoint, Tensor>,
}

impl Hook for SiteRecorder<'_> {
    fn call(&mut self, x: &Tensor, ctx: &HookCtx) -> Result<Option<Tensor>> {
        let (b, s, _d) = x.dims3()?;
        if *self.site == Site::Last {
            // Left padding puts every row's last token in the last column (also in a KV-cached
            // step, whose columns are the rows' newest tokens).
            let t = x
                .narrow(1, s - 1, 1)?
                .squeeze(1)?
                .to_dtype(DType::F32)?
                .to_device(&Device::Cpu)?
                .contiguous()?; // [b, d_model]
            self.out.insert(ctx.point, t);
            return Ok(None);
        }
        let mut rows = Vec::with_capacity(b);
        for i in 0..b {
            let pad = ctx.pads[i];
            let len = self.lens[i];
            let row = x.get(i)?; // [s, d_model]
            let pick = match self.site {
                Site::Last => row.narrow(0, pad + len - 1, 1)?, // [1, d_model]
                Site::At(p) => {
                    check_pos(*p + 1, len, i, self.site)?;
                    row.narrow(0, pad + p, 1)?
                }
                Site::Mean { start, end } => {
                    let end = end.unwrap_or(len);
                    if *start >= end {
                        return Err(Error::InvalidArgument {
                            name: "site".into(),
                            msg: format!(
                                "empty span {start}..{end} for prompt {i} of length {len}"
                            ),
                        });
                    }
                    check_pos(end, len, i, self.site)?;
                    row.narrow(0, pad + start, end - start)?.mean_keepdim(0)? // [1, d_model]
                }
                Site::FirstK(k) => {
                    check_pos(*k, len, i, self.site)?;
                    row.narrow(0, pad, *k)? // [k, d_model]
                }
            };
            rows.push(pick);
        }
        let t = Tensor::stack(&rows, 0)?
            .to_dtype(DType::F32)?
            .to_device(&Device::Cpu)?; // [b, width, d_model]
        let t = if matches!(self.site, Site::FirstK(_)) {
            t
        } else {
            t.squeeze(1)?
        };
        self.out.insert(ctx.point, t);
        Ok(None)
    }
}

fn check_pos(needed: usize, len: usize, i: usize, site: &Site) -> Result<()> {
    if needed > len {
        return Err(Error::InvalidArgument {
            name: "site".into(),
            msg: format!("{site:?} needs {needed} tokens but prompt {i} has {len}"),
        });
    }
    Ok(())
}

fn check_finite(t: &Tensor, p: HookPoint) -> Result<()> {
    let bad = t
        .flatten_all()?
        .to_vec1::<f32>()?
        .iter()
        .any(|v| !v.is_finite());
    if bad {
        return Err(Error::InvalidArgument {
            name: p.to_string(),
            msg: "non-finite activations (NaN or inf)".into(),
        });
    }
    Ok(())
}

/// Runs one batch of prompts and returns the site vectors at every point; with `kv`, the
/// prompts are endings run as cached steps after the prefixes it holds (a copy is extended).
fn extract_batch<P: AsRef<[u32]>>(
    model: &Model,
    prompts: &[P],
    opts: &ExtractOptions,
    kv: Option<&KvCache>,
) -> Result<Activations> {
    let batch = Batch::new(prompts)?;
    let mut rec = SiteRecorder {
        site: &opts.site,
        lens: batch.lengths(),
        out: BTreeMap::new(),
    };
    {
        let points = opts.points.clone();
        let mut hooks = Hooks::new();
        hooks.add_where(move |p| points.contains(&p), &mut rec);
        model.run(&batch, kv.cloned().as_mut(), &mut hooks, Output::HooksOnly)?;
    }
    for (p, t) in &rec.out {
        check_finite(t, *p)?;
    }
    Ok(Activations::from_map(rec.out))
}

fn check_opts(model: &Model, prompts: &[Vec<u32>], opts: &ExtractOptions) -> Result<()> {
    if prompts.is_empty() {
        return Err(Error::InvalidArgument {
            name: "prompts".into(),
            msg: "no prompts to extract from (empty dataset)".into(),
        });
    }
    if opts.points.is_empty() {
        return Err(Error::InvalidArgument {
            name: "points".into(),
            msg: "no hook points to extract".into(),
        });
    }
    if opts.batch_size == 0 || opts.shard_size == 0 {
        return Err(Error::InvalidArgument {
            name: "batch_size/shard_size".into(),
            msg: "must be positive".into(),
        });
    }
    for p in &opts.points {
        p.check(model.config().n_layers)?;
    }
    Ok(())
}

/// Extracts in memory: per point, `[n, d_model]` f32 (or `[n, k, d_model]` for [`Site::FirstK`]).
pub fn extract(model: &Model, prompts: &[Vec<u32>], opts: &ExtractOptions) -> Result<Activations> {
    check_opts(model, prompts, opts)?;
    let mut progress = Progress::new("extract", prompts.len(), opts.progress);
    let acts = extract_ordered(model, prompts, opts, &mut progress)?;
    progress.finish();
    Ok(acts)
}

/// Runs `prompts` in batches of similar length and returns the rows in the prompts' order.
fn extract_ordered(
    model: &Model,
    prompts: &[Vec<u32>],
    opts: &ExtractOptions,
    progress: &mut Progress,
) -> Result<Activations> {
    let lens: Vec<usize> = prompts.iter().map(|p| p.len()).collect();
    let mut sorted = Activations::default();
    let mut order = Vec::with_capacity(prompts.len());
    for idx in crate::util::length_batches(&lens, opts.batch_size) {
        let batch: Vec<Vec<u32>> = idx.iter().map(|&i| prompts[i].clone()).collect();
        sorted.append(extract_batch(model, &batch, opts, None)?)?;
        progress.advance(idx.len());
        order.extend(idx);
    }
    // Row r of `sorted` is prompt order[r]; put prompt i back at row i.
    let mut inverse = vec![0usize; order.len()];
    for (r, &i) in order.iter().enumerate() {
        inverse[i] = r;
    }
    sorted.select(&inverse)
}

/// [`extract`] of prompts that share their beginning, each beginning run once: prompt `i` of
/// set `j` is `prefixes[i]` followed by `endings[j][i]` (e.g. CAA's two sets, a question
/// followed by its matching and by its other answer letter). Returns one [`Activations`] per set,
/// what [`extract`] gives on those joined prompts: with [`Site::Last`] each batch of prefixes runs
/// once with a KV cache and every set's endings run as KV-cached steps on it, so a prompt shared
/// by `k` endings costs one forward instead of `k` (measured in BENCHMARKS.md). Other sites, an
/// empty prefix or an empty ending run the joined prompts whole.
///
/// ```no_run
/// use puppetlens::extract::{extract_endings, ExtractOptions, Site};
/// use puppetlens::{HookPoint, LoadOptions, Model};
/// let model = Model::load("model.gguf", &LoadOptions::default())?;
/// let questions = vec![vec![1u32, 2, 3], vec![4u32, 5]];
/// let endings = vec![vec![vec![6u32], vec![6]], vec![vec![7u32], vec![7]]];
/// let opts = ExtractOptions::resid_post(&model, Site::Last);
/// let sets = extract_endings(&model, &questions, &endings, &opts)?;
/// let with_6 = sets[0].require(HookPoint::ResidPost(3))?; // [2, d_model] f32: [1,2,3,6], [4,5,6]
/// # Ok::<(), puppetlens::Error>(())
/// ```
pub fn extract_endings(
    model: &Model,
    prefixes: &[Vec<u32>],
    endings: &[Vec<Vec<u32>>],
    opts: &ExtractOptions,
) -> Result<Vec<Activations>> {
    let pre: Vec<&[u32]> = prefixes.iter().map(|p| p.as_slice()).collect();
    let ends: Vec<Vec<&[u32]>> = endings
        .iter()
        .map(|set| set.iter().map(|e| e.as_slice()).collect())
        .collect();
    let mut progress = Progress::new("extract", prefixes.len(), opts.progress);
    let acts = extract_split(model, &pre, &ends, opts, None, |_, _| Ok(()), &mut progress)?;
    progress.finish();
    Ok(acts)
}

/// [`extract`] of paired prompts (a contrast set's positives and negatives, same count): what
/// `extract` gives on `pos` and on `neg`. A pair whose prompts share at least half of the shorter
/// one as a common beginning (CAA prompts share all but their answer letter) runs that beginning
/// once ([`extract_endings`]); the other pairs run whole.
pub fn extract_pairs(
    model: &Model,
    pos: &[Vec<u32>],
    neg: &[Vec<u32>],
    opts: &ExtractOptions,
) -> Result<(Activations, Activations)> {
    if pos.len() != neg.len() {
        return Err(Error::Shape {
            what: "paired prompts".into(),
            expected: format!("as many negatives as positives ({})", pos.len()),
            got: format!("{} negatives", neg.len()),
        });
    }
    check_opts(model, pos, opts)?;
    // Each sharing pair splits after its common prefix, leaving both endings a token at least.
    let cut: Vec<usize> = pos
        .iter()
        .zip(neg)
        .map(|(p, n)| {
            let shorter = p.len().min(n.len());
            let common = p.iter().zip(n).take_while(|(a, b)| a == b).count();
            let c = common.min(shorter.saturating_sub(1));
            if opts.site == Site::Last && c > 0 && 2 * c >= shorter {
                c
            } else {
                0
            }
        })
        .collect();
    let (shared, whole): (Vec<usize>, Vec<usize>) = (0..pos.len()).partition(|&i| cut[i] > 0);
    let steps = shared.len() + 2 * whole.len();
    let mut progress = Progress::new("extract", steps, opts.progress);
    let (mut p, mut n) = (Activations::default(), Activations::default());
    if !shared.is_empty() {
        let pre: Vec<&[u32]> = shared.iter().map(|&i| &pos[i][..cut[i]]).collect();
        let ends = vec![
            shared.iter().map(|&i| &pos[i][cut[i]..]).collect(),
            shared.iter().map(|&i| &neg[i][cut[i]..]).collect(),
        ];
        let mut sets = extract_split(model, &pre, &ends, opts, None, |_, _| Ok(()), &mut progress)?;
        if let (Some(sn), Some(sp)) = (sets.pop(), sets.pop()) {
            p.append(sp)?;
            n.append(sn)?;
        }
    }
    if !whole.is_empty() {
        let pick =
            |v: &[Vec<u32>]| -> Vec<Vec<u32>> { whole.iter().map(|&i| v[i].clone()).collect() };
        p.append(extract_ordered(model, &pick(pos), opts, &mut progress)?)?;
        n.append(extract_ordered(model, &pick(neg), opts, &mut progress)?)?;
    }
    progress.finish();
    // Row r holds pair order[r]; put pair i back at row i.
    let order: Vec<usize> = shared.into_iter().chain(whole).collect();
    let mut inverse = vec![0usize; order.len()];
    for (r, &i) in order.iter().enumerate() {
        inverse[i] = r;
    }
    Ok((p.select(&inverse)?, n.select(&inverse)?))
}

/// The shared work of [`extract_endings`]: batches of prefixes (grouped by their endings'
/// lengths, then by length), each prefilled once into a KV cache whose endings run as cached
/// steps. With `answers` (per item, ids to score at its prefix's last position), the prefill's
/// logits of those ids (`[rows, k]`) go to `scored` with the batch's item indices.
pub(crate) fn extract_split(
    model: &Model,
    prefixes: &[&[u32]],
    endings: &[Vec<&[u32]>],
    opts: &ExtractOptions,
    answers: Option<&[Vec<u32>]>,
    mut scored: impl FnMut(&Tensor, &[usize]) -> Result<()>,
    progress: &mut Progress,
) -> Result<Vec<Activations>> {
    let n = prefixes.len();
    let joined = |j: usize, i: usize| -> Vec<u32> {
        let mut v = prefixes[i].to_vec();
        v.extend_from_slice(endings[j][i]);
        v
    };
    if endings.is_empty() {
        return Err(Error::InvalidArgument {
            name: "endings".into(),
            msg: "no sets of endings to extract".into(),
        });
    }
    for (j, set) in endings.iter().enumerate() {
        if set.len() != n {
            return Err(Error::Shape {
                what: format!("endings set {j}"),
                expected: format!("one ending per prefix ({n})"),
                got: format!("{} endings", set.len()),
            });
        }
    }
    if let Some(a) = answers {
        if let Some(i) = prefixes.iter().position(|p| p.is_empty()) {
            return Err(Error::InvalidArgument {
                name: format!("prefix {i}"),
                msg: "empty: it has no last position to score".into(),
            });
        }
        if a.len() != n {
            return Err(Error::Shape {
                what: "answer ids".into(),
                expected: format!("one row per prefix ({n})"),
                got: format!("{} rows", a.len()),
            });
        }
    }
    check_opts(
        model,
        &(0..n).map(|i| joined(0, i)).collect::<Vec<_>>(),
        opts,
    )?;
    // Items whose endings have the same lengths in every set can share cached steps.
    let mut groups: BTreeMap<Vec<usize>, Vec<usize>> = BTreeMap::new();
    for i in 0..n {
        let key: Vec<usize> = endings.iter().map(|set| set[i].len()).collect();
        groups.entry(key).or_default().push(i);
    }
    let mut sorted = vec![Activations::default(); endings.len()];
    let mut order = Vec::with_capacity(n);
    for (key, members) in groups {
        let lens: Vec<usize> = members.iter().map(|&i| prefixes[i].len()).collect();
        for part in crate::util::length_batches(&lens, opts.batch_size) {
            let idx: Vec<usize> = part.iter().map(|&k| members[k]).collect();
            let shared = idx.iter().all(|&i| !prefixes[i].is_empty());
            let cached = shared && opts.site == Site::Last && key.iter().all(|&e| e > 0);
            let kv = if cached || (shared && answers.is_some()) {
                let rows: Vec<&[u32]> = idx.iter().map(|&i| prefixes[i]).collect();
                let batch = Batch::new(&rows)?;
                let mut kv = KvCache::new(model.config().n_layers, batch.pads().to_vec());
                match answers {
                    Some(a) => {
                        let ids: Vec<Vec<u32>> = idx.iter().map(|&i| a[i].clone()).collect();
                        let logits = model.last_token_logits(
                            &batch,
                            &mut Hooks::new(),
                            None,
                            Some(&mut kv),
                            &ids,
                        )?; // [rows, k]
                        scored(&logits, &idx)?;
                    }
                    None => {
                        model.run(&batch, Some(&mut kv), &mut Hooks::new(), Output::LastHidden)?;
                    }
                }
                Some(kv)
            } else {
                None
            };
            for (j, set) in endings.iter().enumerate() {
                let acts = match (&kv, cached) {
                    (Some(kv), true) => {
                        // One ending length per set in a group: no padding.
                        let rows: Vec<&[u32]> = idx.iter().map(|&i| set[i]).collect();
                        extract_batch(model, &rows, opts, Some(kv))?
                    }
                    _ => {
                        let rows: Vec<Vec<u32>> = idx.iter().map(|&i| joined(j, i)).collect();
                        extract_batch(model, &rows, opts, None)?
                    }
                };
                sorted[j].append(acts)?;
            }
            progress.advance(idx.len());
            order.extend(idx);
        }
    }
    // Row r of each set is item order[r]; put item i back at row i.
    let mut inverse = vec![0usize; n];
    for (r, &i) in order.iter().enumerate() {
        inverse[i] = r;
    }
    sorted.iter().map(|a| a.select(&inverse)).collect()
}

/// Provenance stored with an activation store.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StoreMeta {
    /// Model name or path.
    pub model: String,
    /// Dataset name or path.
    pub dataset: String,
    /// Free-form notes (prompt format, split...).
    pub notes: String,
}

/// The manifest of an activation store directory (`store.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Provenance.
    pub meta: StoreMeta,
    /// Site used.
    pub site: Site,
    /// Hook point names (TransformerLens).
    pub points: Vec<String>,
    /// Number of prompts in the dataset.
    pub n_prompts: usize,
    /// Prompts per shard.
    pub shard_size: usize,
    /// sha256 of the prompts' token ids, to refuse resuming on other data.
    pub prompts_sha256: String,
    /// Shard files written so far, in order.
    pub shards: Vec<String>,
}

impl Manifest {
    /// True when every shard is written.
    pub fn complete(&self) -> bool {
        self.shards.len().saturating_mul(self.shard_size) >= self.n_prompts
    }
}

fn prompts_digest(prompts: &[Vec<u32>]) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for p in prompts {
        h.update((p.len() as u64).to_le_bytes());
        for id in p {
            h.update(id.to_le_bytes());
        }
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// Streams extraction to `dir` (shards `shard-00000.safetensors`, ... and `store.json`); resumes an
/// interrupted run on the same prompts and options. Returns the finished store's manifest.
pub fn extract_to_dir(
    model: &Model,
    prompts: &[Vec<u32>],
    opts: &ExtractOptions,
    dir: impl AsRef<Path>,
    meta: &StoreMeta,
) -> Result<Manifest> {
    check_opts(model, prompts, opts)?;
    let dir = dir.as_ref();
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    // One writer per store: a second extraction into this directory waits, then resumes (or is
    // refused when its prompts differ).
    let _lock = crate::util::lock_file(
        &dir.join(".store.lock"),
        &format!("the activation store {}", dir.display()),
    )?;
    crate::util::remove_stale(dir, &[".shard-", ".store.json.tmp-"]);
    let manifest_path = dir.join("store.json");
    let fresh = Manifest {
        meta: meta.clone(),
        site: opts.site.clone(),
        points: opts.points.iter().map(|p| p.to_string()).collect(),
        n_prompts: prompts.len(),
        shard_size: opts.shard_size,
        prompts_sha256: prompts_digest(prompts),
        shards: Vec::new(),
    };
    let mut manifest = match read_manifest(&manifest_path)? {
        Some(m) => {
            let same = Manifest {
                shards: Vec::new(),
                ..m.clone()
            } == fresh;
            if !same {
                return Err(Error::InvalidArgument {
                    name: manifest_path.display().to_string(),
                    msg: "an activation store for other prompts or options is here; choose another directory".into(),
                });
            }
            m
        }
        None => fresh,
    };
    let n_shards = prompts.len().div_ceil(opts.shard_size);
    let mut progress = Progress::new("extract", prompts.len(), opts.progress);
    progress.advance((manifest.shards.len() * opts.shard_size).min(prompts.len()));
    for s in manifest.shards.len()..n_shards {
        let start = s * opts.shard_size;
        let end = (start + opts.shard_size).min(prompts.len());
        let acts = extract_ordered(model, &prompts[start..end], opts, &mut progress)?;
        let name = format!("shard-{s:05}.safetensors");
        let mut header = BTreeMap::new();
        header.insert("model".to_string(), meta.model.clone());
        header.insert("dataset".to_string(), meta.dataset.clone());
        header.insert("site".to_string(), format!("{:?}", opts.site));
        header.insert("points".to_string(), manifest.points.join(","));
        header.insert("rows".to_string(), format!("{start}..{end}"));
        acts.save_with_metadata(&dir.join(&name), header)?;
        manifest.shards.push(name);
        let json = serde_json::to_string_pretty(&manifest).map_err(|e| Error::InvalidArgument {
            name: "manifest".into(),
            msg: e.to_string(),
        })?;
        atomic_write_bytes(&manifest_path, json.as_bytes())?;
    }
    progress.finish();
    Ok(manifest)
}

fn read_manifest(path: &Path) -> Result<Option<Manifest>> {
    if !path.exists() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| Error::Config {
            path: path.to_path_buf(),
            field: "(file)".into(),
            msg: format!("not a store manifest: {e}"),
        })
}

/// Options of [`extract_dataset`].
#[derive(Debug, Clone, Default)]
pub struct DatasetStoreOptions {
    /// Points, site, batch and shard sizes, progress; no points means every `hook_resid_post`
    /// of the model.
    pub extract: ExtractOptions,
    /// How the records become prompts.
    pub prompts: PromptOptions,
    /// The model's name, recorded in `store.json`.
    pub model: String,
}

/// The one call from a dataset file to an activation store: every record of `ds` written as
/// prompts ([`Prompter::labeled`]: statements in file order; pairs: all positives, then all
/// negatives; A/B questions: all CAA prompts with the matching letter, then all with the other),
/// streamed into `dir` by [`extract_to_dir`] (an interrupted run resumes), with `labels.json`
/// holding the row layout, each row's label and, when the file records one, each row's split.
/// Returns the store's manifest.
///
/// ```no_run
/// use puppetlens::data::Dataset;
/// use puppetlens::extract::{extract_dataset, DatasetStoreOptions};
/// let (model, tok) = puppetlens::open("smollm2-135m-instruct", &Default::default())?;
/// let ds = Dataset::load("probes/true_false.csv", "harmful")?;
/// let manifest = extract_dataset(&model, &tok, &ds, &DatasetStoreOptions::default(), "acts/true_false")?;
/// println!("{} prompts, {} shards", manifest.n_prompts, manifest.shards.len());
/// # Ok::<(), puppetlens::Error>(())
/// ```
pub fn extract_dataset(
    model: &Model,
    tok: &Tokenizer,
    ds: &Dataset,
    opts: &DatasetStoreOptions,
    dir: impl AsRef<Path>,
) -> Result<Manifest> {
    let dir = dir.as_ref();
    let pr = Prompter::new(tok, &opts.prompts);
    let rows = pr.labeled(&ds.records)?;
    // The split of each row (pairs and A/B questions give two rows per record, in two halves).
    let tags: Option<Vec<SplitPart>> = ds.tags.as_ref().map(|t| match ds.records {
        Records::Labeled(_) => t.clone(),
        _ => t.iter().chain(t.iter()).copied().collect(),
    });
    let mut eopts = opts.extract.clone();
    if eopts.points.is_empty() {
        eopts.points = ExtractOptions::resid_post(model, eopts.site.clone()).points;
    }
    let n = ds.records.len();
    let layout = match ds.records {
        Records::Labeled(_) => "rows in file order".to_string(),
        Records::Pairs(_) => format!(
            "rows 0..{n}: positives, rows {n}..{}: negatives, in file order",
            2 * n
        ),
        Records::Ab(_) => format!(
            "rows 0..{n}: CAA prompts with the matching letter, rows {n}..{}: with the other \
             letter, in file order",
            2 * n
        ),
    };
    let meta = StoreMeta {
        model: opts.model.clone(),
        dataset: ds.path.display().to_string(),
        notes: format!("{}; {layout}; labels in labels.json", pr.note(&ds.records)),
    };
    let prompts: Vec<Vec<u32>> = rows.iter().map(|(p, _)| p.clone()).collect();
    let manifest = extract_to_dir(model, &prompts, &eopts, dir, &meta)?;
    let labels = serde_json::json!({
        "layout": layout,
        "labels": rows.iter().map(|(_, l)| *l).collect::<Vec<_>>(),
        "split": tags,
    });
    let text = serde_json::to_string_pretty(&labels).map_err(|e| Error::InvalidArgument {
        name: "labels".into(),
        msg: e.to_string(),
    })?;
    atomic_write_bytes(&dir.join("labels.json"), text.as_bytes())?;
    Ok(manifest)
}

/// Reads a finished (or partial) store: per point, all shards concatenated.
pub fn load_store(dir: impl AsRef<Path>) -> Result<(Manifest, Activations)> {
    let dir = dir.as_ref();
    let path = dir.join("store.json");
    let manifest = read_manifest(&path)?
        .ok_or_else(|| Error::io(&path, std::io::Error::from(std::io::ErrorKind::NotFound)))?;
    let bad = |field: &str, msg: String| Error::Config {
        path: path.clone(),
        field: field.into(),
        msg,
    };
    if manifest.shard_size == 0 {
        return Err(bad("shard_size", "must be at least 1".into()));
    }
    let max_shards = manifest.n_prompts.div_ceil(manifest.shard_size);
    if manifest.shards.len() > max_shards {
        return Err(bad(
            "shards",
            format!(
                "{} shards for {} prompts in shards of {}",
                manifest.shards.len(),
                manifest.n_prompts,
                manifest.shard_size
            ),
        ));
    }
    let mut acts = Activations::default();
    for (s, shard) in manifest.shards.iter().enumerate() {
        // Shards are files of this directory, named as the writer names them.
        if *shard != format!("shard-{s:05}.safetensors") {
            return Err(bad(
                "shards",
                format!("entry {s} is `{shard}`, expected `shard-{s:05}.safetensors`"),
            ));
        }
        let p: PathBuf = dir.join(shard);
        let shard_acts = Activations::load(&p, &Device::Cpu)?;
        let rows = (manifest.n_prompts - s * manifest.shard_size).min(manifest.shard_size);
        for (k, v) in shard_acts.iter() {
            if v.dims().first() != Some(&rows) {
                return Err(Error::Checkpoint {
                    path: p.clone(),
                    msg: format!(
                        "tensor `{k}` has shape {:?}, expected {rows} rows",
                        v.dims()
                    ),
                });
            }
        }
        let names: Vec<String> = shard_acts.points().map(|p| p.to_string()).collect();
        let mut want = manifest.points.clone();
        want.sort();
        let mut got = names.clone();
        got.sort();
        if got != want {
            return Err(Error::Checkpoint {
                path: p.clone(),
                msg: format!("holds {names:?}, the manifest lists {:?}", manifest.points),
            });
        }
        acts.append(shard_acts)?;
    }
    Ok((manifest, acts))
}
