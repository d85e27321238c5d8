//! Writing a paired corpus to disk, shard by shard, resumably.

use std::collections::BTreeMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};

use super::{
    dtype_name, prompts_digest, read_manifest, shard_name, write_manifest, CorpusManifest,
    CorpusShard, CorpusStore, ShardFile, CORPUS_FORMAT, CORPUS_MANIFEST, CORPUS_PROMPTS,
};
use crate::dict::corpus::{
    batch_plan, check_pair, median_norms, no_token, run_batch, Chunk, CorpusOptions, PromptSet,
};
use crate::extract::{write_safetensors, StoreMeta};
use crate::model::Model;
use crate::util::{lock_file, remove_stale, Progress};
use crate::{Error, Result};

/// Runs `base` and `tuned` on every prompt of `sets` like [`paired_corpus`](crate::dict::paired_corpus)
/// (the same forward batches, so the same numbers) and writes the rows to `dir` shard by shard
/// (`opts.shard_tokens` tokens each, as `opts.dtype`), with their token ids, sources and
/// norms, the prompts and the manifest `corpus.json`; memory holds one shard of rows, not the
/// corpus. Resumes an interrupted run on the same sets and options after its last complete
/// shard (a finished one is only reopened); refuses a directory holding a corpus of other data
/// or options. Returns the corpus opened for reading, filtered with `opts.max_norm_ratio`.
///
/// Errors as [`paired_corpus`](crate::dict::paired_corpus) does, and on a dtype other than f32,
/// bf16 or f16, a zero `shard_tokens`, an f16 overflow, or a file that cannot be written.
///
/// ```no_run
/// use puppetlens::dict::{self, paired_corpus_to_dir, CorpusOptions, DictOptions, PromptSet};
/// use puppetlens::HookPoint;
/// let (base, tok) = puppetlens::open("gemma-3-270m", &Default::default())?;
/// let (tuned, _) = puppetlens::open("sycophant", &Default::default())?;
/// let sets = [PromptSet::new("neutral", vec![tok.encode("The capital of France is Paris.")?])];
/// let opts = CorpusOptions { point: HookPoint::ResidPost(8), ..CorpusOptions::default() };
/// let corpus = paired_corpus_to_dir(&base, &tuned, &sets, &opts, "runs/corpus", &Default::default())?;
/// let (cc, _log) = dict::train_streamed(&corpus, &DictOptions::default(), base.device())?;
/// let metrics = corpus.evaluate(&cc, 2048)?;
/// for c in &corpus.top_contexts(&cc, &[0], 5, 8, 2048)?[0] {
///     println!("{} {:.2}: {}", corpus.sets()[c.source.set], c.activation, tok.decode(&c.window)?);
/// }
/// # Ok::<(), puppetlens::Error>(())
/// ```
pub fn paired_corpus_to_dir(
    base: &Model,
    tuned: &Model,
    sets: &[PromptSet],
    opts: &CorpusOptions,
    dir: impl AsRef<Path>,
    meta: &StoreMeta,
) -> Result<CorpusStore> {
    check_pair(base, tuned, opts)?;
    let dtype = dtype_name(opts.dtype)?;
    if opts.shard_tokens == 0 {
        return Err(Error::InvalidArgument {
            name: "shard_tokens".into(),
            msg: "must be positive".into(),
        });
    }
    let dir = dir.as_ref();
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let _lock = lock_file(
        &dir.join(".corpus.lock"),
        &format!("the paired corpus {}", dir.display()),
    )?;
    remove_stale(
        dir,
        &[".shard-", ".corpus.json.tmp-", ".prompts.safetensors.tmp-"],
    );
    let plan = batch_plan(sets, opts.batch_size);
    let fresh = CorpusManifest {
        format: CORPUS_FORMAT.into(),
        meta: meta.clone(),
        point: opts.point.to_string(),
        d_model: base.config().d_model,
        dtype: dtype.into(),
        batch_size: opts.batch_size,
        skip_first: opts.skip_first,
        shard_tokens: opts.shard_tokens,
        max_norm_ratio: opts.max_norm_ratio,
        sets: sets.iter().map(|s| s.name.clone()).collect(),
        n_prompts: sets.iter().map(|s| s.prompts.len()).collect(),
        prompts_sha256: prompts_digest(sets),
        n_batches: plan.len(),
        shards: Vec::new(),
        median_norms: None,
    };
    let manifest_path = dir.join(CORPUS_MANIFEST);
    let mut manifest = match read_manifest(&manifest_path)? {
        Some(m) => {
            if m.identity() != fresh.identity() {
                return Err(Error::InvalidArgument {
                    name: manifest_path.display().to_string(),
                    msg: "a paired corpus of other prompts or options is here; choose another directory".into(),
                });
            }
            m
        }
        None => fresh,
    };
    manifest.max_norm_ratio = opts.max_norm_ratio;
    if manifest.complete() {
        write_manifest(&manifest_path, &manifest)?;
        return CorpusStore::open(dir);
    }
    // The norms of the shards already written count towards the medians.
    let mut norms: Vec<[f32; 2]> = Vec::new();
    for (s, entry) in manifest.shards.iter().enumerate() {
        let path = dir.join(&entry.file);
        if entry.file != shard_name(s) {
            return Err(Error::Config {
                path: manifest_path.clone(),
                field: "shards".into(),
                msg: format!(
                    "entry {s} is `{}`, expected `{}`",
                    entry.file,
                    shard_name(s)
                ),
            });
        }
        let shard = ShardFile::open(&path, entry.rows, manifest.d_model, opts.dtype)?;
        norms.extend(shard.norms()?);
    }
    let done = manifest.shards.last().map_or(0, |s| s.batches_end);
    let total: usize = sets.iter().map(|s| s.prompts.len()).sum();
    let mut progress = Progress::new("paired corpus", total, opts.progress);
    progress.advance(
        plan[..done.min(plan.len())]
            .iter()
            .map(|(_, i)| i.len())
            .sum(),
    );
    let mut buf: Vec<Chunk> = Vec::new();
    let mut buf_rows = 0;
    for (b, (si, idx)) in plan.iter().enumerate().skip(done) {
        if let Some(c) = run_batch(base, tuned, sets, *si, idx, opts)? {
            buf_rows += c.tokens.len();
            norms.extend_from_slice(&c.norms);
            buf.push(c);
        }
        progress.advance(idx.len());
        if buf_rows >= opts.shard_tokens || (b + 1 == plan.len() && buf_rows > 0) {
            let s = manifest.shards.len();
            let first = manifest.n_rows();
            write_shard(
                &dir.join(shard_name(s)),
                &std::mem::take(&mut buf),
                opts,
                &manifest,
                first,
            )?;
            manifest.shards.push(CorpusShard {
                file: shard_name(s),
                rows: buf_rows,
                batches_end: b + 1,
            });
            buf_rows = 0;
            write_manifest(&manifest_path, &manifest)?;
        }
    }
    progress.finish();
    if norms.is_empty() {
        return Err(no_token(opts.skip_first));
    }
    write_prompts(&dir.join(CORPUS_PROMPTS), sets)?;
    manifest.median_norms = Some(median_norms(&norms));
    write_manifest(&manifest_path, &manifest)?;
    CorpusStore::open(dir)
}

