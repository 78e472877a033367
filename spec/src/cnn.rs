//! The payload of a `cnn` job (one model config on one fold) and of an `lr-find` job (the same
//! payload plus a `sweep`), as users submit them. Every field but `dataset`, `fold` and `arch`
//! has a default; unknown fields are refused. `validate` checks every range and combination the
//! trainer would otherwise trip over mid-run, so a bad payload is refused at submit time with a
//! message naming the field, what was expected and what was found. It must not touch libtorch
//! or the filesystem: the coordinator runs it.

use serde::{Deserialize, Serialize};
use stackhive_data::folds::FoldSpec;

use crate::arch::Arch;
use crate::error::SpecError;

/// One `cnn` job.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CnnSpec {
    /// A registered dataset: its content hash or a name.
    pub dataset: String,
    #[serde(default)]
    pub folds: FoldSpec,
    /// The validation fold, `0..folds.k`; the other folds (and external rows) train.
    pub fold: u16,
    pub arch: String,
    /// Side of the square training images; defaults to the architecture's design resolution.
    #[serde(default)]
    pub image_size: Option<u32>,
    #[serde(default = "d::epochs")]
    pub epochs: u32,
    #[serde(default = "d::batch_size")]
    pub batch_size: u32,
    /// Defaults to twice `batch_size`.
    #[serde(default)]
    pub eval_batch_size: Option<u32>,
    /// Gradient accumulation: the optimizer steps once per this many batches.
    #[serde(default = "d::one")]
    pub accumulate: u32,
    #[serde(default)]
    pub optimizer: OptimizerSpec,
    #[serde(default)]
    pub schedule: ScheduleSpec,
    /// Targets become `y·(1−ε) + ε/2`.
    #[serde(default)]
    pub label_smoothing: f64,
    /// Decay of an exponential moving average of the weights; when set, validation, the
    /// predictions and the checkpoint use the averaged weights.
    #[serde(default)]
    pub ema: Option<f64>,
    #[serde(default)]
    pub precision: Precision,
    /// Channels-last memory format; defaults to on for CUDA, off for CPU.
    #[serde(default)]
    pub channels_last: Option<bool>,
    #[serde(default)]
    pub augment: AugmentSpec,
    /// Test-time augmentation: predictions average this many passes (1 = none).
    #[serde(default = "d::one")]
    pub tta: u32,
    #[serde(default)]
    pub seed: u64,
    /// Join the tabular metadata (sex, age, site) to the image embedding.
    #[serde(default)]
    pub metadata: bool,
    #[serde(default)]
    pub init_weights: Option<InitWeightsSpec>,
    /// CPU threads that decode and augment batches; defaults to the job's CPU slots.
    #[serde(default)]
    pub loader_threads: Option<u32>,
    /// Capture each training step as one CUDA graph and replay it per batch, which removes the
    /// per-kernel launch cost (CUDA only: ignored on CPU). Needs `accumulate` 1; the last partial
    /// batch of each epoch is dropped, since a graph replays one batch shape.
    #[serde(default)]
    pub cuda_graph: bool,
    /// Save a resume checkpoint (weights, optimizer state, moving average, epochs so far)
    /// every this many epochs, so a retried attempt continues from the last one instead of
    /// starting over; 0 turns it off. Only `cnn` jobs use it.
    #[serde(default = "d::one")]
    pub checkpoint_every: u32,
    /// Only for `lr-find` jobs.
    #[serde(default)]
    pub sweep: Option<SweepSpec>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OptimizerName {
    #[default]
    Adamw,
    Sgd,
}

/// The optimizer. Unset values take the named optimizer's defaults (see the methods).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OptimizerSpec {
    pub name: OptimizerName,
    /// Peak learning rate (the schedule scales it); AdamW 1e-3, SGD 0.05.
    pub lr: Option<f64>,
    /// Decoupled for AdamW (1e-2), L2 for SGD (1e-4).
    pub weight_decay: Option<f64>,
    /// SGD momentum (0.9).
    pub momentum: Option<f64>,
    pub nesterov: bool,
    /// AdamW's β1, β2 (0.9, 0.999).
    pub betas: Option<(f64, f64)>,
    /// AdamW's ε (1e-8).
    pub eps: Option<f64>,
    /// Weight decay also on parameters of one dimension or fewer (biases, batch-norm scales and
    /// shifts), as plain PyTorch does. Off by default: they are spared, as in timm's recipes.
    pub decay_1d: bool,
}

