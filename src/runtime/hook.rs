//! Hook points and per-call hooks: observe or replace activations inside a forward pass.
//!
//! A [`HookPoint`] names a place in the residual stream with TransformerLens's text form
//! (`hook_embed`, `blocks.3.hook_resid_post`, `ln_final.hook_normalized`, ...). A [`Hook`] is called
//! with the activation at that point (`[batch, pos, d_model]`, the model's dtype) and a [`HookCtx`]
//! describing padding and positions; it returns `None` to observe or `Some(tensor)` to replace.
//! [`Hooks`] gathers hooks for one call and is dropped when the call returns: models hold no hooks.
//!
//! Built-in interventions: [`AddVector`], [`ProjectOut`], [`Patch`], [`Zero`]; recording is done by
//! [`ActivationCache`](crate::ActivationCache), itself a hook. Interventions never touch padding.
//!
//! ```
//! use puppetlens::{HookPoint, Hooks, AddVector, Positions};
//! use candle_core::{Device, Tensor};
//! let p: HookPoint = "blocks.2.hook_resid_post".parse()?;
//! assert_eq!(p, HookPoint::ResidPost(2));
//! assert_eq!(p.to_string(), "blocks.2.hook_resid_post");
//! let v = Tensor::ones(8, candle_core::DType::F32, &Device::Cpu)?;
//! let mut hooks = Hooks::new();
//! hooks.add(p, AddVector::new(v, 4.0).at(Positions::All));
//! assert_eq!(hooks.len(), 1);
//! # Ok::<(), puppetlens::Error>(())
//! ```

use std::fmt;
use std::str::FromStr;

use candle_core::{DType, Device, Tensor, D};

use crate::{Error, Result};

/// A named place in the forward pass, printed and parsed as TransformerLens names it.
///
/// Residual stream: `hook_embed`, `blocks.{l}.hook_resid_pre`, `hook_attn_out`, `hook_resid_mid`,
/// `hook_mlp_out`, `hook_resid_post`, `ln_final.hook_normalized` (all `[batch, pos, d_model]`).
/// Inside the blocks (shapes for a call over `pos` new columns, `keys` = all columns seen so far):
///
/// | point | shape |
/// |---|---|
/// | `blocks.{l}.ln1.hook_normalized`, `ln2.hook_normalized` | `[batch, pos, d_model]` |
/// | `attn.hook_q`, `attn.hook_rot_q`, `attn.hook_z` | `[batch, pos, head, d_head]` |
/// | `attn.hook_k`, `attn.hook_v`, `attn.hook_rot_k` | `[batch, pos, kv_head, d_head]` |
/// | `attn.hook_attn_scores`, `attn.hook_pattern` | `[batch, head, pos, keys]` |
/// | `attn.hook_result` | `[batch, pos, head, d_model]` |
/// | `mlp.hook_pre`, `mlp.hook_pre_linear`, `mlp.hook_post` | `[batch, pos, d_mlp]` |
/// | `ln_final.hook_scale` | `[batch, pos, 1]` |
///
/// Where they sit (TransformerLens's placement, with the architectures' quirks):
/// - `ln1`/`ln2.hook_normalized` are the pre-attention and pre-MLP norms' outputs, weight included
///   (what the next layer reads; TransformerLens with `fold_ln` folds that weight into the next
///   layer instead). `ln_final.hook_scale` is the final norm's `sqrt(mean(x^2) + eps)`: replacing it
///   changes the normalised output `x / scale * w`.
/// - `hook_q`/`hook_k`/`hook_v` are the projections' outputs (bias included), before Gemma 3's
///   per-head q/k norms; `hook_rot_q`/`hook_rot_k` are after the q/k norms and the rotary embedding.
///   Queries and keys are always in Hugging Face's split-halves rotary layout, also for GGUF Llama
///   checkpoints whose rows are stored interleaved (converted when hooked).
/// - `hook_attn_scores` are scaled and masked (causal, padding keys, Gemma 3's sliding window: `-inf`)
///   before the softmax; `hook_pattern` after it. A KV-cached step sees all `keys` columns.
///   Grouped-query models keep `kv_head` heads in `hook_k`/`hook_v`, as TransformerLens does.
/// - `hook_z` is the pattern-weighted values per query head; `hook_result` each head's part of the
///   output projection, computed only when something hooks it (the heads sum, plus any bias, to the
///   projection's output; Gemma 3's post-attention norm comes after, at `hook_attn_out`).
/// - `mlp.hook_pre` is the gate projection (before the activation), `mlp.hook_pre_linear` the up
///   projection, `mlp.hook_post` their gated product, the down projection's input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum HookPoint {
    /// `hook_embed`: token embeddings (after any embedding scale), `[batch, pos, d_model]`.
    Embed,
    /// `blocks.{l}.hook_resid_pre`: the residual entering block `l`.
    ResidPre(usize),
    /// `blocks.{l}.ln1.hook_normalized`: the pre-attention norm's output, `[batch, pos, d_model]`.
    Ln1Normalized(usize),
    /// `blocks.{l}.attn.hook_q`: query projections, `[batch, pos, head, d_head]`.
    AttnQ(usize),
    /// `blocks.{l}.attn.hook_k`: key projections, `[batch, pos, kv_head, d_head]`.
    AttnK(usize),
    /// `blocks.{l}.attn.hook_v`: value projections, `[batch, pos, kv_head, d_head]`.
    AttnV(usize),
    /// `blocks.{l}.attn.hook_rot_q`: queries after any q-norm and the rotary embedding.
    AttnRotQ(usize),
    /// `blocks.{l}.attn.hook_rot_k`: keys after any k-norm and the rotary embedding.
    AttnRotK(usize),
    /// `blocks.{l}.attn.hook_attn_scores`: scaled, masked scores, `[batch, head, pos, keys]`.
    AttnScores(usize),
    /// `blocks.{l}.attn.hook_pattern`: attention probabilities, `[batch, head, pos, keys]`.
    AttnPattern(usize),
    /// `blocks.{l}.attn.hook_z`: pattern-weighted values, `[batch, pos, head, d_head]`.
    AttnZ(usize),
    /// `blocks.{l}.attn.hook_result`: each head's output, `[batch, pos, head, d_model]`.
    AttnResult(usize),
    /// `blocks.{l}.hook_attn_out`: what attention adds to the residual (after any post-norm).
    AttnOut(usize),
    /// `blocks.{l}.hook_resid_mid`: the residual between attention and MLP.
    ResidMid(usize),
    /// `blocks.{l}.ln2.hook_normalized`: the pre-MLP norm's output, `[batch, pos, d_model]`.
    Ln2Normalized(usize),
    /// `blocks.{l}.mlp.hook_pre`: the gate projection, before the activation, `[batch, pos, d_mlp]`.
    MlpPre(usize),
    /// `blocks.{l}.mlp.hook_pre_linear`: the up projection, `[batch, pos, d_mlp]`.
    MlpPreLinear(usize),
    /// `blocks.{l}.mlp.hook_post`: the gated activation, `[batch, pos, d_mlp]`.
    MlpPost(usize),
    /// `blocks.{l}.hook_mlp_out`: what the MLP adds to the residual (after any post-norm).
    MlpOut(usize),
    /// `blocks.{l}.hook_resid_post`: the residual leaving block `l`.
    ResidPost(usize),
    /// `ln_final.hook_scale`: the final norm's root mean square, `[batch, pos, 1]`.
    FinalScale,
    /// `ln_final.hook_normalized`: the final norm's output, the unembedding's input.
    FinalNorm,
}

