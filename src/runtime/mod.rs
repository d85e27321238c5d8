//! The runtime: what runs a checkpoint. Weights are read (safetensors or GGUF, behind one
//! interface keyed by Hugging Face names), tokenised ([`tokenize`]), batched ([`batch`]) and
//! run by the one config-driven decoder ([`model`]), with hooks ([`hook`]) firing in one place and
//! activations recorded in an [`cache::ActivationCache`]; [`generate`] adds KV-cached sampling.
//! [`fetch`] brings the checkpoints from the package registry.
//!
//! Every module here is re-exported at the crate root (`puppetlens::model`, `puppetlens::hook`,
//! ...); this folder only groups them.

pub mod batch;
pub mod cache;
pub mod fetch;
pub mod generate;
pub(crate) mod gguf;
pub mod hook;
pub mod model;
pub(crate) mod open;
pub mod tokenize;
pub(crate) mod weights;
