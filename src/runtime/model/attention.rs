//! Grouped-query attention with rotary positions, optional q/k norms and a KV cache; its hook
//! points (`attn.hook_q` ... `attn.hook_result`) fire through `Taps`.

use candle_core::Tensor;

use super::kernels::{rope_differentiable, rope_i_differentiable};
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
        let t = k.dim(2)?;
        let rep = h / kvh;
        // Grouped-query attention without copying keys: fold each kv head's query heads into rows.
        let q = (q * self.scale)?.reshape((b, kvh, rep * sq, hd))?; // [b, kvh, rep*sq, hd]
        let att = q.matmul(&k.t()?)?.reshape((b, h, sq, t))?; // [b, h, sq, t]
        let att = match mask {
            Some(m) => att.broadcast_add(&m.narrow(2, s - sq, sq)?)?,
            None => att,
        }; // [b, h, sq, t]
        let att = taps.fire(HookPoint::AttnScores(l), att)?; // [b, h, sq, t]
        let att = if grad {
            candle_nn::ops::softmax(&att, candle_core::D::Minus1)?
        } else {
            candle_nn::ops::softmax_last_dim(&att)?
        }; // [b, h, sq, t]
        let att = taps.fire(HookPoint::AttnPattern(l), att)?; // [b, h, sq, t]
        let y = att.reshape((b, kvh, rep * sq, t))?.matmul(&v)?; // [b, kvh, rep*sq, hd]
        let z = y.reshape((b, h, sq, hd))?.transpose(1, 2)?; // [b, sq, h, hd]
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
