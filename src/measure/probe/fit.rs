//! linfa citizenship: per-layer datasets, puppetlens's logistic probe as a linfa model, a sweep
//! over any linfa model, and k-fold cross-validation (see the [module docs](super)).

use std::any::Any;

use candle_core::Tensor;
use linfa::dataset::{AsSingleTargets, DatasetBase};
use linfa::traits::{Fit, PredictInplace};
use linfa::Dataset;
use ndarray::{Array1, Array2, ArrayBase, Data, Ix1, Ix2};
use serde::{Deserialize, Serialize};

use super::regress::{check_targets, regression_metrics, RegressionReport};
use super::{
    check_labels, fit_grid, metrics, sweep_fits, LayerReport, LinearProbe, Metrics, ProbeOptions,
};
use crate::array::from_array2;
use crate::data::SplitMix64;
use crate::{Error, HookPoint, Result};

/// One layer's linfa dataset: records `[item, d_model]` f32, one target per item, feature names
/// `"{hook point}[{j}]"` (e.g. `blocks.3.hook_resid_post[17]`).
pub type LayerDataset<T> = Dataset<f32, T, Ix1>;

/// The activations at one hook point (`x` is `[item, d_model]`, any dtype or device) as a linfa
/// dataset with `targets` (one per row; [`Error::Shape`] otherwise).
pub fn point_dataset<T: Clone>(
    point: HookPoint,
    x: &Tensor,
    targets: &[T],
) -> Result<LayerDataset<T>> {
    let (n, d) = x.dims2().map_err(|_| Error::Shape {
        what: format!("{point}: activations"),
        expected: "[item, d_model]".into(),
        got: format!("{:?}", x.dims()),
    })?;
    if n != targets.len() {
        return Err(Error::Shape {
            what: format!("{point}: activations vs targets"),
            expected: format!("[{}, d_model] (one row per target)", targets.len()),
            got: format!("[{n}, {d}]"),
        });
    }
    let records = crate::array::to_array2(x)?;
    let names: Vec<String> = (0..d).map(|j| format!("{point}[{j}]")).collect();
    Ok(DatasetBase::new(records, Array1::from(targets.to_vec())).with_feature_names(names))
}

/// One linfa dataset per layer: `layers[l]` (`[item, d_model]`, as [`crate::extract::Activations::layers`]
/// gives) is the `hook_resid_post` of layer `l`; every layer shares `targets`.
pub fn layer_datasets<T: Clone>(layers: &[Tensor], targets: &[T]) -> Result<Vec<LayerDataset<T>>> {
    layers
        .iter()
        .enumerate()
        .map(|(l, x)| point_dataset(HookPoint::ResidPost(l), x, targets))
        .collect()
}

/// puppetlens's logistic probe as a linfa model: the hyperparameters of one fit (a fixed `l2`,
/// same objective, standardization and Newton-CG solver as [`super::fit_logistic`]). Fitting a
/// [`LayerDataset<bool>`] gives a [`LinearProbe`], which predicts `bool` labels through linfa's
/// `Predict`, so linfa's cross-validation and metrics apply:
///
/// ```
/// use linfa::prelude::*;
/// use puppetlens::probe::LogisticProbe;
/// # fn main() -> puppetlens::Result<()> {
/// let x = ndarray::Array2::from_shape_fn((40, 3), |(i, j)| ((i * 7 + j * 3) % 11) as f32 - 5.0 + if i % 2 == 0 && j == 0 { 20.0 } else { 0.0 });
/// let y = ndarray::Array1::from_shape_fn(40, |i| i % 2 == 0);
/// let ds = linfa::Dataset::new(x, y);
/// let probe = LogisticProbe::new(1e-2).fit(&ds)?;
/// let labels: ndarray::Array1<bool> = probe.predict(ds.records()); // `f32` values predict too
/// let acc = labels.confusion_matrix(ds.targets())?.accuracy();
/// assert!(acc > 0.9);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct LogisticProbe {
    /// L2 strength (mean-loss convention, see the [module docs](super)); finite and > 0.
    pub l2: f64,
    /// As [`ProbeOptions::max_iter`].
    pub max_iter: usize,
    /// As [`ProbeOptions::tol`].
    pub tol: f64,
    /// As [`ProbeOptions::standardize`].
    pub standardize: bool,
}

