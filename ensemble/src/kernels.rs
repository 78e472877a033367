//! Fast exact AUC kernels for the hot loops, and rank normalisation. All use the Mann–Whitney
//! definition of `stackhive_data::auc::roc_auc` (ties count one half) and agree with it
//! exactly; they exist because the greedy selection scores hundreds of thousands of candidate
//! vectors, and the bootstrap and shake-up rescore every method thousands of times.
//! Must not: be used where a one-off AUC will do; call `roc_auc` there.

/// Order-preserving bits of a non-negative float: for `v >= 0` the IEEE bit pattern sorts like
/// the value. Adding `0.0` turns `-0.0` into `+0.0`.
#[inline]
fn bits(v: f32) -> u32 {
    debug_assert!(v >= 0.0, "kernels need non-negative scores, found {v}");
    (v + 0.0).to_bits()
}

/// Reusable buffers of `sum_auc`, one per worker thread.
#[derive(Default)]
pub(crate) struct Scratch {
    keys: Vec<u32>,
    tmp: Vec<u32>,
}

const DIGIT: u32 = 11;
const BUCKETS: usize = 1 << DIGIT;

/// LSD radix sort of 32-bit keys in three 11-bit passes, given the three digit histograms:
/// 128 µs for 27k keys against 292 µs for `sort_unstable` (the whole AUC, measured), which is
/// what makes greedy selection affordable.
fn radix_sort(keys: &mut Vec<u32>, tmp: &mut Vec<u32>, hist: &mut [[u32; BUCKETS]; 3]) {
    tmp.resize(keys.len(), 0);
    for (pass, h) in hist.iter_mut().enumerate() {
        let shift = pass as u32 * DIGIT;
        let Some(&first) = keys.first() else { return };
        // One bucket holds everything: this digit is constant and the pass would be a copy.
        if h[((first >> shift) & 0x7ff) as usize] as usize == keys.len() {
            continue;
        }
        let mut total = 0;
        for c in h.iter_mut() {
            let count = *c;
            *c = total;
            total += count;
        }
        for &k in keys.iter() {
            let d = ((k >> shift) & 0x7ff) as usize;
            tmp[h[d] as usize] = k;
            h[d] += 1;
        }
        std::mem::swap(keys, tmp);
    }
}

/// AUC of `sum` (plus `add` when given) against `labels`; the scores must be non-negative.
/// Positive scaling does not change an AUC, so the greedy step scores `sum + candidate`
/// instead of the average. Returns 0.5 when a class is absent (callers guarantee both).
pub(crate) fn sum_auc(sum: &[f32], add: Option<&[f32]>, labels: &[u8], s: &mut Scratch) -> f64 {
    s.keys.clear();
    // The label rides in the lowest bit: equal scores then sort negatives first, which is
    // what the tie rule of the scan below relies on.
    match add {
        Some(add) => s.keys.extend(
            sum.iter()
                .zip(add)
                .zip(labels)
                .map(|((a, b), &l)| (bits(a + b) << 1) | l as u32),
        ),
        None => s.keys.extend(
            sum.iter()
                .zip(labels)
                .map(|(a, &l)| (bits(*a) << 1) | l as u32),
        ),
    }
    // Counting all three digits in one pass over the keys was faster than counting while
    // building them (measured: 128 against 138 µs at 27k rows).
    let mut hist = [[0u32; BUCKETS]; 3];
    for &k in &s.keys {
        hist[0][(k & 0x7ff) as usize] += 1;
        hist[1][((k >> DIGIT) & 0x7ff) as usize] += 1;
        hist[2][(k >> (2 * DIGIT)) as usize] += 1;
    }
    radix_sort(&mut s.keys, &mut s.tmp, &mut hist);
    // Twice the Mann–Whitney U, so that ties (one half each) stay integers.
    let (mut u2, mut pos, mut neg_before, mut neg_group) = (0u64, 0u64, 0u64, 0u64);
    let mut last = u32::MAX;
    for &k in &s.keys {
        let score = k >> 1;
        if score != last {
            neg_before += neg_group;
            neg_group = 0;
            last = score;
        }
        if k & 1 == 0 {
            neg_group += 1;
        } else {
            pos += 1;
            u2 += 2 * neg_before + neg_group;
        }
    }
    let neg = s.keys.len() as u64 - pos;
    if pos == 0 || neg == 0 {
        return 0.5;
    }
    u2 as f64 / (2 * pos * neg) as f64
}

