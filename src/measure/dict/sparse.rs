//! The CPU training step of a BatchTopK dictionary, with its gradients written out so that they
//! use the sparsity.
//!
//! Of a batch's `[b, n_latents]` codes only `k · b` entries are kept (and, for AuxK, at most
//! `aux_k` dead latents per token), so everything after the encoder touches `k · b` decoder
//! rows instead of `n_latents · b`: the decoder's forward pass, its gradient, the codes'
//! gradient and the encoder's gradient are sums over the kept entries (each a dot product or
//! an `axpy` of one row of width `n_models · d`). Only the encoder's forward pass is a dense
//! matmul. The objective, the selection, AdamW (candle's formula) and the decoder
//! renormalisation are those of the autograd path in `train.rs`; `tests/real/dict.rs` checks
//! one step's gradients and a run's loss curve against it.
//!
//! Every output element is written by one thread in a fixed order, so a run is deterministic
//! whatever the number of threads.

use candle_core::{Device, Tensor};
use rayon::prelude::*;

use super::select;
use crate::Result;

/// Adam's moments of one parameter.
struct Moments {
    m: Vec<f32>,
    v: Vec<f32>,
}

impl Moments {
    fn new(n: usize) -> Self {
        Moments {
            m: vec![0.0; n],
            v: vec![0.0; n],
        }
    }
}

/// The kept entries of a `[b, l]` code matrix, row by row (CSR): latent, activation, and the
/// loss's gradient with respect to the pre-activation (filled by the backward pass).
#[derive(Default)]
struct Kept {
    /// `ptr[t]..ptr[t + 1]` are token `t`'s entries.
    ptr: Vec<usize>,
    latent: Vec<u32>,
    act: Vec<f32>,
    grad: Vec<f32>,
}

impl Kept {
    /// The entries of a 0/1 mask `[b, l]` whose activation is `act[t * l + j]`.
    fn from_mask(mask: &[f32], act: &[f32], l: usize) -> Self {
        let mut k = Kept {
            ptr: vec![0],
            ..Default::default()
        };
        for (row_m, row_a) in mask.chunks(l).zip(act.chunks(l)) {
            for (j, (&on, &a)) in row_m.iter().zip(row_a).enumerate() {
                if on > 0.0 {
                    k.latent.push(j as u32);
                    k.act.push(a);
                }
            }
            k.ptr.push(k.latent.len());
        }
        k.grad = vec![0.0; k.latent.len()];
        k
    }

    /// The same entries by latent (CSC): for latent `j`, `cols[j]..cols[j + 1]` index
    /// `(token, entry)` pairs in token order.
    fn by_latent(&self, l: usize) -> (Vec<usize>, Vec<(u32, u32)>) {
        let mut cols = vec![0usize; l + 1];
        for &j in &self.latent {
            cols[j as usize + 1] += 1;
        }
        for j in 0..l {
            cols[j + 1] += cols[j];
        }
        let mut fill = cols.clone();
        let mut out = vec![(0u32, 0u32); self.latent.len()];
        for t in 0..self.ptr.len().saturating_sub(1) {
            for e in self.ptr[t]..self.ptr[t + 1] {
                let j = self.latent[e] as usize;
                out[fill[j]] = (t as u32, e as u32);
                fill[j] += 1;
            }
        }
        (cols, out)
    }
}

/// `y += a x`.
#[inline]
fn axpy(y: &mut [f32], a: f32, x: &[f32]) {
    for (y, x) in y.iter_mut().zip(x) {
        *y += a * x;
    }
}

