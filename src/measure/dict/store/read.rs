//! Reading a paired corpus on disk: [`CorpusStore`] and what reads it shard by shard.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BinaryHeap};
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};

use super::{read_manifest, read_prompts, shard_name, CorpusManifest, ShardFile};
use super::{CORPUS_MANIFEST, CORPUS_PROMPTS};
use crate::dict::corpus::{kept_rows, median_norms, Context, PairedCorpus, TokenSource};
use crate::dict::latents::{latents_source, LabelOptions, LatentStats};
use crate::dict::metrics::{evaluate_source, ActSource, Metrics};
use crate::dict::Dictionary;
use crate::hook::HookPoint;
use crate::{Error, Result};

/// A paired corpus on disk, opened for reading: the rows' token ids, sources and norms and the
/// prompts in memory (a few bytes per token), the activations read one shard at a time.
///
/// Rows are numbered after the outlier filter, in the order [`paired_corpus`](crate::dict::paired_corpus)
/// gives them; every method that returns rows or per-row values uses this numbering.
#[derive(Debug, Clone)]
pub struct CorpusStore {
    dir: PathBuf,
    manifest: CorpusManifest,
    point: HookPoint,
    dtype: DType,
    prompts: Vec<Vec<Vec<u32>>>,
    /// Every row's norms, token id and source (outliers included).
    all_norms: Vec<[f32; 2]>,
    all_tokens: Vec<u32>,
    all_sources: Vec<TokenSource>,
    /// The filter in force.
    ratio: Option<f32>,
    /// Per shard, its kept rows (local indices).
    kept: Vec<Vec<u32>>,
    /// Per shard, the number of its first kept row (`n_shards + 1` entries).
    starts: Vec<usize>,
    tokens: Vec<u32>,
    sources: Vec<TokenSource>,
    dropped: Vec<TokenSource>,
}