/// Each block's hook points in firing order, by their names after `blocks.{l}.`.
pub(crate) const BLOCK_HOOKS: [&str; 19] = [
    "hook_resid_pre",
    "ln1.hook_normalized",
    "attn.hook_q",
    "attn.hook_k",
    "attn.hook_v",
    "attn.hook_rot_q",
    "attn.hook_rot_k",
    "attn.hook_attn_scores",
    "attn.hook_pattern",
    "attn.hook_z",
    "attn.hook_result",
    "hook_attn_out",
    "hook_resid_mid",
    "ln2.hook_normalized",
    "mlp.hook_pre",
    "mlp.hook_pre_linear",
    "mlp.hook_post",
    "hook_mlp_out",
    "hook_resid_post",
];

impl HookPoint {
    /// Every hook point of a model with `n_layers` blocks, in the order they fire.
    pub fn all(n_layers: usize) -> Vec<HookPoint> {
        let mut v = Vec::with_capacity(3 + BLOCK_HOOKS.len() * n_layers);
        v.push(HookPoint::Embed);
        for l in 0..n_layers {
            v.extend((0..BLOCK_HOOKS.len()).filter_map(|i| Self::block_point(l, i)));
        }
        v.extend([HookPoint::FinalScale, HookPoint::FinalNorm]);
        v
    }

    /// The residual-stream points only (embed, resid_pre/attn_out/resid_mid/mlp_out/resid_post per
    /// block, the final norm's output), in firing order.
    pub fn residual(n_layers: usize) -> Vec<HookPoint> {
        Self::all(n_layers)
            .into_iter()
            .filter(|p| p.is_residual())
            .collect()
    }

    /// True for the points in the residual stream (`[batch, pos, d_model]` values the blocks add to).
    pub fn is_residual(&self) -> bool {
        matches!(
            self,
            HookPoint::Embed
                | HookPoint::ResidPre(_)
                | HookPoint::AttnOut(_)
                | HookPoint::ResidMid(_)
                | HookPoint::MlpOut(_)
                | HookPoint::ResidPost(_)
                | HookPoint::FinalNorm
        )
    }

