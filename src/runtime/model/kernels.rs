//! CPU kernels of the forward pass that candle lacks or runs on one thread, and the plain-op
//! (differentiable) versions of candle's fused kernels for the training path.

use candle_core::{DType, Device, Tensor};

use super::packed::SendPtr;
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
        let chunks = g.len().div_ceil(CHUNK);
        let dst = SendPtr(out.as_mut_ptr());
        // candle's own CPU pool, where the packed matmul before and after it runs too.
        candle_core::utils::barrier_pool().execute_chunked(chunks, |range| {
            for c in range {
                let (a, b) = (c * CHUNK, ((c + 1) * CHUNK).min(g.len()));
                // SAFETY: chunk `c` alone writes elements a..b of `out`, which has g.len() of them.
                let o = unsafe { std::slice::from_raw_parts_mut(dst.get().add(a), b - a) };
                gated(act, o, &g[a..b], &u[a..b]);
            }
        });
        Ok((candle_core::CpuStorage::F32(out), lg.shape().clone()))
    }
}

/// `o = act(g) * u` elementwise (one chunk of [`GatedAct`]).
fn gated(act: Activation, o: &mut [f32], g: &[f32], u: &[f32]) {
    match act {
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
    }
}

/// Causal attention in one pass per query, split over candle's CPU pool: for each row, head and
/// query, the scores against the keys the additive mask lets it see (masked keys are skipped,
/// not computed), their softmax and the weighted sum of the values, written straight in the
/// `[b, sq, h, hd]` layout the output projection reads. Inputs `q [b, h, sq, hd]`,
/// `k`/`v [b, kvh, t, hd]` (grouped-query: head `i` reads kv head `i / (h / kvh)`), f32,
/// contiguous; `mask` is `[b, sq, t]` (0 or -inf, the forward's mask for these queries).
/// Each query's result depends on its own row, keys and values only (not on the batch or on how
/// many queries run), so a KV-cached step computes what the whole forward computes there.
/// CPU with AVX-512 only ([`super::packed::available`]); elsewhere the attention runs as
/// separate matmul, mask, softmax and matmul ops.
pub(crate) struct CausalAttn {
    pub(crate) scale: f32,
    pub(crate) mask: Vec<f32>, // [b, sq, t]
}

