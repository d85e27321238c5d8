//! The measurements, built on the runtime: contrastive datasets and prompt formats ([`data`]),
//! activation extraction ([`extract`]), per-layer probes ([`probe`]), steering vectors
//! ([`steer`]), behaviour metrics ([`eval`]), the logit lens and direct logit attribution
//! ([`lens`]), activation patching and the puppeteer rank ([`patch`]), base-versus-tuned
//! localisation ([`diff`]), sparse dictionaries and crosscoders ([`dict`]), and the ndarray /
//! linfa boundary ([`array`]).
//!
//! Every module here is re-exported at the crate root (`puppetlens::probe`, ...); this folder only
//! groups them.

pub mod array;
pub mod data;
pub mod dict;
pub mod diff;
pub mod eval;
pub mod extract;
pub mod lens;
pub mod patch;
pub mod probe;
pub mod steer;
