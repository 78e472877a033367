//! `TrainConfig`: the trainer's internal description of one run, resolved from a user's
//! `CnnSpec` (the spec crate's payload) and the worker's device. Everything the loop reads is
//! settled here — defaults filled, `auto` precision and memory format decided for the device —
//! so the loop holds no policy of its own. It must not touch tensors or files.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use stackhive_spec::{AugmentSpec, CnnKind, CnnSpec, Precision, ScheduleSpec};
use tch::Device;

use crate::arch::Arch;
use crate::error::TrainerError;
use crate::optim::OptimConfig;

/// Where initial weights come from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct InitWeights {
    /// A checkpoint saved by `VarStore::save` (e.g. a previous job's `model.ot`).
    pub path: PathBuf,
    /// Also copy the overlapping slice of tensors whose shapes differ.
    pub slice: bool,
}

/// Where and how often the loop saves a resume checkpoint.
#[derive(Clone, Debug, PartialEq)]
pub struct CheckpointPlan {
    pub path: PathBuf,
    /// Every this many epochs (at least 1); the last epoch is always saved.
    pub every: usize,
}

/// How to train one fold (or sweep the rate of an `lr-find` job).
#[derive(Clone, Debug)]
pub struct TrainConfig {
    pub arch: Arch,
    /// Side of the (square) training images; must equal the cache's.
    pub image_size: u32,
    pub epochs: usize,
    pub batch_size: usize,
    pub eval_batch_size: usize,
    /// Batches per optimizer step; each batch's loss is scaled by 1 / (batches in the step).
    pub accumulate: usize,
    pub optimizer: OptimConfig,
    /// The schedule's shape; its peak is `optimizer.lr`.
    pub schedule: ScheduleSpec,
    /// ε: training targets become `y·(1−ε) + ε/2` (the validation loss reads the true labels).
    pub label_smoothing: f64,
    /// Decay of the weights' moving average; validation, predictions and the checkpoint use it.
    pub ema: Option<f64>,
    /// bf16 autocast (the accel shim), resolved from `precision` (auto: on for CUDA, off for
    /// CPU), around every forward pass and loss.
    pub bf16: bool,
    /// Channels-last memory format for the parameters and every batch, resolved like `bf16`.
    pub channels_last: bool,
    /// Capture each training step as a CUDA graph and replay it (on CUDA only; `graphed`).
    pub cuda_graph: bool,
    /// Training augmentation, applied by the loader's threads (mixup and cutmix by `mix`).
    pub augment: AugmentSpec,
    /// Test-time augmentation passes (1 = none), averaged in `train::predict`.
    pub tta: u32,
    /// Threads that make batches (unset: one; the trainer job sets the job's CPU slots).
    pub loader_threads: Option<u32>,
    pub seed: u64,
    /// Join the tabular metadata to the image embedding.
    pub metadata: bool,
    pub device: Device,
    pub init: Option<InitWeights>,
    /// Least time between two `progress` events.
    pub progress_every: Duration,
    /// Save resume checkpoints (`cnn` jobs; none by default).
    pub checkpoint: Option<CheckpointPlan>,
    /// Continue from this resume checkpoint when it belongs to the run (otherwise start over,
    /// saying why in the log).
    pub resume: Option<PathBuf>,
}

impl TrainConfig {
    /// Defaults for `arch` at `image_size`: 10 epochs of batch 32, AdamW at a one-cycle peak of
    /// 1e-3, flips, fp32, on CPU.
    pub fn new(arch: Arch, image_size: u32) -> TrainConfig {
        TrainConfig {
            arch,
            image_size,
            epochs: 10,
            batch_size: 32,
            eval_batch_size: 64,
            accumulate: 1,
            optimizer: OptimConfig::adamw(1e-3),
            schedule: ScheduleSpec::default(),
            label_smoothing: 0.0,
            ema: None,
            bf16: false,
            channels_last: false,
            cuda_graph: false,
            augment: AugmentSpec::default(),
            tta: 1,
            loader_threads: None,
            seed: 0,
            metadata: false,
            device: Device::Cpu,
            init: None,
            progress_every: Duration::from_secs(1),
            checkpoint: None,
            resume: None,
        }
    }

