//! The one decoder: every supported architecture, every weight format, hooks fired in one place.
//!
//! [`Model::load`] reads a GGUF file or a Hugging Face safetensors directory; the architecture and
//! its quirks come from [`Config`], never from separate code paths. [`Model::forward`] runs a
//! left-padded [`Batch`] under per-call [`Hooks`]; [`Model::run_with_cache`] records activations.
//!
//! ```no_run
//! use puppetlens::{Batch, HookPoint, Hooks, LoadOptions, Model};
//! let model = Model::load("SmolLM2-135M-Instruct.Q4_1.gguf", &LoadOptions::default())?;
//! let batch = Batch::new(&[vec![504u32, 3575, 282, 4649, 314]])?;
//! let (logits, cache) = model.run_with_cache(&batch, |p| matches!(p, HookPoint::ResidPost(_)))?;
//! println!("{:?} {:?}", logits.dims(), cache.get(HookPoint::ResidPost(3)).map(|t| t.dims().to_vec()));
//! # Ok::<(), puppetlens::Error>(())
//! ```

pub mod config;
mod export;
mod kernels;

use std::path::Path;

use candle_core::quantized::QMatMul;
use candle_core::{DType, Device, Module, Tensor};

pub use config::{Activation, Arch, AttnSpan, Config, RopeScaling};

use crate::batch::Batch;
use crate::cache::ActivationCache;
use crate::hook::{HookCtx, HookPoint, Hooks};
use crate::weights::{self, Weights};
use crate::{Error, Result};
use kernels::{frozen_matmul_t, matmul_t, rope_differentiable, rope_i_differentiable, GatedAct};

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

/// A linear layer's frozen weight, dense or quantized.
#[derive(Debug, Clone)]
enum Weight {
    Dense(Tensor), // [out, in]
    Quant(QMatMul),
    /// A dense weight that autograd treats as a constant: its gradient is never computed
    /// (candle's matmul backward computes both operands' gradients).
    Frozen(Tensor), // [out, in]
}

/// A low-rank adapter on a linear layer: `y += scale * (x A^T) B^T`.
#[derive(Debug, Clone)]
pub(crate) struct LoraPath {
    pub(crate) a: Tensor, // [rank, in]
    pub(crate) b: Tensor, // [out, rank]
    pub(crate) scale: f64,
}

/// A linear layer: `forward` maps `[.., in] -> [.., out]`.
#[derive(Debug, Clone)]
struct Linear {
    w: Weight,
    b: Option<Tensor>, // [out]
    lora: Option<LoraPath>,
}

impl Linear {
    fn load(
        ws: &Weights,
        prefix: &str,
        out_in: (usize, usize),
        bias: bool,
        opts: &LoadOptions,
    ) -> Result<Self> {
        let b = if bias {
            Some(ws.tensor(
                &format!("{prefix}.bias"),
                &[out_in.0],
                opts.dtype,
                &opts.device,
            )?)
        } else {
            None
        };
        let name = format!("{prefix}.weight");
        if opts.keep_quantized && matches!(ws, Weights::Gguf { .. }) {
            let q = ws.qtensor(&name, &opts.device)?;
            check_shape(&name, ws, q.shape().dims(), &[out_in.0, out_in.1])?;
            return Ok(Linear {
                w: Weight::Quant(QMatMul::from_qtensor(q)?),
                b,
                lora: None,
            });
        }
        let w = ws.tensor(&name, &[out_in.0, out_in.1], opts.dtype, &opts.device)?;
        Ok(Linear {
            w: Weight::Dense(w),
            b,
            lora: None,
        })
    }

    fn dense(w: Tensor) -> Self {
        Linear {
            w: Weight::Dense(w),
            b: None,
            lora: None,
        }
    }

    /// `[out, in]`.
    fn out_in(&self) -> Result<(usize, usize)> {
        Ok(match &self.w {
            Weight::Dense(w) | Weight::Frozen(w) => w.dims2()?,
            Weight::Quant(QMatMul::QTensor(q)) => q.shape().dims2()?,
            Weight::Quant(QMatMul::Tensor(t) | QMatMul::TensorF16(t)) => t.dims2()?,
        })
    }

    /// Folds a low-rank path into a dense weight, `W + scale * B A` (inference: one matmul per
    /// linear instead of three and two elementwise passes); quantized weights keep the path.
    fn merge_lora(&mut self) -> Result<()> {
        if let (Weight::Dense(w), Some(l)) = (&self.w, &self.lora) {
            let delta = (l.b.matmul(&l.a)? * l.scale)?.to_dtype(w.dtype())?; // [out, in]
            self.w = Weight::Dense((w + delta)?);
            self.lora = None;
        }
        Ok(())
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = match &self.w {
            Weight::Dense(w) => matmul_t(x, w)?,
            Weight::Quant(w) => w.forward(x)?,
            Weight::Frozen(w) => frozen_matmul_t(x, w)?,
        }; // [.., out]
        let y = match &self.b {
            Some(b) => y.broadcast_add(b)?,
            None => y,
        };
        match &self.lora {
            Some(l) => {
                let low = matmul_t(x, &l.a)?; // [.., rank]
                Ok((y + (matmul_t(&low, &l.b)? * l.scale)?)?) // [.., out]
            }
            None => Ok(y),
        }
    }
}

fn check_shape(name: &str, ws: &Weights, got: &[usize], want: &[usize]) -> Result<()> {
    if got != want {
        return Err(Error::Shape {
            what: format!("tensor `{name}` in {}", ws.path().display()),
            expected: format!("{want:?}"),
            got: format!("{got:?}"),
        });
    }
    Ok(())
}

/// RMSNorm over the last dimension (any offset of Gemma's `1 + w` folded into the weight at load).
#[derive(Debug, Clone)]
struct RmsNorm {
    w: Tensor,
    eps: f32,
}

impl RmsNorm {
    fn load(
        ws: &Weights,
        name: &str,
        dim: usize,
        cfg: &Config,
        opts: &LoadOptions,
    ) -> Result<Self> {
        let w = ws.tensor(&format!("{name}.weight"), &[dim], DType::F32, &opts.device)?;
        let w = if cfg.norm_weight_offset != 0.0 {
            (w + cfg.norm_weight_offset)?
        } else {
            w
        };
        Ok(Self {
            w: w.to_dtype(opts.dtype)?,
            eps: cfg.rms_eps as f32,
        })
    }

    /// `sqrt(mean(x^2) + eps)` over the last dimension, `[.., d] -> [.., 1]` (in `x`'s dtype,
    /// computed in f32).
    fn scale(&self, x: &Tensor) -> Result<Tensor> {
        let x32 = x.to_dtype(DType::F32)?; // [.., d]
        let ms = x32.sqr()?.mean_keepdim(candle_core::D::Minus1)?; // [.., 1]
        Ok((ms + self.eps as f64)?.sqrt()?.to_dtype(x.dtype())?)
    }

