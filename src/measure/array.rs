//! The `ndarray` boundary: activations, steering vectors and stores as `ndarray` arrays, and back.
//!
//! puppetlens computes on candle [`Tensor`]s; the Rust numeric ecosystem (linfa, ndarray-stats,
//! plotting and statistics crates) speaks `ndarray`. This module converts between the two:
//!
//! | from | to | copy? |
//! |---|---|---|
//! | a CPU f32 tensor, any layout (contiguous, transposed, narrowed) | an [`ArrayView`] inside [`with_view2`] / [`with_view3`] / [`with_view1`] | **none**: the view borrows candle's buffer with the tensor's strides |
//! | any tensor | an owned [`Array1`] / [`Array2`] / [`Array3`] ([`to_array1`], [`to_array2`], [`to_array3`]) | one copy (see below) |
//! | an owned standard-layout array | a CPU tensor ([`from_array1`], [`from_array2`], [`from_array3`]) | **none**: the array's `Vec` becomes the tensor's storage |
//! | any other array (a view, a transposed or sliced array) | a CPU tensor | one copy into standard layout |
//!
//! Why an owned array from a tensor costs a copy: candle keeps a tensor's buffer behind an
//! `Arc<RwLock<Storage>>` shared by every tensor derived from it (views, clones), so no API can
//! move that `Vec` out; only a borrow under the read lock is possible, which is what the
//! `with_view*` functions give. A tensor that is not f32 on the CPU (another dtype, a CUDA or
//! Metal device) is first converted to f32 on the CPU by candle, then viewed.
//!
//! Per-layer activations become one `[layer, item, d_model]` block with [`layers_to_array3`]; an
//! activation store on disk is read straight into arrays with [`load_store_arrays`]; a
//! [`SteeringVector`]'s layers are [`Array1`]s through [`steering_to_arrays`] and
//! [`steering_from_arrays`]. Wrong shapes are [`Error::Shape`] naming what was expected.
//!
//! ```
//! use candle_core::{Device, Tensor};
//! use puppetlens::array;
//! # fn main() -> puppetlens::Result<()> {
//! let t = Tensor::arange(0f32, 6.0, &Device::Cpu)?.reshape((2, 3))?; // [2, 3]
//! // Borrow without copying, even through a transpose (strides [1, 3]).
//! let sum = array::with_view2(&t.t()?, |v| v.sum())?;
//! assert_eq!(sum, 15.0);
//! let a = array::to_array2(&t)?; // owned [2, 3]
//! assert_eq!(a[[1, 2]], 5.0);
//! let back = array::from_array2(a.clone())?; // no copy: the Vec moves into the tensor
//! assert_eq!(back.to_vec2::<f32>()?, vec![vec![0.0, 1.0, 2.0], vec![3.0, 4.0, 5.0]]);
//! // A wrong-shaped array is a typed error, not a panic.
//! let cube = ndarray::Array3::<f32>::zeros((2, 3, 4)).into_dyn();
//! assert!(matches!(array::dyn_to_array2(cube, "acts"), Err(puppetlens::Error::Shape { .. })));
//! # Ok(())
//! # }
//! ```

use std::collections::BTreeMap;
use std::path::Path;

use candle_core::{CpuStorage, DType, Device, Storage, Tensor};
use ndarray::{
    Array1, Array2, Array3, ArrayD, ArrayView, ArrayView1, ArrayView2, ArrayView3, Dimension, Ix1,
    Ix2, Ix3, ShapeBuilder,
};

use crate::extract::{self, Activations, Manifest};
use crate::steer::SteeringVector;
use crate::{Error, HookPoint, Result};