    /// The `i`-th point of block `l` in firing order.
    pub(crate) fn block_point(l: usize, i: usize) -> Option<HookPoint> {
        use HookPoint::*;
        Some(match i {
            0 => ResidPre(l),
            1 => Ln1Normalized(l),
            2 => AttnQ(l),
            3 => AttnK(l),
            4 => AttnV(l),
            5 => AttnRotQ(l),
            6 => AttnRotK(l),
            7 => AttnScores(l),
            8 => AttnPattern(l),
            9 => AttnZ(l),
            10 => AttnResult(l),
            11 => AttnOut(l),
            12 => ResidMid(l),
            13 => Ln2Normalized(l),
            14 => MlpPre(l),
            15 => MlpPreLinear(l),
            16 => MlpPost(l),
            17 => MlpOut(l),
            18 => ResidPost(l),
            _ => return None,
        })
    }

    /// `(block, index in the block's firing order)` of a block's point.
    pub(crate) fn block_slot(&self) -> Option<(usize, usize)> {
        use HookPoint::*;
        Some(match *self {
            Embed | FinalScale | FinalNorm => return None,
            ResidPre(l) => (l, 0),
            Ln1Normalized(l) => (l, 1),
            AttnQ(l) => (l, 2),
            AttnK(l) => (l, 3),
            AttnV(l) => (l, 4),
            AttnRotQ(l) => (l, 5),
            AttnRotK(l) => (l, 6),
            AttnScores(l) => (l, 7),
            AttnPattern(l) => (l, 8),
            AttnZ(l) => (l, 9),
            AttnResult(l) => (l, 10),
            AttnOut(l) => (l, 11),
            ResidMid(l) => (l, 12),
            Ln2Normalized(l) => (l, 13),
            MlpPre(l) => (l, 14),
            MlpPreLinear(l) => (l, 15),
            MlpPost(l) => (l, 16),
            MlpOut(l) => (l, 17),
            ResidPost(l) => (l, 18),
        })
    }

    /// The block this point belongs to, if any.
    pub fn layer(&self) -> Option<usize> {
        self.block_slot().map(|(l, _)| l)
    }

    /// Firing order: a point with a smaller rank fires earlier in the forward pass.
    pub fn rank(&self) -> usize {
        match (self, self.block_slot()) {
            (_, Some((l, i))) => 1 + BLOCK_HOOKS.len() * l + i,
            (HookPoint::Embed, None) => 0,
            (HookPoint::FinalScale, None) => usize::MAX - 1,
            _ => usize::MAX,
        }
    }

    /// The axis of the activation that runs over token positions: 2 for the attention scores and
    /// pattern (`[batch, head, pos, keys]`, the query axis), 1 for every other point.
    pub fn pos_axis(&self) -> usize {
        match self {
            HookPoint::AttnScores(_) | HookPoint::AttnPattern(_) => 2,
            _ => 1,
        }
    }

    /// Checks that the point exists in a model with `n_layers` blocks.
    pub fn check(&self, n_layers: usize) -> Result<()> {
        match self.layer() {
            Some(layer) if layer >= n_layers => Err(Error::LayerOutOfRange { layer, n_layers }),
            _ => Ok(()),
        }
    }
}

impl fmt::Display for HookPoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self, self.block_slot()) {
            (_, Some((l, i))) => write!(f, "blocks.{l}.{}", BLOCK_HOOKS[i]),
            (HookPoint::Embed, None) => write!(f, "hook_embed"),
            (HookPoint::FinalScale, None) => write!(f, "ln_final.hook_scale"),
            _ => write!(f, "ln_final.hook_normalized"),
        }
    }
}

impl FromStr for HookPoint {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let bad = || Error::BadHookName {
            name: s.to_string(),
        };
        match s {
            "hook_embed" => return Ok(HookPoint::Embed),
            "ln_final.hook_scale" => return Ok(HookPoint::FinalScale),
            "ln_final.hook_normalized" => return Ok(HookPoint::FinalNorm),
            _ => {}
        }
        let rest = s.strip_prefix("blocks.").ok_or_else(bad)?;
        let (num, name) = rest.split_once('.').ok_or_else(bad)?;
        if num.is_empty() || !num.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        let l: usize = num.parse().map_err(|_| bad())?;
        let i = BLOCK_HOOKS
            .iter()
            .position(|n| *n == name)
            .ok_or_else(bad)?;
        Self::block_point(l, i).ok_or_else(bad)
    }
}

