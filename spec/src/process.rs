//! The contract between the worker and the `stackhive-trainer` process it spawns for each
//! `cnn` or `lr-find` job: the job file the worker writes (`TrainerJob`), the events the
//! trainer prints on stdout (one JSON object per line), the result files it leaves, and its
//! exit codes. Both sides read these types, so the contract cannot drift. It must not hold
//! training logic.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::cnn::{CnnKind, CnnSpec};

/// File names in the trainer's output folder.
pub const CHECKPOINT: &str = "model.ot";
/// The resume checkpoint: weights, optimizer state, moving average and the epochs so far,
/// rewritten (atomically) after every `checkpoint_every` epochs.
pub const RESUME: &str = "resume.ot";
pub const RESULT: &str = "result.json";
pub const JOB_FILE: &str = "job.json";

/// Exit codes besides 0 (success). A failure the same input would repeat (bad payload, NaN
/// loss, weights that fit nothing) is permanent; anything else may succeed on another try.
pub const EXIT_PERMANENT: i32 = 3;
/// CUDA ran out of memory: permanent on this worker; the message says how much there was.
pub const EXIT_OUT_OF_MEMORY: i32 = 4;

/// What the worker hands the trainer: the user's payload plus everything resolved on the
/// worker (local paths, the coordinator's fold assignment, the device and threads granted).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainerJob {
    pub kind: CnnKind,
    pub spec: CnnSpec,
    /// The dataset's folder (ISIC layout) on this machine.
    pub dataset_dir: PathBuf,
    /// Where preprocessed image caches live, shared by the jobs of a machine.
    pub cache_dir: PathBuf,
    /// The stored fold of every train row in `train.csv` order (−1: never validates).
    pub folds: Vec<i16>,
    /// `cpu`, `cuda` or `cuda:N` (after `CUDA_VISIBLE_DEVICES`, the job's GPUs are 0..n).
    pub device: String,
    /// libtorch threads: the job's CPU slots.
    #[serde(default)]
    pub cpu_threads: Option<u32>,
    /// GPU memory the job asked for per GPU, in MiB (0: unspecified); the trainer checks it
    /// against what the device really has before it starts.
    #[serde(default)]
    pub gpu_mem_mb: u64,
    /// The initial weights resolved to a local file.
    #[serde(default)]
    pub init_weights: Option<PathBuf>,
    /// An earlier attempt's resume checkpoint, fetched to a local file: training continues
    /// after its last epoch.
    #[serde(default)]
    pub resume: Option<PathBuf>,
    /// Least time between two `progress` events.
    #[serde(default = "default_progress_ms")]
    pub progress_every_ms: u64,
}

fn default_progress_ms() -> u64 {
    1000
}

/// One line of the trainer's stdout.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "kebab-case")]
pub enum TrainerEvent {
    /// Training is about to start.
    Start {
        device: String,
        parameters: u64,
        steps_per_epoch: u64,
        epochs: u32,
        /// What the initial weights filled, as a one-line summary.
        #[serde(default)]
        init: Option<String>,
        /// The epoch a resume checkpoint brought the run to (training continues after it).
        #[serde(default)]
        resumed_from: Option<u32>,
    },
    /// Mid-epoch progress, at most once per `progress_every_ms`.
    Progress(Progress),
    /// An epoch ended and was validated.
    Epoch(EpochMetrics),
    /// A resume checkpoint holding every epoch up to `epoch` was (atomically) written to
    /// `path`; the next one replaces it.
    Checkpoint { path: PathBuf, epoch: u32 },
    /// Finished: the result file is written.
    Done { result: PathBuf },
    /// Failed; the exit code follows.
    Error { message: String, permanent: bool },
}

/// Where a running job is, as the heartbeats carry it to `stackhive watch`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Progress {
    /// 1-based.
    pub epoch: u32,
    pub epochs: u32,
    /// Optimizer steps so far and in all.
    pub step: u64,
    pub steps: u64,
    pub lr: f64,
    /// Mean training loss since the epoch began.
    pub loss: f64,
    /// The last epoch's validation AUC.
    #[serde(default)]
    pub valid_auc: Option<f64>,
    pub images_per_s: f64,
    /// The epoch this attempt resumed after (an earlier attempt's checkpoint), if it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resumed_from: Option<u32>,
}

/// One epoch's figures.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EpochMetrics {
    /// 1-based.
    pub epoch: u32,
    pub train_loss: f64,
    pub valid_loss: f64,
    /// `None` when the validation rows hold only one class.
    pub valid_auc: Option<f64>,
    /// Learning rate of the epoch's last step.
    pub lr: f64,
    pub seconds: f64,
    /// Training images per second over the epoch (loading and augmentation included).
    #[serde(default)]
    pub images_per_s: f64,
}

/// `result.json` of a `cnn` job.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CnnResult {
    pub arch: String,
    pub image_size: u32,
    pub fold: u16,
    pub device: String,
    pub epochs: Vec<EpochMetrics>,
    /// Train-table rows of the out-of-fold predictions (the fold's validation rows).
    pub oof_rows: Vec<u32>,
    /// Probability of the positive class per `oof_rows` entry.
    pub oof: Vec<f32>,
    /// Probability per test row, in test-table order.
    pub test: Vec<f32>,
    pub steps: u64,
    /// What the initial weights filled.
    #[serde(default)]
    pub init: Option<String>,
    /// The epoch an earlier attempt's resume checkpoint brought this run to.
    #[serde(default)]
    pub resumed_from: Option<u32>,
    /// The checkpoint's file name in the output folder.
    pub checkpoint: String,
}

/// `result.json` of an `lr-find` job.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LrFindResult {
    pub arch: String,
    pub lrs: Vec<f64>,
    pub losses: Vec<f64>,
    /// The running average the suggestion and the early stop read.
    pub smoothed: Vec<f64>,
    /// The rate where the smoothed loss falls fastest, when there is such a point.
    pub suggestion: Option<f64>,
    /// The rate with the lowest smoothed loss.
    pub min_loss_lr: Option<f64>,
    /// True when the loss diverged before the last step.
    pub stopped_early: bool,
}
