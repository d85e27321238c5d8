//! Model configuration, read from GGUF metadata or a Hugging Face `config.json`.
//!
//! Architecture differences are flags here, not code paths: one decoder reads them.

use std::collections::HashMap;
use std::path::Path;

use candle_core::quantized::gguf_file;
use serde_json::Value as Json;

use crate::{Error, Result};

/// Architecture families puppetlens implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    /// Llama 2/3, SmolLM2 and other `LlamaForCausalLM` checkpoints.
    Llama,
    /// Mistral (Llama with optional sliding-window attention).
    Mistral,
    /// Qwen2 / Qwen2.5 (Llama with q/k/v biases).
    Qwen2,
    /// Gemma 3 text models.
    Gemma3,
}

impl Arch {
    /// Names accepted from checkpoints (GGUF `general.architecture` or config.json `model_type`).
    pub const SUPPORTED: &'static str = "llama, mistral, qwen2, gemma3, gemma3_text";

    fn parse(name: &str, path: &Path) -> Result<Self> {
        match name {
            "llama" | "smollm" | "smollm2" => Ok(Arch::Llama),
            "mistral" => Ok(Arch::Mistral),
            "qwen2" => Ok(Arch::Qwen2),
            "gemma3" | "gemma3_text" => Ok(Arch::Gemma3),
            _ => Err(Error::UnknownArchitecture {
                path: path.to_path_buf(),
                arch: name.to_string(),
                supported: Self::SUPPORTED.to_string(),
            }),
        }
    }
}

/// The MLP's activation function.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// SiLU (Llama, Mistral, Qwen2).
    Silu,
    /// GELU with the tanh approximation (Gemma; `gelu_pytorch_tanh`, `gelu_new`).
    GeluTanh,
    /// Exact (erf) GELU (`gelu`).
    Gelu,
}

/// Attention span of one layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttnSpan {
    /// Attends to every earlier token.
    Global,
    /// Attends to the last `window` tokens (itself included).
    Local(usize),
}

/// Rotary embedding frequency scaling.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RopeScaling {
    /// No scaling.
    None,
    /// Positions divided by `factor` (Gemma 3's global layers in the larger models).
    Linear(f32),
    /// Llama 3.1's frequency-dependent scaling.
    Llama3 {
        /// Overall factor.
        factor: f32,
        /// Low-frequency factor.
        low_freq_factor: f32,
        /// High-frequency factor.
        high_freq_factor: f32,
        /// Context length the model was first trained with.
        original_max_position: usize,
    },
}

/// Everything the decoder needs to know about a model.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Architecture family.
    pub arch: Arch,
    /// Vocabulary size (rows of the embedding).
    pub vocab_size: usize,
    /// Residual width.
    pub d_model: usize,
    /// Number of blocks.
    pub n_layers: usize,
    /// Query heads.
    pub n_heads: usize,
    /// Key/value heads (grouped-query attention when fewer than `n_heads`).
    pub n_kv_heads: usize,
    /// Width of one head.
    pub head_dim: usize,
    /// MLP hidden width.
    pub d_mlp: usize,
    /// RMSNorm epsilon.
    pub rms_eps: f64,
    /// RoPE base of global layers.
    pub rope_theta: f32,
    /// RoPE base of local (sliding-window) layers, when it differs (Gemma 3: 10 000).
    pub rope_local_theta: Option<f32>,
    /// RoPE scaling of global layers.
    pub rope_scaling: RopeScaling,
    /// Rotary pairs are adjacent (GGUF Llama layout) instead of split halves (Hugging Face layout).
    pub rope_interleaved: bool,
    /// Span of each layer's attention.
    pub layer_spans: Vec<AttnSpan>,
    /// Biases on q/k/v projections (Qwen2).
    pub qkv_bias: bool,
    /// RMSNorm on queries and keys per head (Gemma 3).
    pub qk_norm: bool,
    /// Norms after attention and MLP as well as before (Gemma 3).
    pub sandwich_norm: bool,
    /// Embeddings multiplied by this (Gemma: sqrt(d_model)).
    pub embed_scale: Option<f64>,
    /// Unembedding shares the embedding matrix.
    pub tie_embeddings: bool,
    /// MLP activation.
    pub activation: Activation,
    /// Attention logit scale (1/sqrt(head_dim) unless the model says otherwise).
    pub attn_scale: f64,
    /// Longest sequence the model accepts.
    pub max_position: usize,
    /// Final logits soft-capped to +-this (tanh), when set.
    pub final_logit_softcap: Option<f64>,
    /// Added to RMSNorm weights at load (Hugging Face Gemma stores `w` for `(1 + w)`; GGUF stores `1 + w`).
    pub norm_weight_offset: f64,
}

