//! Resume checkpoints (`resume.ot`): everything a `cnn` run needs to continue after its last
//! finished epoch as if it had never stopped — the live weights (batch-norm statistics
//! included), the moving average and its update count, the optimizer's state, the step count,
//! the epochs' metrics and the initial weights' report. A retried attempt (the worker died,
//! was pre-empted or lost its lease hours into a fold) loads it and trains the remaining epochs
//! only; with the per-epoch seeding in `train`, the result is bit-identical on CPU to an
//! uninterrupted run.
//!
//! One file in libtorch's archive format: the tensors under `model.`, `ema.` and `opt.`, and a
//! JSON header (`ResumeMeta`) as a byte tensor named `meta`, so the file cannot disagree with
//! a sidecar. Written beside its name and renamed, so a reader (the worker uploading it) sees a
//! whole one. It must not decide when to save or whether to trust a file: the loop does.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use stackhive_spec::EpochMetrics;
use tch::nn::VarStore;
use tch::{Device, Kind, Tensor};

use crate::config::TrainConfig;
use crate::ema::Ema;
use crate::error::TrainerError;
use crate::job::hidden_tmp;
use crate::optim::Optim;
use crate::weights::LoadReport;

/// Bumped when the layout changes; a file of another format is not resumed from.
pub const FORMAT: u32 = 1;
const META: &str = "meta";

/// The header: what the file belongs to and where the run was.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ResumeMeta {
    pub format: u32,
    /// The run it belongs to: a file of another architecture, size, seed or optimizer is
    /// refused.
    pub arch: String,
    pub image_size: u32,
    pub seed: u64,
    pub optimizer: String,
    /// Epochs finished (1-based count) and optimizer steps taken.
    pub epoch: u32,
    pub step: u64,
    pub ema_updates: Option<u64>,
    pub epochs: Vec<EpochMetrics>,
    pub init: Option<LoadReport>,
}

/// A loaded checkpoint, checked against the run, ready to be applied.
#[derive(Debug)]
pub struct Resume {
    pub meta: ResumeMeta,
    model: HashMap<String, Tensor>,
    ema: HashMap<String, Tensor>,
    opt: HashMap<String, Tensor>,
}