impl Default for LogisticProbe {
    /// `l2 = 1e-2` and [`ProbeOptions::default`]'s solver settings.
    fn default() -> Self {
        Self::new(1e-2)
    }
}

impl LogisticProbe {
    /// A probe with strength `l2` and the default solver settings.
    pub fn new(l2: f64) -> Self {
        Self::with_options(l2, &ProbeOptions::default())
    }

    /// A probe with strength `l2` and `opts`' solver settings (its grid is ignored).
    pub fn with_options(l2: f64, opts: &ProbeOptions) -> Self {
        LogisticProbe {
            l2,
            max_iter: opts.max_iter,
            tol: opts.tol,
            standardize: opts.standardize,
        }
    }

    fn options(&self) -> ProbeOptions {
        ProbeOptions {
            l2_grid: vec![self.l2],
            max_iter: self.max_iter,
            tol: self.tol,
            standardize: self.standardize,
            ..ProbeOptions::default()
        }
    }
}

impl<D: Data<Elem = f32>, T: AsSingleTargets<Elem = bool>> Fit<ArrayBase<D, Ix2>, T, Error>
    for LogisticProbe
{
    type Object = LinearProbe;

    /// Fits on `dataset` (records `[n, d_model]` f32, `bool` targets); errors as
    /// [`super::fit_logistic`]'s.
    fn fit(&self, dataset: &DatasetBase<ArrayBase<D, Ix2>, T>) -> Result<LinearProbe> {
        let x = from_array2(dataset.records().to_owned())?; // [n, d]
        let y: Vec<bool> = dataset.as_single_targets().iter().copied().collect();
        let fit = fit_grid(&[x], &y, &self.options())?;
        fit.probe(0, 0, self.l2)
    }
}

impl LinearProbe {
    /// Decision values `x · weight + bias` of rows `x` (`[n, d_model]`), in f64 on the host.
    /// Panics never; a wrong `d_model` is [`Error::Shape`].
    pub fn decision(&self, x: &ndarray::ArrayView2<'_, f32>) -> Result<Array1<f64>> {
        let w = crate::array::to_array1(&self.weight)?;
        crate::array::check_shape2(x, None, Some(w.len()), "probe input")?;
        let w = w.mapv(f64::from);
        Ok(x.outer_iter()
            .map(|row| {
                row.iter()
                    .zip(&w)
                    .map(|(&a, &b)| f64::from(a) * b)
                    .sum::<f64>()
                    + self.bias
            })
            .collect())
    }
}

impl<D: Data<Elem = f32>> PredictInplace<ArrayBase<D, Ix2>, Array1<bool>> for LinearProbe {
    /// Labels `decision > 0`. linfa's trait cannot return an error: a row count that differs
    /// from `y`'s or a wrong `d_model` leaves `y` all `false` (use [`LinearProbe::decision`] to
    /// get the error).
    fn predict_inplace(&self, x: &ArrayBase<D, Ix2>, y: &mut Array1<bool>) {
        match self.decision(&x.view()) {
            Ok(s) if s.len() == y.len() => y.zip_mut_with(&s, |t, &v| *t = v > 0.0),
            _ => y.fill(false),
        }
    }

    fn default_target(&self, x: &ArrayBase<D, Ix2>) -> Array1<bool> {
        Array1::from_elem(x.nrows(), false)
    }
}

impl<D: Data<Elem = f32>> PredictInplace<ArrayBase<D, Ix2>, Array1<f32>> for LinearProbe {
    /// Predicted values `x · weight + bias` (for [`super::ProbeKind::Ridge`] probes, the
    /// predicted target). As for the labels, a shape mismatch leaves `y` as `NaN`.
    fn predict_inplace(&self, x: &ArrayBase<D, Ix2>, y: &mut Array1<f32>) {
        match self.decision(&x.view()) {
            Ok(s) if s.len() == y.len() => y.zip_mut_with(&s, |t, &v| *t = v as f32),
            _ => y.fill(f32::NAN),
        }
    }

    fn default_target(&self, x: &ArrayBase<D, Ix2>) -> Array1<f32> {
        Array1::zeros(x.nrows())
    }
}

