//! Paired activation corpus: a base model and its tuned sibling on identical token ids, every
//! real token position at one hook point, in memory, with each token's source (the disk-backed
//! twin, written from the same forward batches, is in `store.rs`).

use candle_core::{DType, Device, Tensor};

use crate::batch::Batch;
use crate::hook::{hook_fn, HookPoint, Hooks};
use crate::model::Model;
use crate::util::{length_batches, Progress};
use crate::{Error, Result};

use super::Dictionary;

/// A named set of tokenised prompts (e.g. `"sycophancy"`, `"instructions"`, `"neutral"`).
#[derive(Debug, Clone)]
pub struct PromptSet {
    /// The set's name, kept with each of its tokens.
    pub name: String,
    /// Token ids of each prompt.
    pub prompts: Vec<Vec<u32>>,
}

impl PromptSet {
    /// A set from its name and prompts.
    pub fn new(name: impl Into<String>, prompts: Vec<Vec<u32>>) -> Self {
        Self {
            name: name.into(),
            prompts,
        }
    }
}

/// Where one corpus token comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenSource {
    /// Index of its prompt set in [`PairedCorpus::sets`].
    pub set: usize,
    /// Index of its prompt within the set.
    pub item: usize,
    /// Its position in the prompt (0 = the first real token).
    pub pos: usize,
}

/// What to collect.
#[derive(Debug, Clone)]
pub struct CorpusOptions {
    /// The hook point read in both models (a residual point, `[batch, pos, d_model]`).
    pub point: HookPoint,
    /// Prompts per forward pass.
    pub batch_size: usize,
    /// Positions skipped at the start of each prompt (1 skips `<bos>`, whose residual norm is
    /// orders of magnitude above the other tokens' in Gemma and would dominate the dictionary).
    pub skip_first: usize,
    /// Drop tokens whose activation norm, in either model, exceeds this multiple of that
    /// model's median token norm over the corpus (5; `None` keeps every token). A few tokens
    /// carry "massive activations" (in gemma-3-270m at layer 8 two ShareGPT tokens of 15,484
    /// have norms near 53,700, ten times the median of 5,590); squared-error training on them
    /// spikes, and the spikes kill latents. [`PairedCorpus::dropped`] lists them. A corpus on
    /// disk stores every token with its two norms and applies the filter when it is read
    /// ([`CorpusStore::open`](super::CorpusStore::open); the ratio is kept in its manifest).
    pub max_norm_ratio: Option<f32>,
    /// Tokens per shard of a corpus written to disk ([`paired_corpus_to_dir`](super::paired_corpus_to_dir);
    /// 4096, about 21 MB of f32 at `d_model` 640). A shard ends after the forward batch that
    /// reaches this many tokens, so that no prompt spans two shards; training from disk holds
    /// [`DictOptions::stream_window`](super::DictOptions::stream_window) shards at a time.
    pub shard_tokens: usize,
    /// Dtype of the activations in the shards on disk: `F32` (the default; read back bit for bit
    /// as [`paired_corpus`] computes them), `BF16` or `F16` (half the disk; `F16` overflows above
    /// 65,504, which some residual coordinates reach: writing refuses it then). The norms that
    /// the outlier filter reads are computed in f32 before the cast. The in-memory corpus is f32.
    pub dtype: DType,
    /// Print progress to stderr.
    pub progress: bool,
}

impl Default for CorpusOptions {
    fn default() -> Self {
        Self {
            point: HookPoint::ResidPost(0),
            batch_size: 8,
            skip_first: 1,
            max_norm_ratio: Some(5.0),
            shard_tokens: 4096,
            dtype: DType::F32,
            progress: true,
        }
    }
}