impl Config {
    /// RoPE base of layer `l`.
    pub fn rope_theta_of(&self, l: usize) -> f32 {
        match (self.layer_spans.get(l), self.rope_local_theta) {
            (Some(AttnSpan::Local(_)), Some(t)) => t,
            _ => self.rope_theta,
        }
    }

    /// RoPE scaling of layer `l`: the configured scaling on global layers, none on local ones.
    pub fn rope_scaling_of(&self, l: usize) -> RopeScaling {
        match self.layer_spans.get(l) {
            Some(AttnSpan::Local(_)) if self.rope_local_theta.is_some() => RopeScaling::None,
            _ => self.rope_scaling,
        }
    }

    /// Reads the configuration from GGUF metadata, filling values the file lacks as llama.cpp does.
    pub fn from_gguf(md: &HashMap<String, gguf_file::Value>, path: &Path) -> Result<Self> {
        let g = Gguf { md, path };
        let arch_name = g.string("general.architecture")?;
        let arch = Arch::parse(&arch_name, path)?;
        let a = |k: &str| format!("{arch_name}.{k}");
        let d_model = g.usize(&a("embedding_length"))?;
        let n_layers = g.usize(&a("block_count"))?;
        let n_heads = g.usize(&a("attention.head_count"))?;
        let n_kv_heads = g
            .opt_usize(&a("attention.head_count_kv"))?
            .unwrap_or(n_heads);
        let head_dim = g
            .opt_usize(&a("attention.key_length"))?
            .unwrap_or(d_model / n_heads.max(1));
        let d_mlp = g.usize(&a("feed_forward_length"))?;
        let rms_eps = g
            .opt_f64(&a("attention.layer_norm_rms_epsilon"))?
            .unwrap_or(1e-5);
        let max_position = g.opt_usize(&a("context_length"))?.unwrap_or(4096);
        let vocab_size = match g.opt_usize(&a("vocab_size"))? {
            Some(v) => v,
            None => match md.get("tokenizer.ggml.tokens") {
                Some(gguf_file::Value::Array(v)) => v.len(),
                _ => 0, // filled from the embedding's shape by the loader
            },
        };
        check_sizes(
            path,
            &[
                (a("block_count"), n_layers, MAX_LAYERS),
                (a("embedding_length"), d_model, MAX_WIDTH),
                (a("attention.head_count"), n_heads, MAX_HEADS),
                (a("attention.head_count_kv"), n_kv_heads, MAX_HEADS),
                (a("attention.key_length"), head_dim, MAX_HEAD_DIM),
                (a("feed_forward_length"), d_mlp, MAX_WIDTH * 16),
                (a("vocab_size"), vocab_size, MAX_VOCAB),
            ],
        )?;
        let is_gemma = arch == Arch::Gemma3;
        let default_theta = if is_gemma { 1_000_000.0 } else { 10_000.0 };
        let rope_theta = g.opt_f64(&a("rope.freq_base"))?.unwrap_or(default_theta) as f32;
        let rope_scaling = match (
            g.opt_string(&a("rope.scaling.type"))?.as_deref(),
            g.opt_f64(&a("rope.scaling.factor"))?,
        ) {
            (Some("linear"), Some(f)) if f != 1.0 => RopeScaling::Linear(f as f32),
            _ => RopeScaling::None,
        };
        let layer_spans = if is_gemma {
            // llama.cpp: every 6th layer is global, the others use the sliding window.
            let window = g.opt_usize(&a("attention.sliding_window"))?.unwrap_or(512);
            gemma3_spans(n_layers, window, 6)
        } else {
            match g.opt_usize(&a("attention.sliding_window"))? {
                Some(w) if w > 0 => vec![AttnSpan::Local(w); n_layers],
                _ => vec![AttnSpan::Global; n_layers],
            }
        };
        Ok(Config {
            arch,
            vocab_size,
            d_model,
            n_layers,
            n_heads,
            n_kv_heads,
            head_dim,
            d_mlp,
            rms_eps,
            rope_theta,
            rope_local_theta: is_gemma.then_some(10_000.0),
            rope_scaling,
            // llama.cpp permutes Llama/Mistral q/k rows so that rotary pairs are adjacent.
            rope_interleaved: matches!(arch, Arch::Llama | Arch::Mistral),
            layer_spans,
            qkv_bias: arch == Arch::Qwen2,
            qk_norm: is_gemma,
            sandwich_norm: is_gemma,
            embed_scale: is_gemma.then(|| (d_model as f64).sqrt()),
            tie_embeddings: true, // the loader unties it when `output.weight` exists
            activation: if is_gemma {
                Activation::GeluTanh
            } else {
                Activation::Silu
            },
            attn_scale: 1.0 / (head_dim as f64).sqrt(),
            max_position,
            final_logit_softcap: g.opt_f64(&a("final_logit_softcapping"))?,
            norm_weight_offset: 0.0,
        })
    }

