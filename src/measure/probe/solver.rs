//! The logistic solver: every layer and L2 strength as one batched Newton-CG problem (on the
//! device, in f64 where the device has it), the grid fit and the choice on validation.

use super::*;

/// Arithmetic dtype of the solver and of scores on `dev`.
pub(super) fn work_dtype(dev: &Device) -> DType {
    if dev.is_metal() {
        DType::F32
    } else {
        DType::F64
    }
}

/// Raw-space logistic solutions of every layer at every grid value ([`fit_grid`]).
pub(crate) struct GridFit {
    /// `[L, d, G]` row-major: weights on raw activations.
    pub(crate) w_raw: Vec<f64>,
    /// `[L, G]`: biases on raw activations.
    pub(crate) b_raw: Vec<f64>,
    /// `[L][G]`: gradient ∞-norms.
    pub(crate) grad_norm: Vec<Vec<f64>>,
    /// `(L, d, G)`.
    pub(crate) dims: (usize, usize, usize),
    /// The training data's device.
    pub(crate) dev: Device,
}

impl GridFit {
    /// The probe of layer `li` at grid index `gi`.
    pub(crate) fn probe(&self, li: usize, gi: usize, l2: f64) -> Result<LinearProbe> {
        let (_, d, g) = self.dims;
        let w: Vec<f32> = (0..d)
            .map(|j| self.w_raw[(li * d + j) * g + gi] as f32)
            .collect();
        Ok(LinearProbe {
            weight: Tensor::from_vec(w, d, &self.dev)?, // [d]
            bias: self.b_raw[li * g + gi],
            l2,
            kind: ProbeKind::Logistic,
        })
    }
}

/// [`fit_logistic`], also returning each layer's gradient ∞-norm at the chosen `l2`.
pub(super) fn fit_logistic_inner(
    train: &[Tensor],
    y_train: &[bool],
    val: &[Tensor],
    y_val: &[bool],
    opts: &ProbeOptions,
) -> Result<(Vec<LinearProbe>, Vec<f64>)> {
    let (_, d) = check_split("train", train, y_train, None, None)?;
    check_split("val", val, y_val, Some(d), Some(train.len()))?;
    let fit = fit_grid(train, y_train, opts)?;
    choose_on_val(&fit, val, y_val, opts)
}

/// Solves every layer of `train` at every value of `opts.l2_grid` (one batched Newton-CG
/// problem) and folds the standardization back into raw-space weights.
pub(crate) fn fit_grid(train: &[Tensor], y_train: &[bool], opts: &ProbeOptions) -> Result<GridFit> {
    let (n, d) = check_split("train", train, y_train, None, None)?;
    check_labels(y_train)?;
    check_solver_opts(&opts.l2_grid, opts.max_iter, opts.tol)?;
    let dev = train[0].device().clone();
    let dt = work_dtype(&dev);
    let (l, g) = (train.len(), opts.l2_grid.len());
    let x = stack(train, &dev, dt)?; // [L, n, d]

    // Standardization with the training split's statistics (host copies for the fold-back).
    let (mean, scale) = if opts.standardize {
        let mean = x.mean_keepdim(1)?; // [L, 1, d]
        let var = x.broadcast_sub(&mean)?.sqr()?.mean_keepdim(1)?; // [L, 1, d]
        let mean_h = host(&mean)?; // [L*d]
        let var_h = host(&var)?; // [L*d]
                                 // Constant features keep scale 1 (scikit-learn's rule: variance within rounding of 0).
        let scale_h: Vec<f64> = var_h
            .iter()
            .zip(&mean_h)
            .map(|(&v, &m)| {
                let bound = (n as f64 * f64::EPSILON * m).powi(2) + n as f64 * f64::EPSILON * v;
                if v <= bound {
                    1.0
                } else {
                    v.sqrt()
                }
            })
            .collect();
        (mean_h, scale_h)
    } else {
        (vec![0.0; l * d], vec![1.0; l * d])
    };
    // [L, n, d], z-scored when asked.
    let xs = if opts.standardize {
        let mean_t = upload(mean.clone(), (l, 1, d), &dev, dt)?; // [L, 1, d]
        let scale_t = upload(scale.clone(), (l, 1, d), &dev, dt)?; // [L, 1, d]
        x.broadcast_sub(&mean_t)?.broadcast_div(&scale_t)? // [L, n, d]
    } else {
        x
    };
    let ones = Tensor::ones((l, n, 1), dt, &dev)?; // [L, n, 1]
    let xa = Tensor::cat(&[&xs, &ones], 2)?; // [L, n, d+1]
    drop(xs);
    let sol = newton_cg(&xa, y_train, &opts.l2_grid, opts.max_iter, opts.tol)?;
    drop(xa);
    if !sol.converged {
        for (li, row) in sol.grad_norm.iter().enumerate() {
            for (gi, &gn) in row.iter().enumerate() {
                if gn.is_nan() || gn > opts.tol {
                    return Err(Error::InvalidArgument {
                        name: "max_iter".into(),
                        msg: format!(
                            "logistic probe at layer {li} (train [{n}, {d}]) with l2 = {}: \
                             gradient ∞-norm {gn:.3e} still above tol = {:.1e} after {} Newton \
                             steps; raise max_iter or tol",
                            opts.l2_grid[gi], opts.tol, opts.max_iter
                        ),
                    });
                }
            }
        }
    }

    // Fold the standardization back: raw weight w_j / scale_j, bias b - Σ w_j mean_j / scale_j.
    let mut w_raw = vec![0.0f64; l * d * g]; // [L, d, G]
    let mut b_raw = vec![0.0f64; l * g]; // [L, 1, G]
    for li in 0..l {
        for gi in 0..g {
            let c = &sol.coef[li][gi];
            let mut b = c[d];
            for j in 0..d {
                let wj = c[j] / scale[li * d + j];
                w_raw[(li * d + j) * g + gi] = wj;
                b -= wj * mean[li * d + j];
            }
            b_raw[li * g + gi] = b;
        }
    }

    Ok(GridFit {
        w_raw,
        b_raw,
        grad_norm: sol.grad_norm,
        dims: (l, d, g),
        dev,
    })
}