fn bad(path: &Path, message: impl Into<String>) -> TrainerError {
    TrainerError::Resume {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

/// Writes the checkpoint to `path` (atomically). `None` when the optimizer's state cannot be
/// saved (libtorch's own optimizers, through tch, expose none): nothing is written.
pub fn save(
    path: &Path,
    meta: &ResumeMeta,
    live: &VarStore,
    ema: Option<&Ema>,
    opt: &Optim,
) -> Result<Option<PathBuf>, TrainerError> {
    let Some(opt_state) = opt.state() else {
        return Ok(None);
    };
    let json = serde_json::to_vec(meta).expect("resume headers serialise");
    let mut named: Vec<(String, Tensor)> = vec![(META.to_string(), Tensor::from_slice(&json))];
    let prefixed = |prefix: &str, vs: &VarStore| {
        vs.variables()
            .into_iter()
            .map(|(k, t)| (format!("{prefix}.{k}"), t))
            .collect::<Vec<_>>()
    };
    named.extend(prefixed("model", live));
    if let Some(e) = ema {
        named.extend(prefixed("ema", &e.vs));
    }
    named.extend(opt_state.into_iter().map(|(k, t)| (format!("opt.{k}"), t)));
    let tmp = hidden_tmp(path);
    Tensor::save_multi(&named, &tmp)?;
    std::fs::rename(&tmp, path).map_err(|source| TrainerError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(Some(path.to_path_buf()))
}

impl Resume {
    /// Reads a checkpoint onto `device` and checks that it belongs to the run `cfg` describes
    /// with optimizer `opt` (by name, e.g. `fused-adamw`).
    pub fn load(path: &Path, cfg: &TrainConfig, optimizer: &str) -> Result<Resume, TrainerError> {
        // Onto the run's device, whatever device saved it (a retry may get another GPU index).
        let all = Tensor::load_multi_with_device(path, cfg.device)
            .map_err(|e| bad(path, format!("unreadable: {e}")))?;
        let mut meta = None;
        let (mut model, mut ema, mut opt) = (HashMap::new(), HashMap::new(), HashMap::new());
        for (name, t) in all {
            if name == META {
                let bytes = Vec::<u8>::try_from(t.to_kind(Kind::Uint8).to_device(Device::Cpu))?;
                meta = Some(
                    serde_json::from_slice::<ResumeMeta>(&bytes)
                        .map_err(|e| bad(path, format!("its header is unreadable: {e}")))?,
                );
            } else if let Some(k) = name.strip_prefix("model.") {
                model.insert(k.to_string(), t);
            } else if let Some(k) = name.strip_prefix("ema.") {
                ema.insert(k.to_string(), t);
            } else if let Some(k) = name.strip_prefix("opt.") {
                opt.insert(k.to_string(), t);
            } else {
                return Err(bad(path, format!("unexpected tensor {name:?}")));
            }
        }
        let meta = meta.ok_or_else(|| bad(path, "it has no header (meta)"))?;
        let expected = (
            FORMAT,
            cfg.arch.name(),
            cfg.image_size,
            cfg.seed,
            optimizer.to_string(),
        );
        let found = (
            meta.format,
            meta.arch.clone(),
            meta.image_size,
            meta.seed,
            meta.optimizer.clone(),
        );
        if expected != found {
            return Err(bad(
                path,
                format!(
                    "it belongs to another run: expected (format, arch, image size, seed, optimizer) {expected:?}, found {found:?}"
                ),
            ));
        }
        if meta.epoch as usize > cfg.epochs || meta.epochs.len() != meta.epoch as usize {
            return Err(bad(
                path,
                format!(
                    "it holds {} epochs' metrics at epoch {}, the run has {} epochs",
                    meta.epochs.len(),
                    meta.epoch,
                    cfg.epochs
                ),
            ));
        }
        if cfg.ema.is_some() != meta.ema_updates.is_some() || ema.is_empty() == cfg.ema.is_some() {
            return Err(bad(path, "its moving average does not match the run's ema"));
        }
        Ok(Resume {
            meta,
            model,
            ema,
            opt,
        })
    }

    /// Copies the saved weights, moving average and optimizer state into a freshly built run.
    pub fn apply(
        &self,
        path: &Path,
        live: &VarStore,
        ema: Option<&mut Ema>,
        opt: &mut Optim,
    ) -> Result<(), TrainerError> {
        copy_into(path, "model", &self.model, live)?;
        if let Some(e) = ema {
            copy_into(path, "ema", &self.ema, &e.vs)?;
            e.set_updates(self.meta.ema_updates.unwrap_or(0));
        }
        opt.load_state(&self.opt)
            .map_err(|e| bad(path, e.to_string()))
    }
}

/// Copies every saved tensor into the store's variable of the same name (in place, keeping
/// the variables' layout); both sides must hold the same names and shapes.
fn copy_into(
    path: &Path,
    what: &str,
    saved: &HashMap<String, Tensor>,
    vs: &VarStore,
) -> Result<(), TrainerError> {
    let vars = vs.variables();
    if vars.len() != saved.len() {
        return Err(bad(
            path,
            format!(
                "it holds {} {what} tensors, the network has {}",
                saved.len(),
                vars.len()
            ),
        ));
    }
    tch::no_grad(|| -> Result<(), TrainerError> {
        for (name, mut dst) in vars {
            let src = saved
                .get(&name)
                .ok_or_else(|| bad(path, format!("it has no {what} tensor {name}")))?;
            if src.size() != dst.size() {
                return Err(bad(
                    path,
                    format!(
                        "{what} tensor {name} has shape {:?}, the network's has {:?}",
                        src.size(),
                        dst.size()
                    ),
                ));
            }
            dst.f_copy_(src)?;
        }
        Ok(())
    })
}
