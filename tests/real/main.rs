//! The integration tests on the two real checkpoints (smollm2-135m-instruct and gemma-3-270m,
//! fetched once into the cache and loaded once per process by `common`), the committed organisms,
//! the CLI and the main job's quick mode. One test binary (one link of candle, one load of each
//! model) instead of one per file; run one part with e.g. `cargo test --release --test real cli::`.
//!
//! Two kinds of test live in binaries of their own: `hostile` (a counting global allocator with a
//! hard cap) and `reference_quantized` (candle reads `CANDLE_DEQUANTIZE_ALL` per thread; the
//! dequantized reference here sets it).

#[path = "../common/mod.rs"]
mod common;

mod cli;
mod data;
mod dict;
mod extract;
mod inside;
mod localise;
mod organisms;
mod reference;
mod runtime;
mod science;
mod steer_example;
mod tokenizer;
mod train;