/// What a hook is told about the call it runs in.
///
/// Sequences are left-padded: in row `b`, columns before `pads[b]` (in whole-sequence coordinates)
/// are padding. With a KV cache, a call processes columns `offset..offset + seq_len` of the sequence.
#[derive(Debug)]
pub struct HookCtx<'a> {
    /// The point being fired.
    pub point: HookPoint,
    /// Padding mask of this call's tokens, `[batch, pos]`, 1.0 for real tokens and 0.0 for padding,
    /// in the activation's dtype and device.
    pub mask: &'a Tensor,
    /// Left-padding length of each row, in whole-sequence columns.
    pub pads: &'a [usize],
    /// How many columns of the sequence came before this call (0 for a plain forward).
    pub offset: usize,
}

impl HookCtx<'_> {
    /// Number of rows in the batch.
    pub fn batch_size(&self) -> usize {
        self.pads.len()
    }

    /// Number of columns this call processes.
    pub fn seq_len(&self) -> Result<usize> {
        Ok(self.mask.dim(1)?)
    }

    /// The token position (0 = first real token) of column `j` of this call in row `b`, or `None`
    /// for padding.
    pub fn position(&self, b: usize, j: usize) -> Option<usize> {
        (self.offset + j).checked_sub(self.pads[b])
    }

    /// A selector that broadcasts over the activation `like`: 1.0 where `positions` selects a real
    /// token, else 0.0, with the batch and position axes of `like` kept and every other axis of size
    /// 1 (`[batch, pos, 1]` for a residual activation, `[batch, pos, 1, 1]` for `hook_z`,
    /// `[batch, 1, pos, 1]` for `hook_pattern`), in the dtype and on the device of `like`.
    pub fn selector(&self, positions: &Positions, like: &Tensor) -> Result<Tensor> {
        let (b, s) = self.mask.dims2()?;
        let sel = match positions {
            Positions::All => self.mask.clone(),
            _ => {
                let mut host = vec![0f32; b * s];
                for (row, chunk) in host.chunks_mut(s).enumerate() {
                    for (j, v) in chunk.iter_mut().enumerate() {
                        if let Some(p) = self.position(row, j) {
                            if positions.selects(p, j, s) {
                                *v = 1.0;
                            }
                        }
                    }
                }
                Tensor::from_vec(host, (b, s), like.device())?.to_dtype(like.dtype())?
            }
        };
        let axis = self.point.pos_axis();
        let mut shape = vec![1usize; like.rank().max(axis + 1)];
        shape[0] = b;
        shape[axis] = s;
        Ok(sel.to_dtype(like.dtype())?.reshape(shape)?) // [batch, .., pos, .., 1]
    }
}

/// Which token positions an intervention touches. Padding is never touched.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Positions {
    /// Every real token.
    #[default]
    All,
    /// The last column of each call: the last prompt token, then each generated token.
    Last,
    /// These token positions (0 = each sequence's first real token).
    At(Vec<usize>),
    /// Token positions from this one on (e.g. the prompt length: only generated tokens).
    From(usize),
}

impl Positions {
    fn selects(&self, pos: usize, col: usize, cols: usize) -> bool {
        match self {
            Positions::All => true,
            Positions::Last => col + 1 == cols,
            Positions::At(v) => v.contains(&pos),
            Positions::From(start) => pos >= *start,
        }
    }
}

/// A function called with the activation at a hook point.
///
/// Return `Ok(None)` to leave the activation as it is, or `Ok(Some(t))` to replace it with `t`
/// (same shape, dtype and device). Closures become hooks through [`hook_fn`], and `&mut H` is a
/// hook for any hook `H`.
pub trait Hook {
    /// Observes or replaces `x` (`[batch, pos, d_model]` on the residual stream; see [`HookPoint`]
    /// for the shapes inside the blocks).
    fn call(&mut self, x: &Tensor, ctx: &HookCtx) -> Result<Option<Tensor>>;
}

/// A closure as a hook: `hook_fn(|x, ctx| { ...; Ok(None) })`.
pub struct FnHook<F>(pub F);

impl<F> fmt::Debug for FnHook<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FnHook")
    }
}

/// Wraps a closure `FnMut(&Tensor, &HookCtx) -> Result<Option<Tensor>>` as a [`Hook`].
pub fn hook_fn<F>(f: F) -> FnHook<F>
where
    F: FnMut(&Tensor, &HookCtx) -> Result<Option<Tensor>>,
{
    FnHook(f)
}

impl<F> Hook for FnHook<F>
where
    F: FnMut(&Tensor, &HookCtx) -> Result<Option<Tensor>>,
{
    fn call(&mut self, x: &Tensor, ctx: &HookCtx) -> Result<Option<Tensor>> {
        (self.0)(x, ctx)
    }
}

impl<H: Hook + ?Sized> Hook for &mut H {
    fn call(&mut self, x: &Tensor, ctx: &HookCtx) -> Result<Option<Tensor>> {
        (**self).call(x, ctx)
    }
}

impl<H: Hook + ?Sized> Hook for Box<H> {
    fn call(&mut self, x: &Tensor, ctx: &HookCtx) -> Result<Option<Tensor>> {
        (**self).call(x, ctx)
    }
}

