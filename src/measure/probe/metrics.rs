//! Metrics of scores against labels: accuracy, AUROC, percentile intervals.

use super::*;

/// Accuracy, AUROC and their bootstrap intervals.
pub(super) fn metrics(scores: &[f64], y: &[bool], opts: &ProbeOptions) -> Metrics {
    let (accuracy_ci, auroc_ci) = bootstrap_ci(scores, y, opts.bootstrap, opts.seed);
    Metrics {
        n: y.len(),
        accuracy: accuracy(scores, y),
        accuracy_ci,
        auroc: auroc(scores, y),
        auroc_ci,
    }
}

/// Indices of `scores` in ascending order.
pub(super) fn sorted_order(scores: &[f64]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    order
}

/// AUROC with integer item weights (bootstrap multiplicities), `order` ascending by score; ties
/// count one half. `NaN` unless both classes have weight.
pub(super) fn weighted_auroc(scores: &[f64], y: &[bool], order: &[usize], weight: &[u32]) -> f64 {
    let (mut below_neg, mut pairs) = (0f64, 0f64); // negatives below the current group; Σ wins
    let (mut tot_pos, mut tot_neg) = (0f64, 0f64);
    let mut i = 0;
    while i < order.len() {
        let s = scores[order[i]];
        let (mut gp, mut gn) = (0f64, 0f64);
        while i < order.len() && scores[order[i]] == s {
            let k = order[i];
            if y[k] {
                gp += f64::from(weight[k]);
            } else {
                gn += f64::from(weight[k]);
            }
            i += 1;
        }
        pairs += gp * (below_neg + 0.5 * gn);
        below_neg += gn;
        tot_pos += gp;
        tot_neg += gn;
    }
    if tot_pos == 0.0 || tot_neg == 0.0 {
        return f64::NAN;
    }
    pairs / (tot_pos * tot_neg)
}

/// The 2.5th and 97.5th percentiles (linear interpolation, as numpy's default).
pub(crate) fn percentile_ci(v: &mut [f64]) -> (f64, f64) {
    if v.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    v.sort_by(f64::total_cmp);
    let at = |p: f64| {
        let pos = p * (v.len() - 1) as f64;
        let lo = pos.floor() as usize;
        let hi = pos.ceil() as usize;
        v[lo] + (v[hi] - v[lo]) * (pos - lo as f64)
    };
    (at(0.025), at(0.975))
}
