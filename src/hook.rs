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

/// A named place in the residual stream, printed and parsed as TransformerLens names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum HookPoint {
    /// `hook_embed`: token embeddings (after any embedding scale), `[batch, pos, d_model]`.
    Embed,
    /// `blocks.{l}.hook_resid_pre`: the residual entering block `l`.
    ResidPre(usize),
    /// `blocks.{l}.hook_attn_out`: what attention adds to the residual (after any post-norm).
    AttnOut(usize),
    /// `blocks.{l}.hook_resid_mid`: the residual between attention and MLP.
    ResidMid(usize),
    /// `blocks.{l}.hook_mlp_out`: what the MLP adds to the residual (after any post-norm).
    MlpOut(usize),
    /// `blocks.{l}.hook_resid_post`: the residual leaving block `l`.
    ResidPost(usize),
    /// `ln_final.hook_normalized`: the final norm's output, the unembedding's input.
    FinalNorm,
}

impl HookPoint {
    /// Every hook point of a model with `n_layers` blocks, in the order they fire.
    pub fn all(n_layers: usize) -> Vec<HookPoint> {
        let mut v = Vec::with_capacity(2 + 5 * n_layers);
        v.push(HookPoint::Embed);
        for l in 0..n_layers {
            v.extend([
                HookPoint::ResidPre(l),
                HookPoint::AttnOut(l),
                HookPoint::ResidMid(l),
                HookPoint::MlpOut(l),
                HookPoint::ResidPost(l),
            ]);
        }
        v.push(HookPoint::FinalNorm);
        v
    }

    /// The block this point belongs to, if any.
    pub fn layer(&self) -> Option<usize> {
        match *self {
            HookPoint::Embed | HookPoint::FinalNorm => None,
            HookPoint::ResidPre(l)
            | HookPoint::AttnOut(l)
            | HookPoint::ResidMid(l)
            | HookPoint::MlpOut(l)
            | HookPoint::ResidPost(l) => Some(l),
        }
    }

    /// Firing order: a point with a smaller rank fires earlier in the forward pass.
    pub fn rank(&self) -> usize {
        match *self {
            HookPoint::Embed => 0,
            HookPoint::ResidPre(l) => 1 + 5 * l,
            HookPoint::AttnOut(l) => 2 + 5 * l,
            HookPoint::ResidMid(l) => 3 + 5 * l,
            HookPoint::MlpOut(l) => 4 + 5 * l,
            HookPoint::ResidPost(l) => 5 + 5 * l,
            HookPoint::FinalNorm => usize::MAX,
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
        match *self {
            HookPoint::Embed => write!(f, "hook_embed"),
            HookPoint::ResidPre(l) => write!(f, "blocks.{l}.hook_resid_pre"),
            HookPoint::AttnOut(l) => write!(f, "blocks.{l}.hook_attn_out"),
            HookPoint::ResidMid(l) => write!(f, "blocks.{l}.hook_resid_mid"),
            HookPoint::MlpOut(l) => write!(f, "blocks.{l}.hook_mlp_out"),
            HookPoint::ResidPost(l) => write!(f, "blocks.{l}.hook_resid_post"),
            HookPoint::FinalNorm => write!(f, "ln_final.hook_normalized"),
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
            "ln_final.hook_normalized" => return Ok(HookPoint::FinalNorm),
            _ => {}
        }
        let rest = s.strip_prefix("blocks.").ok_or_else(bad)?;
        let (num, name) = rest.split_once('.').ok_or_else(bad)?;
        if num.is_empty() || !num.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        let l: usize = num.parse().map_err(|_| bad())?;
        match name {
            "hook_resid_pre" => Ok(HookPoint::ResidPre(l)),
            "hook_attn_out" => Ok(HookPoint::AttnOut(l)),
            "hook_resid_mid" => Ok(HookPoint::ResidMid(l)),
            "hook_mlp_out" => Ok(HookPoint::MlpOut(l)),
            "hook_resid_post" => Ok(HookPoint::ResidPost(l)),
            _ => Err(bad()),
        }
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

    /// A `[batch, pos, 1]` selector (1.0 where `positions` selects a real token, else 0.0) in the
    /// dtype and on the device of `like`, for broadcasting over `d_model`.
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
        Ok(sel.to_dtype(like.dtype())?.unsqueeze(D::Minus1)?) // [batch, pos, 1]
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
    /// Observes or replaces `x` (`[batch, pos, d_model]`).
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
/// `source` is `[batch, seq, d_model]` in whole-sequence columns (as an [`ActivationCache`](crate::ActivationCache)
/// recorded on a batch of the same shape holds it); columns this call covers are taken from it.
#[derive(Debug, Clone)]
pub struct Patch {
    /// The activation to write in, `[batch, seq, d_model]`.
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
        let (b, s, d) = x.dims3()?;
        let (sb, ss, sd) = self.source.dims3()?;
        if sb != b || sd != d || ss < ctx.offset + s {
            return Err(Error::Shape {
                what: format!("patch source at {}", ctx.point),
                expected: format!("[{b}, >={}, {d}]", ctx.offset + s),
                got: format!("{:?}", self.source.dims()),
            });
        }
        let src = self.source.narrow(1, ctx.offset, s)?; // [batch, pos, d_model]
        check_dtype_device(
            &src,
            x.dtype(),
            x.device(),
            &format!("patch source at {}", ctx.point),
        )?;
        let sel = ctx.selector(&self.positions, x)?; // [batch, pos, 1]
                                                     // Exact selection (sel is 0 or 1): src * sel + x * (1 - sel).
        let y = (src.broadcast_mul(&sel)? + x.broadcast_mul(&(1.0 - &sel)?)?)?; // [batch, pos, d_model]
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
        let sel = ctx.selector(&self.positions, x)?; // [batch, pos, 1]
        let keep = (1.0 - sel)?; // [batch, pos, 1]
        Ok(Some(x.broadcast_mul(&keep)?))
    }
}