/// Chooses each layer's grid value on validation accuracy (ties: the larger `l2`).
pub(super) fn choose_on_val(
    fit: &GridFit,
    val: &[Tensor],
    y_val: &[bool],
    opts: &ProbeOptions,
) -> Result<(Vec<LinearProbe>, Vec<f64>)> {
    let (l, d, g) = fit.dims;
    let dev = fit.dev.clone();
    let dt = work_dtype(&dev);
    let (w_raw, b_raw) = (&fit.w_raw, &fit.b_raw);
    // Choose l2 per layer on validation accuracy (ties: the larger l2), one batched matmul.
    let xv = stack(val, &dev, dt)?; // [L, n_val, d]
    let wt = upload(w_raw.clone(), (l, d, g), &dev, dt)?; // [L, d, G]
    let bt = upload(b_raw.clone(), (l, 1, g), &dev, dt)?; // [L, 1, G]
    let sv = xv.matmul(&wt)?.broadcast_add(&bt)?; // [L, n_val, G]
    let sv = host(&sv)?; // [L*n_val*G]
    let nv = y_val.len();
    let mut by_l2: Vec<usize> = (0..g).collect();
    by_l2.sort_by(|&a, &b| opts.l2_grid[b].total_cmp(&opts.l2_grid[a])); // largest l2 first
    let mut probes = Vec::with_capacity(l);
    let mut grad_norms = Vec::with_capacity(l);
    for li in 0..l {
        let mut best: Option<(usize, usize)> = None; // (grid index, correct count)
        for &gi in &by_l2 {
            let correct = (0..nv)
                .filter(|&i| (sv[(li * nv + i) * g + gi] > 0.0) == y_val[i])
                .count();
            if best.is_none_or(|(_, c)| correct > c) {
                best = Some((gi, correct));
            }
        }
        let gi = best.map_or(0, |(gi, _)| gi);
        probes.push(fit.probe(li, gi, opts.l2_grid[gi])?);
        grad_norms.push(fit.grad_norm[li][gi]);
    }
    Ok((probes, grad_norms))
}

/// Stacks per-layer `[n, d]` activations into `[L, n, d]` in `dt` on `dev`.
pub(super) fn stack(xs: &[Tensor], dev: &Device, dt: DType) -> Result<Tensor> {
    // L tensors [n, d]
    let xs = xs
        .iter()
        .map(|x| x.to_device(dev)?.to_dtype(dt))
        .collect::<candle_core::Result<Vec<_>>>()?;
    Ok(Tensor::stack(&xs, 0)?) // [L, n, d]
}

/// Per-problem scalars `[L, 1, G]` from host values (row-major over layer, then grid value).
pub(super) fn per_problem(
    v: &[f64],
    l: usize,
    g: usize,
    dev: &Device,
    dt: DType,
) -> Result<Tensor> {
    upload(v.to_vec(), (l, 1, g), dev, dt) // [L, 1, G]
}

