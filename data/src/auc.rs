//! Area under the ROC curve, the competition metric. Ties share their rank (Mann–Whitney U), so
//! a constant prediction scores exactly 0.5.

/// ROC AUC of `scores` against binary `labels` (0 or 1). `None` when one class is absent.
pub fn roc_auc(labels: &[u8], scores: &[f32]) -> Option<f64> {
    assert_eq!(
        labels.len(),
        scores.len(),
        "labels and scores differ in length"
    );
    let pos = labels.iter().filter(|&&l| l == 1).count();
    let neg = labels.len() - pos;
    if pos == 0 || neg == 0 {
        return None;
    }
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    // Sum of the (average) ranks of the positives.
    let mut rank_sum = 0.0f64;
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && scores[order[j + 1]] == scores[order[i]] {
            j += 1;
        }
        let avg_rank = (i + j) as f64 / 2.0 + 1.0;
        for &k in &order[i..=j] {
            if labels[k] == 1 {
                rank_sum += avg_rank;
            }
        }
        i = j + 1;
    }
    let u = rank_sum - (pos * (pos + 1)) as f64 / 2.0;
    Some(u / (pos as f64 * neg as f64))
}

#[cfg(test)]
mod tests {
    use super::roc_auc;

    #[test]
    fn perfect_inverse_constant_and_ties() {
        assert_eq!(roc_auc(&[0, 0, 1, 1], &[0.1, 0.2, 0.8, 0.9]), Some(1.0));
        assert_eq!(roc_auc(&[0, 0, 1, 1], &[0.9, 0.8, 0.2, 0.1]), Some(0.0));
        assert_eq!(roc_auc(&[0, 1, 0, 1], &[0.5; 4]), Some(0.5));
        assert_eq!(roc_auc(&[0, 1, 1], &[0.3, 0.3, 0.9]), Some(0.75));
        assert_eq!(roc_auc(&[1, 1], &[0.1, 0.2]), None);
    }
}