/// Paired activations `[n_tokens, 2, d_model]` (model 0 the base, model 1 the tuned; f32 on the
/// CPU) with each token's id and source, held in memory (a few tens of thousands of tokens at
/// `d_model` 640 is about 100 MB).
#[derive(Debug, Clone)]
pub struct PairedCorpus {
    /// `[n_tokens, 2, d_model]` f32 on the CPU.
    pub acts: Tensor,
    /// Token id of each row.
    pub tokens: Vec<u32>,
    /// Source of each row.
    pub sources: Vec<TokenSource>,
    /// Names of the prompt sets, indexed by [`TokenSource::set`].
    pub sets: Vec<String>,
    /// Prompts of each set (for showing contexts).
    pub prompts: Vec<Vec<Vec<u32>>>,
    /// The hook point read.
    pub point: HookPoint,
    /// Tokens left out for their outlying norm ([`CorpusOptions::max_norm_ratio`]).
    pub dropped: Vec<TokenSource>,
}

/// One top-activating context of a latent.
#[derive(Debug, Clone)]
pub struct Context {
    /// Corpus row.
    pub row: usize,
    /// Where it comes from.
    pub source: TokenSource,
    /// The latent's activation there.
    pub activation: f32,
    /// Token ids of the window, ending at the activating token (the last one).
    pub window: Vec<u32>,
}

/// Runs `base` and `tuned` on every prompt of `sets` (identical ids) and keeps the activations at
/// `opts.point` of every real token from `opts.skip_first` on, in memory. For corpora that should
/// not live in memory, [`paired_corpus_to_dir`](super::paired_corpus_to_dir) writes the same
/// rows to disk shards (the same forward batches, so the same numbers).
///
/// Errors when the models differ in width or depth, the point is outside them, there is no
/// token to keep, or an activation is not finite.
///
/// ```no_run
/// use puppetlens::dict::{self, paired_corpus, CorpusOptions, DictOptions, PromptSet};
/// use puppetlens::{HookPoint, Model};
/// let (base, tok) = puppetlens::load(puppetlens::fetch::fetch("gemma-3-270m")?)?;
/// let a = puppetlens::lora::Adapter::load("notebooks-data/organisms/sycophant", base.device())?;
/// let tuned: Model = base.with_adapter(&a)?;
/// let sets = [PromptSet::new("neutral", vec![tok.encode("The capital of France is Paris.")?])];
/// let opts = CorpusOptions { point: HookPoint::ResidPost(8), ..CorpusOptions::default() };
/// let corpus = paired_corpus(&base, &tuned, &sets, &opts)?;    // acts [n_tokens, 2, 640]
/// let (cc, _log) = dict::train(&corpus.acts, &DictOptions::default())?;
/// let f = corpus.latent_activations(&cc, 1024)?;                // [n_tokens, n_latents]
/// for c in corpus.top_contexts(&f, 0, 5, 8)? {
///     println!("{} {:.2}: {}", corpus.sets[c.source.set], c.activation, tok.decode(&c.window)?);
/// }
/// # Ok::<(), puppetlens::Error>(())
/// ```
pub fn paired_corpus(
    base: &Model,
    tuned: &Model,
    sets: &[PromptSet],
    opts: &CorpusOptions,
) -> Result<PairedCorpus> {
    check_pair(base, tuned, opts)?;
    let plan = batch_plan(sets, opts.batch_size);
    let total: usize = sets.iter().map(|s| s.prompts.len()).sum();
    let mut progress = Progress::new("paired corpus", total, opts.progress);
    let (mut rows, mut norms, mut tokens, mut sources) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (si, idx) in &plan {
        if let Some(c) = run_batch(base, tuned, sets, *si, idx, opts)? {
            rows.push(c.acts);
            norms.extend(c.norms);
            tokens.extend(c.tokens);
            sources.extend(c.sources);
        }
        progress.advance(idx.len());
    }
    progress.finish();
    if rows.is_empty() {
        return Err(no_token(opts.skip_first));
    }
    let mut dropped = Vec::new();
    if let Some(ratio) = opts.max_norm_ratio {
        let keep = kept_rows(&norms, norm_limits(&norms, ratio));
        if keep.len() < norms.len() {
            if keep.is_empty() {
                return Err(Error::InvalidArgument {
                    name: "max_norm_ratio".into(),
                    msg: format!("{ratio} leaves no token"),
                });
            }
            let mut kept = vec![false; norms.len()];
            for &r in &keep {
                kept[r as usize] = true;
            }
            dropped = (0..norms.len())
                .filter(|&r| !kept[r])
                .map(|r| sources[r])
                .collect();
            tokens = keep.iter().map(|&r| tokens[r as usize]).collect();
            sources = keep.iter().map(|&r| sources[r as usize]).collect();
            // Filter each batch's rows before they are joined (one copy of the corpus fewer).
            let mut first = 0;
            for part in rows.iter_mut() {
                let k = part.dim(0)?;
                let local: Vec<u32> = (0..k as u32)
                    .filter(|&r| kept[first + r as usize])
                    .collect();
                if local.len() < k {
                    let m = local.len();
                    *part = part.index_select(&Tensor::from_vec(local, m, &Device::Cpu)?, 0)?;
                }
                first += k;
            }
        }
    }
    let acts = Tensor::cat(&rows, 0)?; // [n_tokens, 2, d]
    drop(rows);
    Ok(PairedCorpus {
        acts,
        tokens,
        sources,
        sets: sets.iter().map(|s| s.name.clone()).collect(),
        prompts: sets.iter().map(|s| s.prompts.clone()).collect(),
        point: opts.point,
        dropped,
    })
}