enum Selector<'h> {
    Point(HookPoint),
    Where(Box<dyn Fn(HookPoint) -> bool + 'h>),
}

impl Selector<'_> {
    fn matches(&self, p: HookPoint) -> bool {
        match self {
            Selector::Point(q) => *q == p,
            Selector::Where(f) => f(p),
        }
    }
}

/// The hooks for one forward or generation call, fired in the order they were added.
#[derive(Default)]
pub struct Hooks<'h> {
    entries: Vec<(Selector<'h>, Box<dyn Hook + 'h>)>,
}

impl fmt::Debug for Hooks<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hooks")
            .field("len", &self.entries.len())
            .finish()
    }
}

impl<'h> Hooks<'h> {
    /// No hooks: a forward with these is a plain forward.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `hook` at `point`.
    pub fn add(&mut self, point: HookPoint, hook: impl Hook + 'h) -> &mut Self {
        self.entries.push((Selector::Point(point), Box::new(hook)));
        self
    }

    /// Adds `hook` at every point for which `pred` is true (e.g. all `hook_resid_post`).
    pub fn add_where(
        &mut self,
        pred: impl Fn(HookPoint) -> bool + 'h,
        hook: impl Hook + 'h,
    ) -> &mut Self {
        self.entries
            .push((Selector::Where(Box::new(pred)), Box::new(hook)));
        self
    }

    /// Builder form of [`Hooks::add`].
    pub fn with(mut self, point: HookPoint, hook: impl Hook + 'h) -> Self {
        self.add(point, hook);
        self
    }

    /// Number of hooks added.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when no hook was added.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether any hook fires at `p`.
    pub fn wants(&self, p: HookPoint) -> bool {
        self.entries.iter().any(|(s, _)| s.matches(p))
    }

    /// The last of `points` (in firing order) at which some hook fires.
    pub fn last_point(&self, points: &[HookPoint]) -> Option<HookPoint> {
        points.iter().rev().copied().find(|p| self.wants(*p))
    }

    /// Checks every hook's point against a model with `n_layers` blocks.
    pub(crate) fn check(&self, n_layers: usize) -> Result<()> {
        for (s, _) in &self.entries {
            if let Selector::Point(p) = s {
                p.check(n_layers)?;
            }
        }
        Ok(())
    }

    /// Runs the hooks registered at `ctx.point` on `x`, returning the (possibly replaced) value.
    /// This is the one place where hooks fire.
    pub(crate) fn fire(&mut self, x: Tensor, ctx: &HookCtx) -> Result<Tensor> {
        let mut x = x;
        for (sel, hook) in self.entries.iter_mut() {
            if !sel.matches(ctx.point) {
                continue;
            }
            if let Some(y) = hook.call(&x, ctx)? {
                check_like(&y, &x, &ctx.point.to_string())?;
                x = y;
            }
        }
        Ok(x)
    }
}

/// Errors unless `y` has the shape, dtype and device of `x`.
pub(crate) fn check_like(y: &Tensor, x: &Tensor, what: &str) -> Result<()> {
    if y.dims() != x.dims() {
        return Err(Error::Shape {
            what: format!("replacement at {what}"),
            expected: format!("{:?}", x.dims()),
            got: format!("{:?}", y.dims()),
        });
    }
    check_dtype_device(y, x.dtype(), x.device(), &format!("replacement at {what}"))
}

/// Errors unless `t` has `dtype` and lives on `device`.
pub(crate) fn check_dtype_device(
    t: &Tensor,
    dtype: DType,
    device: &Device,
    what: &str,
) -> Result<()> {
    if t.dtype() != dtype {
        return Err(Error::DtypeOrDevice {
            what: what.to_string(),
            expected: format!("dtype {dtype:?}"),
            got: format!("dtype {:?}", t.dtype()),
        });
    }
    if !t.device().same_device(device) {
        return Err(Error::DtypeOrDevice {
            what: what.to_string(),
            expected: format!("device {device:?}"),
            got: format!("device {:?}", t.device()),
        });
    }
    Ok(())
}

/// Checks that a direction is a `[d_model]` vector matching the activation `x` (`[batch, pos, d_model]`).
fn check_vector(v: &Tensor, x: &Tensor, what: &str) -> Result<()> {
    let d = x.dim(D::Minus1)?;
    if v.dims() != [d] {
        return Err(Error::Shape {
            what: what.to_string(),
            expected: format!("[{d}] (d_model)"),
            got: format!("{:?}", v.dims()),
        });
    }
    check_dtype_device(v, x.dtype(), x.device(), what)
}

/// Adds `scale * vector` to the activation at chosen positions (repeng / CAA steering).
#[derive(Debug, Clone)]
pub struct AddVector {
    /// The direction, `[d_model]`, in the model's dtype and device.
    pub vector: Tensor,
    /// Multiplier applied to `vector`.
    pub scale: f64,
    /// Where to add it.
    pub positions: Positions,
}

