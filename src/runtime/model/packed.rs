//! The CPU matmul of the dense linear layers: `y = x W^T` with `W [out, in]` rearranged once, at
//! load, into panels of 32 output columns (`[in, 32]` each, zero-padded), so that a forward never
//! repacks the weights (candle's `gemm` packs the right-hand side on every call, which is most of
//! the cost of a one-prompt or a few-column forward).
//!
//! The kernel keeps an 8-row x 32-column tile of the output in sixteen AVX-512 registers and walks
//! the inner dimension in blocks of 128 (a panel's block is 16 KiB, resident in L1 while the rows
//! of a 128-row block of `x` stream past it). Threads split the output columns, so each output
//! element is written by one thread, and its sum runs over the inner dimension in one fixed order
//! whatever the number of rows or threads: a row's result does not depend on the batch around it.
//! Without AVX-512 (or off x86-64) nothing is packed and the layer uses candle's matmul.

use std::sync::Arc;

use candle_core::{CpuStorage, Layout, Shape, Tensor};

use crate::Result;

/// Output columns per panel (two 16-lane registers).
const NR: usize = 32;
/// Rows per register tile.
const MR: usize = 8;
/// Inner-dimension block: a panel's block is `KC x NR` f32, 16 KiB.
const KC: usize = 128;
/// Rows per block of `x` swept past one panel block (`MC x KC` f32, 64 KiB, stays in L2).
const MC: usize = 128;

/// A weight `[out, in]` in panels of [`NR`] output columns: panel `p` holds
/// `W[p * NR + c][kk]` at `p * in * NR + kk * NR + c`, zero past `out`.
#[derive(Debug)]
pub(crate) struct Packed {
    out: usize,
    inner: usize,
    panels: Vec<f32>,
}

/// True when this CPU runs the packed kernel.
pub(crate) fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

impl Packed {
    /// Packs a CPU f32 weight `[out, in]`; `None` where the kernel cannot run it (another device
    /// or dtype, or a CPU without AVX-512).
    pub(crate) fn new(w: &Tensor) -> Result<Option<Arc<Packed>>> {
        if !(available() && w.device().is_cpu() && w.dtype() == candle_core::DType::F32) {
            return Ok(None);
        }
        let (out, inner) = w.dims2()?;
        let data = w.flatten_all()?.to_vec1::<f32>()?; // [out * in]
        let n_panels = out.div_ceil(NR);
        let mut panels = vec![0f32; n_panels * inner * NR];
        for (o, row) in data.chunks_exact(inner.max(1)).enumerate().take(out) {
            let (p, c) = (o / NR, o % NR);
            let panel = &mut panels[p * inner * NR..(p + 1) * inner * NR];
            for (kk, &x) in row.iter().enumerate() {
                panel[kk * NR + c] = x;
            }
        }
        Ok(Some(Arc::new(Packed { out, inner, panels })))
    }

    /// `(out, in)`.
    pub(crate) fn out_in(&self) -> (usize, usize) {
        (self.out, self.inner)
    }

    /// The weight back as a CPU f32 tensor `[out, in]`, equal to the one packed.
    pub(crate) fn unpack(&self) -> Result<Tensor> {
        let (n, k) = (self.out, self.inner);
        let mut w = vec![0f32; n * k];
        for (o, row) in w.chunks_exact_mut(k.max(1)).enumerate().take(n) {
            let (p, c) = (o / NR, o % NR);
            let panel = &self.panels[p * k * NR..(p + 1) * k * NR];
            for (kk, x) in row.iter_mut().enumerate() {
                *x = panel[kk * NR + c];
            }
        }
        Ok(Tensor::from_vec(w, (n, k), &candle_core::Device::Cpu)?)
    }

