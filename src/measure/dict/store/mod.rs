//! A paired activation corpus on disk: the rows of [`paired_corpus`](super::paired_corpus)
//! written shard by shard while the models run, so that memory does not grow with the corpus,
//! and read back shard by shard for training ([`train_streamed`](super::train_streamed)),
//! metrics, Latent Scaling, top contexts and the dashboard.
//!
//! The layout reuses the activation store's ([`crate::extract::extract_to_dir`]): safetensors
//! shards `shard-00000.safetensors`, ... written atomically (a temporary file, then a rename),
//! a JSON manifest rewritten atomically after every shard, one writer per directory (a lock
//! file), and resume: an interrupted run restarts after its last complete shard. A directory:
//!
//! ```text
//! corpus.json            CorpusManifest: hook point, width, dtype, options, set names, the
//!                        prompts' sha256, shards written (rows, forward batches done), medians
//! prompts.safetensors    ids [n_prompt_tokens] u32, offsets [n_prompts + 1] u32 (all sets)
//! shard-00000.safetensors
//!   acts     [rows, 2, d_model]  f32 | bf16 | f16   model 0 the base, 1 the tuned
//!   tokens   [rows]              u32                token id of each row
//!   sources  [rows, 3]           u32                (set, item, pos) of each row
//!   norms    [rows, 2]           f32                each model's activation norm (in f32)
//! ```
//!
//! Every token is written; the outlier filter
//! ([`CorpusOptions::max_norm_ratio`](crate::dict::CorpusOptions::max_norm_ratio)) needs the
//! corpus's median norm, known only at the end, so it is applied when the corpus is read: the
//! manifest records the medians and the ratio, [`CorpusStore::open`] drops the outlying rows
//! from every view (rows are numbered after the filter, as in a
//! [`PairedCorpus`](crate::dict::PairedCorpus)), and [`CorpusStore::with_max_norm_ratio`]
//! applies another ratio without touching the files.
//!
//! Here: the layout (manifest, shard and prompts files); `write.rs`: the writer,
//! [`paired_corpus_to_dir`]; `read.rs`: the reader, [`CorpusStore`], and what reads the corpus
//! shard by shard.

mod read;
mod write;

pub use read::CorpusStore;
pub(crate) use read::Windows;
pub use write::paired_corpus_to_dir;

use std::path::{Path, PathBuf};

use candle_core::safetensors::MmapedSafetensors;
use candle_core::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};

use super::corpus::PromptSet;
use crate::error::candle_msg;
use crate::extract::StoreMeta;
use crate::util::atomic_write_bytes;
use crate::{Error, Result};

/// The manifest of a corpus directory.
pub const CORPUS_MANIFEST: &str = "corpus.json";
/// The prompts of a corpus directory (for contexts).
pub const CORPUS_PROMPTS: &str = "prompts.safetensors";
/// [`CorpusManifest::format`] of this layout.
pub const CORPUS_FORMAT: &str = "puppetlens.paired_corpus.v1";

/// One shard of a corpus directory, as its manifest lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CorpusShard {
    /// File name in the directory (`shard-00000.safetensors`, ...).
    pub file: String,
    /// Rows (tokens) in the shard, outliers included.
    pub rows: usize,
    /// Forward batches of the corpus done when the shard ends (where a resumed run restarts).
    pub batches_end: usize,
}