/// The rows of one forward batch of a paired corpus.
pub(super) struct Chunk {
    /// `[rows, 2, d_model]` f32 on the CPU.
    pub acts: Tensor,
    /// Per row, the base's and the tuned model's activation norm.
    pub norms: Vec<[f32; 2]>,
    /// Token id of each row.
    pub tokens: Vec<u32>,
    /// Source of each row.
    pub sources: Vec<TokenSource>,
}

/// Errors unless `base` and `tuned` have the same shape and `opts` reads a residual point of
/// them with a positive batch size.
pub(super) fn check_pair(base: &Model, tuned: &Model, opts: &CorpusOptions) -> Result<()> {
    let (cb, ct) = (base.config(), tuned.config());
    if cb.d_model != ct.d_model || cb.n_layers != ct.n_layers {
        return Err(Error::Shape {
            what: "tuned model of the pair".into(),
            expected: format!("d_model {}, {} layers (the base)", cb.d_model, cb.n_layers),
            got: format!("d_model {}, {} layers", ct.d_model, ct.n_layers),
        });
    }
    opts.point.check(cb.n_layers)?;
    if !opts.point.is_residual() {
        return Err(Error::InvalidArgument {
            name: opts.point.to_string(),
            msg: "a paired corpus reads a residual hook point ([batch, pos, d_model])".into(),
        });
    }
    if opts.batch_size == 0 {
        return Err(Error::InvalidArgument {
            name: "batch_size".into(),
            msg: "must be positive".into(),
        });
    }
    Ok(())
}

/// The error of a corpus without a token.
pub(super) fn no_token(skip_first: usize) -> Error {
    Error::InvalidArgument {
        name: "sets".into(),
        msg: format!(
            "no token to collect (empty prompt sets, or every prompt has at most {skip_first} tokens)"
        ),
    }
}

/// Every forward batch of a corpus, in order: (set index, prompt indices of the batch), the
/// prompts of each set grouped by length.
pub(super) fn batch_plan(sets: &[PromptSet], batch_size: usize) -> Vec<(usize, Vec<usize>)> {
    let mut plan = Vec::new();
    for (si, set) in sets.iter().enumerate() {
        let lens: Vec<usize> = set.prompts.iter().map(|p| p.len()).collect();
        for idx in length_batches(&lens, batch_size) {
            plan.push((si, idx));
        }
    }
    plan
}

