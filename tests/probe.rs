//! Linear probes: known-answer properties (no Python needed) and the data for the scikit-learn
//! cross-check.
//!
//! `crosscheck_data_and_ours` writes `target/probe-crosscheck/{data.safetensors, ours.json,
//! ours.safetensors}`; `python3 scripts/sklearn_crosscheck.py` then fits scikit-learn on the same
//! data with the same L2 strengths and compares per-layer test accuracies (within 1 point).
//!
//! Every threshold below follows from how the data is built; the comment beside it says how.

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};
use puppetlens::probe::{
    self, fit_diff_of_means, fit_logistic, logistic_objective_grad, solve_logistic_batched, sweep,
    transfer, ProbeKind, ProbeOptions,
};
use puppetlens::Error;

// ---------------------------------------------------------------------------------------------
// Seeded synthetic data (own generator, so the data never changes with a dependency's version).

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn uniform(&mut self) -> f64 {
        ((self.next() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }
    fn normal(&mut self) -> f64 {
        let (u, v) = (self.uniform(), self.uniform());
        (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
    }
    fn unit(&mut self, d: usize) -> Vec<f64> {
        let v: Vec<f64> = (0..d).map(|_| self.normal()).collect();
        let norm = v.iter().map(|a| a * a).sum::<f64>().sqrt();
        v.into_iter().map(|a| a / norm).collect()
    }
    fn labels(&mut self, n: usize, p: f64) -> Vec<bool> {
        (0..n).map(|_| self.uniform() < p).collect()
    }
}

fn tensor(rows: &[Vec<f64>]) -> Tensor {
    let (n, d) = (rows.len(), rows.first().map_or(0, Vec::len));
    let flat: Vec<f32> = rows.iter().flatten().map(|&v| v as f32).collect();
    Tensor::from_vec(flat, (n, d), &Device::Cpu).unwrap() // [n, d]
}

/// Isotropic N(0, 1) noise plus `(y ? pos : neg) · u` along the unit vector `u`.
fn planted(rng: &mut Rng, y: &[bool], u: &[f64], pos: f64, neg: f64) -> Tensor {
    let rows: Vec<Vec<f64>> = y
        .iter()
        .map(|&t| {
            let a = if t { pos } else { neg };
            u.iter().map(|&uj| rng.normal() + a * uj).collect()
        })
        .collect();
    tensor(&rows)
}

/// erf by Abramowitz and Stegun 7.1.26 (absolute error < 1.5e-7).
fn erf(x: f64) -> f64 {
    let t = 1.0 / (1.0 + 0.327_591_1 * x.abs());
    let poly = t
        * (0.254_829_592
            + t * (-0.284_496_736
                + t * (1.421_413_741 + t * (-1.453_152_027 + t * 1.061_405_429))));
    (1.0 - poly * (-x * x).exp()).copysign(x)
}

fn cosine(a: &[f64], b: &[f64]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na: f64 = a.iter().map(|x| x * x).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| x * x).sum::<f64>().sqrt();
    dot / (na * nb)
}

fn to_f64(t: &Tensor) -> Vec<f64> {
    t.to_dtype(DType::F64).unwrap().to_vec1::<f64>().unwrap()
}

// ---------------------------------------------------------------------------------------------
// Known answers.

/// Classes 12 noise standard deviations apart along a planted direction (means ±6, N(0, 1) noise
/// in every direction, d = 64, 400 training items): the training data is separable (a point
/// crosses the midpoint with probability Φ(-6) ≈ 1e-9) and any fitted direction w with
/// cos(w, u) ≥ 0.5 misclassifies a test point with probability ≤ Φ(-3) ≈ 0.13%. So test accuracy
/// ≥ 0.99 (at most 2 errors in 200) and AUROC ≥ 0.99 unless the fit is broken.
#[test]
fn separable_direction_gives_accuracy_and_auroc_near_one() {
    let mut rng = Rng(11);
    let d = 64;
    let u = rng.unit(d);
    let mk = |rng: &mut Rng, n| {
        let y = rng.labels(n, 0.5);
        (vec![planted(rng, &y, &u, 6.0, -6.0)], y)
    };
    let (tr, ytr) = mk(&mut rng, 400);
    let (va, yva) = mk(&mut rng, 200);
    let (te, yte) = mk(&mut rng, 200);
    let rep = sweep(&tr, &ytr, &va, &yva, &te, &yte, &ProbeOptions::default()).unwrap();
    let t = &rep[0].test;
    assert!(t.accuracy >= 0.99, "{t:?}");
    assert!(t.auroc >= 0.99, "{t:?}");
    assert!(rep[0].grad_norm <= 1e-6);
}

/// Labels independent of the activations: test accuracy is Binomial(400, p)/400 with p = 1/2 for
/// any fitted probe, so |accuracy - 0.5| ≤ 4 standard deviations (4 · 0.025 = 0.1) fails with
/// probability 6e-5; the 95% bootstrap intervals contain 0.5 with probability about 0.95 each
/// (one fixed seed, not tuned).
#[test]
fn pure_noise_gives_chance() {
    let mut rng = Rng(22);
    let d = 64;
    let zero = vec![0.0; d];
    let mk = |rng: &mut Rng, n| {
        let y = rng.labels(n, 0.5);
        (vec![planted(rng, &y, &zero, 0.0, 0.0)], y)
    };
    let (tr, ytr) = mk(&mut rng, 400);
    let (va, yva) = mk(&mut rng, 200);
    let (te, yte) = mk(&mut rng, 400);
    let rep = sweep(&tr, &ytr, &va, &yva, &te, &yte, &ProbeOptions::default()).unwrap();
    let t = &rep[0].test;
    assert!((t.accuracy - 0.5).abs() <= 0.1, "{t:?}");
    assert!((t.auroc - 0.5).abs() <= 0.1, "{t:?}");
    assert!(t.accuracy_ci.0 <= 0.5 && 0.5 <= t.accuracy_ci.1, "{t:?}");
    assert!(t.auroc_ci.0 <= 0.5 && 0.5 <= t.auroc_ci.1, "{t:?}");
}

/// Positives shifted by 3·u from negatives (plus a common offset of 5 in every coordinate), N(0,1)
/// noise, d = 64, 400 items: the estimated mean difference is 3u + e with
/// e ~ N(0, (1/n_pos + 1/n_neg) I), E||e||² ≈ 64 · 0.01 = 0.64, so cos ≈ 3/√9.64 ≈ 0.97; cos < 0.9
/// would need ||e||² > 2.1, over 3× its mean for a χ²(64) variable (probability < 1e-15). The
/// midpoint threshold then classifies with the Bayes error Φ(-1.5) ≈ 6.7%: test accuracy ≥ 0.85
/// is 3 binomial standard deviations (0.018 at n = 400) below 0.933, with slack for the estimate.
#[test]
fn diff_of_means_recovers_planted_shift() {
    let mut rng = Rng(33);
    let d = 64;
    let u = rng.unit(d);
    let offset = vec![5.0; d];
    let mk = |rng: &mut Rng, n| {
        let y = rng.labels(n, 0.5);
        let x = planted(rng, &y, &u, 3.0, 0.0);
        let off = Tensor::from_vec(
            offset.iter().map(|&v| v as f32).collect::<Vec<_>>(),
            (1, d),
            &Device::Cpu,
        )
        .unwrap();
        (vec![x.broadcast_add(&off).unwrap()], y)
    };
    let (tr, ytr) = mk(&mut rng, 400);
    let (te, yte) = mk(&mut rng, 400);
    let probes = fit_diff_of_means(&tr, &ytr).unwrap();
    assert_eq!(probes[0].kind, ProbeKind::DiffOfMeans);
    let cos = cosine(&to_f64(&probes[0].weight), &u);
    assert!(cos > 0.9, "cosine {cos}");
    let m = probes[0]
        .evaluate(&te[0], &yte, &ProbeOptions::default())
        .unwrap();
    assert!(m.accuracy >= 0.85, "{m:?}");
}

/// Closed form: items at x = c + s·(±1) (scale s, offset c), half of each side's labels mirrored
/// so that the positive fraction at the upper point is p = k/m and at the lower point 1 - p. By
/// symmetry the standardized bias is 0 and the weight w* solves σ(w) - p + l2·w = 0 (the mean-loss
/// gradient), found here by bisection. Newton-CG stops at gradient ≤ tol; the curvature there is
/// ≥ σ'(w*) + l2, so |w - w*| ≤ tol / (σ'(w*) + l2). In raw coordinates the weight is w*/s and the
/// bias -w*·c/s (tests the fold-back of the standardization).
#[test]
fn one_dimensional_closed_form() {
    let (m, k) = (50usize, 40usize); // p = 0.8
    let (c, s) = (5.0f64, 2.0f64);
    let mut rows = Vec::new();
    let mut y = Vec::new();
    for i in 0..m {
        rows.push(vec![c + s]);
        y.push(i < k);
        rows.push(vec![c - s]);
        y.push(i >= k);
    }
    let x = vec![tensor(&rows)];
    let p = k as f64 / m as f64;
    for &l2 in &[1e-3, 0.1, 1.0] {
        let (mut lo, mut hi) = (-50.0f64, 50.0f64);
        for _ in 0..200 {
            let mid = 0.5 * (lo + hi);
            if 1.0 / (1.0 + (-mid).exp()) - p + l2 * mid > 0.0 {
                hi = mid;
            } else {
                lo = mid;
            }
        }
        let w_star = 0.5 * (lo + hi);
        let sig = 1.0 / (1.0 + (-w_star).exp());
        let opts = ProbeOptions {
            l2_grid: vec![l2],
            ..ProbeOptions::default()
        };
        let bound = opts.tol / (sig * (1.0 - sig) + l2) + 1e-6 * w_star.abs(); // + f32 storage
        let probe = &fit_logistic(&x, &y, &x, &y, &opts).unwrap()[0];
        let w = to_f64(&probe.weight)[0];
        assert!(
            (w * s - w_star).abs() <= bound,
            "l2 {l2}: w {} vs {w_star}",
            w * s
        );
        assert!(
            (probe.bias + w_star * c / s).abs() <= bound * c,
            "bias {}",
            probe.bias
        );
        assert_eq!(probe.l2, l2);
    }
}

/// The batched solver's answer, checked by the independent host-side gradient: for every layer
/// and every grid value the ∞-norm is at most tol (f64 rounding between the two computations is
/// ~1e-15, far below tol = 1e-8). Layers range from pure noise to separable, and the smallest l2
/// makes the separable ones ill-conditioned.
#[test]
fn batched_solver_gradient_below_tol() {
    let mut rng = Rng(44);
    let (n, d) = (300usize, 40usize);
    let y = rng.labels(n, 0.4);
    let shifts = [0.0, 1.0, 3.0, 12.0];
    let mut layers = Vec::new();
    for &sh in &shifts {
        let u = rng.unit(d);
        // Anisotropic: coordinate j scaled by 1 + j/4.
        let rows: Vec<Vec<f64>> = y
            .iter()
            .map(|&t| {
                (0..d)
                    .map(|j| {
                        rng.normal() * (1.0 + j as f64 / 4.0) + if t { sh * u[j] } else { 0.0 }
                    })
                    .collect()
            })
            .collect();
        layers.push(tensor(&rows));
    }
    let x = Tensor::stack(&layers, 0).unwrap(); // [L, n, d]
    let grid = [1e-4, 1e-2, 1.0];
    let tol = 1e-8;
    let sol = solve_logistic_batched(&x, &y, &grid, 100, tol).unwrap();
    assert!(sol.converged, "{:?}", sol.grad_norm);
    for (l, layer) in layers.iter().enumerate() {
        for (g, &l2) in grid.iter().enumerate() {
            let c = &sol.coef[l][g];
            let (_, grad) = logistic_objective_grad(layer, &y, &c[..d], c[d], l2).unwrap();
            let inf = grad.iter().fold(0.0f64, |a, &v| a.max(v.abs()));
            assert!(inf <= tol, "layer {l} l2 {l2}: grad {inf:e}");
            assert!((inf - sol.grad_norm[l][g]).abs() <= 1e-12);
        }
    }
}

/// Transfer to the very same activations is evaluation, bit for bit.
#[test]
fn transfer_on_identical_data_equals_evaluation() {
    let mut rng = Rng(55);
    let d = 16;
    let u = rng.unit(d);
    let y = rng.labels(200, 0.5);
    let xs = vec![
        planted(&mut rng, &y, &u, 1.0, -1.0),
        planted(&mut rng, &y, &u, 2.0, -2.0),
    ];
    let opts = ProbeOptions::default();
    let probes = fit_logistic(&xs, &y, &xs, &y, &opts).unwrap();
    let moved = transfer(&probes, &xs, &y, &opts).unwrap();
    for (l, p) in probes.iter().enumerate() {
        assert_eq!(moved[l], p.evaluate(&xs[l], &y, &opts).unwrap());
        let s = p.scores(&xs[l]).unwrap();
        assert_eq!(s.dims(), &[200]);
        assert_eq!(s.dtype(), DType::F32);
    }
}

// ---------------------------------------------------------------------------------------------
// Errors.

fn ok_data(n: usize, d: usize) -> (Vec<Tensor>, Vec<bool>) {
    let mut rng = Rng(66);
    let u = rng.unit(d);
    let y: Vec<bool> = (0..n).map(|i| i % 2 == 0).collect();
    (
        vec![
            planted(&mut rng, &y, &u, 1.0, -1.0),
            planted(&mut rng, &y, &u, 1.0, -1.0),
        ],
        y,
    )
}

fn msg(e: Error) -> String {
    e.to_string()
}

#[test]
fn errors_empty_data() {
    let (x, y) = ok_data(40, 4);
    let opts = ProbeOptions::default();
    let e = fit_logistic(&[], &y, &x, &y, &opts).unwrap_err();
    assert!(matches!(e, Error::InvalidArgument { .. }) && msg(e).contains("train"));
    let empty = vec![Tensor::zeros((0, 4), DType::F32, &Device::Cpu).unwrap()];
    let e = fit_logistic(&empty, &[], &empty, &[], &opts).unwrap_err();
    let m = msg(e);
    assert!(
        m.contains("no items") && m.contains("[0, 4]") && m.contains("layer 0"),
        "{m}"
    );
    assert!(fit_diff_of_means(&[], &[]).is_err());
}

#[test]
fn errors_rows_vs_labels() {
    let (x, y) = ok_data(40, 4);
    let e = fit_logistic(&x, &y[..39], &x, &y, &ProbeOptions::default()).unwrap_err();
    let m = msg(e);
    assert!(
        m.contains("train, layer 0") && m.contains("[40, 4]") && m.contains("[39, d_model]"),
        "{m}"
    );
    let e = x[0].clone();
    let probes = fit_diff_of_means(&x, &y).unwrap();
    let m = msg(probes[0]
        .evaluate(&e, &y[..10], &ProbeOptions::default())
        .unwrap_err());
    assert!(m.contains("[40, 4]"), "{m}");
}

#[test]
fn errors_mismatched_d_model() {
    let (x, y) = ok_data(40, 4);
    let (x5, _) = ok_data(40, 5);
    let opts = ProbeOptions::default();
    // val has d_model 5 where train has 4.
    let e = fit_logistic(&x, &y, &x5, &y, &opts).unwrap_err();
    assert!(matches!(e, Error::Shape { .. }));
    let m = msg(e);
    assert!(
        m.contains("val, layer 0") && m.contains("[40, 4]") && m.contains("[40, 5]"),
        "{m}"
    );
    // test differs at layer 1 only.
    let mixed = vec![x[0].clone(), x5[1].clone()];
    let m = msg(sweep(&x, &y, &x, &y, &mixed, &y, &opts).unwrap_err());
    assert!(m.contains("test, layer 1") && m.contains("[40, 5]"), "{m}");
    // Different layer counts.
    let m = msg(sweep(&x, &y, &x[..1], &y, &x, &y, &opts).unwrap_err());
    assert!(m.contains("2 layers") && m.contains("1 layers"), "{m}");
    // transfer to a model with another d_model.
    let probes = fit_logistic(&x, &y, &x, &y, &opts).unwrap();
    let e = transfer(&probes, &x5, &y, &opts).unwrap_err();
    assert!(matches!(e, Error::Shape { .. }));
    let m = msg(e);
    assert!(
        m.contains("x_other, layer 0") && m.contains("[40, 4]") && m.contains("[40, 5]"),
        "{m}"
    );
    let m = msg(transfer(&probes, &x[..1], &y, &opts).unwrap_err());
    assert!(m.contains("2 layers"), "{m}");
    // Not a matrix.
    let cube = vec![Tensor::zeros((40, 2, 2), DType::F32, &Device::Cpu).unwrap()];
    let m = msg(fit_logistic(&cube, &y, &cube, &y, &opts).unwrap_err());
    assert!(
        m.contains("[40, 2, 2]") && m.contains("[n, d_model]"),
        "{m}"
    );
}

#[test]
fn errors_unbalanced_labels() {
    let (x, _) = ok_data(40, 4);
    let opts = ProbeOptions::default();
    let all = vec![true; 40];
    let e = fit_logistic(&x, &all, &x, &all, &opts).unwrap_err();
    assert!(matches!(e, Error::InvalidArgument { .. }));
    let m = msg(e);
    assert!(
        m.contains("unbalanced labels") && m.contains("40 positive and 0 negative"),
        "{m}"
    );
    assert!(msg(fit_diff_of_means(&x, &all).unwrap_err()).contains("unbalanced labels"));
    // 1 positive of 40 (2.5%) is under 5%; 2 of 40 (5%) is allowed.
    let mut one = vec![false; 40];
    one[3] = true;
    let m = msg(fit_logistic(&x, &one, &x, &one, &opts).unwrap_err());
    assert!(
        m.contains("1 positive and 39 negative") && m.contains("5%"),
        "{m}"
    );
    one[7] = true;
    assert!(fit_diff_of_means(&x, &one).is_ok());
}

#[test]
fn errors_non_finite() {
    let (x, y) = ok_data(40, 4);
    let opts = ProbeOptions::default();
    for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        let mut v = x[1].flatten_all().unwrap().to_vec1::<f32>().unwrap();
        v[37] = bad;
        let poisoned = vec![
            x[0].clone(),
            Tensor::from_vec(v, (40, 4), &Device::Cpu).unwrap(),
        ];
        let e = fit_logistic(&poisoned, &y, &x, &y, &opts).unwrap_err();
        assert!(matches!(e, Error::InvalidArgument { .. }));
        let m = msg(e);
        assert!(
            m.contains("train, layer 1") && m.contains("[40, 4]") && m.contains("1 non-finite"),
            "{m}"
        );
        let m = msg(sweep(&x, &y, &x, &y, &poisoned, &y, &opts).unwrap_err());
        assert!(m.contains("test, layer 1"), "{m}");
        let probes = fit_logistic(&x, &y, &x, &y, &opts).unwrap();
        let m = msg(transfer(&probes, &poisoned, &y, &opts).unwrap_err());
        assert!(m.contains("x_other, layer 1"), "{m}");
    }
    // Huge but finite values are accepted (their f32 sum overflows; the exact count is 0).
    let big = vec![Tensor::full(3e38f32, (40, 4), &Device::Cpu).unwrap()];
    assert!(fit_diff_of_means(&big, &y).is_ok());
}