/// Checks that three splits of per-layer datasets agree in layer count and `d_model`.
fn check_datasets<T>(
    train: &[LayerDataset<T>],
    val: &[LayerDataset<T>],
    test: &[LayerDataset<T>],
) -> Result<usize> {
    if train.is_empty() {
        return Err(Error::InvalidArgument {
            name: "train".into(),
            msg: "no layers given (empty slice of datasets)".into(),
        });
    }
    let d = train[0].records().ncols();
    for (split, sets) in [("train", train), ("val", val), ("test", test)] {
        if sets.len() != train.len() {
            return Err(Error::Shape {
                what: format!("{split}: number of layers"),
                expected: format!("{} layers (as in train)", train.len()),
                got: format!("{} layers", sets.len()),
            });
        }
        for (l, ds) in sets.iter().enumerate() {
            let (n, dd) = ds.records().dim();
            if dd != d || n == 0 || ds.targets().len() != n {
                return Err(Error::Shape {
                    what: format!("{split}, layer {l}: dataset"),
                    expected: format!("[n > 0, {d}] records and n targets"),
                    got: format!("[{n}, {dd}] records and {} targets", ds.targets().len()),
                });
            }
        }
    }
    Ok(d)
}

/// The targets every layer of one split shares ([`Error::InvalidArgument`] when a layer's differ).
fn shared_targets<T: PartialEq + Clone>(split: &str, sets: &[LayerDataset<T>]) -> Result<Vec<T>> {
    let first = sets
        .first()
        .map(|ds| ds.targets().to_vec())
        .unwrap_or_default();
    for (l, ds) in sets.iter().enumerate().skip(1) {
        if ds.targets().iter().ne(first.iter()) {
            return Err(Error::InvalidArgument {
                name: format!("{split}, layer {l}: targets"),
                msg: "differ from layer 0's (or are NaN); every layer's dataset must share the \
                      targets"
                    .into(),
            });
        }
    }
    Ok(first)
}

/// A per-layer sweep over **any linfa classifier**: at every layer, for each `l2` in
/// [`ProbeOptions::l2_grid`], `make(l2)` is fitted on `train[l]`; the model with the best
/// validation accuracy is kept (ties: the larger `l2`) and reported on train, validation and test
/// as [`LayerReport`]s with bootstrap intervals, exactly as [`super::sweep`]. `make` maps the
/// grid value to a model (e.g. `|l2| LogisticRegression::default().alpha(l2 * n)`); a model
/// without a strength ignores it (give a grid of one value).
///
/// The scores behind the AUROC are the predicted labels (`±1`), since linfa classifiers predict
/// labels; [`sweep_with_scores`] takes a decision function instead. `grad_norm` is `NaN` for
/// models other than [`LogisticProbe`].
///
/// [`LogisticProbe`] is recognised: all its layers and grid values are then solved as one
/// batched problem ([`super::fit_logistic`]'s engine), which gives the same probes as fitting
/// each one through linfa (every problem in the batch keeps its own Newton-CG state) at the
/// direct call's speed.
pub fn sweep_with<M, E>(
    make: impl Fn(f64) -> M,
    train: &[LayerDataset<bool>],
    val: &[LayerDataset<bool>],
    test: &[LayerDataset<bool>],
    opts: &ProbeOptions,
) -> Result<Vec<LayerReport>>
where
    M: Fit<Array2<f32>, Array1<bool>, E> + 'static,
    M::Object: PredictInplace<Array2<f32>, Array1<bool>> + 'static,
    E: std::error::Error + From<linfa::Error>,
{
    sweep_with_scores(
        make,
        |m: &M::Object, x: &Array2<f32>| {
            let mut y = Array1::from_elem(x.nrows(), false);
            m.predict_inplace(x, &mut y);
            Ok(y.mapv(|b| if b { 1.0 } else { -1.0 }))
        },
        train,
        val,
        test,
        opts,
    )
}