impl candle_core::CustomOp3 for CausalAttn {
    fn name(&self) -> &'static str {
        "causal-attn"
    }

    fn cpu_fwd(
        &self,
        q: &candle_core::CpuStorage,
        lq: &candle_core::Layout,
        k: &candle_core::CpuStorage,
        lk: &candle_core::Layout,
        v: &candle_core::CpuStorage,
        lv: &candle_core::Layout,
    ) -> candle_core::Result<(candle_core::CpuStorage, candle_core::Shape)> {
        use candle_core::CpuStorage::F32;
        let (F32(q), F32(k), F32(v)) = (q, k, v) else {
            candle_core::bail!("causal-attn: f32 only")
        };
        let (Some((q0, q1)), Some((k0, k1)), Some((v0, v1))) = (
            lq.contiguous_offsets(),
            lk.contiguous_offsets(),
            lv.contiguous_offsets(),
        ) else {
            candle_core::bail!("causal-attn: non-contiguous input")
        };
        let (b, h, sq, hd) = lq.shape().dims4()?;
        let (bk, kvh, t, hdk) = lk.shape().dims4()?;
        if bk != b || hdk != hd || lv.shape() != lk.shape() || kvh == 0 || h % kvh != 0 {
            candle_core::bail!(
                "causal-attn: q {:?}, k {:?}, v {:?}",
                lq.shape(),
                lk.shape(),
                lv.shape()
            )
        }
        if self.mask.len() != b * sq * t || sq > t || !super::packed::available() {
            candle_core::bail!(
                "causal-attn: mask of {} for [{b}, {sq}, {t}]",
                self.mask.len()
            )
        }
        let (q, k, v) = (&q[q0..q1], &k[k0..k1], &v[v0..v1]);
        let mut out = vec![0f32; b * sq * h * hd];
        let dst = SendPtr(out.as_mut_ptr());
        // Jobs: (row, head, block of QB queries); later queries see more keys, so a shared
        // cursor hands the jobs out.
        const QB: usize = 16;
        let blocks = sq.div_ceil(QB);
        let rep = h / kvh;
        candle_core::utils::barrier_pool().execute_chunked(b * h * blocks, |range| {
            let mut scores = vec![0f32; t];
            let mut kt = Vec::new();
            for job in range {
                let (bh, blk) = (job / blocks, job % blocks);
                let (bi, hh) = (bh / h, bh % h);
                let kv = (bi * kvh + hh / rep) * t * hd;
                let (kk, vv) = (&k[kv..kv + t * hd], &v[kv..kv + t * hd]);
                let qs = blk * QB..((blk + 1) * QB).min(sq);
                // The keys this block's queries can see (up to its last query's own column),
                // transposed to [hd, tn] so that a query's scores are a vector sum.
                let tn = t - sq + qs.end;
                kt.clear();
                kt.resize(hd * tn, 0.0);
                for j in 0..tn {
                    for d in 0..hd {
                        kt[d * tn + j] = kk[j * hd + d];
                    }
                }
                for qi in qs {
                    let qv = &q[((bi * h + hh) * sq + qi) * hd..][..hd];
                    let mrow = &self.mask[(bi * sq + qi) * t..][..tn];
                    // SAFETY: query qi of head hh in row bi alone writes these hd outputs of
                    // `out` ([b, sq, h, hd]); AVX-512 is present (checked above).
                    unsafe {
                        let o = std::slice::from_raw_parts_mut(
                            dst.get().add(((bi * sq + qi) * h + hh) * hd),
                            hd,
                        );
                        let sc = &mut scores[..tn];
                        match hd {
                            64 => attend::<64>(qv, &kt, vv, mrow, self.scale, sc, o),
                            128 => attend::<128>(qv, &kt, vv, mrow, self.scale, sc, o),
                            256 => attend::<256>(qv, &kt, vv, mrow, self.scale, sc, o),
                            _ => attend::<0>(qv, &kt, vv, mrow, self.scale, sc, o),
                        }
                    }
                }
            }
        });
        Ok((F32(out), (b, sq, h, hd).into()))
    }
}

