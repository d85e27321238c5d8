//! Ridge / least-squares probes for continuous targets, R² with bootstrap intervals, and the
//! least-squares direction (see the [module docs](super)).

use candle_core::{Device, Tensor};
use ndarray::{s, Array1, Array2, ArrayView2, Axis};
use serde::{Deserialize, Serialize};

use super::{check_split_n, LinearProbe, ProbeKind, ProbeOptions};
use crate::array::with_view2;
use crate::data::SplitMix64;
use crate::{Error, Result};

/// Regression metrics of a probe on one split.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RegressionMetrics {
    /// Number of items.
    pub n: usize,
    /// Coefficient of determination `1 - Σ(t - p)² / Σ(t - mean t)²` (scikit-learn's `r2_score`;
    /// 0 for predicting the split's mean, negative for worse). `NaN` for a constant target.
    pub r2: f64,
    /// Percentile bootstrap 95% interval of `r2` (`NaN` without resamples).
    pub r2_ci: (f64, f64),
    /// Root mean squared error, in the target's units.
    pub rmse: f64,
}

/// One layer's row of [`regress`] (or [`super::regress_with`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RegressionReport {
    /// Index of the layer in the input slices.
    pub layer: usize,
    /// Metrics on the training split.
    pub train: RegressionMetrics,
    /// Metrics on the validation split (which chose `l2`).
    pub val: RegressionMetrics,
    /// Metrics on the test split.
    pub test: RegressionMetrics,
    /// The chosen L2 strength (`l2 = alpha / n_train` for scikit-learn's `Ridge(alpha)`).
    pub l2: f64,
}

/// The layer a ridge sweep's validation split chooses: the highest finite validation `R²` (ties:
/// the earlier layer). `None` when no layer has one.
pub fn best_by_val_r2(reports: &[RegressionReport]) -> Option<usize> {
    reports
        .iter()
        .filter(|r| r.val.r2.is_finite())
        .fold(None::<&RegressionReport>, |b, r| match b {
            Some(b) if b.val.r2 >= r.val.r2 => Some(b),
            _ => Some(r),
        })
        .map(|r| r.layer)
}

/// A ridge sweep's table as CSV: one row per layer with train, val and test `R²`, the test
/// `R²`'s interval, test RMSE and the chosen L2 strength.
pub fn regression_csv(reports: &[RegressionReport]) -> String {
    let mut csv =
        String::from("layer,train_r2,val_r2,test_r2,test_r2_ci_low,test_r2_ci_high,test_rmse,l2\n");
    for r in reports {
        csv.push_str(&format!(
            "{},{:.6},{:.6},{:.6},{:.6},{:.6},{:.6},{}\n",
            r.layer,
            r.train.r2,
            r.val.r2,
            r.test.r2,
            r.test.r2_ci.0,
            r.test.r2_ci.1,
            r.test.rmse,
            r.l2
        ));
    }
    csv
}

/// A ridge sweep's table for a terminal, the `best` layer marked.
pub fn regression_table(reports: &[RegressionReport], best: Option<usize>) -> String {
    let mut t = String::from("layer  train R²  val R²  test R²  test 95% CI        test RMSE\n");
    for r in reports {
        t.push_str(&format!(
            "{:>5}  {:>8.3}  {:>6.3}  {:>7.3}  [{:.3}, {:.3}]  {:>9.3}{}\n",
            r.layer,
            r.train.r2,
            r.val.r2,
            r.test.r2,
            r.test.r2_ci.0,
            r.test.r2_ci.1,
            r.test.rmse,
            super::best_mark(r.layer, best)
        ));
    }
    t
}

/// `R²` of predictions `pred` for targets `t` (scikit-learn's `r2_score`). `NaN` for fewer than
/// two items or a constant target.
pub fn r2(pred: &[f64], t: &[f64]) -> f64 {
    let w = vec![1u32; pred.len().min(t.len())];
    weighted_r2(pred, t, &w)
}

