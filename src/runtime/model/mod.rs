//! The one decoder: every supported architecture, every weight format, hooks fired in one place.
//!
//! [`Model::load`] reads a GGUF file or a Hugging Face safetensors directory; the architecture and
//! its quirks come from [`Config`], never from separate code paths. [`Model::forward`] runs a
//! left-padded [`Batch`](crate::Batch) under per-call [`Hooks`](crate::Hooks); [`Model::run_with_cache`] records activations.
//!
//! ```no_run
//! use puppetlens::{Batch, HookPoint, Hooks, LoadOptions, Model};
//! let model = Model::load("SmolLM2-135M-Instruct.Q4_1.gguf", &LoadOptions::default())?;
//! let batch = Batch::new(&[vec![504u32, 3575, 282, 4649, 314]])?;
//! let (logits, cache) = model.run_with_cache(&batch, |p| matches!(p, HookPoint::ResidPost(_)))?;
//! println!("{:?} {:?}", logits.dims(), cache.get(HookPoint::ResidPost(3)).map(|t| t.dims().to_vec()));
//! # Ok::<(), puppetlens::Error>(())
//! ```
//!
//! One idea per file: [`load`](Model::load) (`load.rs`) builds the layers (`layers.rs`: linear
//! and RMS norm; `attention.rs`, `mlp.rs`, `rope.rs`, joined per layer in `block.rs`) from a
//! checkpoint whose linear names come from one table (`names.rs`); `forward.rs` runs them, every
//! hook firing through one function (`taps.rs`), with `kv.rs` for generation and `unembed.rs`
//! for the logits; `adapt.rs` adds LoRA paths, `export.rs` writes a checkpoint back,
//! `kernels.rs` holds the CPU and plain-op kernels, and `packed.rs` the dense layers' CPU matmul
//! over weights packed once at load.

mod adapt;
mod attention;
mod block;
pub(crate) mod config;
mod export;
mod forward;
mod kernels;
mod kv;
mod layers;
mod load;
mod mlp;
mod names;
mod packed;
mod rope;
mod taps;
mod unembed;

use candle_core::{DType, Device, Tensor};

pub use config::{Activation, Arch, AttnSpan, Config, RopeScaling};
pub(crate) use forward::Output;
pub use kv::KvCache;
pub(crate) use layers::LoraPath;
use layers::{Linear, RmsNorm};
pub use load::LoadOptions;
pub(crate) use names::{Proj, LINEARS};

use crate::hook::HookPoint;
use block::Block;

/// A loaded decoder-only transformer. Cloning is cheap (weights are shared).
#[derive(Debug, Clone)]
pub struct Model {
    cfg: Config,
    embed: Tensor,   // [vocab, d_model]
    unembed: Linear, // [vocab, d_model]
    blocks: Vec<Block>,
    final_norm: RmsNorm,
    inv_freqs: Vec<Tensor>, // distinct rope tables' inverse frequencies, [head_dim / 2] f32
    device: Device,
    dtype: DType,
    differentiable: bool, // plain ops everywhere, for autograd (training)
}

impl Model {
    /// The model's configuration.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// The device weights and activations live on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The activation dtype.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Every hook point of this model, in firing order.
    pub fn hook_points(&self) -> Vec<HookPoint> {
        HookPoint::all(self.cfg.n_layers)
    }

    /// The shape of the activation at `p` in a plain forward over `batch` rows of `pos` tokens,
    /// with the batch and position axes written as `batch` and `pos` (e.g. `[batch, pos, 9, 64]`
    /// for SmolLM2's `attn.hook_z`).
    pub fn hook_shape(&self, p: HookPoint) -> Vec<String> {
        let c = &self.cfg;
        let n = |v: usize| v.to_string();
        let (b, s) = ("batch".to_string(), "pos".to_string());
        match p {
            HookPoint::AttnQ(_) | HookPoint::AttnRotQ(_) | HookPoint::AttnZ(_) => {
                vec![b, s, n(c.n_heads), n(c.head_dim)]
            }
            HookPoint::AttnK(_) | HookPoint::AttnV(_) | HookPoint::AttnRotK(_) => {
                vec![b, s, n(c.n_kv_heads), n(c.head_dim)]
            }
            HookPoint::AttnScores(_) | HookPoint::AttnPattern(_) => {
                vec![b, n(c.n_heads), s, "keys".into()]
            }
            HookPoint::AttnResult(_) => vec![b, s, n(c.n_heads), n(c.d_model)],
            HookPoint::MlpPre(_) | HookPoint::MlpPreLinear(_) | HookPoint::MlpPost(_) => {
                vec![b, s, n(c.d_mlp)]
            }
            HookPoint::FinalScale => vec![b, s, n(1)],
            _ => vec![b, s, n(c.d_model)],
        }
    }
}
