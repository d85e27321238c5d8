//! The subspaces: second moments of the per-token differences, their top eigenvectors (subspace
//! iteration with Rayleigh-Ritz), random bases and the projections patched.

use super::*;

// ---------------------------------------------------------------------------------------------
// Subspaces.

/// Second moment of the per-token differences at one layer, from the training items.
pub(super) struct Moments {
    /// `sum over tokens of delta delta^T`, `[d, d]` row-major f64.
    pub(super) gram: Vec<f64>,
    /// `sum over tokens of delta`, `[d]`.
    pub(super) sum: Vec<f64>,
}

/// The moments of `tuned - base` at `family`'s point of each of `layers` over every real token of
/// `prompts`.
pub(super) fn moments(
    eng: &Engine,
    prompts: &[AbCase],
    layers: &[usize],
    progress: bool,
) -> Result<BTreeMap<usize, Moments>> {
    let d = eng.base.config().d_model;
    let mut out: BTreeMap<usize, Moments> = layers
        .iter()
        .map(|&l| {
            (
                l,
                Moments {
                    gram: vec![0.0; d * d],
                    sum: vec![0.0; d],
                },
            )
        })
        .collect();
    let points: Vec<HookPoint> = layers.iter().map(|&l| eng.family.point(l)).collect();
    let lens: Vec<usize> = prompts.iter().map(|c| c.ids.len()).collect();
    let batches = length_batches(&lens, eng.batch_size);
    let mut bar = Progress::new("patching: training differences", batches.len(), progress);
    for idx in batches {
        let ids: Vec<&[u32]> = idx.iter().map(|&i| prompts[i].ids.as_slice()).collect();
        let batch = Batch::new(&ids)?;
        let cb = eng.base.cache(&batch, |p| points.contains(&p))?;
        let ct = eng.tuned.cache(&batch, |p| points.contains(&p))?;
        for (&l, m) in out.iter_mut() {
            let p = eng.family.point(l);
            let delta = (ct.require(p)? - cb.require(p)?)?; // [b, s, d_model]
            let mut rows = Vec::new();
            for (i, &pad) in batch.pads().iter().enumerate() {
                rows.push(delta.get(i)?.narrow(0, pad, batch.seq_len() - pad)?);
                // [len_i, d_model]
            }
            let x = Tensor::cat(&rows, 0)?.to_dtype(DType::F32)?; // [tokens, d_model]
            let g: Vec<f32> = x.t()?.matmul(&x)?.flatten_all()?.to_vec1()?; // [d * d]
            let s: Vec<f32> = x.sum(0)?.to_vec1()?; // [d]
            m.gram
                .iter_mut()
                .zip(&g)
                .for_each(|(a, &b)| *a += f64::from(b));
            m.sum
                .iter_mut()
                .zip(&s)
                .for_each(|(a, &b)| *a += f64::from(b));
        }
        bar.advance(1);
    }
    bar.finish();
    Ok(out)
}

/// The top `k` eigenvalues (decreasing) and eigenvectors (`k` columns of length `d`) of a
/// symmetric positive semi-definite `d x d` matrix (row-major): subspace iteration on `k + 8`
/// columns with a Rayleigh-Ritz step (Jacobi on the small projected matrix) every iteration,
/// until the top `k` values move by less than 1e-12 of the largest (at most 200 iterations).
pub(crate) fn top_eigen(
    a: &[f64],
    d: usize,
    k: usize,
    seed: u64,
) -> Result<(Vec<f64>, Vec<Vec<f64>>)> {
    let m = (k + 8).min(d);
    let at = Tensor::from_slice(a, (d, d), &candle_core::Device::Cpu)?; // [d, d]
                                                                        // Rows of the result are A q for each column q (A is symmetric).
    let times_a = |q: &[Vec<f64>]| -> Result<Vec<Vec<f64>>> {
        let flat: Vec<f64> = q.iter().flatten().copied().collect();
        let t = Tensor::from_vec(flat, (q.len(), d), &candle_core::Device::Cpu)?; // [m, d]
        Ok(t.matmul(&at)?.to_vec2()?) // [m, d]
    };
    let mut rng = SplitMix64::new(seed);
    let mut q: Vec<Vec<f64>> = (0..m)
        .map(|_| (0..d).map(|_| gaussian(&mut rng)).collect())
        .collect();
    orthonormalise(&mut q);
    let mut prev = vec![f64::INFINITY; k];
    for _ in 0..200 {
        let aq = times_a(&q)?;
        let (vals, rot) = rayleigh_ritz(&q, &aq);
        q = rotate(&q, &rot);
        let top = vals[0].abs().max(f64::MIN_POSITIVE);
        let moved = vals
            .iter()
            .take(k)
            .zip(&prev)
            .map(|(v, p)| (v - p).abs() / top)
            .fold(0.0, f64::max);
        prev = vals[..k].to_vec();
        if moved < 1e-12 {
            break;
        }
        let mut z = rotate(&aq, &rot);
        orthonormalise(&mut z);
        q = z;
    }
    Ok((prev, q.into_iter().take(k).collect()))
}