/// `x · y`, in eight partial sums (so that the loop vectorises).
#[inline]
fn dot(x: &[f32], y: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (xc, yc) = (x.chunks_exact(8), y.chunks_exact(8));
    let tail: f32 = xc
        .remainder()
        .iter()
        .zip(yc.remainder())
        .map(|(a, b)| a * b)
        .sum();
    for (a, b) in xc.zip(yc) {
        for i in 0..8 {
            acc[i] += a[i] * b[i];
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// The gradients of a batch's loss, laid out as [`SparseTrainer`]'s parameters.
struct Grads {
    w_enc_t: Vec<f32>,
    w_dec: Vec<f32>,
    b_enc: Vec<f32>,
    /// `None` when the decoder bias is shared (and fixed).
    b_dec: Option<Vec<f32>>,
}

/// What a step reports back to the training loop.
pub(super) struct StepOut {
    pub loss: f64,
    pub mse: f64,
    pub aux: Option<f64>,
    /// The batch's variance: squared distance from the batch mean, summed over models and
    /// dimensions, mean over tokens.
    pub var: f64,
    pub n_dead: usize,
    pub min_kept: Option<f32>,
}

/// The latents' "steps since last active" counter that decides which are dead.
pub(super) struct Dead {
    since: Vec<usize>,
    after: usize,
}

impl Dead {
    pub fn new(l: usize, after: usize) -> Self {
        Dead {
            since: vec![0; l],
            after,
        }
    }

    /// Counts a batch of `b` tokens whose kept entries are `mask` (`[b, l]`, 0/1) and returns
    /// which latents are dead after it and how many.
    pub fn update(&mut self, mask: &[f32], b: usize) -> (Vec<bool>, usize) {
        let l = self.since.len();
        let mut fired = vec![false; l];
        for (i, &v) in mask.iter().enumerate() {
            if v > 0.0 {
                fired[i % l] = true;
            }
        }
        for (s, &f) in self.since.iter_mut().zip(&fired) {
            *s = if f { 0 } else { *s + b };
        }
        let dead: Vec<bool> = self.since.iter().map(|&s| s >= self.after).collect();
        let n = dead.iter().filter(|&&x| x).count();
        (dead, n)
    }
}

/// What both training steps need to know of the dictionary and the objective.
#[derive(Debug, Clone, Copy)]
pub(super) struct Spec {
    /// Models.
    pub m: usize,
    /// Width of each model's activations.
    pub d: usize,
    /// Latents.
    pub l: usize,
    /// BatchTopK's k (kept entries per token on average).
    pub k: usize,
    /// Dead latents AuxK may use per token.
    pub aux_k: usize,
    /// Weight of the AuxK loss.
    pub aux_coeff: f64,
    /// One decoder bias for every model, fixed (not trained).
    pub shared: bool,
}

/// The parameters and optimiser state of a dictionary trained on the CPU.
pub(super) struct SparseTrainer {
    spec: Spec,
    /// `W_enc` transposed, `[l, m*d]`: row `j` is latent `j`'s encoder column.
    w_enc_t: Vec<f32>,
    /// `W_dec`, `[l, m*d]`.
    w_dec: Vec<f32>,
    /// `[l]`.
    b_enc: Vec<f32>,
    /// `[m*d]`, or `[d]` when shared.
    b_dec: Vec<f32>,
    /// Moments of `w_enc_t`, `w_dec`, `b_enc`, `b_dec`.
    moments: [Moments; 4],
    step_t: i32,
}

/// AdamW's update of one parameter (candle's `AdamW::step` with no weight decay, its default
/// betas and epsilon), over all threads.
fn adamw(p: &mut [f32], g: &[f32], mom: &mut Moments, lr: f64, step_t: i32) {
    const BETA1: f64 = 0.9;
    const BETA2: f64 = 0.999;
    const EPS: f64 = 1e-8;
    let scale_m = (1.0 / (1.0 - BETA1.powi(step_t))) as f32;
    let scale_v = (1.0 / (1.0 - BETA2.powi(step_t))) as f32;
    let (b1, b2, c1, c2) = (
        BETA1 as f32,
        BETA2 as f32,
        (1.0 - BETA1) as f32,
        (1.0 - BETA2) as f32,
    );
    let (lr, eps) = (lr as f32, EPS as f32);
    const CHUNK: usize = 16 * 1024;
    p.par_chunks_mut(CHUNK)
        .zip(g.par_chunks(CHUNK))
        .zip(mom.m.par_chunks_mut(CHUNK))
        .zip(mom.v.par_chunks_mut(CHUNK))
        .for_each(|(((p, g), m), v)| {
            for i in 0..p.len() {
                let nm = m[i] * b1 + g[i] * c1;
                let nv = v[i] * b2 + g[i] * g[i] * c2;
                m[i] = nm;
                v[i] = nv;
                p[i] -= (nm * scale_m) / ((nv * scale_v).sqrt() + eps) * lr;
            }
        });
}

impl SparseTrainer {
    /// A trainer from the initial weights: `w_dec` `[l, m*d]` (the encoder starts as its
    /// transpose), `b_enc` zero, `b_dec` `[m*d]` or `[d]` (shared, fixed).
    pub fn new(spec: Spec, w_dec: Vec<f32>, b_dec: Vec<f32>) -> Self {
        let (md, l) = (spec.m * spec.d, spec.l);
        SparseTrainer {
            spec,
            w_enc_t: w_dec.clone(),
            w_dec,
            b_enc: vec![0.0; l],
            moments: [
                Moments::new(l * md),
                Moments::new(l * md),
                Moments::new(l),
                Moments::new(b_dec.len()),
            ],
            b_dec,
            step_t: 0,
        }
    }

    /// The decoder bias as `[m*d]`.
    fn full_b_dec(&self) -> Vec<f32> {
        if self.spec.shared {
            self.b_dec.repeat(self.spec.m)
        } else {
            self.b_dec.clone()
        }
    }

    /// Latent `j`'s score weight `Σ_m ‖W_dec[m, j]‖`, `[l]`.
    fn code_norms(&self) -> Vec<f32> {
        let d = self.spec.d;
        self.w_dec
            .par_chunks(self.spec.m * d)
            .map(|row| {
                row.chunks(d)
                    .map(|r| r.iter().map(|v| v * v).sum::<f32>().sqrt())
                    .sum()
            })
            .collect()
    }

    /// One optimisation step on the normalised batch `x` (`[b, m*d]` row-major) at learning
    /// rate `lr`; `dead` is updated with the batch's kept latents. Returns an error (and leaves
    /// the weights as they were) if the loss is not finite.
    pub fn step(&mut self, x: &[f32], lr: f64, dead: &mut Dead, step: usize) -> Result<StepOut> {
        let (grads, out) = self.gradients(x, dead)?;
        super::train::finite(out.loss, step)?;
        self.apply(&grads, lr);
        Ok(out)
    }

    /// The loss of the batch `x` (`[b, m*d]`) and its gradients with respect to the trained
    /// parameters; `dead` is updated with the batch's kept latents.
    fn gradients(&self, x: &[f32], dead: &mut Dead) -> Result<(Grads, StepOut)> {
        let (md, l) = (self.spec.m * self.spec.d, self.spec.l);
        let b = x.len() / md;
        let bd = self.full_b_dec(); // [md]

        // Forward: the centred input and the dense encoder.
        let mut xc = x.to_vec(); // [b, md]
        xc.par_chunks_mut(md).for_each(|r| {
            r.iter_mut().zip(&bd).for_each(|(v, c)| *v -= c);
        });
        let pre = Tensor::from_slice(&xc, (b, md), &Device::Cpu)?
            .matmul(&Tensor::from_slice(&self.w_enc_t, (l, md), &Device::Cpu)?.t()?)? // [b, l]
            .flatten_all()?
            .to_vec1::<f32>()?;
        let mut act = pre; // [b, l]: relu(pre + b_enc)
        act.par_chunks_mut(l).for_each(|r| {
            r.iter_mut()
                .zip(&self.b_enc)
                .for_each(|(v, c)| *v = (*v + c).max(0.0));
        });
        let norms = self.code_norms(); // [l]
        let mut score = act.clone(); // [b, l]
        score.par_chunks_mut(l).for_each(|r| {
            r.iter_mut().zip(&norms).for_each(|(v, c)| *v *= c);
        });
        let (mask, min_kept) = select::batch_topk(&score, self.spec.k * b);
        let mut main = Kept::from_mask(&mask, &act, l);
        let (dead_now, n_dead) = dead.update(&mask, b);

        // The reconstruction error e = x - x_hat = xc - Σ_kept a W_dec[j], per token.
        let w_dec = &self.w_dec;
        let decode_sub = |base: &mut [f32], kept: &Kept, t: usize| {
            for e in kept.ptr[t]..kept.ptr[t + 1] {
                let j = kept.latent[e] as usize;
                axpy(base, -kept.act[e], &w_dec[j * md..(j + 1) * md]);
            }
        };
        let mut err = xc.clone(); // [b, md]
        err.par_chunks_mut(md)
            .enumerate()
            .for_each(|(t, r)| decode_sub(r, &main, t));
        let sq = |v: &[f32]| -> f64 {
            v.par_chunks(md)
                .map(|r| r.iter().map(|x| (x * x) as f64).sum::<f64>())
                .collect::<Vec<f64>>()
                .iter()
                .sum::<f64>()
        };
        let mse = sq(&err) / b as f64;

        // AuxK: each token's highest-scoring dead latents reconstruct the (detached) error.
        let use_aux = n_dead > 0 && self.spec.aux_coeff > 0.0;
        let (mut aux, aux_res) = if use_aux {
            let aux_mask =
                select::topk_rows(&score, l, self.spec.aux_k.min(n_dead), Some(&dead_now));
            let aux = Kept::from_mask(&aux_mask, &act, l);
            let mut r = err.clone(); // [b, md]: e - e_hat
            r.par_chunks_mut(md)
                .enumerate()
                .for_each(|(t, row)| decode_sub(row, &aux, t));
            (aux, r)
        } else {
            (Kept::default(), Vec::new())
        };
        let aux_loss = use_aux.then(|| sq(&aux_res) / b as f64);
        let loss = mse + self.spec.aux_coeff * aux_loss.unwrap_or(0.0);

        // Backward. Upstream gradients: of x_hat, -2 e / b; of e_hat, -2 α (e - e_hat) / b.
        let (cx, ch) = (
            -2.0 / b as f32,
            (-2.0 * self.spec.aux_coeff / b as f64) as f32,
        );
        // The kept codes' gradients (relu passes them: every kept activation is positive).
        let code_grads = |kept: &mut Kept, up: &[f32], c: f32| {
            let Kept {
                ptr, latent, grad, ..
            } = kept;
            let ptr = &*ptr;
            let latent = &*latent;
            let mut rows: Vec<&mut [f32]> = Vec::with_capacity(ptr.len());
            let mut rest = grad.as_mut_slice();
            for t in 0..ptr.len().saturating_sub(1) {
                let (a, tail) = rest.split_at_mut(ptr[t + 1] - ptr[t]);
                rows.push(a);
                rest = tail;
            }
            rows.into_par_iter().enumerate().for_each(|(t, g)| {
                let u = &up[t * md..(t + 1) * md];
                for (i, g) in g.iter_mut().enumerate() {
                    let j = latent[ptr[t] + i] as usize;
                    *g = c * dot(u, &w_dec[j * md..(j + 1) * md]);
                }
            });
        };
        code_grads(&mut main, &err, cx);
        if use_aux {
            code_grads(&mut aux, &aux_res, ch);
        }
        let (main_cols, main_by) = main.by_latent(l);
        let (aux_cols, aux_by) = aux.by_latent(l);

        // Per latent j: dW_dec[j] = Σ a (c_x e_t) + Σ_aux a (c_h r_t); dW_enc^T[j] = Σ g xc_t;
        // db_enc[j] = Σ g.
        let mut g_dec = vec![0f32; l * md];
        let mut g_enc = vec![0f32; l * md];
        let mut g_benc = vec![0f32; l];
        g_dec
            .par_chunks_mut(md)
            .zip(g_enc.par_chunks_mut(md))
            .zip(g_benc.par_iter_mut())
            .enumerate()
            .for_each(|(j, ((gd, ge), gb))| {
                for &(t, e) in &main_by[main_cols[j]..main_cols[j + 1]] {
                    let (t, e) = (t as usize, e as usize);
                    axpy(gd, cx * main.act[e], &err[t * md..(t + 1) * md]);
                    axpy(ge, main.grad[e], &xc[t * md..(t + 1) * md]);
                    *gb += main.grad[e];
                }
                for &(t, e) in &aux_by[aux_cols[j]..aux_cols[j + 1]] {
                    let (t, e) = (t as usize, e as usize);
                    axpy(gd, ch * aux.act[e], &aux_res[t * md..(t + 1) * md]);
                    axpy(ge, aux.grad[e], &xc[t * md..(t + 1) * md]);
                    *gb += aux.grad[e];
                }
            });
        // db_dec = Σ_t c_x e_t - Σ_j db_enc[j] W_enc^T[j] (through x_hat and through xc).
        let g_bdec = (!self.spec.shared).then(|| {
            let mut g = vec![0f32; md];
            g.par_chunks_mut(256).enumerate().for_each(|(c, gc)| {
                let lo = c * 256;
                for t in 0..b {
                    axpy(gc, cx, &err[t * md + lo..t * md + lo + gc.len()]);
                }
                for (j, &gb) in g_benc.iter().enumerate() {
                    axpy(gc, -gb, &self.w_enc_t[j * md + lo..j * md + lo + gc.len()]);
                }
            });
            g
        });

        // The batch's variance (for the fraction of variance unexplained).
        let mut mean = vec![0f64; md];
        for row in x.chunks(md) {
            mean.iter_mut().zip(row).for_each(|(a, &v)| *a += v as f64);
        }
        mean.iter_mut().for_each(|a| *a /= b as f64);
        let var = x
            .chunks(md)
            .map(|row| {
                row.iter()
                    .zip(&mean)
                    .map(|(&v, a)| (v as f64 - a).powi(2))
                    .sum::<f64>()
            })
            .sum::<f64>()
            / b as f64;
        let grads = Grads {
            w_enc_t: g_enc,
            w_dec: g_dec,
            b_enc: g_benc,
            b_dec: g_bdec,
        };
        let out = StepOut {
            loss,
            mse,
            aux: aux_loss,
            var,
            n_dead,
            min_kept,
        };
        Ok((grads, out))
    }

    /// AdamW's update at learning rate `lr`, then the decoder scale fixed:
    /// `Σ_m ‖W_dec[m, j]‖ = 1`, the encoder compensating.
    fn apply(&mut self, g: &Grads, lr: f64) {
        let md = self.spec.m * self.spec.d;
        self.step_t += 1;
        let [m_enc, m_dec, m_benc, m_bdec] = &mut self.moments;
        adamw(&mut self.w_enc_t, &g.w_enc_t, m_enc, lr, self.step_t);
        adamw(&mut self.w_dec, &g.w_dec, m_dec, lr, self.step_t);
        adamw(&mut self.b_enc, &g.b_enc, m_benc, lr, self.step_t);
        if let Some(g) = &g.b_dec {
            adamw(&mut self.b_dec, g, m_bdec, lr, self.step_t);
        }
        let c: Vec<f32> = self
            .code_norms()
            .into_iter()
            .map(|c| c.max(1e-12))
            .collect(); // [l]
        self.w_dec
            .par_chunks_mut(md)
            .zip(self.w_enc_t.par_chunks_mut(md))
            .zip(c.par_iter())
            .for_each(|((wd, we), &c)| {
                wd.iter_mut().for_each(|v| *v /= c);
                we.iter_mut().for_each(|v| *v *= c);
            });
        self.b_enc.iter_mut().zip(&c).for_each(|(v, c)| *v *= c);
    }

    /// The weights as tensors on the CPU: `W_enc` `[m*d, l]`, `b_enc` `[l]`, `W_dec`
    /// `[l, m*d]`, `b_dec` `[m*d]`.
    pub fn weights(&self) -> Result<(Tensor, Tensor, Tensor, Tensor)> {
        let (md, l) = (self.spec.m * self.spec.d, self.spec.l);
        let dev = Device::Cpu;
        Ok((
            Tensor::from_slice(&self.w_enc_t, (l, md), &dev)?
                .t()?
                .contiguous()?,
            Tensor::from_slice(&self.b_enc, l, &dev)?,
            Tensor::from_slice(&self.w_dec, (l, md), &dev)?,
            Tensor::from_vec(self.full_b_dec(), md, &dev)?,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Var, D};

    /// Uniform values in [-1, 1) from a seeded generator.
    fn uniform(n: usize, seed: u64) -> Vec<f32> {
        let mut rng = crate::data::SplitMix64::new(seed);
        (0..n)
            .map(|_| ((rng.next_u64() >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0)
            .collect()
    }

    fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
        assert_eq!(a.len(), b.len());
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f32::max)
    }

    /// The written-out gradients equal candle's autograd of the same loss (BatchTopK
    /// reconstruction plus AuxK, with dead latents), per model bias and shared bias.
    #[test]
    fn gradients_match_candle_autograd() {
        let (m, d, l, b, k, aux_k, alpha) = (2, 12, 24, 16, 3, 5, 0.5);
        let md = m * d;
        let dev = Device::Cpu;
        for shared in [false, true] {
            let w_dec = uniform(l * md, 1);
            let b_dec = uniform(if shared { d } else { md }, 2);
            let spec = Spec {
                m,
                d,
                l,
                k,
                aux_k,
                aux_coeff: alpha,
                shared,
            };
            let mut tr = SparseTrainer::new(spec, w_dec, b_dec);
            tr.w_enc_t = uniform(l * md, 3); // not the decoder's transpose
            tr.b_enc = uniform(l, 4).iter().map(|v| 0.2 * v).collect();
            let x = uniform(b * md, 5);
            // Latents not kept in this batch are dead at once, so AuxK has work.
            let mut dead = Dead::new(l, 1);
            let (g, out) = tr.gradients(&x, &mut dead).unwrap();
            assert!(out.n_dead > 0 && out.aux.is_some());

            // The same loss with candle's ops and autograd.
            let xb = Tensor::from_slice(&x, (b, md), &dev).unwrap();
            let w_enc = Var::from_tensor(
                &Tensor::from_slice(&tr.w_enc_t, (l, md), &dev)
                    .unwrap()
                    .t()
                    .unwrap()
                    .contiguous()
                    .unwrap(),
            )
            .unwrap(); // [md, l]
            let w_dec = Var::from_slice(&tr.w_dec, (l, md), &dev).unwrap();
            let b_enc = Var::from_slice(&tr.b_enc, l, &dev).unwrap();
            let b_dec = Var::from_slice(&tr.b_dec, tr.b_dec.len(), &dev).unwrap();
            let loss = (|| -> candle_core::Result<Tensor> {
                let bd = if shared {
                    b_dec.as_tensor().repeat(m)?
                } else {
                    b_dec.as_tensor().clone()
                }; // [md]
                let pre = xb
                    .broadcast_sub(&bd)?
                    .matmul(w_enc.as_tensor())?
                    .broadcast_add(b_enc.as_tensor())?; // [b, l]
                let act = pre.relu()?;
                let norms = w_dec
                    .as_tensor()
                    .reshape((l, m, d))?
                    .sqr()?
                    .sum(D::Minus1)?
                    .sqrt()?
                    .sum(1)?; // [l]
                let score = act.broadcast_mul(&norms)?.flatten_all()?.to_vec1::<f32>()?;
                let (mask, _) = select::batch_topk(&score, k * b);
                let mut dead = Dead::new(l, 1);
                let (dead_now, n_dead) = dead.update(&mask, b);
                let aux_mask = select::topk_rows(&score, l, aux_k.min(n_dead), Some(&dead_now));
                let f = (&act * Tensor::from_slice(&mask, (b, l), &dev)?)?;
                let err = (&xb - f.matmul(w_dec.as_tensor())?.broadcast_add(&bd)?)?; // [b, md]
                let f_aux = (&act * Tensor::from_slice(&aux_mask, (b, l), &dev)?)?;
                let r = (err.detach() - f_aux.matmul(w_dec.as_tensor())?)?;
                let mse = (err.sqr()?.sum_all()? / b as f64)?;
                let aux = (r.sqr()?.sum_all()? / b as f64)?;
                mse + (aux * alpha)?
            })()
            .unwrap();
            let want = loss.to_scalar::<f32>().unwrap() as f64;
            assert!(
                (out.loss - want).abs() <= 1e-5 * want,
                "loss {} vs {want}",
                out.loss
            );
            let grads = loss.backward().unwrap();
            let vec = |v: &Var| {
                grads
                    .get(v.as_tensor())
                    .unwrap()
                    .flatten_all()
                    .unwrap()
                    .to_vec1::<f32>()
                    .unwrap()
            };
            let g_enc_t = Tensor::from_slice(&vec(&w_enc), (md, l), &dev)
                .unwrap()
                .t()
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            // Measured: at most 7.6e-6 apart (b_dec and W_enc) on gradients up to 35 in size
            // (f32 rounding, about 2e-7 relative).
            let diffs = [
                max_abs_diff(&g.w_enc_t, &g_enc_t),
                max_abs_diff(&g.w_dec, &vec(&w_dec)),
                max_abs_diff(&g.b_enc, &vec(&b_enc)),
            ];
            let scale = g
                .w_enc_t
                .iter()
                .chain(&g.w_dec)
                .fold(0f32, |a, v| a.max(v.abs()));
            eprintln!(
                "shared {shared}: max |diff| W_enc, W_dec, b_enc {diffs:?}; max |grad| {scale}"
            );
            assert!(diffs.iter().all(|&e| e < 1e-4), "{diffs:?}");
            match &g.b_dec {
                Some(gb) => {
                    let e = max_abs_diff(gb, &vec(&b_dec));
                    eprintln!("b_dec {e}");
                    assert!(e < 1e-4, "b_dec {e}");
                }
                None => assert!(shared),
            }
        }
    }
}