    /// Reads a Hugging Face `config.json`.
    pub fn from_hf_json(text: &str, path: &Path) -> Result<Self> {
        let j: Json = serde_json::from_str(text).map_err(|e| Error::Config {
            path: path.to_path_buf(),
            field: "(file)".into(),
            msg: format!("not valid JSON: {e}"),
        })?;
        // Gemma 3 multimodal configs nest the text model.
        let j = j.get("text_config").cloned().unwrap_or(j);
        let h = Hf { j: &j, path };
        let model_type = h.string("model_type")?;
        let arch = Arch::parse(&model_type, path)?;
        let is_gemma = arch == Arch::Gemma3;
        let d_model = h.usize("hidden_size")?;
        let n_heads = h.usize("num_attention_heads")?;
        let n_layers = h.usize("num_hidden_layers")?;
        let head_dim = h.opt_usize("head_dim")?.unwrap_or(d_model / n_heads.max(1));
        let n_kv_heads = h.opt_usize("num_key_value_heads")?.unwrap_or(n_heads);
        let vocab_size = h.usize("vocab_size")?;
        let d_mlp = h.usize("intermediate_size")?;
        check_sizes(
            path,
            &[
                ("num_hidden_layers".into(), n_layers, MAX_LAYERS),
                ("hidden_size".into(), d_model, MAX_WIDTH),
                ("num_attention_heads".into(), n_heads, MAX_HEADS),
                ("num_key_value_heads".into(), n_kv_heads, MAX_HEADS),
                ("head_dim".into(), head_dim, MAX_HEAD_DIM),
                ("intermediate_size".into(), d_mlp, MAX_WIDTH * 16),
                ("vocab_size".into(), vocab_size, MAX_VOCAB),
            ],
        )?;
        let rope_theta =
            h.opt_f64("rope_theta")?
                .unwrap_or(if is_gemma { 1_000_000.0 } else { 10_000.0 }) as f32;
        let rope_scaling = match j.get("rope_scaling") {
            Some(Json::Object(o)) => {
                let kind = o
                    .get("rope_type")
                    .or_else(|| o.get("type"))
                    .and_then(|v| v.as_str())
                    .unwrap_or("");
                let f = |k: &str| o.get(k).and_then(|v| v.as_f64());
                match kind {
                    "linear" => RopeScaling::Linear(f("factor").unwrap_or(1.0) as f32),
                    "llama3" => RopeScaling::Llama3 {
                        factor: f("factor").unwrap_or(8.0) as f32,
                        low_freq_factor: f("low_freq_factor").unwrap_or(1.0) as f32,
                        high_freq_factor: f("high_freq_factor").unwrap_or(4.0) as f32,
                        original_max_position: f("original_max_position_embeddings")
                            .unwrap_or(8192.0)
                            as usize,
                    },
                    "default" | "" => RopeScaling::None,
                    other => {
                        return Err(Error::Config {
                            path: path.to_path_buf(),
                            field: "rope_scaling.rope_type".into(),
                            msg: format!("unsupported rope scaling `{other}`"),
                        })
                    }
                }
            }
            _ => RopeScaling::None,
        };
        let window = h.opt_usize("sliding_window")?;
        let layer_spans = if is_gemma {
            let window = window.unwrap_or(512);
            match j.get("layer_types").and_then(|v| v.as_array()) {
                Some(types) => types
                    .iter()
                    .map(|t| match t.as_str() {
                        Some("full_attention") => AttnSpan::Global,
                        _ => AttnSpan::Local(window),
                    })
                    .collect(),
                None => gemma3_spans(
                    n_layers,
                    window,
                    h.opt_usize("sliding_window_pattern")?.unwrap_or(6),
                ),
            }
        } else {
            let use_window = j
                .get("use_sliding_window")
                .and_then(|v| v.as_bool())
                .unwrap_or(arch == Arch::Mistral);
            // Qwen2 windows only layers from `max_window_layers` on (Hugging Face's rule).
            let first_windowed = if arch == Arch::Qwen2 {
                h.opt_usize("max_window_layers")?.unwrap_or(0)
            } else {
                0
            };
            match window {
                Some(w) if use_window && w > 0 => (0..n_layers)
                    .map(|l| {
                        if l >= first_windowed {
                            AttnSpan::Local(w)
                        } else {
                            AttnSpan::Global
                        }
                    })
                    .collect(),
                _ => vec![AttnSpan::Global; n_layers],
            }
        };
        if layer_spans.len() != n_layers {
            return Err(Error::Config {
                path: path.to_path_buf(),
                field: "layer_types".into(),
                msg: format!("{} entries for {n_layers} layers", layer_spans.len()),
            });
        }
        let act = h
            .opt_string("hidden_activation")?
            .or(h.opt_string("hidden_act")?)
            .unwrap_or_else(|| "silu".into());
        let activation = match act.as_str() {
            "silu" | "swish" => Activation::Silu,
            "gelu_pytorch_tanh" | "gelu_new" => Activation::GeluTanh,
            "gelu" => Activation::Gelu,
            other => {
                return Err(Error::Config {
                    path: path.to_path_buf(),
                    field: "hidden_act".into(),
                    msg: format!("unsupported activation `{other}`"),
                })
            }
        };
        let attn_scale = match h.opt_f64("query_pre_attn_scalar")? {
            Some(s) if is_gemma => 1.0 / s.sqrt(),
            _ => 1.0 / (head_dim as f64).sqrt(),
        };
        Ok(Config {
            arch,
            vocab_size,
            d_model,
            n_layers,
            n_heads,
            n_kv_heads,
            head_dim,
            d_mlp,
            rms_eps: h.opt_f64("rms_norm_eps")?.unwrap_or(1e-6),
            rope_theta,
            rope_local_theta: if is_gemma {
                Some(h.opt_f64("rope_local_base_freq")?.unwrap_or(10_000.0) as f32)
            } else {
                None
            },
            rope_scaling,
            rope_interleaved: false,
            layer_spans,
            qkv_bias: arch == Arch::Qwen2
                || j.get("attention_bias")
                    .and_then(|v| v.as_bool())
                    .unwrap_or(false),
            qk_norm: is_gemma,
            sandwich_norm: is_gemma,
            embed_scale: is_gemma.then(|| (d_model as f64).sqrt()),
            tie_embeddings: j
                .get("tie_word_embeddings")
                .and_then(|v| v.as_bool())
                .unwrap_or(is_gemma),
            activation,
            attn_scale,
            max_position: h.opt_usize("max_position_embeddings")?.unwrap_or(4096),
            final_logit_softcap: h.opt_f64("final_logit_softcapping")?,
            norm_weight_offset: if is_gemma { 1.0 } else { 0.0 },
        })
    }

