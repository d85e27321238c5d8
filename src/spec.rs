//! Text forms of what a command line names: a device, a list of layers, a list of multipliers, a
//! list of subspace ranks.
//! The CLI and the examples parse their flags with these, so a crate user's own tool reads the
//! same forms and gets the same errors.
//!
//! ```
//! use puppetlens::spec::{parse_layers, parse_multipliers};
//! assert_eq!(parse_layers("1,4-6,5", 18)?, vec![1, 4, 5, 6]);
//! assert!(parse_layers("17-19", 18).is_err()); // layer 18 is out of range
//! assert_eq!(parse_multipliers("-2,0,1.5")?, vec![-2.0, 0.0, 1.5]);
//! # Ok::<(), puppetlens::Error>(())
//! ```

use candle_core::Device;

use crate::{Error, Result};

fn invalid(name: &str, msg: String) -> Error {
    Error::InvalidArgument {
        name: name.into(),
        msg,
    }
}

/// The device named by `spec`: `cpu`, `cuda`, `cuda:N`, `metal` or `metal:N` (a GPU needs a build
/// with `--features cuda` or `metal`; the error says so).
///
/// ```
/// assert!(puppetlens::parse_device("cpu")?.is_cpu());
/// assert!(puppetlens::parse_device("tpu").is_err());
/// # Ok::<(), puppetlens::Error>(())
/// ```
pub fn parse_device(spec: &str) -> Result<Device> {
    let bad = |msg: String| invalid("device", msg);
    let (kind, ordinal) = match spec.trim().split_once(':') {
        Some((k, n)) => {
            let n = n.trim().parse::<usize>().map_err(|_| {
                bad(format!(
                    "`{spec}`: `{n}` is not a device number (expected e.g. cuda:0)"
                ))
            })?;
            (k.trim(), Some(n))
        }
        None => (spec.trim(), None),
    };
    let made = match (kind, ordinal) {
        ("cpu", None) => return Ok(Device::Cpu),
        ("cuda", n) => Device::new_cuda(n.unwrap_or(0)),
        ("metal", n) => Device::new_metal(n.unwrap_or(0)),
        _ => {
            return Err(bad(format!(
                "`{spec}` is not a device (expected cpu, cuda, cuda:N, metal or metal:N)"
            )))
        }
    };
    made.map_err(|e| {
        let hint = match &e {
            candle_core::Error::NotCompiledWithCudaSupport => " (build with `--features cuda`)",
            candle_core::Error::NotCompiledWithMetalSupport => " (build with `--features metal`)",
            _ => "",
        };
        bad(format!("{spec}: {}{hint}", Error::from(e)))
    })
}

/// Layers named by `spec` in a model of `n_layers` blocks: comma-separated numbers and inclusive
/// ranges (`3`, `3,6,9`, `4-12`), sorted, each once. Errors (argument `layers`) name the item
/// that is not a number, a range that runs backwards, a layer past the last, or an empty list.
pub fn parse_layers(spec: &str, n_layers: usize) -> Result<Vec<usize>> {
    let bad = |msg: String| invalid("layers", msg);
    let mut out = Vec::new();
    for item in spec.split(',').map(str::trim) {
        let num = |s: &str| {
            s.trim().parse::<usize>().map_err(|_| {
                bad(format!(
                    "`{}` in `{spec}` is not a layer number (expected e.g. 3, 3,6,9 or 4-12)",
                    s.trim()
                ))
            })
        };
        let (lo, hi) = match item.split_once('-') {
            Some((a, b)) => (num(a)?, num(b)?),
            None => {
                let l = num(item)?;
                (l, l)
            }
        };
        if lo > hi {
            return Err(bad(format!("the range `{item}` runs backwards")));
        }
        if hi >= n_layers {
            let layer = if lo >= n_layers { lo } else { hi };
            return Err(bad(format!(
                "layer {layer} is out of range: the model has {n_layers} layers (0-{})",
                n_layers.saturating_sub(1)
            )));
        }
        out.extend(lo..=hi);
    }
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

/// Comma-separated finite numbers (`-2,-1,0,1,2`). Errors (argument `multipliers`) name the item.
pub fn parse_multipliers(spec: &str) -> Result<Vec<f64>> {
    spec.split(',')
        .map(|s| {
            s.trim()
                .parse::<f64>()
                .ok()
                .filter(|x| x.is_finite())
                .ok_or_else(|| {
                    invalid(
                        "multipliers",
                        format!(
                            "`{}` in `{spec}` is not a number (expected e.g. -2,-1,0,1,2)",
                            s.trim()
                        ),
                    )
                })
        })
        .collect()
}

/// Comma-separated subspace dimensions (`1,2,4,8`). Errors (argument `ranks`) name the item.
///
/// ```
/// assert_eq!(puppetlens::spec::parse_ranks("1, 2,8")?, vec![1, 2, 8]);
/// assert!(puppetlens::spec::parse_ranks("1,x").is_err());
/// # Ok::<(), puppetlens::Error>(())
/// ```
pub fn parse_ranks(spec: &str) -> Result<Vec<usize>> {
    spec.split(',')
        .map(|k| {
            k.trim().parse::<usize>().map_err(|_| {
                invalid(
                    "ranks",
                    format!("`{k}` is not a subspace dimension (1, 2, ...)"),
                )
            })
        })
        .collect()
}
