//! The gated MLP, `down(act(gate x) * up x)`; its hook points (`mlp.hook_pre`,
//! `mlp.hook_pre_linear`, `mlp.hook_post`) fire through `Taps`.

use candle_core::{DType, Tensor};

use super::kernels::GatedAct;
use super::layers::Linear;
use super::taps::{Flow, Taps};
use super::Activation;
use crate::hook::HookPoint;

/// One block's MLP.
#[derive(Debug, Clone)]
pub(super) struct Mlp {
    pub(super) gate: Linear,
    pub(super) up: Linear,
    pub(super) down: Linear,
    pub(super) act: Activation,
}

impl Mlp {
    /// Block `l`'s MLP of `x`, `[b, s, d_model] -> [b, s, d_model]`.
    ///
    /// `grad`: plain tensor ops that autograd can differentiate (the fused gate kernel has no
    /// backward pass).
    pub(super) fn forward(
        &self,
        l: usize,
        x: &Tensor,
        grad: bool,
        taps: &mut Taps,
    ) -> Flow<Tensor> {
        let g = taps.fire(HookPoint::MlpPre(l), self.gate.forward(x)?)?; // [b, s, d_mlp]
        let u = taps.fire(HookPoint::MlpPreLinear(l), self.up.forward(x)?)?; // [b, s, d_mlp]
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
            }; // [b, s, d_mlp]
            (g * u)? // [b, s, d_mlp]
        };
        let h = taps.fire(HookPoint::MlpPost(l), h)?; // [b, s, d_mlp]
        Ok(self.down.forward(&h)?) // [b, s, d_model]
    }
}
