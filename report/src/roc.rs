//! ROC curve points for the report's ROC chart: one point per distinct score threshold, so tied
//! scores form one diagonal step (the curve whose area is the tie-aware Mann–Whitney AUC).
//! Must not: interpolate points that no threshold reaches, or drop the (0, 0) and (1, 1) ends.

/// The ROC curve of `scores` against binary `labels` (1 positive, anything else negative) as
/// (false positive rate, true positive rate) points from (0, 0) to (1, 1), at most
/// `max_points` of them (at least 2 are always kept: the two ends).
///
/// Points that lie on a straight segment between their neighbours are dropped first (this
/// loses nothing); if more than `max_points` remain, points spread evenly along the curve are
/// kept. Empty when one class is absent: there is no curve to draw.
///
/// # Panics
/// When `labels` and `scores` differ in length (a caller's bug, as in `stackhive_data::auc`).
pub fn roc_points(labels: &[u8], scores: &[f32], max_points: usize) -> Vec<(f64, f64)> {
    assert_eq!(
        labels.len(),
        scores.len(),
        "labels and scores differ in length"
    );
    let n = labels.len();
    let pos = labels.iter().filter(|&&l| l == 1).count();
    let neg = n - pos;
    if pos == 0 || neg == 0 {
        return Vec::new();
    }
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));

    // Counts (fp, tp) after each group of equal scores, in integers so the collinearity test
    // below is exact.
    let mut counts: Vec<(u64, u64)> = vec![(0, 0)];
    let (mut fp, mut tp) = (0u64, 0u64);
    let mut i = 0;
    while i < n {
        let s = scores[order[i]];
        let mut j = i;
        // `j == i` guarantees progress on NaN, which equals nothing.
        while j < n && (j == i || scores[order[j]] == s) {
            if labels[order[j]] == 1 {
                tp += 1;
            } else {
                fp += 1;
            }
            j += 1;
        }
        push_unless_collinear(&mut counts, (fp, tp));
        i = j;
    }
    let points: Vec<(f64, f64)> = counts
        .iter()
        .map(|&(f, t)| (f as f64 / neg as f64, t as f64 / pos as f64))
        .collect();
    downsample(points, max_points.max(2))
}

/// Appends `p`, first removing the last point when it lies on the segment from the one before
/// it to `p`.
fn push_unless_collinear(pts: &mut Vec<(u64, u64)>, p: (u64, u64)) {
    if pts.len() >= 2 {
        let a = pts[pts.len() - 2];
        let b = pts[pts.len() - 1];
        let cross = (b.0 as i128 - a.0 as i128) * (p.1 as i128 - a.1 as i128)
            - (b.1 as i128 - a.1 as i128) * (p.0 as i128 - a.0 as i128);
        if cross == 0 {
            pts.pop();
        }
    }
    pts.push(p);
}

/// Keeps at most `max` points spread evenly by fpr + tpr, which grows strictly along the curve
/// (each threshold adds at least one case): even spacing by index would crowd the points where
/// scores are dense and cut corners where they are sparse.
fn downsample(points: Vec<(f64, f64)>, max: usize) -> Vec<(f64, f64)> {
    if points.len() <= max {
        return points;
    }
    let mut kept = Vec::with_capacity(max);
    let mut last = usize::MAX;
    for k in 0..max {
        let target = 2.0 * k as f64 / (max - 1) as f64;
        let idx = points
            .partition_point(|p| p.0 + p.1 < target - 1e-12)
            .min(points.len() - 1);
        if idx != last {
            kept.push(points[idx]);
            last = idx;
        }
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::roc_points;

    /// Trapezoid area under a curve; equals the Mann–Whitney AUC for an undownsampled curve.
    fn area(pts: &[(f64, f64)]) -> f64 {
        pts.windows(2)
            .map(|w| (w[1].0 - w[0].0) * (w[0].1 + w[1].1) / 2.0)
            .sum()
    }

    /// Pairwise AUC, ties counting one half: the definition, O(n²).
    fn brute_auc(labels: &[u8], scores: &[f32]) -> f64 {
        let (mut wins, mut pairs) = (0.0, 0.0);
        for (i, &li) in labels.iter().enumerate() {
            for (j, &lj) in labels.iter().enumerate() {
                if li == 1 && lj != 1 {
                    pairs += 1.0;
                    if scores[i] > scores[j] {
                        wins += 1.0;
                    } else if scores[i] == scores[j] {
                        wins += 0.5;
                    }
                }
            }
        }
        wins / pairs
    }

    /// Deterministic noisy data with plenty of ties (scores rounded to 2 decimals).
    fn noisy(n: usize) -> (Vec<u8>, Vec<f32>) {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 11) as f64 / (1u64 << 53) as f64
        };
        let labels: Vec<u8> = (0..n).map(|_| u8::from(next() < 0.2)).collect();
        let scores = labels
            .iter()
            .map(|&l| ((next() + 0.35 * f64::from(l)) * 100.0).round() as f32 / 100.0)
            .collect();
        (labels, scores)
    }

    fn assert_valid(pts: &[(f64, f64)]) {
        assert_eq!(pts.first(), Some(&(0.0, 0.0)), "starts at (0, 0)");
        assert_eq!(pts.last(), Some(&(1.0, 1.0)), "ends at (1, 1)");
        for w in pts.windows(2) {
            assert!(w[1].0 >= w[0].0 && w[1].1 >= w[0].1, "not monotone: {w:?}");
        }
    }

    #[test]
    fn perfect_ties_and_mixed_groups() {
        let perfect = roc_points(&[0, 0, 1, 1], &[0.1, 0.2, 0.8, 0.9], 100);
        assert_eq!(perfect, vec![(0.0, 0.0), (0.0, 1.0), (1.0, 1.0)]);

        // All scores tied: one threshold, the diagonal.
        assert_eq!(
            roc_points(&[0, 1, 0, 1, 1], &[0.5; 5], 100),
            vec![(0.0, 0.0), (1.0, 1.0)]
        );

        // A tie between a positive and a negative is one diagonal step, not two corners.
        let mixed = roc_points(&[1, 0, 1, 0], &[0.9, 0.5, 0.5, 0.1], 100);
        assert_eq!(mixed, vec![(0.0, 0.0), (0.0, 0.5), (0.5, 1.0), (1.0, 1.0)]);
        assert_eq!(area(&mixed), 0.875);

        assert!(
            roc_points(&[1, 1], &[0.1, 0.2], 10).is_empty(),
            "one class only"
        );
    }

    #[test]
    fn area_is_the_tie_aware_auc_and_downsampling_keeps_the_shape() {
        let (labels, scores) = noisy(3_000);
        let full = roc_points(&labels, &scores, usize::MAX);
        assert_valid(&full);
        let want = brute_auc(&labels, &scores);
        assert!(
            (area(&full) - want).abs() < 1e-12,
            "{} vs {want}",
            area(&full)
        );
        assert!(full.len() > 60, "the test needs a curve worth thinning");

        for max in [2, 3, 10, 50] {
            let small = roc_points(&labels, &scores, max);
            assert!(small.len() <= max, "{} points for max {max}", small.len());
            assert_valid(&small);
            assert!(
                small.iter().all(|p| full.contains(p)),
                "only real thresholds"
            );
        }
        let fifty = roc_points(&labels, &scores, 50);
        assert!(
            (area(&fifty) - want).abs() < 0.01,
            "{} vs {want}",
            area(&fifty)
        );
        assert_eq!(
            roc_points(&labels, &scores, 0).len(),
            2,
            "ends are always kept"
        );
    }
}
