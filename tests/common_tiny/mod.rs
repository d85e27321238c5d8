//! Tiny random-weight checkpoints for tests that need no downloaded model: seeded normal weights
//! written as a Hugging Face directory (config.json + model.safetensors) or a llama GGUF file, in a
//! temporary directory that is removed on drop.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use candle_core::quantized::{gguf_file, GgmlDType, QTensor};
use candle_core::{DType, Device, Tensor};
use serde_json::{json, Value};

/// A seeded generator (splitmix64) with Box-Muller normals: the same seed gives the same weights
/// on every machine.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed ^ 0x9E37_79B9_7F4A_7C15)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in (0, 1].
    pub fn uniform(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 1.0) / (1u64 << 53) as f64
    }

    pub fn normal(&mut self) -> f64 {
        let (u1, u2) = (self.uniform(), self.uniform());
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }

    /// A `shape` f32 tensor of `mean + std * N(0, 1)` values.
    pub fn tensor(&mut self, shape: &[usize], mean: f64, std: f64) -> Tensor {
        let n: usize = shape.iter().product();
        let v: Vec<f32> = (0..n)
            .map(|_| (mean + std * self.normal()) as f32)
            .collect();
        Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
    }

    /// `n` token ids below `vocab`.
    pub fn tokens(&mut self, n: usize, vocab: usize) -> Vec<u32> {
        (0..n)
            .map(|_| (self.next_u64() % vocab as u64) as u32)
            .collect()
    }
}

/// A fresh directory under the system temp dir, removed (with its contents) on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let dir = std::env::temp_dir().join(format!(
            "puppetlens-test-{tag}-{}-{}-{nanos}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The shape of a tiny decoder; `tensors` fills it with seeded random weights named as Hugging
/// Face names them.
#[derive(Debug, Clone)]
pub struct Tiny {
    pub vocab: usize,
    pub d_model: usize,
    pub n_layers: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
    pub d_mlp: usize,
    /// q/k/v biases (Qwen2).
    pub qkv_bias: bool,
    /// Gemma 3 layout: q/k norms, sandwich norms, norms stored as `w` for `(1 + w)`.
    pub gemma: bool,
    /// Write `lm_head.weight` (untied unembedding).
    pub lm_head: bool,
    /// Std of the projection weights.
    pub w_std: f64,
}

impl Tiny {
    /// d_model 64, 2 layers, 4 heads of 16, vocab 300: a Llama-shaped default.
    pub fn llama() -> Self {
        Tiny {
            vocab: 300,
            d_model: 64,
            n_layers: 2,
            n_heads: 4,
            n_kv_heads: 4,
            head_dim: 16,
            d_mlp: 128,
            qkv_bias: false,
            gemma: false,
            lm_head: true,
            w_std: 0.08,
        }
    }

    pub fn tensors(&self, seed: u64) -> HashMap<String, Tensor> {
        let mut r = Rng::new(seed);
        let (d, hd, h, kvh) = (self.d_model, self.head_dim, self.n_heads, self.n_kv_heads);
        let s = self.w_std;
        // Norm weights near 1 in effect: Gemma stores `w` for `(1 + w)`.
        let norm_mean = if self.gemma { 0.0 } else { 1.0 };
        let mut t = HashMap::new();
        t.insert(
            "model.embed_tokens.weight".to_string(),
            r.tensor(&[self.vocab, d], 0.0, 0.5),
        );
        t.insert(
            "model.norm.weight".to_string(),
            r.tensor(&[d], norm_mean, 0.1),
        );
        if self.lm_head {
            t.insert(
                "lm_head.weight".to_string(),
                r.tensor(&[self.vocab, d], 0.0, 0.1),
            );
        }
        for l in 0..self.n_layers {
            let p = format!("model.layers.{l}");
            let mut put = |n: &str, x: Tensor| {
                t.insert(format!("{p}.{n}"), x);
            };
            put("self_attn.q_proj.weight", r.tensor(&[h * hd, d], 0.0, s));
            put("self_attn.k_proj.weight", r.tensor(&[kvh * hd, d], 0.0, s));
            put("self_attn.v_proj.weight", r.tensor(&[kvh * hd, d], 0.0, s));
            put("self_attn.o_proj.weight", r.tensor(&[d, h * hd], 0.0, s));
            if self.qkv_bias {
                put("self_attn.q_proj.bias", r.tensor(&[h * hd], 0.0, 0.1));
                put("self_attn.k_proj.bias", r.tensor(&[kvh * hd], 0.0, 0.1));
                put("self_attn.v_proj.bias", r.tensor(&[kvh * hd], 0.0, 0.1));
            }
            put("mlp.gate_proj.weight", r.tensor(&[self.d_mlp, d], 0.0, s));
            put("mlp.up_proj.weight", r.tensor(&[self.d_mlp, d], 0.0, s));
            put("mlp.down_proj.weight", r.tensor(&[d, self.d_mlp], 0.0, s));
            put("input_layernorm.weight", r.tensor(&[d], norm_mean, 0.1));
            put(
                "post_attention_layernorm.weight",
                r.tensor(&[d], norm_mean, 0.1),
            );
            if self.gemma {
                put("self_attn.q_norm.weight", r.tensor(&[hd], norm_mean, 0.1));
                put("self_attn.k_norm.weight", r.tensor(&[hd], norm_mean, 0.1));
                put(
                    "pre_feedforward_layernorm.weight",
                    r.tensor(&[d], norm_mean, 0.1),
                );
                put(
                    "post_feedforward_layernorm.weight",
                    r.tensor(&[d], norm_mean, 0.1),
                );
            }
        }
        t
    }