/// Eigenvalues (decreasing) of `Q^T A Q` (from `Q` and `A Q`) and the rotation of `Q`'s columns
/// that diagonalises it.
pub(super) fn rayleigh_ritz(q: &[Vec<f64>], aq: &[Vec<f64>]) -> (Vec<f64>, Vec<Vec<f64>>) {
    let m = q.len();
    let mut t = vec![0.0; m * m];
    for i in 0..m {
        for j in 0..m {
            t[i * m + j] = 0.5 * (dot(&q[i], &aq[j]) + dot(&q[j], &aq[i]));
        }
    }
    let (vals, vecs) = jacobi(&mut t, m);
    let mut order: Vec<usize> = (0..m).collect();
    order.sort_by(|&i, &j| vals[j].total_cmp(&vals[i]));
    (
        order.iter().map(|&i| vals[i]).collect(),
        order
            .iter()
            .map(|&i| (0..m).map(|r| vecs[r * m + i]).collect())
            .collect(),
    )
}

/// New columns `sum_r rot[c][r] q[r]`.
pub(super) fn rotate(q: &[Vec<f64>], rot: &[Vec<f64>]) -> Vec<Vec<f64>> {
    rot.iter()
        .map(|w| {
            let mut v = vec![0.0; q[0].len()];
            for (c, col) in w.iter().zip(q) {
                v.iter_mut().zip(col).for_each(|(a, b)| *a += c * b);
            }
            v
        })
        .collect()
}

/// Cyclic Jacobi eigendecomposition of a small symmetric matrix (row-major, overwritten):
/// eigenvalues and eigenvectors as the columns of a row-major `m x m` matrix.
pub(super) fn jacobi(a: &mut [f64], m: usize) -> (Vec<f64>, Vec<f64>) {
    let mut v = vec![0.0; m * m];
    (0..m).for_each(|i| v[i * m + i] = 1.0);
    for _ in 0..100 {
        let off: f64 = (0..m)
            .flat_map(|i| (0..m).filter(move |&j| j != i).map(move |j| (i, j)))
            .map(|(i, j)| a[i * m + j] * a[i * m + j])
            .sum();
        let diag: f64 = (0..m).map(|i| a[i * m + i] * a[i * m + i]).sum();
        if off <= 1e-30 * diag.max(f64::MIN_POSITIVE) {
            break;
        }
        for p in 0..m {
            for r in p + 1..m {
                let apr = a[p * m + r];
                if apr == 0.0 {
                    continue;
                }
                let theta = (a[r * m + r] - a[p * m + p]) / (2.0 * apr);
                let sign = if theta >= 0.0 { 1.0 } else { -1.0 };
                let t = sign / (theta.abs() + (theta * theta + 1.0).sqrt());
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                for k in 0..m {
                    let (akp, akr) = (a[k * m + p], a[k * m + r]);
                    a[k * m + p] = c * akp - s * akr;
                    a[k * m + r] = s * akp + c * akr;
                }
                for k in 0..m {
                    let (apk, ark) = (a[p * m + k], a[r * m + k]);
                    a[p * m + k] = c * apk - s * ark;
                    a[r * m + k] = s * apk + c * ark;
                }
                for k in 0..m {
                    let (vkp, vkr) = (v[k * m + p], v[k * m + r]);
                    v[k * m + p] = c * vkp - s * vkr;
                    v[k * m + r] = s * vkp + c * vkr;
                }
            }
        }
    }
    ((0..m).map(|i| a[i * m + i]).collect(), v)
}

pub(super) fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Modified Gram-Schmidt, twice for stability; a column that vanishes becomes zero.
pub(super) fn orthonormalise(q: &mut [Vec<f64>]) {
    for _ in 0..2 {
        for i in 0..q.len() {
            let (done, rest) = q.split_at_mut(i);
            let v = &mut rest[0];
            for u in done.iter() {
                let c = dot(u, v);
                v.iter_mut().zip(u).for_each(|(a, b)| *a -= c * b);
            }
            let n = dot(v, v).sqrt();
            if n > 1e-300 {
                v.iter_mut().for_each(|a| *a /= n);
            } else {
                v.iter_mut().for_each(|a| *a = 0.0);
            }
        }
    }
}

/// A standard normal draw (Box-Muller).
pub(super) fn gaussian(rng: &mut SplitMix64) -> f64 {
    let u = ((rng.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
    let v = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
    (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
}

/// `k` random orthonormal directions in `d` dimensions.
pub(super) fn random_basis(d: usize, k: usize, seed: u64) -> Vec<Vec<f64>> {
    let mut rng = SplitMix64::new(seed);
    let mut q: Vec<Vec<f64>> = (0..k)
        .map(|_| (0..d).map(|_| gaussian(&mut rng)).collect())
        .collect();
    orthonormalise(&mut q);
    q
}

/// Columns as a `[d, k]` tensor in the model's dtype and device.
pub(super) fn span(model: &Model, cols: &[Vec<f64>]) -> Result<Sub> {
    let (d, k) = (cols[0].len(), cols.len());
    let mut flat = vec![0f32; d * k];
    for (j, c) in cols.iter().enumerate() {
        for (i, &x) in c.iter().enumerate() {
            flat[i * k + j] = x as f32;
        }
    }
    Ok(Sub::Span(
        Tensor::from_vec(flat, (d, k), model.device())?.to_dtype(model.dtype())?,
    ))
}
