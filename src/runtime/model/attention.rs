//! Grouped-query attention with rotary positions, optional q/k norms and a KV cache; its hook
//! points (`attn.hook_q` ... `attn.hook_result`) fire through `Taps`.

use candle_core::{DType, Tensor};

use super::kernels::{rope_differentiable, rope_i_differentiable, CausalAttn};
use super::layers::{Linear, RmsNorm};
use super::rope::Rope;
use super::taps::{Flow, Taps};
use crate::hook::HookPoint;
use crate::Result;

/// One block's attention.
#[derive(Debug, Clone)]
pub(super) struct Attention {
    pub(super) q: Linear,
    pub(super) k: Linear,
    pub(super) v: Linear,
    pub(super) o: Linear,
    pub(super) q_norm: Option<RmsNorm>,
    pub(super) k_norm: Option<RmsNorm>,
    pub(super) n_heads: usize,
    pub(super) n_kv_heads: usize,
    pub(super) head_dim: usize,
    pub(super) scale: f64,
    /// Rotary pairs are adjacent (GGUF Llama's row order) rather than split halves.
    pub(super) interleaved: bool,
}

impl Attention {
    /// Block `l`'s attention of `x`, `[b, s, d_model] -> [b, sq, d_model]`; `mask` is additive
    /// (`[b, 1, s, t]`), `cache` this block's keys and values of earlier columns (extended here).
    /// With `last_only` only the last column queries (`sq` = 1; keys and values still come from
    /// every column): the last block of a forward that reads only the last column's output, with
    /// no hook in it (its hooks at queries, scores and outputs would see one column).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn forward(
        &self,
        l: usize,
        x: &Tensor, // [b, s, d_model]
        rope: &Rope,
        mask: Option<&Tensor>,
        cache: Option<&mut Option<(Tensor, Tensor)>>,
        grad: bool,
        last_only: bool,
        taps: &mut Taps,
    ) -> Flow<Tensor> {
        let (b, s, _) = x.dims3()?;
        let (h, kvh, hd) = (self.n_heads, self.n_kv_heads, self.head_dim);
        let il = self.interleaved;
        let sq = if last_only { 1 } else { s };
        let xq = x.narrow(1, s - sq, sq)?; // [b, sq, d_model]
        let q = self.q.forward(&xq)?.reshape((b, sq, h, hd))?; // [b, sq, h, hd]
        let q = taps
            .fire_rotary(HookPoint::AttnQ(l), q, il)?
            .transpose(1, 2)?
            .contiguous()?; // [b, h, sq, hd]
        let k = self.k.forward(x)?.reshape((b, s, kvh, hd))?; // [b, s, kvh, hd]
        let k = taps
            .fire_rotary(HookPoint::AttnK(l), k, il)?
            .transpose(1, 2)?
            .contiguous()?; // [b, kvh, s, hd]
        let v = self.v.forward(x)?.reshape((b, s, kvh, hd))?; // [b, s, kvh, hd]
        let v = taps
            .fire(HookPoint::AttnV(l), v)?
            .transpose(1, 2)?
            .contiguous()?; // [b, kvh, s, hd]
        let q = match &self.q_norm {
            Some(n) => n.forward(&q, grad)?,
            None => q,
        }; // [b, h, sq, hd]
        let k = match &self.k_norm {
            Some(n) => n.forward(&k, grad)?,
            None => k,
        }; // [b, kvh, s, hd]
        let rot = match (self.interleaved, grad) {
            (true, false) => candle_nn::rotary_emb::rope_i,
            (false, false) => candle_nn::rotary_emb::rope,
            (true, true) => rope_i_differentiable,
            (false, true) => rope_differentiable,
        };
        let (cos_q, sin_q) = if last_only {
            (
                rope.cos.narrow(1, s - 1, 1)?.contiguous()?,
                rope.sin.narrow(1, s - 1, 1)?.contiguous()?,
            ) // [b, 1, hd/2] x2
        } else {
            (rope.cos.clone(), rope.sin.clone()) // [b, s, hd/2] x2
        };
        let mut q = rot(&q, &cos_q, &sin_q)?; // [b, h, sq, hd]
        let mut k = rot(&k, &rope.cos, &rope.sin)?; // [b, kvh, s, hd]
        for (p, x) in [
            (HookPoint::AttnRotQ(l), &mut q),
            (HookPoint::AttnRotK(l), &mut k),
        ] {
            if taps.wants(p) {
                let seen = x.transpose(1, 2)?; // [b, s, heads, hd]
                let id = seen.id();
                let y = taps.fire_rotary(p, seen, il)?;
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
        }; // [b, kvh, t, hd] x2
           // One fused pass per query (CPU, f32, AVX-512, no gradient); where a hook reads the
           // scores or the pattern they are computed as well, and the fused pass still gives the
           // output unless a hook changed them (so that observing changes nothing).
        let fused = match mask {
            Some(m)
                if !grad
                    && q.device().is_cpu()
                    && q.dtype() == DType::F32
                    && super::packed::available() =>
            {
                Some(m.narrow(2, s - sq, sq)?.flatten_all()?.to_vec1::<f32>()?) // [b * sq * t]
            }
            _ => None,
        };
        let mut fused = fused.map(|mask| CausalAttn {
            scale: self.scale as f32,
            mask,
        });
        let mut att = None;
        if fused.is_none()
            || taps.wants(HookPoint::AttnScores(l))
            || taps.wants(HookPoint::AttnPattern(l))
        {
            let t = k.dim(2)?;
            let rep = h / kvh;
            // Grouped-query attention without copying keys: fold each kv head's query heads
            // into rows.
            let q = (&q * self.scale)?.reshape((b, kvh, rep * sq, hd))?; // [b, kvh, rep*sq, hd]
            let scores = q.matmul(&k.t()?)?.reshape((b, h, sq, t))?; // [b, h, sq, t]
            let scores = match mask {
                Some(m) => scores.broadcast_add(&m.narrow(2, s - sq, sq)?)?,
                None => scores,
            }; // [b, h, sq, t]
            let id = scores.id();
            let scores = taps.fire(HookPoint::AttnScores(l), scores)?; // [b, h, sq, t]
            let pattern = if grad {
                candle_nn::ops::softmax(&scores, candle_core::D::Minus1)?
            } else {
                candle_nn::ops::softmax_last_dim(&scores)?
            }; // [b, h, sq, t]
            let pid = pattern.id();
            let pattern = taps.fire(HookPoint::AttnPattern(l), pattern)?; // [b, h, sq, t]
            if scores.id() != id || pattern.id() != pid {
                fused = None;
            }
            att = Some(pattern.reshape((b, kvh, rep * sq, t))?); // [b, kvh, rep*sq, t]
        }
        let z = match (fused, att) {
            (Some(op), _) => {
                q.contiguous()?
                    .apply_op3_no_bwd(&k.contiguous()?, &v.contiguous()?, &op)?
            } // [b, sq, h, hd]
            (None, Some(att)) => {
                let y = att.matmul(&v)?; // [b, kvh, rep*sq, hd]
                y.reshape((b, h, sq, hd))?.transpose(1, 2)? // [b, sq, h, hd]
            }
            (None, None) => {
                return Err(crate::Error::InvalidArgument {
                    name: format!("layer {l} attention"),
                    msg: "neither the fused nor the plain attention ran".into(),
                }
                .into())
            }
        };
        let z = taps.fire(HookPoint::AttnZ(l), z)?; // [b, sq, h, hd]
        if taps.wants(HookPoint::AttnResult(l)) {
            let result = self.head_results(&z)?; // [b, s, h, d_model]
            let id = result.id();
            let result = taps.fire(HookPoint::AttnResult(l), result)?; // [b, s, h, d_model]
            if result.id() != id {
                let out = result.sum(2)?; // [b, s, d_model]
                return Ok(match &self.o.b {
                    Some(bias) => out.broadcast_add(bias)?,
                    None => out,
                }); // [b, s, d_model]
            }
        }
        Ok(self.o.forward(&z.reshape((b, sq, h * hd))?)?) // [b, sq, d_model]
    }

    /// Each head's part of the output projection, `[b, s, h, hd] -> [b, s, h, d_model]` (bias
    /// excluded): the projection applied to `z` with every other head's slice zeroed.
    pub(super) fn head_results(&self, z: &Tensor) -> Result<Tensor> {
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
