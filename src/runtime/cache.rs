//! Activations keyed by hook point, saved as safetensors with TransformerLens names: the one map
//! type for a recorded forward and for extracted vectors.
//!
//! An [`ActivationCache`] is itself a [`Hook`]: add it to a [`Hooks`](crate::Hooks) to record, or
//! use [`Model::run_with_cache`](crate::Model::run_with_cache). During KV-cached generation each
//! step's activations are appended along `pos`, so the cache holds the whole sequence.
//! [`extract::Activations`](crate::extract::Activations) is the same type, holding one row per
//! prompt; [`get`](ActivationCache::get) answers an `Option`, [`require`](ActivationCache::require)
//! an error naming a missing point.
//!
//! ```
//! use puppetlens::{ActivationCache, HookPoint};
//! use candle_core::{Device, Tensor};
//! let mut cache = ActivationCache::new();
//! cache.insert(HookPoint::ResidPost(0), Tensor::zeros((1, 3, 4), candle_core::DType::F32, &Device::Cpu)?);
//! let path = std::env::temp_dir().join("puppetlens_doc_cache.safetensors");
//! cache.save(&path)?;
//! let back = ActivationCache::load(&path, &Device::Cpu)?;
//! assert_eq!(back.get(HookPoint::ResidPost(0)).unwrap().dims(), &[1, 3, 4]);
//! # Ok::<(), puppetlens::Error>(())
//! ```

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use candle_core::{Device, Tensor};

use crate::hook::{Hook, HookCtx, HookPoint};
use crate::util::atomic_write;
use crate::{Error, Result};

/// Activations by hook point, each as the point gives it (`[batch, pos, d_model]` on the residual
/// stream; see [`HookPoint`] for the shapes inside the blocks), or as an extraction keeps them
/// (`[n, d_model]` per point, one row per prompt).
#[derive(Debug, Clone, Default)]
pub struct ActivationCache {
    map: BTreeMap<HookPoint, Tensor>,
}

impl ActivationCache {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    /// Builds from a map.
    pub fn from_map(map: BTreeMap<HookPoint, Tensor>) -> Self {
        Self { map }
    }

    /// The activation recorded at `p`.
    pub fn get(&self, p: HookPoint) -> Option<&Tensor> {
        self.map.get(&p)
    }

    /// Like [`get`](Self::get), but an error naming the point when it is not held.
    pub fn require(&self, p: HookPoint) -> Result<&Tensor> {
        self.map.get(&p).ok_or_else(|| Error::InvalidArgument {
            name: p.to_string(),
            msg: "not among these recorded or extracted activations".into(),
        })
    }

    /// Stores `t` at `p`, replacing what was there.
    pub fn insert(&mut self, p: HookPoint, t: Tensor) {
        self.map.insert(p, t);
    }