/// The manifest of a paired corpus on disk (`corpus.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CorpusManifest {
    /// [`CORPUS_FORMAT`].
    pub format: String,
    /// Provenance (the pair's names in `model`, the data in `dataset`).
    pub meta: StoreMeta,
    /// The hook point read in both models (TransformerLens name).
    pub point: String,
    /// Width of the activations.
    pub d_model: usize,
    /// Dtype of `acts` in the shards: `"f32"`, `"bf16"` or `"f16"`.
    pub dtype: String,
    /// Prompts per forward batch.
    pub batch_size: usize,
    /// Positions skipped at the start of each prompt.
    pub skip_first: usize,
    /// Tokens per shard (a shard ends after the batch that reaches it).
    pub shard_tokens: usize,
    /// The outlier filter applied when the corpus is read, `None` for none.
    pub max_norm_ratio: Option<f32>,
    /// Names of the prompt sets.
    pub sets: Vec<String>,
    /// Prompts per set.
    pub n_prompts: Vec<usize>,
    /// sha256 of the sets' names and token ids, to refuse resuming on other data.
    pub prompts_sha256: String,
    /// Forward batches of the whole corpus.
    pub n_batches: usize,
    /// Shards written so far, in order.
    pub shards: Vec<CorpusShard>,
    /// Each model's median token norm over the whole corpus (base, tuned); set when the corpus
    /// is complete.
    pub median_norms: Option<[f32; 2]>,
}

impl CorpusManifest {
    /// True when every shard is written (the medians are known).
    pub fn complete(&self) -> bool {
        self.median_norms.is_some()
    }

    /// Rows written, outliers included.
    pub fn n_rows(&self) -> usize {
        self.shards.iter().map(|s| s.rows).sum()
    }

    /// The manifest without what a run adds (shards, medians) nor what is applied at reading
    /// (the ratio): two runs with equal identities write the same shards.
    pub(super) fn identity(&self) -> CorpusManifest {
        CorpusManifest {
            shards: Vec::new(),
            median_norms: None,
            max_norm_ratio: None,
            ..self.clone()
        }
    }
}

pub(super) fn dtype_name(dtype: DType) -> Result<&'static str> {
    match dtype {
        DType::F32 => Ok("f32"),
        DType::BF16 => Ok("bf16"),
        DType::F16 => Ok("f16"),
        other => Err(Error::InvalidArgument {
            name: "dtype".into(),
            msg: format!("a corpus stores f32, bf16 or f16 activations, not {other:?}"),
        }),
    }
}

pub(super) fn st_dtype(dtype: DType) -> safetensors::Dtype {
    match dtype {
        DType::BF16 => safetensors::Dtype::BF16,
        DType::F16 => safetensors::Dtype::F16,
        _ => safetensors::Dtype::F32,
    }
}

pub(super) fn shard_name(s: usize) -> String {
    format!("shard-{s:05}.safetensors")
}

