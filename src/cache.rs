//! Recorded activations, keyed by hook point, saved as safetensors with TransformerLens names.
//!
//! An [`ActivationCache`] is itself a [`Hook`]: add it to a [`Hooks`](crate::Hooks) to record, or
//! use [`Model::run_with_cache`](crate::Model::run_with_cache). During KV-cached generation each
//! step's activations are appended along `pos`, so the cache holds the whole sequence.
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

use std::collections::BTreeMap;
use std::path::Path;

use candle_core::{Device, Tensor};

use crate::hook::{Hook, HookCtx, HookPoint};
use crate::{Error, Result};

/// Activations by hook point, each as the point gives it (`[batch, pos, d_model]` on the residual
/// stream; see [`HookPoint`] for the shapes inside the blocks).
#[derive(Debug, Clone, Default)]
pub struct ActivationCache {
    map: BTreeMap<HookPoint, Tensor>,
}

impl ActivationCache {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    /// The activation recorded at `p`.
    pub fn get(&self, p: HookPoint) -> Option<&Tensor> {
        self.map.get(&p)
    }

    /// Like [`get`](Self::get), but an error naming the point when it was not recorded.
    pub fn require(&self, p: HookPoint) -> Result<&Tensor> {
        self.map.get(&p).ok_or_else(|| Error::InvalidArgument {
            name: p.to_string(),
            msg: "not recorded in this activation cache".into(),
        })
    }

    /// Stores `t` at `p`, replacing what was there.
    pub fn insert(&mut self, p: HookPoint, t: Tensor) {
        self.map.insert(p, t);
    }

    /// Points recorded, in firing order.
    pub fn points(&self) -> impl Iterator<Item = HookPoint> + '_ {
        self.map.keys().copied()
    }

    /// Number of points recorded.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// True when nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Saves as one safetensors file whose keys are TransformerLens names; written atomically.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let tensors: Vec<(String, Tensor)> = self
            .map
            .iter()
            .map(|(p, t)| (p.to_string(), t.clone()))
            .collect();
        crate::util::atomic_write(path, |tmp| {
            candle_core::safetensors::save(
                &tensors
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.clone()))
                    .collect(),
                tmp,
            )
            .map_err(Error::from)
        })
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