#[test]
fn errors_bad_options() {
    let (x, y) = ok_data(40, 4);
    for grid in [vec![], vec![0.0], vec![1e-3, f64::NAN]] {
        let opts = ProbeOptions {
            l2_grid: grid,
            ..ProbeOptions::default()
        };
        let m = msg(fit_logistic(&x, &y, &x, &y, &opts).unwrap_err());
        assert!(m.contains("l2_grid"), "{m}");
    }
    // A solver that cannot reach tol in one Newton step says so, naming the layer and shape.
    let opts = ProbeOptions {
        max_iter: 1,
        tol: 1e-14,
        ..ProbeOptions::default()
    };
    let m = msg(fit_logistic(&x, &y, &x, &y, &opts).unwrap_err());
    assert!(
        m.contains("layer 0") && m.contains("[40, 4]") && m.contains("max_iter"),
        "{m}"
    );
}

// ---------------------------------------------------------------------------------------------
// The scikit-learn cross-check's data.

/// A realistic synthetic residual stream: per layer, 24 decaying latent factors, isotropic noise,
/// a large per-feature mean, 4 "massive activation" outlier dimensions (standard deviation 40),
/// and the label planted along a random direction `u` with Mahalanobis separation `delta`: the
/// class means differ by `delta` noise standard deviations in the best (whitened) direction, so
/// the Bayes accuracy is Φ(delta/2).
fn realistic_layer(rng: &mut Rng, ys: &[&[bool]], d: usize, delta: f64) -> Vec<Tensor> {
    let k = 24;
    // Σ = F Fᵀ + D with F the loadings [d, k] and D diagonal (0.25, or 40² at the outliers).
    let loadings: Vec<Vec<f64>> = (0..k)
        .map(|f| {
            let scale = 12.0 / ((f + 1) as f64).sqrt() / (d as f64).sqrt();
            (0..d).map(|_| rng.normal() * scale).collect()
        })
        .collect();
    let mean: Vec<f64> = (0..d).map(|_| rng.normal() * 2.0).collect();
    let outliers = [17usize, 123, 300, 511];
    let (sd_iso, sd_out) = (0.5, 40.0);
    let diag: Vec<f64> = (0..d)
        .map(|j| {
            if outliers.contains(&j) {
                sd_out * sd_out
            } else {
                sd_iso * sd_iso
            }
        })
        .collect();
    let u = rng.unit(d);
    let shift = delta / mahalanobis_norm(&u, &loadings, &diag);
    ys.iter()
        .map(|y| {
            let rows: Vec<Vec<f64>> = y
                .iter()
                .map(|&t| {
                    let z: Vec<f64> = (0..k).map(|_| rng.normal()).collect();
                    let a = if t { 0.5 * shift } else { -0.5 * shift };
                    (0..d)
                        .map(|j| {
                            let factors: f64 =
                                z.iter().zip(&loadings).map(|(zf, f)| zf * f[j]).sum();
                            mean[j] + a * u[j] + factors + rng.normal() * diag[j].sqrt()
                        })
                        .collect()
                })
                .collect();
            tensor(&rows)
        })
        .collect()
}

