//! Per-layer linear probes: logistic regression and difference of means, with metrics, bootstrap
//! confidence intervals and transfer across models.
//!
//! Inputs are plain tensors, one per layer: activations `[n, d_model]` (any float dtype, any
//! device) and one `&[bool]` label per row, shared by all layers. The one call is [`sweep`]: it fits
//! a logistic probe at every layer, chooses each layer's L2 strength on the validation split, and
//! reports accuracy and AUROC (with bootstrap 95% intervals) on train, validation and test as
//! [`LayerReport`]s. The pieces are public too: [`fit_logistic`], [`fit_diff_of_means`],
//! [`LinearProbe::scores`], [`LinearProbe::evaluate`], [`transfer`] (a probe trained on one model,
//! tested on another at the same layer), [`accuracy`], [`auroc`] and [`bootstrap_ci`].
//!
//! ## Continuous targets, other probe kinds, cross-validation
//! [`regress`] fits ridge / least-squares probes ([`fit_ridge`], closed form) to a continuous
//! target per layer (a number stated in the prompt, an item's P(agree)) and reports `R²` with
//! bootstrap intervals ([`RegressionReport`]); [`sweep_as`] runs the classification table with a
//! logistic, difference-of-means or least-squares probe; [`cross_validate`] gives k-fold held-out
//! accuracies; [`least_squares_direction`] is the ridge direction between two classes (see
//! [`crate::SteeringVector::least_squares`] for how it compares with the difference of means).
//!
//! ## From a dataset file
//! [`probe_report`] is the one call from a labeled dataset ([`crate::data::Dataset`]) to the
//! per-layer table: prompts, the last token's activations at every layer, [`sweep_as`] (and
//! [`cross_validate`]), `probe.json` and `probe.csv`; [`regression_report`] does the same for
//! texts with a numeric target ([`crate::data::NumericDataset`]) with [`regress`].
//!
//! ## linfa
//! [`layer_datasets`] turns per-layer activations into one `linfa::Dataset` per layer (feature
//! names are the hook point's, `blocks.{l}.hook_resid_post[j]`). [`LogisticProbe`] is this
//! module's logistic probe as a linfa model (`Fit`, and `Predict` on the fitted [`LinearProbe`]),
//! so linfa's cross-validation and metrics take it; [`sweep_with`] / [`sweep_with_scores`] run any
//! linfa classifier at every layer and return [`sweep`]'s table, [`regress_with`] any linfa
//! regressor (e.g. linfa-linear's `LinearRegression`) and [`regress`]'s. Arrays cross the
//! boundary through [`crate::array`].
//!
//! ## The logistic objective and its L2 convention
//! For each layer and each `l2` in [`ProbeOptions::l2_grid`], [`fit_logistic`] minimises
//! `mean_i log(1 + exp(-s_i (w·x_i + b))) + (l2 / 2)·||w||²` (labels `s_i = ±1`, the bias `b` is not
//! penalised) on features z-scored with the training split's per-feature mean and standard
//! deviation (when [`ProbeOptions::standardize`]). The scaling is folded back afterwards, so a
//! [`LinearProbe`]'s `weight` and `bias` act on raw activations. This is scikit-learn's
//! `LogisticRegression(C=C)` on `StandardScaler` output with `C = 1 / (l2 · n_train)`:
//! scikit-learn minimises `C·Σ loss + ½||w||²`, which is `C·n_train` times the objective above.
//!
//! ## The solver
//! All layers and all grid values are solved as **one batched problem** on candle tensors: the
//! layers are stacked into `[L, n, d + 1]` (a column of ones carries the bias) and the `G` grid
//! values become `G` columns, so every product is one batched matmul `[L, n, d+1] × [L, d+1, G]`.
//! The method is truncated Newton (Newton-CG): each step solves `H p = -g` by Jacobi-preconditioned
//! conjugate gradients with Hessian-vector products `Xᵀ (s ⊙ X v) / n + l2·v`
//! (`s = σ(z)(1 - σ(z))`, the bias unpenalised) to a residual of `min(0.5, sqrt(||g||))·||g||` (but
//! no smaller than `tol / 2`, at most 250 iterations), then takes an Armijo backtracking line
//! search. Each (layer, l2) problem has its own CG coefficients and step sizes and is frozen once
//! the largest absolute component of its gradient (the ∞-norm, as scikit-learn's and SciPy's
//! `gtol`) is at most [`ProbeOptions::tol`]; a layer whose problems are all frozen leaves the
//! batch. The objective is strictly convex (`l2 > 0`), so this converges to the unique minimum,
//! quadratically near it; a problem that has not converged after [`ProbeOptions::max_iter`] Newton
//! steps is an error, not a silent result. Arithmetic is f64 on CPU and CUDA and f32 on Metal
//! (which has no f64 matmul), where `tol` should be raised to about `1e-4`.
//!
//! ```
//! use candle_core::{Device, Tensor};
//! use puppetlens::probe::{self, ProbeOptions};
//! # fn main() -> puppetlens::Result<()> {
//! let dev = Device::Cpu;
//! // Deterministic "activations": 8 dimensions of pseudo-noise in [-1, 1]; at layer 1 the label
//! // also shifts dimension 0 by ±3, so layer 1 separates the classes and layer 0 does not.
//! let split = |offset: usize, n: usize| -> candle_core::Result<(Vec<Tensor>, Vec<bool>)> {
//!     let y: Vec<bool> = (0..n).map(|i| (i * 7 + offset) % 3 == 0).collect();
//!     let layers = (0..2)
//!         .map(|layer| {
//!             let v: Vec<f32> = (0..n * 8)
//!                 .map(|k| {
//!                     let (i, j) = (k / 8 + offset, k % 8);
//!                     let noise = (((i * 37 + j * 101) * 2654435761usize) % 1000) as f32 / 500.0 - 1.0;
//!                     let shift = if layer == 1 && j == 0 { if y[k / 8] { 3.0 } else { -3.0 } } else { 0.0 };
//!                     noise + shift
//!                 })
//!                 .collect();
//!             Tensor::from_vec(v, (n, 8), &dev) // [n, d_model]
//!         })
//!         .collect::<candle_core::Result<Vec<_>>>()?;
//!     Ok((layers, y))
//! };
//! let (train, y_train) = split(0, 120)?;
//! let (val, y_val) = split(1000, 60)?;
//! let (test, y_test) = split(2000, 60)?;
//! let report = probe::sweep(&train, &y_train, &val, &y_val, &test, &y_test, &ProbeOptions::default())?;
//! assert_eq!(report.len(), 2);
//! assert!(report[1].test.accuracy > 0.95);
//! assert!(report[1].test.auroc_ci.0 > 0.9);
//! # Ok(())
//! # }
//! ```

