//! Per-latent numbers of a crosscoder: decoder norms, their relative size and cosine, Latent
//! Scaling (Minder, Dumas et al. 2025) and a label per latent.
//!
//! **Latent Scaling.** For latent `j` with activations `f_j` and a direction `v`, the
//! least-squares scalar that best explains a target `y` is
//! `β = Σ_n f_nj ⟨v, y_n⟩ / (‖v‖² Σ_n f_nj²)` (closed form of `argmin_β Σ_n ‖y_n - β f_nj v‖²`).
//! `v` is the decoder direction of the latent in its *own* model (the tuned model when the
//! relative norm is at least 0.5, else the base). Per model `m` two targets:
//! - error: `ε_m = x_m - (x̂_m - f_j d_j^m)`, the reconstruction error with the latent's own
//!   contribution to model `m` put back;
//! - reconstruction: `r_m = x̂_m`.
//!
//! The ratios `ν^ε = β^ε_other / β^ε_own` and `ν^r = β^r_other / β^r_own` say how much of the
//! latent the *other* model holds: near 0 for a latent truly specific to its own model; a large
//! `ν^ε` means the other model's error still contains the direction (Complete Shrinkage: the
//! concept exists there but its decoder was shrunk away), a large `ν^r` that the other model's
//! reconstruction does (Latent Decoupling: other latents represent it there). All of it runs in
//! the dictionary's internal units (activations divided by the per-model scale), where the
//! decoder norms live. This follows the paper's `closed_form_scalars` with the targets of its
//! `compute_scalers` script (`base_error`, `chat_error`, `base_reconstruction`,
//! `chat_reconstruction`), here for every latent and in both directions.

use candle_core::{DType, Tensor, D};
use serde::{Deserialize, Serialize};

use super::dictionary::Dictionary;
use super::metrics::{check_acts, ActSource};
use crate::{Error, Result};

/// What a latent is, judged by its relative decoder norm and Latent Scaling.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LatentLabel {
    /// Both decoders carry it (relative norm within [`LabelOptions::shared`]).
    Shared,
    /// Only the tuned model's decoder carries it, and Latent Scaling finds little of it in the
    /// base model.
    TunedOnly,
    /// Only the base model's decoder carries it, and Latent Scaling finds little of it in the
    /// tuned model.
    BaseOnly,
    /// Its decoder norm says model-only, but Latent Scaling finds the other model explaining a
    /// large part of it (`ν^ε` or `ν^r` above [`LabelOptions::max_nu`]): a sparsity artefact.
    Artefact,
    /// Relative norm between the bands (neither shared nor model-only).
    Other,
    /// Never active on the data (no Latent Scaling possible).
    Inactive,
}

/// The cuts behind [`LatentLabel`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct LabelOptions {
    /// Relative norm at or above which a latent is a tuned-only candidate (0.9, the paper's cut).
    pub tuned_only: f64,
    /// Relative norm at or below which a latent is a base-only candidate (0.1).
    pub base_only: f64,
    /// Relative-norm band of shared latents (0.4..=0.6, the paper's band).
    pub shared: (f64, f64),
    /// A model-only candidate whose `ν^ε` or `ν^r` exceeds this is an [`LatentLabel::Artefact`]
    /// (0.5). The paper ranks latents by the two ratios rather than cutting them; 0.5, half-way
    /// between absent (0) and as present as in its own model (1), is puppetlens's cut.
    pub max_nu: f64,
    /// Tokens per batch while encoding (1024).
    pub batch_size: usize,
}

impl Default for LabelOptions {
    fn default() -> Self {
        LabelOptions {
            tuned_only: 0.9,
            base_only: 0.1,
            shared: (0.4, 0.6),
            max_nu: 0.5,
            batch_size: 1024,
        }
    }
}

/// Latent Scaling numbers of one latent (see the module docs).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LatentScaling {
    /// The model whose decoder direction is `v` (1 = tuned when the relative norm >= 0.5).
    pub own_model: usize,
    /// `β^ε` per model (error targets), `[n_models]`.
    pub beta_error: Vec<f64>,
    /// `β^r` per model (reconstruction targets), `[n_models]`.
    pub beta_recon: Vec<f64>,
    /// `ν^ε = β^ε_other / β^ε_own`.
    pub nu_error: f64,
    /// `ν^r = β^r_other / β^r_own`.
    pub nu_recon: f64,
}

