//! The layers that hold weights: linear layers (dense, quantized or frozen, with an optional
//! low-rank path) and RMS norms.

use std::sync::Arc;

use candle_core::quantized::QMatMul;
use candle_core::{DType, Module, Tensor};

use super::kernels::{frozen_matmul_t, matmul_t};
use super::packed::{packed_matmul_t, Packed};
use super::{Config, LoadOptions};
use crate::weights::Weights;
use crate::{Error, Result};

/// A linear layer's frozen weight, dense or quantized.
#[derive(Debug, Clone)]
pub(super) enum Weight {
    Dense(Tensor), // [out, in]
    /// A dense f32 weight packed for the CPU kernel (`packed.rs`), the only copy held.
    Packed(Arc<Packed>),
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
pub(super) struct Linear {
    pub(super) w: Weight,
    pub(super) b: Option<Tensor>, // [out]
    pub(super) lora: Option<LoraPath>,
}

impl Linear {
    pub(super) fn load(
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

    pub(super) fn dense(w: Tensor) -> Self {
        Linear {
            w: Weight::Dense(w),
            b: None,
            lora: None,
        }
    }

    /// Packs a dense weight for the CPU kernel (a no-op where it cannot run: another device or
    /// dtype, a CPU without AVX-512, a quantized weight). Blocks pack their linears at load; the
    /// unembedding is not packed (an A/B score reads two of its rows).
    pub(super) fn pack(&mut self) -> Result<()> {
        if let Weight::Dense(w) = &self.w {
            if let Some(p) = Packed::new(w)? {
                self.w = Weight::Packed(p);
            }
        }
        Ok(())
    }

    /// The weight as a dense `[out, in]` tensor (a packed one unpacked), or `None` when it is
    /// quantized.
    pub(super) fn dense_weight(&self) -> Result<Option<Tensor>> {
        Ok(match &self.w {
            Weight::Dense(w) | Weight::Frozen(w) => Some(w.clone()),
            Weight::Packed(p) => Some(p.unpack()?),
            Weight::Quant(_) => None,
        })
    }

    /// `[out, in]`.
    pub(super) fn out_in(&self) -> Result<(usize, usize)> {
        Ok(match &self.w {
            Weight::Dense(w) | Weight::Frozen(w) => w.dims2()?,
            Weight::Packed(p) => p.out_in(),
            Weight::Quant(QMatMul::QTensor(q)) => q.shape().dims2()?,
            Weight::Quant(QMatMul::Tensor(t) | QMatMul::TensorF16(t)) => t.dims2()?,
        })
    }

    /// Folds a low-rank path into a dense weight, `W + scale * B A` (inference: one matmul per
    /// linear instead of three and two elementwise passes); quantized weights keep the path.
    pub(super) fn merge_lora(&mut self) -> Result<()> {
        let packed = matches!(self.w, Weight::Packed(_));
        if let (Weight::Dense(_) | Weight::Packed(_), Some(l)) = (&self.w, &self.lora) {
            let w = self.dense_weight()?.ok_or_else(|| Error::InvalidArgument {
                name: "merge_lora".into(),
                msg: "no dense weight".into(),
            })?; // [out, in]
            let delta = (l.b.matmul(&l.a)? * l.scale)?.to_dtype(w.dtype())?; // [out, in]
            self.w = Weight::Dense((w + delta)?);
            self.lora = None;
            if packed {
                self.pack()?;
            }
        }
        Ok(())
    }

    pub(super) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = match &self.w {
            Weight::Dense(w) => matmul_t(x, w)?,
            // The packed kernel has no backward: where a gradient can flow (the input is on
            // autograd's graph), candle's matmul on the weight unpacked.
            Weight::Packed(p) => {
                if !x.track_op() && x.device().is_cpu() && x.dtype() == DType::F32 {
                    packed_matmul_t(x, p)?
                } else {
                    matmul_t(x, &p.unpack()?.to_device(x.device())?.to_dtype(x.dtype())?)?
                }
            }
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

pub(super) fn check_shape(name: &str, ws: &Weights, got: &[usize], want: &[usize]) -> Result<()> {
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
pub(super) struct RmsNorm {
    pub(super) w: Tensor,
    eps: f32,
}

impl RmsNorm {
    pub(super) fn load(
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
    pub(super) fn scale(&self, x: &Tensor) -> Result<Tensor> {
        let x32 = x.to_dtype(DType::F32)?; // [.., d]
        let ms = x32.sqr()?.mean_keepdim(candle_core::D::Minus1)?; // [.., 1]
        Ok((ms + self.eps as f64)?.sqrt()?.to_dtype(x.dtype())?)
    }

    /// The norm with a given scale: `x / scale * w` (`scale` `[.., 1]`).
    pub(super) fn with_scale(&self, x: &Tensor, scale: &Tensor) -> Result<Tensor> {
        Ok(x.broadcast_div(scale)?.broadcast_mul(&self.w)?)
    }

    /// `grad`: use plain tensor ops that autograd can differentiate (candle's fused kernel has
    /// no backward pass).
    pub(super) fn forward(&self, x: &Tensor, grad: bool) -> Result<Tensor> {
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
