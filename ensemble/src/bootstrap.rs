//! Patient bootstrap of the nested AUCs: each resample draws patients with replacement and
//! weights every row by its patient's multiplicity, so a patient's rows always go in or out
//! together (rows of one patient are correlated; resampling rows would understate the noise).
//! The same resamples serve every method, which makes the gains over the median paired.
//! Must not: resample rows, or draw different resamples for different methods.

use rand::Rng;
use rayon::prelude::*;

use crate::kernels::Sorted;
use crate::seeds::{rng, Tag};

/// How many times each patient is drawn in one resample of `n_patients` patients.
pub(crate) fn multiplicities(rng: &mut impl Rng, n_patients: usize) -> Vec<u32> {
    let mut mult = vec![0u32; n_patients];
    for _ in 0..n_patients {
        mult[rng.random_range(0..n_patients)] += 1;
    }
    mult
}

/// AUC of each scored vector under each resample: `[vector][resample]`, `None` where a
/// resample left a class out.
pub(crate) fn resample_aucs(
    sorted: &[Sorted],
    n_patients: usize,
    resamples: usize,
    seed: u64,
) -> Vec<Vec<Option<f64>>> {
    let by_resample: Vec<Vec<Option<f64>>> = (0..resamples)
        .into_par_iter()
        .map(|b| {
            let mult = multiplicities(&mut rng(seed, Tag::Bootstrap, b, 0), n_patients);
            sorted
                .iter()
                .map(|s| s.weighted_aucs(|p| [mult[p as usize] as f64])[0])
                .collect()
        })
        .collect();
    (0..sorted.len())
        .map(|v| by_resample.iter().map(|r| r[v]).collect())
        .collect()
}

/// The percentile interval holding `confidence` of `values`, by linear interpolation between
/// order statistics; `None` without values.
pub(crate) fn interval(values: impl Iterator<Item = f64>, confidence: f64) -> Option<(f64, f64)> {
    let mut v: Vec<f64> = values.collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let at = |q: f64| {
        let pos = q * (v.len() - 1) as f64;
        let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
        v[lo] + (v[hi] - v[lo]) * (pos - lo as f64)
    };
    let tail = (1.0 - confidence) / 2.0;
    Some((at(tail), at(1.0 - tail)))
}

/// Interval of `a`'s AUC, and of `a − reference`, over the resamples where both are defined.
pub(crate) fn paired(
    a: &[Option<f64>],
    reference: &[Option<f64>],
    confidence: f64,
) -> Option<(f64, f64)> {
    interval(
        a.iter()
            .zip(reference)
            .filter_map(|(x, r)| Some((*x)? - (*r)?)),
        confidence,
    )
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    use super::*;

    /// Resamples draw patients: multiplicities add up to the patient count, and when half the
    /// rows belong to one patient the interval is far wider than with the same rows spread
    /// over separate patients; resampling rows could not tell the two apart.
    #[test]
    fn bootstrap_resamples_whole_patients() {
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        let mult = multiplicities(&mut rng, 500);
        assert_eq!(mult.iter().sum::<u32>(), 500);

        let n = 2000;
        let labels: Vec<u8> = (0..n).map(|i| (i % 4 == 0) as u8).collect();
        // The first half of the rows is barely separable, the second half well separable.
        let scores: Vec<f32> = (0..n)
            .map(|i| {
                let strength = if i < n / 2 { 0.05 } else { 0.6 };
                (rng.random::<f32>() * (1.0 - strength) + labels[i] as f32 * strength)
                    .clamp(0.0, 1.0)
            })
            .collect();
        let separate: Vec<u32> = (0..n as u32).collect();
        let half = n as u32 / 2;
        let one_big: Vec<u32> = (0..n as u32)
            .map(|i| if i < half { 0 } else { i - half + 1 })
            .collect();
        let width = |patients: &[u32], count: usize| {
            let sorted = Sorted::new(&scores, &labels, patients);
            let aucs = resample_aucs(&[sorted], count, 400, 5);
            let (lo, hi) = interval(aucs[0].iter().flatten().copied(), 0.95).unwrap();
            hi - lo
        };
        let (w_separate, w_big) = (width(&separate, n), width(&one_big, n / 2 + 1));
        assert!(
            w_big > 3.0 * w_separate,
            "one big patient {w_big:.4}, separate {w_separate:.4}"
        );
    }
}