use candle_core::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::data::SplitMix64;
use crate::{Error, Result};

mod fit;
mod metrics;
mod regress;
mod run;
mod solver;
mod validate;

pub(crate) use metrics::percentile_ci;
use metrics::*;
use solver::*;
use validate::*;

pub use fit::{
    cross_validate, label_metrics, layer_datasets, point_dataset, regress_with, sweep_with,
    sweep_with_scores, CvReport, LayerDataset, LogisticProbe,
};
pub use regress::{
    best_by_val_r2, fit_ridge, least_squares_direction, r2, r2_ci, regress, regression_csv,
    regression_table, RegressionMetrics, RegressionReport,
};
pub use run::{
    probe_report, regression_report, DatasetProbe, DatasetProbeOptions, DatasetRegression,
};

/// Options for fitting and evaluating probes. `ProbeOptions::default()` is the simple path.
#[derive(Debug, Clone, PartialEq)]
pub struct ProbeOptions {
    /// L2 strengths tried at every layer, in the mean-loss convention of the [module
    /// docs](self): `l2 = 1 / (C · n_train)` for scikit-learn's `C`. Each must be finite and > 0.
    /// Default `[1e-4, 1e-3, 1e-2, 1e-1, 1]`.
    pub l2_grid: Vec<f64>,
    /// Most Newton steps per problem (each runs at most `min(d_model + 1, 250)` conjugate
    /// gradient iterations). Default 100; a problem still above `tol` after it is an error.
    pub max_iter: usize,
    /// Convergence threshold on the ∞-norm of the objective's gradient (in the standardized
    /// coordinates, bias included). Default `1e-6`.
    pub tol: f64,
    /// Bootstrap resamples for the 95% confidence intervals in [`Metrics`]; 0 gives `NaN`
    /// intervals. Default 1000.
    pub bootstrap: usize,
    /// Seed of the bootstrap's generator (SplitMix64, written here so that intervals never
    /// change with a dependency's version). Default 0.
    pub seed: u64,
    /// Z-score features with the training split's mean and standard deviation before fitting
    /// (constant features keep scale 1, as in scikit-learn's `StandardScaler`). Default true.
    pub standardize: bool,
}

