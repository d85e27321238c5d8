//! The [`Dictionary`] type: weights, the sparsity rule, and `encode` / `decode`.

use std::collections::BTreeMap;

use candle_core::{DType, Device, Tensor, D};

use super::select;
use crate::{Error, Result};

/// How a dictionary turns pre-activations into latent activations.
///
/// `pre = ((x / scale) - b_dec) · W_enc + b_enc` (the `- b_dec` only when
/// [`Dictionary::apply_b_dec_to_input`] holds), one value per latent.
#[derive(Debug, Clone)]
pub enum Activation {
    /// `relu(pre)` (SAELens's `standard`).
    Relu,
    /// `relu(pre)` where `pre > threshold[latent]`, else 0 (SAELens's `jumprelu`, Gemma Scope).
    JumpRelu {
        /// Per-latent thresholds, `[n_latents]` f32.
        threshold: Tensor,
    },
    /// The `k` largest `relu(pre)` of each token (SAELens's `topk`).
    TopK {
        /// Active latents per token.
        k: usize,
    },
    /// BatchTopK (Bussmann et al. 2024). The selection score of a latent is
    /// `relu(pre) · Σ_m ‖W_dec[m, latent]‖` (decoder-norm weighted, as the BatchTopK crosscoder
    /// of Minder, Dumas et al. 2025 does). With `threshold = Some(t)` (inference) a latent is
    /// active where its score exceeds `t`; with `None` the `k · n_tokens` largest scores of the
    /// whole input are kept (the training rule, which depends on the batch).
    BatchTopK {
        /// Active latents per token, on average over a batch.
        k: usize,
        /// The inference threshold on the score, estimated during training.
        threshold: Option<f32>,
    },
}

impl Activation {
    /// The rule's name: `relu`, `jumprelu`, `topk` or `batchtopk`.
    pub fn name(&self) -> &'static str {
        match self {
            Activation::Relu => "relu",
            Activation::JumpRelu { .. } => "jumprelu",
            Activation::TopK { .. } => "topk",
            Activation::BatchTopK { .. } => "batchtopk",
        }
    }
}

/// A sparse dictionary over the activations of one model (an SAE) or of several models on the
/// same tokens (a crosscoder: one shared encoder over the concatenation `[model 0; model 1; ..]`,
/// one decoder per model). By convention model 0 is the base model and model 1 its tuned sibling.
///
/// Weights (all f32, on one device):
/// - `W_enc` `[n_models * d, n_latents]`, `b_enc` `[n_latents]`;
/// - `W_dec` `[n_models, n_latents, d]`, `b_dec` `[n_models, d]`.
///
/// The dictionary works on activations divided by a per-model scalar `scale` (the trainer picks
/// it so that each model's activations have a mean squared norm of `d`); `encode` and `decode`
/// take and return activations in the models' own units.
#[derive(Debug, Clone)]
pub struct Dictionary {
    pub(crate) w_enc: Tensor,
    pub(crate) b_enc: Tensor,
    pub(crate) w_dec: Tensor,
    pub(crate) b_dec: Tensor,
    pub(crate) activation: Activation,
    pub(crate) scale: Vec<f32>,
    pub(crate) apply_b_dec_to_input: bool,
    /// Free-form provenance saved with the dictionary (e.g. `hook_name`, `model_name`,
    /// `model.0`, `model.1`); SAELens export reads `hook_name` and `model_name`.
    pub meta: BTreeMap<String, String>,
}

fn dims(t: &Tensor) -> String {
    format!("{:?}", t.dims())
}