impl OptimizerSpec {
    pub fn lr(&self) -> f64 {
        self.lr.unwrap_or(match self.name {
            OptimizerName::Adamw => 1e-3,
            OptimizerName::Sgd => 0.05,
        })
    }

    pub fn weight_decay(&self) -> f64 {
        self.weight_decay.unwrap_or(match self.name {
            OptimizerName::Adamw => 1e-2,
            OptimizerName::Sgd => 1e-4,
        })
    }

    pub fn momentum(&self) -> f64 {
        self.momentum.unwrap_or(0.9)
    }

    pub fn betas(&self) -> (f64, f64) {
        self.betas.unwrap_or((0.9, 0.999))
    }

    pub fn eps(&self) -> f64 {
        self.eps.unwrap_or(1e-8)
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ScheduleName {
    /// Smith & Topping's one-cycle: warm up to `lr`, anneal far below it.
    #[default]
    OneCycle,
    /// Smith's cyclical rates (triangular): between `lr·base_fraction` and `lr`, a full cycle
    /// every `cycle_epochs`.
    Cyclic,
    /// `lr`, multiplied by `gamma` every `step_epochs`.
    Step,
    Constant,
}

/// The learning-rate schedule, as a function of the optimizer step.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ScheduleSpec {
    pub name: ScheduleName,
    /// One-cycle: share of the steps spent warming up.
    pub pct_start: f64,
    /// One-cycle: the first rate is `lr / div_factor`.
    pub div_factor: f64,
    /// One-cycle: the last rate is the first divided by this.
    pub final_div_factor: f64,
    /// Cyclic: the low end of the cycle as a fraction of `lr`.
    pub base_fraction: f64,
    /// Cyclic: length of one full cycle (up and down) in epochs.
    pub cycle_epochs: f64,
    /// Step: epochs between decays.
    pub step_epochs: u32,
    /// Step: the decay factor.
    pub gamma: f64,
    /// Step, cyclic and constant: epochs of linear warm-up from 0.
    pub warmup_epochs: f64,
}

impl Default for ScheduleSpec {
    fn default() -> ScheduleSpec {
        ScheduleSpec {
            name: ScheduleName::OneCycle,
            pct_start: 0.3,
            div_factor: 25.0,
            final_div_factor: 1e4,
            base_fraction: 0.1,
            cycle_epochs: 2.0,
            step_epochs: 3,
            gamma: 0.1,
            warmup_epochs: 0.0,
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Precision {
    /// bf16 autocast on CUDA, fp32 on CPU.
    #[default]
    Auto,
    Fp32,
    /// bf16 autocast (with fp32 master weights); on CPU too, where it is slower than fp32 on
    /// most processors.
    Bf16,
}

/// Training-time augmentation. The per-image transforms run on CPU threads; mixup and cutmix
/// mix whole batches. Defaults: both flips on, everything else off.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AugmentSpec {
    pub hflip: bool,
    pub vflip: bool,
    /// Also rotate by a random multiple of 90° (skin lesions have no up).
    pub rot90: bool,
    /// Largest rotation in degrees (uniform in ±rotate).
    pub rotate: f64,
    /// Largest shear in degrees.
    pub shear: f64,
    /// Largest relative stretch of each axis (0.1 = ±10%).
    pub stretch: f64,
    /// Coarse dropout: this many holes per image…
    pub cutout_holes: u32,
    /// …each a square of this fraction of the side.
    pub cutout_size: f64,
    /// Mixup's Beta(α, α); 0 disables.
    pub mixup: f64,
    /// Cutmix's Beta(α, α); 0 disables.
    pub cutmix: f64,
    /// Probability that a batch is mixed, when mixup or cutmix is on.
    pub mix_prob: f64,
    /// Brightness and contrast factors uniform in 1 ± these.
    pub brightness: f64,
    pub contrast: f64,
    /// Hue shift uniform in ± this fraction of the colour wheel (at most 0.5).
    pub hue: f64,
    /// Probability of a microscope-vignette crop (a dark circular border).
    pub vignette: f64,
}

impl Default for AugmentSpec {
    fn default() -> AugmentSpec {
        AugmentSpec {
            hflip: true,
            vflip: true,
            rot90: false,
            rotate: 0.0,
            shear: 0.0,
            stretch: 0.0,
            cutout_holes: 0,
            cutout_size: 0.1,
            mixup: 0.0,
            cutmix: 0.0,
            mix_prob: 0.5,
            brightness: 0.0,
            contrast: 0.0,
            hue: 0.0,
            vignette: 0.0,
        }
    }
}

impl AugmentSpec {
    /// The strong per-image policy of top ISIC 2020 solutions (and of the benchmarks): flips,
    /// rotation ±30°, shear ±10°, stretch ±10%, four 10% cutout holes, brightness and contrast
    /// ±20%, hue ±5%, and the vignette crop on 30% of images. No mixing.
    pub fn heavy() -> AugmentSpec {
        AugmentSpec {
            rotate: 30.0,
            shear: 10.0,
            stretch: 0.1,
            cutout_holes: 4,
            cutout_size: 0.1,
            brightness: 0.2,
            contrast: 0.2,
            hue: 0.05,
            vignette: 0.3,
            ..AugmentSpec::default()
        }
    }

    /// No augmentation at all.
    pub fn none() -> AugmentSpec {
        AugmentSpec {
            hflip: false,
            vflip: false,
            ..AugmentSpec::default()
        }
    }
}

/// Initial weights: a finished job's checkpoint artifact, or a file every worker can read.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InitWeightsSpec {
    /// A `cnn` job whose `model.ot` artifact seeds this one.
    #[serde(default)]
    pub job: Option<i64>,
    /// Or one of this job's dependencies, by name: a job submitted in the same batch (or
    /// earlier) whose checkpoint seeds this one once it has succeeded. The coordinator checks
    /// at submit time that the name is a `cnn` dependency of the job.
    #[serde(default)]
    pub dependency: Option<String>,
    /// Or a checkpoint path on the worker (e.g. a shared folder).
    #[serde(default)]
    pub path: Option<String>,
    /// Also copy the overlapping slice of tensors whose shapes differ.
    #[serde(default)]
    pub slice: bool,
}

/// The learning-rate sweep of an `lr-find` job (Smith 2017, section 3.3): the rate grows
/// geometrically from `min_lr` to `max_lr` over `steps` training steps, stopping early once the
/// smoothed loss exceeds `diverge` times its best.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SweepSpec {
    pub min_lr: f64,
    pub max_lr: f64,
    pub steps: u32,
    /// Weight of the running loss average (fastai's 0.98).
    pub smoothing: f64,
    pub diverge: f64,
}

impl Default for SweepSpec {
    fn default() -> SweepSpec {
        SweepSpec {
            min_lr: 1e-7,
            max_lr: 10.0,
            steps: 100,
            smoothing: 0.98,
            diverge: 4.0,
        }
    }
}

/// Which of the two kinds a payload is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CnnKind {
    Cnn,
    LrFind,
}