/// Percentile-bootstrap 95% interval of [`r2`] over `resamples` resamples of the items (a seeded
/// SplitMix64, as [`super::bootstrap_ci`]); resamples with a constant target are left out.
pub fn r2_ci(pred: &[f64], t: &[f64], resamples: usize, seed: u64) -> (f64, f64) {
    let n = pred.len().min(t.len());
    if n == 0 || resamples == 0 {
        return (f64::NAN, f64::NAN);
    }
    let mut rng = SplitMix64::new(seed);
    let mut counts = vec![0u32; n];
    let mut v = Vec::with_capacity(resamples);
    for _ in 0..resamples {
        counts.iter_mut().for_each(|c| *c = 0);
        for _ in 0..n {
            counts[rng.below(n as u64) as usize] += 1;
        }
        let r = weighted_r2(&pred[..n], &t[..n], &counts);
        if r.is_finite() {
            v.push(r);
        }
    }
    super::percentile_ci(&mut v)
}

/// `R²` with integer item weights.
fn weighted_r2(pred: &[f64], t: &[f64], w: &[u32]) -> f64 {
    let n = pred.len().min(t.len()).min(w.len());
    let tot: f64 = w[..n].iter().map(|&c| f64::from(c)).sum();
    if tot < 2.0 {
        return f64::NAN;
    }
    let mean = (0..n).map(|i| f64::from(w[i]) * t[i]).sum::<f64>() / tot;
    let (mut ss_res, mut ss_tot) = (0.0, 0.0);
    for i in 0..n {
        let c = f64::from(w[i]);
        ss_res += c * (t[i] - pred[i]).powi(2);
        ss_tot += c * (t[i] - mean).powi(2);
    }
    if ss_tot <= 0.0 {
        return f64::NAN;
    }
    1.0 - ss_res / ss_tot
}

/// Regression metrics of predictions `pred` for targets `t`.
pub(crate) fn regression_metrics(
    pred: &[f64],
    t: &[f64],
    opts: &ProbeOptions,
) -> RegressionMetrics {
    let n = t.len();
    let mse = pred
        .iter()
        .zip(t)
        .map(|(p, y)| (p - y).powi(2))
        .sum::<f64>()
        / n.max(1) as f64;
    RegressionMetrics {
        n,
        r2: r2(pred, t),
        r2_ci: r2_ci(pred, t, opts.bootstrap, opts.seed),
        rmse: mse.sqrt(),
    }
}

