//! From per-item scores to numbers: effects with bootstrap intervals, the verdict's layer, the
//! verdict and the best patch's specificity.

use super::*;

// ---------------------------------------------------------------------------------------------
// Numbers.

/// Clean scores of both models, and what an effect is measured against.
pub(super) struct Ref<'a> {
    pub(super) base: &'a [AbScore],
    pub(super) tuned: &'a [AbScore],
    pub(super) gap_ok: bool,
    pub(super) bootstrap: usize,
    pub(super) seed: u64,
}

impl Ref<'_> {
    pub(super) fn effect(&self, patched: &[AbScore], dir: Dir) -> Effect {
        let n = patched.len() as f64;
        let rec = match dir {
            Dir::Denoise => self.base,
            Dir::Noise => self.tuned,
        };
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
        let num: Vec<f64> = patched
            .iter()
            .zip(self.base.iter().zip(self.tuned))
            .map(|(p, (b, t))| match dir {
                Dir::Denoise => p.p_matching - b.p_matching,
                Dir::Noise => t.p_matching - p.p_matching,
            })
            .collect();
        let gap: Vec<f64> = self
            .base
            .iter()
            .zip(self.tuned)
            .map(|(b, t)| t.p_matching - b.p_matching)
            .collect();
        let (fraction, ci) = if self.gap_ok {
            let f = mean(&num) / mean(&gap);
            (
                Some(f),
                Some(ratio_ci(&num, &gap, self.bootstrap, self.seed)),
            )
        } else {
            (None, None)
        };
        Effect {
            p: patched.iter().map(|s| s.p_matching).sum::<f64>() / n,
            logit_diff: patched.iter().map(|s| s.logit_diff).sum::<f64>() / n,
            delta_p: patched
                .iter()
                .zip(rec)
                .map(|(p, r)| p.p_matching - r.p_matching)
                .sum::<f64>()
                / n,
            fraction,
            ci,
        }
    }
}

/// Percentile-bootstrap 95% interval of `mean(num) / mean(den)` over items.
pub(super) fn ratio_ci(num: &[f64], den: &[f64], resamples: usize, seed: u64) -> (f64, f64) {
    let n = num.len();
    let mut rng = SplitMix64::new(seed);
    let mut v = Vec::with_capacity(resamples);
    for _ in 0..resamples {
        let (mut a, mut b) = (0.0, 0.0);
        for _ in 0..n {
            let i = rng.below(n as u64) as usize;
            a += num[i];
            b += den[i];
        }
        if b != 0.0 {
            v.push(a / b);
        }
    }
    percentile_ci(&mut v)
}

/// Mean per-token KL(p || q) over the real tokens of a batch; `p` and `q` are logits `[b, s, v]`.
pub(super) fn kl_sum(p: &Tensor, q: &Tensor, pads: &[usize]) -> Result<(f64, usize)> {
    let lp = candle_nn::ops::log_softmax(p, D::Minus1)?;
    let lq = candle_nn::ops::log_softmax(q, D::Minus1)?;
    let kl: Vec<Vec<f32>> = (lp.exp()? * (lp - lq)?)?.sum(D::Minus1)?.to_vec2()?; // [b, s]
    let (mut total, mut count) = (0.0, 0);
    for (row, &pad) in kl.iter().zip(pads) {
        for v in &row[pad..] {
            total += *v as f64;
            count += 1;
        }
    }
    Ok((total, count))
}

/// Share of the most any layer restores that the verdict's layer must restore.
pub const BEST_LAYER_SHARE: f64 = 0.8;

/// The verdict's layer: the earliest whose full patch restores at least [`BEST_LAYER_SHARE`] of
/// the most any layer restores (by `|delta_p|` when the gap is small). The residual stream
/// carries everything computed below a layer, so a full `resid_pre` patch only grows with depth;
/// the earliest layer that carries the gap is where the change has been written.
pub(super) fn best_layer(rows: &[LayerPatch]) -> Option<usize> {
    let key = |x: &LayerPatch| match x.full.fraction {
        Some(f) => f,
        None => x.full.delta_p.abs(),
    };
    let top = rows.iter().map(key).fold(f64::NEG_INFINITY, f64::max);
    rows.iter()
        .find(|r| key(r) >= BEST_LAYER_SHARE * top)
        .map(|r| r.layer)
}