    /// Points held, in firing order.
    pub fn points(&self) -> impl ExactSizeIterator<Item = HookPoint> + DoubleEndedIterator + '_ {
        self.map.keys().copied()
    }

    /// The points held and their activations, in firing order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (HookPoint, &Tensor)> + '_ {
        self.map.iter().map(|(p, t)| (*p, t))
    }

    /// Rows (the first axis) of the activations held: the prompts of an extraction, the batch of
    /// a recorded forward; 0 when nothing is held. [`points`](Self::points) counts the points.
    pub fn len(&self) -> usize {
        self.map
            .values()
            .next()
            .and_then(|t| t.dim(0).ok())
            .unwrap_or(0)
    }

    /// True when no rows are held (nothing recorded or extracted).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The `hook_resid_post` activations of layers `0..n_layers`, in layer order (for probes).
    pub fn layers(&self, n_layers: usize) -> Result<Vec<Tensor>> {
        (0..n_layers)
            .map(|l| self.require(HookPoint::ResidPost(l)).cloned())
            .collect()
    }

    /// Rows `idx` of every point (activations on the CPU).
    pub fn select(&self, idx: &[usize]) -> Result<ActivationCache> {
        let ids = Tensor::from_vec(
            idx.iter().map(|&i| i as u32).collect::<Vec<_>>(),
            idx.len(),
            &Device::Cpu,
        )?;
        let map = self
            .map
            .iter()
            .map(|(p, t)| Ok((*p, t.index_select(&ids, 0)?)))
            .collect::<Result<BTreeMap<_, _>>>()?;
        Ok(ActivationCache { map })
    }

    /// Appends `other`'s rows to each point's (a point only `other` holds is added).
    pub(crate) fn append(&mut self, other: ActivationCache) -> Result<()> {
        for (p, t) in other.map {
            let v = match self.map.remove(&p) {
                Some(prev) => Tensor::cat(&[&prev, &t], 0)?,
                None => t,
            };
            self.map.insert(p, v);
        }
        Ok(())
    }

    /// Saves as one safetensors file whose keys are TransformerLens names; written atomically.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        write(path.as_ref(), &self.named(), None)
    }

    /// [`save`](Self::save) with `metadata` in the file's header.
    pub(crate) fn save_with_metadata(
        &self,
        path: &Path,
        metadata: BTreeMap<String, String>,
    ) -> Result<()> {
        write_safetensors(path, &self.named(), metadata)
    }

    /// The activations under their TransformerLens names, in firing order.
    fn named(&self) -> Vec<(String, Tensor)> {
        self.map
            .iter()
            .map(|(p, t)| (p.to_string(), t.clone()))
            .collect()
    }

    /// Loads a cache saved by [`save`](Self::save) (or any safetensors file with TransformerLens keys).
    pub fn load(path: impl AsRef<Path>, device: &Device) -> Result<Self> {
        let path = path.as_ref();
        if !path.exists() {
            return Err(Error::io(
                path,
                std::io::Error::from(std::io::ErrorKind::NotFound),
            ));
        }
        let tensors =
            candle_core::safetensors::load(path, device).map_err(|e| Error::Checkpoint {
                path: path.to_path_buf(),
                msg: crate::error::candle_msg(&e),
            })?;
        let mut map = BTreeMap::new();
        for (k, v) in tensors {
            map.insert(k.parse::<HookPoint>()?, v);
        }
        Ok(Self { map })
    }
}

/// Writes tensors with header metadata to a safetensors file, atomically.
pub(crate) fn write_safetensors(
    path: &Path,
    tensors: &[(String, Tensor)],
    metadata: BTreeMap<String, String>,
) -> Result<()> {
    write(path, tensors, Some(metadata.into_iter().collect()))
}

/// Writes tensors (made contiguous) to a safetensors file, atomically.
fn write(
    path: &Path,
    tensors: &[(String, Tensor)],
    metadata: Option<HashMap<String, String>>,
) -> Result<()> {
    let contiguous: Vec<(String, Tensor)> = tensors
        .iter()
        .map(|(k, t)| Ok((k.clone(), t.contiguous()?)))
        .collect::<Result<_>>()?;
    atomic_write(path, |tmp| {
        safetensors::serialize_to_file(
            contiguous.iter().map(|(k, t)| (k.as_str(), t)),
            metadata,
            tmp,
        )
        .map_err(|e| Error::Checkpoint {
            path: tmp.to_path_buf(),
            msg: e.to_string(),
        })
    })
}

impl Hook for ActivationCache {
    fn call(&mut self, x: &Tensor, ctx: &HookCtx) -> Result<Option<Tensor>> {
        let x = x.clone();
        let axis = ctx.point.pos_axis();
        let v = match self.map.remove(&ctx.point) {
            Some(prev) if ctx.offset > 0 && prev.dim(axis)? == ctx.offset => {
                let prev = if axis == 2 {
                    // Scores and patterns: earlier queries never see the new keys (pattern 0,
                    // score -inf), so their rows are padded out to this call's keys.
                    let (b, h, q, k) = prev.dims4()?;
                    let more = x.dim(3)?.saturating_sub(k);
                    let fill = match ctx.point {
                        HookPoint::AttnScores(_) => f64::NEG_INFINITY,
                        _ => 0.0,
                    };
                    let pad = Tensor::full(fill, (b, h, q, more), prev.device())?
                        .to_dtype(prev.dtype())?; // [b, h, q, more]
                    Tensor::cat(&[&prev, &pad], 3)? // [b, h, q, keys]
                } else {
                    prev
                };
                Tensor::cat(&[&prev, &x], axis)?
            }
            _ => x,
        };
        self.map.insert(ctx.point, v);
        Ok(None)
    }
}