impl Dictionary {
    /// A dictionary from its weights (shapes as in the type's docs; converted to f32), scale 1
    /// for every model and `b_dec` subtracted from the input. Shapes are checked.
    pub fn new(
        w_enc: Tensor,
        b_enc: Tensor,
        w_dec: Tensor,
        b_dec: Tensor,
        activation: Activation,
    ) -> Result<Self> {
        let f32 = |t: Tensor| t.to_dtype(DType::F32);
        let (w_enc, b_enc, w_dec, b_dec) = (f32(w_enc)?, f32(b_enc)?, f32(w_dec)?, f32(b_dec)?);
        let (m, l, d) = w_dec.dims3().map_err(|_| Error::Shape {
            what: "dictionary W_dec".into(),
            expected: "[n_models, n_latents, d]".into(),
            got: dims(&w_dec),
        })?;
        let check = |what: &str, t: &Tensor, want: &[usize]| -> Result<()> {
            if t.dims() != want {
                return Err(Error::Shape {
                    what: format!("dictionary {what}"),
                    expected: format!("{want:?}"),
                    got: dims(t),
                });
            }
            Ok(())
        };
        check("W_enc", &w_enc, &[m * d, l])?;
        check("b_enc", &b_enc, &[l])?;
        check("b_dec", &b_dec, &[m, d])?;
        let activation = match activation {
            Activation::JumpRelu { threshold } => {
                let threshold = threshold.to_dtype(DType::F32)?;
                check("threshold", &threshold, &[l])?;
                Activation::JumpRelu { threshold }
            }
            Activation::TopK { k } | Activation::BatchTopK { k, .. } if k == 0 || k > l => {
                return Err(Error::InvalidArgument {
                    name: "k".into(),
                    msg: format!("must be in 1..={l} (the number of latents), got {k}"),
                })
            }
            a => a,
        };
        if m == 0 || l == 0 || d == 0 {
            return Err(Error::Shape {
                what: "dictionary W_dec".into(),
                expected: "non-empty [n_models, n_latents, d]".into(),
                got: dims(&w_dec),
            });
        }
        Ok(Dictionary {
            w_enc,
            b_enc,
            w_dec,
            b_dec,
            activation,
            scale: vec![1.0; m],
            apply_b_dec_to_input: true,
            meta: BTreeMap::new(),
        })
    }

    /// Sets the per-model input scales (`[n_models]`, positive and finite).
    pub fn with_scale(mut self, scale: Vec<f32>) -> Result<Self> {
        if scale.len() != self.n_models() || scale.iter().any(|s| !(s.is_finite() && *s > 0.0)) {
            return Err(Error::InvalidArgument {
                name: "scale".into(),
                msg: format!(
                    "need {} positive finite values, got {scale:?}",
                    self.n_models()
                ),
            });
        }
        self.scale = scale;
        Ok(self)
    }

    /// Sets whether `b_dec` is subtracted from the input before encoding (SAELens's
    /// `apply_b_dec_to_input`; Gemma Scope's SAEs do not).
    pub fn with_apply_b_dec_to_input(mut self, on: bool) -> Self {
        self.apply_b_dec_to_input = on;
        self
    }

    /// Number of models (1 for an SAE, 2 for a base/tuned crosscoder).
    pub fn n_models(&self) -> usize {
        self.w_dec.dims()[0]
    }
    /// Number of latents.
    pub fn n_latents(&self) -> usize {
        self.w_dec.dims()[1]
    }
    /// Width of each model's activations.
    pub fn d(&self) -> usize {
        self.w_dec.dims()[2]
    }
    /// `W_enc`, `[n_models * d, n_latents]` f32.
    pub fn w_enc(&self) -> &Tensor {
        &self.w_enc
    }
    /// `b_enc`, `[n_latents]` f32.
    pub fn b_enc(&self) -> &Tensor {
        &self.b_enc
    }
    /// `W_dec`, `[n_models, n_latents, d]` f32.
    pub fn w_dec(&self) -> &Tensor {
        &self.w_dec
    }
    /// `b_dec`, `[n_models, d]` f32.
    pub fn b_dec(&self) -> &Tensor {
        &self.b_dec
    }
    /// The sparsity rule.
    pub fn activation(&self) -> &Activation {
        &self.activation
    }
    /// The per-model input scales (activations are divided by them before encoding).
    pub fn scale(&self) -> &[f32] {
        &self.scale
    }
    /// Whether `b_dec` is subtracted from the input before encoding.
    pub fn apply_b_dec_to_input(&self) -> bool {
        self.apply_b_dec_to_input
    }
    /// The device holding the weights.
    pub fn device(&self) -> &Device {
        self.w_enc.device()
    }