impl Default for ProbeOptions {
    fn default() -> Self {
        ProbeOptions {
            l2_grid: vec![1e-4, 1e-3, 1e-2, 1e-1, 1.0],
            max_iter: 100,
            tol: 1e-6,
            bootstrap: 1000,
            seed: 0,
            standardize: true,
        }
    }
}

/// How a [`LinearProbe`] was fitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ProbeKind {
    /// L2-regularised logistic regression ([`fit_logistic`]).
    Logistic,
    /// Difference of the class means, thresholded at the midpoint ([`fit_diff_of_means`]).
    DiffOfMeans,
    /// Ridge / least-squares regression ([`fit_ridge`]); on `±1` targets, a least-squares
    /// classifier ([`sweep_as`]).
    Ridge,
}

/// A linear probe on one layer: decision value `weight · x + bias`, positive means `true`.
#[derive(Debug, Clone)]
pub struct LinearProbe {
    /// `[d_model]` f32, acting on raw (unstandardized) activations, on the training data's device.
    pub weight: Tensor,
    /// The intercept.
    pub bias: f64,
    /// The L2 strength chosen for this layer (mean-loss convention); 0 for difference of means.
    pub l2: f64,
    /// How the probe was fitted.
    pub kind: ProbeKind,
}

/// Classification metrics of a probe on one split.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    /// Number of items.
    pub n: usize,
    /// Fraction of items whose decision value has the label's sign (`> 0` means `true`).
    pub accuracy: f64,
    /// Percentile bootstrap 95% interval of the accuracy (`NaN` without resamples).
    pub accuracy_ci: (f64, f64),
    /// Area under the ROC curve (rank-based, ties count one half); `NaN` with a single class.
    pub auroc: f64,
    /// Percentile bootstrap 95% interval of the AUROC.
    pub auroc_ci: (f64, f64),
}

/// One layer's row of a [`sweep`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LayerReport {
    /// Index of the layer in the input slices.
    pub layer: usize,
    /// Metrics on the training split.
    pub train: Metrics,
    /// Metrics on the validation split (which chose `l2`).
    pub val: Metrics,
    /// Metrics on the test split.
    pub test: Metrics,
    /// The chosen L2 strength (mean-loss convention).
    pub l2: f64,
    /// ∞-norm of the objective's gradient at the returned solution (at most [`ProbeOptions::tol`]).
    pub grad_norm: f64,
}

/// The layer a sweep's validation split chooses: the highest validation accuracy, ties broken by
/// validation AUROC (a non-finite AUROC counts as 0), then by the earlier layer. `None` for no
/// reports.
pub fn best_by_val(reports: &[LayerReport]) -> Option<usize> {
    let key = |r: &LayerReport| {
        (
            r.val.accuracy,
            if r.val.auroc.is_finite() {
                r.val.auroc
            } else {
                0.0
            },
        )
    };
    reports
        .iter()
        .fold(None::<&LayerReport>, |best, r| match best {
            Some(b) if key(b) >= key(r) => Some(b),
            _ => Some(r),
        })
        .map(|r| r.layer)
}

/// A sweep's table as CSV: one row per layer with train, val and test accuracy, the test
/// accuracy's interval, test AUROC and the chosen L2 strength.
pub fn reports_csv(reports: &[LayerReport]) -> String {
    let mut csv = String::from(
        "layer,train_accuracy,val_accuracy,test_accuracy,test_accuracy_ci_low,\
         test_accuracy_ci_high,test_auroc,l2\n",
    );
    for r in reports {
        csv.push_str(&format!(
            "{},{:.6},{:.6},{:.6},{:.6},{:.6},{:.6},{}\n",
            r.layer,
            r.train.accuracy,
            r.val.accuracy,
            r.test.accuracy,
            r.test.accuracy_ci.0,
            r.test.accuracy_ci.1,
            r.test.auroc,
            r.l2
        ));
    }
    csv
}

