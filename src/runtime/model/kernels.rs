//! CPU kernels of the forward pass that candle lacks or runs on one thread, and the plain-op
//! (differentiable) versions of candle's fused kernels for the training path.

use candle_core::{DType, Device, Tensor};

use super::Activation;
use crate::Result;

/// `e^x` in f32 from arithmetic alone (so that loops over it vectorise): `x = n ln 2 + r` with
/// `|r| <= ln 2 / 2`, Cephes's degree-6 polynomial for `e^r`, and `2^n` put into the exponent
/// bits. Within 2 ulps of libm's `expf` (unit test); saturates at `e^+-88` instead of returning
/// infinity or zero.
#[inline(always)]
pub(crate) fn exp_f32(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    const ROUND: f32 = 12_582_912.0; // 1.5 * 2^23: adding and subtracting it rounds to an integer
    let x = x.clamp(-87.0, 88.0);
    let n = (x * LOG2E + ROUND) - ROUND;
    let r = x - n * LN2_HI - n * LN2_LO;
    let p = 1.987_569_1e-4;
    let p = p * r + 1.398_199_9e-3;
    let p = p * r + 8.333_452e-3;
    let p = p * r + 4.166_579_6e-2;
    let p = p * r + 1.666_666_5e-1;
    let p = p * r + 5.000_000_1e-1;
    let e = p * r * r + r + 1.0;
    e * f32::from_bits(((n as i32 + 127) as u32) << 23)
}

/// `x [rows, k] -> x w^T [rows, out]` as one op whose backward gives only `grad w` (the gradient
/// of `x`); `w` is a constant. CPU, f32; other devices fall back to a plain matmul.
struct FrozenMatmulT {
    w: Tensor, // [out, k]
}

impl candle_core::CustomOp1 for FrozenMatmulT {
    fn name(&self) -> &'static str {
        "frozen-matmul-t"
    }

    fn cpu_fwd(
        &self,
        storage: &candle_core::CpuStorage,
        layout: &candle_core::Layout,
    ) -> candle_core::Result<(candle_core::CpuStorage, candle_core::Shape)> {
        let candle_core::CpuStorage::F32(data) = storage else {
            candle_core::bail!("frozen-matmul-t: f32 only")
        };
        let Some((start, end)) = layout.contiguous_offsets() else {
            candle_core::bail!("frozen-matmul-t: non-contiguous input")
        };
        let (rows, k) = layout.shape().dims2()?;
        let x = Tensor::from_slice(&data[start..end], (rows, k), &Device::Cpu)?; // [rows, k]
        let y = x.matmul(&self.w.t()?)?; // [rows, out]
        let out = y.dim(1)?;
        let v = y.flatten_all()?.to_vec1::<f32>()?;
        Ok((candle_core::CpuStorage::F32(v), (rows, out).into()))
    }

    fn bwd(
        &self,
        _arg: &Tensor,
        _res: &Tensor,
        grad_res: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        Ok(Some(grad_res.matmul(&self.w)?)) // [rows, k]
    }
}

/// `x [.., k] @ w^T` for a constant `w [out, k]` without computing `w`'s gradient in backward.
pub(crate) fn frozen_matmul_t(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    if !(x.device().is_cpu() && x.dtype() == DType::F32 && w.dtype() == DType::F32) {
        return matmul_t(x, w);
    }
    let dims = x.dims().to_vec();
    let k = dims[dims.len() - 1];
    let rows = x.elem_count() / k;
    let y = x
        .reshape((rows, k))?
        .contiguous()?
        .apply_op1(FrozenMatmulT { w: w.clone() })?; // [rows, out]
    let mut out = dims;
    let last = out.len() - 1;
    out[last] = w.dim(0)?;
    Ok(y.reshape(out)?)
}

/// `x [.., k] @ w^T` for a dense `w [out, k]`, through a 2-D matmul.
pub(crate) fn matmul_t(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    let dims = x.dims().to_vec();
    let k = dims[dims.len() - 1];
    let rows = x.elem_count() / k;
    let y = x.reshape((rows, k))?.matmul(&w.t()?)?; // [rows, out]
    let mut out = dims;
    let last = out.len() - 1;
    out[last] = w.dim(0)?;
    Ok(y.reshape(out)?)
}

