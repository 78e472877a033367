//! Streaming correlation cap for the worker, which sees models one at a time and cannot hold
//! all of them: it keeps a model unless it nearly duplicates one already kept, up to a limit.
//! The same rule as `Method::CorrelationCap` on all rows, so the pool it hands to `run` is
//! the one `run` would have chosen.
//! Must not: reorder models or judge them by anything but correlation; the caller ranks them.

use rayon::prelude::*;

use crate::error::EnsembleError;
use crate::problem::{check_model, Model};

/// Keeps models pushed in descending AUC order unless their out-of-fold Pearson correlation
/// with a kept model exceeds `cap`, until `max_kept` are kept.
pub struct Preselector {
    n: usize,
    cap: f64,
    max_kept: usize,
    last_auc: f64,
    kept: Vec<Model>,
    /// Per kept model: its centred out-of-fold vector scaled to unit norm (all zeros for a
    /// constant one), so a correlation is one dot product.
    unit: Vec<Vec<f32>>,
}

fn unit_vector(v: &[f32]) -> Vec<f32> {
    let mean = v.iter().map(|&x| x as f64).sum::<f64>() / v.len().max(1) as f64;
    let norm = v
        .iter()
        .map(|&x| (x as f64 - mean).powi(2))
        .sum::<f64>()
        .sqrt();
    // Same threshold as `select::Correlations`: a constant model correlates with nothing.
    if norm * norm <= 1e-12 * v.len() as f64 {
        return vec![0.0; v.len()];
    }
    v.iter()
        .map(|&x| ((x as f64 - mean) / norm) as f32)
        .collect()
}

impl Preselector {
    /// `labels` are the N train labels the out-of-fold vectors must match.
    pub fn new(labels: &[u8], cap: f64, max_kept: usize) -> Self {
        Preselector {
            n: labels.len(),
            cap,
            max_kept,
            last_auc: f64::INFINITY,
            kept: Vec::new(),
            unit: Vec::new(),
        }
    }

    /// Offers the next model (its out-of-fold AUC `auc` no higher than the previous one's);
    /// `Ok(true)` if it was kept. Errors on a vector of the wrong length or with values
    /// outside [0, 1], or a model out of AUC order.
    pub fn push(&mut self, model: Model, auc: f64) -> Result<bool, EnsembleError> {
        check_model(&model, self.n, None)?;
        if auc > self.last_auc {
            return Err(EnsembleError::PreselectorOrder {
                id: model.id,
                name: model.name,
                auc,
                previous: self.last_auc,
            });
        }
        self.last_auc = auc;
        if self.kept.len() >= self.max_kept {
            return Ok(false);
        }
        let unit = unit_vector(&model.oof);
        let duplicate = self.unit.par_iter().any(|k| {
            let r: f64 = k
                .iter()
                .zip(&unit)
                .map(|(&a, &b)| a as f64 * b as f64)
                .sum();
            r > self.cap
        });
        if duplicate {
            return Ok(false);
        }
        self.kept.push(model);
        self.unit.push(unit);
        Ok(true)
    }

    pub fn kept(&self) -> usize {
        self.kept.len()
    }

    pub fn into_models(self) -> Vec<Model> {
        self.kept
    }
}