/// A tensor's values back on the host as f64, flattened.
pub(super) fn host(t: &Tensor) -> Result<Vec<f64>> {
    Ok(t.to_device(&Device::Cpu)?
        .to_dtype(DType::F64)?
        .flatten_all()?
        .to_vec1::<f64>()?)
}

/// Host f64 values as a tensor of `shape` in `dt` on `dev` (converted on the CPU: Metal has no f64).
pub(super) fn upload(
    v: Vec<f64>,
    shape: impl Into<candle_core::Shape>,
    dev: &Device,
    dt: DType,
) -> Result<Tensor> {
    Ok(Tensor::from_vec(v, shape, &Device::Cpu)?
        .to_dtype(dt)?
        .to_device(dev)?)
}

/// The design matrices of the layers still being solved, in the layouts the products want.
pub(super) struct Batch {
    /// Original index of each layer in the batch.
    pub(super) layers: Vec<usize>,
    /// `[Lc, n, p]` in the solver's dtype.
    pub(super) x: Tensor,
    /// `[Lc, p, n]`, contiguous (a strided transpose is several times slower in candle's CPU gemm).
    pub(super) xt: Tensor,
    /// `[Lc, n, p]` in the Hessian-vector dtype.
    pub(super) xh: Tensor,
    /// `[Lc, p, n]` in the Hessian-vector dtype, contiguous.
    pub(super) xht: Tensor,
    /// `[Lc, p, n]` squared entries (f32), for the Jacobi preconditioner.
    pub(super) x2t: Tensor,
}

impl Batch {
    pub(super) fn new(xa: &Tensor, hdt: DType) -> Result<Batch> {
        let x = xa.clone(); // [L, n, p]
        let xt = xa.t()?.contiguous()?; // [L, p, n]
        let (xh, xht) = if hdt == xa.dtype() {
            (x.clone(), xt.clone())
        } else {
            (x.to_dtype(hdt)?, xt.to_dtype(hdt)?) // [L, n, p], [L, p, n]
        };
        let x2t = xht.to_dtype(DType::F32)?.sqr()?; // [L, p, n]
        Ok(Batch {
            layers: (0..xa.dims()[0]).collect(),
            x,
            xt,
            xh,
            xht,
            x2t,
        })
    }

    /// Keeps the batch positions `keep` (ascending).
    pub(super) fn retain(&mut self, keep: &[usize]) -> Result<()> {
        let shared = self.xh.dtype() == self.x.dtype();
        let idx = index(keep, self.x.device())?;
        self.x = self.x.index_select(&idx, 0)?;
        self.xt = self.xt.index_select(&idx, 0)?;
        if shared {
            self.xh = self.x.clone();
            self.xht = self.xt.clone();
        } else {
            self.xh = self.xh.index_select(&idx, 0)?;
            self.xht = self.xht.index_select(&idx, 0)?;
        }
        self.x2t = self.x2t.index_select(&idx, 0)?;
        self.layers = keep.iter().map(|&c| self.layers[c]).collect();
        Ok(())
    }
}

/// A `u32` index tensor.
pub(super) fn index(keep: &[usize], dev: &Device) -> Result<Tensor> {
    let v: Vec<u32> = keep.iter().map(|&c| c as u32).collect();
    Ok(Tensor::from_vec(v, keep.len(), dev)?) // [k]
}