/// Per-latent numbers of a two-model crosscoder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LatentStats {
    /// The latent's index.
    pub index: usize,
    /// Decoder norm per model, `[n_models]` (internal units).
    pub norms: Vec<f64>,
    /// Relative decoder norm `‖d_tuned‖ / (‖d_base‖ + ‖d_tuned‖)`: 1 = tuned-only, 0 = base-only.
    pub rel_norm: f64,
    /// Cosine of the two decoder directions (0 when one is zero).
    pub cosine: f64,
    /// Fraction of tokens on which the latent is active.
    pub frequency: f64,
    /// Latent Scaling (`None` when the latent is never active).
    pub scaling: Option<LatentScaling>,
    /// The label.
    pub label: LatentLabel,
}

impl LatentStats {
    /// The Latent Scaling ratios `(ν^ε, ν^r)`, NaN when the latent was never active.
    pub fn nu(&self) -> (f64, f64) {
        self.scaling
            .as_ref()
            .map_or((f64::NAN, f64::NAN), |x| (x.nu_error, x.nu_recon))
    }
}

/// Sums over tokens from which the betas follow.
pub(crate) struct ScalingSums {
    /// `Σ_n f_nj²`, `[l]`.
    pub c: Vec<f64>,
    /// Per model, `Σ_n f_nj e_{m,n}` (full reconstruction error), `[m][l * d]`.
    pub g_err: Vec<Vec<f64>>,
    /// Per model, `Σ_n f_nj x̂_{m,n}`, `[m][l * d]`.
    pub g_rec: Vec<Vec<f64>>,
    /// Active token counts, `[l]`.
    pub count: Vec<f64>,
}

impl ScalingSums {
    pub(crate) fn new(m: usize, l: usize, d: usize) -> Self {
        ScalingSums {
            c: vec![0.0; l],
            g_err: vec![vec![0.0; l * d]; m],
            g_rec: vec![vec![0.0; l * d]; m],
            count: vec![0.0; l],
        }
    }

    /// Adds a batch: `f` `[n, l]`, `x` and `xhat` `[n, m, d]` (internal units).
    pub(crate) fn add(&mut self, f: &Tensor, x: &Tensor, xhat: &Tensor) -> Result<()> {
        let m = self.g_err.len();
        let ft = f.t()?.contiguous()?; // [l, n]
        let add_to = |acc: &mut Vec<f64>, t: &Tensor| -> Result<()> {
            for (a, v) in acc.iter_mut().zip(t.flatten_all()?.to_vec1::<f32>()?) {
                *a += v as f64;
            }
            Ok(())
        };
        add_to(&mut self.c, &f.sqr()?.sum(0)?)?;
        add_to(&mut self.count, &f.gt(0.0)?.to_dtype(DType::F32)?.sum(0)?)?;
        for i in 0..m {
            let xm = x.narrow(1, i, 1)?.squeeze(1)?; // [n, d]
            let rm = xhat.narrow(1, i, 1)?.squeeze(1)?; // [n, d]
            add_to(&mut self.g_err[i], &ft.matmul(&(&xm - &rm)?)?)?; // [l, d]
            add_to(&mut self.g_rec[i], &ft.matmul(&rm)?)?; // [l, d]
        }
        Ok(())
    }

    /// Latent Scaling of latent `j` given the decoders `w_dec[m][l * d]` and its own model.
    pub(crate) fn scaling(
        &self,
        w_dec: &[Vec<f32>],
        d: usize,
        j: usize,
        own: usize,
    ) -> Option<LatentScaling> {
        let m = self.g_err.len();
        if self.c[j] <= 0.0 || m < 2 {
            return None;
        }
        let v = &w_dec[own][j * d..(j + 1) * d];
        let vv: f64 = v.iter().map(|&a| (a as f64).powi(2)).sum();
        if vv <= 0.0 {
            return None;
        }
        let dot = |g: &[f64]| -> f64 {
            g[j * d..(j + 1) * d]
                .iter()
                .zip(v)
                .map(|(a, &b)| a * b as f64)
                .sum()
        };
        let denom = vv * self.c[j];
        let beta_error: Vec<f64> = (0..m)
            .map(|i| {
                let dm = &w_dec[i][j * d..(j + 1) * d];
                let v_dm: f64 = v.iter().zip(dm).map(|(&a, &b)| a as f64 * b as f64).sum();
                (dot(&self.g_err[i]) + self.c[j] * v_dm) / denom
            })
            .collect();
        let beta_recon: Vec<f64> = (0..m).map(|i| dot(&self.g_rec[i]) / denom).collect();
        let other = if own == 0 { 1 } else { 0 };
        Some(LatentScaling {
            own_model: own,
            nu_error: beta_error[other] / beta_error[own],
            nu_recon: beta_recon[other] / beta_recon[own],
            beta_error,
            beta_recon,
        })
    }
}

