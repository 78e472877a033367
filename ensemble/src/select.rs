//! What every method fitted on one set of rows shares: the rows of the fit (all rows, or all
//! but one outer fold), each model's AUC on them, and the correlation-capped candidate pool.
//! Correlations are assembled from per-fold sums, so the k + 1 fits of a run compute each
//! model pair's cross products once.
//! Must not: read labels or predictions of rows outside the fit's folds; the nested score is
//! honest only if a fit never sees the fold it will predict.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use rayon::prelude::*;

use crate::config::Config;
use crate::kernels::FoldPairs;
use crate::problem::{Model, Prepared};

/// Pearson correlations between models on any union of folds.
pub(crate) struct Correlations {
    k: usize,
    /// Per model and fold: row count, sum, sum of squares.
    moments: Vec<Vec<[f64; 3]>>,
    /// Per model pair (low index first) and fold: sum of products.
    cross: Mutex<HashMap<(usize, usize), Vec<f64>>>,
}

impl Correlations {
    pub fn new(models: &[Model], folds: &[u16], k: usize) -> Self {
        let moments = models
            .par_iter()
            .map(|m| {
                let mut acc = vec![[0.0f64; 3]; k];
                for (&v, &f) in m.oof.iter().zip(folds) {
                    let a = &mut acc[f as usize];
                    a[0] += 1.0;
                    a[1] += v as f64;
                    a[2] += v as f64 * v as f64;
                }
                acc
            })
            .collect();
        Correlations {
            k,
            moments,
            cross: Mutex::new(HashMap::new()),
        }
    }

    fn cross(&self, models: &[Model], folds: &[u16], i: usize, j: usize) -> Vec<f64> {
        let key = (i.min(j), i.max(j));
        if let Some(c) = self
            .cross
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
        {
            return c.clone();
        }
        // Computed outside the lock: two threads may both compute a pair, harmlessly.
        let mut acc = vec![0.0f64; self.k];
        for ((&x, &y), &f) in models[i].oof.iter().zip(&models[j].oof).zip(folds) {
            acc[f as usize] += x as f64 * y as f64;
        }
        self.cross
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, acc.clone());
        acc
    }

    /// Pearson correlation of models `i` and `j` on the folds where `mask` is true; 0 when
    /// either is constant there (a constant model duplicates nothing).
    pub fn get(&self, models: &[Model], folds: &[u16], i: usize, j: usize, mask: &[bool]) -> f64 {
        let cross = self.cross(models, folds, i, j);
        let (mut n, mut sx, mut sy, mut sxx, mut syy, mut sxy) = (0.0, 0.0, 0.0, 0.0, 0.0, 0.0);
        for f in (0..self.k).filter(|&f| mask[f]) {
            let (a, b) = (self.moments[i][f], self.moments[j][f]);
            n += a[0];
            sx += a[1];
            sxx += a[2];
            sy += b[1];
            syy += b[2];
            sxy += cross[f];
        }
        let vx = sxx - sx * sx / n;
        let vy = syy - sy * sy / n;
        if vx <= 1e-12 * n || vy <= 1e-12 * n {
            return 0.0;
        }
        (sxy - sx * sy / n) / (vx * vy).sqrt()
    }
}

/// State shared by all fits of one run.
pub(crate) struct Shared<'a> {
    pub prep: &'a Prepared<'a>,
    pub models: &'a [Model],
    pub config: &'a Config,
    /// Per model: Mann–Whitney counts by fold pair, for exact AUCs on any union of folds.
    pub pairs: Vec<FoldPairs>,
    pub corr: Correlations,
}

impl<'a> Shared<'a> {
    pub fn new(prep: &'a Prepared<'a>, models: &'a [Model], config: &'a Config) -> Self {
        let pairs = models
            .par_iter()
            .map(|m| FoldPairs::new(&m.oof, prep.labels, prep.folds, prep.k))
            .collect();
        Shared {
            prep,
            models,
            config,
            pairs,
            corr: Correlations::new(models, prep.folds, prep.k),
        }
    }

    /// AUC of model `m` on the folds of `mask`; callers' masks always hold both classes
    /// (every fold does, by validation), so the fallback is never taken.
    pub fn auc(&self, m: usize, mask: &[bool]) -> f64 {
        self.pairs[m].auc(mask).unwrap_or(0.5)
    }
}

/// One fit: the rows it may read and what every method derives from them.
pub(crate) struct Fit {
    /// 0 for the final fit on all rows, `f + 1` for the nested fit without fold `f`.
    pub index: usize,
    pub mask: Vec<bool>,
    pub rows: Vec<usize>,
    pub labels: Vec<u8>,
    /// Fold of each fit row.
    pub row_folds: Vec<u16>,
    /// Correlation-capped survivors in descending AUC order; `pool[0]` is the best model.
    pub pool: Vec<usize>,
    pool_oof: OnceLock<Vec<Vec<f32>>>,
}

impl Fit {
    pub fn new(shared: &Shared<'_>, index: usize) -> Self {
        let prep = shared.prep;
        let mask: Vec<bool> = (0..prep.k).map(|f| index != f + 1).collect();
        let rows: Vec<usize> = (0..prep.n())
            .filter(|&r| mask[prep.folds[r] as usize])
            .collect();
        let auc: Vec<f64> = (0..shared.models.len())
            .map(|m| shared.auc(m, &mask))
            .collect();
        let pool = correlation_cap(shared, &mask, &auc);
        Fit {
            index,
            labels: rows.iter().map(|&r| prep.labels[r]).collect(),
            row_folds: rows.iter().map(|&r| prep.folds[r]).collect(),
            mask,
            rows,
            pool,
            pool_oof: OnceLock::new(),
        }
    }

    /// The pool models' predictions on the fit rows, gathered once for the greedy loops.
    pub fn pool_oof(&self, models: &[Model]) -> &[Vec<f32>] {
        self.pool_oof.get_or_init(|| {
            self.pool
                .par_iter()
                .map(|&m| self.rows.iter().map(|&r| models[m].oof[r]).collect())
                .collect()
        })
    }
}

/// All model indices by descending `auc`, ties by index so that results are reproducible.
fn by_auc(auc: &[f64]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..auc.len()).collect();
    order.sort_by(|&a, &b| auc[b].total_cmp(&auc[a]).then(a.cmp(&b)));
    order
}

/// Walks the models in descending AUC and keeps one unless it correlates above the cap with
/// one already kept, stopping at `max_kept`: near-duplicates (the same network at another
/// epoch) add nothing but weight to an average and ill-condition the stacker.
fn correlation_cap(shared: &Shared<'_>, mask: &[bool], auc: &[f64]) -> Vec<usize> {
    let cfg = shared.config;
    let mut kept: Vec<usize> = Vec::new();
    for m in by_auc(auc) {
        if kept.len() >= cfg.max_kept {
            break;
        }
        let duplicate = kept.par_iter().any(|&j| {
            shared
                .corr
                .get(shared.models, shared.prep.folds, m, j, mask)
                > cfg.correlation_cap
        });
        if !duplicate {
            kept.push(m);
        }
    }
    kept
}
