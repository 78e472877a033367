//! Triple-stratified K-fold, the default scheme.
//!
//! Chris Deotte's scheme for SIIM-ISIC 2020, used by most top solutions (explained in
//! https://www.kaggle.com/c/siim-isic-melanoma-classification/discussion/165526 and the
//! notebook https://www.kaggle.com/code/cdeotte/triple-stratified-kfold-with-tfrecords):
//! (1) every patient's images are in one fold, because a model that has seen a patient's other
//! moles scores them too well; (2) each fold gets the same share of malignant images; (3) each
//! fold gets the same mix of patients with few and with many images, since a patient's image
//! count is itself predictive in that data. He built 15 TFRecord shards balanced on the three
//! axes and ran KFold over the shards; here the same three goals are met directly by a greedy
//! assignment of patients to k folds, which keeps sizes and positive counts tight on
//! long-tailed data and works for any k:
//!
//! * patients are bucketed by images-per-patient quantile;
//! * patients with positives go first, most positives first (largest first within equal
//!   counts: the LPT rule, so the final spread of positives per fold is at most one patient's
//!   positives and in practice one image), each to the fold with the fewest positives, then the
//!   fewest patients of its size bucket, then the fewest rows;
//! * then the rest, bucket by bucket from the largest patients down, each to the fold with the
//!   fewest patients of its bucket and, among those, the fewest rows — so every fold gets the
//!   same number of patients of each size, and the small patients at the end even out rows.
//!
//! The seed shuffles patients before the (stable) sorts, so it decides among equal patients.
//! Must not: ever place one patient in two folds.

use std::cmp::Reverse;
use std::collections::HashMap;

use super::{Patients, SplitMix64};

/// At most this many images-per-patient buckets (quintiles).
const MAX_BUCKETS: usize = 5;

pub(super) fn assign(patients: &Patients, k: u16, seed: u64, fold: &mut [i16]) {
    let k = k as usize;
    let list = &patients.list;
    let sizes: Vec<usize> = list.iter().map(|p| p.rows.len()).collect();
    // Enough patients per bucket that each fold gets at least two of every bucket.
    let n_buckets = (list.len() / (2 * k)).clamp(1, MAX_BUCKETS);
    let bucket = size_buckets(&sizes, n_buckets);

    let mut rng = SplitMix64::new(seed);
    let mut order: Vec<usize> = (0..list.len()).collect();
    rng.shuffle(&mut order);
    // A fixed random preference among folds for exact ties, so fold 0 is not always first.
    let mut tie: Vec<usize> = (0..k).collect();
    rng.shuffle(&mut tie);

    let (mut positive, mut negative): (Vec<usize>, Vec<usize>) =
        order.into_iter().partition(|&p| list[p].positives > 0);
    positive.sort_by_key(|&p| Reverse((list[p].positives, sizes[p])));
    negative.sort_by_key(|&p| Reverse(sizes[p]));

    let mut positives = vec![0usize; k];
    let mut rows = vec![0usize; k];
    let mut count = vec![0usize; k];
    let mut in_bucket = vec![vec![0usize; k]; n_buckets];
    let mut assigned = vec![0usize; list.len()];
    for p in positive {
        let b = bucket[p];
        let f = (0..k)
            .min_by_key(|&f| (positives[f], in_bucket[b][f], rows[f], tie[f]))
            .unwrap_or(0);
        positives[f] += list[p].positives;
        count[f] += 1;
        rows[f] += sizes[p];
        in_bucket[b][f] += 1;
        assigned[p] = f;
    }
    for p in negative {
        let b = bucket[p];
        let f = (0..k)
            .min_by_key(|&f| (rows[f], count[f], tie[f]))
            .unwrap_or(0);
        count[f] += 1;
        rows[f] += sizes[p];
        in_bucket[b][f] += 1;
        assigned[p] = f;
    }

    // Interchangeable patients: same positive count and same size bucket.
    let mut classes: HashMap<(usize, usize), usize> = HashMap::new();
    let class: Vec<usize> = (0..list.len())
        .map(|p| {
            let next = classes.len();
            *classes.entry((list[p].positives, bucket[p])).or_insert(next)
        })
        .collect();
    balance_rows(&class, classes.len(), &sizes, &mut assigned, &mut rows);

    for (p, patient) in list.iter().enumerate() {
        for &i in &patient.rows {
            fold[i] = assigned[p] as i16;
        }
    }
}