    /// The norm with a given scale: `x / scale * w` (`scale` `[.., 1]`).
    fn with_scale(&self, x: &Tensor, scale: &Tensor) -> Result<Tensor> {
        Ok(x.broadcast_div(scale)?.broadcast_mul(&self.w)?)
    }

    /// `grad`: use plain tensor ops that autograd can differentiate (candle's fused kernel has
    /// no backward pass).
    fn forward(&self, x: &Tensor, grad: bool) -> Result<Tensor> {
        if grad {
            return Ok(candle_nn::ops::rms_norm_slow(x, &self.w, self.eps)?);
        }
        Ok(candle_nn::ops::rms_norm(
            &x.contiguous()?,
            &self.w,
            self.eps,
        )?)
    }
}

#[derive(Debug, Clone)]
struct Attention {
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    q_norm: Option<RmsNorm>,
    k_norm: Option<RmsNorm>,
    n_heads: usize,
    n_kv_heads: usize,
    head_dim: usize,
    scale: f64,
    interleaved: bool,
}

#[derive(Debug, Clone)]
struct Mlp {
    gate: Linear,
    up: Linear,
    down: Linear,
    act: Activation,
}

#[derive(Debug, Clone)]
struct Block {
    attn_norm: RmsNorm,
    attn: Attention,
    post_attn_norm: Option<RmsNorm>,
    mlp_norm: RmsNorm,
    mlp: Mlp,
    post_mlp_norm: Option<RmsNorm>,
    span: AttnSpan,
    rope: usize, // index into the forward's rope tables
}

/// Rotary tables for one forward: `cos`, `sin` are `[batch, pos, head_dim / 2]`.
struct Rope {
    cos: Tensor,
    sin: Tensor,
}

/// Keys and values of earlier tokens, for KV-cached generation.
#[derive(Debug, Clone)]
pub struct KvCache {
    layers: Vec<Option<(Tensor, Tensor)>>, // per layer: [batch, kv_heads, seen, head_dim] x2
    pads: Vec<usize>,
    seen: usize,
}

impl KvCache {
    /// An empty cache for a batch whose rows have these left-padding lengths.
    pub fn new(n_layers: usize, pads: Vec<usize>) -> Self {
        Self {
            layers: vec![None; n_layers],
            pads,
            seen: 0,
        }
    }

    /// How many columns (padding included) the cache holds.
    pub fn len(&self) -> usize {
        self.seen
    }

    /// True when nothing is cached yet.
    pub fn is_empty(&self) -> bool {
        self.seen == 0
    }