/// A sweep's table for a terminal: one row per layer (train, val and test accuracy, the test
/// accuracy's interval, test AUROC), the `best` layer marked.
pub fn reports_table(reports: &[LayerReport], best: Option<usize>) -> String {
    let mut t = String::from("layer  train    val   test  test 95% CI     test AUROC\n");
    for r in reports {
        t.push_str(&format!(
            "{:>5}  {:.3}  {:.3}  {:.3}  [{:.3}, {:.3}]  {:.3}{}\n",
            r.layer,
            r.train.accuracy,
            r.val.accuracy,
            r.test.accuracy,
            r.test.accuracy_ci.0,
            r.test.accuracy_ci.1,
            r.test.auroc,
            best_mark(r.layer, best)
        ));
    }
    t
}

/// `  <- best` behind the best layer's row.
fn best_mark(layer: usize, best: Option<usize>) -> &'static str {
    if Some(layer) == best {
        "  <- best"
    } else {
        ""
    }
}

/// The raw result of [`solve_logistic_batched`]: coefficients in the coordinates it was given.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchSolution {
    /// `coef[layer][g]`: `d + 1` values, the weights then the bias, for `l2[g]`.
    pub coef: Vec<Vec<Vec<f64>>>,
    /// `grad_norm[layer][g]`: ∞-norm of the gradient at `coef[layer][g]`.
    pub grad_norm: Vec<Vec<f64>>,
    /// Whether every problem reached `tol`.
    pub converged: bool,
    /// Newton steps taken (by the slowest problem).
    pub newton_iters: usize,
    /// Batched Hessian-vector products computed (each covers all problems).
    pub hvps: usize,
}

/// Fits one logistic probe per layer; each layer's L2 strength is the grid value with the best
/// validation accuracy (ties go to the larger `l2`). All layers and grid values are solved as one
/// batched Newton-CG problem (see the [module docs](self)).
///
/// Errors ([`Error::Shape`] or [`Error::InvalidArgument`], naming the split, layer and shape): no
/// layers or no items, a different number of layers or `d_model` across the splits, a row count
/// that differs from the number of labels, non-finite activations, training labels with one class
/// or a minority class under 5%, an invalid option, or a problem that does not reach `tol` within
/// `max_iter` Newton steps.
pub fn fit_logistic(
    train: &[Tensor],
    y_train: &[bool],
    val: &[Tensor],
    y_val: &[bool],
    opts: &ProbeOptions,
) -> Result<Vec<LinearProbe>> {
    Ok(fit_logistic_inner(train, y_train, val, y_val, opts)?.0)
}

/// Fits one difference-of-means probe per layer: `weight = mean(pos) - mean(neg)` on raw
/// activations, `bias` puts the threshold at the midpoint of the two class means' projections.
///
/// Errors as [`fit_logistic`]'s for the training split.
pub fn fit_diff_of_means(train: &[Tensor], y_train: &[bool]) -> Result<Vec<LinearProbe>> {
    let (_n, d) = check_split("train", train, y_train, None, None)?;
    check_labels(y_train)?;
    let dev = train[0].device().clone();
    let dt = work_dtype(&dev);
    let pos: Vec<f64> = y_train.iter().map(|&b| f64::from(u8::from(b))).collect();
    let n_pos = pos.iter().sum::<f64>();
    let n_neg = y_train.len() as f64 - n_pos;
    let n = y_train.len();
    // Per-row weights: 1/n_pos on positives, -1/n_neg on negatives (difference of means), and
    // 1/(2 n_pos), 1/(2 n_neg) (the midpoint of the means).
    let diff_w: Vec<f64> = pos.iter().map(|&p| p / n_pos - (1.0 - p) / n_neg).collect();
    let mid_w: Vec<f64> = pos
        .iter()
        .map(|&p| p / (2.0 * n_pos) + (1.0 - p) / (2.0 * n_neg))
        .collect();
    let mut wv = diff_w;
    wv.extend(mid_w);
    let weights = upload(wv, (2, n), &dev, dt)?; // [2, n]
    let mut probes = Vec::with_capacity(train.len());
    for x in train {
        let x = x.to_device(&dev)?.to_dtype(dt)?; // [n, d]
        let m = weights
            .matmul(&x)?
            .to_device(&Device::Cpu)?
            .to_dtype(DType::F64)?
            .to_vec2::<f64>()?; // [2, d]
        let (dir, mid) = (&m[0], &m[1]);
        let bias = -dir.iter().zip(mid).map(|(a, b)| a * b).sum::<f64>();
        let weight =
            Tensor::from_vec(dir.iter().map(|&v| v as f32).collect::<Vec<f32>>(), d, &dev)?; // [d]
        probes.push(LinearProbe {
            weight,
            bias,
            l2: 0.0,
            kind: ProbeKind::DiffOfMeans,
        });
    }
    Ok(probes)
}

