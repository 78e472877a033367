//! The training loop of one fold (issue 4, items 1 and 4): AdamW with a one-cycle schedule on
//! BCE-with-logits, per-epoch train loss, validation loss and AUC, then out-of-fold predictions
//! for the fold's validation rows and predictions for the test rows. Deterministic for a seed
//! (`tch::manual_seed` plus a seeded shuffle).
//!
//! Everything here runs on the calling thread: tch's `Tensor` is `Send` but not `Sync` and grad
//! mode is thread-local, so a training loop must stay on one thread. Still to come (issue 4):
//! augmentation and prefetch threads, EMA, mixed precision, other optimizers and schedules, TTA.

use std::path::PathBuf;
use std::time::Instant;

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};
use stackhive_data::auc::roc_auc;
use stackhive_data::cache::ImageCache;
use tch::nn::{self, OptimizerConfig, VarStore};
use tch::{Device, Kind, Reduction, Tensor};

use crate::arch::Arch;
use crate::data::{make_batch, Examples, FoldData};
use crate::error::TrainerError;
use crate::models::Net;
use crate::schedule::OneCycle;
use crate::weights::{load_fitting, LoadReport};

/// Losses are read back (a device sync) once per this many steps, not every step.
const CHECK_EVERY: usize = 8;

/// Where initial weights come from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct InitWeights {
    /// A checkpoint saved by `VarStore::save` (e.g. a previous job's `model.ot`).
    pub path: PathBuf,
    /// Also copy the overlapping slice of tensors whose shapes differ.
    pub slice: bool,
}

/// How to train one fold.
#[derive(Clone, Debug)]
pub struct TrainConfig {
    pub arch: Arch,
    /// Side of the (square) training images; must equal the cache's.
    pub image_size: u32,
    pub epochs: usize,
    pub batch_size: usize,
    pub eval_batch_size: usize,
    /// Peak rate of the one-cycle schedule.
    pub max_lr: f64,
    /// AdamW's decoupled weight decay.
    pub weight_decay: f64,
    pub seed: u64,
    /// Join the tabular metadata to the image embedding.
    pub metadata: bool,
    /// Random horizontal and vertical flips of training images.
    pub flips: bool,
    pub device: Device,
    pub init: Option<InitWeights>,
}

impl TrainConfig {
    /// Defaults for `arch` at `image_size`: 10 epochs of batch 32 at a peak rate of 1e-3 on CPU.
    pub fn new(arch: Arch, image_size: u32) -> TrainConfig {
        TrainConfig {
            arch,
            image_size,
            epochs: 10,
            batch_size: 32,
            eval_batch_size: 64,
            max_lr: 1e-3,
            weight_decay: 1e-2,
            seed: 0,
            metadata: false,
            flips: true,
            device: Device::Cpu,
            init: None,
        }
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
        if !(self.max_lr.is_finite() && self.max_lr > 0.0) {
            return bad(format!(
                "expected a positive finite learning rate, found {}",
                self.max_lr
            ));
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            return bad(format!(
                "expected a non-negative weight decay, found {}",
                self.weight_decay
            ));
        }
        Ok(())
    }
}

/// One epoch's figures.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EpochMetrics {
    /// 1-based.
    pub epoch: usize,
    pub train_loss: f64,
    pub valid_loss: f64,
    /// `None` when the validation rows hold only one class.
    pub valid_auc: Option<f64>,
    /// Learning rate of the epoch's last step.
    pub lr: f64,
    pub seconds: f64,
}

/// What a fold's training produced.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainOutcome {
    pub epochs: Vec<EpochMetrics>,
    /// Train-table rows of the out-of-fold predictions (the fold's validation rows).
    pub oof_rows: Vec<usize>,
    /// Probability of the positive class per `oof_rows` entry, from the final weights.
    pub oof: Vec<f32>,
    /// Probability per test row, in test-table order.
    pub test: Vec<f32>,
    pub steps: usize,
    /// What the initial weights filled, when there were any.
    pub init: Option<LoadReport>,
}

/// A trained network and its variables (save them with `vs.save`).
#[derive(Debug)]
pub struct Trained {
    pub vs: VarStore,
    pub net: Net,
    pub outcome: TrainOutcome,
}