/// One query's attention: `o = softmax(scale q.k_j + mask_j) . v` over the keys `j` whose mask
/// is finite (`kt`: the first `tn` keys transposed, `[hd, tn]`; `v`: `[t, hd]`; `mask` and
/// `scores`: `tn` columns). `HD` is the head dimension when
/// it is one of the common sizes (the sums then stay in registers), 0 for any other.
#[cfg_attr(target_arch = "x86_64", target_feature(enable = "avx512f"))]
unsafe fn attend<const HD: usize>(
    q: &[f32],
    kt: &[f32],
    v: &[f32],
    mask: &[f32],
    scale: f32,
    scores: &mut [f32],
    o: &mut [f32],
) {
    let hd = if HD > 0 { HD } else { q.len() };
    let q = &q[..hd];
    let tn = mask.len();
    // Scores of every visible column at once: s_j = sum_d q_d kt[d, j] (vectorised over j).
    scores.iter_mut().for_each(|x| *x = 0.0);
    for (d, &qd) in q.iter().enumerate() {
        for (s, &kd) in scores.iter_mut().zip(&kt[d * tn..(d + 1) * tn]) {
            *s += qd * kd;
        }
    }
    let mut max = f32::NEG_INFINITY;
    for (s, &m) in scores.iter_mut().zip(mask) {
        *s = *s * scale + m;
        max = max.max(*s);
    }
    let mut total = 0f32;
    if HD > 0 {
        let mut acc = [0f32; HD];
        for (j, (&m, &s)) in mask.iter().zip(scores.iter()).enumerate() {
            if m == f32::NEG_INFINITY {
                continue;
            }
            let p = exp_f32(s - max);
            total += p;
            for (x, &y) in acc.iter_mut().zip(&v[j * HD..(j + 1) * HD]) {
                *x += p * y;
            }
        }
        o[..HD].copy_from_slice(&acc);
    } else {
        o.iter_mut().for_each(|x| *x = 0.0);
        for (j, (&m, &s)) in mask.iter().zip(scores.iter()).enumerate() {
            if m == f32::NEG_INFINITY {
                continue;
            }
            let p = exp_f32(s - max);
            total += p;
            for (x, &y) in o.iter_mut().zip(&v[j * hd..(j + 1) * hd]) {
                *x += p * y;
            }
        }
    }
    let inv = 1.0 / total;
    o.iter_mut().for_each(|x| *x *= inv);
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

    /// The fused attention equals matmul, mask, softmax and matmul (the unfused path) within
    /// f32 rounding, for grouped-query heads, left padding, a sliding window, a few queries
    /// against more keys (a KV-cached step) and head sizes with and without a specialised
    /// kernel; a query's result does not depend on the other queries run with it.
    #[test]
    fn causal_attn_matches_the_unfused_ops() {
        if !super::super::packed::available() {
            return;
        }
        let dev = Device::Cpu;
        for (b, h, kvh, sq, t, hd, window) in [
            (2, 4, 2, 7, 7, 64, usize::MAX),
            (3, 6, 2, 5, 40, 256, 9),
            (1, 3, 3, 19, 19, 24, usize::MAX),
            (2, 2, 1, 1, 33, 128, usize::MAX),
        ] {
            let pads = [0usize, 3, 5];
            let q = Tensor::randn(0f32, 1.0, (b, h, sq, hd), &dev).unwrap();
            let k = Tensor::randn(0f32, 1.0, (b, kvh, t, hd), &dev).unwrap();
            let v = Tensor::randn(0f32, 1.0, (b, kvh, t, hd), &dev).unwrap();
            let mut m = vec![f32::NEG_INFINITY; b * sq * t];
            for i in 0..b {
                for qi in 0..sq {
                    let qp = t - sq + qi;
                    for kj in 0..=qp {
                        if (kj >= pads[i] && qp - kj < window) || kj == qp {
                            m[(i * sq + qi) * t + kj] = 0.0;
                        }
                    }
                }
            }
            let scale = 1.0 / (hd as f32).sqrt();
            let fused = q
                .apply_op3_no_bwd(
                    &k,
                    &v,
                    &CausalAttn {
                        scale,
                        mask: m.clone(),
                    },
                )
                .unwrap(); // [b, sq, h, hd]
            let rep = h / kvh;
            let mask = Tensor::from_vec(m.clone(), (b, 1, sq, t), &dev).unwrap();
            let att = (&q * scale as f64)
                .unwrap()
                .reshape((b, kvh, rep * sq, hd))
                .unwrap()
                .matmul(&k.t().unwrap())
                .unwrap()
                .reshape((b, h, sq, t))
                .unwrap()
                .broadcast_add(&mask)
                .unwrap();
            let att = candle_nn::ops::softmax_last_dim(&att).unwrap();
            let plain = att
                .reshape((b, kvh, rep * sq, t))
                .unwrap()
                .matmul(&v)
                .unwrap()
                .reshape((b, h, sq, hd))
                .unwrap()
                .transpose(1, 2)
                .unwrap();
            let diff = (&fused - &plain)
                .unwrap()
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            println!("[{b}, {h}, {sq}, {t}, {hd}]: max abs diff {diff:.1e}");
            assert!(diff < 2e-6, "[{b}, {h}, {sq}, {t}, {hd}]: {diff}");
            // The last query alone (a KV-cached step) gives the same bits.
            let last = q.narrow(2, sq - 1, 1).unwrap().contiguous().unwrap();
            let lm: Vec<f32> = (0..b)
                .flat_map(|i| m[(i * sq + sq - 1) * t..(i * sq + sq) * t].to_vec())
                .collect();
            let one = last
                .apply_op3_no_bwd(&k, &v, &CausalAttn { scale, mask: lm })
                .unwrap();
            let want = fused.narrow(1, sq - 1, 1).unwrap();
            assert_eq!(
                one.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
                want.flatten_all().unwrap().to_vec1::<f32>().unwrap()
            );
        }
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
