//! The simulated leaderboard shake-up: split patients at random into a public share and a
//! private rest, score every method on both, and count how often trusting the public board
//! picks a method that then loses on private. This is what cost the SIIM-ISIC team its medal:
//! the ensemble best on the public board was not the robust one.
//! Must not: split rows of one patient across the two boards.

use rand::seq::SliceRandom;
use rayon::prelude::*;

use crate::config::{Config, Method};
use crate::kernels::Sorted;
use crate::outcome::{MethodShakeUp, ShakeUp, ShakeUpOn};
use crate::seeds::{rng, Tag};

/// At most this many per-repeat deltas are kept per method, enough for a histogram.
pub const SHAKEUP_DELTAS_KEPT: usize = 200;

/// What the split is made on: one prediction vector per method over the same rows.
pub(crate) struct Board<'a> {
    pub on: ShakeUpOn,
    pub predictions: Vec<&'a [f32]>,
    pub labels: &'a [u8],
    pub patient: &'a [u32],
    pub n_patients: usize,
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len().max(1) as f64
}

fn sd(v: &[f64]) -> f64 {
    if v.len() < 2 {
        return 0.0;
    }
    let m = mean(v);
    (v.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / (v.len() - 1) as f64).sqrt()
}

/// First index of the largest value.
fn argmax(v: &[f64]) -> usize {
    (0..v.len()).fold(0, |best, i| if v[i] > v[best] { i } else { best })
}

pub(crate) fn shakeup(methods: &[Method], board: Board<'_>, config: &Config) -> ShakeUp {
    let sorted: Vec<Sorted> = board
        .predictions
        .par_iter()
        .map(|p| Sorted::new(p, board.labels, board.patient))
        .collect();
    let public_count = ((config.public_fraction * board.n_patients as f64).round() as usize)
        .clamp(1, board.n_patients.saturating_sub(1).max(1));
    // Per repeat, per method: (public AUC, private AUC); `None` when a board lacks a class.
    let repeats: Vec<Option<Vec<(f64, f64)>>> = (0..config.shakeup_repeats)
        .into_par_iter()
        .map(|r| {
            let mut order: Vec<usize> = (0..board.n_patients).collect();
            order.shuffle(&mut rng(config.seed, Tag::ShakeUp, r, 0));
            let mut public = vec![false; board.n_patients];
            for &p in &order[..public_count] {
                public[p] = true;
            }
            sorted
                .iter()
                .map(|s| {
                    let [pub_auc, priv_auc] = s.weighted_aucs(|p| {
                        if public[p as usize] {
                            [1.0, 0.0]
                        } else {
                            [0.0, 1.0]
                        }
                    });
                    Some((pub_auc?, priv_auc?))
                })
                .collect()
        })
        .collect();
    let valid: Vec<Vec<(f64, f64)>> = repeats.into_iter().flatten().collect();
    let median = methods
        .iter()
        .position(|&m| m == Method::Median)
        .unwrap_or(0);
    let (mut loses, mut below_median) = (0usize, 0usize);
    for scores in &valid {
        let public: Vec<f64> = scores.iter().map(|s| s.0).collect();
        let private: Vec<f64> = scores.iter().map(|s| s.1).collect();
        let chosen = argmax(&public);
        loses += (private[chosen] < private[argmax(&private)]) as usize;
        below_median += (private[chosen] < private[median]) as usize;
    }
    let share = |count: usize| count as f64 / valid.len().max(1) as f64;
    ShakeUp {
        on: board.on,
        repeats: valid.len(),
        public_fraction: config.public_fraction,
        methods: methods
            .iter()
            .enumerate()
            .map(|(i, &method)| {
                let public: Vec<f64> = valid.iter().map(|s| s[i].0).collect();
                let private: Vec<f64> = valid.iter().map(|s| s[i].1).collect();
                let deltas: Vec<f64> = valid.iter().map(|s| s[i].1 - s[i].0).collect();
                MethodShakeUp {
                    method,
                    mean_public: mean(&public),
                    mean_private: mean(&private),
                    mean_delta: mean(&deltas),
                    sd_delta: sd(&deltas),
                    deltas: deltas.into_iter().take(SHAKEUP_DELTAS_KEPT).collect(),
                }
            })
            .collect(),
        public_best_loses: share(loses),
        public_best_vs_median_loses: share(below_median),
    }
}