/// [`sweep_with`] with a decision function: `score(fitted, x)` gives one value per row of `x`,
/// positive meaning `true` (e.g. log-odds), used for the accuracy (`score > 0`) and the AUROC.
pub fn sweep_with_scores<M, E>(
    make: impl Fn(f64) -> M,
    score: impl Fn(&M::Object, &Array2<f32>) -> Result<Array1<f64>>,
    train: &[LayerDataset<bool>],
    val: &[LayerDataset<bool>],
    test: &[LayerDataset<bool>],
    opts: &ProbeOptions,
) -> Result<Vec<LayerReport>>
where
    M: Fit<Array2<f32>, Array1<bool>, E> + 'static,
    M::Object: 'static,
    E: std::error::Error + From<linfa::Error>,
{
    check_datasets(train, val, test)?;
    if opts.l2_grid.is_empty() {
        return Err(Error::InvalidArgument {
            name: "l2_grid".into(),
            msg: "is empty; give at least one value".into(),
        });
    }
    let (ytr, yva, yte) = (
        shared_targets("train", train)?,
        shared_targets("val", val)?,
        shared_targets("test", test)?,
    );
    let models: Vec<M> = opts.l2_grid.iter().map(|&l2| make(l2)).collect();

    // puppetlens's own probe: one batched solve of every layer and grid value.
    let own: Option<Vec<&LogisticProbe>> = models
        .iter()
        .map(|m| (m as &dyn Any).downcast_ref::<LogisticProbe>())
        .collect();
    if let Some(own) = own {
        let first = own[0];
        let same = own.iter().all(|p| {
            p.max_iter == first.max_iter && p.tol == first.tol && p.standardize == first.standardize
        });
        if same {
            let tensors = |sets: &[LayerDataset<bool>]| -> Result<Vec<Tensor>> {
                sets.iter()
                    .map(|ds| from_array2(ds.records().clone()))
                    .collect()
            };
            let o = ProbeOptions {
                l2_grid: own.iter().map(|p| p.l2).collect(),
                max_iter: first.max_iter,
                tol: first.tol,
                standardize: first.standardize,
                ..opts.clone()
            };
            let (xtr, xva, xte) = (tensors(train)?, tensors(val)?, tensors(test)?);
            let (mut reports, probes) = sweep_fits(&xtr, &ytr, &xva, &yva, &xte, &yte, &o)?;
            // Scores through the caller's decision function, as on the generic path.
            for (r, p) in reports.iter_mut().zip(&probes) {
                let fitted = (p as &dyn Any).downcast_ref::<M::Object>().ok_or_else(|| {
                    Error::InvalidArgument {
                        name: "model".into(),
                        msg: "LogisticProbe fitted to an unexpected type".into(),
                    }
                })?;
                let l = r.layer;
                r.train = split_metrics(&score, fitted, train[l].records(), &ytr, opts)?;
                r.val = split_metrics(&score, fitted, val[l].records(), &yva, opts)?;
                r.test = split_metrics(&score, fitted, test[l].records(), &yte, opts)?;
            }
            return Ok(reports);
        }
    }

    // Any linfa model: fit each layer and grid value on its own.
    check_labels(&ytr)?;
    let mut by_l2: Vec<usize> = (0..models.len()).collect();
    by_l2.sort_by(|&a, &b| opts.l2_grid[b].total_cmp(&opts.l2_grid[a])); // largest first
    let mut out = Vec::with_capacity(train.len());
    for l in 0..train.len() {
        let mut best: Option<(usize, f64, M::Object)> = None;
        for &gi in &by_l2 {
            let fitted = models[gi]
                .fit(&train[l])
                .map_err(|e| linfa_err(l, opts.l2_grid[gi], e))?;
            let acc = super::accuracy(&score(&fitted, val[l].records())?.to_vec(), &yva);
            if best.as_ref().is_none_or(|(_, a, _)| acc > *a) {
                best = Some((gi, acc, fitted));
            }
        }
        let Some((gi, _, fitted)) = best else {
            continue;
        };
        out.push(LayerReport {
            layer: l,
            train: split_metrics(&score, &fitted, train[l].records(), &ytr, opts)?,
            val: split_metrics(&score, &fitted, val[l].records(), &yva, opts)?,
            test: split_metrics(&score, &fitted, test[l].records(), &yte, opts)?,
            l2: opts.l2_grid[gi],
            grad_norm: f64::NAN,
        });
    }
    Ok(out)
}

