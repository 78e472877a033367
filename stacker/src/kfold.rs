//! One `stack` job: the model fitted on every fold of its feature set. Out-of-fold predictions
//! come only from the fold's own model (trained on the other folds), test predictions are the
//! mean of the K fold models, and the scores are the AUC of each fold and of the whole
//! out-of-fold vector. The folds run side by side, one thread each, on the cores the job was
//! given and any lent to it (`cores`); the results do not depend on how many ran at once, since
//! each fold's seed is the job's and the fold's.
//!
//! Must not: return a prediction that is not a finite probability (the job fails, naming the
//! fold), or let a fold's model see that fold's rows.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use stackhive_data::auc::roc_auc;
use stackhive_spec::stack::StackJob;

use crate::cores::{Core, Cores, LEND_AFTER};
use crate::error::StackError;
use crate::models::{self, Fit, FoldPrediction};
use crate::prep::{lock, Prepared};

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

/// Runs `job` alone on `threads` cores.
pub fn run(job: &StackJob, prep: &Prepared, threads: usize) -> Result<StackOutcome, StackError> {
    let cores = Cores::new(threads, LEND_AFTER);
    run_until(job, prep, &cores, threads, &|| false)
}

/// Runs `job` on `threads` of `cores` (waiting for them), one fold per core at once, with any
/// core lent to it meanwhile; no fold starts once `cancelled` says so.
pub fn run_until(
    job: &StackJob,
    prep: &Prepared,
    cores: &Cores,
    threads: usize,
    cancelled: &(dyn Fn() -> bool + Sync),
) -> Result<StackOutcome, StackError> {
    let started = Instant::now();
    let k = prep.k() as usize;
    let own = cores.take(threads.min(k), cancelled)?;
    let fits = Folds {
        job,
        prep,
        next: AtomicUsize::new(0),
        done: Mutex::new((0..k).map(|_| None).collect()),
        failed: Mutex::new(None),
        cancelled,
    };
    std::thread::scope(|s| {
        for core in own {
            s.spawn(|| fits.work(core));
        }
        // Lend this job idle cores while its folds are not all started.
        while fits.waiting() {
            if let Some(core) = cores.borrow(Duration::from_millis(500)) {
                s.spawn(|| fits.work(core));
            }
        }
    });
    if let Some(e) = fits.failed.into_inner().unwrap_or_else(|e| e.into_inner()) {
        return Err(e);
    }
    let m = &prep.matrix;
    let mut oof = vec![f32::NAN; m.train_rows()];
    let mut test = vec![0f64; m.test_rows()];
    let mut fold_aucs = Vec::with_capacity(k);
    let done = fits.done.into_inner().unwrap_or_else(|e| e.into_inner());
    for (fold, p) in done.into_iter().enumerate() {
        // A fold was left unstarted only because the job was cancelled.
        let p = p.ok_or(StackError::Cancelled)?;
        let rows = &prep.folds[fold];
        for (&i, &v) in rows.valid.iter().zip(&p.valid) {
            oof[i] = v;
        }
        for (t, &v) in test.iter_mut().zip(&p.test) {
            *t += v as f64 / k as f64;
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

/// A job's folds, handed out one at a time to the threads working on them.
struct Folds<'a> {
    job: &'a StackJob,
    prep: &'a Prepared,
    next: AtomicUsize,
    done: Mutex<Vec<Option<FoldPrediction>>>,
    failed: Mutex<Option<StackError>>,
    cancelled: &'a (dyn Fn() -> bool + Sync),
}

impl Folds<'_> {
    fn stopped(&self) -> bool {
        lock(&self.failed).is_some() || (self.cancelled)()
    }

    /// Whether some fold is still to start.
    fn waiting(&self) -> bool {
        self.next.load(Ordering::SeqCst) < self.prep.k() as usize && !self.stopped()
    }

    /// Fits folds on `core` until none is left, the job failed or it was cancelled.
    fn work(&self, core: Core<'_>) {
        while !self.stopped() {
            let fold = self.next.fetch_add(1, Ordering::SeqCst);
            if fold >= self.prep.k() as usize {
                break;
            }
            match self.fit(fold as u16) {
                Ok(p) => lock(&self.done)[fold] = Some(p),
                Err(e) => {
                    lock(&self.failed).get_or_insert(e);
                }
            }
        }
        drop(core);
    }

    /// One fold's model, on one thread, checked.
    fn fit(&self, fold: u16) -> Result<FoldPrediction, StackError> {
        let (job, prep) = (self.job, self.prep);
        let fit = Fit {
            prep,
            fold,
            seed: job.seed.wrapping_mul(1_000_003).wrapping_add(fold as u64),
            threads: 1,
        };
        let p = models::fit(job.model, &job.params, &fit)?;
        let rows = &prep.folds[fold as usize];
        let m = &prep.matrix;
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
        Ok(p)
    }
}