impl LinearProbe {
    /// Decision values `x · weight + bias`, `[n]` f32 on `x`'s device (accumulated in f64 where
    /// the device has it). `x` is `[n, d_model]`.
    pub fn scores(&self, x: &Tensor) -> Result<Tensor> {
        let d = self.weight.dims1()?;
        check_layer("x", None, x, None, Some(d))?;
        Ok(self.scores_tensor(x)?.to_dtype(DType::F32)?) // [n]
    }

    /// Accuracy and AUROC of the probe on `x` (`[n, d_model]`) with labels `y`, with bootstrap
    /// 95% intervals over `opts.bootstrap` resamples seeded by `opts.seed`.
    pub fn evaluate(&self, x: &Tensor, y: &[bool], opts: &ProbeOptions) -> Result<Metrics> {
        let d = self.weight.dims1()?;
        check_layer("x", None, x, Some(y.len()), Some(d))?;
        let s = self.scores_f64(x)?;
        Ok(metrics(&s, y, opts))
    }

    /// Decision values in the working dtype, `[n]`.
    fn scores_tensor(&self, x: &Tensor) -> Result<Tensor> {
        let dev = x.device();
        let dt = work_dtype(dev);
        let x = x.to_dtype(dt)?; // [n, d]
        let w = self.weight.to_device(dev)?.to_dtype(dt)?.unsqueeze(1)?; // [d, 1]
        Ok((x.matmul(&w)?.squeeze(1)? + self.bias)?) // [n]
    }

    /// Decision values as host f64.
    fn scores_f64(&self, x: &Tensor) -> Result<Vec<f64>> {
        host(&self.scores_tensor(x)?)
    }
}

/// Fraction of items whose score has the label's sign (`score > 0` predicts `true`, as in
/// scikit-learn). `NaN` for no items.
pub fn accuracy(scores: &[f64], y: &[bool]) -> f64 {
    let n = scores.len().min(y.len());
    if n == 0 {
        return f64::NAN;
    }
    let correct = scores
        .iter()
        .zip(y)
        .filter(|&(&s, &t)| (s > 0.0) == t)
        .count();
    correct as f64 / n as f64
}

/// Area under the ROC curve: the probability that a random positive scores above a random
/// negative, ties counting one half (the Mann-Whitney statistic with averaged ranks). `NaN` unless
/// both classes are present. Scores should be finite.
pub fn auroc(scores: &[f64], y: &[bool]) -> f64 {
    let n = scores.len().min(y.len());
    let order = sorted_order(&scores[..n]);
    let ones = vec![1u32; n];
    weighted_auroc(&scores[..n], &y[..n], &order, &ones)
}

/// Percentile-bootstrap 95% intervals `(accuracy_ci, auroc_ci)` over `resamples` resamples of the
/// items (drawn with replacement by a seeded SplitMix64). Resamples with a single class are left
/// out of the AUROC interval. Intervals are `(NaN, NaN)` when `resamples` is 0 or there are no
/// items.
pub fn bootstrap_ci(
    scores: &[f64],
    y: &[bool],
    resamples: usize,
    seed: u64,
) -> ((f64, f64), (f64, f64)) {
    let n = scores.len().min(y.len());
    let nan = (f64::NAN, f64::NAN);
    if n == 0 || resamples == 0 {
        return (nan, nan);
    }
    let (scores, y) = (&scores[..n], &y[..n]);
    let order = sorted_order(scores);
    let correct: Vec<bool> = scores
        .iter()
        .zip(y)
        .map(|(&s, &t)| (s > 0.0) == t)
        .collect();
    let mut rng = SplitMix64::new(seed);
    let mut counts = vec![0u32; n];
    let mut accs = Vec::with_capacity(resamples);
    let mut aucs = Vec::with_capacity(resamples);
    for _ in 0..resamples {
        counts.iter_mut().for_each(|c| *c = 0);
        for _ in 0..n {
            counts[rng.below(n as u64) as usize] += 1;
        }
        let right: u64 = counts
            .iter()
            .zip(&correct)
            .filter(|(_, &c)| c)
            .map(|(&k, _)| u64::from(k))
            .sum();
        accs.push(right as f64 / n as f64);
        let a = weighted_auroc(scores, y, &order, &counts);
        if a.is_finite() {
            aucs.push(a);
        }
    }
    (percentile_ci(&mut accs), percentile_ci(&mut aucs))
}