impl CorpusStore {
    /// Opens the complete corpus in `dir` (written by [`paired_corpus_to_dir`](super::paired_corpus_to_dir)), filtered with
    /// the ratio its manifest records. Reads the manifest, the prompts and each shard's token
    /// ids, sources and norms (not the activations); checks every shard's tensors (names,
    /// dtypes, shapes, a file covering its header) and every row's source against the prompts.
    ///
    /// Errors: a missing file is [`Error::Io`] naming it; a manifest that does not parse, of
    /// another format or incomplete (an interrupted run: run [`paired_corpus_to_dir`](super::paired_corpus_to_dir) again to
    /// resume) is [`Error::Config`] naming it; a truncated, corrupt or inconsistent shard or
    /// prompts file is [`Error::Checkpoint`] naming it.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref().to_path_buf();
        let mpath = dir.join(CORPUS_MANIFEST);
        let manifest = read_manifest(&mpath)?
            .ok_or_else(|| Error::io(&mpath, std::io::Error::from(std::io::ErrorKind::NotFound)))?;
        let bad = |field: &str, msg: String| Error::Config {
            path: mpath.clone(),
            field: field.into(),
            msg,
        };
        if !manifest.complete() {
            return Err(bad(
                "median_norms",
                format!(
                    "the corpus is incomplete ({} of {} forward batches written); run paired_corpus_to_dir again to resume it",
                    manifest.shards.last().map_or(0, |s| s.batches_end),
                    manifest.n_batches
                ),
            ));
        }
        let point: HookPoint = manifest
            .point
            .parse()
            .map_err(|e: Error| bad("point", e.to_string()))?;
        let dtype = match manifest.dtype.as_str() {
            "f32" => DType::F32,
            "bf16" => DType::BF16,
            "f16" => DType::F16,
            other => {
                return Err(bad(
                    "dtype",
                    format!("`{other}`, expected f32, bf16 or f16"),
                ))
            }
        };
        if manifest.sets.len() != manifest.n_prompts.len() {
            return Err(bad(
                "n_prompts",
                format!(
                    "{} entries for {} sets",
                    manifest.n_prompts.len(),
                    manifest.sets.len()
                ),
            ));
        }
        if manifest.d_model == 0 {
            return Err(bad("d_model", "must be positive".into()));
        }
        let prompts = read_prompts(&dir.join(CORPUS_PROMPTS), &manifest.n_prompts)?;
        let n = manifest.n_rows();
        let (mut all_norms, mut all_tokens, mut all_sources) = (
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
        );
        for (s, entry) in manifest.shards.iter().enumerate() {
            if entry.file != shard_name(s) {
                return Err(bad(
                    "shards",
                    format!(
                        "entry {s} is `{}`, expected `{}`",
                        entry.file,
                        shard_name(s)
                    ),
                ));
            }
            let shard =
                ShardFile::open(&dir.join(&entry.file), entry.rows, manifest.d_model, dtype)?;
            let tokens = shard.load("tokens")?.to_vec1::<u32>()?;
            let sources = shard.load("sources")?.to_vec2::<u32>()?;
            for (t, src) in tokens.iter().zip(&sources) {
                let (set, item, pos) = (src[0] as usize, src[1] as usize, src[2] as usize);
                let ok = prompts
                    .get(set)
                    .and_then(|p| p.get(item))
                    .and_then(|p| p.get(pos))
                    .is_some_and(|id| id == t);
                if !ok {
                    return Err(shard.bad(format!(
                        "a row's source (set {set}, item {item}, pos {pos}, token {t}) is not a token of the corpus's prompts"
                    )));
                }
                all_sources.push(TokenSource { set, item, pos });
            }
            all_tokens.extend(tokens);
            all_norms.extend(shard.norms()?);
        }
        if n == 0 {
            return Err(bad("shards", "no rows".into()));
        }
        let mut store = CorpusStore {
            dir,
            point,
            dtype,
            prompts,
            ratio: manifest.max_norm_ratio,
            manifest,
            all_norms,
            all_tokens,
            all_sources,
            kept: Vec::new(),
            starts: Vec::new(),
            tokens: Vec::new(),
            sources: Vec::new(),
            dropped: Vec::new(),
        };
        store.apply_filter()?;
        Ok(store)
    }

    /// The same corpus with another outlier filter (`None` keeps every token): a token goes when
    /// its norm in either model exceeds `ratio` times that model's median over the whole corpus.
    /// The files are not touched.
    pub fn with_max_norm_ratio(mut self, ratio: Option<f32>) -> Result<Self> {
        self.ratio = ratio;
        self.apply_filter()?;
        Ok(self)
    }

    fn apply_filter(&mut self) -> Result<()> {
        let n = self.all_norms.len();
        let keep: Vec<u32> = match self.ratio {
            None => (0..n as u32).collect(),
            Some(ratio) => {
                // The medians as the in-memory corpus computes them (the manifest records them).
                let m = median_norms(&self.all_norms);
                kept_rows(&self.all_norms, [ratio * m[0], ratio * m[1]])
            }
        };
        if keep.is_empty() {
            return Err(Error::InvalidArgument {
                name: "max_norm_ratio".into(),
                msg: format!("{:?} leaves no token", self.ratio),
            });
        }
        let mut is_kept = vec![false; n];
        for &r in &keep {
            is_kept[r as usize] = true;
        }
        self.kept.clear();
        self.starts = vec![0];
        let mut first = 0;
        for entry in &self.manifest.shards {
            let k: Vec<u32> = (0..entry.rows)
                .filter(|&r| is_kept[first + r])
                .map(|r| r as u32)
                .collect();
            let last = self.starts.last().copied().unwrap_or(0);
            self.starts.push(last + k.len());
            self.kept.push(k);
            first += entry.rows;
        }
        self.tokens = keep.iter().map(|&r| self.all_tokens[r as usize]).collect();
        self.sources = keep.iter().map(|&r| self.all_sources[r as usize]).collect();
        self.dropped = (0..n)
            .filter(|&r| !is_kept[r])
            .map(|r| self.all_sources[r])
            .collect();
        Ok(())
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The manifest.
    pub fn manifest(&self) -> &CorpusManifest {
        &self.manifest
    }

    /// The hook point read.
    pub fn point(&self) -> HookPoint {
        self.point
    }

    /// Width of the activations.
    pub fn d_model(&self) -> usize {
        self.manifest.d_model
    }

    /// Dtype of the activations on disk (they are read as f32).
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// The outlier filter in force.
    pub fn max_norm_ratio(&self) -> Option<f32> {
        self.ratio
    }

    /// Number of tokens (after the filter).
    pub fn len(&self) -> usize {
        self.sources.len()
    }

    /// True when the corpus holds no token.
    pub fn is_empty(&self) -> bool {
        self.sources.is_empty()
    }

    /// Number of shards.
    pub fn n_shards(&self) -> usize {
        self.kept.len()
    }

    /// Token id of each row.
    pub fn tokens(&self) -> &[u32] {
        &self.tokens
    }

    /// Source of each row.
    pub fn sources(&self) -> &[TokenSource] {
        &self.sources
    }

    /// Tokens left out by the filter.
    pub fn dropped(&self) -> &[TokenSource] {
        &self.dropped
    }

    /// Names of the prompt sets, indexed by [`TokenSource::set`].
    pub fn sets(&self) -> &[String] {
        &self.manifest.sets
    }

    /// Prompts of each set.
    pub fn prompts(&self) -> &[Vec<Vec<u32>>] {
        &self.prompts
    }

    /// Rows of shard `s` (after the filter): `[rows, 2, d_model]` f32 on the CPU, whatever the
    /// dtype on disk; they are rows `shard_start(s)..shard_start(s + 1)`.
    pub fn shard(&self, s: usize) -> Result<Tensor> {
        let entry = self.manifest.shards.get(s).ok_or(Error::IndexOutOfRange {
            what: "shard".into(),
            index: s,
            len: self.n_shards(),
        })?;
        let file = ShardFile::open(
            &self.dir.join(&entry.file),
            entry.rows,
            self.d_model(),
            self.dtype,
        )?;
        let acts = file.load("acts")?.to_dtype(DType::F32)?; // [rows, 2, d]
        let kept = &self.kept[s];
        if kept.len() == entry.rows {
            return Ok(acts);
        }
        let k = kept.len();
        Ok(acts.index_select(&Tensor::from_slice(kept, k, &Device::Cpu)?, 0)?) // [k, 2, d]
    }

    /// Number of the first row of shard `s` (`s` up to [`n_shards`](Self::n_shards), which
    /// gives [`len`](Self::len)).
    pub fn shard_start(&self, s: usize) -> usize {
        self.starts[s.min(self.starts.len() - 1)]
    }

    /// Calls `f(first_row, rows)` on each shard in order, `rows` `[n, 2, d_model]` f32 on the
    /// CPU (shards whose rows are all filtered out are skipped).
    pub fn for_each_shard(&self, mut f: impl FnMut(usize, Tensor) -> Result<()>) -> Result<()> {
        for s in 0..self.n_shards() {
            if self.kept[s].is_empty() {
                continue;
            }
            f(self.starts[s], self.shard(s)?)?;
        }
        Ok(())
    }

    /// Rows `rows` (any order, repeats allowed): `[rows.len(), 2, d_model]` f32 on the CPU,
    /// reading only the shards that hold them.
    pub fn rows(&self, rows: &[usize]) -> Result<Tensor> {
        let n = self.len();
        let mut by_shard: BTreeMap<usize, Vec<(usize, u32)>> = BTreeMap::new();
        for (i, &r) in rows.iter().enumerate() {
            if r >= n {
                return Err(Error::IndexOutOfRange {
                    what: "corpus row".into(),
                    index: r,
                    len: n,
                });
            }
            // The shard holding row r: the last whose start is <= r, among non-empty ones.
            let s = self.starts.partition_point(|&st| st <= r) - 1;
            by_shard
                .entry(s)
                .or_default()
                .push((i, (r - self.starts[s]) as u32));
        }
        let d = self.d_model();
        let mut parts = Vec::new();
        let mut order = Vec::with_capacity(rows.len());
        for (s, want) in by_shard {
            let acts = self.shard(s)?; // [k, 2, d]
            let local: Vec<u32> = want.iter().map(|w| w.1).collect();
            let m = local.len();
            parts.push(acts.index_select(&Tensor::from_vec(local, m, &Device::Cpu)?, 0)?);
            order.extend(want.iter().map(|w| w.0));
        }
        if parts.is_empty() {
            return Ok(Tensor::zeros((0, 2, d), DType::F32, &Device::Cpu)?);
        }
        let got = Tensor::cat(&parts, 0)?; // [rows.len(), 2, d], grouped by shard
                                           // Row j of `got` is request order[j]; put request i back at row i.
        let mut inverse = vec![0u32; order.len()];
        for (j, &i) in order.iter().enumerate() {
            inverse[i] = j as u32;
        }
        let k = inverse.len();
        Ok(got.index_select(&Tensor::from_vec(inverse, k, &Device::Cpu)?, 0)?)
    }

    /// The whole corpus in memory, as [`paired_corpus`](crate::dict::paired_corpus) returns it (with
    /// f32 shards, bit for bit): for corpora that fit in memory.
    pub fn load(&self) -> Result<PairedCorpus> {
        let mut parts = Vec::with_capacity(self.n_shards());
        self.for_each_shard(|_, t| {
            parts.push(t);
            Ok(())
        })?;
        Ok(PairedCorpus {
            acts: Tensor::cat(&parts, 0)?, // [n_tokens, 2, d]
            tokens: self.tokens.clone(),
            sources: self.sources.clone(),
            sets: self.manifest.sets.clone(),
            prompts: self.prompts.clone(),
            point: self.point,
            dropped: self.dropped.clone(),
        })
    }

    /// Index of the set named `name`.
    pub fn set_index(&self, name: &str) -> Result<usize> {
        crate::dict::corpus::set_index(&self.manifest.sets, name)
    }

    /// Number of tokens per set, in [`sets`](Self::sets) order.
    pub fn set_counts(&self) -> Vec<usize> {
        crate::dict::corpus::set_counts(self.manifest.sets.len(), &self.sources)
    }

    /// Rows of the last token of each prompt of set `name`: `[n_prompts]` u32 row indices, on
    /// the CPU (read their activations with [`rows`](Self::rows)).
    pub fn last_tokens(&self, name: &str) -> Result<Tensor> {
        let si = self.set_index(name)?;
        crate::dict::corpus::last_token_rows(&self.sources, &self.prompts, si)
    }

    /// Mean over the tokens of set `name` (all tokens when `None`) of tuned - base: `[d_model]`
    /// f32 on the CPU, summed shard by shard in f64.
    pub fn mean_diff(&self, name: Option<&str>) -> Result<Tensor> {
        let si = name.map(|n| self.set_index(n)).transpose()?;
        let d = self.d_model();
        let mut sum = vec![0f64; d];
        let mut count = 0usize;
        self.for_each_shard(|first, acts| {
            let diff = (acts.get_on_dim(1, 1)? - acts.get_on_dim(1, 0)?)?; // [k, d]
            let diff = match si {
                None => diff,
                Some(si) => {
                    let k = diff.dim(0)?;
                    let idx: Vec<u32> = (0..k as u32)
                        .filter(|&r| self.sources[first + r as usize].set == si)
                        .collect();
                    if idx.is_empty() {
                        return Ok(());
                    }
                    let m = idx.len();
                    diff.index_select(&Tensor::from_vec(idx, m, &Device::Cpu)?, 0)?
                }
            };
            count += diff.dim(0)?;
            let part = diff.to_dtype(DType::F64)?.sum(0)?.to_vec1::<f64>()?; // [d]
            for (a, b) in sum.iter_mut().zip(part) {
                *a += b;
            }
            Ok(())
        })?;
        let mean: Vec<f32> = sum.iter().map(|s| (s / count as f64) as f32).collect();
        Ok(Tensor::from_vec(mean, d, &Device::Cpu)?)
    }

    /// Errors unless `dict` is a crosscoder of this corpus's width (and, when its metadata names
    /// a hook point, of this corpus's point).
    pub fn check_dict(&self, dict: &Dictionary) -> Result<()> {
        crate::dict::corpus::check_dict(dict, self.d_model(), self.point)
    }

    /// Latent activations of every token: `[n_tokens, n_latents]` f32 on the CPU, the corpus read
    /// shard by shard and encoded `batch_size` tokens at a time. The result grows with the
    /// corpus (`n_latents` f32 per token): for contexts prefer [`top_contexts`](Self::top_contexts),
    /// which keeps only the best rows.
    pub fn latent_activations(&self, dict: &Dictionary, batch_size: usize) -> Result<Tensor> {
        self.check_dict(dict)?;
        let mut out = Vec::new();
        self.for_each_shard(|_, acts| {
            out.push(encode_cpu(dict, &acts, batch_size)?);
            Ok(())
        })?;
        Ok(Tensor::cat(&out, 0)?)
    }

    /// For each latent of `latents`, the `n` tokens where it is largest and positive, each with
    /// the `window` tokens of its prompt ending at it (the same as
    /// [`PairedCorpus::top_contexts`] on [`latent_activations`](Self::latent_activations)), in one
    /// pass over the shards that keeps only the best `n` rows per latent.
    pub fn top_contexts(
        &self,
        dict: &Dictionary,
        latents: &[usize],
        n: usize,
        window: usize,
        batch_size: usize,
    ) -> Result<Vec<Vec<Context>>> {
        Ok(self
            .top_windows(dict, latents, n, window, batch_size)?
            .into_iter()
            .map(|v| v.into_iter().map(|(c, _)| c).collect())
            .collect())
    }

    /// [`top_contexts`](Self::top_contexts) with the latent's activation on every window token
    /// (0 where the corpus holds no row for it).
    pub(crate) fn top_windows(
        &self,
        dict: &Dictionary,
        latents: &[usize],
        n: usize,
        window: usize,
        batch_size: usize,
    ) -> Result<Vec<Windows>> {
        self.check_dict(dict)?;
        let l = dict.n_latents();
        if let Some(&j) = latents.iter().find(|&&j| j >= l) {
            return Err(Error::IndexOutOfRange {
                what: "latent".into(),
                index: j,
                len: l,
            });
        }
        let mut heaps: Vec<BinaryHeap<Ranked>> = vec![BinaryHeap::new(); latents.len()];
        self.for_each_shard(|first, acts| {
            let f = encode_cpu(dict, &acts, batch_size)?; // [k, l]
            let k = f.dim(0)?;
            let f = f.flatten_all()?.to_vec1::<f32>()?; // [k * l]
            for (heap, &j) in heaps.iter_mut().zip(latents) {
                for r in 0..k {
                    let a = f[r * l + j];
                    if a.is_nan() || a <= 0.0 || n == 0 {
                        continue;
                    }
                    let cand = Ranked {
                        act: a,
                        row: first + r,
                        acts: Vec::new(),
                    };
                    if heap.len() == n {
                        match heap.peek() {
                            Some(worst) if cand < *worst => {}
                            _ => continue,
                        }
                    }
                    // The window's activations: its rows precede r in this shard (no prompt
                    // spans two shards).
                    let s = self.sources[first + r];
                    let w = (s.pos + 1).min(window.max(1));
                    let acts: Vec<f32> = (0..w)
                        .map(|i| {
                            let back = w - 1 - i;
                            r.checked_sub(back)
                                .filter(|&q| {
                                    let t = self.sources[first + q];
                                    t.set == s.set && t.item == s.item && t.pos + back == s.pos
                                })
                                .map_or(0.0, |q| f[q * l + j].max(0.0))
                        })
                        .collect();
                    if heap.len() == n {
                        heap.pop();
                    }
                    heap.push(Ranked { acts, ..cand });
                }
            }
            Ok(())
        })?;
        Ok(heaps
            .into_iter()
            .map(|h| {
                h.into_sorted_vec()
                    .into_iter()
                    .map(|c| {
                        let s = self.sources[c.row];
                        let p = &self.prompts[s.set][s.item];
                        let lo = (s.pos + 1).saturating_sub(window.max(1));
                        (
                            Context {
                                row: c.row,
                                source: s,
                                activation: c.act,
                                window: p[lo..=s.pos].to_vec(),
                            },
                            c.acts,
                        )
                    })
                    .collect()
            })
            .collect())
    }

    /// [`evaluate`](crate::dict::evaluate) on this corpus, read shard by shard (the batches move to the
    /// dictionary's device).
    pub fn evaluate(&self, dict: &Dictionary, batch_size: usize) -> Result<Metrics> {
        self.check_dict(dict)?;
        evaluate_source(dict, self, batch_size)
    }

    /// [`latents`](crate::dict::latents) (decoder norms, Latent Scaling, labels) on this corpus, read
    /// shard by shard.
    pub fn latents(&self, dict: &Dictionary, opts: &LabelOptions) -> Result<Vec<LatentStats>> {
        self.check_dict(dict)?;
        latents_source(dict, self, opts)
    }
}