/// Trains `cfg.arch` on `data.train`, validating on `data.valid` after every epoch and calling
/// `on_epoch` with its figures; predicts the validation and test rows with the final weights.
pub fn train(
    cfg: &TrainConfig,
    data: &FoldData<'_>,
    on_epoch: &mut dyn FnMut(&EpochMetrics),
) -> Result<Trained, TrainerError> {
    cfg.validate()?;
    if data.cache.size() != cfg.image_size {
        return Err(TrainerError::CacheSize {
            expected: cfg.image_size,
            found: data.cache.size(),
        });
    }
    let n = data.train.len();
    // The last partial batch is dropped when it has a single example (batch norm needs two).
    let steps_per_epoch = n / cfg.batch_size + usize::from(n % cfg.batch_size >= 2);
    if steps_per_epoch == 0 {
        return Err(TrainerError::EmptySplit {
            fold: data.fold,
            what: "training",
            min: 2,
        });
    }
    seed_everything(cfg.seed, cfg.device);
    let vs = VarStore::new(cfg.device);
    let net = Net::new(&vs.root(), &cfg.arch, cfg.metadata);
    let init = cfg
        .init
        .as_ref()
        .map(|w| load_fitting(&vs, &w.path, w.slice))
        .transpose()?;
    if let Some(report) = &init {
        tracing::info!(report = %report.summary(), "initial weights");
    }
    let schedule = OneCycle::new(cfg.max_lr, cfg.epochs * steps_per_epoch);
    let adamw = nn::AdamW {
        wd: cfg.weight_decay,
        ..Default::default()
    };
    let mut opt = adamw.build(&vs, schedule.lr(0))?;
    let mut rng = StdRng::seed_from_u64(cfg.seed);
    let mut order: Vec<usize> = (0..n).collect();
    let mut epochs = Vec::with_capacity(cfg.epochs);
    let mut step = 0;
    let mut last_valid = Vec::new();
    for epoch in 1..=cfg.epochs {
        let started = Instant::now();
        order.shuffle(&mut rng);
        let mut losses = LossLog::default();
        for idx in order.chunks(cfg.batch_size).filter(|c| c.len() >= 2) {
            let lr = schedule.lr(step);
            opt.set_lr(lr);
            let batch = make_batch(data.cache, &data.train, idx, cfg.device, cfg.flips);
            let labels = batch
                .labels
                .as_ref()
                .expect("training examples are labelled");
            let logits = net.forward_t(&batch.images, Some(&batch.meta), true);
            let loss = logits.binary_cross_entropy_with_logits::<Tensor>(
                labels,
                None,
                None,
                Reduction::Mean,
            );
            opt.backward_step(&loss);
            losses.push(step, epoch, lr, loss.detach());
            if losses.pending.len() >= CHECK_EVERY {
                losses.check()?;
            }
            step += 1;
        }
        losses.check()?;
        let (probs, valid_loss) = predict(
            &net,
            data.cache,
            &data.valid,
            cfg.eval_batch_size,
            cfg.device,
        );
        check_finite(&probs, "validation", epoch)?;
        let m = EpochMetrics {
            epoch,
            train_loss: losses.mean(),
            valid_loss: valid_loss.unwrap_or(f64::NAN),
            valid_auc: roc_auc(&data.valid.labels, &probs),
            lr: schedule.lr(step.saturating_sub(1)),
            seconds: started.elapsed().as_secs_f64(),
        };
        tracing::info!(epoch, train_loss = m.train_loss, valid_loss = m.valid_loss, valid_auc = ?m.valid_auc, "epoch");
        on_epoch(&m);
        epochs.push(m);
        last_valid = probs;
    }
    let (test, _) = predict(
        &net,
        data.cache,
        &data.test,
        cfg.eval_batch_size,
        cfg.device,
    );
    check_finite(&test, "test", cfg.epochs)?;
    let outcome = TrainOutcome {
        epochs,
        oof_rows: data.valid_rows.clone(),
        oof: last_valid,
        test,
        steps: step,
        init,
    };
    Ok(Trained { vs, net, outcome })
}

/// Probabilities for every example of `ex` in order (eval mode, no gradients), and the mean
/// BCE loss when the examples are labelled.
pub fn predict(
    net: &Net,
    cache: &ImageCache,
    ex: &Examples,
    batch_size: usize,
    device: Device,
) -> (Vec<f32>, Option<f64>) {
    let all: Vec<usize> = (0..ex.len()).collect();
    let mut probs = Vec::with_capacity(ex.len());
    let mut loss_sum = Tensor::zeros([], (Kind::Double, device));
    tch::no_grad(|| {
        for idx in all.chunks(batch_size.max(1)) {
            let batch = make_batch(cache, ex, idx, device, false);
            let logits = net.forward_t(&batch.images, Some(&batch.meta), false);
            if let Some(labels) = &batch.labels {
                let l = logits.binary_cross_entropy_with_logits::<Tensor>(
                    labels,
                    None,
                    None,
                    Reduction::Sum,
                );
                loss_sum += l.to_kind(Kind::Double);
            }
            let p = Vec::<f32>::try_from(logits.sigmoid().to_device(Device::Cpu))
                .expect("float logits");
            probs.extend(p);
        }
    });
    let loss =
        (ex.is_labelled() && !ex.is_empty()).then(|| loss_sum.double_value(&[]) / ex.len() as f64);
    (probs, loss)
}

/// Predictions go to the coordinator, which refuses NaN: fail the job here, naming the epoch.
fn check_finite(probs: &[f32], what: &'static str, epoch: usize) -> Result<(), TrainerError> {
    let count = probs.iter().filter(|p| !p.is_finite()).count();
    if count > 0 {
        return Err(TrainerError::NonFinitePredictions {
            what,
            epoch,
            count,
            total: probs.len(),
        });
    }
    Ok(())
}

/// Seeds torch's generators (CPU and CUDA); the shuffle has its own seeded generator.
pub fn seed_everything(seed: u64, device: Device) {
    tch::manual_seed(seed as i64);
    if device.is_cuda() {
        tch::Cuda::manual_seed_all(seed);
    }
}

/// Step losses kept on the device and read back in groups, so a NaN is still pinned to its
/// step and learning rate without a device sync per step.
#[derive(Default)]
struct LossLog {
    pending: Vec<(usize, usize, f64, Tensor)>,
    sum: f64,
    count: usize,
}

impl LossLog {
    fn push(&mut self, step: usize, epoch: usize, lr: f64, loss: Tensor) {
        self.pending.push((step, epoch, lr, loss));
    }

    fn check(&mut self) -> Result<(), TrainerError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let stacked = Tensor::stack(&self.pending.iter().map(|p| &p.3).collect::<Vec<_>>(), 0);
        let values = Vec::<f64>::try_from(stacked.to_kind(Kind::Double).to_device(Device::Cpu))
            .expect("float losses");
        for ((step, epoch, lr, _), loss) in self.pending.drain(..).zip(values) {
            if !loss.is_finite() {
                return Err(TrainerError::NonFiniteLoss {
                    step,
                    epoch,
                    lr,
                    loss,
                });
            }
            self.sum += loss;
            self.count += 1;
        }
        Ok(())
    }

    fn mean(&self) -> f64 {
        self.sum / self.count.max(1) as f64
    }
}
