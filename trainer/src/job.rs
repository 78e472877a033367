//! One `cnn` job, end to end, as the `stackhive-trainer` process runs it: load and validate the
//! dataset, assign its folds, open (or build) the image cache at the job's size, train the fold,
//! and write `model.ot` (the weights, `VarStore` format) and `result.json` (metrics, out-of-fold
//! and test predictions) into the output folder. The job format is provisional: the worker's
//! `cnn` executor (issue 4, items 1 and 7) will settle it. It must not talk to the coordinator.

use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use stackhive_data::cache::ensure_cache;
use stackhive_data::folds::{self, FoldSpec};
use stackhive_data::isic::Dataset;

use crate::arch::Arch;
use crate::data::FoldData;
use crate::device::parse_device;
use crate::error::TrainerError;
use crate::train::{train, EpochMetrics, InitWeights, TrainConfig, TrainOutcome};

/// File names written into the output folder.
pub const CHECKPOINT: &str = "model.ot";
pub const RESULT: &str = "result.json";

/// A `cnn` job as JSON. Unset fields take `TrainConfig::new`'s defaults.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CnnJob {
    /// Dataset folder in the ISIC 2020 layout.
    pub dataset: PathBuf,
    /// Where the preprocessed image caches live (shared by jobs on a machine).
    pub cache_dir: PathBuf,
    pub folds: FoldSpec,
    /// Validation fold, `0..folds.k`.
    pub fold: u16,
    pub arch: String,
    /// Defaults to the architecture's design resolution.
    pub image_size: Option<u32>,
    pub epochs: usize,
    pub batch_size: usize,
    pub eval_batch_size: usize,
    pub max_lr: f64,
    pub weight_decay: f64,
    pub seed: u64,
    pub metadata: bool,
    pub flips: bool,
    pub init_weights: Option<PathBuf>,
    /// With `init_weights`: also copy overlapping slices of tensors whose shapes differ.
    pub slice_weights: bool,
    /// `auto`, `cpu`, `cuda` or `cuda:N`.
    pub device: String,
    /// libtorch's CPU threads (the job's CPU slots); unset leaves libtorch's default, one per
    /// core. Set it wherever jobs share a machine: OpenMP threads spin-wait, and two jobs each
    /// using every core run many times slower than either alone.
    pub cpu_threads: Option<u16>,
}

impl Default for CnnJob {
    fn default() -> CnnJob {
        let d = TrainConfig::new(
            Arch::parse("efficientnet-b0").expect("known architecture"),
            224,
        );
        CnnJob {
            dataset: PathBuf::new(),
            cache_dir: PathBuf::new(),
            folds: FoldSpec::default(),
            fold: 0,
            arch: d.arch.name(),
            image_size: None,
            epochs: d.epochs,
            batch_size: d.batch_size,
            eval_batch_size: d.eval_batch_size,
            max_lr: d.max_lr,
            weight_decay: d.weight_decay,
            seed: d.seed,
            metadata: d.metadata,
            flips: d.flips,
            init_weights: None,
            slice_weights: false,
            device: "auto".into(),
            cpu_threads: None,
        }
    }
}

impl CnnJob {
    /// The training config this job asks for; checks the architecture, size and device.
    pub fn train_config(&self) -> Result<TrainConfig, TrainerError> {
        for (what, p) in [("dataset", &self.dataset), ("cache_dir", &self.cache_dir)] {
            if p.as_os_str().is_empty() {
                return Err(TrainerError::Config(format!(
                    "expected a {what} path in the job, found none"
                )));
            }
        }
        let arch = Arch::parse(&self.arch)?;
        let image_size = self.image_size.unwrap_or_else(|| arch.default_image_size());
        let cfg = TrainConfig {
            image_size,
            epochs: self.epochs,
            batch_size: self.batch_size,
            eval_batch_size: self.eval_batch_size,
            max_lr: self.max_lr,
            weight_decay: self.weight_decay,
            seed: self.seed,
            metadata: self.metadata,
            flips: self.flips,
            device: parse_device(&self.device)?,
            init: self.init_weights.clone().map(|path| InitWeights {
                path,
                slice: self.slice_weights,
            }),
            arch,
        };
        cfg.validate()?;
        Ok(cfg)
    }
}

/// What `result.json` holds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobResult {
    pub arch: String,
    pub image_size: u32,
    pub fold: u16,
    pub checkpoint: PathBuf,
    #[serde(flatten)]
    pub outcome: TrainOutcome,
}

/// Runs `job`, writing the checkpoint and result into `out` (created when missing).
pub fn run_job(
    job: &CnnJob,
    out: &Path,
    on_epoch: &mut dyn FnMut(&EpochMetrics),
) -> Result<JobResult, TrainerError> {
    let cfg = job.train_config()?;
    if let Some(n) = job.cpu_threads {
        // Process-wide: this binary runs one job per process.
        tch::set_num_threads(i32::from(n.max(1)));
    }
    let dataset = Dataset::load(&job.dataset)?;
    let folds = folds::assign(&dataset.train, &job.folds)?;
    if job.fold >= folds.k {
        return Err(TrainerError::FoldOutOfRange {
            fold: job.fold,
            k: folds.k,
        });
    }
    let cache = ensure_cache(&job.dataset, cfg.image_size, &job.cache_dir, false)?.cache;
    let data = FoldData::new(&dataset, &folds, job.fold, &cache)?;
    let trained = train(&cfg, &data, on_epoch)?;

    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| TrainerError::Io { path, source }
    };
    fs::create_dir_all(out).map_err(io(out))?;
    let checkpoint = out.join(CHECKPOINT);
    trained.vs.save(&checkpoint)?;
    let result = JobResult {
        arch: cfg.arch.name(),
        image_size: cfg.image_size,
        fold: job.fold,
        checkpoint,
        outcome: trained.outcome,
    };
    let path = out.join(RESULT);
    let json = serde_json::to_vec_pretty(&result).expect("results serialise");
    // Written beside and renamed, so a reader never sees half a result.
    let tmp = out.join(format!(".{RESULT}.tmp"));
    fs::write(&tmp, json).map_err(io(&tmp))?;
    fs::rename(&tmp, &path).map_err(io(&path))?;
    Ok(result)
}