    /// `x [rows, in]` (row-major) times the weight's transpose into `y [rows, out]`.
    fn matmul(&self, x: &[f32], rows: usize, y: &mut [f32]) {
        let (n, k) = (self.out, self.inner);
        let n_panels = n.div_ceil(NR);
        // Panels per job: enough jobs for every thread, each job's panels (one inner block of
        // them) small enough to stay in L2 next to the block of `x`.
        // candle's own CPU pool (its elementwise ops run there too): one set of threads, so
        // none spins waiting for work while another pool's threads compute.
        let pool = candle_core::utils::barrier_pool();
        let threads = pool.n_workers() + 1;
        let per_job = n_panels.div_ceil(2 * threads).clamp(1, 8);
        let jobs = n_panels.div_ceil(per_job);
        let out = SendPtr(y.as_mut_ptr());
        let run = |job: usize| {
            let first = job * per_job;
            let last = (first + per_job).min(n_panels);
            for m0 in (0..rows).step_by(MC) {
                let mc = MC.min(rows - m0);
                for k0 in (0..k).step_by(KC) {
                    let kc = KC.min(k - k0);
                    for p in first..last {
                        let cols = NR.min(n - p * NR);
                        let b = &self.panels[p * k * NR + k0 * NR..p * k * NR + (k0 + kc) * NR];
                        for r0 in (m0..m0 + mc).step_by(MR) {
                            let r = MR.min(m0 + mc - r0);
                            // SAFETY: rows r0..r0 + r of `x` hold `k` values each, from column
                            // k0 on `kc` of them are read; `b` holds `kc * NR` values; the tile
                            // writes rows r0..r0 + r, columns p * NR..p * NR + cols of `y`
                            // ([rows, n]); this job alone writes these columns; the kernel
                            // exists on this CPU (`available`, checked when packing).
                            unsafe {
                                tile(Tile {
                                    rows: r,
                                    kc,
                                    a: x.as_ptr().add(r0 * k + k0),
                                    lda: k,
                                    b: b.as_ptr(),
                                    c: out.get().add(r0 * n + p * NR),
                                    ldc: n,
                                    cols,
                                    add: k0 > 0,
                                });
                            }
                        }
                    }
                }
            }
        };
        if jobs == 1 || rows * n * k < 1 << 16 {
            (0..jobs).for_each(run);
        } else {
            pool.execute_chunked(jobs, |range| range.for_each(run));
        }
    }
}

/// An output pointer shared by jobs that write disjoint elements (the packed matmul's columns,
/// the gate kernel's chunks).
#[derive(Clone, Copy)]
pub(super) struct SendPtr(pub(super) *mut f32);
// SAFETY: the jobs sharing it write disjoint elements (`Packed::matmul`, `GatedAct`).
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}
impl SendPtr {
    pub(super) fn get(self) -> *mut f32 {
        self.0
    }
}

/// One register tile's operands: `C[rows, cols] (+)= A[rows, kc] B[kc, NR]`, `a` row-major with
/// stride `lda`, `b` a panel block (`kc` rows of `NR`), `c` row-major with stride `ldc`; with `add`
/// the tile is added to `c`, else it replaces it.
#[derive(Clone, Copy)]
struct Tile {
    rows: usize,
    kc: usize,
    a: *const f32,
    lda: usize,
    b: *const f32,
    c: *mut f32,
    ldc: usize,
    cols: usize,
    add: bool,
}

/// Runs one register tile of `t.rows` rows (`1..=MR`).
///
/// # Safety
/// As [`tile_r`].
unsafe fn tile(t: Tile) {
    #[cfg(target_arch = "x86_64")]
    match t.rows {
        8 => tile_r::<8>(t),
        7 => tile_r::<7>(t),
        6 => tile_r::<6>(t),
        5 => tile_r::<5>(t),
        4 => tile_r::<4>(t),
        3 => tile_r::<3>(t),
        2 => tile_r::<2>(t),
        _ => tile_r::<1>(t),
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = t;
}

/// One tile of `R` rows (`t.rows == R`). Each output's sum runs over `kc` in order, from zero.
///
/// # Safety
/// AVX-512F must be present; `t.a` must hold `R` rows of `t.kc` values at stride `t.lda`, `t.b`
/// `t.kc * NR` values, `t.c` `R` rows of `t.cols` (<= NR) values at stride `t.ldc`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn tile_r<const R: usize>(t: Tile) {
    let Tile {
        kc,
        a,
        lda,
        b,
        c,
        ldc,
        cols,
        add,
        ..
    } = t;
    use std::arch::x86_64::*;
    let mut acc = [[_mm512_setzero_ps(); 2]; R];
    for kk in 0..kc {
        let b0 = _mm512_loadu_ps(b.add(kk * NR));
        let b1 = _mm512_loadu_ps(b.add(kk * NR + 16));
        for (i, row) in acc.iter_mut().enumerate() {
            let x = _mm512_set1_ps(*a.add(i * lda + kk));
            row[0] = _mm512_fmadd_ps(x, b0, row[0]);
            row[1] = _mm512_fmadd_ps(x, b1, row[1]);
        }
    }
    let lanes = |n: usize| -> __mmask16 {
        if n >= 16 {
            0xffff
        } else {
            ((1u32 << n) - 1) as __mmask16
        }
    };
    let (m0, m1) = (lanes(cols), lanes(cols.saturating_sub(16)));
    for (i, row) in acc.iter().enumerate() {
        let p0 = c.add(i * ldc);
        let p1 = p0.wrapping_add(16);
        let (mut y0, mut y1) = (row[0], row[1]);
        if add {
            y0 = _mm512_add_ps(_mm512_maskz_loadu_ps(m0, p0), y0);
            y1 = _mm512_add_ps(_mm512_maskz_loadu_ps(m1, p1), y1);
        }
        _mm512_mask_storeu_ps(p0, m0, y0);
        _mm512_mask_storeu_ps(p1, m1, y1);
    }
}

