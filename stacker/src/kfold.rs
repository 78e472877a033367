//! One `stack` job: the model fitted on every fold of its feature set. Out-of-fold predictions
//! come only from the fold's own model (trained on the other folds), test predictions are the
//! mean of the K fold models, and the scores are the AUC of each fold and of the whole
//! out-of-fold vector.
//!
//! Must not: return a prediction that is not a finite probability (the job fails, naming the
//! fold), or let a fold's model see that fold's rows.

use std::time::Instant;

use serde::{Deserialize, Serialize};
use stackhive_data::auc::roc_auc;
use stackhive_spec::stack::StackJob;

use crate::error::StackError;
use crate::models::{self, Fit};
use crate::prep::Prepared;

/// What a finished `stack` job reports.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StackOutcome {
    /// One per train row of the matrix.
    pub oof: Vec<f32>,
    /// One per test row: the mean over the folds.
    pub test: Vec<f32>,
    pub cv_auc: Option<f64>,
    pub fold_aucs: Vec<Option<f64>>,
    pub seconds: f64,
}

pub fn run(job: &StackJob, prep: &Prepared, threads: usize) -> Result<StackOutcome, StackError> {
    run_until(job, prep, threads, &|| false)
}

/// Like [`run`], stopping before the next fold once `cancelled` says so.
pub fn run_until(
    job: &StackJob,
    prep: &Prepared,
    threads: usize,
    cancelled: &dyn Fn() -> bool,
) -> Result<StackOutcome, StackError> {
    let started = Instant::now();
    let m = &prep.matrix;
    let mut oof = vec![f32::NAN; m.train_rows()];
    let mut test = vec![0f64; m.test_rows()];
    let mut fold_aucs = Vec::with_capacity(prep.k() as usize);
    for fold in 0..prep.k() {
        if cancelled() {
            return Err(StackError::Cancelled);
        }
        let fit = Fit {
            prep,
            fold,
            seed: job.seed.wrapping_mul(1_000_003).wrapping_add(fold as u64),
            threads,
        };
        let p = models::fit(job.model, &job.params, &fit)?;
        let rows = &prep.folds[fold as usize];
        if p.valid.len() != rows.valid.len() || p.test.len() != m.test_rows() {
            return Err(StackError::Library(format!(
                "{} returned {} validation and {} test predictions for fold {fold}, expected {} and {}",
                job.model,
                p.valid.len(),
                p.test.len(),
                rows.valid.len(),
                m.test_rows()
            )));
        }
        let bad = p
            .valid
            .iter()
            .chain(&p.test)
            .filter(|v| !v.is_finite() || !(0.0..=1.0).contains(*v))
            .count();
        if bad > 0 {
            return Err(StackError::Diverged(format!(
                "{} returned {bad} predictions that are not probabilities on fold {fold}; \
                 the model diverged (try other hyperparameters)",
                job.model
            )));
        }
        for (&i, &v) in rows.valid.iter().zip(&p.valid) {
            oof[i] = v;
        }
        for (t, &v) in test.iter_mut().zip(&p.test) {
            *t += v as f64 / prep.k() as f64;
        }
        let labels: Vec<u8> = rows.valid.iter().map(|&i| m.labels[i]).collect();
        fold_aucs.push(roc_auc(&labels, &p.valid));
    }
    Ok(StackOutcome {
        cv_auc: roc_auc(&m.labels, &oof),
        oof,
        test: test.into_iter().map(|v| v as f32).collect(),
        fold_aucs,
        seconds: started.elapsed().as_secs_f64(),
    })
}