/// Per-latent numbers of a two-model crosscoder (model 0 base, model 1 tuned) on `acts`
/// (`[n_tokens, 2, d]`, on the dictionary's device): decoder norms, relative norm, cosine,
/// frequency, Latent Scaling and a label, in latent order.
pub fn latents(dict: &Dictionary, acts: &Tensor, opts: &LabelOptions) -> Result<Vec<LatentStats>> {
    if dict.n_models() != 2 {
        return Err(Error::InvalidArgument {
            name: "dictionary".into(),
            msg: format!(
                "per-latent base/tuned numbers need a crosscoder of 2 models, this one has {}",
                dict.n_models()
            ),
        });
    }
    check_acts(dict, acts)?;
    latents_source(dict, acts, opts)
}

/// [`latents`] on activations checked to fit `dict` (a crosscoder of two models), batch by
/// batch.
pub(crate) fn latents_source(
    dict: &Dictionary,
    acts: &dyn ActSource,
    opts: &LabelOptions,
) -> Result<Vec<LatentStats>> {
    if dict.n_models() != 2 {
        return Err(Error::InvalidArgument {
            name: "dictionary".into(),
            msg: format!(
                "per-latent base/tuned numbers need a crosscoder of 2 models, this one has {}",
                dict.n_models()
            ),
        });
    }
    let n = acts.n_tokens();
    let (m, l, d) = (2, dict.n_latents(), dict.d());
    let bs = opts.batch_size.max(1);
    let mut sums = ScalingSums::new(m, l, d);
    acts.for_each_batch(bs, dict.device(), &mut |xb| {
        let len = xb.dim(0)?;
        let xb = xb.reshape((len, m * d))?; // [len, m*d]
        let xn = dict.normalise_flat(&xb)?; // [len, m*d]
        let f = dict.encode_normalised(&xn)?; // [len, l]
        let xhat = dict.decode_normalised(&f)?; // [len, m*d]
        sums.add(&f, &xn.reshape((len, m, d))?, &xhat.reshape((len, m, d))?)
    })?;
    let w_dec: Vec<Vec<f32>> = (0..m)
        .map(|i| Ok(dict.w_dec().get(i)?.flatten_all()?.to_vec1::<f32>()?))
        .collect::<Result<_>>()?;
    let norms_t = dict
        .w_dec()
        .sqr()?
        .sum(D::Minus1)?
        .sqrt()?
        .to_vec2::<f32>()?; // [m, l]
    let mut out = Vec::with_capacity(l);
    for j in 0..l {
        let (nb, nt) = (norms_t[0][j] as f64, norms_t[1][j] as f64);
        let rel_norm = if nb + nt > 0.0 { nt / (nb + nt) } else { 0.5 };
        let dot: f64 = w_dec[0][j * d..(j + 1) * d]
            .iter()
            .zip(&w_dec[1][j * d..(j + 1) * d])
            .map(|(&a, &b)| a as f64 * b as f64)
            .sum();
        let cosine = if nb > 0.0 && nt > 0.0 {
            dot / (nb * nt)
        } else {
            0.0
        };
        let own = if rel_norm >= 0.5 { 1 } else { 0 };
        let scaling = sums.scaling(&w_dec, d, j, own);
        let label = label_of(rel_norm, scaling.as_ref(), opts);
        out.push(LatentStats {
            index: j,
            norms: vec![nb, nt],
            rel_norm,
            cosine,
            frequency: sums.count[j] / n as f64,
            scaling,
            label,
        });
    }
    Ok(out)
}