pub(super) fn mean_p(s: &[AbScore]) -> f64 {
    s.iter().map(|x| x.p_matching).sum::<f64>() / s.len().max(1) as f64
}

pub(super) fn mean_ld(s: &[AbScore]) -> f64 {
    s.iter().map(|x| x.logit_diff).sum::<f64>() / s.len().max(1) as f64
}

/// The verdict, with the best patch's specificity.
#[allow(clippy::too_many_arguments)]
pub(super) fn verdict(
    eng: &Engine,
    data: &AbSplits,
    opts: &PatchOptions,
    rows: &[LayerPatch],
    ranks: &[RankCurve],
    best: Option<usize>,
    gap_ok: bool,
    gap: f64,
    mom: &BTreeMap<usize, Moments>,
) -> Result<Verdict> {
    let row = best.and_then(|b| rows.iter().find(|r| r.layer == b));
    let curve = best.and_then(|b| ranks.iter().find(|c| c.layer == b));
    let (rank50, rank80) = curve.map_or((None, None), |c| (c.rank50, c.rank80));
    // The low-rank patch judged: rank80's subspace, else rank50's, else the largest below the
    // full width (a patch of the full width is the full patch).
    let d = eng.base.config().d_model;
    let below = |k: Option<usize>| k.filter(|&k| k < d);
    let largest = curve.and_then(|c| c.points.iter().map(|p| p.k).filter(|&k| k < d).max());
    let k = below(rank80).or(below(rank50)).or(largest).unwrap_or(1);
    let random_of_full = curve.and_then(|c| {
        c.points
            .iter()
            .find(|p| p.k == k && !p.random.is_empty())
            .map(|p| (p.random_of_full, p.random_spread))
    });
    let specificity = match best {
        Some(l) if k < d => Some(specificity(eng, opts, l, k, data, mom)?),
        _ => None,
    };
    let pct = |x: f64| format!("{:.0}%", 100.0 * x);
    let (kind, reading) = match (row, gap_ok) {
        (None, _) => (VerdictKind::NoGap, "no layer patched".to_string()),
        (Some(r), false) => {
            // The layer whose full patch moves P the most (not `best_layer`'s earliest layer
            // within a share of it), so that "largest" is what the numbers say.
            let top = rows
                .iter()
                .max_by(|a, b| a.full.delta_p.abs().total_cmp(&b.full.delta_p.abs()))
                .unwrap_or(r);
            (
                VerdictKind::NoGap,
                format!(
                    "no behaviour gap (P changes by {gap:+.3}, under the {:.2} threshold); the \
                     largest full-layer patch moves P by {:+.3} (layer {})",
                    opts.min_gap, top.full.delta_p, top.layer
                ),
            )
        }
        (Some(r), true) => {
            let f = r.full.fraction.unwrap_or(f64::NAN);
            let ci = r.full.ci.unwrap_or((f64::NAN, f64::NAN));
            let head = format!(
                "layer {}'s {} restores {} [{}, {}] of the gap",
                r.layer,
                opts.family,
                pct(f),
                pct(ci.0),
                pct(ci.1)
            );
            let random = random_of_full
                .map(|(m, _)| format!("; random {k}-dim subspaces restore {} of that", pct(m)))
                .unwrap_or_default();
            if f < 0.5 {
                (
                    VerdictKind::NotOneLayer,
                    format!("no single layer carries the gap: {head}"),
                )
            } else {
                match rank80 {
                    Some(k80)
                        if k80 <= PUPPETEER_MAX_RANK
                            && random_of_full.is_none_or(|(m, _)| m < 0.5) =>
                    {
                        (
                            VerdictKind::Puppeteer,
                            format!(
                                "puppeteer-like: {head}, and {k80} {} 80% of it{random}",
                                if k80 == 1 {
                                    "direction carries"
                                } else {
                                    "directions carry"
                                }
                            ),
                        )
                    }
                    _ => (
                        VerdictKind::Diffuse,
                        format!(
                            "diffuse: {head}, but 80% of it needs {}{random}",
                            match (rank80, curve) {
                                (Some(k80), _) if k80 < d => format!("{k80} directions"),
                                (_, Some(c)) => {
                                    let top = c.points.iter().filter(|p| p.k < d).last();
                                    match top {
                                        Some(p) => format!(
                                            "all {d} directions (the top {} restore {} of it)",
                                            p.k,
                                            pct(p.of_full)
                                        ),
                                        None => format!("all {d} directions"),
                                    }
                                }
                                _ => format!("all {d} directions"),
                            }
                        ),
                    ),
                }
            }
        }
    };
    Ok(Verdict {
        kind,
        best_layer: best,
        full: row.map(|r| r.full),
        rank50,
        rank80,
        mean_diff: row.map(|r| r.mean_diff),
        random_of_full,
        specificity,
        reading,
    })
}

