//! Hooks that put a dictionary into a forward pass: steer along one latent's decoder direction,
//! or replace the activation with the dictionary's reconstruction (optionally plus its error).

use candle_core::{DType, Tensor};

use crate::hook::{Hook, HookCtx, Positions};
use crate::{Error, Result};

use super::Dictionary;

/// Errors unless `x` (`[.., d]`) has the dictionary's width and `ctx.point` is the hook point the
/// dictionary was trained at (when its metadata names one, `hook_name`).
fn check_site(dict: &Dictionary, x: &Tensor, ctx: &HookCtx, what: &str) -> Result<()> {
    let d = dict.d();
    if x.dims().last() != Some(&d) {
        return Err(Error::Shape {
            what: format!("{what} at {}", ctx.point),
            expected: format!("[.., {d}] (the dictionary's width)"),
            got: format!("{:?}", x.dims()),
        });
    }
    if let Some(h) = dict.meta.get("hook_name") {
        if *h != ctx.point.to_string() {
            return Err(Error::InvalidArgument {
                name: ctx.point.to_string(),
                msg: format!("{what}: the dictionary was trained at {h}, not here"),
            });
        }
    }
    Ok(())
}

/// Adds `scale * (decoder direction of latent j in model m)` to the activation: steering
/// (positive scale) or, with a negative one, pushing a latent out. The direction is in the
/// model's units (the dictionary's per-model scale applied), so `scale` is in latent-activation
/// units: a typical activation of the latent adds as much as that latent contributes when it fires.
///
/// The hook errors with [`Error::Shape`] on an activation of another width, and with
/// [`Error::InvalidArgument`] at a hook point other than the dictionary's `hook_name`.
///
/// ```no_run
/// use puppetlens::dict::{Dictionary, SteerLatent};
/// use puppetlens::{Batch, HookPoint, Hooks};
/// let (base, tok) = puppetlens::load(puppetlens::fetch::fetch("gemma-3-270m")?)?;
/// let cc = Dictionary::load("notebooks-data/crosscoder/gemma-3-270m__sycophant", base.device())?;
/// let mut hooks = Hooks::new();
/// // Latent 466's tuned (model 1) direction, at its typical activation.
/// hooks.add(HookPoint::ResidPost(8), SteerLatent::new(&cc, 466, 1, 1.07)?);
/// let logits = base.forward_last(&Batch::single(&tok.encode("In my opinion,")?)?, &mut hooks)?;
/// # Ok::<(), puppetlens::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct SteerLatent<'a> {
    dict: &'a Dictionary,
    direction: Tensor,
    scale: f64,
    positions: Positions,
}

impl<'a> SteerLatent<'a> {
    /// Steers along latent `latent`'s decoder direction in model `model` at every real token.
    pub fn new(dict: &'a Dictionary, latent: usize, model: usize, scale: f64) -> Result<Self> {
        Ok(Self {
            direction: decoder_direction(dict, latent, model)?,
            dict,
            scale,
            positions: Positions::All,
        })
    }

    /// Restricts the steering to `positions`.
    pub fn at(mut self, positions: Positions) -> Self {
        self.positions = positions;
        self
    }

    /// The direction added per unit of scale, `[d]` f32 on the dictionary's device.
    pub fn direction(&self) -> &Tensor {
        &self.direction
    }
}

/// Latent `latent`'s decoder direction in model `model`, in the model's units: `[d]` f32 on the
/// dictionary's device.
pub fn decoder_direction(dict: &Dictionary, latent: usize, model: usize) -> Result<Tensor> {
    if latent >= dict.n_latents() {
        return Err(Error::IndexOutOfRange {
            what: "latent".into(),
            index: latent,
            len: dict.n_latents(),
        });
    }
    if model >= dict.n_models() {
        return Err(Error::IndexOutOfRange {
            what: "model of the dictionary".into(),
            index: model,
            len: dict.n_models(),
        });
    }
    let s = dict.scale().get(model).copied().unwrap_or(1.0) as f64;
    Ok((dict.w_dec().get(model)?.get(latent)? * s)?) // [d]
}

impl Hook for SteerLatent<'_> {
    fn call(&mut self, x: &Tensor, ctx: &HookCtx) -> Result<Option<Tensor>> {
        check_site(self.dict, x, ctx, "latent steering")?;
        let sel = ctx.selector(&self.positions, x)?; // [batch, pos, 1]
        let v = (&self.direction * self.scale)?
            .to_dtype(x.dtype())?
            .to_device(x.device())?
            .reshape((1, 1, ()))?; // [1, 1, d]
        Ok(Some((x + sel.broadcast_mul(&v)?)?)) // [batch, pos, d]
    }
}