    /// The cache of the first `cols` columns only (`cols` <= [`KvCache::len`]): what the cache held
    /// after the forward had seen those columns. Blocks not run yet stay empty.
    pub(crate) fn prefix(&self, cols: usize) -> Result<KvCache> {
        if cols > self.seen {
            return Err(Error::InvalidArgument {
                name: "kv cache".into(),
                msg: format!("prefix of {cols} columns asked of a cache of {}", self.seen),
            });
        }
        let layers = self
            .layers
            .iter()
            .map(|slot| match slot {
                Some((k, v)) => Ok(Some((k.narrow(2, 0, cols)?, v.narrow(2, 0, cols)?))), // [b, kvh, cols, hd] x2
                None => Ok(None),
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(KvCache {
            layers,
            pads: self.pads.clone(),
            seen: cols,
        })
    }
}

/// What a forward returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Output {
    /// Nothing: stop after the last hook that fires.
    HooksOnly,
    /// Logits at every position, `[batch, pos, vocab]`.
    AllLogits,
    /// Logits at the last column only, `[batch, vocab]`.
    LastLogits,
    /// Final-normed hidden states at every position, `[batch, pos, d_model]`.
    Hidden,
}

/// A loaded decoder-only transformer. Cloning is cheap (weights are shared).
#[derive(Debug, Clone)]
pub struct Model {
    cfg: Config,
    embed: Tensor,   // [vocab, d_model]
    unembed: Linear, // [vocab, d_model]
    blocks: Vec<Block>,
    final_norm: RmsNorm,
    inv_freqs: Vec<Tensor>, // distinct rope tables' inverse frequencies, [head_dim / 2] f32
    device: Device,
    dtype: DType,
    differentiable: bool, // plain ops everywhere, for autograd (training)
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
        let (h, kvh, hd, d) = (cfg.n_heads, cfg.n_kv_heads, cfg.head_dim, cfg.d_model);
        let mut ropes: Vec<(f32, RopeScaling)> = Vec::new();
        let mut blocks = Vec::with_capacity(cfg.n_layers);
        for l in 0..cfg.n_layers {
            let p = format!("model.layers.{l}");
            let norm =
                |n: &str, dim: usize| RmsNorm::load(ws, &format!("{p}.{n}"), dim, &cfg, opts);
            let lin = |n: &str, oi: (usize, usize), bias: bool| {
                Linear::load(ws, &format!("{p}.{n}"), oi, bias, opts)
            };
            let attn = Attention {
                q: lin("self_attn.q_proj", (h * hd, d), cfg.qkv_bias)?,
                k: lin("self_attn.k_proj", (kvh * hd, d), cfg.qkv_bias)?,
                v: lin("self_attn.v_proj", (kvh * hd, d), cfg.qkv_bias)?,
                o: lin("self_attn.o_proj", (d, h * hd), false)?,
                q_norm: if cfg.qk_norm {
                    Some(norm("self_attn.q_norm", hd)?)
                } else {
                    None
                },
                k_norm: if cfg.qk_norm {
                    Some(norm("self_attn.k_norm", hd)?)
                } else {
                    None
                },
                n_heads: h,
                n_kv_heads: kvh,
                head_dim: hd,
                scale: cfg.attn_scale,
                interleaved: cfg.rope_interleaved,
            };
            let mlp = Mlp {
                gate: lin("mlp.gate_proj", (cfg.d_mlp, d), false)?,
                up: lin("mlp.up_proj", (cfg.d_mlp, d), false)?,
                down: lin("mlp.down_proj", (d, cfg.d_mlp), false)?,
                act: cfg.activation,
            };
            let (post_attn_norm, mlp_norm, post_mlp_norm) = if cfg.sandwich_norm {
                (
                    Some(norm("post_attention_layernorm", d)?),
                    norm("pre_feedforward_layernorm", d)?,
                    Some(norm("post_feedforward_layernorm", d)?),
                )
            } else {
                (None, norm("post_attention_layernorm", d)?, None)
            };
            let rope_key = (cfg.rope_theta_of(l), cfg.rope_scaling_of(l));
            let rope = match ropes.iter().position(|k| *k == rope_key) {
                Some(i) => i,
                None => {
                    ropes.push(rope_key);
                    ropes.len() - 1
                }
            };
            blocks.push(Block {
                attn_norm: norm("input_layernorm", d)?,
                attn,
                post_attn_norm,
                mlp_norm,
                mlp,
                post_mlp_norm,
                span: cfg.layer_spans.get(l).copied().unwrap_or(AttnSpan::Global),
                rope,
            });
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

    /// The model's configuration.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// The device weights and activations live on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The activation dtype.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Every hook point of this model, in firing order.
    pub fn hook_points(&self) -> Vec<HookPoint> {
        HookPoint::all(self.cfg.n_layers)
    }

    /// The shape of the activation at `p` in a plain forward over `batch` rows of `pos` tokens,
    /// with the batch and position axes written as `batch` and `pos` (e.g. `[batch, pos, 9, 64]`
    /// for SmolLM2's `attn.hook_z`).
    pub fn hook_shape(&self, p: HookPoint) -> Vec<String> {
        let c = &self.cfg;
        let n = |v: usize| v.to_string();
        let (b, s) = ("batch".to_string(), "pos".to_string());
        match p {
            HookPoint::AttnQ(_) | HookPoint::AttnRotQ(_) | HookPoint::AttnZ(_) => {
                vec![b, s, n(c.n_heads), n(c.head_dim)]
            }
            HookPoint::AttnK(_) | HookPoint::AttnV(_) | HookPoint::AttnRotK(_) => {
                vec![b, s, n(c.n_kv_heads), n(c.head_dim)]
            }
            HookPoint::AttnScores(_) | HookPoint::AttnPattern(_) => {
                vec![b, n(c.n_heads), s, "keys".into()]
            }
            HookPoint::AttnResult(_) => vec![b, s, n(c.n_heads), n(c.d_model)],
            HookPoint::MlpPre(_) | HookPoint::MlpPreLinear(_) | HookPoint::MlpPost(_) => {
                vec![b, s, n(c.d_mlp)]
            }
            HookPoint::FinalScale => vec![b, s, n(1)],
            _ => vec![b, s, n(c.d_model)],
        }
    }

    /// Logits for every position, `[batch, pos, vocab]` f32, under `hooks`.
    ///
    /// Each row's logits equal running that row alone; padding columns hold unspecified values.
    pub fn forward(&self, batch: &Batch, hooks: &mut Hooks) -> Result<Tensor> {
        self.run(batch, None, hooks, Output::AllLogits)?
            .ok_or_else(|| Error::InvalidArgument {
                name: "forward".into(),
                msg: "no logits computed".into(),
            })
    }

    /// Logits at the last position of each row, `[batch, vocab]` f32 (left padding puts every
    /// row's last token in the last column).
    pub fn forward_last(&self, batch: &Batch, hooks: &mut Hooks) -> Result<Tensor> {
        self.run(batch, None, hooks, Output::LastLogits)?
            .ok_or_else(|| Error::InvalidArgument {
                name: "forward_last".into(),
                msg: "no logits computed".into(),
            })
    }

    /// Runs only as far as the last hook point any of `hooks` fires at; computes no logits.
    pub fn run_hooks(&self, batch: &Batch, hooks: &mut Hooks) -> Result<()> {
        self.run(batch, None, hooks, Output::HooksOnly).map(|_| ())
    }

    /// Logits (`[batch, pos, vocab]`) and the activations at every point `keep` selects.
    pub fn run_with_cache(
        &self,
        batch: &Batch,
        keep: impl Fn(HookPoint) -> bool,
    ) -> Result<(Tensor, ActivationCache)> {
        let mut cache = ActivationCache::new();
        let logits = {
            let mut hooks = Hooks::new();
            hooks.add_where(keep, &mut cache);
            self.forward(batch, &mut hooks)?
        };
        Ok((logits, cache))
    }

    /// The activations at every point `keep` selects, stopping after the last one (no logits).
    pub fn cache(
        &self,
        batch: &Batch,
        keep: impl Fn(HookPoint) -> bool,
    ) -> Result<ActivationCache> {
        let mut cache = ActivationCache::new();
        {
            let mut hooks = Hooks::new();
            hooks.add_where(keep, &mut cache);
            self.run_hooks(batch, &mut hooks)?;
        }
        Ok(cache)
    }

    /// One KV-cached step: runs `batch`'s columns after those already in `kv` and returns the
    /// last column's logits, `[batch, vocab]` f32. `batch` must have the cache's rows.
    pub fn forward_cached(
        &self,
        batch: &Batch,
        kv: &mut KvCache,
        hooks: &mut Hooks,
    ) -> Result<Tensor> {
        self.run(batch, Some(kv), hooks, Output::LastLogits)?
            .ok_or_else(|| Error::InvalidArgument {
                name: "forward_cached".into(),
                msg: "no logits computed".into(),
            })
    }

    pub(crate) fn check_batch(&self, batch: &Batch, offset: usize) -> Result<()> {
        let total = offset + batch.seq_len();
        for (i, row) in batch.rows().enumerate() {
            let len = total - batch.pads()[i];
            if len > self.cfg.max_position {
                return Err(Error::PromptTooLong {
                    index: i,
                    len,
                    max: self.cfg.max_position,
                });
            }
            if let Some(&id) = row.iter().find(|&&id| id as usize >= self.cfg.vocab_size) {
                return Err(Error::TokenOutOfRange {
                    index: i,
                    id,
                    vocab: self.cfg.vocab_size,
                });
            }
        }
        Ok(())
    }

    /// Logits at every position, `[batch, pos, vocab]` f32, of a forward resumed at the
    /// residual-stream point `start` (`hook_embed`, `blocks.{l}.hook_resid_pre`,
    /// `blocks.{l}.hook_resid_mid` or `blocks.{l}.hook_resid_post`) from its value `resid`
    /// (`[batch, pos, d_model]`, the model's dtype, as the forward computes it there): hooks at
    /// `start` fire on `resid`, then the forward continues with everything after `start`.
    /// `batch` gives the padding and positions (its token ids are not read again).
    ///
    /// Branch-at-layer execution: a sweep of interventions at layer `l` runs everything below `l`
    /// once ([`Model::cache`]) and resumes here once per intervention, or once for all of them
    /// stacked as rows. Resuming from a cached activation with no hooks gives what
    /// [`Model::forward`] gives.
    ///
    /// ```no_run
    /// use puppetlens::{Batch, HookPoint, Hooks, LoadOptions, Model};
    /// let model = Model::load("model.gguf", &LoadOptions::default())?;
    /// let batch = Batch::new(&[vec![1u32, 2, 3]])?;
    /// let p = HookPoint::ResidPost(4);
    /// let x = model.cache(&batch, |q| q == p)?.require(p)?.clone(); // [1, 3, d_model]
    /// let logits = model.run_from(p, &(x * 1.5)?, &batch, &mut Hooks::new())?; // [1, 3, vocab]
    /// # Ok::<(), puppetlens::Error>(())
    /// ```
    pub fn run_from(
        &self,
        start: HookPoint,
        resid: &Tensor,
        batch: &Batch,
        hooks: &mut Hooks,
    ) -> Result<Tensor> {
        self.resume(start, resid, batch, hooks, Output::AllLogits)
    }

    /// [`Model::run_from`] with logits at the last position of each row only, `[batch, vocab]` f32.
    pub fn run_from_last(
        &self,
        start: HookPoint,
        resid: &Tensor,
        batch: &Batch,
        hooks: &mut Hooks,
    ) -> Result<Tensor> {
        self.resume(start, resid, batch, hooks, Output::LastLogits)
    }

    /// The logits of a forward resumed at `start` ([`Model::run_from`]).
    fn resume(
        &self,
        start: HookPoint,
        resid: &Tensor,
        batch: &Batch,
        hooks: &mut Hooks,
        output: Output,
    ) -> Result<Tensor> {
        self.run_inner(batch, None, hooks, output, Some((start, resid)))?
            .ok_or_else(|| Error::InvalidArgument {
                name: "run_from".into(),
                msg: "no logits computed".into(),
            })
    }

    /// Logits of chosen tokens at the last position, `[batch, k]` f32 (`ids[row]` holds row's `k`
    /// token ids), of a forward from the embeddings or resumed at `start`: the unembedding reads
    /// only those rows of its weight (Gemma's is 262k x 640, 7% of an A/B forward when computed
    /// whole). Equal to the same entries of [`Model::forward_last`] within float rounding.
    ///
    /// With `kv`, the batch's columns follow those the cache holds (as in [`Model::forward_cached`]);
    /// a resumed forward then reads and extends the cache only in the blocks it runs.
    pub(crate) fn last_token_logits(
        &self,
        batch: &Batch,
        hooks: &mut Hooks,
        start: Option<(HookPoint, &Tensor)>,
        kv: Option<&mut KvCache>,
        ids: &[Vec<u32>],
    ) -> Result<Tensor> {
        let k = ids.first().map_or(0, |r| r.len());
        if ids.len() != batch.len() || ids.iter().any(|r| r.len() != k) || k == 0 {
            return Err(Error::Shape {
                what: "token ids to score".into(),
                expected: format!("{} rows of one length >= 1", batch.len()),
                got: format!("{:?}", ids.iter().map(|r| r.len()).collect::<Vec<_>>()),
            });
        }
        for (index, row) in ids.iter().enumerate() {
            if let Some(&id) = row.iter().find(|&&id| id as usize >= self.cfg.vocab_size) {
                return Err(Error::TokenOutOfRange {
                    index,
                    id,
                    vocab: self.cfg.vocab_size,
                });
            }
        }
        let normed = self
            .run_inner(batch, kv, hooks, Output::Hidden, start)?
            .ok_or_else(|| Error::InvalidArgument {
                name: "last_token_logits".into(),
                msg: "no hidden states computed".into(),
            })?; // [b, s, d_model]
        let (b, s, d) = normed.dims3()?;
        let h = normed.narrow(1, s - 1, 1)?.squeeze(1)?; // [b, d_model]
        let flat: Vec<u32> = ids.iter().flatten().copied().collect();
        let logits = match (&self.unembed.w, &self.unembed.b, &self.unembed.lora) {
            (Weight::Dense(w) | Weight::Frozen(w), None, None) => {
                let idx = Tensor::from_vec(flat, b * k, &self.device)?; // [b * k]
                let rows = w.index_select(&idx, 0)?.reshape((b, k, d))?; // [b, k, d_model]
                let y = rows.matmul(&h.unsqueeze(2)?)?.squeeze(2)?; // [b, k]
                match y.dtype() {
                    DType::F64 => y,
                    _ => y.to_dtype(DType::F32)?,
                }
            }
            _ => {
                // Quantized or adapted head: the whole row, then the chosen entries.
                let all = self.unembed.forward(&h)?.to_dtype(DType::F32)?; // [b, vocab]
                let idx = Tensor::from_vec(flat, (b, k), &self.device)?; // [b, k]
                all.gather(&idx, 1)? // [b, k]
            }
        };
        Ok(match self.cfg.final_logit_softcap {
            Some(c) => ((logits / c)?.tanh()? * c)?,
            None => logits,
        })
    }

    /// The forward pass from the embeddings.
    pub(crate) fn run(
        &self,
        batch: &Batch,
        kv: Option<&mut KvCache>,
        hooks: &mut Hooks,
        output: Output,
    ) -> Result<Option<Tensor>> {
        self.run_inner(batch, kv, hooks, output, None)
    }

    /// The forward pass, from the embeddings or resumed at `start`. Hooks fire only through
    /// `fire` below.
    fn run_inner(
        &self,
        batch: &Batch,
        mut kv: Option<&mut KvCache>,
        hooks: &mut Hooks,
        output: Output,
        start: Option<(HookPoint, &Tensor)>,
    ) -> Result<Option<Tensor>> {
        let cfg = &self.cfg;
        let g = self.differentiable;
        hooks.check(cfg.n_layers)?;
        let offset = kv.as_ref().map_or(0, |k| k.seen);
        let pads: Vec<usize> = match kv.as_ref() {
            Some(k) if offset > 0 => {
                if k.pads.len() != batch.len() {
                    return Err(Error::Shape {
                        what: "batch for KV-cached step".into(),
                        expected: format!("{} rows", k.pads.len()),
                        got: format!("{} rows", batch.len()),
                    });
                }
                k.pads.clone()
            }
            _ => batch.pads().to_vec(),
        };
        self.check_batch(batch, offset)?;
        let (b, s) = (batch.len(), batch.seq_len());
        let t = offset + s;
        // Where the blocks begin: (first block, resuming at its `hook_resid_mid`).
        let (first, from_mid) = match start {
            None => (0, false),
            Some((p, x)) => {
                p.check(cfg.n_layers)?;
                if x.dims() != [b, s, cfg.d_model] {
                    return Err(Error::Shape {
                        what: format!("residual to resume at {p}"),
                        expected: format!(
                            "[{b}, {s}, {}] (the batch's rows and columns)",
                            cfg.d_model
                        ),
                        got: format!("{:?}", x.dims()),
                    });
                }
                match p {
                    HookPoint::Embed => (0, false),
                    HookPoint::ResidPre(l) => (l, false),
                    HookPoint::ResidMid(l) => (l, true),
                    HookPoint::ResidPost(l) => (l + 1, false),
                    other => {
                        return Err(Error::InvalidArgument {
                            name: "run_from".into(),
                            msg: format!(
                                "a forward resumes at hook_embed or a block's hook_resid_pre,                                  hook_resid_mid or hook_resid_post, not at {other}"
                            ),
                        })
                    }
                }
            }
        };
        let stop = match output {
            Output::HooksOnly => match hooks.last_point(&self.hook_points()) {
                Some(p) => Some(p),
                None => return Ok(None),
            },
            _ => None,
        };

        // Padding mask for hooks, [b, s], built only when some hook may fire.
        let hook_mask = if hooks.is_empty() {
            None
        } else {
            let mut m = vec![0f32; b * s];
            for (i, row) in m.chunks_mut(s).enumerate() {
                for (j, v) in row.iter_mut().enumerate() {
                    if offset + j >= pads[i] {
                        *v = 1.0;
                    }
                }
            }
            Some(Tensor::from_vec(m, (b, s), &self.device)?.to_dtype(self.dtype)?)
        };
        // Which points inside each block some hook wants (bit = the point's slot in its block):
        // nothing inside attention or the MLP is computed or fired for the others.
        let inner: Vec<u32> = (0..cfg.n_layers)
            .map(|l| match hook_mask {
                None => 0,
                Some(_) => (0..crate::hook::BLOCK_HOOKS.len())
                    .filter(|&i| HookPoint::block_point(l, i).is_some_and(|p| hooks.wants(p)))
                    .fold(0u32, |bits, i| bits | 1 << i),
            })
            .collect();
        let want_scale = hook_mask.is_some() && hooks.wants(HookPoint::FinalScale);
        let mut fire = |point: HookPoint, x: Tensor| -> Result<Tensor> {
            match &hook_mask {
                None => Ok(x),
                Some(mask) => hooks.fire(
                    x,
                    &HookCtx {
                        point,
                        mask,
                        pads: &pads,
                        offset,
                    },
                ),
            }
        };
        // Fires the hooks at a point, and returns from the forward when it is the last one wanted.
        macro_rules! hook {
            ($point:expr, $x:expr) => {{
                let point = $point;
                let y = fire(point, $x)?;
                if stop == Some(point) {
                    return Ok(None);
                }
                y
            }};
        }

        // Rotary tables for this call's positions.
        let mut pos = vec![0f32; b * s];
        for (i, row) in pos.chunks_mut(s).enumerate() {
            for (j, v) in row.iter_mut().enumerate() {
                *v = (offset + j).saturating_sub(pads[i]) as f32;
            }
        }
        let pos = Tensor::from_vec(pos, (b, s, 1), &self.device)?; // [b, s, 1]
        let ropes = self
            .inv_freqs
            .iter()
            .map(|f| {
                let freqs = pos.broadcast_mul(&f.reshape((1, 1, ()))?)?; // [b, s, head_dim/2]
                Ok(Rope {
                    cos: freqs.cos()?.to_dtype(self.dtype)?,
                    sin: freqs.sin()?.to_dtype(self.dtype)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let masks = self.masks(&pads, offset, s)?;

        let mut resid = match start {
            Some((HookPoint::ResidPost(l), x)) => hook!(HookPoint::ResidPost(l), x.clone()), // [b, s, d_model]
            Some((HookPoint::Embed, x)) => hook!(HookPoint::Embed, x.clone()), // [b, s, d_model]
            Some((_, x)) => x.clone(), // [b, s, d_model], fired in its block
            None => {
                let tokens = batch.tokens(&self.device)?; // [b, s] u32
                let x = self
                    .embed
                    .index_select(&tokens.flatten_all()?, 0)?
                    .reshape((b, s, cfg.d_model))?; // [b, s, d_model]
                let x = match cfg.embed_scale {
                    Some(scale) => (x * scale)?,
                    None => x,
                };
                hook!(HookPoint::Embed, x) // [b, s, d_model]
            }
        };
        // Stops the forward after a block's attention or MLP when the last wanted point is inside.
        let stops_within = |l: usize, last: HookPoint| {
            stop.is_some_and(|p| p.layer() == Some(l) && p.rank() < last.rank())
        };
        for (l, block) in self.blocks.iter().enumerate().skip(first) {
            let resid_mid = if from_mid && l == first {
                hook!(HookPoint::ResidMid(l), resid) // [b, s, d_model]
            } else {
                let resid_pre = hook!(HookPoint::ResidPre(l), resid); // [b, s, d_model]
                let cache = kv.as_deref_mut().map(|k| &mut k.layers[l]);
                let mask = masks
                    .iter()
                    .find(|(span, _)| *span == block.span)
                    .map(|(_, m)| m);
                let normed = hook!(
                    HookPoint::Ln1Normalized(l),
                    block.attn_norm.forward(&resid_pre, g)?
                ); // [b, s, d_model]
                let mut taps = Taps {
                    layer: l,
                    bits: inner[l],
                    fire: &mut fire,
                };
                let attn =
                    block
                        .attn
                        .forward(&normed, &ropes[block.rope], mask, cache, g, &mut taps)?; // [b, s, d_model]
                if stops_within(l, HookPoint::AttnOut(l)) {
                    return Ok(None);
                }
                let attn = match &block.post_attn_norm {
                    Some(n) => n.forward(&attn, g)?,
                    None => attn,
                };
                let attn_out = hook!(HookPoint::AttnOut(l), attn); // [b, s, d_model]
                hook!(HookPoint::ResidMid(l), (resid_pre + attn_out)?) // [b, s, d_model]
            };
            let normed = hook!(
                HookPoint::Ln2Normalized(l),
                block.mlp_norm.forward(&resid_mid, g)?
            ); // [b, s, d_model]
            let mut taps = Taps {
                layer: l,
                bits: inner[l],
                fire: &mut fire,
            };
            let mlp = block.mlp.forward(&normed, g, &mut taps)?; // [b, s, d_model]
            if stops_within(l, HookPoint::MlpOut(l)) {
                return Ok(None);
            }
            let mlp = match &block.post_mlp_norm {
                Some(n) => n.forward(&mlp, g)?,
                None => mlp,
            };
            let mlp_out = hook!(HookPoint::MlpOut(l), mlp); // [b, s, d_model]
            resid = hook!(HookPoint::ResidPost(l), (resid_mid + mlp_out)?); // [b, s, d_model]
        }
        if let Some(k) = kv.as_deref_mut() {
            k.seen = t;
            if offset == 0 {
                k.pads = pads.clone();
            }
        }
        let normed = if want_scale {
            let scale = self.final_norm.scale(&resid)?; // [b, s, 1]
            let id = scale.id();
            let scale = hook!(HookPoint::FinalScale, scale); // [b, s, 1]
            if scale.id() == id {
                self.final_norm.forward(&resid, g)?
            } else {
                self.final_norm.with_scale(&resid, &scale)?
            }
        } else {
            self.final_norm.forward(&resid, g)?
        }; // [b, s, d_model]
        let normed = hook!(HookPoint::FinalNorm, normed); // [b, s, d_model]
        let h = match output {
            Output::Hidden => return Ok(Some(normed)),
            Output::LastLogits => normed.narrow(1, s - 1, 1)?, // [b, 1, d_model]
            _ => normed,
        };
        let logits = self.logits_of(&h)?; // [b, s|1, vocab]
        Ok(Some(match output {
            Output::LastLogits => logits.squeeze(1)?, // [b, vocab]
            _ => logits,
        }))
    }

    /// Decodes residual-stream values through the final norm and the unembedding (the logit lens):
    /// `[.., d_model]` (the model's dtype) `-> [.., vocab]` f32 logits, soft-capped when the model
    /// caps them. Decoding the last block's `hook_resid_post` gives the model's own logits.
    pub fn unembed_resid(&self, resid: &Tensor) -> Result<Tensor> {
        let normed = self.final_norm.forward(resid, false)?; // [.., d_model]
        self.logits_of(&normed)
    }

    /// The final norm's weight, `[d_model]` (any `1 + w` offset folded in).
    pub(crate) fn final_norm_weight(&self) -> &Tensor {
        &self.final_norm.w
    }

    /// Rows of the unembedding, `[k, d_model]` in the model's dtype; an error for a quantized or
    /// adapted head.
    pub(crate) fn unembed_rows(&self, ids: &[u32]) -> Result<Tensor> {
        if let Some(&id) = ids.iter().find(|&&id| id as usize >= self.cfg.vocab_size) {
            return Err(Error::TokenOutOfRange {
                index: 0,
                id,
                vocab: self.cfg.vocab_size,
            });
        }
        match (&self.unembed.w, &self.unembed.b, &self.unembed.lora) {
            (Weight::Dense(w) | Weight::Frozen(w), None, None) => {
                let idx = Tensor::from_vec(ids.to_vec(), ids.len(), &self.device)?; // [k]
                Ok(w.index_select(&idx, 0)?) // [k, d_model]
            }
            _ => Err(Error::InvalidArgument {
                name: "unembedding".into(),
                msg: "direct logit attribution reads rows of a dense unembedding; load the model \
                      without keep_quantized and merge any adapter"
                    .into(),
            }),
        }
    }

    /// Per-head attention outputs `[.., head, d_model]` (`attn.hook_result`) carried into the
    /// residual stream's units: unchanged, or through block `layer`'s post-attention norm (Gemma 3)
    /// with its scale frozen at the heads' sum (so the heads' parts sum to `hook_attn_out`).
    pub(crate) fn heads_in_resid(&self, layer: usize, heads: &Tensor) -> Result<Tensor> {
        let block = self.blocks.get(layer).ok_or(Error::LayerOutOfRange {
            layer,
            n_layers: self.cfg.n_layers,
        })?;
        let Some(norm) = &block.post_attn_norm else {
            return Ok(heads.clone());
        };
        let axis = heads.rank().saturating_sub(2);
        let mut total = heads.sum_keepdim(axis)?; // [.., 1, d_model]
        if let Some(b) = &block.attn.o.b {
            total = total.broadcast_add(b)?;
        }
        let scale = norm.scale(&total)?; // [.., 1, 1]
        norm.with_scale(heads, &scale) // [.., head, d_model]
    }

    /// Logits (f32, or f64 for an f64 model; soft-capped when the model caps them) of final-normed hidden states
    /// `[.., d_model] -> [.., vocab]`.
    pub(crate) fn logits_of(&self, h: &Tensor) -> Result<Tensor> {
        let logits = self.unembed.forward(h)?; // [.., vocab]
        let logits = match logits.dtype() {
            DType::F64 => logits, // kept for f64 models (gradient checks)
            _ => logits.to_dtype(DType::F32)?,
        };
        Ok(match self.cfg.final_logit_softcap {
            Some(c) => ((logits / c)?.tanh()? * c)?,
            None => logits,
        })
    }

    /// Additive attention masks `[b, 1, s, t]` for each distinct span: causal, no padding keys,
    /// within the window. A query always sees itself so that padding rows stay finite.
    fn masks(&self, pads: &[usize], offset: usize, s: usize) -> Result<Vec<(AttnSpan, Tensor)>> {
        let b = pads.len();
        let t = offset + s;
        let mut spans: Vec<AttnSpan> = Vec::new();
        for blk in &self.blocks {
            if !spans.contains(&blk.span) {
                spans.push(blk.span);
            }
        }
        spans
            .into_iter()
            .map(|span| {
                let window = match span {
                    AttnSpan::Global => usize::MAX,
                    AttnSpan::Local(w) => w,
                };
                let mut m = vec![f32::NEG_INFINITY; b * s * t];
                for (i, &pad) in pads.iter().enumerate() {
                    for qi in 0..s {
                        let q = offset + qi;
                        let row = &mut m[(i * s + qi) * t..(i * s + qi + 1) * t];
                        for (k, v) in row.iter_mut().enumerate().take(q + 1) {
                            if (k >= pad && q - k < window) || k == q {
                                *v = 0.0;
                            }
                        }
                    }
                }
                let mask = Tensor::from_vec(m, (b, 1, s, t), &self.device)?.to_dtype(self.dtype)?;
                Ok((span, mask))
            })
            .collect()
    }

    /// Writes this model as a Hugging Face safetensors directory (config.json + model.safetensors),
    /// in Hugging Face's weight layout (rotary rows un-permuted, Gemma norms stored as `w` for `1 + w`).
    pub fn export_safetensors(&self, dir: impl AsRef<Path>) -> Result<()> {
        export::export(self, dir.as_ref())
    }
}

/// The hooks of one block's attention or MLP: fires a point only when some hook wants it.
struct Taps<'a> {
    layer: usize,
    bits: u32,
    fire: &'a mut dyn FnMut(HookPoint, Tensor) -> Result<Tensor>,
}

impl Taps<'_> {
    fn wants(&self, p: HookPoint) -> bool {
        p.block_slot()
            .is_some_and(|(_, i)| self.bits & (1 << i) != 0)
    }

    /// Fires `p` on `x` when wanted; otherwise returns `x` untouched.
    fn tap(&mut self, p: HookPoint, x: Tensor) -> Result<Tensor> {
        if self.wants(p) {
            (self.fire)(p, x)
        } else {
            Ok(x)
        }
    }

    /// [`Taps::tap`] for queries and keys `[b, s, heads, hd]`: hooks see Hugging Face's split-halves
    /// rotary layout; an interleaved (GGUF Llama) model's values are converted both ways.
    fn tap_rotary(&mut self, p: HookPoint, x: Tensor, interleaved: bool) -> Result<Tensor> {
        if !self.wants(p) {
            return Ok(x);
        }
        if !interleaved {
            return (self.fire)(p, x);
        }
        let (b, s, n, hd) = x.dims4()?;
        let halves = x
            .reshape((b, s, n, hd / 2, 2))?
            .transpose(3, 4)?
            .reshape((b, s, n, hd))?; // [b, s, heads, hd], split halves
        let id = halves.id();
        let y = (self.fire)(p, halves)?;
        if y.id() == id {
            return Ok(x);
        }
        Ok(y.reshape((b, s, n, 2, hd / 2))?
            .transpose(3, 4)?
            .reshape((b, s, n, hd))?) // [b, s, heads, hd], interleaved
    }
}

impl Attention {
    fn forward(
        &self,
        x: &Tensor, // [b, s, d_model]
        rope: &Rope,
        mask: Option<&Tensor>,
        cache: Option<&mut Option<(Tensor, Tensor)>>,
        grad: bool,
        taps: &mut Taps,
    ) -> Result<Tensor> {
        let (b, s, _) = x.dims3()?;
        let l = taps.layer;
        let (h, kvh, hd) = (self.n_heads, self.n_kv_heads, self.head_dim);
        let il = self.interleaved;
        let q = self.q.forward(x)?.reshape((b, s, h, hd))?; // [b, s, h, hd]
        let q = taps
            .tap_rotary(HookPoint::AttnQ(l), q, il)?
            .transpose(1, 2)?
            .contiguous()?; // [b, h, s, hd]
        let k = self.k.forward(x)?.reshape((b, s, kvh, hd))?; // [b, s, kvh, hd]
        let k = taps
            .tap_rotary(HookPoint::AttnK(l), k, il)?
            .transpose(1, 2)?
            .contiguous()?; // [b, kvh, s, hd]
        let v = self.v.forward(x)?.reshape((b, s, kvh, hd))?; // [b, s, kvh, hd]
        let v = taps
            .tap(HookPoint::AttnV(l), v)?
            .transpose(1, 2)?
            .contiguous()?; // [b, kvh, s, hd]
        let q = match &self.q_norm {
            Some(n) => n.forward(&q, grad)?,
            None => q,
        };
        let k = match &self.k_norm {
            Some(n) => n.forward(&k, grad)?,
            None => k,
        };
        let rot = match (self.interleaved, grad) {
            (true, false) => candle_nn::rotary_emb::rope_i,
            (false, false) => candle_nn::rotary_emb::rope,
            (true, true) => rope_i_differentiable,
            (false, true) => rope_differentiable,
        };
        let mut q = rot(&q, &rope.cos, &rope.sin)?; // [b, h, s, hd]
        let mut k = rot(&k, &rope.cos, &rope.sin)?; // [b, kvh, s, hd]
        for (p, x) in [
            (HookPoint::AttnRotQ(l), &mut q),
            (HookPoint::AttnRotK(l), &mut k),
        ] {
            if taps.wants(p) {
                let seen = x.transpose(1, 2)?; // [b, s, heads, hd]
                let id = seen.id();
                let y = taps.tap_rotary(p, seen, il)?;
                if y.id() != id {
                    *x = y.transpose(1, 2)?.contiguous()?; // [b, heads, s, hd]
                }
            }
        }
        let (k, v) = match cache {
            Some(slot) => {
                let kv = match slot.take() {
                    Some((pk, pv)) => (Tensor::cat(&[&pk, &k], 2)?, Tensor::cat(&[&pv, &v], 2)?), // [b, kvh, t, hd]
                    None => (k, v),
                };
                *slot = Some(kv.clone());
                kv
            }
            None => (k, v),
        };
        let t = k.dim(2)?;
        let rep = h / kvh;
        // Grouped-query attention without copying keys: fold each kv head's query heads into rows.
        let q = (q * self.scale)?.reshape((b, kvh, rep * s, hd))?; // [b, kvh, rep*s, hd]
        let att = q.matmul(&k.t()?)?.reshape((b, h, s, t))?; // [b, h, s, t]
        let att = match mask {
            Some(m) => att.broadcast_add(m)?,
            None => att,
        };
        let att = taps.tap(HookPoint::AttnScores(l), att)?; // [b, h, s, t]
        let att = if grad {
            candle_nn::ops::softmax(&att, candle_core::D::Minus1)?
        } else {
            candle_nn::ops::softmax_last_dim(&att)?
        }; // [b, h, s, t]
        let att = taps.tap(HookPoint::AttnPattern(l), att)?; // [b, h, s, t]
        let y = att.reshape((b, kvh, rep * s, t))?.matmul(&v)?; // [b, kvh, rep*s, hd]
        let z = y.reshape((b, h, s, hd))?.transpose(1, 2)?; // [b, s, h, hd]
        let z = taps.tap(HookPoint::AttnZ(l), z)?; // [b, s, h, hd]
        if taps.wants(HookPoint::AttnResult(l)) {
            let result = self.head_results(&z)?; // [b, s, h, d_model]
            let id = result.id();
            let result = taps.tap(HookPoint::AttnResult(l), result)?; // [b, s, h, d_model]
            if result.id() != id {
                let out = result.sum(2)?; // [b, s, d_model]
                return Ok(match &self.o.b {
                    Some(bias) => out.broadcast_add(bias)?,
                    None => out,
                });
            }
        }
        self.o.forward(&z.reshape((b, s, h * hd))?) // [b, s, d_model]
    }

    /// Each head's part of the output projection, `[b, s, h, hd] -> [b, s, h, d_model]` (bias
    /// excluded): the projection applied to `z` with every other head's slice zeroed.
    fn head_results(&self, z: &Tensor) -> Result<Tensor> {
        let (b, s, h, hd) = z.dims4()?;
        let eye = Tensor::eye(h, z.dtype(), z.device())?.reshape((1, 1, h, h, 1))?; // [1, 1, h, h, 1]
        let spread = z
            .unsqueeze(3)?
            .broadcast_mul(&eye)?
            .reshape((b, s, h, h * hd))?; // [b, s, h, h*hd]: row i holds head i's slice only
        let out = self.o.forward(&spread)?; // [b, s, h, d_model]
        Ok(match &self.o.b {
            Some(bias) => out.broadcast_sub(bias)?,
            None => out,
        })
    }
}

impl Mlp {
    /// `grad`: plain tensor ops that autograd can differentiate (the fused gate kernel has no
    /// backward pass).
    fn forward(&self, x: &Tensor, grad: bool, taps: &mut Taps) -> Result<Tensor> {
        let l = taps.layer;
        let g = taps.tap(HookPoint::MlpPre(l), self.gate.forward(x)?)?; // [b, s, d_mlp]
        let u = taps.tap(HookPoint::MlpPreLinear(l), self.up.forward(x)?)?; // [b, s, d_mlp]
        let fused = !grad
            && g.device().is_cpu()
            && g.dtype() == DType::F32
            && u.dtype() == DType::F32
            && self.act != Activation::Gelu;
        let h = if fused {
            g.contiguous()?
                .apply_op2_no_bwd(&u.contiguous()?, &GatedAct(self.act))? // [b, s, d_mlp]
        } else {
            let g = match self.act {
                Activation::Silu => candle_nn::ops::silu(&g)?,
                Activation::GeluTanh => g.gelu()?,
                Activation::Gelu => g.gelu_erf()?,
            };
            (g * u)? // [b, s, d_mlp]
        };
        let h = taps.tap(HookPoint::MlpPost(l), h)?; // [b, s, d_mlp]
        self.down.forward(&h) // [b, s, d_model]
    }
}

/// RoPE inverse frequencies, `head_dim / 2` values.
fn inv_freq(head_dim: usize, theta: f32, scaling: RopeScaling) -> Vec<f32> {
    let base: Vec<f32> = (0..head_dim / 2)
        .map(|i| 1.0 / theta.powf((2 * i) as f32 / head_dim as f32))
        .collect();
    match scaling {
        RopeScaling::None => base,
        RopeScaling::Linear(f) => base.into_iter().map(|x| x / f).collect(),
        RopeScaling::Llama3 {
            factor,
            low_freq_factor,
            high_freq_factor,
            original_max_position,
        } => {
            let old = original_max_position as f32;
            let low_wavelen = old / low_freq_factor;
            let high_wavelen = old / high_freq_factor;
            base.into_iter()
                .map(|f| {
                    let wavelen = 2.0 * std::f32::consts::PI / f;
                    if wavelen < high_wavelen {
                        f
                    } else if wavelen > low_wavelen {
                        f / factor
                    } else {
                        let smooth = (old / wavelen - low_freq_factor)
                            / (high_freq_factor - low_freq_factor);
                        (1.0 - smooth) * f / factor + smooth * f
                    }
                })
                .collect()
        }
    }
}

/// The linear modules an adapter may target, by their Hugging Face names.
pub(crate) const LINEAR_MODULES: [&str; 7] = [
    "self_attn.q_proj",
    "self_attn.k_proj",
    "self_attn.v_proj",
    "self_attn.o_proj",
    "mlp.gate_proj",
    "mlp.up_proj",
    "mlp.down_proj",
];

impl Block {
    fn linear_mut(&mut self, module: &str) -> Option<&mut Linear> {
        Some(match module {
            "self_attn.q_proj" => &mut self.attn.q,
            "self_attn.k_proj" => &mut self.attn.k,
            "self_attn.v_proj" => &mut self.attn.v,
            "self_attn.o_proj" => &mut self.attn.o,
            "mlp.gate_proj" => &mut self.mlp.gate,
            "mlp.up_proj" => &mut self.mlp.up,
            "mlp.down_proj" => &mut self.mlp.down,
            _ => return None,
        })
    }
}

impl Model {
    /// Switches the rotary kernel between adjacent pairs and split halves (tests of the kernels).
    #[cfg(test)]
    pub(crate) fn set_rope_interleaved(&mut self, on: bool) {
        self.cfg.rope_interleaved = on;
        for b in &mut self.blocks {
            b.attn.interleaved = on;
        }
    }

    /// Turns frozen weights back into plain dense ones (tests of the frozen matmul's gradients).
    #[cfg(test)]
    pub(crate) fn unfreeze(&mut self) {
        let thaw = |l: &mut Linear| {
            if let Weight::Frozen(w) = &l.w {
                l.w = Weight::Dense(w.clone());
            }
        };
        thaw(&mut self.unembed);
        for blk in &mut self.blocks {
            for name in LINEAR_MODULES {
                if let Some(l) = blk.linear_mut(name) {
                    thaw(l);
                }
            }
        }
    }

    /// `(out, in)` of the linear `module` (one of [`LINEAR_MODULES`]) of `layer`, or `None`.
    pub(crate) fn linear_shape(&self, layer: usize, module: &str) -> Option<(usize, usize)> {
        let mut blk = self.blocks.get(layer)?.clone();
        blk.linear_mut(module)?.out_in().ok()
    }

    /// A copy of this model with low-rank paths on the given `(layer, module)` linears (tensors
    /// in this model's row layout) and, when `differentiable`, plain-op kernels for autograd
    /// (the paths stay separate, to be trained); otherwise each path is merged into its dense weight.
    pub(crate) fn with_lora_paths(
        &self,
        paths: &[((usize, String), LoraPath)],
        differentiable: bool,
    ) -> Result<Model> {
        let mut m = self.clone();
        m.differentiable = differentiable;
        if differentiable {
            let freeze = |l: &mut Linear| {
                if let Weight::Dense(w) = &l.w {
                    l.w = Weight::Frozen(w.clone());
                }
            };
            freeze(&mut m.unembed);
            for blk in &mut m.blocks {
                for name in LINEAR_MODULES {
                    if let Some(l) = blk.linear_mut(name) {
                        freeze(l);
                    }
                }
            }
        }
        for ((layer, module), path) in paths {
            let n_layers = m.cfg.n_layers;
            let blk = m.blocks.get_mut(*layer).ok_or(Error::LayerOutOfRange {
                layer: *layer,
                n_layers,
            })?;
            let lin = blk
                .linear_mut(module)
                .ok_or_else(|| Error::InvalidArgument {
                    name: "adapter target".into(),
                    msg: format!("unknown module `{module}` (known: {LINEAR_MODULES:?})"),
                })?;
            lin.lora = Some(path.clone());
            if !differentiable {
                lin.merge_lora()?;
            }
        }
        Ok(m)
    }

    /// Every weight as (Hugging Face name, dense f32 tensor in puppetlens's layout).
    pub(crate) fn named_tensors(&self) -> Result<Vec<(String, Tensor)>> {
        let m = self;
        let dense = |l: &Linear| -> Result<Tensor> {
            let w = match &l.w {
                Weight::Dense(w) | Weight::Frozen(w) => w.to_dtype(DType::F32)?,
                Weight::Quant(QMatMul::QTensor(q)) => q.dequantize(&m.device)?,
                Weight::Quant(QMatMul::Tensor(t) | QMatMul::TensorF16(t)) => {
                    t.to_dtype(DType::F32)?
                }
            }; // [out, in]
            match &l.lora {
                // merged: W + scale * B A
                Some(lo) => Ok((w
                    + (lo
                        .b
                        .to_dtype(DType::F32)?
                        .matmul(&lo.a.to_dtype(DType::F32)?)?
                        * lo.scale)?)?),
                None => Ok(w),
            }
        };
        let bias = |l: &Linear| l.b.clone();
        let mut out = vec![(
            "model.embed_tokens.weight".to_string(),
            m.embed.to_dtype(DType::F32)?,
        )];
        if !m.cfg.tie_embeddings {
            out.push(("lm_head.weight".into(), dense(&m.unembed)?));
        }
        out.push((
            "model.norm.weight".into(),
            m.final_norm.w.to_dtype(DType::F32)?,
        ));
        for (l, blk) in m.blocks.iter().enumerate() {
            let p = format!("model.layers.{l}");
            let mut lin = |n: &str, x: &Linear| -> Result<()> {
                out.push((format!("{p}.{n}.weight"), dense(x)?));
                if let Some(b) = bias(x) {
                    out.push((format!("{p}.{n}.bias"), b.to_dtype(DType::F32)?));
                }
                Ok(())
            };
            lin("self_attn.q_proj", &blk.attn.q)?;
            lin("self_attn.k_proj", &blk.attn.k)?;
            lin("self_attn.v_proj", &blk.attn.v)?;
            lin("self_attn.o_proj", &blk.attn.o)?;
            lin("mlp.gate_proj", &blk.mlp.gate)?;
            lin("mlp.up_proj", &blk.mlp.up)?;
            lin("mlp.down_proj", &blk.mlp.down)?;
            let mut norm = |n: &str, x: &RmsNorm| -> Result<()> {
                out.push((format!("{p}.{n}.weight"), x.w.to_dtype(DType::F32)?));
                Ok(())
            };
            norm("input_layernorm", &blk.attn_norm)?;
            if let (Some(qn), Some(kn)) = (&blk.attn.q_norm, &blk.attn.k_norm) {
                norm("self_attn.q_norm", qn)?;
                norm("self_attn.k_norm", kn)?;
            }
            match (&blk.post_attn_norm, &blk.post_mlp_norm) {
                (Some(pa), Some(pm)) => {
                    norm("post_attention_layernorm", pa)?;
                    norm("pre_feedforward_layernorm", &blk.mlp_norm)?;
                    norm("post_feedforward_layernorm", pm)?;
                }
                _ => norm("post_attention_layernorm", &blk.mlp_norm)?,
            }
        }
        Ok(out)
    }
}