/// Evens out fold sizes left uneven by the greedy pass (its bucket-count rule takes
/// precedence over rows) by swapping interchangeable patients between a larger and a smaller
/// fold. A swap leaves every fold's positives and per-bucket patient counts unchanged, so it
/// can only improve the split; each applied swap lowers the sum of squared fold sizes, so the
/// loop ends.
fn balance_rows(
    class: &[usize],
    n_classes: usize,
    sizes: &[usize],
    assigned: &mut [usize],
    rows: &mut [usize],
) {
    let k = rows.len();
    // members[f][c]: (size, patient) sorted, the patients of class c in fold f.
    let mut members = vec![vec![Vec::<(usize, usize)>::new(); n_classes]; k];
    for (p, &f) in assigned.iter().enumerate() {
        members[f][class[p]].push((sizes[p], p));
    }
    for fold in &mut members {
        for list in fold {
            list.sort_unstable();
        }
    }
    loop {
        let mut pairs: Vec<(usize, usize)> = (0..k)
            .flat_map(|x| (0..k).map(move |y| (x, y)))
            .filter(|&(x, y)| rows[x] >= rows[y] + 2)
            .collect();
        // Widest gap first; fold indices break ties so the order is deterministic.
        pairs.sort_by_key(|&(x, y)| (Reverse(rows[x] - rows[y]), x, y));
        let Some((x, y, c, a, b)) = pairs.iter().find_map(|&(x, y)| {
            best_swap(&members[x], &members[y], rows[x] - rows[y]).map(|(c, a, b)| (x, y, c, a, b))
        }) else {
            break;
        };
        let (size_a, pa) = members[x][c].remove(a);
        let (size_b, pb) = members[y][c].remove(b);
        insert_sorted(&mut members[y][c], (size_a, pa));
        insert_sorted(&mut members[x][c], (size_b, pb));
        assigned[pa] = y;
        assigned[pb] = x;
        rows[x] = rows[x] - size_a + size_b;
        rows[y] = rows[y] - size_b + size_a;
    }
}

fn insert_sorted(list: &mut Vec<(usize, usize)>, item: (usize, usize)) {
    let at = list.partition_point(|&e| e < item);
    list.insert(at, item);
}

/// The swap between fold x (larger by `gap` rows) and fold y that brings them closest to
/// equal: patients `a` of x and `b` of y of one class with `size_a - size_b` in `1..gap`,
/// nearest `gap / 2`. Returns (class, index in x's list, index in y's list).
fn best_swap(
    x: &[Vec<(usize, usize)>],
    y: &[Vec<(usize, usize)>],
    gap: usize,
) -> Option<(usize, usize, usize)> {
    let mut best: Option<(usize, (usize, usize, usize))> = None;
    for (c, (xs, ys)) in x.iter().zip(y).enumerate() {
        if ys.is_empty() {
            continue;
        }
        let mut last_size = None;
        for (ia, &(size_a, _)) in xs.iter().enumerate() {
            if last_size == Some(size_a) || size_a < 2 {
                last_size = Some(size_a);
                continue;
            }
            last_size = Some(size_a);
            // Ideal partner: size_a - gap / 2 (rounded either way).
            let ideal = size_a.saturating_sub(gap / 2);
            let at = ys.partition_point(|&(s, _)| s < ideal);
            for ib in [at.wrapping_sub(1), at, at + 1] {
                let Some(&(size_b, _)) = ys.get(ib) else { continue };
                if size_b >= size_a || size_a - size_b >= gap {
                    continue;
                }
                let score = gap.abs_diff(2 * (size_a - size_b));
                if best.is_none_or(|(s, _)| score < s) {
                    best = Some((score, (c, ia, ib)));
                    if score == 0 {
                        return Some((c, ia, ib));
                    }
                }
            }
        }
    }
    best.map(|(_, swap)| swap)
}

/// Bucket of each patient by images-per-patient quantile: `0` holds the smallest patients.
/// Patients of equal size always share a bucket, so with heavy ties a bucket may be empty.
fn size_buckets(sizes: &[usize], n_buckets: usize) -> Vec<usize> {
    let mut sorted = sizes.to_vec();
    sorted.sort_unstable();
    let cuts: Vec<usize> = (1..n_buckets)
        .map(|j| sorted[j * sorted.len() / n_buckets])
        .collect();
    sizes
        .iter()
        .map(|&s| cuts.iter().filter(|&&c| s >= c).count())
        .collect()
}