/// Replaces the activation with the dictionary's reconstruction of it, optionally plus the
/// reconstruction error (`x - x_hat`), with chosen latents zeroed (ablated) before decoding.
///
/// With the error term kept and no latent ablated the activation is unchanged (up to float
/// rounding); with latents ablated it is `x - (x_hat - x_hat_without)`, their contribution
/// removed. An SAE (`n_models` = 1) splices on its own; a crosscoder needs the other model's
/// activation at the same point for the same batch ([`Splice::with_partner`]), since its encoder
/// reads both. Errors as [`SteerLatent`] does, and on a partner of another shape.
#[derive(Debug, Clone)]
pub struct Splice<'a> {
    dict: &'a Dictionary,
    model: usize,
    keep_error: bool,
    ablate: Vec<usize>,
    partner: Option<Tensor>,
}

impl<'a> Splice<'a> {
    /// Splices the reconstruction for model `model` of `dict` (0 for an SAE).
    pub fn new(dict: &'a Dictionary, model: usize) -> Result<Self> {
        if model >= dict.n_models() {
            return Err(Error::IndexOutOfRange {
                what: "model of the dictionary".into(),
                index: model,
                len: dict.n_models(),
            });
        }
        Ok(Self {
            dict,
            model,
            keep_error: false,
            ablate: Vec::new(),
            partner: None,
        })
    }

    /// Adds the reconstruction error back (`x_hat + (x - x_hat)` before any ablation).
    pub fn with_error(mut self, on: bool) -> Self {
        self.keep_error = on;
        self
    }

    /// Zeroes these latents before decoding.
    pub fn ablating(mut self, latents: impl IntoIterator<Item = usize>) -> Result<Self> {
        for j in latents {
            if j >= self.dict.n_latents() {
                return Err(Error::IndexOutOfRange {
                    what: "latent".into(),
                    index: j,
                    len: self.dict.n_latents(),
                });
            }
            self.ablate.push(j);
        }
        Ok(self)
    }

    /// The other model's activation at this point for the same batch, `[batch, pos, d]` (needed
    /// by a crosscoder).
    pub fn with_partner(mut self, partner: Tensor) -> Self {
        self.partner = Some(partner);
        self
    }
}

impl Hook for Splice<'_> {
    fn call(&mut self, x: &Tensor, ctx: &HookCtx) -> Result<Option<Tensor>> {
        check_site(self.dict, x, ctx, "dictionary splice")?;
        let xf = x.to_dtype(DType::F32)?.to_device(self.dict.device())?; // [batch, pos, d]
        let input = if self.dict.n_models() == 1 {
            xf.clone()
        } else {
            let p = self
                .partner
                .as_ref()
                .ok_or_else(|| Error::InvalidArgument {
                    name: "partner".into(),
                    msg: "a crosscoder splice needs the other model's activation (with_partner)"
                        .into(),
                })?;
            if p.dims() != x.dims() {
                return Err(Error::Shape {
                    what: "partner activation of the crosscoder splice".into(),
                    expected: format!("{:?}", x.dims()),
                    got: format!("{:?}", p.dims()),
                });
            }
            let p = p.to_dtype(DType::F32)?.to_device(self.dict.device())?; // [batch, pos, d]
            let (a, b) = if self.model == 0 {
                (&xf, &p)
            } else {
                (&p, &xf)
            };
            Tensor::stack(&[a, b], 2)? // [batch, pos, 2, d]
        };
        let f = self.dict.encode(&input)?; // [batch, pos, n_latents]
        let pick = |r: Tensor| -> Result<Tensor> {
            Ok(if self.dict.n_models() == 1 {
                r
            } else {
                r.narrow(2, self.model, 1)?.squeeze(2)?
            })
        };
        let x_hat = pick(self.dict.decode(&f)?)?; // [batch, pos, d]
        let y = if self.ablate.is_empty() {
            if self.keep_error {
                xf.clone()
            } else {
                x_hat
            }
        } else {
            let l = self.dict.n_latents();
            let mut keep = vec![1f32; l];
            for &j in &self.ablate {
                keep[j] = 0.0;
            }
            let keep = Tensor::from_vec(keep, l, f.device())?; // [n_latents]
            let edited = pick(self.dict.decode(&f.broadcast_mul(&keep)?)?)?; // [batch, pos, d]
            if self.keep_error {
                (&xf - (&x_hat - &edited)?)?
            } else {
                edited
            }
        };
        let sel = ctx
            .selector(&Positions::All, x)?
            .to_dtype(DType::F32)?
            .to_device(y.device())?; // [batch, pos, 1]
        let out = (&xf + sel.broadcast_mul(&(y - &xf)?)?)?; // [batch, pos, d]
        Ok(Some(out.to_dtype(x.dtype())?.to_device(x.device())?))
    }
}
