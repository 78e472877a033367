//! One trainer job end to end, as the `stackhive-trainer` process runs it (issue 4, items 1
//! and 7): read the worker's `TrainerJob`, load the dataset, take the coordinator's fold
//! assignment, open (or build) the image cache at the job's size, then
//! - `cnn`: train the fold (continuing from the job's resume checkpoint, when it names one, and
//!   rewriting `resume.ot` every `checkpoint_every` epochs), write `model.ot` (the weights,
//!   `VarStore` format; the averaged ones with EMA) and `result.json` (`CnnResult`);
//! - `lr-find`: sweep the learning rate and write `result.json` (`LrFindResult`), no checkpoint.
//!
//! Files are written beside their final name and renamed, so a reader never sees half of one;
//! a stale `result.json` is removed first, so a failed retry cannot leave an old one looking
//! new. Panics (tch's way of reporting most libtorch errors, CUDA out of memory included) are
//! caught and turned into errors. It must not talk to the coordinator: the worker does.

use std::fs;
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;
use stackhive_data::cache::ensure_cache;
use stackhive_data::folds::Folds;
use stackhive_data::isic::Dataset;
use stackhive_spec::process::{CHECKPOINT, RESULT, RESUME};
use stackhive_spec::{CnnKind, CnnResult, LrFindResult, TrainerEvent, TrainerJob};

use crate::config::{CheckpointPlan, InitWeights, TrainConfig};
use crate::data::FoldData;
use crate::device::parse_device;
use crate::error::TrainerError;
use crate::lr_find::lr_find;
use crate::train::{device_name, train};

/// What a finished job wrote to `result.json`.
#[derive(Clone, Debug, PartialEq)]
pub enum JobOutput {
    Cnn(CnnResult),
    LrFind(LrFindResult),
}

/// Runs `job`, writing its files into `out` (created when missing) and reporting through
/// `on_event`; the last event of a success is `done`. A failure emits no `error` event: the
/// caller reports it (the binary prints one, then exits with `TrainerError::exit_code`).
pub fn run_job(
    job: &TrainerJob,
    out: &Path,
    on_event: &mut dyn FnMut(&TrainerEvent),
) -> Result<JobOutput, TrainerError> {
    match panic::catch_unwind(AssertUnwindSafe(|| run(job, out, on_event))) {
        Ok(result) => result.map_err(|e| e.classify(&job.device)),
        Err(payload) => Err(TrainerError::from_panic(&*payload, &job.device)),
    }
}

