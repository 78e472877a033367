//! The worker–stacker contract (issue 12): a worker keeps one `stackhive-stacker serve` process
//! and writes requests to its stdin, one JSON object per line; the stacker answers each on
//! stdout, one line per answer, in any order (jobs run concurrently), matched by `id`. The
//! stacker keeps the matrices it has read, so the jobs of a feature set share them.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::stack::StackJob;

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum StackerRequest {
    /// Train `job` on the matrix at `matrix` (a verified local copy of feature set
    /// `matrix_id`) on `threads` of the stacker's cores (that many folds at once), plus any
    /// idle core it lends the job.
    Run {
        id: u64,
        matrix: PathBuf,
        matrix_id: String,
        job: StackJob,
        threads: usize,
    },
    /// Stop request `id` at its next fold (its answer then says so).
    Cancel { id: u64 },
    /// The worker's jobs of other kinds now hold `cores` of its slots: never lend those.
    Reserve { cores: usize },
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StackerReply {
    pub id: u64,
    pub outcome: Result<StackResult, StackFailure>,
}

/// A finished job: out-of-fold predictions for every train row of the matrix (named by their
/// row in the dataset's train file, as level-1 jobs name theirs), test predictions (mean of the
/// fold models) and scores.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StackResult {
    pub oof_rows: Vec<u32>,
    pub oof: Vec<f32>,
    pub test: Vec<f32>,
    pub cv_auc: Option<f64>,
    pub fold_aucs: Vec<Option<f64>>,
    pub seconds: f64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StackFailure {
    pub message: String,
    /// Whether another attempt could succeed.
    pub retryable: bool,
}