/// Metrics of a fitted model's scores on one split.
fn split_metrics<O>(
    score: &impl Fn(&O, &Array2<f32>) -> Result<Array1<f64>>,
    fitted: &O,
    x: &Array2<f32>,
    y: &[bool],
    opts: &ProbeOptions,
) -> Result<Metrics> {
    let s = score(fitted, x)?;
    if s.len() != y.len() {
        return Err(Error::Shape {
            what: "decision function output".into(),
            expected: format!("[{}] (one score per row)", y.len()),
            got: format!("[{}]", s.len()),
        });
    }
    Ok(metrics(&s.to_vec(), y, opts))
}

/// A linfa model's error, naming the layer and grid value.
fn linfa_err(layer: usize, l2: f64, e: impl std::error::Error) -> Error {
    Error::InvalidArgument {
        name: format!("model at layer {layer} (l2 = {l2})"),
        msg: e.to_string(),
    }
}

/// A per-layer regression sweep over **any linfa regressor** (e.g. linfa-linear's
/// `LinearRegression`): as [`sweep_with`], with `f32` targets, the grid value chosen on
/// validation `R²` and [`RegressionReport`]s (`R²` with bootstrap intervals, RMSE).
pub fn regress_with<M, E>(
    make: impl Fn(f64) -> M,
    train: &[LayerDataset<f32>],
    val: &[LayerDataset<f32>],
    test: &[LayerDataset<f32>],
    opts: &ProbeOptions,
) -> Result<Vec<RegressionReport>>
where
    M: Fit<Array2<f32>, Array1<f32>, E>,
    M::Object: PredictInplace<Array2<f32>, Array1<f32>>,
    E: std::error::Error + From<linfa::Error>,
{
    check_datasets(train, val, test)?;
    if opts.l2_grid.is_empty() {
        return Err(Error::InvalidArgument {
            name: "l2_grid".into(),
            msg: "is empty; give at least one value".into(),
        });
    }
    let wide = |t: Vec<f32>| -> Vec<f64> { t.into_iter().map(f64::from).collect() };
    let (ttr, tva, tte) = (
        wide(shared_targets("train", train)?),
        wide(shared_targets("val", val)?),
        wide(shared_targets("test", test)?),
    );
    check_targets("train targets", &ttr)?;
    let predict = |m: &M::Object, x: &Array2<f32>| -> Vec<f64> {
        let mut y = Array1::zeros(x.nrows());
        m.predict_inplace(x, &mut y);
        y.iter().map(|&v: &f32| f64::from(v)).collect()
    };
    let models: Vec<M> = opts.l2_grid.iter().map(|&l2| make(l2)).collect();
    let mut by_l2: Vec<usize> = (0..models.len()).collect();
    by_l2.sort_by(|&a, &b| opts.l2_grid[b].total_cmp(&opts.l2_grid[a]));
    let mut out = Vec::with_capacity(train.len());
    for l in 0..train.len() {
        let mut best: Option<(usize, f64, M::Object)> = None;
        for &gi in &by_l2 {
            let fitted = models[gi]
                .fit(&train[l])
                .map_err(|e| linfa_err(l, opts.l2_grid[gi], e))?;
            let r = super::r2(&predict(&fitted, val[l].records()), &tva);
            let r = if r.is_finite() { r } else { f64::NEG_INFINITY };
            if best.as_ref().is_none_or(|(_, b, _)| r > *b) {
                best = Some((gi, r, fitted));
            }
        }
        let Some((gi, _, fitted)) = best else {
            continue;
        };
        out.push(RegressionReport {
            layer: l,
            train: regression_metrics(&predict(&fitted, train[l].records()), &ttr, opts),
            val: regression_metrics(&predict(&fitted, val[l].records()), &tva, opts),
            test: regression_metrics(&predict(&fitted, test[l].records()), &tte, opts),
            l2: opts.l2_grid[gi],
        });
    }
    Ok(out)
}

/// One layer's row of [`cross_validate`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CvReport {
    /// Index of the layer.
    pub layer: usize,
    /// The L2 strength with the best mean held-out accuracy over the folds (ties: the larger).
    pub l2: f64,
    /// Held-out accuracy of each fold at that `l2`.
    pub fold_accuracy: Vec<f64>,
    /// Metrics of the pooled out-of-fold scores at that `l2` (every item scored once, by the
    /// probe that did not see it), with bootstrap intervals. Choosing `l2` on the same folds
    /// makes these slightly optimistic.
    pub pooled: Metrics,
}