/// sqrt(uᵀ Σ⁻¹ u) for Σ = F Fᵀ + D, by Woodbury: uᵀD⁻¹u - bᵀ (I + FᵀD⁻¹F)⁻¹ b with b = FᵀD⁻¹u
/// (a k × k Cholesky solve).
fn mahalanobis_norm(u: &[f64], f: &[Vec<f64>], diag: &[f64]) -> f64 {
    let k = f.len();
    let du: Vec<f64> = u.iter().zip(diag).map(|(a, d)| a / d).collect();
    let b: Vec<f64> = f
        .iter()
        .map(|fi| fi.iter().zip(&du).map(|(a, c)| a * c).sum())
        .collect();
    let mut m = vec![vec![0.0; k]; k];
    for i in 0..k {
        for j in 0..k {
            m[i][j] = f[i]
                .iter()
                .zip(&f[j])
                .zip(diag)
                .map(|((a, c), d)| a * c / d)
                .sum::<f64>()
                + if i == j { 1.0 } else { 0.0 };
        }
    }
    // Cholesky m = L Lᵀ, then ||L⁻¹ b||² = bᵀ m⁻¹ b.
    let mut l = vec![vec![0.0; k]; k];
    for i in 0..k {
        for j in 0..=i {
            let s: f64 = m[i][j] - (0..j).map(|t| l[i][t] * l[j][t]).sum::<f64>();
            l[i][j] = if i == j { s.sqrt() } else { s / l[j][j] };
        }
    }
    let mut x = vec![0.0; k];
    for i in 0..k {
        x[i] = (b[i] - (0..i).map(|t| l[i][t] * x[t]).sum::<f64>()) / l[i][i];
    }
    let utdu: f64 = u.iter().zip(&du).map(|(a, c)| a * c).sum();
    (utdu - x.iter().map(|v| v * v).sum::<f64>()).sqrt()
}

