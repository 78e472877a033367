//! A fitted combination of models (`Blend`) and how it predicts: on any set of train rows
//! (their out-of-fold values) or on the test rows. The same code serves the in-sample, the
//! nested and the test predictions, so the three can only differ by what was fitted.
//! Must not: fit or select anything; that is `methods.rs`.

use rayon::prelude::*;

use crate::kernels::rank_normalise;
use crate::problem::Model;

/// Which rows a blend predicts.
#[derive(Clone, Copy)]
pub(crate) enum Rows<'r> {
    /// These train rows, from the models' out-of-fold predictions.
    Oof(&'r [usize]),
    Test,
}

impl Rows<'_> {
    fn values(&self, m: &Model) -> Vec<f32> {
        match self {
            Rows::Oof(rows) => rows.iter().map(|&r| m.oof[r]).collect(),
            Rows::Test => m.test.clone(),
        }
    }

    fn len(&self, models: &[Model]) -> usize {
        match self {
            Rows::Oof(rows) => rows.len(),
            Rows::Test => models.first().map_or(0, |m| m.test.len()),
        }
    }
}

/// Model indices (into the `models` slice) with weights.
pub(crate) type Weights = Vec<(usize, f64)>;

pub(crate) enum Blend {
    /// Weighted average of probabilities.
    Raw(Weights),
    /// Weighted average of normalised ranks, each taken within the rows being predicted, so
    /// that models on different scales (a CNN's probabilities, a GBM's) weigh alike.
    Rank(Weights),
    /// Per-row median of the probabilities.
    Median(Vec<usize>),
    /// `sigmoid(intercept + Σ coef · logit(p))`.
    Logistic { terms: Weights, intercept: f64 },
}

/// Probabilities are clipped before the logit so that a 0 or 1 does not become infinite.
pub(crate) const LOGIT_CLIP: f32 = 1e-6;

pub(crate) fn logit(p: f32) -> f64 {
    let p = p.clamp(LOGIT_CLIP, 1.0 - LOGIT_CLIP) as f64;
    (p / (1.0 - p)).ln()
}

pub(crate) fn sigmoid(z: f64) -> f64 {
    1.0 / (1.0 + (-z).exp())
}

fn weighted_sum(
    models: &[Model],
    rows: Rows<'_>,
    weights: &Weights,
    transform: impl Fn(Vec<f32>) -> Vec<f32> + Sync,
) -> Vec<f32> {
    let n = rows.len(models);
    let total: f64 = weights.iter().map(|(_, w)| w).sum();
    let acc = weights
        .par_iter()
        .fold(
            || vec![0.0f64; n],
            |mut acc, &(m, w)| {
                for (a, v) in acc.iter_mut().zip(transform(rows.values(&models[m]))) {
                    *a += w * v as f64;
                }
                acc
            },
        )
        .reduce(
            || vec![0.0f64; n],
            |mut a, b| {
                a.iter_mut().zip(b).for_each(|(x, y)| *x += y);
                a
            },
        );
    // Clamped because rounding may step a hair outside [0, 1].
    acc.into_iter()
        .map(|a| ((a / total) as f32).clamp(0.0, 1.0))
        .collect()
}

impl Blend {
    pub fn apply(&self, models: &[Model], rows: Rows<'_>) -> Vec<f32> {
        match self {
            // A single model of weight 1 comes back bit for bit, which keeps greedy selection's
            // "never below the best single model" exact.
            Blend::Raw(w) if w.len() == 1 => rows.values(&models[w[0].0]),
            Blend::Raw(w) => weighted_sum(models, rows, w, |v| v),
            Blend::Rank(w) => weighted_sum(models, rows, w, |v| rank_normalise(&v)),
            Blend::Median(ms) => median(models, rows, ms),
            Blend::Logistic { terms, intercept } => {
                let mut z = vec![*intercept; rows.len(models)];
                for &(m, c) in terms {
                    for (z, p) in z.iter_mut().zip(rows.values(&models[m])) {
                        *z += c * logit(p);
                    }
                }
                z.into_iter().map(|z| sigmoid(z) as f32).collect()
            }
        }
    }

    /// The weights to report, by model id; weights of averages sum to 1.
    pub fn weights(&self, models: &[Model]) -> Vec<(i64, f64)> {
        let normalised = |w: &Weights| {
            let total: f64 = w.iter().map(|(_, w)| w).sum();
            w.iter().map(|&(m, w)| (models[m].id, w / total)).collect()
        };
        match self {
            Blend::Raw(w) | Blend::Rank(w) => normalised(w),
            Blend::Median(ms) => ms
                .iter()
                .map(|&m| (models[m].id, 1.0 / ms.len() as f64))
                .collect(),
            Blend::Logistic { terms, .. } => {
                terms.iter().map(|&(m, c)| (models[m].id, c)).collect()
            }
        }
    }

    pub fn intercept(&self) -> Option<f64> {
        match self {
            Blend::Logistic { intercept, .. } => Some(*intercept),
            _ => None,
        }
    }
}

fn median(models: &[Model], rows: Rows<'_>, ms: &[usize]) -> Vec<f32> {
    let n = rows.len(models);
    let mut out = vec![0.0f32; n];
    const CHUNK: usize = 512;
    out.par_chunks_mut(CHUNK)
        .enumerate()
        .for_each(|(c, chunk)| {
            let mut buf = Vec::with_capacity(ms.len());
            for (i, o) in chunk.iter_mut().enumerate() {
                let at = c * CHUNK + i;
                buf.clear();
                buf.extend(ms.iter().map(|&m| match rows {
                    Rows::Oof(rows) => models[m].oof[rows[at]],
                    Rows::Test => models[m].test[at],
                }));
                let mid = buf.len() / 2;
                let (lower, upper, _) = buf.select_nth_unstable_by(mid, f32::total_cmp);
                let upper = *upper;
                *o = if ms.len() % 2 == 1 {
                    upper
                } else {
                    // The lower middle is the largest of the lower half.
                    let lower = lower.iter().copied().fold(f32::MIN, f32::max);
                    ((lower as f64 + upper as f64) / 2.0) as f32
                };
            }
        });
    out
}