/// Top contexts, each with the latent's activation on every window token.
pub(crate) type Windows = Vec<(Context, Vec<f32>)>;

/// A candidate top context; ordered so that the best (highest activation, then lowest row, as
/// a stable sort of the rows by activation gives) is the smallest, so that a max-heap's top is
/// the worst kept.
#[derive(Debug, Clone)]
struct Ranked {
    act: f32,
    row: usize,
    acts: Vec<f32>,
}

impl Ord for Ranked {
    fn cmp(&self, other: &Self) -> Ordering {
        other
            .act
            .total_cmp(&self.act)
            .then(self.row.cmp(&other.row))
    }
}

impl PartialOrd for Ranked {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Ranked {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Ranked {}

/// Latent activations of `acts` (`[k, 2, d]` on the CPU), encoded `batch_size` rows at a time
/// on the dictionary's device: `[k, n_latents]` f32 on the CPU.
fn encode_cpu(dict: &Dictionary, acts: &Tensor, batch_size: usize) -> Result<Tensor> {
    let k = acts.dim(0)?;
    let mut out = Vec::new();
    let mut s = 0;
    while s < k {
        let m = batch_size.max(1).min(k - s);
        let x = acts.narrow(0, s, m)?.to_device(dict.device())?; // [m, 2, d]
        out.push(dict.encode(&x)?.to_device(&Device::Cpu)?); // [m, n_latents]
        s += m;
    }
    Ok(Tensor::cat(&out, 0)?)
}

impl ActSource for CorpusStore {
    fn n_tokens(&self) -> usize {
        self.len()
    }

    fn mean_on(&self, dev: &Device) -> Result<Tensor> {
        let d = self.d_model();
        let mut sum = vec![0f64; 2 * d];
        self.for_each_shard(|_, acts| {
            let part = acts
                .to_dtype(DType::F64)?
                .sum(0)?
                .flatten_all()?
                .to_vec1::<f64>()?; // [2*d]
            for (a, b) in sum.iter_mut().zip(part) {
                *a += b;
            }
            Ok(())
        })?;
        let n = self.len() as f64;
        let mean: Vec<f32> = sum.iter().map(|s| (s / n) as f32).collect();
        Ok(Tensor::from_vec(mean, (2, d), dev)?) // [2, d]
    }

    fn for_each_batch(
        &self,
        batch_size: usize,
        dev: &Device,
        f: &mut dyn FnMut(&Tensor) -> Result<()>,
    ) -> Result<()> {
        self.for_each_shard(|_, acts| {
            let acts = acts.to_device(dev)?; // [k, 2, d]
            let k = acts.dim(0)?;
            let mut s = 0;
            while s < k {
                let m = batch_size.max(1).min(k - s);
                f(&acts.narrow(0, s, m)?)?; // [m, 2, d]
                s += m;
            }
            Ok(())
        })
    }
}