impl AddVector {
    /// Adds `scale * vector` at every real token.
    pub fn new(vector: Tensor, scale: f64) -> Self {
        Self {
            vector,
            scale,
            positions: Positions::All,
        }
    }

    /// Restricts the intervention to `positions`.
    pub fn at(mut self, positions: Positions) -> Self {
        self.positions = positions;
        self
    }
}

impl Hook for AddVector {
    fn call(&mut self, x: &Tensor, ctx: &HookCtx) -> Result<Option<Tensor>> {
        check_vector(&self.vector, x, &format!("vector added at {}", ctx.point))?;
        let sel = ctx.selector(&self.positions, x)?; // [batch, pos, 1]
        let v = (&self.vector * self.scale)?.reshape((1, 1, ()))?; // [1, 1, d_model]
        let y = (x + sel.broadcast_mul(&v)?)?; // [batch, pos, d_model]
        Ok(Some(y))
    }
}

/// Projects a direction out of the activation: `x - (x . d) d` with `d` of unit norm
/// (directional ablation).
#[derive(Debug, Clone)]
pub struct ProjectOut {
    /// The unit direction, `[d_model]`.
    pub direction: Tensor,
    /// Where to ablate.
    pub positions: Positions,
}

impl ProjectOut {
    /// Ablates `direction` (normalised here) at every real token.
    pub fn new(direction: &Tensor) -> Result<Self> {
        let norm = direction
            .sqr()?
            .sum_all()?
            .sqrt()?
            .to_dtype(DType::F64)?
            .to_scalar::<f64>()?;
        if !norm.is_finite() || norm == 0.0 {
            return Err(Error::InvalidArgument {
                name: "direction".into(),
                msg: format!("cannot project out a direction of norm {norm}"),
            });
        }
        Ok(Self {
            direction: (direction / norm)?,
            positions: Positions::All,
        })
    }

    /// Restricts the intervention to `positions`.
    pub fn at(mut self, positions: Positions) -> Self {
        self.positions = positions;
        self
    }
}

impl Hook for ProjectOut {
    fn call(&mut self, x: &Tensor, ctx: &HookCtx) -> Result<Option<Tensor>> {
        check_vector(
            &self.direction,
            x,
            &format!("direction ablated at {}", ctx.point),
        )?;
        let sel = ctx.selector(&self.positions, x)?; // [batch, pos, 1]
        let d = self.direction.reshape((1, 1, ()))?; // [1, 1, d_model]
        let coef = x.broadcast_mul(&d)?.sum_keepdim(D::Minus1)?; // [batch, pos, 1]
        let y = (x - coef.mul(&sel)?.broadcast_mul(&d)?)?; // [batch, pos, d_model]
        Ok(Some(y))
    }
}

/// Replaces the activation with another run's (activation patching).
///
/// `source` has the activation's shape with whole-sequence columns on its position axis (as an
/// [`ActivationCache`](crate::ActivationCache) recorded on a batch of the same shape holds it:
/// `[batch, seq, d_model]` for the residual, `[batch, seq, head, d_head]` for `hook_z`,
/// `[batch, head, seq, seq]` for `hook_pattern`); the columns this call covers are taken from it.
#[derive(Debug, Clone)]
pub struct Patch {
    /// The activation to write in, e.g. `[batch, seq, d_model]`.
    pub source: Tensor,
    /// Where to write it.
    pub positions: Positions,
}

impl Patch {
    /// Patches `source` in at every real token.
    pub fn new(source: Tensor) -> Self {
        Self {
            source,
            positions: Positions::All,
        }
    }

    /// Restricts the patch to `positions`.
    pub fn at(mut self, positions: Positions) -> Self {
        self.positions = positions;
        self
    }
}

impl Hook for Patch {
    fn call(&mut self, x: &Tensor, ctx: &HookCtx) -> Result<Option<Tensor>> {
        let axis = ctx.point.pos_axis();
        let s = x.dim(axis)?;
        let bad = || Error::Shape {
            what: format!("patch source at {}", ctx.point),
            expected: format!(
                "{:?} with >= {} columns on axis {axis}",
                x.dims(),
                ctx.offset + s
            ),
            got: format!("{:?}", self.source.dims()),
        };
        if self.source.rank() != x.rank() || self.source.dim(axis)? < ctx.offset + s {
            return Err(bad());
        }
        let mut src = self.source.narrow(axis, ctx.offset, s)?; // like x
        if axis == 2 {
            // Scores and patterns: this call's keys are the first `keys` columns of the source's.
            let keys = x.dim(3)?;
            if src.dim(3)? < keys {
                return Err(bad());
            }
            src = src.narrow(3, 0, keys)?; // [batch, head, pos, keys]
        }
        if src.dims() != x.dims() {
            return Err(bad());
        }
        check_dtype_device(
            &src,
            x.dtype(),
            x.device(),
            &format!("patch source at {}", ctx.point),
        )?;
        let sel = ctx.selector(&self.positions, x)?; // like x, 1 on other axes
                                                     // Exact selection (sel is 0 or 1): src * sel + x * (1 - sel).
        let y = (src.broadcast_mul(&sel)? + x.broadcast_mul(&(1.0 - &sel)?)?)?; // like x
        Ok(Some(y))
    }
}