/// Ridge regression per layer. For each layer and each `l2` in [`ProbeOptions::l2_grid`] (here
/// `0` is allowed: ordinary least squares, which needs a nonsingular system), [`fit_ridge`]
/// minimises `(1 / 2n)·Σ_i (t_i - w·x_i - b)² + (l2 / 2)·||w||²` on features z-scored with the
/// training split's statistics (when [`ProbeOptions::standardize`]; the intercept is not
/// penalised), in closed form (Cholesky, in f64 on the CPU: the normal equations `d × d`, or
/// their dual `n × n` when `n < d`). This is scikit-learn's `Ridge(alpha = l2 · n_train)` on
/// `StandardScaler` output. Each layer's `l2` is the grid value with the best validation `R²`
/// (ties: the larger `l2`). The returned probes ([`ProbeKind::Ridge`]) act on raw activations:
/// [`LinearProbe::scores`] is the predicted target.
///
/// Errors as [`super::fit_logistic`]'s for the shapes (`t_train`, `t_val` are one target per
/// row), non-finite targets, a negative or non-finite `l2`, and a singular system (e.g. `l2 = 0`
/// with fewer items than features) naming the layer.
pub fn fit_ridge(
    train: &[Tensor],
    t_train: &[f64],
    val: &[Tensor],
    t_val: &[f64],
    opts: &ProbeOptions,
) -> Result<Vec<LinearProbe>> {
    let (_, d) = check_split_n("train", train, t_train.len(), None, None)?;
    check_split_n("val", val, t_val.len(), Some(d), Some(train.len()))?;
    check_targets("t_train", t_train)?;
    check_targets("t_val", t_val)?;
    check_ridge_grid(&opts.l2_grid)?;
    let mut by_l2: Vec<usize> = (0..opts.l2_grid.len()).collect();
    by_l2.sort_by(|&a, &b| opts.l2_grid[b].total_cmp(&opts.l2_grid[a])); // largest first
    let mut out = Vec::with_capacity(train.len());
    for (l, (x, xv)) in train.iter().zip(val).enumerate() {
        let fits = with_view2(x, |v| {
            ridge_grid(v, t_train, &opts.l2_grid, opts.standardize, l)
        })??;
        let mut best: Option<(usize, f64)> = None;
        for &gi in &by_l2 {
            let (w, b) = &fits[gi];
            let pred = with_view2(xv, |v| predict(v, w, *b))?;
            let score = r2(&pred, t_val);
            let score = if score.is_finite() {
                score
            } else {
                f64::NEG_INFINITY
            };
            if best.is_none_or(|(_, s)| score > s) {
                best = Some((gi, score));
            }
        }
        let gi = best.map_or(0, |(gi, _)| gi);
        let (w, b) = &fits[gi];
        out.push(LinearProbe {
            weight: Tensor::from_vec(
                w.iter().map(|&v| v as f32).collect::<Vec<f32>>(),
                d,
                x.device(),
            )?, // [d]
            bias: *b,
            l2: opts.l2_grid[gi],
            kind: ProbeKind::Ridge,
        });
    }
    Ok(out)
}

/// The one call for continuous targets: [`fit_ridge`] at every layer (`l2` chosen on `val`),
/// each probe evaluated on train, validation and test ([`RegressionMetrics`]: `R²` with a
/// bootstrap 95% interval, RMSE).
pub fn regress(
    train: &[Tensor],
    t_train: &[f64],
    val: &[Tensor],
    t_val: &[f64],
    test: &[Tensor],
    t_test: &[f64],
    opts: &ProbeOptions,
) -> Result<Vec<RegressionReport>> {
    let (_, d) = check_split_n("train", train, t_train.len(), None, None)?;
    check_split_n("test", test, t_test.len(), Some(d), Some(train.len()))?;
    check_targets("t_test", t_test)?;
    let probes = fit_ridge(train, t_train, val, t_val, opts)?;
    let mut out = Vec::with_capacity(probes.len());
    for (l, p) in probes.iter().enumerate() {
        let m = |x: &Tensor, t: &[f64]| -> Result<RegressionMetrics> {
            Ok(regression_metrics(&p.scores_f64(x)?, t, opts))
        };
        out.push(RegressionReport {
            layer: l,
            train: m(&train[l], t_train)?,
            val: m(&val[l], t_val)?,
            test: m(&test[l], t_test)?,
            l2: p.l2,
        });
    }
    Ok(out)
}

impl LinearProbe {
    /// `R²` (with a bootstrap interval) and RMSE of the probe's scores as predictions of `t` on
    /// `x` (`[n, d_model]`); meant for [`ProbeKind::Ridge`] probes.
    pub fn evaluate_regression(
        &self,
        x: &Tensor,
        t: &[f64],
        opts: &ProbeOptions,
    ) -> Result<RegressionMetrics> {
        let d = self.weight.dims1()?;
        super::check_layer("x", None, x, Some(t.len()), Some(d))?;
        Ok(regression_metrics(&self.scores_f64(x)?, t, opts))
    }
}

