//! Ensemble selection: greedy forward selection with replacement (Caruana, Niculescu-Mizil,
//! Crew & Ksikes 2004, "Ensemble selection from libraries of models", ICML), bagged over
//! random subsets of the candidate pool, and the fold-bagged variant that selects each bag on
//! a random half of the folds (the SIIM-ISIC teams' "many ensembles over fold splits").
//! Predictions are averaged in raw probability space, as in the paper: the candidate pool is
//! one task's calibrated probabilities, and raw averaging keeps the running sum incremental.
//! Must not: score on rows outside the fit it is given (see `select.rs`).

use rand::seq::index::sample;
use rayon::prelude::*;
use stackhive_data::auc::roc_auc;

use crate::blend::{Blend, Rows};
use crate::kernels::{sum_auc, Scratch};
use crate::seeds::{rng, Tag};
use crate::select::{Fit, Shared};

/// Greedy selection with replacement over `cands` on `labels`, starting from `cands[init]`;
/// returns how often each candidate was chosen in the best state seen. Starting from the best
/// single candidate and keeping the best state makes the result's AUC on these rows at least
/// that candidate's (the "never worse than the best model" property of the paper).
pub(crate) fn greedy(cands: &[&[f32]], labels: &[u8], init: usize, steps: usize) -> Vec<u32> {
    let mut counts = vec![0u32; cands.len()];
    counts[init] = 1;
    let mut sum = cands[init].to_vec();
    let mut best_auc = sum_auc(&sum, None, labels, &mut Scratch::default());
    let mut best = counts.clone();
    for _ in 0..steps {
        // The hot loop: one exact AUC (a radix sort) per candidate, in parallel. Ties go to
        // the lowest index so that the thread schedule cannot change the result.
        let (auc, c) = (0..cands.len())
            .into_par_iter()
            .map_init(Scratch::default, |s, c| {
                (sum_auc(&sum, Some(cands[c]), labels, s), c)
            })
            .reduce(
                || (f64::NEG_INFINITY, usize::MAX),
                |a, b| {
                    if b.0 > a.0 || (b.0 == a.0 && b.1 < a.1) {
                        b
                    } else {
                        a
                    }
                },
            );
        for (s, v) in sum.iter_mut().zip(cands[c]) {
            *s += v;
        }
        counts[c] += 1;
        if auc > best_auc {
            best_auc = auc;
            best = counts.clone();
        }
    }
    best
}

/// How many pool models one bag may choose from.
fn bag_size(shared: &Shared<'_>, pool: usize) -> usize {
    ((shared.config.caruana_bag_fraction * pool as f64).round() as usize).clamp(1, pool)
}

/// Adds one bag's counts, normalised to weights summing to `1 / bags`, into `weights`.
fn accumulate(weights: &mut [f64], cands: &[usize], counts: &[u32], bags: usize) {
    let total: u32 = counts.iter().sum();
    for (&c, &n) in cands.iter().zip(counts) {
        weights[c] += n as f64 / total as f64 / bags as f64;
    }
}

/// Pool weights (by pool position) to a blend over model indices.
fn to_blend(fit: &Fit, weights: &[f64]) -> Blend {
    Blend::Raw(
        weights
            .iter()
            .enumerate()
            .filter(|(_, &w)| w > 0.0)
            .map(|(p, &w)| (fit.pool[p], w))
            .collect(),
    )
}

/// Bagged Caruana on the fit rows. Each bag starts from its own best candidate, so the
/// average of the bags can fall below the pool's best model; then the best model is returned
/// instead, which keeps the guarantee for the bagged ensemble as well.
pub(crate) fn caruana(shared: &Shared<'_>, fit: &Fit) -> Blend {
    let cfg = shared.config;
    let vectors = fit.pool_oof(shared.models);
    let size = bag_size(shared, fit.pool.len());
    let mut weights = vec![0.0f64; fit.pool.len()];
    for bag in 0..cfg.caruana_bags {
        let mut rng = rng(cfg.seed, Tag::Caruana, fit.index, bag);
        let mut cands = sample(&mut rng, fit.pool.len(), size).into_vec();
        // Ascending pool positions are descending AUC: the first is the bag's best single.
        cands.sort_unstable();
        let views: Vec<&[f32]> = cands.iter().map(|&c| vectors[c].as_slice()).collect();
        let counts = greedy(&views, &fit.labels, 0, cfg.caruana_iterations);
        accumulate(&mut weights, &cands, &counts, cfg.caruana_bags);
    }
    let blend = to_blend(fit, &weights);
    // Both vectors cover the fit rows, which hold both classes (every fold does).
    let predicted = blend.apply(shared.models, Rows::Oof(&fit.rows));
    let auc = roc_auc(&fit.labels, &predicted).unwrap_or(0.5);
    let best = roc_auc(&fit.labels, &vectors[0]).unwrap_or(0.5);
    if auc < best {
        return Blend::Raw(vec![(fit.pool[0], 1.0)]);
    }
    blend
}

/// Fold bagging: each bag picks half of the fit's folds (whole folds, hence whole patients)
/// and a random `caruana_bag_fraction` of the pool, runs one greedy selection on those rows
/// only, and the bags' weights are averaged. Bags disagree where selection chased noise, so
/// the average is less tuned to any one set of patients than a single selection.
pub(crate) fn fold_bagged(shared: &Shared<'_>, fit: &Fit) -> Blend {
    let cfg = shared.config;
    let vectors = fit.pool_oof(shared.models);
    let size = bag_size(shared, fit.pool.len());
    let folds: Vec<usize> = (0..fit.mask.len()).filter(|&f| fit.mask[f]).collect();
    let half = folds.len().div_ceil(2);
    let mut weights = vec![0.0f64; fit.pool.len()];
    for bag in 0..cfg.fold_bags {
        let mut rng = rng(cfg.seed, Tag::FoldBagged, fit.index, bag);
        let mut mask = vec![false; fit.mask.len()];
        for i in sample(&mut rng, folds.len(), half) {
            mask[folds[i]] = true;
        }
        let mut cands = sample(&mut rng, fit.pool.len(), size).into_vec();
        cands.sort_unstable();
        // The bag's best single model on its own rows, by exact AUC.
        let init = (0..cands.len())
            .max_by(|&a, &b| {
                let (x, y) = (
                    shared.auc(fit.pool[cands[a]], &mask),
                    shared.auc(fit.pool[cands[b]], &mask),
                );
                x.total_cmp(&y).then(b.cmp(&a))
            })
            .unwrap_or(0);
        let positions: Vec<usize> = (0..fit.rows.len())
            .filter(|&p| mask[fit.row_folds[p] as usize])
            .collect();
        let labels: Vec<u8> = positions.iter().map(|&p| fit.labels[p]).collect();
        let gathered: Vec<Vec<f32>> = cands
            .iter()
            .map(|&c| positions.iter().map(|&p| vectors[c][p]).collect())
            .collect();
        let views: Vec<&[f32]> = gathered.iter().map(Vec::as_slice).collect();
        let counts = greedy(&views, &labels, init, cfg.caruana_iterations);
        accumulate(&mut weights, &cands, &counts, cfg.fold_bags);
    }
    to_blend(fit, &weights)
}