/// Calls `f` with a zero-copy view of `t` as an array of dimension `D` (the tensor's rank must
/// match). CPU f32 tensors of any layout are borrowed in place; anything else is converted to a
/// CPU f32 tensor first (one copy).
fn with_view<D: Dimension, R>(
    t: &Tensor,
    what: &str,
    f: impl FnOnce(ArrayView<'_, f32, D>) -> R,
) -> Result<R> {
    let rank = D::NDIM.unwrap_or(t.rank());
    if t.rank() != rank {
        return Err(Error::Shape {
            what: what.into(),
            expected: format!("a tensor of rank {rank}"),
            got: format!("{:?}", t.dims()),
        });
    }
    let converted;
    let t = if t.device().is_cpu() && t.dtype() == DType::F32 {
        t
    } else {
        converted = t.to_device(&Device::Cpu)?.to_dtype(DType::F32)?;
        &converted
    };
    let (storage, layout) = t.storage_and_layout();
    let Storage::Cpu(CpuStorage::F32(buf)) = &*storage else {
        return Err(Error::DtypeOrDevice {
            what: what.into(),
            expected: "f32 on the CPU".into(),
            got: format!("{:?} on {:?}", t.dtype(), t.device().location()),
        });
    };
    let dims = layout.dims().to_vec();
    let stride = layout.stride().to_vec();
    let bad = |msg: String| Error::Shape {
        what: what.into(),
        expected: "a strided layout inside the tensor's buffer".into(),
        got: msg,
    };
    let mut shape = D::zeros(rank);
    let mut strides = D::zeros(rank);
    for (i, (&d, &s)) in dims.iter().zip(&stride).enumerate() {
        shape[i] = d;
        strides[i] = s;
    }
    let data = buf.get(layout.start_offset()..).ok_or_else(|| {
        bad(format!(
            "offset {} past {} values",
            layout.start_offset(),
            buf.len()
        ))
    })?;
    let view = ArrayView::from_shape(shape.strides(strides), data)
        .map_err(|e| bad(format!("{dims:?} with strides {stride:?}: {e}")))?;
    Ok(f(view))
}

/// Calls `f` with a zero-copy `[n]` view of a rank-1 tensor (see the [module docs](self)).
pub fn with_view1<R>(t: &Tensor, f: impl FnOnce(ArrayView1<'_, f32>) -> R) -> Result<R> {
    with_view::<Ix1, R>(t, "tensor [n]", f)
}

/// Calls `f` with a zero-copy `[rows, cols]` view of a rank-2 tensor, e.g. one layer's
/// activations `[item, d_model]` (see the [module docs](self)).
pub fn with_view2<R>(t: &Tensor, f: impl FnOnce(ArrayView2<'_, f32>) -> R) -> Result<R> {
    with_view::<Ix2, R>(t, "tensor [rows, cols]", f)
}

/// Calls `f` with a zero-copy view of a rank-3 tensor, e.g. `[layer, item, d_model]`.
pub fn with_view3<R>(t: &Tensor, f: impl FnOnce(ArrayView3<'_, f32>) -> R) -> Result<R> {
    with_view::<Ix3, R>(t, "tensor [a, b, c]", f)
}

/// A rank-1 tensor (any dtype or device) as an owned `Array1<f32>` (one copy).
pub fn to_array1(t: &Tensor) -> Result<Array1<f32>> {
    with_view1(t, |v| v.to_owned())
}

/// A rank-2 tensor (any dtype or device, any layout) as an owned standard-layout `Array2<f32>`
/// (one copy; a transposed tensor comes out transposed, not reinterpreted).
pub fn to_array2(t: &Tensor) -> Result<Array2<f32>> {
    with_view2(t, |v| v.as_standard_layout().into_owned())
}

/// A rank-3 tensor as an owned standard-layout `Array3<f32>` (one copy).
pub fn to_array3(t: &Tensor) -> Result<Array3<f32>> {
    with_view3(t, |v| v.as_standard_layout().into_owned())
}

/// An array as a CPU f32 tensor of the same shape: no copy when `a` is owned, in standard
/// layout and starts at its buffer's beginning, one copy otherwise.
fn from_array<D: Dimension>(a: ndarray::Array<f32, D>) -> Result<Tensor> {
    let dims = a.shape().to_vec();
    let a = if a.is_standard_layout() {
        a
    } else {
        a.as_standard_layout().into_owned()
    };
    let (mut v, offset) = a.into_raw_vec_and_offset();
    let start = offset.unwrap_or(0);
    if start != 0 {
        v.drain(..start);
    }
    let n: usize = dims.iter().product();
    v.truncate(n);
    Ok(Tensor::from_vec(v, dims, &Device::Cpu)?)
}

/// `[n]` array to a CPU f32 tensor (no copy for an owned standard-layout array).
pub fn from_array1(a: Array1<f32>) -> Result<Tensor> {
    from_array(a)
}

/// `[rows, cols]` array to a CPU f32 tensor (no copy for an owned standard-layout array; a
/// transposed array is copied into the transposed values, not reinterpreted).
pub fn from_array2(a: Array2<f32>) -> Result<Tensor> {
    from_array(a)
}

/// `[a, b, c]` array to a CPU f32 tensor (no copy for an owned standard-layout array).
pub fn from_array3(a: Array3<f32>) -> Result<Tensor> {
    from_array(a)
}

/// A dynamic-rank array (as read from `.npy` files or computed generically) as `[rows, cols]`;
/// any other rank is [`Error::Shape`] naming `what`.
pub fn dyn_to_array2(a: ArrayD<f32>, what: &str) -> Result<Array2<f32>> {
    let got = format!("{:?}", a.shape());
    a.into_dimensionality::<Ix2>().map_err(|_| Error::Shape {
        what: what.into(),
        expected: "[rows, cols] (rank 2)".into(),
        got,
    })
}

/// Checks that `a` is `[n, d]` with the given `n` and/or `d`; [`Error::Shape`] naming `what`
/// otherwise.
pub fn check_shape2(
    a: &ArrayView2<'_, f32>,
    n: Option<usize>,
    d: Option<usize>,
    what: &str,
) -> Result<()> {
    let (rows, cols) = a.dim();
    if n.is_some_and(|n| n != rows) || d.is_some_and(|d| d != cols) {
        let fmt = |v: Option<usize>, name: &str| v.map_or(name.to_string(), |v| v.to_string());
        return Err(Error::Shape {
            what: what.into(),
            expected: format!("[{}, {}]", fmt(n, "n"), fmt(d, "d_model")),
            got: format!("[{rows}, {cols}]"),
        });
    }
    Ok(())
}

/// Per-layer activations (`layers[l]` is `[item, d_model]`) as one `[layer, item, d_model]`
/// block (one copy). Layers of different shapes are [`Error::Shape`] naming the layer.
pub fn layers_to_array3(layers: &[Tensor]) -> Result<Array3<f32>> {
    let first = layers.first().ok_or_else(|| Error::InvalidArgument {
        name: "layers".into(),
        msg: "no layers given".into(),
    })?;
    let (n, d) = first.dims2().map_err(|_| Error::Shape {
        what: "layer 0 activations".into(),
        expected: "[item, d_model]".into(),
        got: format!("{:?}", first.dims()),
    })?;
    let mut out = Array3::<f32>::zeros((layers.len(), n, d));
    for (l, t) in layers.iter().enumerate() {
        if t.dims() != [n, d] {
            return Err(Error::Shape {
                what: format!("layer {l} activations"),
                expected: format!("[{n}, {d}] (as layer 0)"),
                got: format!("{:?}", t.dims()),
            });
        }
        with_view2(t, |v| out.index_axis_mut(ndarray::Axis(0), l).assign(&v))?;
    }
    Ok(out)
}

/// Per-layer activations as `[item, d_model]` arrays, in layer order (one copy each).
pub fn layers_to_arrays(layers: &[Tensor]) -> Result<Vec<Array2<f32>>> {
    layers.iter().map(to_array2).collect()
}

/// A `[layer, item, d_model]` block back to one CPU tensor per layer, `[item, d_model]` each.
pub fn array3_to_layers(a: &Array3<f32>) -> Result<Vec<Tensor>> {
    a.outer_iter().map(|v| from_array2(v.to_owned())).collect()
}

impl Activations {
    /// The activations at `p` as `[item, d_model]` (one copy; see [`crate::array`]).
    pub fn to_array2(&self, p: HookPoint) -> Result<Array2<f32>> {
        to_array2(self.require(p)?)
    }

    /// The `hook_resid_post` activations of layers `0..n_layers` as one
    /// `[layer, item, d_model]` block.
    pub fn to_array3(&self, n_layers: usize) -> Result<Array3<f32>> {
        layers_to_array3(&self.layers(n_layers)?)
    }
}

/// Reads an activation store written by [`extract::extract_to_dir`] straight into arrays: per
/// hook point, `[item, d_model]` over all shards (shards are concatenated as
/// [`extract::load_store`] does; points stored with another rank are [`Error::Shape`]).
pub fn load_store_arrays(
    dir: impl AsRef<Path>,
) -> Result<(Manifest, BTreeMap<HookPoint, Array2<f32>>)> {
    let (manifest, acts) = extract::load_store(dir.as_ref())?;
    let mut out = BTreeMap::new();
    for p in acts.points() {
        let t = acts.require(p)?;
        if t.rank() != 2 {
            return Err(Error::Shape {
                what: format!("{}: store point {p}", dir.as_ref().display()),
                expected: "[item, d_model]".into(),
                got: format!("{:?}", t.dims()),
            });
        }
        out.insert(p, to_array2(t)?);
    }
    Ok((manifest, out))
}

/// A steering vector's layers as `[d_model]` arrays (one copy each), by layer.
pub fn steering_to_arrays(v: &SteeringVector) -> Result<BTreeMap<usize, Array1<f32>>> {
    v.layers()
        .into_iter()
        .map(|l| {
            let t = v.get(l).ok_or(Error::LayerOutOfRange {
                layer: l,
                n_layers: v.layers().len(),
            })?;
            Ok((l, to_array1(t)?))
        })
        .collect()
}

/// A steering vector from `[d_model]` arrays by layer (no copy of the arrays' buffers); the
/// checks of [`SteeringVector::new`] apply (at least one layer, one `d_model`).
pub fn steering_from_arrays(
    directions: BTreeMap<usize, Array1<f32>>,
    method: impl Into<String>,
) -> Result<SteeringVector> {
    let d = directions
        .into_iter()
        .map(|(l, a)| Ok((l, from_array1(a)?)))
        .collect::<Result<BTreeMap<_, _>>>()?;
    SteeringVector::new(d, method)
}