/// Sets the activation to zero at chosen positions (zero ablation).
#[derive(Debug, Clone, Default)]
pub struct Zero {
    /// Where to zero.
    pub positions: Positions,
}

impl Hook for Zero {
    fn call(&mut self, x: &Tensor, ctx: &HookCtx) -> Result<Option<Tensor>> {
        let sel = ctx.selector(&self.positions, x)?; // like x, 1 on other axes
        let keep = (1.0 - sel)?; // like sel
        Ok(Some(x.broadcast_mul(&keep)?))
    }
}

/// Ablates chosen units of an activation: heads at `attn.hook_z`, `hook_q`/`hook_k`/`hook_v`,
/// `hook_result`, `hook_attn_scores` or `hook_pattern`, neurons at the `mlp.hook_*` points (any unit
/// of axis 2, or of the head axis 1 for scores and patterns), set to zero or to a mean taken over a
/// reference set ([`Ablate::mean_of`]). Padding and unselected positions are never touched.
///
/// ```
/// use puppetlens::{Ablate, HookPoint, Hooks};
/// let mut hooks = Hooks::new();
/// hooks.add(HookPoint::AttnZ(3), Ablate::heads([0, 5])); // zero-ablate heads 0 and 5 of block 3
/// hooks.add(HookPoint::MlpPost(7), Ablate::neurons([1234])); // and one MLP neuron of block 7
/// # Ok::<(), puppetlens::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct Ablate {
    /// Indices on the unit axis (heads or neurons).
    pub units: Vec<usize>,
    /// Values to write instead of zero: the activation's shape without its batch and position axes
    /// (`[head, d_head]` at `hook_z`, `[d_mlp]` at `mlp.hook_post`), e.g. from [`Ablate::mean_of`].
    pub mean: Option<Tensor>,
    /// Where to ablate.
    pub positions: Positions,
}

impl Ablate {
    /// Zero-ablates these heads (at a per-head point such as `attn.hook_z`).
    pub fn heads(heads: impl IntoIterator<Item = usize>) -> Self {
        Self {
            units: heads.into_iter().collect(),
            mean: None,
            positions: Positions::All,
        }
    }

    /// Zero-ablates these neurons (at `mlp.hook_pre`, `hook_pre_linear` or `hook_post`).
    pub fn neurons(neurons: impl IntoIterator<Item = usize>) -> Self {
        Self::heads(neurons)
    }

    /// Writes `mean` (the activation's shape without batch and positions) instead of zero.
    pub fn with_mean(mut self, mean: Tensor) -> Self {
        self.mean = Some(mean);
        self
    }

    /// Restricts the ablation to `positions`.
    pub fn at(mut self, positions: Positions) -> Self {
        self.positions = positions;
        self
    }

    /// The mean of a recorded activation `acts` (`[batch, pos, ..]`, position axis 1) over the real
    /// tokens of `batch` (left padding excluded): the reference for mean ablation, shaped like one
    /// token's activation (`[head, d_head]` for `hook_z`).
    pub fn mean_of(acts: &Tensor, batch: &crate::Batch) -> Result<Tensor> {
        let (b, s) = (batch.len(), batch.seq_len());
        if acts.rank() < 3 || acts.dim(0)? != b || acts.dim(1)? != s {
            return Err(Error::Shape {
                what: "activations to average for mean ablation".into(),
                expected: format!("[{b}, {s}, ..] (the batch's rows and columns)"),
                got: format!("{:?}", acts.dims()),
            });
        }
        let n: usize = batch.lengths().iter().sum();
        let mut shape = vec![1usize; acts.rank()];
        (shape[0], shape[1]) = (b, s);
        let mask = batch
            .real_mask(acts.device(), acts.dtype())?
            .reshape(shape)?; // [batch, pos, 1, ..]
        let sum = acts.broadcast_mul(&mask)?.sum(1)?.sum(0)?; // [..]
        Ok((sum / n.max(1) as f64)?)
    }
}