fn label_of(rel: f64, s: Option<&LatentScaling>, opts: &LabelOptions) -> LatentLabel {
    let Some(s) = s else {
        return LatentLabel::Inactive;
    };
    let model_only = rel >= opts.tuned_only || rel <= opts.base_only;
    if model_only {
        // A NaN ratio (own beta 0) cannot vouch for specificity.
        let clean = s.nu_error < opts.max_nu && s.nu_recon < opts.max_nu;
        if !clean {
            LatentLabel::Artefact
        } else if rel >= opts.tuned_only {
            LatentLabel::TunedOnly
        } else {
            LatentLabel::BaseOnly
        }
    } else if rel >= opts.shared.0 && rel <= opts.shared.1 {
        LatentLabel::Shared
    } else {
        LatentLabel::Other
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// A constructed case with a known answer. One latent whose tuned decoder is `e0` and whose
    /// base decoder is 0; activations `f_n`. The base model holds 0.5 f e0 (plus noise along
    /// e2, orthogonal to e0), its reconstruction 0.2 f e0 (plus e1 noise); the tuned model holds
    /// f e0 and its reconstruction f e0. Then β^ε_base = 0.5 - 0.2 = 0.3, β^ε_tuned = 1,
    /// β^r_base = 0.2, β^r_tuned = 1, so ν^ε = 0.3 and ν^r = 0.2.
    #[test]
    fn latent_scaling_recovers_constructed_betas() {
        let dev = Device::Cpu;
        let n = 50;
        let fs: Vec<f32> = (0..n).map(|i| 0.2 + (i % 7) as f32 * 0.3).collect();
        let mut x = Vec::new();
        let mut xhat = Vec::new();
        for (i, &f) in fs.iter().enumerate() {
            let noise = ((i * 13) % 5) as f32 - 2.0;
            // base: x = 0.5 f e0 + noise e2; x̂ = 0.2 f e0 + noise e1
            x.extend([0.5 * f, 0.0, noise]);
            xhat.extend([0.2 * f, noise, 0.0]);
            // tuned: x = f e0 + noise e2; x̂ = f e0
            x.extend([f, 0.0, noise]);
            xhat.extend([f, 0.0, 0.0]);
        }
        let f = Tensor::from_vec(fs, (n, 1), &dev).unwrap();
        let x = Tensor::from_vec(x, (n, 2, 3), &dev).unwrap();
        let xhat = Tensor::from_vec(xhat, (n, 2, 3), &dev).unwrap();
        let mut sums = ScalingSums::new(2, 1, 3);
        sums.add(&f, &x, &xhat).unwrap();
        let w_dec = vec![vec![0.0, 0.0, 0.0], vec![1.0, 0.0, 0.0]];
        let s = sums.scaling(&w_dec, 3, 0, 1).unwrap();
        let close = |a: f64, b: f64| (a - b).abs() < 1e-5;
        assert!(close(s.beta_error[0], 0.3), "{s:?}");
        assert!(close(s.beta_error[1], 1.0), "{s:?}");
        assert!(close(s.beta_recon[0], 0.2), "{s:?}");
        assert!(close(s.beta_recon[1], 1.0), "{s:?}");
        assert!(close(s.nu_error, 0.3) && close(s.nu_recon, 0.2), "{s:?}");
        // The direction's scale does not matter: v = 2 e0 gives the betas of e0 halved.
        let w_dec2 = vec![vec![0.0, 0.0, 0.0], vec![2.0, 0.0, 0.0]];
        let s2 = sums.scaling(&w_dec2, 3, 0, 1).unwrap();
        assert!(
            close(s2.beta_recon[1], 0.5) && close(s2.nu_recon, 0.2),
            "{s2:?}"
        );
        let opts = LabelOptions::default();
        assert_eq!(label_of(1.0, Some(&s), &opts), LatentLabel::TunedOnly);
        assert_eq!(
            label_of(
                0.95,
                Some(&LatentScaling {
                    nu_error: 0.8,
                    ..s.clone()
                }),
                &opts
            ),
            LatentLabel::Artefact
        );
        assert_eq!(label_of(0.5, Some(&s), &opts), LatentLabel::Shared);
        assert_eq!(label_of(0.5, None, &opts), LatentLabel::Inactive);
    }
}