/// Writes one shard: the chunks' rows, token ids, sources and norms.
fn write_shard(
    path: &Path,
    chunks: &[Chunk],
    opts: &CorpusOptions,
    manifest: &CorpusManifest,
    first: usize,
) -> Result<()> {
    let parts: Vec<&Tensor> = chunks.iter().map(|c| &c.acts).collect();
    let acts = Tensor::cat(&parts, 0)?; // [rows, 2, d] f32
    let rows = acts.dim(0)?;
    if opts.dtype == DType::F16 {
        let max = acts.abs()?.max_all()?.to_scalar::<f32>()?;
        if max > 65504.0 {
            return Err(Error::InvalidArgument {
                name: "dtype".into(),
                msg: format!(
                    "an activation of magnitude {max} overflows f16 (max 65504); store bf16 or f32"
                ),
            });
        }
    }
    let acts = acts.to_dtype(opts.dtype)?; // [rows, 2, d]
    let tokens: Vec<u32> = chunks
        .iter()
        .flat_map(|c| c.tokens.iter().copied())
        .collect();
    let mut sources = Vec::with_capacity(rows * 3);
    for s in chunks.iter().flat_map(|c| c.sources.iter()) {
        for v in [s.set, s.item, s.pos] {
            sources.push(u32::try_from(v).map_err(|_| Error::InvalidArgument {
                name: "sets".into(),
                msg: format!("index {v} does not fit a u32"),
            })?);
        }
    }
    let norms: Vec<f32> = chunks
        .iter()
        .flat_map(|c| c.norms.iter().flatten().copied())
        .collect();
    let cpu = Device::Cpu;
    let mut header = BTreeMap::new();
    header.insert("format".to_string(), CORPUS_FORMAT.to_string());
    header.insert("model".to_string(), manifest.meta.model.clone());
    header.insert("dataset".to_string(), manifest.meta.dataset.clone());
    header.insert("point".to_string(), manifest.point.clone());
    header.insert("rows".to_string(), format!("{first}..{}", first + rows));
    write_safetensors(
        path,
        &[
            ("acts".to_string(), acts),
            ("tokens".to_string(), Tensor::from_vec(tokens, rows, &cpu)?), // [rows] u32
            (
                "sources".to_string(),
                Tensor::from_vec(sources, (rows, 3), &cpu)?, // [rows, 3] u32
            ),
            (
                "norms".to_string(),
                Tensor::from_vec(norms, (rows, 2), &cpu)?,
            ), // [rows, 2] f32
        ],
        header,
    )
}

/// Writes every set's prompts: `ids` (all prompts' tokens, set after set) and `offsets`.
fn write_prompts(path: &Path, sets: &[PromptSet]) -> Result<()> {
    let (mut ids, mut offsets) = (Vec::new(), vec![0u32]);
    for p in sets.iter().flat_map(|s| s.prompts.iter()) {
        ids.extend_from_slice(p);
        offsets.push(
            u32::try_from(ids.len()).map_err(|_| Error::InvalidArgument {
                name: "sets".into(),
                msg: "more than 2^32 prompt tokens".into(),
            })?,
        );
    }
    let cpu = Device::Cpu;
    let (n, k) = (ids.len(), offsets.len());
    write_safetensors(
        path,
        &[
            ("ids".to_string(), Tensor::from_vec(ids, n, &cpu)?), // [n_prompt_tokens] u32
            ("offsets".to_string(), Tensor::from_vec(offsets, k, &cpu)?), // [n_prompts + 1] u32
        ],
        BTreeMap::from([("format".to_string(), CORPUS_FORMAT.to_string())]),
    )
}
