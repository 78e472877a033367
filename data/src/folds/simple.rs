//! The two baseline schemes, as scikit-learn defines them: row-level `StratifiedKFold`
//! (shuffled) and `GroupKFold` by patient. They exist to be compared with the
//! triple-stratified default in `stackhive folds report`.
//! Must not: be "improved" — their known weaknesses (patient leakage, unbalanced positive
//! rates) are what the comparison shows.

use super::{Patients, SplitMix64};
use crate::isic::TrainRow;

/// Row-level stratified K-fold: positives shuffled and dealt round-robin, then negatives
/// continuing the same deal, so per-fold positive counts and sizes differ by at most one.
/// A patient's images land in several folds — the leak that motivates grouping.
pub(super) fn stratified(rows: &[TrainRow], k: u16, seed: u64, fold: &mut [i16]) {
    let mut rng = SplitMix64::new(seed);
    let mut positives = Vec::new();
    let mut negatives = Vec::new();
    for (i, r) in rows.iter().enumerate() {
        if r.is_external() {
            continue;
        }
        if r.target == 1 {
            positives.push(i);
        } else {
            negatives.push(i);
        }
    }
    rng.shuffle(&mut positives);
    rng.shuffle(&mut negatives);
    for (n, &i) in positives.iter().chain(&negatives).enumerate() {
        fold[i] = (n % k as usize) as i16;
    }
}

/// Patient-grouped K-fold as scikit-learn's `GroupKFold`: patients largest first, each to the
/// fold with the fewest rows so far. The seed only breaks ties between equal-sized patients.
pub(super) fn group(patients: &Patients, k: u16, seed: u64, fold: &mut [i16]) {
    let mut rng = SplitMix64::new(seed);
    let mut order: Vec<usize> = (0..patients.list.len()).collect();
    rng.shuffle(&mut order);
    order.sort_by_key(|&p| std::cmp::Reverse(patients.list[p].rows.len()));
    let mut sizes = vec![0usize; k as usize];
    for p in order {
        let f = (0..k as usize).min_by_key(|&f| sizes[f]).unwrap_or(0);
        sizes[f] += patients.list[p].rows.len();
        for &i in &patients.list[p].rows {
            fold[i] = f as i16;
        }
    }
}