/// Runs prompts `idx` of set `si` through both models: their rows (every real token from
/// `skip_first` on, prompt after prompt), `None` when no prompt of the batch has such a token.
/// Errors on a non-finite activation.
pub(super) fn run_batch(
    base: &Model,
    tuned: &Model,
    sets: &[PromptSet],
    si: usize,
    idx: &[usize],
    opts: &CorpusOptions,
) -> Result<Option<Chunk>> {
    let set = &sets[si];
    let ids: Vec<&[u32]> = idx.iter().map(|&i| set.prompts[i].as_slice()).collect();
    if ids.iter().all(|p| p.len() <= opts.skip_first) {
        return Ok(None);
    }
    let batch = Batch::new(&ids)?;
    let a = [
        run_point(base, &batch, opts.point)?,
        run_point(tuned, &batch, opts.point)?,
    ]; // 2 x [b, s, d]
    let (mut rows, mut tokens, mut sources) = (Vec::new(), Vec::new(), Vec::new());
    for (r, &i) in idx.iter().enumerate() {
        let (pad, len) = (batch.pads()[r], set.prompts[i].len());
        if len <= opts.skip_first {
            continue;
        }
        let n = len - opts.skip_first;
        let start = pad + opts.skip_first;
        let pair = Tensor::stack(
            &[
                a[0].get(r)?.narrow(0, start, n)?,
                a[1].get(r)?.narrow(0, start, n)?,
            ],
            1,
        )?; // [n, 2, d]
        rows.push(pair);
        for p in opts.skip_first..len {
            tokens.push(set.prompts[i][p]);
            sources.push(TokenSource {
                set: si,
                item: i,
                pos: p,
            });
        }
    }
    let acts = Tensor::cat(&rows, 0)?; // [rows, 2, d]
    let norms: Vec<[f32; 2]> = acts
        .sqr()?
        .sum(2)?
        .sqrt()?
        .to_vec2::<f32>()? // [rows][2]
        .into_iter()
        .map(|r| [r[0], r[1]])
        .collect();
    // A NaN or inf anywhere in a row makes its norm non-finite.
    if norms.iter().flatten().any(|v| !v.is_finite()) {
        return Err(Error::InvalidArgument {
            name: opts.point.to_string(),
            msg: "non-finite activations (NaN or inf)".into(),
        });
    }
    Ok(Some(Chunk {
        acts,
        norms,
        tokens,
        sources,
    }))
}

/// Each model's median token norm over `norms` (the upper median), times `ratio`: the norm
/// above which [`CorpusOptions::max_norm_ratio`] drops a token. `norms` is not empty.
pub(super) fn norm_limits(norms: &[[f32; 2]], ratio: f32) -> [f32; 2] {
    let m = median_norms(norms);
    [ratio * m[0], ratio * m[1]]
}

/// Each model's median token norm (the element at `len / 2` in sorted order); 0 when empty.
pub(super) fn median_norms(norms: &[[f32; 2]]) -> [f32; 2] {
    let median = |m: usize| {
        let mut v: Vec<f32> = norms.iter().map(|r| r[m]).collect();
        v.sort_by(|a, b| a.total_cmp(b));
        v.get(v.len() / 2).copied().unwrap_or(0.0)
    };
    [median(0), median(1)]
}

/// Rows whose norms are within `limits` in both models.
pub(super) fn kept_rows(norms: &[[f32; 2]], limits: [f32; 2]) -> Vec<u32> {
    (0..norms.len())
        .filter(|&r| norms[r][0] <= limits[0] && norms[r][1] <= limits[1])
        .map(|r| r as u32)
        .collect()
}

/// The activation at `point` of every row of `batch`: `[b, s, d_model]` f32 on the CPU.
fn run_point(model: &Model, batch: &Batch, point: HookPoint) -> Result<Tensor> {
    let mut out = None;
    {
        let mut hooks = Hooks::new();
        hooks.add(
            point,
            hook_fn(|x, _| {
                out = Some(x.to_dtype(DType::F32)?.to_device(&Device::Cpu)?); // [b, s, d]
                Ok(None)
            }),
        );
        model.run_hooks(batch, &mut hooks)?;
    }
    out.ok_or_else(|| Error::InvalidArgument {
        name: point.to_string(),
        msg: "the hook point did not fire".into(),
    })
}