/// Percentile-bootstrap 95% interval of the mean of `values` over `resamples` resamples (drawn
/// with replacement by a seeded SplitMix64), e.g. of per-item paired differences between a steered
/// and an unsteered model. `(NaN, NaN)` when `resamples` is 0 or there are no values.
pub fn mean_ci(values: &[f64], resamples: usize, seed: u64) -> (f64, f64) {
    let n = values.len();
    if n == 0 || resamples == 0 {
        return (f64::NAN, f64::NAN);
    }
    let mut rng = SplitMix64::new(seed);
    let mut means: Vec<f64> = (0..resamples)
        .map(|_| {
            (0..n)
                .map(|_| values[rng.below(n as u64) as usize])
                .sum::<f64>()
                / n as f64
        })
        .collect();
    percentile_ci(&mut means)
}

/// The one call: logistic probes at every layer ([`fit_logistic`], L2 chosen on `val`), each
/// evaluated on train, validation and test. Errors as [`fit_logistic`]'s, for all three splits.
pub fn sweep(
    train: &[Tensor],
    y_train: &[bool],
    val: &[Tensor],
    y_val: &[bool],
    test: &[Tensor],
    y_test: &[bool],
    opts: &ProbeOptions,
) -> Result<Vec<LayerReport>> {
    Ok(sweep_fits(train, y_train, val, y_val, test, y_test, opts)?.0)
}

/// [`sweep`] with the probe of your choice: [`ProbeKind::Logistic`] is [`sweep`];
/// [`ProbeKind::DiffOfMeans`] fits [`fit_diff_of_means`] on `train` (`val` is only reported,
/// `l2` is 0); [`ProbeKind::Ridge`] fits [`fit_ridge`] to targets `+1` (true) and `-1` (false),
/// `l2` chosen on validation `R²`, a decision value above 0 meaning true. `grad_norm` is 0 for
/// the closed forms. Errors as [`sweep`]'s.
pub fn sweep_as(
    kind: ProbeKind,
    train: &[Tensor],
    y_train: &[bool],
    val: &[Tensor],
    y_val: &[bool],
    test: &[Tensor],
    y_test: &[bool],
    opts: &ProbeOptions,
) -> Result<Vec<LayerReport>> {
    let probes = match kind {
        ProbeKind::Logistic => return sweep(train, y_train, val, y_val, test, y_test, opts),
        ProbeKind::DiffOfMeans => {
            let (_, d) = check_split("train", train, y_train, None, None)?;
            check_split("val", val, y_val, Some(d), Some(train.len()))?;
            fit_diff_of_means(train, y_train)?
        }
        ProbeKind::Ridge => {
            check_labels(y_train)?;
            let pm = |y: &[bool]| -> Vec<f64> {
                y.iter().map(|&b| if b { 1.0 } else { -1.0 }).collect()
            };
            fit_ridge(train, &pm(y_train), val, &pm(y_val), opts)?
        }
    };
    let (_, d) = check_split("train", train, y_train, None, None)?;
    check_split("test", test, y_test, Some(d), Some(train.len()))?;
    let mut out = Vec::with_capacity(probes.len());
    for (l, p) in probes.iter().enumerate() {
        out.push(LayerReport {
            layer: l,
            train: metrics(&p.scores_f64(&train[l])?, y_train, opts),
            val: metrics(&p.scores_f64(&val[l])?, y_val, opts),
            test: metrics(&p.scores_f64(&test[l])?, y_test, opts),
            l2: p.l2,
            grad_norm: 0.0,
        });
    }
    Ok(out)
}