    /// Writes a Hugging Face `config.json` for this configuration (used by safetensors export).
    pub fn to_hf_json(&self) -> Json {
        let model_type = match self.arch {
            Arch::Llama => "llama",
            Arch::Mistral => "mistral",
            Arch::Qwen2 => "qwen2",
            Arch::Gemma3 => "gemma3_text",
        };
        let arch_class = match self.arch {
            Arch::Llama => "LlamaForCausalLM",
            Arch::Mistral => "MistralForCausalLM",
            Arch::Qwen2 => "Qwen2ForCausalLM",
            Arch::Gemma3 => "Gemma3ForCausalLM",
        };
        let window = self.layer_spans.iter().find_map(|s| match s {
            AttnSpan::Local(w) => Some(*w),
            AttnSpan::Global => None,
        });
        let mut j = serde_json::json!({
            "architectures": [arch_class],
            "model_type": model_type,
            "vocab_size": self.vocab_size,
            "hidden_size": self.d_model,
            "num_hidden_layers": self.n_layers,
            "num_attention_heads": self.n_heads,
            "num_key_value_heads": self.n_kv_heads,
            "head_dim": self.head_dim,
            "intermediate_size": self.d_mlp,
            "rms_norm_eps": self.rms_eps,
            "rope_theta": self.rope_theta,
            "max_position_embeddings": self.max_position,
            "tie_word_embeddings": self.tie_embeddings,
            "hidden_act": match self.activation { Activation::Silu => "silu", Activation::GeluTanh => "gelu_pytorch_tanh", Activation::Gelu => "gelu" },
            "sliding_window": window,
            "torch_dtype": "float32",
        });
        if let Json::Object(o) = &mut j {
            if self.arch == Arch::Gemma3 {
                o.insert("hidden_activation".into(), "gelu_pytorch_tanh".into());
                // Hugging Face declares it an integer (transformers 5 rejects 256.0); write
                // it as one when it is whole.
                let scalar = 1.0 / (self.attn_scale * self.attn_scale);
                let rounded = scalar.round();
                o.insert(
                    "query_pre_attn_scalar".into(),
                    if (scalar - rounded).abs() < 1e-6 * rounded.abs().max(1.0) {
                        Json::from(rounded as i64)
                    } else {
                        Json::from(scalar)
                    },
                );
                o.insert(
                    "rope_local_base_freq".into(),
                    Json::from(self.rope_local_theta.unwrap_or(10_000.0)),
                );
                let types: Vec<&str> = self
                    .layer_spans
                    .iter()
                    .map(|s| match s {
                        AttnSpan::Global => "full_attention",
                        AttnSpan::Local(_) => "sliding_attention",
                    })
                    .collect();
                o.insert("layer_types".into(), serde_json::json!(types));
            }
            match self.rope_scaling {
                RopeScaling::None => {}
                RopeScaling::Linear(f) => {
                    o.insert(
                        "rope_scaling".into(),
                        serde_json::json!({"rope_type": "linear", "factor": f}),
                    );
                }
                RopeScaling::Llama3 {
                    factor,
                    low_freq_factor,
                    high_freq_factor,
                    original_max_position,
                } => {
                    o.insert(
                        "rope_scaling".into(),
                        serde_json::json!({"rope_type": "llama3", "factor": factor, "low_freq_factor": low_freq_factor,
                            "high_freq_factor": high_freq_factor, "original_max_position_embeddings": original_max_position}),
                    );
                }
            }
            if let Some(c) = self.final_logit_softcap {
                o.insert("final_logit_softcapping".into(), Json::from(c));
            }
            if self.arch == Arch::Mistral || self.arch == Arch::Qwen2 {
                o.insert("use_sliding_window".into(), Json::from(window.is_some()));
            }
        }
        j
    }
}