/// `x [rows, in] -> x W^T [rows, out]` through the packed weight; no backward (inference only:
/// the training path's layers hold frozen weights and never reach here).
struct PackedMatmul(Arc<Packed>);

impl candle_core::CustomOp1 for PackedMatmul {
    fn name(&self) -> &'static str {
        "packed-matmul"
    }

    fn cpu_fwd(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let CpuStorage::F32(data) = storage else {
            candle_core::bail!("packed-matmul: f32 only")
        };
        let Some((start, end)) = layout.contiguous_offsets() else {
            candle_core::bail!("packed-matmul: non-contiguous input")
        };
        let (rows, k) = layout.shape().dims2()?;
        if k != self.0.inner {
            candle_core::bail!(
                "packed-matmul: input of {k} features for a weight of {}",
                self.0.inner
            )
        }
        let mut y = vec![0f32; rows * self.0.out];
        self.0.matmul(&data[start..end], rows, &mut y);
        Ok((CpuStorage::F32(y), (rows, self.0.out).into()))
    }
}

/// `x [.., in] @ W^T -> [.., out]` through the packed weight (`x` CPU f32).
pub(crate) fn packed_matmul_t(x: &Tensor, w: &Arc<Packed>) -> Result<Tensor> {
    let dims = x.dims().to_vec();
    let k = dims[dims.len() - 1];
    let rows = x.elem_count() / k.max(1);
    let y = x
        .reshape((rows, k))?
        .contiguous()?
        .apply_op1_no_bwd(&PackedMatmul(w.clone()))?; // [rows, out]
    let mut out = dims;
    let last = out.len() - 1;
    out[last] = w.out;
    Ok(y.reshape(out)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn max_abs(t: &Tensor) -> f32 {
        t.abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    }

    /// The packed kernel against candle's matmul, on shapes with partial tiles, panels and
    /// inner blocks, one row and many.
    #[test]
    fn packed_matmul_matches_candle() {
        if !available() {
            eprintln!("no AVX-512: the packed kernel is not used on this CPU");
            return;
        }
        let dev = Device::Cpu;
        for &(rows, k, n) in &[
            (1, 7, 5),
            (3, 128, 32),
            (8, 129, 33),
            (13, 300, 70),
            (130, 576, 192),
            (257, 640, 96),
        ] {
            let x = Tensor::randn(0f32, 1.0, (rows, k), &dev).unwrap();
            let w = Tensor::randn(0f32, 1.0, (n, k), &dev).unwrap();
            let p = Packed::new(&w).unwrap().unwrap();
            assert_eq!(p.out_in(), (n, k));
            let back = p.unpack().unwrap();
            assert_eq!(
                back.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
                w.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
                "unpacking gives the weight back"
            );
            let got = packed_matmul_t(&x, &p).unwrap();
            let want = x.matmul(&w.t().unwrap()).unwrap();
            assert_eq!(got.dims(), want.dims());
            let (diff, scale) = (max_abs(&(got - &want).unwrap()), max_abs(&want));
            println!("{rows}x{k}x{n}: max abs diff {diff:e}, largest output {scale}");
            // f32 sums of k products in another order. Measured 2026-12-07: at most 5.6e-7 of
            // the largest output (5.5e-5 on outputs up to 98, 257 x 640 x 96).
            assert!(
                diff <= 2e-6 * scale.max(1.0),
                "{rows}x{k}x{n}: {diff} (largest {scale})"
            );
        }
    }

    /// A row's result does not depend on the rows around it (one fixed order per output).
    #[test]
    fn packed_rows_do_not_depend_on_the_batch() {
        if !available() {
            return;
        }
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 1.0, (37, 200), &dev).unwrap();
        let w = Tensor::randn(0f32, 1.0, (70, 200), &dev).unwrap();
        let p = Packed::new(&w).unwrap().unwrap();
        let all = packed_matmul_t(&x, &p).unwrap();
        for r in [0, 9, 36] {
            let one = packed_matmul_t(&x.narrow(0, r, 1).unwrap(), &p).unwrap();
            let d = max_abs(&(one - all.narrow(0, r, 1).unwrap()).unwrap());
            assert_eq!(d, 0.0, "row {r}");
        }
    }
}
