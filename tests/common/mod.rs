//! Shared set-up of the real-checkpoint tests: models are fetched once (a no-op when cached) and
//! loaded once per test binary.
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::OnceLock;

use puppetlens::{Model, Tokenizer};

pub const SMOLLM: &str = "smollm2-135m-instruct";
pub const GEMMA: &str = "gemma-3-270m";

pub fn path(name: &str) -> PathBuf {
    puppetlens::fetch::fetch(name).unwrap_or_else(|e| panic!("fetching {name}: {e}"))
}

pub fn smollm() -> &'static (Model, Tokenizer) {
    static M: OnceLock<(Model, Tokenizer)> = OnceLock::new();
    M.get_or_init(|| puppetlens::load(path(SMOLLM)).expect("load smollm2"))
}

pub fn gemma() -> &'static (Model, Tokenizer) {
    static M: OnceLock<(Model, Tokenizer)> = OnceLock::new();
    M.get_or_init(|| puppetlens::load(path(GEMMA)).expect("load gemma-3-270m"))
}

/// Max |a - b| over all elements.
pub fn max_abs_diff(a: &candle_core::Tensor, b: &candle_core::Tensor) -> f32 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

/// Max |x| over all elements.
pub fn max_abs(a: &candle_core::Tensor) -> f32 {
    a.abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

/// Five fixed prompts: plain text, code, narrative, arithmetic, and a chat turn.
pub const PROMPTS: [&str; 5] = [
    "The capital of France is",
    "def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n",
    "Once upon a time, in a small village by the sea,",
    "Question: What is 12 + 7?\nAnswer:",
    "I think the best way to learn a new language is",
];