    /// The config.json fields every architecture shares.
    pub fn base_json(&self, model_type: &str) -> Value {
        json!({
            "model_type": model_type,
            "vocab_size": self.vocab,
            "hidden_size": self.d_model,
            "intermediate_size": self.d_mlp,
            "num_hidden_layers": self.n_layers,
            "num_attention_heads": self.n_heads,
            "num_key_value_heads": self.n_kv_heads,
            "head_dim": self.head_dim,
            "rms_norm_eps": 1e-6,
            "rope_theta": 10000.0,
            "max_position_embeddings": 64,
            "tie_word_embeddings": !self.lm_head,
            "hidden_act": "silu",
            "torch_dtype": "float32",
        })
    }
}

/// Sets `key` of a JSON object.
pub fn set(j: &mut Value, key: &str, v: Value) {
    j.as_object_mut().unwrap().insert(key.to_string(), v);
}

/// Removes `key` of a JSON object.
pub fn unset(j: &mut Value, key: &str) {
    j.as_object_mut().unwrap().remove(key);
}

/// Writes `dir/config.json` and `dir/model.safetensors`.
pub fn write_hf(dir: &Path, config: &Value, tensors: &HashMap<String, Tensor>) {
    std::fs::write(
        dir.join("config.json"),
        serde_json::to_string_pretty(config).unwrap(),
    )
    .unwrap();
    candle_core::safetensors::save(tensors, dir.join("model.safetensors")).unwrap();
}

/// Max |a - b| over all elements (f32 tensors of one shape).
pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims(), "shapes differ");
    (a.to_dtype(DType::F32).unwrap() - b.to_dtype(DType::F32).unwrap())
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

/// Std over all elements.
pub fn std_all(a: &Tensor) -> f32 {
    let v: Vec<f32> = a.flatten_all().unwrap().to_vec1().unwrap();
    let n = v.len() as f32;
    let m = v.iter().sum::<f32>() / n;
    (v.iter().map(|x| (x - m) * (x - m)).sum::<f32>() / n).sqrt()
}

/// llama.cpp's tensor name for a Hugging Face Llama tensor name.
pub fn llama_gguf_name(hf: &str) -> String {
    let (stem, suffix) = hf.rsplit_once('.').unwrap();
    let mapped = match stem {
        "model.embed_tokens" => "token_embd".to_string(),
        "model.norm" => "output_norm".to_string(),
        "lm_head" => "output".to_string(),
        _ => {
            let rest = stem.strip_prefix("model.layers.").unwrap();
            let (l, part) = rest.split_once('.').unwrap();
            let part = match part {
                "input_layernorm" => "attn_norm",
                "self_attn.q_proj" => "attn_q",
                "self_attn.k_proj" => "attn_k",
                "self_attn.v_proj" => "attn_v",
                "self_attn.o_proj" => "attn_output",
                "post_attention_layernorm" => "ffn_norm",
                "mlp.gate_proj" => "ffn_gate",
                "mlp.up_proj" => "ffn_up",
                "mlp.down_proj" => "ffn_down",
                other => panic!("no GGUF name for {other}"),
            };
            format!("blk.{l}.{part}")
        }
    };
    format!("{mapped}.{suffix}")
}

/// The llama GGUF metadata of `t` (context `ctx`), architecture `arch`.
pub fn llama_gguf_metadata(t: &Tiny, arch: &str, ctx: u32) -> Vec<(String, gguf_file::Value)> {
    use gguf_file::Value as V;
    vec![
        ("general.architecture".into(), V::String(arch.into())),
        (format!("{arch}.embedding_length"), V::U32(t.d_model as u32)),
        (format!("{arch}.block_count"), V::U32(t.n_layers as u32)),
        (
            format!("{arch}.attention.head_count"),
            V::U32(t.n_heads as u32),
        ),
        (
            format!("{arch}.attention.head_count_kv"),
            V::U32(t.n_kv_heads as u32),
        ),
        (
            format!("{arch}.feed_forward_length"),
            V::U32(t.d_mlp as u32),
        ),
        (format!("{arch}.context_length"), V::U32(ctx)),
        (
            format!("{arch}.attention.layer_norm_rms_epsilon"),
            V::F32(1e-5),
        ),
        (format!("{arch}.rope.freq_base"), V::F32(10000.0)),
    ]
}

/// Writes a tiny llama GGUF (F32 tensors, llama.cpp names) to `path`; returns the tensor names in
/// file order (their data follows the header in this order).
pub fn write_llama_gguf(path: &Path, t: &Tiny, arch: &str, seed: u64) -> Vec<String> {
    let tensors = t.tensors(seed);
    let mut names: Vec<&String> = tensors.keys().collect();
    names.sort();
    let q: Vec<(String, QTensor)> = names
        .iter()
        .map(|n| {
            (
                llama_gguf_name(n),
                QTensor::quantize(&tensors[*n], GgmlDType::F32).unwrap(),
            )
        })
        .collect();
    let md = llama_gguf_metadata(t, arch, 64);
    let md_refs: Vec<(&str, &gguf_file::Value)> = md.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let q_refs: Vec<(&str, &QTensor)> = q.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let mut f = std::fs::File::create(path).unwrap();
    gguf_file::write(&mut f, &md_refs, &q_refs).unwrap();
    q.into_iter().map(|(n, _)| n).collect()
}
