//! puppetlens: mechanistic interpretability on candle.
//!
//! puppetlens runs real transformer checkpoints (GGUF and Hugging Face safetensors) with named hook
//! points on the residual stream, so that activations can be cached, steered, ablated and patched,
//! and so that a base model and its tuned sibling can be compared layer by layer.
//!
//! The main types:
//! - [`Model`]: one config-driven decoder for Llama-family models and Gemma 3, loaded with
//!   [`Model::load`]; [`Model::forward`], [`Model::run_with_cache`], [`Model::generate`], and
//!   [`Model::run_from`] (resume a forward at a residual-stream point: branch-at-layer sweeps).
//! - [`Tokenizer`]: the model's own tokenizer and chat template, from GGUF metadata or `tokenizer.json`.
//! - [`HookPoint`]: `hook_embed`, `blocks.{l}.hook_resid_pre|attn_out|resid_mid|mlp_out|resid_post`,
//!   `ln_final.hook_normalized`, parsed and printed as TransformerLens names them.
//! - [`Hooks`]: the hooks of one call; [`AddVector`], [`ProjectOut`], [`Patch`], [`Zero`] and
//!   [`ActivationCache`] are hooks, and so is any closure.
//! - [`Batch`]: left-padded prompts.
//!
//! The puppeteer search builds on these: [`data`] (contrastive datasets and prompt formats),
//! [`extract`] (batched activation extraction, streamed to safetensors shards), [`probe`] (per-layer
//! linear probes), [`steer`] ([`SteeringVector`]: difference of means, PCA, arithmetic, llama.cpp
//! control vectors), [`eval`] (A/B behaviour, dose-response, KL side effects, refusal rate) and
//! [`diff`] (base-versus-tuned vectors and the per-layer localisation report) and [`patch`]
//! (cross-model activation patching, the puppeteer rank and a verdict per pair). [`spec`] parses the
//! command line's device, layer and multiplier lists; [`write_atomic`] writes output files;
//! [`progress`] sends the long calls' bars and notes elsewhere than stderr.
//!
//! ```no_run
//! use puppetlens::{fetch, AddVector, Batch, GenerateOptions, HookPoint, Hooks, Model};
//! let (model, tok) = puppetlens::load(fetch::fetch("smollm2-135m-instruct")?)?;
//! let ids = tok.encode("The capital of France is")?;
//! let batch = Batch::single(&ids)?;
//! // Cache every residual stream value.
//! let (_logits, cache) = model.run_with_cache(&batch, |p| matches!(p, HookPoint::ResidPost(_)))?;
//! let direction = cache.require(HookPoint::ResidPost(10))?.get(0)?.get(ids.len() - 1)?; // [d_model]
//! // Steer generation by adding it at layer 10.
//! let mut hooks = Hooks::new();
//! hooks.add(HookPoint::ResidPost(10), AddVector::new(direction, 2.0));
//! let out = model.generate(&[ids], &GenerateOptions::greedy(10), &mut hooks)?;
//! println!("{}", tok.decode(&out[0])?);
//! # Ok::<(), puppetlens::Error>(())
//! ```
#![deny(missing_docs)]

// The folders group the modules by layer (see each folder's docs); users reach every module at
// the crate root (`puppetlens::model`, `puppetlens::probe`, ...), as before the grouping.
mod measure;
mod output;
mod runtime;
mod tune;

pub mod error;
pub mod progress;
pub mod spec;
mod util;

pub use measure::{array, data, dict, diff, eval, extract, lens, patch, probe, steer};
pub use output::{plot, report};
pub use runtime::{batch, cache, fetch, generate, hook, model, tokenize};
pub(crate) use runtime::{gguf, open, weights};
pub use tune::{lora, train};

pub use batch::Batch;
pub use cache::ActivationCache;
pub use error::{Error, Result};
pub use generate::GenerateOptions;
pub use hook::{
    hook_fn, Ablate, AddVector, Hook, HookCtx, HookPoint, Hooks, Knockout, Patch, Positions,
    ProjectOut, Zero,
};
pub use model::{Config, KvCache, LoadOptions, Model};
pub use open::{describe, open, open_pair, organism_dir, Opened, ORGANISMS};
pub use spec::parse_device;
pub use steer::SteeringVector;
pub use tokenize::{ChatMessage, Tokenizer};
pub use util::atomic_write_bytes as write_atomic;

/// Loads a model and its tokenizer from a GGUF file or a Hugging Face directory, on the CPU in f32.
pub fn load(path: impl AsRef<std::path::Path>) -> Result<(Model, Tokenizer)> {
    load_with(path, &LoadOptions::default())
}

/// [`load`] with options (device, dtype, quantized weights).
pub fn load_with(
    path: impl AsRef<std::path::Path>,
    opts: &LoadOptions,
) -> Result<(Model, Tokenizer)> {
    let path = path.as_ref();
    let model = Model::load(path, opts)?;
    let tok = if path.is_dir() {
        Tokenizer::from_hf_dir(path)?
    } else {
        let (content, _) = weights::read_gguf(path)?;
        Tokenizer::from_gguf(&content, &path.display().to_string())?
    };
    Ok((model, tok))
}

/// The README's code, compiled as a doc test so that it stays true.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