/// k-fold cross-validation of the logistic probe at every layer: the items (`x[l]` is
/// `[n, d_model]`, one label each) are shuffled by a SplitMix64 seeded with `opts.seed` and cut
/// into `k` folds of sizes differing by at most one; each fold is held out once while
/// [`super::fit_logistic`]'s batched solver fits every layer and grid value on the rest.
/// `2 <= k <= n`; every training part must pass the label checks.
pub fn cross_validate(
    x: &[Tensor],
    y: &[bool],
    k: usize,
    opts: &ProbeOptions,
) -> Result<Vec<CvReport>> {
    let (n, _) = super::check_split("x", x, y, None, None)?;
    if k < 2 || k > n {
        return Err(Error::InvalidArgument {
            name: "folds".into(),
            msg: format!("is {k}; k-fold cross-validation needs 2 <= k <= n = {n}"),
        });
    }
    let mut order: Vec<usize> = (0..n).collect();
    SplitMix64::new(opts.seed).shuffle(&mut order);
    let (l, g) = (x.len(), opts.l2_grid.len());
    // scores[layer][grid][item]: out-of-fold decision values.
    let mut scores = vec![vec![vec![0.0f64; n]; g]; l];
    let mut fold_acc = vec![vec![Vec::with_capacity(k); g]; l];
    for f in 0..k {
        let (lo, hi) = (f * n / k, (f + 1) * n / k);
        let held: Vec<usize> = order[lo..hi].to_vec();
        let kept: Vec<usize> = order[..lo].iter().chain(&order[hi..]).copied().collect();
        let pick = |idx: &[usize]| -> Result<Vec<Tensor>> {
            let ids = Tensor::from_vec(
                idx.iter().map(|&i| i as u32).collect::<Vec<u32>>(),
                idx.len(),
                x[0].device(),
            )?;
            x.iter().map(|t| Ok(t.index_select(&ids, 0)?)).collect()
        };
        let (xtr, xho) = (pick(&kept)?, pick(&held)?);
        let ytr: Vec<bool> = kept.iter().map(|&i| y[i]).collect();
        let yho: Vec<bool> = held.iter().map(|&i| y[i]).collect();
        let fit = fit_grid(&xtr, &ytr, opts).map_err(|e| Error::InvalidArgument {
            name: format!("fold {f} of {k}"),
            msg: e.to_string(),
        })?;
        for li in 0..l {
            for gi in 0..g {
                let s = fit.probe(li, gi, opts.l2_grid[gi])?.scores_f64(&xho[li])?;
                fold_acc[li][gi].push(super::accuracy(&s, &yho));
                for (&i, v) in held.iter().zip(s) {
                    scores[li][gi][i] = v;
                }
            }
        }
    }
    let mut by_l2: Vec<usize> = (0..g).collect();
    by_l2.sort_by(|&a, &b| opts.l2_grid[b].total_cmp(&opts.l2_grid[a]));
    let mut out = Vec::with_capacity(l);
    for li in 0..l {
        let mean = |gi: usize| fold_acc[li][gi].iter().sum::<f64>() / k as f64;
        let mut best = by_l2[0];
        for &gi in &by_l2 {
            if mean(gi) > mean(best) {
                best = gi;
            }
        }
        out.push(CvReport {
            layer: li,
            l2: opts.l2_grid[best],
            fold_accuracy: fold_acc[li][best].clone(),
            pooled: metrics(&scores[li][best], y, opts),
        });
    }
    Ok(out)
}

/// Metrics of any fitted linfa classifier's labels on a dataset (helper for examples): accuracy
/// and, from the `±1` labels, the AUROC.
pub fn label_metrics<O>(fitted: &O, ds: &LayerDataset<bool>, opts: &ProbeOptions) -> Metrics
where
    O: PredictInplace<Array2<f32>, Array1<bool>>,
{
    let mut y = Array1::from_elem(ds.records().nrows(), false);
    fitted.predict_inplace(ds.records(), &mut y);
    let s: Vec<f64> = y.iter().map(|&b| if b { 1.0 } else { -1.0 }).collect();
    metrics(&s, &ds.targets().to_vec(), opts)
}