/// `act(gate) * up` in one pass, split over the CPU threads (candle's unary and binary CPU ops run
/// on one thread). SiLU is `g / (1 + e^-g)`; the tanh GELU is written as the equal
/// `g / (1 + e^(-2z))`, `z = sqrt(2/pi) (g + 0.044715 g^3)` (`(1 + tanh z) / 2` is the logistic of
/// `2z`), with [`exp_f32`]: no libm call, so the loop vectorises (libm's `tanhf` was 13% of a
/// Gemma forward). Never more than 16 f32 ulps less accurate than candle's `silu` and `gelu`
/// against f64 (unit test; far more accurate than candle's tanh form where GELU is near zero).
/// CPU, f32, contiguous inputs of one shape.
pub(crate) struct GatedAct(pub(crate) Activation);

impl candle_core::CustomOp2 for GatedAct {
    fn name(&self) -> &'static str {
        "gated-act"
    }

    fn cpu_fwd(
        &self,
        g: &candle_core::CpuStorage,
        lg: &candle_core::Layout,
        u: &candle_core::CpuStorage,
        lu: &candle_core::Layout,
    ) -> candle_core::Result<(candle_core::CpuStorage, candle_core::Shape)> {
        use rayon::prelude::*;
        let (candle_core::CpuStorage::F32(g), candle_core::CpuStorage::F32(u)) = (g, u) else {
            candle_core::bail!("gated-act: f32 only")
        };
        let (Some((g0, g1)), Some((u0, u1))) = (lg.contiguous_offsets(), lu.contiguous_offsets())
        else {
            candle_core::bail!("gated-act: non-contiguous input")
        };
        if lg.shape() != lu.shape() {
            candle_core::bail!("gated-act: shapes {:?} and {:?}", lg.shape(), lu.shape())
        }
        let (g, u) = (&g[g0..g1], &u[u0..u1]);
        let mut out = vec![0f32; g.len()];
        let act = self.0;
        const CHUNK: usize = 4096;
        out.par_chunks_mut(CHUNK)
            .zip(g.par_chunks(CHUNK).zip(u.par_chunks(CHUNK)))
            .for_each(|(o, (g, u))| match act {
                Activation::Silu => {
                    for ((o, &g), &u) in o.iter_mut().zip(g).zip(u) {
                        *o = g / (1.0 + exp_f32(-g)) * u;
                    }
                }
                _ => {
                    const TWO_SQRT_TWO_OVER_PI: f32 = 2.0 * 0.797_884_560_802_865_4;
                    for ((o, &g), &u) in o.iter_mut().zip(g).zip(u) {
                        let z2 = TWO_SQRT_TWO_OVER_PI * g * (1.0 + 0.044715 * g * g);
                        *o = g / (1.0 + exp_f32(-z2)) * u;
                    }
                }
            });
        Ok((candle_core::CpuStorage::F32(out), lg.shape().clone()))
    }
}

/// Rotary embedding on split halves from plain ops (differentiable): `x [b, h, s, hd]`,
/// `cos`/`sin` `[b, s, hd/2]`.
pub(crate) fn rope_differentiable(
    x: &Tensor,
    cos: &Tensor,
    sin: &Tensor,
) -> candle_core::Result<Tensor> {
    let hd = x.dim(3)?;
    let cos = Tensor::cat(&[cos, cos], 2)?.unsqueeze(1)?; // [b, 1, s, hd]
    let sin = Tensor::cat(&[sin, sin], 2)?.unsqueeze(1)?; // [b, 1, s, hd]
    let x1 = x.narrow(3, 0, hd / 2)?; // [b, h, s, hd/2]
    let x2 = x.narrow(3, hd / 2, hd / 2)?; // [b, h, s, hd/2]
    let rotated = Tensor::cat(&[&x2.neg()?, &x1], 3)?; // [b, h, s, hd]
    x.broadcast_mul(&cos)? + rotated.broadcast_mul(&sin)?
}