/// The least-squares direction between two classes: ridge regression (strength `l2`, on raw
/// activations, intercept free) of a target `+1` on `pos` rows and `-1` on `neg` rows, the
/// weight rescaled to the norm of `mean(pos) - mean(neg)`. `pos` and `neg` are `[n, d_model]`;
/// the result is `[d_model]` f32 on the CPU. With `l2 → ∞` this tends to the difference of
/// means; with small `l2` it is `Σ⁻¹(mean(pos) - mean(neg))` for the pooled within-class
/// covariance `Σ` (Fisher's discriminant), which discounts high-variance directions.
pub fn least_squares_direction(pos: &Tensor, neg: &Tensor, l2: f64) -> Result<Tensor> {
    if !(l2.is_finite() && l2 >= 0.0) {
        return Err(Error::InvalidArgument {
            name: "l2".into(),
            msg: format!("is {l2}; must be finite and >= 0"),
        });
    }
    let (np, d) = super::check_layer("pos", None, pos, None, None)?;
    let (nn, _) = super::check_layer("neg", None, neg, None, Some(d))?;
    let x = Tensor::cat(&[pos, neg], 0)?; // [np + nn, d]
    let mut t = vec![1.0; np];
    t.extend(std::iter::repeat_n(-1.0, nn));
    let fits = with_view2(&x, |v| ridge_grid(v, &t, &[l2], false, 0))??;
    let w = &fits[0].0;
    let diff = with_view2(&x, |v| {
        let mp = v.slice(s![..np, ..]).mapv(f64::from).sum_axis(Axis(0)) / np as f64;
        let mn = v.slice(s![np.., ..]).mapv(f64::from).sum_axis(Axis(0)) / nn as f64;
        mp - mn
    })?;
    let target = diff.dot(&diff).sqrt();
    let norm = w.dot(w).sqrt();
    if !(norm > 0.0 && norm.is_finite()) {
        return Err(Error::InvalidArgument {
            name: "pos, neg".into(),
            msg: format!("the least-squares direction is zero or not finite (norm {norm})"),
        });
    }
    let v: Vec<f32> = w.iter().map(|&a| (a * target / norm) as f32).collect();
    Ok(Tensor::from_vec(v, d, &Device::Cpu)?) // [d]
}

/// Closed-form ridge of one layer at every grid value: `(weight, bias)` on raw activations.
pub(crate) fn ridge_grid(
    x: ArrayView2<'_, f32>,
    t: &[f64],
    grid: &[f64],
    standardize: bool,
    layer: usize,
) -> Result<Vec<(Array1<f64>, f64)>> {
    let (n, d) = x.dim();
    let x = x.mapv(f64::from); // [n, d]
    let mean = x.sum_axis(Axis(0)) / n as f64; // [d]
    let scale = if standardize {
        let var = x
            .axis_iter(Axis(1))
            .zip(&mean)
            .map(|(c, &m)| c.iter().map(|v| (v - m).powi(2)).sum::<f64>() / n as f64);
        // Constant features keep scale 1 (as the logistic probe and StandardScaler).
        var.zip(&mean)
            .map(|(v, &m)| {
                let bound = (n as f64 * f64::EPSILON * m).powi(2) + n as f64 * f64::EPSILON * v;
                if v <= bound {
                    1.0
                } else {
                    v.sqrt()
                }
            })
            .collect::<Array1<f64>>()
    } else {
        Array1::ones(d)
    };
    let z = (&x - &mean.view().insert_axis(Axis(0))) / &scale.view().insert_axis(Axis(0)); // [n, d]
    let tbar = t.iter().sum::<f64>() / n as f64;
    let tc = Array1::from_iter(t.iter().map(|v| v - tbar)); // [n]
    let nf = n as f64;
    let primal = n >= d;
    // Primal: (ZᵀZ/n + l2 I) w = Zᵀt/n. Dual (n < d): w = Zᵀ a with (ZZᵀ/n + l2 I) a = t/n.
    let gram = if primal {
        z.t().dot(&z) / nf // [d, d]
    } else {
        z.dot(&z.t()) / nf // [n, n]
    };
    let rhs = if primal {
        z.t().dot(&tc) / nf
    } else {
        &tc / nf
    };
    let mut out = Vec::with_capacity(grid.len());
    for &l2 in grid {
        let mut a = gram.clone();
        a.diag_mut().mapv_inplace(|v| v + l2);
        let sol = cholesky_solve(a, &rhs).ok_or_else(|| Error::InvalidArgument {
            name: "l2_grid".into(),
            msg: format!(
                "ridge at layer {layer} (train [{n}, {d}]) with l2 = {l2}: the system is \
                 singular; use l2 > 0"
            ),
        })?;
        let w_std = if primal { sol } else { z.t().dot(&sol) }; // [d]
        let w = &w_std / &scale;
        let b = tbar - w.dot(&mean);
        out.push((w, b));
    }
    Ok(out)
}