    /// What `spec` (a payload of `kind`) asks for on `device`, validated. Initial weights are
    /// not resolved here: the job names their local file.
    pub fn from_spec(
        kind: CnnKind,
        spec: &CnnSpec,
        device: Device,
    ) -> Result<TrainConfig, TrainerError> {
        spec.validate(kind)?;
        let arch = spec.arch()?;
        let image_size = spec.image_size()?;
        let cuda = device.is_cuda();
        let cfg = TrainConfig {
            image_size,
            epochs: spec.epochs as usize,
            batch_size: spec.batch_size as usize,
            eval_batch_size: spec.eval_batch_size() as usize,
            accumulate: spec.accumulate as usize,
            optimizer: OptimConfig::from_spec(&spec.optimizer),
            schedule: spec.schedule.clone(),
            label_smoothing: spec.label_smoothing,
            ema: spec.ema,
            bf16: match spec.precision {
                Precision::Auto => cuda,
                Precision::Fp32 => false,
                Precision::Bf16 => true,
            },
            channels_last: spec.channels_last.unwrap_or(cuda),
            cuda_graph: spec.cuda_graph,
            augment: spec.augment.clone(),
            tta: spec.tta,
            loader_threads: spec.loader_threads,
            seed: spec.seed,
            metadata: spec.metadata,
            device,
            init: None,
            progress_every: Duration::from_secs(1),
            checkpoint: None,
            resume: None,
            arch,
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// Whether training steps replay a captured CUDA graph: asked for, and on CUDA.
    pub fn graphed(&self) -> bool {
        self.cuda_graph && self.device.is_cuda()
    }

    /// The loader's worker threads.
    pub fn loader_threads(&self) -> usize {
        self.loader_threads.unwrap_or(1).max(1) as usize
    }

    pub fn validate(&self) -> Result<(), TrainerError> {
        self.arch.check_image_size(self.image_size)?;
        let bad = |m: String| Err(TrainerError::Config(m));
        if self.epochs == 0 {
            return bad("expected at least 1 epoch, found 0".into());
        }
        if self.batch_size < 2 || self.eval_batch_size == 0 {
            return bad(format!(
                "expected a batch size of at least 2 (batch norm) and an eval batch size of at least 1, found {} and {}",
                self.batch_size, self.eval_batch_size
            ));
        }
        if self.accumulate == 0 {
            return bad("expected at least 1 batch per optimizer step, found 0".into());
        }
        if self.graphed() && (self.accumulate != 1 || !self.optimizer.fused) {
            return bad(format!(
                "a captured cuda graph step needs accumulate 1 and a fused optimizer, found accumulate {} and fused {}",
                self.accumulate, self.optimizer.fused
            ));
        }
        if !(0.0..=0.5).contains(&self.label_smoothing) {
            return bad(format!(
                "expected a label smoothing from 0 to 0.5, found {}",
                self.label_smoothing
            ));
        }
        if let Some(d) = self.ema {
            if !(0.0..1.0).contains(&d) {
                return bad(format!("expected an EMA decay in [0, 1), found {d}"));
            }
        }
        self.optimizer.validate()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::optim::OptimKind;
    use stackhive_spec::OptimizerName;

    fn spec() -> CnnSpec {
        serde_json::from_value(serde_json::json!({
            "dataset": "d", "fold": 1, "arch": "efficientnet-w0.25-d0.25", "image_size": 32,
            "optimizer": { "name": "sgd", "nesterov": true },
            "accumulate": 2, "ema": 0.99, "label_smoothing": 0.1
        }))
        .unwrap()
    }

    #[test]
    fn resolves_defaults_and_auto_settings_per_device() {
        let cpu = TrainConfig::from_spec(CnnKind::Cnn, &spec(), Device::Cpu).unwrap();
        assert_eq!(cpu.optimizer.lr, 0.05);
        assert_eq!(cpu.optimizer.weight_decay, 1e-4);
        assert!(
            !cpu.optimizer.decay_1d,
            "jobs spare biases and norms by default"
        );
        assert_eq!(
            cpu.optimizer.kind,
            OptimKind::Sgd {
                momentum: 0.9,
                nesterov: true
            }
        );
        assert_eq!(
            (
                cpu.epochs,
                cpu.batch_size,
                cpu.eval_batch_size,
                cpu.accumulate
            ),
            (10, 32, 64, 2)
        );
        assert_eq!((cpu.ema, cpu.label_smoothing), (Some(0.99), 0.1));
        assert!(!cpu.bf16 && !cpu.channels_last);
        // Building the config does not need the GPU, only its name.
        let gpu = TrainConfig::from_spec(CnnKind::Cnn, &spec(), Device::Cuda(0)).unwrap();
        assert!(gpu.bf16 && gpu.channels_last);
        let mut s = spec();
        s.precision = Precision::Fp32;
        s.channels_last = Some(false);
        let gpu = TrainConfig::from_spec(CnnKind::Cnn, &s, Device::Cuda(0)).unwrap();
        assert!(!gpu.bf16 && !gpu.channels_last);
        s.precision = Precision::Bf16;
        assert!(
            TrainConfig::from_spec(CnnKind::Cnn, &s, Device::Cpu)
                .unwrap()
                .bf16
        );

        // CUDA graphs only on CUDA, with one batch per step and a fused optimizer.
        let mut s = spec();
        s.cuda_graph = true;
        s.accumulate = 1;
        assert!(!TrainConfig::from_spec(CnnKind::Cnn, &s, Device::Cpu)
            .unwrap()
            .graphed());
        let mut gpu = TrainConfig::from_spec(CnnKind::Cnn, &s, Device::Cuda(0)).unwrap();
        assert!(gpu.graphed());
        gpu.optimizer.fused = false;
        assert_eq!(
            gpu.validate().unwrap_err().to_string(),
            "invalid training config: a captured cuda graph step needs accumulate 1 and a fused optimizer, found accumulate 1 and fused false"
        );

        // The spec's validation runs first, naming the field.
        let mut s = spec();
        s.optimizer.name = OptimizerName::Adamw;
        let err = TrainConfig::from_spec(CnnKind::Cnn, &s, Device::Cpu)
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "cnn payload field \"optimizer\": momentum and nesterov are SGD settings, found them with adamw"
        );
    }
}