/// The largest sizes a configuration may declare. They are far above any released model's and
/// are checked before anything is allocated from them, so that a hostile header cannot ask for
/// gigabytes (the tensors themselves are then checked against these sizes).
const MAX_LAYERS: usize = 1024;
const MAX_WIDTH: usize = 1 << 16;
const MAX_HEADS: usize = 1024;
const MAX_HEAD_DIM: usize = 4096;
const MAX_VOCAB: usize = 1 << 22;

fn check_sizes(path: &Path, fields: &[(String, usize, usize)]) -> Result<()> {
    for (field, v, max) in fields {
        if v > max {
            return Err(Error::Config {
                path: path.to_path_buf(),
                field: field.clone(),
                msg: format!("{v} is larger than puppetlens allows ({max})"),
            });
        }
    }
    Ok(())
}

fn gemma3_spans(n_layers: usize, window: usize, pattern: usize) -> Vec<AttnSpan> {
    (0..n_layers)
        .map(|l| {
            if pattern > 0 && (l + 1) % pattern == 0 {
                AttnSpan::Global
            } else {
                AttnSpan::Local(window)
            }
        })
        .collect()
}

struct Gguf<'a> {
    md: &'a HashMap<String, gguf_file::Value>,
    path: &'a Path,
}

impl Gguf<'_> {
    fn err(&self, key: &str, msg: impl Into<String>) -> Error {
        Error::Config {
            path: self.path.to_path_buf(),
            field: key.to_string(),
            msg: msg.into(),
        }
    }
    fn get(&self, key: &str) -> Result<&gguf_file::Value> {
        self.md
            .get(key)
            .ok_or_else(|| self.err(key, "missing from GGUF metadata"))
    }
    fn string(&self, key: &str) -> Result<String> {
        Ok(self
            .get(key)?
            .to_string()
            .map_err(|e| self.err(key, e.to_string()))?
            .clone())
    }
    fn opt_string(&self, key: &str) -> Result<Option<String>> {
        if self.md.contains_key(key) {
            self.string(key).map(Some)
        } else {
            Ok(None)
        }
    }
    fn usize(&self, key: &str) -> Result<usize> {
        let v = self.get(key)?;
        let n = match v {
            gguf_file::Value::U8(x) => *x as u64,
            gguf_file::Value::U16(x) => *x as u64,
            gguf_file::Value::U32(x) => *x as u64,
            gguf_file::Value::U64(x) => *x,
            gguf_file::Value::I8(x) if *x >= 0 => *x as u64,
            gguf_file::Value::I16(x) if *x >= 0 => *x as u64,
            gguf_file::Value::I32(x) if *x >= 0 => *x as u64,
            gguf_file::Value::I64(x) if *x >= 0 => *x as u64,
            other => {
                return Err(self.err(
                    key,
                    format!("expected a non-negative integer, got {other:?}"),
                ))
            }
        };
        Ok(n as usize)
    }
    fn opt_usize(&self, key: &str) -> Result<Option<usize>> {
        if self.md.contains_key(key) {
            self.usize(key).map(Some)
        } else {
            Ok(None)
        }
    }
    fn opt_f64(&self, key: &str) -> Result<Option<f64>> {
        match self.md.get(key) {
            None => Ok(None),
            Some(gguf_file::Value::F32(x)) => Ok(Some(*x as f64)),
            Some(gguf_file::Value::F64(x)) => Ok(Some(*x)),
            Some(_) => self.usize(key).map(|n| Some(n as f64)),
        }
    }
}