/// Predictions `x · w + b` as f64.
fn predict(x: ArrayView2<'_, f32>, w: &Array1<f64>, b: f64) -> Vec<f64> {
    x.outer_iter()
        .map(|row| {
            row.iter()
                .zip(w)
                .map(|(&a, &c)| f64::from(a) * c)
                .sum::<f64>()
                + b
        })
        .collect()
}

/// Solves `a x = b` for symmetric positive definite `a` by Cholesky; `None` when `a` is not
/// (numerically) positive definite.
fn cholesky_solve(mut a: Array2<f64>, b: &Array1<f64>) -> Option<Array1<f64>> {
    let m = a.nrows();
    let max_diag = a.diag().iter().fold(0.0f64, |acc, &v| acc.max(v.abs()));
    for j in 0..m {
        let s = {
            let r = a.row(j);
            a[[j, j]] - r.slice(s![..j]).dot(&r.slice(s![..j]))
        };
        if !(s > 1e-12 * max_diag.max(f64::MIN_POSITIVE)) || !s.is_finite() {
            return None;
        }
        let ljj = s.sqrt();
        a[[j, j]] = ljj;
        let (head, mut tail) = a.view_mut().split_at(Axis(0), j + 1);
        let row_j = head.row(j);
        for mut row_i in tail.outer_iter_mut() {
            let v = (row_i[j] - row_i.slice(s![..j]).dot(&row_j.slice(s![..j]))) / ljj;
            row_i[j] = v;
        }
    }
    // Forward then backward substitution with L (lower triangle of a).
    let mut y = b.clone();
    for i in 0..m {
        let mut s = y[i];
        for k in 0..i {
            s -= a[[i, k]] * y[k];
        }
        y[i] = s / a[[i, i]];
    }
    for i in (0..m).rev() {
        let mut s = y[i];
        for k in i + 1..m {
            s -= a[[k, i]] * y[k];
        }
        y[i] = s / a[[i, i]];
    }
    Some(y)
}

/// Targets must be finite.
pub(crate) fn check_targets(name: &str, t: &[f64]) -> Result<()> {
    let bad = t.iter().filter(|v| !v.is_finite()).count();
    if bad > 0 {
        return Err(Error::InvalidArgument {
            name: name.into(),
            msg: format!("{bad} of {} targets are not finite", t.len()),
        });
    }
    Ok(())
}

/// Ridge strengths must be finite and >= 0 (0 is least squares).
fn check_ridge_grid(grid: &[f64]) -> Result<()> {
    if grid.is_empty() {
        return Err(Error::InvalidArgument {
            name: "l2_grid".into(),
            msg: "is empty; give at least one L2 strength".into(),
        });
    }
    if let Some(bad) = grid.iter().find(|v| !(v.is_finite() && **v >= 0.0)) {
        return Err(Error::InvalidArgument {
            name: "l2_grid".into(),
            msg: format!("contains {bad}; every ridge strength must be finite and >= 0"),
        });
    }
    Ok(())
}