fn run(
    job: &TrainerJob,
    out: &Path,
    on_event: &mut dyn FnMut(&TrainerEvent),
) -> Result<JobOutput, TrainerError> {
    let spec = &job.spec;
    let device = parse_device(&job.device)?;
    check_gpu_memory(device, job.gpu_mem_mb)?;
    let mut cfg = TrainConfig::from_spec(job.kind, spec, device)?;
    cfg.progress_every = Duration::from_millis(job.progress_every_ms);
    // The loader decodes and augments on the job's CPU slots unless the payload says otherwise.
    cfg.loader_threads = spec.loader_threads.or(job.cpu_threads);
    cfg.init = match (&spec.init_weights, &job.init_weights) {
        (asked, Some(path)) => Some(InitWeights {
            path: path.clone(),
            slice: asked.as_ref().is_some_and(|w| w.slice),
        }),
        (Some(_), None) => {
            return Err(TrainerError::Config(
                "the payload asks for initial weights, the job file names no local file for them (init_weights)".into(),
            ))
        }
        (None, None) => None,
    };
    if let Some(n) = job.cpu_threads {
        // Process-wide: this binary runs one job per process. OpenMP threads spin-wait, so jobs
        // sharing a machine must not each take every core.
        tch::set_num_threads(n.clamp(1, i32::MAX as u32) as i32);
    }

    fs::create_dir_all(out).map_err(io(out))?;
    let result_path = out.join(RESULT);
    match fs::remove_file(&result_path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(io(&result_path)(e));
        }
        _ => {}
    }

    let dataset = Dataset::load(&job.dataset_dir)?;
    let folds = job_folds(job, dataset.train.len())?;
    let cache = ensure_cache(&job.dataset_dir, cfg.image_size, &job.cache_dir, false)?.cache;
    let data = FoldData::new(&dataset, &folds, spec.fold, &cache)?;

    let output = match job.kind {
        CnnKind::Cnn => {
            cfg.checkpoint = (spec.checkpoint_every > 0).then(|| CheckpointPlan {
                path: out.join(RESUME),
                every: spec.checkpoint_every as usize,
            });
            cfg.resume = job.resume.clone();
            let trained = train(&cfg, &data, on_event)?;
            let checkpoint = out.join(CHECKPOINT);
            let tmp = hidden_tmp(&checkpoint);
            trained.vs.save(&tmp)?;
            fs::rename(&tmp, &checkpoint).map_err(io(&checkpoint))?;
            let o = trained.outcome;
            let result = CnnResult {
                arch: cfg.arch.name(),
                image_size: cfg.image_size,
                fold: spec.fold,
                device: device_name(device),
                epochs: o.epochs,
                oof_rows: o.oof_rows.iter().map(|&r| r as u32).collect(),
                oof: o.oof,
                test: o.test,
                steps: o.steps,
                init: o.init.as_ref().map(|r| r.summary()),
                resumed_from: o.resumed_from,
                checkpoint: CHECKPOINT.to_string(),
            };
            write_json(&result_path, &result)?;
            JobOutput::Cnn(result)
        }
        CnnKind::LrFind => {
            let sweep = spec.sweep.clone().unwrap_or_default();
            let result = lr_find(&cfg, &sweep, &data, on_event)?;
            write_json(&result_path, &result)?;
            JobOutput::LrFind(result)
        }
    };
    on_event(&TrainerEvent::Done {
        result: result_path,
    });
    Ok(output)
}

/// The coordinator's fold assignment, checked against the dataset: one fold per train row,
/// each `-1` (external, never validates) or `0..k`.
fn job_folds(job: &TrainerJob, train_rows: usize) -> Result<Folds, TrainerError> {
    let k = job.spec.folds.k;
    if job.folds.len() != train_rows {
        return Err(TrainerError::FoldRows {
            expected: train_rows,
            found: job.folds.len(),
        });
    }
    if let Some((row, &found)) = job
        .folds
        .iter()
        .enumerate()
        .find(|(_, &f)| f < -1 || f >= k as i16)
    {
        return Err(TrainerError::FoldValue { row, found, k });
    }
    Ok(Folds {
        k,
        fold: job.folds.clone(),
    })
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> TrainerError {
    let path = path.to_path_buf();
    move |source| TrainerError::Io { path, source }
}

/// `.NAME.tmp` beside `path`.
pub(crate) fn hidden_tmp(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map_or_else(|| "file".into(), |n| n.to_string_lossy().into_owned());
    path.with_file_name(format!(".{name}.tmp"))
}

fn write_json(path: &Path, value: &impl Serialize) -> Result<(), TrainerError> {
    let json = serde_json::to_vec_pretty(value).expect("results serialise");
    let tmp = hidden_tmp(path);
    fs::write(&tmp, json).map_err(io(&tmp))?;
    fs::rename(&tmp, path).map_err(io(path))
}

/// A job that asked for `need` MiB per GPU must not start on a device with less: the worker's
/// declared `--gpu-mem-mb` (what the scheduler matched on) may be wrong. Less *free* memory than
/// asked is only logged: another process may release it, and a real shortage ends in a clear
/// out-of-memory error.
fn check_gpu_memory(device: tch::Device, need: u64) -> Result<(), TrainerError> {
    let tch::Device::Cuda(index) = device else {
        return Ok(());
    };
    if need == 0 {
        return Ok(());
    }
    let (free, total) = crate::accel::cuda_mem_get_info(index)?;
    let (free, total) = (free >> 20, total >> 20);
    if total < need {
        return Err(TrainerError::GpuTooSmall {
            device: format!("cuda:{index}"),
            need,
            total,
        });
    }
    if free < need {
        tracing::warn!(
            free_mib = free,
            need_mib = need,
            "less free GPU memory than the job asked for"
        );
    }
    Ok(())
}