struct Hf<'a> {
    j: &'a Json,
    path: &'a Path,
}

impl Hf<'_> {
    fn err(&self, key: &str, msg: impl Into<String>) -> Error {
        Error::Config {
            path: self.path.to_path_buf(),
            field: key.to_string(),
            msg: msg.into(),
        }
    }
    fn present(&self, key: &str) -> Option<&Json> {
        self.j.get(key).filter(|v| !v.is_null())
    }
    fn string(&self, key: &str) -> Result<String> {
        self.opt_string(key)?
            .ok_or_else(|| self.err(key, "missing from config.json"))
    }
    fn opt_string(&self, key: &str) -> Result<Option<String>> {
        match self.present(key) {
            None => Ok(None),
            Some(v) => v
                .as_str()
                .map(|s| Some(s.to_string()))
                .ok_or_else(|| self.err(key, format!("expected a string, got {v}"))),
        }
    }
    fn usize(&self, key: &str) -> Result<usize> {
        self.opt_usize(key)?
            .ok_or_else(|| self.err(key, "missing from config.json"))
    }
    fn opt_usize(&self, key: &str) -> Result<Option<usize>> {
        match self.present(key) {
            None => Ok(None),
            Some(v) => v
                .as_u64()
                .map(|n| Some(n as usize))
                .ok_or_else(|| self.err(key, format!("expected a non-negative integer, got {v}"))),
        }
    }
    fn opt_f64(&self, key: &str) -> Result<Option<f64>> {
        match self.present(key) {
            None => Ok(None),
            Some(v) => v
                .as_f64()
                .map(Some)
                .ok_or_else(|| self.err(key, format!("expected a number, got {v}"))),
        }
    }
}