/// Rotary embedding on adjacent pairs from plain ops (differentiable): `x [b, h, s, hd]`,
/// `cos`/`sin` `[b, s, hd/2]`.
pub(crate) fn rope_i_differentiable(
    x: &Tensor,
    cos: &Tensor,
    sin: &Tensor,
) -> candle_core::Result<Tensor> {
    let (b, h, s, hd) = x.dims4()?;
    let cos = cos.unsqueeze(1)?.unsqueeze(4)?; // [b, 1, s, hd/2, 1]
    let sin = sin.unsqueeze(1)?.unsqueeze(4)?; // [b, 1, s, hd/2, 1]
    let x = x.reshape((b, h, s, hd / 2, 2))?; // [b, h, s, hd/2, 2]
    let x0 = x.narrow(4, 0, 1)?; // [b, h, s, hd/2, 1]
    let x1 = x.narrow(4, 1, 1)?; // [b, h, s, hd/2, 1]
    let y0 = (x0.broadcast_mul(&cos)? - x1.broadcast_mul(&sin)?)?;
    let y1 = (x0.broadcast_mul(&sin)? + x1.broadcast_mul(&cos)?)?;
    Tensor::cat(&[y0, y1], 4)?.reshape((b, h, s, hd)) // [b, h, s, hd]
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// The exponential is within 2 ulps of libm's over the range that does not overflow, and
    /// saturates instead of overflowing beyond it.
    #[test]
    fn exp_f32_is_within_two_ulps_of_libm() {
        let mut worst = 0f32;
        let mut x = -87.0f32;
        while x < 88.0 {
            let (a, b) = (exp_f32(x), x.exp());
            worst = worst.max((a - b).abs() / (b * f32::EPSILON));
            x += 0.000_97;
        }
        assert!(worst <= 2.0, "worst {worst} ulps");
        assert!(exp_f32(200.0).is_finite() && exp_f32(-200.0) >= 0.0);
        assert!(exp_f32(-200.0) < 1e-37);
    }

    /// The fused gate kernel is as accurate as candle's separate ops, against the same formulas
    /// in f64 (the logistic form, exact there), to within 16 f32 ulps (candle's tanh form loses digits where GELU is near zero,
    /// `1 + tanh z` with `tanh z ~ -1`; the logistic form does not), on values spanning the
    /// activations' curved range and beyond, for a length that is not a multiple of its chunk;
    /// mismatched inputs are refused.
    #[test]
    fn gated_act_is_as_accurate_as_the_unfused_ops() {
        let n = 3 * 4096 + 17;
        let g = Tensor::randn(0f32, 3.0, (n,), &Device::Cpu).unwrap();
        let u = Tensor::randn(0f32, 1.0, (n,), &Device::Cpu).unwrap();
        let (gv, uv) = (g.to_vec1::<f32>().unwrap(), u.to_vec1::<f32>().unwrap());
        for act in [Activation::Silu, Activation::GeluTanh] {
            let fused = g.apply_op2_no_bwd(&u, &GatedAct(act)).unwrap();
            let plain = match act {
                Activation::Silu => candle_nn::ops::silu(&g).unwrap(),
                _ => g.gelu().unwrap(),
            };
            let plain = (plain * &u).unwrap();
            let (f, p) = (
                fused.to_vec1::<f32>().unwrap(),
                plain.to_vec1::<f32>().unwrap(),
            );
            let (mut worst_f, mut worst_p) = (0f64, 0f64);
            for i in 0..n {
                let (x, y) = (gv[i] as f64, uv[i] as f64);
                let exact = match act {
                    Activation::Silu => x / (1.0 + (-x).exp()) * y,
                    _ => {
                        // (1 + tanh z) / 2 = 1 / (1 + e^(-2z)), exact in f64 also where tanh z ~ -1.
                        let z = (2.0 / std::f64::consts::PI).sqrt() * (x + 0.044715 * x * x * x);
                        x / (1.0 + (-2.0 * z).exp()) * y
                    }
                };
                // Below 1e-30 (where the kernel saturates e^x at e^88) only absolute error counts.
                let ulp = exact.abs().max(1e-30) * f32::EPSILON as f64;
                let (ef, ep) = ((f[i] as f64 - exact).abs(), (p[i] as f64 - exact).abs());
                assert!(
                    ef <= ep + 16.0 * ulp,
                    "{act:?} at g = {x}: fused {} candle {} exact {exact}",
                    f[i],
                    p[i]
                );
                worst_f = worst_f.max(ef / ulp);
                worst_p = worst_p.max(ep / ulp);
            }
            println!("{act:?}: worst error in f32 ulps, fused {worst_f:.1}, candle {worst_p:.1}");
        }
        let short = Tensor::zeros((n - 1,), DType::F32, &Device::Cpu).unwrap();
        assert!(g
            .apply_op2_no_bwd(&short, &GatedAct(Activation::Silu))
            .is_err());
    }
}