impl CnnKind {
    pub fn name(self) -> &'static str {
        match self {
            CnnKind::Cnn => "cnn",
            CnnKind::LrFind => "lr-find",
        }
    }
}

mod d {
    pub fn epochs() -> u32 {
        10
    }
    pub fn batch_size() -> u32 {
        32
    }
    pub fn one() -> u32 {
        1
    }
}

/// Largest batch and epoch counts accepted; beyond them a payload is a typo.
const MAX_BATCH: u32 = 65_536;
const MAX_EPOCHS: u32 = 10_000;
const MAX_TTA: u32 = 64;

impl CnnSpec {
    /// Parses and validates a payload for `kind`.
    pub fn from_json(kind: CnnKind, value: &serde_json::Value) -> Result<CnnSpec, SpecError> {
        let spec: CnnSpec = serde_json::from_value(value.clone()).map_err(|e| SpecError::Json {
            kind: kind.name(),
            message: e.to_string(),
        })?;
        spec.validate(kind)?;
        Ok(spec)
    }

    /// The parsed architecture.
    pub fn arch(&self) -> Result<Arch, SpecError> {
        Arch::parse(&self.arch)
    }

    /// `image_size`, or the architecture's design resolution.
    pub fn image_size(&self) -> Result<u32, SpecError> {
        Ok(match self.image_size {
            Some(s) => s,
            None => self.arch()?.default_image_size(),
        })
    }