/// [`sweep`] and the probes it fitted (for [`transfer`] without fitting them again).
pub(crate) fn sweep_fits(
    train: &[Tensor],
    y_train: &[bool],
    val: &[Tensor],
    y_val: &[bool],
    test: &[Tensor],
    y_test: &[bool],
    opts: &ProbeOptions,
) -> Result<(Vec<LayerReport>, Vec<LinearProbe>)> {
    let (_, d) = check_split("train", train, y_train, None, None)?;
    check_split("test", test, y_test, Some(d), Some(train.len()))?;
    let (probes, grad_norms) = fit_logistic_inner(train, y_train, val, y_val, opts)?;
    let mut out = Vec::with_capacity(probes.len());
    for (l, (p, gn)) in probes.iter().zip(grad_norms).enumerate() {
        out.push(LayerReport {
            layer: l,
            train: metrics(&p.scores_f64(&train[l])?, y_train, opts),
            val: metrics(&p.scores_f64(&val[l])?, y_val, opts),
            test: metrics(&p.scores_f64(&test[l])?, y_test, opts),
            l2: p.l2,
            grad_norm: gn,
        });
    }
    Ok((out, probes))
}

/// Evaluates probes trained on one model on another model's activations at the same layers
/// (`x_other[l]` is `[n, d_model]` for `probes[l]`). The layer counts and each layer's `d_model`
/// must match ([`Error::Shape`] otherwise).
pub fn transfer(
    probes: &[LinearProbe],
    x_other: &[Tensor],
    y: &[bool],
    opts: &ProbeOptions,
) -> Result<Vec<Metrics>> {
    if probes.len() != x_other.len() {
        return Err(Error::Shape {
            what: "transfer: layers of the other model's activations".into(),
            expected: format!("{} layers (one per probe)", probes.len()),
            got: format!("{} layers", x_other.len()),
        });
    }
    let mut out = Vec::with_capacity(probes.len());
    for (l, (p, x)) in probes.iter().zip(x_other).enumerate() {
        let d = p.weight.dims1()?;
        check_layer("x_other", Some(l), x, Some(y.len()), Some(d))?;
        out.push(metrics(&p.scores_f64(x)?, y, opts));
    }
    Ok(out)
}

/// Solves L2-regularised logistic regression for every layer of `x` (`[L, n, d]`, used as given:
/// no standardization) and every strength in `l2` at once, with an unpenalised bias, by batched
/// Newton-CG (see the [module docs](self)). This is the engine of [`fit_logistic`], public so that
/// its convergence can be checked (e.g. with [`logistic_objective_grad`]).
pub fn solve_logistic_batched(
    x: &Tensor,
    y: &[bool],
    l2: &[f64],
    max_iter: usize,
    tol: f64,
) -> Result<BatchSolution> {
    let (l, n, _d) = x.dims3().map_err(|_| Error::Shape {
        what: "solve_logistic_batched: activations".into(),
        expected: "[layers, n, d]".into(),
        got: format!("{:?}", x.dims()),
    })?;
    if n != y.len() || n == 0 || l == 0 {
        return Err(Error::Shape {
            what: "solve_logistic_batched: activations vs labels".into(),
            expected: format!("[layers > 0, {} (one row per label, > 0), d]", y.len()),
            got: format!("{:?}", x.dims()),
        });
    }
    check_solver_opts(l2, max_iter, tol)?;
    for (li, xl) in x.chunk(l, 0)?.iter().enumerate() {
        check_layer("x", Some(li), &xl.squeeze(0)?, Some(n), None)?;
    }
    let dev = x.device().clone();
    let dt = work_dtype(&dev);
    let ones = Tensor::ones((l, n, 1), dt, &dev)?; // [L, n, 1]
    let xa = Tensor::cat(&[&x.to_dtype(dt)?, &ones], 2)?; // [L, n, d+1]
    newton_cg(&xa, y, l2, max_iter, tol)
}

