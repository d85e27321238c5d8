//! Checks of a probe problem's inputs: solver options, split sizes, layer shapes, labels.

use super::*;

/// Checks the solver options.
pub(super) fn check_solver_opts(l2: &[f64], max_iter: usize, tol: f64) -> Result<()> {
    if l2.is_empty() {
        return Err(Error::InvalidArgument {
            name: "l2_grid".into(),
            msg: "is empty; give at least one L2 strength".into(),
        });
    }
    if let Some(bad) = l2.iter().find(|v| !(v.is_finite() && **v > 0.0)) {
        return Err(Error::InvalidArgument {
            name: "l2_grid".into(),
            msg: format!("contains {bad}; every L2 strength must be finite and > 0"),
        });
    }
    if max_iter == 0 {
        return Err(Error::InvalidArgument {
            name: "max_iter".into(),
            msg: "must be at least 1".into(),
        });
    }
    if !(tol.is_finite() && tol > 0.0) {
        return Err(Error::InvalidArgument {
            name: "tol".into(),
            msg: format!("is {tol}; must be finite and > 0"),
        });
    }
    Ok(())
}

/// Checks one split's per-layer activations against its labels (and optionally against the
/// training split's `d_model` and layer count); returns `(n, d_model)`.
pub(super) fn check_split(
    split: &str,
    xs: &[Tensor],
    y: &[bool],
    d: Option<usize>,
    layers: Option<usize>,
) -> Result<(usize, usize)> {
    check_split_n(split, xs, y.len(), d, layers)
}

/// [`check_split`] with the number of rows (one per label or target).
pub(super) fn check_split_n(
    split: &str,
    xs: &[Tensor],
    n_rows: usize,
    d: Option<usize>,
    layers: Option<usize>,
) -> Result<(usize, usize)> {
    if xs.is_empty() {
        return Err(Error::InvalidArgument {
            name: split.into(),
            msg: "no layers given (empty slice of activations)".into(),
        });
    }
    if let Some(want) = layers {
        if xs.len() != want {
            return Err(Error::Shape {
                what: format!("{split}: number of layers"),
                expected: format!("{want} layers (as in train)"),
                got: format!("{} layers", xs.len()),
            });
        }
    }
    let mut dims = (0, 0);
    for (l, x) in xs.iter().enumerate() {
        let want_d = if l == 0 { d } else { Some(dims.1) };
        dims = check_layer(split, Some(l), x, Some(n_rows), want_d)?;
    }
    Ok(dims)
}

/// Checks one layer's `[n, d]` activations: rank, rows = labels, `d_model`, finiteness.
pub(super) fn check_layer(
    split: &str,
    layer: Option<usize>,
    x: &Tensor,
    n: Option<usize>,
    d: Option<usize>,
) -> Result<(usize, usize)> {
    let at = match layer {
        Some(l) => format!("{split}, layer {l}"),
        None => split.to_string(),
    };
    let (rows, cols) = x.dims2().map_err(|_| Error::Shape {
        what: format!("{at}: activations"),
        expected: "[n, d_model]".into(),
        got: format!("{:?}", x.dims()),
    })?;
    if !x.dtype().is_float() {
        return Err(Error::DtypeOrDevice {
            what: format!("{at}: activations [{rows}, {cols}]"),
            expected: "a float dtype".into(),
            got: format!("{:?}", x.dtype()),
        });
    }
    if let Some(n) = n {
        if rows != n {
            return Err(Error::Shape {
                what: format!("{at}: activations vs labels"),
                expected: format!("[{n}, d_model] (one row per label)"),
                got: format!("[{rows}, {cols}]"),
            });
        }
    }
    if rows == 0 {
        return Err(Error::InvalidArgument {
            name: at,
            msg: format!("no items (activations of shape [{rows}, {cols}])"),
        });
    }
    if let Some(d) = d {
        if cols != d {
            return Err(Error::Shape {
                what: format!("{at}: d_model"),
                expected: format!("[{rows}, {d}]"),
                got: format!("[{rows}, {cols}]"),
            });
        }
    }
    // A finite sum proves every value finite; otherwise count exactly (the sum may overflow).
    let sdt = if x.dtype() == DType::F64 {
        DType::F64
    } else {
        DType::F32
    };
    // scalar
    let sum = x
        .to_dtype(sdt)?
        .sum_all()?
        .to_device(&Device::Cpu)?
        .to_dtype(DType::F64)?
        .to_scalar::<f64>()?;
    if !sum.is_finite() {
        let values = x
            .to_device(&Device::Cpu)?
            .to_dtype(DType::F64)?
            .flatten_all()?; // [n*d]
        let bad = values
            .to_vec1::<f64>()?
            .iter()
            .filter(|v| !v.is_finite())
            .count();
        if bad > 0 {
            return Err(Error::InvalidArgument {
                name: at,
                msg: format!(
                    "activations of shape [{rows}, {cols}] contain {bad} non-finite values (NaN or inf)"
                ),
            });
        }
    }
    Ok((rows, cols))
}

/// Training labels need both classes, the minority at least 5% of the items.
pub(super) fn check_labels(y: &[bool]) -> Result<()> {
    let n = y.len();
    let pos = y.iter().filter(|&&b| b).count();
    let neg = n - pos;
    if pos == 0 || neg == 0 {
        return Err(Error::InvalidArgument {
            name: "y_train".into(),
            msg: format!(
                "unbalanced labels: {pos} positive and {neg} negative of {n}; a probe needs both classes"
            ),
        });
    }
    let minority = pos.min(neg);
    if minority * 20 < n {
        return Err(Error::InvalidArgument {
            name: "y_train".into(),
            msg: format!(
                "unbalanced labels: {pos} positive and {neg} negative of {n}; the minority class \
                 ({minority}, {:.1}%) is under the 5% minimum",
                100.0 * minority as f64 / n as f64
            ),
        });
    }
    Ok(())
}