/// Row order by score with the label in the key (negatives first among ties), as 64-bit keys:
/// 31 score bits, the label, and the row.
fn sorted_keys(values: &[f32], labels: &[u8]) -> Vec<u64> {
    let mut keys: Vec<u64> = values
        .iter()
        .zip(labels)
        .enumerate()
        .map(|(row, (v, &l))| ((bits(*v) as u64) << 33) | ((l as u64) << 32) | row as u64)
        .collect();
    keys.sort_unstable();
    keys
}

/// One model's Mann–Whitney counts split by the folds of the positive and the negative row:
/// from one sort it gives the exact AUC on every union of folds (all rows, all but one fold,
/// the random halves of fold bagging, single folds).
pub(crate) struct FoldPairs {
    k: usize,
    /// `u2[a * k + b]`: twice the U of positives in fold `a` against negatives in fold `b`.
    u2: Vec<u64>,
    pos: Vec<u64>,
    neg: Vec<u64>,
}

impl FoldPairs {
    pub fn new(values: &[f32], labels: &[u8], folds: &[u16], k: usize) -> Self {
        let mut u2 = vec![0u64; k * k];
        let (mut pos, mut neg) = (vec![0u64; k], vec![0u64; k]);
        let (mut neg_before, mut neg_group) = (vec![0u64; k], vec![0u64; k]);
        let mut group_has_neg = false;
        let mut last = u64::MAX;
        for key in sorted_keys(values, labels) {
            let score = key >> 33;
            if score != last {
                if group_has_neg {
                    for (b, g) in neg_before.iter_mut().zip(neg_group.iter_mut()) {
                        *b += *g;
                        *g = 0;
                    }
                    group_has_neg = false;
                }
                last = score;
            }
            let fold = folds[(key & 0xffff_ffff) as usize] as usize;
            if (key >> 32) & 1 == 0 {
                neg[fold] += 1;
                neg_group[fold] += 1;
                group_has_neg = true;
            } else {
                pos[fold] += 1;
                let row = &mut u2[fold * k..(fold + 1) * k];
                for b in 0..k {
                    row[b] += 2 * neg_before[b] + neg_group[b];
                }
            }
        }
        FoldPairs { k, u2, pos, neg }
    }

    /// AUC on the rows of the folds where `mask` is true; `None` when a class is absent.
    pub fn auc(&self, mask: &[bool]) -> Option<f64> {
        let (mut u2, mut pos, mut neg) = (0u64, 0u64, 0u64);
        for a in (0..self.k).filter(|&a| mask[a]) {
            pos += self.pos[a];
            neg += self.neg[a];
            for b in (0..self.k).filter(|&b| mask[b]) {
                u2 += self.u2[a * self.k + b];
            }
        }
        (pos > 0 && neg > 0).then(|| u2 as f64 / (2 * pos * neg) as f64)
    }
}

/// A score vector sorted once, for AUCs under many row weightings (bootstrap multiplicities,
/// public/private masks). Weights are per patient, so the patient is kept instead of the row.
pub(crate) struct Sorted {
    patient: Vec<u32>,
    label: Vec<u8>,
    /// True where a new run of equal scores starts.
    starts: Vec<bool>,
}

impl Sorted {
    pub fn new(values: &[f32], labels: &[u8], patient: &[u32]) -> Self {
        let keys = sorted_keys(values, labels);
        let mut starts = Vec::with_capacity(keys.len());
        let mut last = u64::MAX;
        for &key in &keys {
            starts.push(key >> 33 != last);
            last = key >> 33;
        }
        Sorted {
            patient: keys
                .iter()
                .map(|&k| patient[(k & 0xffff_ffff) as usize])
                .collect(),
            label: keys.iter().map(|&k| ((k >> 32) & 1) as u8).collect(),
            starts,
        }
    }

    /// AUCs under `M` weightings at once; `weight(patient)` gives each weighting's weight of
    /// that patient's rows. `None` where a weighting leaves a class without weight.
    pub fn weighted_aucs<const M: usize>(
        &self,
        weight: impl Fn(u32) -> [f64; M],
    ) -> [Option<f64>; M] {
        let mut u = [0.0f64; M];
        let mut wpos = [0.0f64; M];
        let mut wneg = [0.0f64; M];
        let mut neg_group = [0.0f64; M];
        for i in 0..self.label.len() {
            if self.starts[i] {
                for j in 0..M {
                    wneg[j] += neg_group[j];
                    neg_group[j] = 0.0;
                }
            }
            let w = weight(self.patient[i]);
            if self.label[i] == 0 {
                for j in 0..M {
                    neg_group[j] += w[j];
                }
            } else {
                for j in 0..M {
                    // `wneg` holds the negatives strictly below; the group's count one half.
                    u[j] += w[j] * (wneg[j] + 0.5 * neg_group[j]);
                    wpos[j] += w[j];
                }
            }
        }
        std::array::from_fn(|j| {
            let neg = wneg[j] + neg_group[j];
            (wpos[j] > 0.0 && neg > 0.0).then(|| u[j] / (wpos[j] * neg))
        })
    }
}