impl Hook for Ablate {
    fn call(&mut self, x: &Tensor, ctx: &HookCtx) -> Result<Option<Tensor>> {
        let axis = if ctx.point.pos_axis() == 2 { 1 } else { 2 };
        if x.rank() <= axis {
            return Err(Error::InvalidArgument {
                name: "Ablate".into(),
                msg: format!("{} has no unit axis (shape {:?})", ctx.point, x.dims()),
            });
        }
        let n = x.dim(axis)?;
        if let Some(&u) = self.units.iter().find(|&&u| u >= n) {
            return Err(Error::IndexOutOfRange {
                what: format!("unit to ablate at {} (axis {axis})", ctx.point),
                index: u,
                len: n,
            });
        }
        let mut unit = vec![0f32; n];
        self.units.iter().for_each(|&u| unit[u] = 1.0);
        let mut shape = vec![1usize; x.rank()];
        shape[axis] = n;
        let unit = Tensor::from_vec(unit, shape, x.device())?.to_dtype(x.dtype())?; // 1 on the unit axis
        let sel = ctx.selector(&self.positions, x)?.broadcast_mul(&unit)?; // 1 where ablated
        let fill = match &self.mean {
            None => x.zeros_like()?,
            Some(m) => {
                let per_token = &x.dims()[2..];
                if axis != 2 || m.dims() != per_token {
                    return Err(Error::Shape {
                        what: format!("mean for ablation at {}", ctx.point),
                        expected: format!("{per_token:?} (one token's activation)"),
                        got: format!("{:?}", m.dims()),
                    });
                }
                check_dtype_device(m, x.dtype(), x.device(), "mean for ablation")?;
                m.unsqueeze(0)?.unsqueeze(0)?.broadcast_as(x.shape())? // like x
            }
        };
        let y = (fill.broadcast_mul(&sel)? + x.broadcast_mul(&(1.0 - &sel)?)?)?; // like x
        Ok(Some(y))
    }
}

/// Attention knockout (Geva et al. 2023): at `attn.hook_attn_scores`, the chosen queries may not
/// attend to the chosen key positions (their scores become `-inf` before the softmax). A token's
/// edge to itself is kept (a query with no key would have no distribution).
///
/// ```
/// use puppetlens::{HookPoint, Hooks, Knockout, Positions};
/// let mut hooks = Hooks::new();
/// // the last token may not read positions 2 and 3 in block 10, any head
/// hooks.add(HookPoint::AttnScores(10), Knockout::new(Positions::Last, [2, 3]));
/// # Ok::<(), puppetlens::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct Knockout {
    /// The queries whose edges are cut.
    pub queries: Positions,
    /// The key token positions (0 = first real token) they may not read.
    pub keys: Vec<usize>,
    /// Only these heads (all when `None`).
    pub heads: Option<Vec<usize>>,
}

impl Knockout {
    /// Cuts the edges from `queries` to the key positions `keys` in every head.
    pub fn new(queries: Positions, keys: impl IntoIterator<Item = usize>) -> Self {
        Self {
            queries,
            keys: keys.into_iter().collect(),
            heads: None,
        }
    }

    /// Restricts the knockout to these heads.
    pub fn heads(mut self, heads: impl IntoIterator<Item = usize>) -> Self {
        self.heads = Some(heads.into_iter().collect());
        self
    }
}

impl Hook for Knockout {
    fn call(&mut self, x: &Tensor, ctx: &HookCtx) -> Result<Option<Tensor>> {
        if !matches!(ctx.point, HookPoint::AttnScores(_)) {
            return Err(Error::InvalidArgument {
                name: "Knockout".into(),
                msg: format!(
                    "attention knockout acts on blocks.{{l}}.attn.hook_attn_scores, not on {}",
                    ctx.point
                ),
            });
        }
        let (b, h, s, t) = x.dims4()?;
        let heads: Vec<usize> = match &self.heads {
            Some(v) => {
                if let Some(&bad) = v.iter().find(|&&i| i >= h) {
                    return Err(Error::IndexOutOfRange {
                        what: format!("head to knock out at {}", ctx.point),
                        index: bad,
                        len: h,
                    });
                }
                v.clone()
            }
            None => (0..h).collect(),
        };
        let mut cut = vec![0f32; b * h * s * t];
        let mut any = false;
        for row in 0..b {
            let pad = ctx.pads[row];
            for j in 0..s {
                let Some(qpos) = ctx.position(row, j) else {
                    continue; // padding query
                };
                if !self.queries.selects(qpos, j, s) {
                    continue;
                }
                for &kpos in &self.keys {
                    let col = pad + kpos;
                    if kpos == qpos || col >= t {
                        continue;
                    }
                    for &hh in &heads {
                        cut[((row * h + hh) * s + j) * t + col] = f32::NEG_INFINITY;
                        any = true;
                    }
                }
            }
        }
        if !any {
            return Ok(None); // nothing to cut: the scores go on unchanged
        }
        let cut = Tensor::from_vec(cut, (b, h, s, t), x.device())?.to_dtype(x.dtype())?; // [b, h, pos, keys]
        Ok(Some((x + cut)?))
    }
}