    /// Moves the weights to `device`.
    pub fn to_device(&self, device: &Device) -> Result<Self> {
        let mut out = self.clone();
        out.w_enc = self.w_enc.to_device(device)?;
        out.b_enc = self.b_enc.to_device(device)?;
        out.w_dec = self.w_dec.to_device(device)?;
        out.b_dec = self.b_dec.to_device(device)?;
        if let Activation::JumpRelu { threshold } = &self.activation {
            out.activation = Activation::JumpRelu {
                threshold: threshold.to_device(device)?,
            };
        }
        Ok(out)
    }

    /// Decoder norms per latent summed over models, `[n_latents]` (the BatchTopK score weight).
    pub(crate) fn code_norm(&self) -> Result<Tensor> {
        Ok(self.w_dec.sqr()?.sum(D::Minus1)?.sqrt()?.sum(0)?)
    }

    /// `W_dec` as `[n_latents, n_models * d]`.
    pub(crate) fn w_dec_flat(&self) -> Result<Tensor> {
        let (m, l, d) = self.w_dec.dims3()?;
        Ok(self
            .w_dec
            .transpose(0, 1)?
            .contiguous()?
            .reshape((l, m * d))?)
    }

    /// Splits `x` into (leading dims, `[n, n_models * d]` f32 on the dictionary's device).
    fn flatten_input(&self, x: &Tensor) -> Result<(Vec<usize>, Tensor)> {
        let (m, d) = (self.n_models(), self.d());
        let shape = x.dims();
        let lead = if m == 1 && shape.last() == Some(&d) {
            &shape[..shape.len() - 1]
        } else if shape.len() >= 2 && shape[shape.len() - 2..] == [m, d] {
            &shape[..shape.len() - 2]
        } else {
            let expected = if m == 1 {
                format!("[.., {d}]")
            } else {
                format!("[.., {m}, {d}]")
            };
            return Err(Error::Shape {
                what: format!("dictionary input ({m} model(s) of width {d})"),
                expected,
                got: format!("{shape:?}"),
            });
        };
        if !x.device().same_device(self.device()) {
            return Err(Error::DtypeOrDevice {
                what: "dictionary input".into(),
                expected: format!("{:?}", self.device()),
                got: format!("{:?}", x.device()),
            });
        }
        let n: usize = lead.iter().product();
        let flat = x.to_dtype(DType::F32)?.reshape((n, m * d))?; // [n, m*d]
        Ok((lead.to_vec(), flat))
    }

    /// `[n_models * d]` vector of the per-model scales, each repeated `d` times.
    fn scale_flat(&self) -> Result<Option<Tensor>> {
        if self.scale.iter().all(|&s| s == 1.0) {
            return Ok(None);
        }
        let d = self.d();
        let v: Vec<f32> = self
            .scale
            .iter()
            .flat_map(|&s| std::iter::repeat_n(s, d))
            .collect();
        Ok(Some(Tensor::from_vec(
            v,
            self.n_models() * d,
            self.device(),
        )?))
    }

    /// Flat input `[n, m*d]` divided by the scales: the dictionary's internal units.
    pub(crate) fn normalise_flat(&self, x: &Tensor) -> Result<Tensor> {
        Ok(match self.scale_flat()? {
            Some(s) => x.broadcast_div(&s)?,
            None => x.clone(),
        })
    }

    /// Pre-activations of normalised flat input: `[n, m*d]` -> `[n, n_latents]`.
    pub(crate) fn pre_acts(&self, xn: &Tensor) -> Result<Tensor> {
        let (m, d) = (self.n_models(), self.d());
        let x_in = if self.apply_b_dec_to_input {
            xn.broadcast_sub(&self.b_dec.reshape(m * d)?)?
        } else {
            xn.clone()
        };
        Ok(x_in.matmul(&self.w_enc)?.broadcast_add(&self.b_enc)?) // [n, n_latents]
    }

