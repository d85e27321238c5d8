//! The integration tests that need no downloaded checkpoint: tiny random-weight models written by
//! each test (`common_tiny`), planted data and bad input. One test binary (one link of candle)
//! instead of one per file; run one part with e.g. `cargo test --release --test offline errors::`.

#[path = "../common_tiny/mod.rs"]
mod common_tiny;

mod archs;
mod errors;
mod probe;
mod steer_vectors;