/// The logistic objective `mean_i [log(1 + exp(z_i)) - y_i z_i] + (l2/2)·||w||²` with
/// `z_i = w·x_i + bias`, and its gradient (`d + 1` values: the weights', then the bias's),
/// computed on the host in plain f64 loops, independently of the batched solver. `x` is `[n, d]`.
pub fn logistic_objective_grad(
    x: &Tensor,
    y: &[bool],
    w: &[f64],
    bias: f64,
    l2: f64,
) -> Result<(f64, Vec<f64>)> {
    check_layer("x", None, x, Some(y.len()), Some(w.len()))?;
    // n rows of d
    let rows = x
        .to_device(&Device::Cpu)?
        .to_dtype(DType::F64)?
        .to_vec2::<f64>()?;
    let n = rows.len() as f64;
    let mut grad = vec![0.0; w.len() + 1];
    let mut loss = 0.0;
    for (row, &t) in rows.iter().zip(y) {
        let z = row.iter().zip(w).map(|(a, b)| a * b).sum::<f64>() + bias;
        let t = f64::from(u8::from(t));
        loss += z.max(0.0) + (-z.abs()).exp().ln_1p() - t * z;
        let r = 1.0 / (1.0 + (-z).exp()) - t;
        for (g, &a) in grad.iter_mut().zip(row) {
            *g += r * a;
        }
        grad[w.len()] += r;
    }
    let mut obj = loss / n;
    for (j, g) in grad.iter_mut().enumerate() {
        *g /= n;
        if j < w.len() {
            *g += l2 * w[j];
            obj += 0.5 * l2 * w[j] * w[j];
        }
    }
    Ok((obj, grad))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auroc_ties_and_classes() {
        // Perfect ranking, reversed ranking, all tied.
        assert_eq!(
            auroc(&[0.1, 0.2, 0.3, 0.4], &[false, false, true, true]),
            1.0
        );
        assert_eq!(
            auroc(&[0.4, 0.3, 0.2, 0.1], &[false, false, true, true]),
            0.0
        );
        assert_eq!(auroc(&[1.0; 4], &[false, true, false, true]), 0.5);
        // One tie across classes among 2x2 pairs: 3 wins + 0.5 = 3.5 / 4.
        assert_eq!(
            auroc(&[0.1, 0.5, 0.5, 0.9], &[false, false, true, true]),
            0.875
        );
        assert!(auroc(&[0.1, 0.2], &[true, true]).is_nan());
    }

    #[test]
    fn accuracy_threshold_is_strict() {
        assert_eq!(accuracy(&[0.0, 1.0, -1.0], &[false, true, false]), 1.0);
        assert_eq!(accuracy(&[0.0], &[true]), 0.0);
    }

    #[test]
    fn splitmix_reference_values() {
        // First outputs for seed 1234567 from the reference C implementation.
        let mut r = SplitMix64::new(1234567);
        assert_eq!(r.next_u64(), 6457827717110365317);
        assert_eq!(r.next_u64(), 3203168211198807973);
    }

    #[test]
    fn mean_ci_covers_the_mean_and_shrinks_with_n() {
        // Values 0..n-1 shuffled deterministically: the mean is (n-1)/2; the interval's width
        // scales as 1/sqrt(n) (sd of the mean of uniform ranks ~ n/sqrt(12 n)).
        let width = |n: usize| {
            let v: Vec<f64> = (0..n).map(|i| ((i * 7919) % n) as f64 / n as f64).collect();
            let (lo, hi) = mean_ci(&v, 2000, 3);
            let mean = v.iter().sum::<f64>() / n as f64;
            assert!(lo < mean && mean < hi, "{lo} {mean} {hi}");
            hi - lo
        };
        let (w100, w400) = (width(100), width(400));
        // Expected 2 x 1.96 x 0.2887 / sqrt(n): 0.113 and 0.057; resampling noise is a few percent.
        assert!((w100 / 0.1132 - 1.0).abs() < 0.15, "{w100}");
        assert!((w400 / 0.0566 - 1.0).abs() < 0.15, "{w400}");
        assert!(mean_ci(&[], 100, 0).0.is_nan() && mean_ci(&[1.0], 0, 0).0.is_nan());
        assert_eq!(mean_ci(&[2.0; 5], 100, 0), (2.0, 2.0));
    }

    #[test]
    fn percentiles_interpolate() {
        let mut v: Vec<f64> = (0..=100).map(f64::from).collect();
        assert_eq!(percentile_ci(&mut v), (2.5, 97.5));
    }
}