    /// Latent activations of normalised flat input `[n, m*d]` -> `[n, n_latents]`.
    pub(crate) fn encode_normalised(&self, xn: &Tensor) -> Result<Tensor> {
        let pre = self.pre_acts(xn)?; // [n, n_latents]
        let act = pre.relu()?;
        Ok(match &self.activation {
            Activation::Relu => act,
            Activation::JumpRelu { threshold } => {
                let keep = pre.broadcast_gt(threshold)?.to_dtype(DType::F32)?; // [n, n_latents]
                (act * keep)?
            }
            Activation::TopK { k } => {
                let l = self.n_latents();
                let mask = select::topk_rows(&act.flatten_all()?.to_vec1::<f32>()?, l, *k, None);
                (act.clone() * Tensor::from_vec(mask, act.dims(), act.device())?)?
            }
            Activation::BatchTopK { k, threshold } => {
                let score = act.broadcast_mul(&self.code_norm()?)?; // [n, n_latents]
                match threshold {
                    Some(t) => {
                        let keep = score.gt(*t as f64)?.to_dtype(DType::F32)?;
                        (act * keep)?
                    }
                    None => {
                        let n = act.dims()[0];
                        let (mask, _) =
                            select::batch_topk(&score.flatten_all()?.to_vec1::<f32>()?, k * n);
                        (act.clone() * Tensor::from_vec(mask, act.dims(), act.device())?)?
                    }
                }
            }
        })
    }

    /// Reconstruction in internal units: `[n, n_latents]` -> `[n, m*d]`.
    pub(crate) fn decode_normalised(&self, f: &Tensor) -> Result<Tensor> {
        let (m, d) = (self.n_models(), self.d());
        Ok(f.matmul(&self.w_dec_flat()?)?
            .broadcast_add(&self.b_dec.reshape(m * d)?)?)
    }

    /// Latent activations of `x`: a crosscoder takes `[.., n_models, d]`, an SAE `[.., d]`
    /// (e.g. a hook's `[batch, pos, d_model]`); the result is `[.., n_latents]`, f32 on the
    /// dictionary's device. Any float dtype is accepted; `x`
    /// must be on the dictionary's device. With [`Activation::BatchTopK`] and no threshold the
    /// selection runs over all of `x`'s tokens together.
    pub fn encode(&self, x: &Tensor) -> Result<Tensor> {
        let (lead, flat) = self.flatten_input(x)?;
        let f = self.encode_normalised(&self.normalise_flat(&flat)?)?; // [n, n_latents]
        let mut shape = lead;
        shape.push(self.n_latents());
        Ok(f.reshape(shape)?)
    }

    /// Reconstruction from latent activations: `[.., n_latents]` -> `[.., n_models, d]` (an SAE
    /// gives `[.., d]`), f32, in the models' own units.
    pub fn decode(&self, f: &Tensor) -> Result<Tensor> {
        let l = self.n_latents();
        let shape = f.dims();
        if shape.last() != Some(&l) {
            return Err(Error::Shape {
                what: "dictionary latent activations".into(),
                expected: format!("[.., {l}]"),
                got: format!("{shape:?}"),
            });
        }
        let lead = &shape[..shape.len() - 1];
        let n: usize = lead.iter().product();
        let flat = f.to_dtype(DType::F32)?.reshape((n, l))?;
        let mut out = self.decode_normalised(&flat)?; // [n, m*d]
        if let Some(s) = self.scale_flat()? {
            out = out.broadcast_mul(&s)?;
        }
        let mut out_shape = lead.to_vec();
        if self.n_models() > 1 {
            out_shape.push(self.n_models());
        }
        out_shape.push(self.d());
        Ok(out.reshape(out_shape)?)
    }

    /// `decode(encode(x))`: the reconstruction of `x`, same shape, f32.
    pub fn reconstruct(&self, x: &Tensor) -> Result<Tensor> {
        let r = self.decode(&self.encode(x)?)?;
        Ok(r.reshape(x.dims())?)
    }
}