/// Writes the cross-check's data and our sweep's results. Six layers from chance (delta 0) to
/// nearly separable (delta 4); 600 training items in 576 dimensions, so the small-l2 problems are
/// (nearly) separable and ill-conditioned, the hard case for a solver.
#[test]
fn crosscheck_data_and_ours() {
    let (d, n_tr, n_va, n_te) = (576usize, 600usize, 200usize, 200usize);
    let deltas = [0.0, 0.5, 1.0, 1.5, 2.5, 4.0];
    let mut rng = Rng(2024);
    let ytr = rng.labels(n_tr, 0.45);
    let yva = rng.labels(n_va, 0.45);
    let yte = rng.labels(n_te, 0.45);
    let (mut tr, mut va, mut te) = (Vec::new(), Vec::new(), Vec::new());
    for &delta in &deltas {
        let mut s = realistic_layer(&mut rng, &[&ytr, &yva, &yte], d, delta).into_iter();
        tr.push(s.next().unwrap());
        va.push(s.next().unwrap());
        te.push(s.next().unwrap());
    }
    let opts = ProbeOptions::default();
    let t0 = std::time::Instant::now();
    let rep = sweep(&tr, &ytr, &va, &yva, &te, &yte, &opts).unwrap();
    let secs = t0.elapsed().as_secs_f64();
    let probes = fit_logistic(&tr, &ytr, &va, &yva, &opts).unwrap();

    for r in &rep {
        assert!(r.grad_norm <= opts.tol, "{r:?}");
        assert!(opts.l2_grid.contains(&r.l2));
        eprintln!(
            "layer {} l2 {:.0e}: train {:.3} val {:.3} test {:.3} (CI {:.3}..{:.3}) auroc {:.3}",
            r.layer,
            r.l2,
            r.train.accuracy,
            r.val.accuracy,
            r.test.accuracy,
            r.test.accuracy_ci.0,
            r.test.accuracy_ci.1,
            r.test.auroc
        );
    }
    eprintln!("sweep over {} layers: {secs:.2} s", deltas.len());
    // No probe beats the Bayes accuracy Φ(delta/2) except by chance: at n_test = 200 its binomial
    // standard deviation is at most 0.035, so 4 of them (0.14) bound the excess.
    for (r, &delta) in rep.iter().zip(&deltas) {
        let bayes = 0.5 * (1.0 + erf(delta / 2.0 / std::f64::consts::SQRT_2));
        assert!(
            r.test.accuracy <= bayes + 0.14,
            "layer {}: {:?} vs Bayes {bayes}",
            r.layer,
            r.test
        );
    }

    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/probe-crosscheck");
    std::fs::create_dir_all(&dir).unwrap();
    let labels = |y: &[bool]| {
        Tensor::from_vec(
            y.iter().map(|&b| u8::from(b)).collect::<Vec<u8>>(),
            y.len(),
            &Device::Cpu,
        )
        .unwrap()
    };
    let mut data: HashMap<String, Tensor> = HashMap::new();
    for l in 0..deltas.len() {
        data.insert(format!("layer.{l}.x_train"), tr[l].clone());
        data.insert(format!("layer.{l}.x_val"), va[l].clone());
        data.insert(format!("layer.{l}.x_test"), te[l].clone());
    }
    data.insert("y_train".into(), labels(&ytr));
    data.insert("y_val".into(), labels(&yva));
    data.insert("y_test".into(), labels(&yte));
    candle_core::safetensors::save(&data, dir.join("data.safetensors")).unwrap();
    let mut weights: HashMap<String, Tensor> = HashMap::new();
    for (l, p) in probes.iter().enumerate() {
        weights.insert(format!("layer.{l}.weight"), p.weight.clone());
        weights.insert(
            format!("layer.{l}.bias"),
            Tensor::new(&[p.bias], &Device::Cpu).unwrap(),
        );
    }
    candle_core::safetensors::save(&weights, dir.join("ours.safetensors")).unwrap();
    let json = serde_json::json!({
        "n_train": n_tr,
        "tol": opts.tol,
        "standardize": opts.standardize,
        "l2_grid": opts.l2_grid,
        "deltas": deltas,
        "sweep_seconds": secs,
        "layers": rep,
    });
    std::fs::write(
        dir.join("ours.json"),
        serde_json::to_string_pretty(&json).unwrap(),
    )
    .unwrap();

    // The scikit-learn cross-check itself (accuracies within 1 point). CI installs scikit-learn
    // (.ci/run); elsewhere a missing package only skips this step.
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/sklearn_crosscheck.py");
    match std::process::Command::new("python3").arg(&script).output() {
        Ok(out) if out.status.success() => eprintln!("{}", String::from_utf8_lossy(&out.stdout)),
        Ok(out) => {
            let err = String::from_utf8_lossy(&out.stderr);
            let missing = err.contains("No module named");
            assert!(
                missing && std::env::var_os("CI").is_none(),
                "scikit-learn cross-check failed:\n{}\n{err}",
                String::from_utf8_lossy(&out.stdout)
            );
            eprintln!("scikit-learn not installed; cross-check skipped");
        }
        Err(e) => assert!(std::env::var_os("CI").is_none(), "python3: {e}"),
    }
}

/// The bootstrap is a pure function of (scores, labels, resamples, seed), and its percentile
/// interval brackets the point estimate for these well-spread scores.
#[test]
fn metrics_and_bootstrap_are_seeded() {
    let mut rng = Rng(77);
    let y = rng.labels(300, 0.5);
    let s: Vec<f64> = y
        .iter()
        .map(|&t| rng.normal() + if t { 1.0 } else { -1.0 })
        .collect();
    let (acc, auc) = (probe::accuracy(&s, &y), probe::auroc(&s, &y));
    let a = probe::bootstrap_ci(&s, &y, 500, 7);
    assert_eq!(a, probe::bootstrap_ci(&s, &y, 500, 7));
    assert_ne!(a, probe::bootstrap_ci(&s, &y, 500, 8));
    assert!(a.0 .0 <= acc && acc <= a.0 .1, "{a:?} {acc}");
    assert!(a.1 .0 <= auc && auc <= a.1 .1, "{a:?} {auc}");
    let none = probe::bootstrap_ci(&s, &y, 0, 7);
    assert!(none.0 .0.is_nan() && none.1 .1.is_nan());
}
