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
    max_abs(&(a - b).unwrap())
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

/// candle-transformers' Gemma 3 configuration for the same model (reference implementation).
pub fn candle_gemma3_config(c: &puppetlens::Config) -> candle_transformers::models::gemma3::Config {
    candle_transformers::models::gemma3::Config {
        attention_bias: false,
        head_dim: c.head_dim,
        hidden_activation: candle_nn::Activation::GeluPytorchTanh,
        hidden_size: c.d_model,
        intermediate_size: c.d_mlp,
        num_attention_heads: c.n_heads,
        num_hidden_layers: c.n_layers,
        num_key_value_heads: c.n_kv_heads,
        rms_norm_eps: c.rms_eps,
        rope_theta: c.rope_theta as f64,
        rope_local_base_freq: c.rope_local_theta.unwrap_or(10_000.0) as f64,
        vocab_size: c.vocab_size,
        final_logit_softcapping: None,
        attn_logit_softcapping: None,
        // Gemma 3's attention scale is 1/sqrt(query_pre_attn_scalar); for gemma-3-270m that is head_dim.
        query_pre_attn_scalar: (1.0 / (c.attn_scale * c.attn_scale)).round() as usize,
        sliding_window: c
            .layer_spans
            .iter()
            .find_map(|s| match s {
                puppetlens::model::AttnSpan::Local(w) => Some(*w),
                puppetlens::model::AttnSpan::Global => None,
            })
            .unwrap_or(c.max_position),
        sliding_window_pattern: 6,
        max_position_embeddings: c.max_position,
    }
}
