//! Host-side sparse selection: BatchTopK over a whole batch and TopK per row.
//!
//! candle has no top-k op; the scores of one batch (`[batch, n_latents]`, a few hundred thousand
//! values at most) are copied to the host, selected there, and the choice goes back as a 0/1 mask
//! that multiplies the activations (so gradients flow through the kept entries only).

/// BatchTopK: the `budget` largest positive scores of a flattened `[rows, cols]` batch.
///
/// Returns the 0/1 mask (same length as `scores`) and the smallest kept score (`None` when
/// nothing is kept). Exactly `budget` entries are kept when at least `budget` scores are
/// positive; otherwise every positive score is kept. Ties at the cutoff are broken by position
/// (lower flat index first), so the count is exact and the choice deterministic. Zero, negative
/// and NaN scores are never kept.
pub(crate) fn batch_topk(scores: &[f32], budget: usize) -> (Vec<f32>, Option<f32>) {
    let mut mask = vec![0f32; scores.len()];
    let positive: Vec<usize> = (0..scores.len()).filter(|&i| scores[i] > 0.0).collect();
    if budget == 0 || positive.is_empty() {
        return (mask, None);
    }
    if positive.len() <= budget {
        let mut min = f32::INFINITY;
        for &i in &positive {
            mask[i] = 1.0;
            min = min.min(scores[i]);
        }
        return (mask, Some(min));
    }
    let mut vals: Vec<f32> = positive.iter().map(|&i| scores[i]).collect();
    // Descending order: the element at `budget - 1` is the cutoff.
    let (_, cutoff, _) = vals.select_nth_unstable_by(budget - 1, |a, b| b.total_cmp(a));
    let cutoff = *cutoff;
    let above = positive.iter().filter(|&&i| scores[i] > cutoff).count();
    let mut ties_left = budget - above;
    for &i in &positive {
        if scores[i] > cutoff {
            mask[i] = 1.0;
        } else if scores[i] == cutoff && ties_left > 0 {
            mask[i] = 1.0;
            ties_left -= 1;
        }
    }
    (mask, Some(cutoff))
}

/// TopK per row of a flattened `[rows, cols]` matrix: the `k` largest positive scores of each
/// row, among the columns where `allowed` is true (all when `None`); ties broken by column.
pub(crate) fn topk_rows(
    scores: &[f32],
    cols: usize,
    k: usize,
    allowed: Option<&[bool]>,
) -> Vec<f32> {
    let mut mask = vec![0f32; scores.len()];
    if cols == 0 || k == 0 {
        return mask;
    }
    let mut cand: Vec<usize> = Vec::with_capacity(cols);
    for (r, row) in scores.chunks(cols).enumerate() {
        cand.clear();
        cand.extend((0..cols).filter(|&j| row[j] > 0.0 && allowed.is_none_or(|a| a[j])));
        if cand.len() > k {
            // Stable order by (score desc, column asc): a total order, so ties go to the lower column.
            cand.select_nth_unstable_by(k - 1, |&a, &b| row[b].total_cmp(&row[a]).then(a.cmp(&b)));
            cand.truncate(k);
        }
        for &j in &cand {
            mask[r * cols + j] = 1.0;
        }
    }
    mask
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_topk_keeps_exactly_the_budget() {
        // 4 rows x 5 latents, all scores distinct and positive: k = 2 per row keeps 8.
        let scores: Vec<f32> = (0..20).map(|i| ((i * 7) % 20) as f32 + 1.0).collect();
        let (mask, min) = batch_topk(&scores, 8);
        assert_eq!(mask.iter().filter(|&&m| m == 1.0).count(), 8);
        // The kept ones are the 8 largest values, 13..=20; the cutoff is 13.
        for (s, m) in scores.iter().zip(&mask) {
            assert_eq!(*m == 1.0, *s >= 13.0, "score {s}");
        }
        assert_eq!(min, Some(13.0));
        // Rows may keep different counts: BatchTopK is over the batch, not per row.
        let per_row: Vec<usize> = mask
            .chunks(5)
            .map(|r| r.iter().filter(|&&m| m == 1.0).count())
            .collect();
        assert_eq!(per_row.iter().sum::<usize>(), 8);
    }

    #[test]
    fn batch_topk_breaks_ties_by_position_and_skips_non_positive() {
        // Six entries tie at 1.0; a budget of 4 after the single 3.0 keeps the first three ties.
        let scores = [1.0, 0.0, 1.0, 3.0, 1.0, -2.0, 1.0, 1.0, f32::NAN, 1.0];
        let (mask, min) = batch_topk(&scores, 4);
        assert_eq!(mask, vec![1., 0., 1., 1., 1., 0., 0., 0., 0., 0.]);
        assert_eq!(min, Some(1.0));
        // Fewer positive scores than the budget: all positive ones, nothing else.
        let (mask, min) = batch_topk(&[0.5, 0.0, -1.0, 2.0], 3);
        assert_eq!(mask, vec![1., 0., 0., 1.]);
        assert_eq!(min, Some(0.5));
        let (mask, min) = batch_topk(&[0.0, -1.0], 1);
        assert_eq!(mask, vec![0., 0.]);
        assert_eq!(min, None);
    }

    #[test]
    fn topk_rows_respects_k_ties_and_allowed_columns() {
        let scores = [3.0, 1.0, 2.0, 2.0, /* row 2 */ 0.0, 5.0, 5.0, 5.0];
        let mask = topk_rows(&scores, 4, 2, None);
        assert_eq!(mask, vec![1., 0., 1., 0., 0., 1., 1., 0.]);
        let allowed = [false, true, true, true];
        let mask = topk_rows(&scores, 4, 2, Some(&allowed));
        assert_eq!(mask, vec![0., 0., 1., 1., 0., 1., 1., 0.]);
    }
}