impl PairedCorpus {
    /// Number of tokens.
    pub fn len(&self) -> usize {
        self.sources.len()
    }

    /// True when the corpus holds no token.
    pub fn is_empty(&self) -> bool {
        self.sources.is_empty()
    }

    /// Index of the set named `name`.
    pub fn set_index(&self, name: &str) -> Result<usize> {
        set_index(&self.sets, name)
    }

    /// Number of tokens per set, in [`sets`](Self::sets) order.
    pub fn set_counts(&self) -> Vec<usize> {
        set_counts(self.sets.len(), &self.sources)
    }

    /// Rows of the last token of each prompt of set `name` (where an A/B prompt's answer is
    /// read): `[n_prompts]` u32 row indices into [`acts`](Self::acts), on the CPU.
    pub fn last_tokens(&self, name: &str) -> Result<Tensor> {
        let si = self.set_index(name)?;
        last_token_rows(&self.sources, &self.prompts, si)
    }

    /// The corpus restricted to the last `n` positions of every prompt (where a chat prompt
    /// ends in the template's turn markers and an A/B prompt's answer is read; the organisms
    /// were preference-tuned on the answer token alone). Rows keep their order and sources;
    /// errors when `n` is 0 or nothing is left.
    ///
    /// ```no_run
    /// # fn f(corpus: puppetlens::dict::PairedCorpus) -> puppetlens::Result<()> {
    /// let tail = corpus.last_positions(4)?; // [<= 4 x n_prompts, 2, d]
    /// assert!(tail.len() <= corpus.len());
    /// # Ok(()) }
    /// ```
    pub fn last_positions(&self, n: usize) -> Result<PairedCorpus> {
        let rows: Vec<u32> = (0..self.len())
            .filter(|&r| {
                let s = self.sources[r];
                s.pos + n >= self.prompts[s.set][s.item].len()
            })
            .map(|r| r as u32)
            .collect();
        if n == 0 || rows.is_empty() {
            return Err(Error::InvalidArgument {
                name: "n".into(),
                msg: format!("the last {n} positions of the prompts hold no corpus token"),
            });
        }
        let k = rows.len();
        let idx = Tensor::from_vec(rows.clone(), k, &Device::Cpu)?;
        Ok(PairedCorpus {
            acts: self.acts.index_select(&idx, 0)?, // [k, 2, d]
            tokens: rows.iter().map(|&r| self.tokens[r as usize]).collect(),
            sources: rows.iter().map(|&r| self.sources[r as usize]).collect(),
            sets: self.sets.clone(),
            prompts: self.prompts.clone(),
            point: self.point,
            dropped: self.dropped.clone(),
        })
    }

    /// Mean over the tokens of set `name` (all tokens when `None`) of tuned - base: `[d_model]` f32.
    pub fn mean_diff(&self, name: Option<&str>) -> Result<Tensor> {
        let diff = (self.acts.get_on_dim(1, 1)? - self.acts.get_on_dim(1, 0)?)?; // [n, d]
        let diff = match name {
            None => diff,
            Some(n) => {
                let si = self.set_index(n)?;
                let idx: Vec<u32> = (0..self.len())
                    .filter(|&r| self.sources[r].set == si)
                    .map(|r| r as u32)
                    .collect();
                let k = idx.len();
                diff.index_select(&Tensor::from_vec(idx, k, &Device::Cpu)?, 0)?
            }
        };
        Ok(diff.mean(0)?) // [d]
    }

    /// Latent activations of every token: `[n_tokens, n_latents]` f32 on the CPU, encoded
    /// `batch_size` tokens at a time (a BatchTopK dictionary uses its inference threshold when
    /// it has one).
    pub fn latent_activations(&self, dict: &Dictionary, batch_size: usize) -> Result<Tensor> {
        self.check_dict(dict)?;
        let n = self.len();
        let mut out = Vec::new();
        let mut s = 0;
        while s < n {
            let m = batch_size.max(1).min(n - s);
            let x = self.acts.narrow(0, s, m)?.to_device(dict.device())?; // [m, 2, d]
            out.push(dict.encode(&x)?.to_device(&Device::Cpu)?); // [m, n_latents]
            s += m;
        }
        Ok(Tensor::cat(&out, 0)?)
    }