/// Batched Newton-CG on `xa` (`[L, n, p]`, last column ones = unpenalised bias).
///
/// Every (layer, l2) problem keeps its own CG coefficients and line-search step; a problem whose
/// gradient ∞-norm reaches `tol` is frozen, and a layer whose problems are all frozen leaves the
/// batch, so late Newton steps only pay for the layers still converging.
pub(super) fn newton_cg(
    xa: &Tensor,
    y: &[bool],
    l2: &[f64],
    max_iter: usize,
    tol: f64,
) -> Result<BatchSolution> {
    let (l_all, n, p) = xa.dims3()?;
    let g = l2.len();
    let dev = xa.device().clone();
    let dt = xa.dtype();
    let nf = n as f64;
    // Hessian-vector products in f32 halve the memory traffic of the CG loop, but on these
    // ill-conditioned problems the rounding costs more CG iterations than it saves; they stay in
    // the solver's dtype.
    let hdt = dt;
    let yv: Vec<f64> = y.iter().map(|&b| f64::from(u8::from(b))).collect();
    let yt = upload(yv, (1, n, 1), &dev, dt)?; // [1, n, 1]
    let lam = upload(l2.to_vec(), (1, 1, g), &dev, dt)?; // [1, 1, G]
    let mut regv = vec![1.0f64; p];
    regv[p - 1] = 0.0;
    let reg = upload(regv, (1, p, 1), &dev, dt)?; // [1, p, 1]
    let lam_reg = lam.broadcast_mul(&reg)?; // [1, p, G]

    // Mean loss per problem of margins z.
    let loss = |z: &Tensor| -> Result<Tensor> {
        let sp = (z.relu()? + (z.abs()?.neg()?.exp()? + 1.0)?.log()?)?; // [Lc, n, G]
        Ok((sp - z.broadcast_mul(&yt)?)?.mean_keepdim(1)?) // [Lc, 1, G]
    };
    let penalty = |w: &Tensor| -> Result<Tensor> {
        Ok((w.sqr()?.broadcast_mul(&lam_reg)?.sum_keepdim(1)? * 0.5)?) // [Lc, 1, G]
    };

    let mut b = Batch::new(xa, hdt)?;
    let mut w = Tensor::zeros((l_all, p, g), dt, &dev)?; // [Lc, p, G]
    let mut coef = vec![vec![vec![0.0f64; p]; g]; l_all];
    let mut grad_norm = vec![vec![f64::NAN; g]; l_all];
    // Frozen problems, by original (layer, l2): converged, or stalled at rounding level.
    let mut frozen = vec![false; l_all * g];
    let mut hvps = 0usize;
    let mut iters = 0usize;
    let cg_max = p.min(250);
    for it in 0..=max_iter {
        let z = b.x.matmul(&w)?; // [Lc, n, G]
        let sig = candle_nn::ops::sigmoid(&z)?; // [Lc, n, G]
        let grad = ((b.xt.matmul(&sig.broadcast_sub(&yt)?)? / nf)? + w.broadcast_mul(&lam_reg)?)?; // [Lc, p, G]
        let gn = host(&grad.abs()?.max_keepdim(1)?)?; // [Lc*G]
        let w_h = host(&w)?; // [Lc*p*G]
        for (c, &li) in b.layers.iter().enumerate() {
            for gi in 0..g {
                let v = gn[c * g + gi];
                grad_norm[li][gi] = v;
                for (j, cj) in coef[li][gi].iter_mut().enumerate() {
                    *cj = w_h[(c * p + j) * g + gi];
                }
                if v <= tol || !v.is_finite() {
                    frozen[li * g + gi] = true;
                }
            }
        }
        if frozen.iter().all(|&f| f) || it == max_iter {
            break;
        }
        iters = it + 1;

        // Layers with every problem frozen leave the batch.
        let keep: Vec<usize> = (0..b.layers.len())
            .filter(|&c| (0..g).any(|gi| !frozen[b.layers[c] * g + gi]))
            .collect();
        let (z, sig, grad) = if keep.len() < b.layers.len() {
            b.retain(&keep)?;
            let idx = index(&keep, &dev)?; // [Lc]
            w = w.index_select(&idx, 0)?;
            (
                z.index_select(&idx, 0)?,
                sig.index_select(&idx, 0)?,
                grad.index_select(&idx, 0)?,
            )
        } else {
            (z, sig, grad)
        };
        let lc = b.layers.len();
        let q = lc * g;
        let done: Vec<bool> = (0..q)
            .map(|i| frozen[b.layers[i / g] * g + i % g])
            .collect();
        let f0 = host(&(loss(&z)? + penalty(&w)?)?)?; // [Lc*G]
        let active: Vec<f64> = done.iter().map(|&d| if d { 0.0 } else { 1.0 }).collect();
        let active_t = per_problem(&active, lc, g, &dev, dt)?; // [Lc, 1, G]

        // Curvature weights and the Jacobi preconditioner.
        let s = (&sig * (1.0 - &sig)?)?; // [Lc, n, G]
        let s_h = s.to_dtype(hdt)?; // [Lc, n, G]
        let diag = b.x2t.matmul(&s.to_dtype(DType::F32)?)?.to_dtype(dt)?; // [Lc, p, G]
        let minv = ((diag / nf)?.broadcast_add(&lam_reg)?).recip()?; // [Lc, p, G]
        let hvp = |v: &Tensor| -> Result<Tensor> {
            let xv = (b.xh.matmul(&v.to_dtype(hdt)?)? * &s_h)?; // [Lc, n, G]
            let xtxv = b.xht.matmul(&xv)?.to_dtype(dt)?; // [Lc, p, G]
            Ok(((xtxv / nf)? + v.broadcast_mul(&lam_reg)?)?) // [Lc, p, G]
        };

        // Preconditioned CG on H d = -g to a residual of min(0.5, sqrt(||g||))·||g||, but no
        // smaller than tol/2: the next gradient is about the residual, so solving further than
        // that buys nothing.
        let g2 = host(&grad.sqr()?.sum_keepdim(1)?)?; // [Lc*G]
        let target: Vec<f64> = g2
            .iter()
            .map(|&v| (v.sqrt() * v.sqrt().sqrt().min(0.5)).max(0.5 * tol))
            .collect();
        let mut dir = Tensor::zeros((lc, p, g), dt, &dev)?; // [Lc, p, G]
        let mut res = grad.neg()?.broadcast_mul(&active_t)?; // [Lc, p, G]
        let mut zc = (&res * &minv)?; // [Lc, p, G]
        let mut pc = zc.clone(); // [Lc, p, G]
        let mut rz = host(&(&res * &zc)?.sum_keepdim(1)?)?; // [Lc*G]
        let mut res2 = g2.clone();
        for k in 0..cg_max {
            let cg_active: Vec<bool> = (0..q)
                .map(|i| !done[i] && res2[i].sqrt() > target[i])
                .collect();
            if !cg_active.iter().any(|&a| a) {
                break;
            }
            let hp = hvp(&pc)?; // [Lc, p, G]
            hvps += 1;
            let php = host(&(&pc * &hp)?.sum_keepdim(1)?)?; // [Lc*G]
            let mut alpha = vec![0.0; q];
            let mut stop_after = vec![false; q];
            for i in 0..q {
                if cg_active[i] {
                    if php[i] > 0.0 && php[i].is_finite() {
                        alpha[i] = rz[i] / php[i];
                    } else if k == 0 {
                        // No usable curvature: a (preconditioned) gradient step, line-searched.
                        alpha[i] = 1.0;
                        stop_after[i] = true;
                    } else {
                        stop_after[i] = true;
                    }
                }
            }
            let alpha_t = per_problem(&alpha, lc, g, &dev, dt)?; // [Lc, 1, G]
            dir = (dir + pc.broadcast_mul(&alpha_t)?)?;
            res = (res - hp.broadcast_mul(&alpha_t)?)?;
            zc = (&res * &minv)?;
            let rz_new = host(&(&res * &zc)?.sum_keepdim(1)?)?; // [Lc*G]
            res2 = host(&res.sqr()?.sum_keepdim(1)?)?; // [Lc*G]
            let mut beta = vec![0.0; q];
            for i in 0..q {
                if cg_active[i] && rz[i] > 0.0 {
                    beta[i] = rz_new[i] / rz[i];
                }
                if stop_after[i] {
                    res2[i] = 0.0;
                }
            }
            let beta_t = per_problem(&beta, lc, g, &dev, dt)?; // [Lc, 1, G]
            pc = (&zc + pc.broadcast_mul(&beta_t)?)?;
            rz = rz_new;
        }
        // Armijo backtracking, one step size per problem.
        let xd = b.x.matmul(&dir)?; // [Lc, n, G]
        let gd = host(&(&grad * &dir)?.sum_keepdim(1)?)?; // [Lc*G]
        let mut t = vec![1.0f64; q];
        let mut accepted = vec![false; q];
        for i in 0..q {
            if done[i] || gd[i] >= 0.0 {
                // Frozen, or not a descent direction (only at rounding level): no step.
                accepted[i] = true;
                t[i] = 0.0;
                if !done[i] {
                    frozen[b.layers[i / g] * g + i % g] = true;
                }
            }
        }
        for _ in 0..60 {
            if accepted.iter().all(|&a| a) {
                break;
            }
            let t_t = per_problem(&t, lc, g, &dev, dt)?; // [Lc, 1, G]
            let zt = (&z + xd.broadcast_mul(&t_t)?)?; // [Lc, n, G]
            let wt = (&w + dir.broadcast_mul(&t_t)?)?; // [Lc, p, G]
            let ft = host(&(loss(&zt)? + penalty(&wt)?)?)?; // [Lc*G]
            for i in 0..q {
                if !accepted[i] {
                    if ft[i] <= f0[i] + 1e-4 * t[i] * gd[i] {
                        accepted[i] = true;
                    } else {
                        t[i] *= 0.5;
                    }
                }
            }
        }
        for i in 0..q {
            if !accepted[i] {
                // No decrease found: stalled at rounding level.
                t[i] = 0.0;
                frozen[b.layers[i / g] * g + i % g] = true;
            }
        }
        let t_t = per_problem(&t, lc, g, &dev, dt)?; // [Lc, 1, G]
        w = (w + dir.broadcast_mul(&t_t)?)?;
    }
    let converged = grad_norm.iter().flatten().all(|&v| v <= tol);
    Ok(BatchSolution {
        coef,
        grad_norm,
        converged,
        newton_iters: iters,
        hvps,
    })
}