/// Normalised ranks in [0, 1] (ties share their average rank); a single value maps to 0.5.
pub(crate) fn rank_normalise(values: &[f32]) -> Vec<f32> {
    let n = values.len();
    let mut out = vec![0.5f32; n];
    if n < 2 {
        return out;
    }
    let mut order: Vec<u64> = values
        .iter()
        .enumerate()
        .map(|(row, v)| ((bits(*v) as u64) << 32) | row as u64)
        .collect();
    order.sort_unstable();
    let scale = 1.0 / (n - 1) as f64;
    let mut i = 0;
    while i < n {
        let mut j = i + 1;
        while j < n && order[j] >> 32 == order[i] >> 32 {
            j += 1;
        }
        let rank = ((i + j - 1) as f64 / 2.0 * scale) as f32;
        for key in &order[i..j] {
            out[(key & 0xffff_ffff) as usize] = rank;
        }
        i = j;
    }
    out
}

#[cfg(test)]
mod tests {
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;
    use stackhive_data::auc::roc_auc;

    use super::*;

    /// Every kernel against `roc_auc`, on scores with many ties (coarse values) and without.
    #[test]
    fn kernels_agree_with_roc_auc_including_ties() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        for coarse in [true, false] {
            let n = 3000;
            let k = 4;
            let labels: Vec<u8> = (0..n).map(|_| rng.random_bool(0.2) as u8).collect();
            let folds: Vec<u16> = (0..n).map(|_| rng.random_range(0..k as u16)).collect();
            let patient: Vec<u32> = (0..n as u32).map(|r| r / 3).collect();
            let score = |rng: &mut ChaCha8Rng, l: u8| {
                let v: f32 = rng.random::<f32>() * 0.7 + l as f32 * 0.3;
                if coarse {
                    (v * 10.0).round() / 10.0
                } else {
                    v
                }
            };
            let a: Vec<f32> = labels.iter().map(|&l| score(&mut rng, l)).collect();
            let b: Vec<f32> = labels.iter().map(|&l| score(&mut rng, l)).collect();
            let ab: Vec<f32> = a.iter().zip(&b).map(|(x, y)| x + y).collect();

            let mut s = Scratch::default();
            assert_eq!(
                sum_auc(&a, Some(&b), &labels, &mut s),
                roc_auc(&labels, &ab).unwrap()
            );
            assert_eq!(
                sum_auc(&a, None, &labels, &mut s),
                roc_auc(&labels, &a).unwrap()
            );

            let pairs = FoldPairs::new(&a, &labels, &folds, k);
            for mask in [
                [true; 4],
                [true, false, true, true],
                [false, true, false, false],
            ] {
                let rows: Vec<usize> = (0..n).filter(|&r| mask[folds[r] as usize]).collect();
                let l: Vec<u8> = rows.iter().map(|&r| labels[r]).collect();
                let v: Vec<f32> = rows.iter().map(|&r| a[r]).collect();
                assert_eq!(pairs.auc(&mask), roc_auc(&l, &v), "mask {mask:?}");
            }

            // Integer weights equal repeating rows; a 0/1 mask equals dropping rows.
            let sorted = Sorted::new(&a, &labels, &patient);
            let [all, odd] = sorted.weighted_aucs(|p| [1.0, (p % 2) as f64 * 2.0]);
            assert!((all.unwrap() - roc_auc(&labels, &a).unwrap()).abs() < 1e-12);
            let rows: Vec<usize> = (0..n).filter(|&r| patient[r] % 2 == 1).collect();
            let l: Vec<u8> = rows.iter().map(|&r| labels[r]).collect();
            let v: Vec<f32> = rows.iter().map(|&r| a[r]).collect();
            assert!((odd.unwrap() - roc_auc(&l, &v).unwrap()).abs() < 1e-12);

            let ranks = rank_normalise(&a);
            assert_eq!(roc_auc(&labels, &ranks), roc_auc(&labels, &a));
            assert!(ranks.iter().all(|r| (0.0..=1.0).contains(r)));
        }
    }
}