/// KL on neutral text and the unrelated behaviour's change under the full and the top-`k` patch
/// at `layer`.
pub(super) fn specificity(
    eng: &Engine,
    opts: &PatchOptions,
    layer: usize,
    k: usize,
    data: &AbSplits,
    mom: &BTreeMap<usize, Moments>,
) -> Result<Specificity> {
    let d = eng.base.config().d_model;
    let owned;
    let m = match mom.get(&layer) {
        Some(m) => m,
        None => {
            owned = moments(eng, &data.train, &[layer], false)?;
            owned.get(&layer).ok_or_else(|| Error::InvalidArgument {
                name: "layer".into(),
                msg: format!("no differences at layer {layer}"),
            })?
        }
    };
    let (_, vecs) = top_eigen(&m.gram, d, k, opts.seed ^ (layer as u64) << 8)?;
    let subs = [Sub::Full, span(eng.base, &vecs)?];
    let mut out = Specificity {
        layer,
        k,
        kl_full: None,
        kl_low_rank: None,
        kl_tuned: None,
        unrelated_tuned: None,
        unrelated_full: None,
        unrelated_low_rank: None,
    };
    if !opts.neutral.is_empty() {
        let (mut sums, mut count) = ([0.0; 3], 0usize);
        let lens: Vec<usize> = opts.neutral.iter().map(|p| p.len()).collect();
        let (resume, add) = eng.family.resume(layer);
        let p = eng.family.point(layer);
        let keep = |q: HookPoint| q == p || Some(q) == add;
        for idx in length_batches(&lens, eng.batch_size) {
            let ids: Vec<&[u32]> = idx.iter().map(|&i| opts.neutral[i].as_slice()).collect();
            let batch = Batch::new(&ids)?;
            let (lb, cb) = eng.base.run_with_cache(&batch, keep)?; // [b, s, vocab]
            let (lt, ct) = eng.tuned.run_with_cache(&batch, keep)?; // [b, s, vocab]
            let side = |cache| Side {
                cache,
                kv: KvCache::new(0, Vec::new()),
            };
            let (rec, don) = (side(cb), side(ct));
            let mask = real_tokens(&batch, eng.base)?; // [b, s, 1]
            let xs = eng.patched_all(&rec, &don, layer, subs.iter(), &mask)?;
            let (kt, n) = kl_sum(&lb, &lt, batch.pads())?;
            sums[2] += kt;
            count += n;
            for (i, x) in xs.iter().enumerate() {
                let lp = eng.base.run_from(resume, x, &batch, &mut Hooks::new())?; // [b, s, vocab]
                sums[i] += kl_sum(&lb, &lp, batch.pads())?.0;
            }
        }
        let c = count.max(1) as f64;
        out.kl_full = Some(sums[0] / c);
        out.kl_low_rank = Some(sums[1] / c);
        out.kl_tuned = Some(sums[2] / c);
    }
    if !opts.unrelated.is_empty() {
        check_cases(eng.base, &opts.unrelated)?;
        let jobs: Vec<Job> = subs
            .iter()
            .map(|sub| Job {
                layer,
                dir: Dir::Denoise,
                sub: sub.clone(),
            })
            .collect();
        let runs = eng.run(&opts.unrelated, &jobs, &[], "patching: unrelated", false)?;
        let b = mean_p(&runs.base);
        out.unrelated_tuned = Some(mean_p(&runs.tuned) - b);
        out.unrelated_full = Some(mean_p(&runs.jobs[0]) - b);
        out.unrelated_low_rank = Some(mean_p(&runs.jobs[1]) - b);
    }
    Ok(out)
}
