//! One decoder layer: attention then the MLP, each read from a normed residual stream and added
//! back to it, with the block's residual hook points fired between them.

use candle_core::Tensor;

use super::attention::Attention;
use super::layers::{Linear, RmsNorm};
use super::mlp::Mlp;
use super::names::Proj;
use super::rope::Rope;
use super::taps::{Flow, Taps};
use super::{AttnSpan, Config, LoadOptions};
use crate::hook::HookPoint;
use crate::weights::Weights;
use crate::Result;

/// One decoder layer.
#[derive(Debug, Clone)]
pub(super) struct Block {
    pub(super) layer: usize,
    pub(super) attn_norm: RmsNorm,
    pub(super) attn: Attention,
    pub(super) post_attn_norm: Option<RmsNorm>,
    pub(super) mlp_norm: RmsNorm,
    pub(super) mlp: Mlp,
    pub(super) post_mlp_norm: Option<RmsNorm>,
    pub(super) span: AttnSpan,
    pub(super) rope: usize, // index into the forward's rope tables
}

/// What every block of one forward call reads.
pub(super) struct Call {
    /// One rotary table per distinct table of the model (a block's `rope` indexes it).
    pub(super) ropes: Vec<Rope>,
    /// Additive attention masks `[b, 1, s, t]`, one per distinct span.
    pub(super) masks: Vec<(AttnSpan, Tensor)>,
    /// Plain tensor ops that autograd can differentiate (the training path).
    pub(super) grad: bool,
}

impl Block {
    /// Loads layer `l` (`model.layers.{l}.*`); `rope` indexes the model's distinct rotary tables.
    pub(super) fn load(
        ws: &Weights,
        l: usize,
        cfg: &Config,
        opts: &LoadOptions,
        rope: usize,
    ) -> Result<Block> {
        let (h, kvh, hd, d) = (cfg.n_heads, cfg.n_kv_heads, cfg.head_dim, cfg.d_model);
        let p = format!("model.layers.{l}");
        let norm = |n: &str, dim: usize| RmsNorm::load(ws, &format!("{p}.{n}"), dim, cfg, opts);
        let lin = |proj: Proj| {
            let (out_in, bias) = proj.shape(cfg);
            let mut lin = Linear::load(ws, &format!("{p}.{}", proj.hf()), out_in, bias, opts)?;
            lin.pack()?;
            Ok::<_, crate::Error>(lin)
        };
        let attn = Attention {
            q: lin(Proj::Q)?,
            k: lin(Proj::K)?,
            v: lin(Proj::V)?,
            o: lin(Proj::O)?,
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
            gate: lin(Proj::Gate)?,
            up: lin(Proj::Up)?,
            down: lin(Proj::Down)?,
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
        Ok(Block {
            layer: l,
            attn_norm: norm("input_layernorm", d)?,
            attn,
            post_attn_norm,
            mlp_norm,
            mlp,
            post_mlp_norm,
            span: cfg.layer_spans.get(l).copied().unwrap_or(AttnSpan::Global),
            rope,
        })
    }

    /// The layer's forward: `resid` (`[b, s, d_model]`) is its `hook_resid_pre`, or with
    /// `from_mid` its `hook_resid_mid` (a forward resumed there, attention skipped); returns
    /// `hook_resid_post`, `[b, s, d_model]`, or with `last_only` its last column only,
    /// `[b, 1, d_model]` (the keys and values still see every column; no hook of this block may
    /// be set then). `cache` is this block's slot of a KV cache.
    pub(super) fn forward(
        &self,
        resid: Tensor,
        from_mid: bool,
        last_only: bool,
        call: &Call,
        cache: Option<&mut Option<(Tensor, Tensor)>>,
        taps: &mut Taps,
    ) -> Flow<Tensor> {
        let (l, g) = (self.layer, call.grad);
        let s = resid.dim(1)?;
        let sq = if last_only { 1 } else { s };
        let resid_mid = if from_mid {
            taps.fire(HookPoint::ResidMid(l), resid)?
                .narrow(1, s - sq, sq)? // [b, sq, d_model]
        } else {
            let resid_pre = taps.fire(HookPoint::ResidPre(l), resid)?; // [b, s, d_model]
            let mask = call
                .masks
                .iter()
                .find(|(span, _)| *span == self.span)
                .map(|(_, m)| m); // [b, 1, s, t]
            let normed = taps.fire(
                HookPoint::Ln1Normalized(l),
                self.attn_norm.forward(&resid_pre, g)?,
            )?; // [b, s, d_model]
            let attn = self.attn.forward(
                l,
                &normed,
                &call.ropes[self.rope],
                mask,
                cache,
                g,
                last_only,
                taps,
            )?; // [b, sq, d_model]
            let attn = match &self.post_attn_norm {
                Some(n) => n.forward(&attn, g)?,
                None => attn,
            }; // [b, sq, d_model]
            let attn_out = taps.fire(HookPoint::AttnOut(l), attn)?; // [b, sq, d_model]
            let resid_pre = resid_pre.narrow(1, s - sq, sq)?; // [b, sq, d_model]
            taps.fire(HookPoint::ResidMid(l), (resid_pre + attn_out)?)? // [b, sq, d_model]
        };
        let normed = taps.fire(
            HookPoint::Ln2Normalized(l),
            self.mlp_norm.forward(&resid_mid, g)?,
        )?; // [b, sq, d_model]
        let mlp = self.mlp.forward(l, &normed, g, taps)?; // [b, sq, d_model]
        let mlp = match &self.post_mlp_norm {
            Some(n) => n.forward(&mlp, g)?,
            None => mlp,
        }; // [b, sq, d_model]
        let mlp_out = taps.fire(HookPoint::MlpOut(l), mlp)?; // [b, sq, d_model]
        taps.fire(HookPoint::ResidPost(l), (resid_mid + mlp_out)?) // [b, sq, d_model]
    }

    /// The linear `p`.
    pub(super) fn linear(&self, p: Proj) -> &Linear {
        match p {
            Proj::Q => &self.attn.q,
            Proj::K => &self.attn.k,
            Proj::V => &self.attn.v,
            Proj::O => &self.attn.o,
            Proj::Gate => &self.mlp.gate,
            Proj::Up => &self.mlp.up,
            Proj::Down => &self.mlp.down,
        }
    }

    /// The linear `p`, to change.
    pub(super) fn linear_mut(&mut self, p: Proj) -> &mut Linear {
        match p {
            Proj::Q => &mut self.attn.q,
            Proj::K => &mut self.attn.k,
            Proj::V => &mut self.attn.v,
            Proj::O => &mut self.attn.o,
            Proj::Gate => &mut self.mlp.gate,
            Proj::Up => &mut self.mlp.up,
            Proj::Down => &mut self.mlp.down,
        }
    }
}