    /// Errors unless `dict` is a crosscoder of this corpus's width (and, when its metadata names
    /// a hook point, of this corpus's point).
    pub fn check_dict(&self, dict: &Dictionary) -> Result<()> {
        check_dict(dict, self.acts.dim(2)?, self.point)
    }

    /// The `n` tokens where column `latent` of `f` (`[n_tokens, n_latents]`, from
    /// [`latent_activations`](Self::latent_activations)) is largest and positive, each with the
    /// `window` tokens of its prompt ending at it.
    pub fn top_contexts(
        &self,
        f: &Tensor,
        latent: usize,
        n: usize,
        window: usize,
    ) -> Result<Vec<Context>> {
        let (rows, l) = f.dims2()?;
        if rows != self.len() || latent >= l {
            return Err(Error::Shape {
                what: "latent activations of the corpus".into(),
                expected: format!("[{}, > {latent}]", self.len()),
                got: format!("{:?}", f.dims()),
            });
        }
        let col = f.narrow(1, latent, 1)?.flatten_all()?.to_vec1::<f32>()?;
        let mut order: Vec<usize> = (0..rows).filter(|&r| col[r] > 0.0).collect();
        order.sort_by(|&a, &b| col[b].total_cmp(&col[a]));
        order.truncate(n);
        Ok(order
            .into_iter()
            .map(|r| {
                let s = self.sources[r];
                let p = &self.prompts[s.set][s.item];
                let lo = (s.pos + 1).saturating_sub(window.max(1));
                Context {
                    row: r,
                    source: s,
                    activation: col[r],
                    window: p[lo..=s.pos].to_vec(),
                }
            })
            .collect())
    }
}

/// Index of the set named `name` in `sets`.
pub(super) fn set_index(sets: &[String], name: &str) -> Result<usize> {
    sets.iter()
        .position(|s| s == name)
        .ok_or_else(|| Error::InvalidArgument {
            name: "set".into(),
            msg: format!("no prompt set `{name}` (sets: {sets:?})"),
        })
}

/// Tokens per set.
pub(super) fn set_counts(n_sets: usize, sources: &[TokenSource]) -> Vec<usize> {
    let mut c = vec![0; n_sets];
    for s in sources {
        c[s.set] += 1;
    }
    c
}

/// Rows holding the last token of a prompt of set `si`: `[n]` u32 on the CPU.
pub(super) fn last_token_rows(
    sources: &[TokenSource],
    prompts: &[Vec<Vec<u32>>],
    si: usize,
) -> Result<Tensor> {
    let rows: Vec<u32> = (0..sources.len())
        .filter(|&r| {
            let s = sources[r];
            s.set == si && s.pos + 1 == prompts[si][s.item].len()
        })
        .map(|r| r as u32)
        .collect();
    let n = rows.len();
    Ok(Tensor::from_vec(rows, n, &Device::Cpu)?)
}

/// Errors unless `dict` is a crosscoder of width `d` (and, when its metadata names a hook point,
/// of `point`).
pub(super) fn check_dict(dict: &Dictionary, d: usize, point: HookPoint) -> Result<()> {
    if dict.n_models() != 2 || dict.d() != d {
        return Err(Error::Shape {
            what: "crosscoder for this paired corpus".into(),
            expected: format!("2 models of width {d}"),
            got: format!("{} model(s) of width {}", dict.n_models(), dict.d()),
        });
    }
    if let Some(h) = dict.meta.get("hook_name") {
        if *h != point.to_string() {
            return Err(Error::InvalidArgument {
                name: "hook_name".into(),
                msg: format!("the crosscoder was trained at {h}, the corpus is from {point}"),
            });
        }
    }
    Ok(())
}