    pub fn eval_batch_size(&self) -> u32 {
        self.eval_batch_size
            .unwrap_or(self.batch_size.saturating_mul(2))
    }

    /// Checks every field for `kind`.
    pub fn validate(&self, kind: CnnKind) -> Result<(), SpecError> {
        let field = |field: &str, message: String| SpecError::Field {
            kind: kind.name(),
            field: field.to_string(),
            message,
        };
        let range = |name: &str, v: f64, lo: f64, hi: f64, what: &str| {
            if v.is_finite() && v >= lo && v <= hi {
                Ok(())
            } else {
                Err(field(name, format!("expected {what}, found {v}")))
            }
        };
        if self.dataset.trim().is_empty() {
            return Err(field(
                "dataset",
                "expected a dataset hash or name, found an empty string".into(),
            ));
        }
        let arch = self.arch()?;
        arch.check_image_size(self.image_size()?)?;
        let k = self.folds.k;
        if k < 2 {
            return Err(field(
                "folds.k",
                format!("expected at least 2 folds, found {k}"),
            ));
        }
        if self.fold >= k {
            return Err(field(
                "fold",
                format!(
                    "fold index {} out of range for {k} folds; expected 0..={}",
                    self.fold,
                    k - 1
                ),
            ));
        }
        if !(1..=MAX_EPOCHS).contains(&self.epochs) {
            return Err(field(
                "epochs",
                format!("expected 1 to {MAX_EPOCHS}, found {}", self.epochs),
            ));
        }
        if !(2..=MAX_BATCH).contains(&self.batch_size) {
            return Err(field(
                "batch_size",
                format!(
                    "expected 2 to {MAX_BATCH} (batch norm needs two images), found {}",
                    self.batch_size
                ),
            ));
        }
        if let Some(e) = self.eval_batch_size {
            if !(1..=MAX_BATCH).contains(&e) {
                return Err(field(
                    "eval_batch_size",
                    format!("expected 1 to {MAX_BATCH}, found {e}"),
                ));
            }
        }
        if !(1..=1024).contains(&self.accumulate) {
            return Err(field(
                "accumulate",
                format!(
                    "expected 1 to 1024 batches per step, found {}",
                    self.accumulate
                ),
            ));
        }
        if self.cuda_graph && self.accumulate != 1 {
            return Err(field(
                "cuda_graph",
                format!(
                    "a captured step holds one batch: expected accumulate 1 with cuda_graph, found {}",
                    self.accumulate
                ),
            ));
        }
        let o = &self.optimizer;
        range(
            "optimizer.lr",
            o.lr(),
            1e-12,
            100.0,
            "a positive learning rate up to 100",
        )?;
        range(
            "optimizer.weight_decay",
            o.weight_decay(),
            0.0,
            10.0,
            "a weight decay from 0 to 10",
        )?;
        range(
            "optimizer.momentum",
            o.momentum(),
            0.0,
            0.999_999,
            "a momentum in [0, 1)",
        )?;
        let (b1, b2) = o.betas();
        range("optimizer.betas", b1, 0.0, 0.999_999, "betas in [0, 1)")?;
        range("optimizer.betas", b2, 0.0, 0.999_999_999, "betas in [0, 1)")?;
        range("optimizer.eps", o.eps(), 1e-30, 1.0, "an epsilon in (0, 1]")?;
        if o.name == OptimizerName::Adamw && (o.momentum.is_some() || o.nesterov) {
            return Err(field(
                "optimizer",
                "momentum and nesterov are SGD settings, found them with adamw".into(),
            ));
        }
        if o.name == OptimizerName::Sgd && (o.betas.is_some() || o.eps.is_some()) {
            return Err(field(
                "optimizer",
                "betas and eps are AdamW settings, found them with sgd".into(),
            ));
        }
        let s = &self.schedule;
        range(
            "schedule.pct_start",
            s.pct_start,
            0.0,
            1.0,
            "a share from 0 to 1",
        )?;
        range(
            "schedule.div_factor",
            s.div_factor,
            1.0,
            1e6,
            "a factor from 1 to 1e6",
        )?;
        range(
            "schedule.final_div_factor",
            s.final_div_factor,
            1.0,
            1e12,
            "a factor from 1 to 1e12",
        )?;
        range(
            "schedule.base_fraction",
            s.base_fraction,
            0.0,
            1.0,
            "a fraction from 0 to 1",
        )?;
        range(
            "schedule.cycle_epochs",
            s.cycle_epochs,
            0.01,
            f64::from(MAX_EPOCHS),
            "a positive number of epochs",
        )?;
        if s.step_epochs == 0 {
            return Err(field(
                "schedule.step_epochs",
                "expected at least 1, found 0".into(),
            ));
        }
        range(
            "schedule.gamma",
            s.gamma,
            1e-6,
            1.0,
            "a decay factor in (0, 1]",
        )?;
        range(
            "schedule.warmup_epochs",
            s.warmup_epochs,
            0.0,
            f64::from(self.epochs),
            "epochs from 0 to the job's epochs",
        )?;
        range(
            "label_smoothing",
            self.label_smoothing,
            0.0,
            0.5,
            "a smoothing from 0 to 0.5",
        )?;
        if let Some(ema) = self.ema {
            range("ema", ema, 0.0, 0.999_999_9, "a decay in [0, 1)")?;
        }
        let a = &self.augment;
        range(
            "augment.rotate",
            a.rotate,
            0.0,
            180.0,
            "degrees from 0 to 180",
        )?;
        range("augment.shear", a.shear, 0.0, 45.0, "degrees from 0 to 45")?;
        range(
            "augment.stretch",
            a.stretch,
            0.0,
            0.9,
            "a fraction from 0 to 0.9",
        )?;
        if a.cutout_holes > 64 {
            return Err(field(
                "augment.cutout_holes",
                format!("expected at most 64 holes, found {}", a.cutout_holes),
            ));
        }
        range(
            "augment.cutout_size",
            a.cutout_size,
            0.0,
            1.0,
            "a fraction from 0 to 1",
        )?;
        range(
            "augment.mixup",
            a.mixup,
            0.0,
            100.0,
            "a Beta α from 0 (off) to 100",
        )?;
        range(
            "augment.cutmix",
            a.cutmix,
            0.0,
            100.0,
            "a Beta α from 0 (off) to 100",
        )?;
        range(
            "augment.mix_prob",
            a.mix_prob,
            0.0,
            1.0,
            "a probability from 0 to 1",
        )?;
        range(
            "augment.brightness",
            a.brightness,
            0.0,
            1.0,
            "a factor range from 0 to 1",
        )?;
        range(
            "augment.contrast",
            a.contrast,
            0.0,
            1.0,
            "a factor range from 0 to 1",
        )?;
        range(
            "augment.hue",
            a.hue,
            0.0,
            0.5,
            "a share of the colour wheel from 0 to 0.5",
        )?;
        range(
            "augment.vignette",
            a.vignette,
            0.0,
            1.0,
            "a probability from 0 to 1",
        )?;
        if !(1..=MAX_TTA).contains(&self.tta) {
            return Err(field(
                "tta",
                format!("expected 1 to {MAX_TTA} passes, found {}", self.tta),
            ));
        }
        if let Some(w) = &self.init_weights {
            let given = [w.job.is_some(), w.path.is_some(), w.dependency.is_some()];
            if given.iter().filter(|&&g| g).count() != 1 {
                return Err(field(
                    "init_weights",
                    "expected exactly one of \"job\" (a job id), \"dependency\" (a dependency's name) or \"path\"".into(),
                ));
            }
            for (name, value) in [
                ("init_weights.path", &w.path),
                ("init_weights.dependency", &w.dependency),
            ] {
                if value.as_deref().is_some_and(|p| p.trim().is_empty()) {
                    return Err(field(
                        name,
                        "expected a non-empty string, found an empty one".into(),
                    ));
                }
            }
        }
        if let Some(t) = self.loader_threads {
            if !(1..=256).contains(&t) {
                return Err(field(
                    "loader_threads",
                    format!("expected 1 to 256, found {t}"),
                ));
            }
        }
        match (kind, &self.sweep) {
            (CnnKind::Cnn, Some(_)) => Err(field(
                "sweep",
                "a sweep belongs to lr-find jobs, found it in a cnn job".into(),
            )),
            (CnnKind::LrFind, Some(sw)) => {
                range("sweep.min_lr", sw.min_lr, 1e-12, 100.0, "a positive rate")?;
                range(
                    "sweep.max_lr",
                    sw.max_lr,
                    sw.min_lr,
                    1e3,
                    "a rate above min_lr",
                )?;
                if sw.max_lr <= sw.min_lr {
                    return Err(field(
                        "sweep.max_lr",
                        format!(
                            "expected a rate above min_lr {}, found {}",
                            sw.min_lr, sw.max_lr
                        ),
                    ));
                }
                if !(5..=100_000).contains(&sw.steps) {
                    return Err(field(
                        "sweep.steps",
                        format!("expected 5 to 100000 steps, found {}", sw.steps),
                    ));
                }
                range(
                    "sweep.smoothing",
                    sw.smoothing,
                    0.0,
                    0.999,
                    "a weight in [0, 1)",
                )?;
                range("sweep.diverge", sw.diverge, 1.0, 1e6, "a factor above 1")?;
                Ok(())
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn minimal() -> serde_json::Value {
        json!({ "dataset": "isic", "fold": 0, "arch": "efficientnet-b0" })
    }

    #[test]
    fn a_minimal_payload_takes_the_defaults() {
        let s = CnnSpec::from_json(CnnKind::Cnn, &minimal()).unwrap();
        assert_eq!((s.epochs, s.batch_size, s.eval_batch_size()), (10, 32, 64));
        assert_eq!(s.image_size().unwrap(), 224);
        assert_eq!(s.optimizer.lr(), 1e-3);
        assert_eq!(s.folds.k, 5);
        assert!(s.augment.hflip && s.augment.vflip && s.augment.mixup == 0.0);
        assert!(!s.cuda_graph && !s.optimizer.decay_1d);
        assert_eq!(s.checkpoint_every, 1);
    }

    #[test]
    fn errors_name_the_field_and_what_was_found() {
        let mut p = minimal();
        p["schedule"] = json!({ "name": "cyclic", "base_fraction": 2.0 });
        let e = CnnSpec::from_json(CnnKind::Cnn, &p)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("schedule.base_fraction") && e.contains("found 2"),
            "{e}"
        );
        let mut p = minimal();
        p["cuda_graph"] = json!(true);
        p["accumulate"] = json!(4);
        let e = CnnSpec::from_json(CnnKind::Cnn, &p)
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "cnn payload field \"cuda_graph\": a captured step holds one batch: expected accumulate 1 with cuda_graph, found 4"
        );
        let mut p = minimal();
        p["init_weights"] = json!({ "job": 3, "path": "/w.ot" });
        let e = CnnSpec::from_json(CnnKind::Cnn, &p)
            .unwrap_err()
            .to_string();
        assert!(e.contains("exactly one"), "{e}");
        let mut p = minimal();
        p["sweep"] = json!({ "min_lr": 1.0, "max_lr": 0.5 });
        let e = CnnSpec::from_json(CnnKind::LrFind, &p)
            .unwrap_err()
            .to_string();
        assert!(e.contains("sweep.max_lr"), "{e}");
        assert!(CnnSpec::from_json(CnnKind::LrFind, &minimal()).is_ok());
        let e = CnnSpec::from_json(CnnKind::Cnn, &json!({ "fold": 0 })).unwrap_err();
        assert!(e.to_string().contains("missing field"), "{e}");
    }
}