pub(super) fn prompts_digest(sets: &[PromptSet]) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for s in sets {
        h.update((s.name.len() as u64).to_le_bytes());
        h.update(s.name.as_bytes());
        h.update((s.prompts.len() as u64).to_le_bytes());
        for p in &s.prompts {
            h.update((p.len() as u64).to_le_bytes());
            for id in p {
                h.update(id.to_le_bytes());
            }
        }
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

pub(super) fn read_manifest(path: &Path) -> Result<Option<CorpusManifest>> {
    if !path.exists() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let m: CorpusManifest = serde_json::from_str(&text).map_err(|e| Error::Config {
        path: path.to_path_buf(),
        field: "(file)".into(),
        msg: format!("not a paired corpus manifest: {e}"),
    })?;
    if m.format != CORPUS_FORMAT {
        return Err(Error::Config {
            path: path.to_path_buf(),
            field: "format".into(),
            msg: format!("`{}`, expected `{CORPUS_FORMAT}`", m.format),
        });
    }
    Ok(Some(m))
}

pub(super) fn write_manifest(path: &Path, m: &CorpusManifest) -> Result<()> {
    let json = serde_json::to_string_pretty(m).map_err(|e| Error::InvalidArgument {
        name: "corpus manifest".into(),
        msg: e.to_string(),
    })?;
    atomic_write_bytes(path, json.as_bytes())
}

/// An open shard file, its header checked.
pub(super) struct ShardFile {
    path: PathBuf,
    st: MmapedSafetensors,
}

impl ShardFile {
    /// Maps `path` and checks that it holds the four tensors of a shard of `rows` rows of
    /// width `d` (`acts` as `dtype`).
    pub(super) fn open(path: &Path, rows: usize, d: usize, dtype: DType) -> Result<Self> {
        std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
        // SAFETY: the file is mapped read-only. Shards are written to a temporary file and
        // renamed into place, never modified in place; a shard is mapped only while it is read.
        let st = unsafe { MmapedSafetensors::new(path) }.map_err(|e| Error::Checkpoint {
            path: path.to_path_buf(),
            msg: candle_msg(&e),
        })?;
        let file = ShardFile {
            path: path.to_path_buf(),
            st,
        };
        let want: [(&str, safetensors::Dtype, Vec<usize>); 4] = [
            ("acts", st_dtype(dtype), vec![rows, 2, d]),
            ("tokens", safetensors::Dtype::U32, vec![rows]),
            ("sources", safetensors::Dtype::U32, vec![rows, 3]),
            ("norms", safetensors::Dtype::F32, vec![rows, 2]),
        ];
        for (name, dt, shape) in want {
            let v = file
                .st
                .get(name)
                .map_err(|_| file.bad(format!("no tensor `{name}`")))?;
            if v.dtype() != dt || v.shape() != shape.as_slice() {
                return Err(file.bad(format!(
                    "tensor `{name}` is {:?} {:?}, expected {dt:?} {shape:?}",
                    v.dtype(),
                    v.shape()
                )));
            }
        }
        Ok(file)
    }

    pub(super) fn bad(&self, msg: String) -> Error {
        Error::Checkpoint {
            path: self.path.clone(),
            msg,
        }
    }

    pub(super) fn load(&self, name: &str) -> Result<Tensor> {
        self.st
            .load(name, &Device::Cpu)
            .map_err(|e| self.bad(candle_msg(&e)))
    }

    pub(super) fn norms(&self) -> Result<Vec<[f32; 2]>> {
        Ok(self
            .load("norms")?
            .to_vec2::<f32>()?
            .into_iter()
            .map(|r| [r[0], r[1]])
            .collect())
    }
}

/// Reads the prompts file: per set, its prompts' token ids.
pub(super) fn read_prompts(path: &Path, n_prompts: &[usize]) -> Result<Vec<Vec<Vec<u32>>>> {
    std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    let bad = |msg: String| Error::Checkpoint {
        path: path.to_path_buf(),
        msg,
    };
    let mut t =
        candle_core::safetensors::load(path, &Device::Cpu).map_err(|e| bad(candle_msg(&e)))?;
    let mut take = |name: &str| -> Result<Vec<u32>> {
        let v = t
            .remove(name)
            .ok_or_else(|| bad(format!("no tensor `{name}`")))?;
        if v.dtype() != DType::U32 || v.rank() != 1 {
            return Err(bad(format!(
                "tensor `{name}` is {:?} {:?}, expected a u32 vector",
                v.dtype(),
                v.dims()
            )));
        }
        Ok(v.to_vec1::<u32>()?)
    };
    let ids = take("ids")?;
    let offsets = take("offsets")?;
    let total: usize = n_prompts.iter().sum();
    if offsets.len() != total + 1
        || offsets.first() != Some(&0)
        || offsets.windows(2).any(|w| w[0] > w[1])
        || offsets.last().map(|&o| o as usize) != Some(ids.len())
    {
        return Err(bad(format!(
            "offsets do not delimit {total} prompts in {} token ids",
            ids.len()
        )));
    }
    let mut out = Vec::with_capacity(n_prompts.len());
    let mut p = 0;
    for &k in n_prompts {
        out.push(
            (p..p + k)
                .map(|i| ids[offsets[i] as usize..offsets[i + 1] as usize].to_vec())
                .collect(),
        );
        p += k;
    }
    Ok(out)
}
