//! Loading: a GGUF file or a Hugging Face safetensors directory into a [`Model`], the
//! architecture read from the checkpoint's config.

use std::path::Path;

use candle_core::quantized::QMatMul;
use candle_core::{DType, Device, Tensor};

use super::block::Block;
use super::layers::{check_shape, Linear, RmsNorm, Weight};
use super::rope::inv_freq;
use super::{Config, Model, RopeScaling};
use crate::weights::{self, Weights};
use crate::{Error, Result};

/// How to load a checkpoint.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Where the weights and activations live.
    pub device: Device,
    /// Activation and dense-weight dtype (F32 by default; BF16/F16 on GPUs).
    pub dtype: DType,
    /// Keep GGUF weights quantized and use quantized matmuls (slower on CPU at these widths;
    /// default false: dequantize to `dtype` at load).
    pub keep_quantized: bool,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            device: Device::Cpu,
            dtype: DType::F32,
            keep_quantized: false,
        }
    }
}

impl Model {
    /// Loads a GGUF file or a Hugging Face safetensors directory (config.json + *.safetensors).
    pub fn load(path: impl AsRef<Path>, opts: &LoadOptions) -> Result<Model> {
        let path = path.as_ref();
        if !path.exists() {
            return Err(Error::io(
                path,
                std::io::Error::from(std::io::ErrorKind::NotFound),
            ));
        }
        if path.is_dir() {
            Self::from_safetensors_dir(path, opts)
        } else {
            Self::from_gguf(path, opts)
        }
    }

    /// Loads a GGUF file (config from its metadata).
    pub fn from_gguf(path: impl AsRef<Path>, opts: &LoadOptions) -> Result<Model> {
        let path = path.as_ref();
        let (content, reader) = weights::read_gguf(path)?;
        let cfg = Config::from_gguf(&content.metadata, path)?;
        let ws = Weights::gguf(path, content, reader, cfg.arch);
        Self::build(cfg, &ws, opts)
    }

    /// Loads a Hugging Face directory: `config.json` and one or more `*.safetensors` (memory-mapped).
    pub fn from_safetensors_dir(dir: impl AsRef<Path>, opts: &LoadOptions) -> Result<Model> {
        let dir = dir.as_ref();
        let cfg_path = dir.join("config.json");
        let text = std::fs::read_to_string(&cfg_path).map_err(|e| Error::io(&cfg_path, e))?;
        let cfg = Config::from_hf_json(&text, &cfg_path)?;
        let ws = Weights::safetensors(dir)?;
        Self::build(cfg, &ws, opts)
    }

    fn build(mut cfg: Config, ws: &Weights, opts: &LoadOptions) -> Result<Model> {
        crate::util::tune_malloc();
        let dev = &opts.device;
        let embed_name = "model.embed_tokens.weight";
        let embed = ws.tensor(embed_name, &[], opts.dtype, dev)?;
        let (vocab, d) = embed.dims2().map_err(|_| Error::Shape {
            what: format!("tensor `{embed_name}` in {}", ws.path().display()),
            expected: "[vocab, d_model]".into(),
            got: format!("{:?}", embed.dims()),
        })?;
        if cfg.vocab_size == 0 {
            cfg.vocab_size = vocab;
        }
        check_shape(embed_name, ws, &[vocab, d], &[cfg.vocab_size, cfg.d_model])?;
        if cfg.head_dim % 2 != 0 || cfg.n_kv_heads == 0 || cfg.n_heads % cfg.n_kv_heads != 0 {
            return Err(Error::Config {
                path: ws.path().to_path_buf(),
                field: "attention heads".into(),
                msg: format!(
                    "{} heads, {} kv heads, head_dim {}",
                    cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
                ),
            });
        }
        if matches!(ws, Weights::Gguf { .. }) {
            cfg.tie_embeddings = !ws.contains("lm_head.weight");
        } else if !cfg.tie_embeddings && !ws.contains("lm_head.weight") {
            cfg.tie_embeddings = true; // many exports drop a tied head
        }
        let unembed = if cfg.tie_embeddings {
            if opts.keep_quantized && matches!(ws, Weights::Gguf { .. }) {
                Linear {
                    w: Weight::Quant(QMatMul::from_qtensor(ws.qtensor(embed_name, dev)?)?),
                    b: None,
                    lora: None,
                }
            } else {
                Linear::dense(embed.clone())
            }
        } else {
            Linear::load(ws, "lm_head", (cfg.vocab_size, cfg.d_model), false, opts)?
        };
        let (hd, d) = (cfg.head_dim, cfg.d_model);
        let mut ropes: Vec<(f32, RopeScaling)> = Vec::new();
        let mut blocks = Vec::with_capacity(cfg.n_layers);
        for l in 0..cfg.n_layers {
            let rope_key = (cfg.rope_theta_of(l), cfg.rope_scaling_of(l));
            let rope = match ropes.iter().position(|k| *k == rope_key) {
                Some(i) => i,
                None => {
                    ropes.push(rope_key);
                    ropes.len() - 1
                }
            };
            blocks.push(Block::load(ws, l, &cfg, opts, rope)?);
        }
        let final_norm = RmsNorm::load(ws, "model.norm", d, &cfg, opts)?;
        let inv_freqs = ropes
            .iter()
            .map(|&(theta, scaling)| {
                let f = inv_freq(hd, theta, scaling);
                let n = f.len();
                Tensor::from_vec(f, n, dev)
            })
            .collect::<candle_core::Result<Vec<_>>>()?;
        Ok(Model {
            cfg,
            embed,
            unembed,
            blocks,
            final_norm,
            inv_freqs,
            device: dev.clone(),
            dtype: opts.dtype,
            differentiable: false,
        })
    }
}
