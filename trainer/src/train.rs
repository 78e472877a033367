//! The training loop of one fold (issue 4, items 1 and 4): BCE-with-logits on (optionally
//! smoothed) labels, the optimizer and schedule the config names, gradient accumulation, a
//! moving average of the weights, per-epoch train loss, validation loss and AUC, then
//! out-of-fold predictions for the fold's validation rows and predictions for the test rows.
//! It reports through `TrainerEvent`s: `start`, throttled `progress`, one `epoch` per epoch.
//! Deterministic for a seed on CPU (every epoch seeds torch and the shuffle afresh), so a run
//! resumed from a checkpoint (`resume`) after epoch k trains epochs k+1.. as if never stopped.
//!
//! Batches are made in one place (the "Batches" section below) and predictions in one function
//! (`predict`), so the threaded loader and test-time augmentation each replace one spot. bf16
//! autocast and channels-last are resolved in the config but applied elsewhere (the accel
//! shim). Everything here runs on the calling thread: tch's `Tensor` is `Send` but not `Sync`
//! and grad mode is thread-local, so a training loop must stay on one thread.

use std::path::Path;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};
use stackhive_data::auc::roc_auc;
use stackhive_data::cache::ImageCache;
use stackhive_spec::{EpochMetrics, Progress, TrainerEvent};
use tch::nn::VarStore;
use tch::{Device, Kind, Reduction, Tensor};

use crate::accel::{vs_to_channels_last, Autocast};
use crate::config::{CheckpointPlan, TrainConfig};
use crate::data::{Batch, Examples, FoldData};
use crate::ema::Ema;
use crate::error::TrainerError;
use crate::graphed::GraphedTrainer;
use crate::loader::{Loader, LoaderConfig};
use crate::mix::Mixer;
use crate::models::Net;
use crate::optim::Optim;
use crate::resume::{self, Resume, ResumeMeta};
use crate::schedule::Schedule;
use crate::tta::tta_average;
use crate::weights::{load_fitting, LoadReport};

/// Losses are read back (a device sync) once per this many steps, not every step.
const CHECK_EVERY: usize = 8;
/// Batches each loader thread builds ahead of the training step.
const PREFETCH: usize = 2;

/// What a fold's training produced.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainOutcome {
    pub epochs: Vec<EpochMetrics>,
    /// Train-table rows of the out-of-fold predictions (the fold's validation rows).
    pub oof_rows: Vec<usize>,
    /// Probability of the positive class per `oof_rows` entry, from the final weights (the
    /// averaged ones with EMA).
    pub oof: Vec<f32>,
    /// Probability per test row, in test-table order.
    pub test: Vec<f32>,
    /// Optimizer steps taken.
    pub steps: u64,
    /// What the initial weights filled, when there were any.
    pub init: Option<LoadReport>,
    /// The epoch a resume checkpoint brought the run to.
    pub resumed_from: Option<u32>,
}

/// A trained network and the variables to save (`vs.save`): the averaged ones with EMA.
#[derive(Debug)]
pub struct Trained {
    pub vs: VarStore,
    pub net: Net,
    pub outcome: TrainOutcome,
}

/// Trains `cfg.arch` on `data.train`, validating on `data.valid` after every epoch; predicts
/// the validation and test rows with the final weights. Events go to `on_event`.
pub fn train(
    cfg: &TrainConfig,
    data: &FoldData<'_>,
    on_event: &mut dyn FnMut(&TrainerEvent),
) -> Result<Trained, TrainerError> {
    check_inputs(cfg, data)?;
    let n = data.train.len();
    let graphed = cfg.graphed();
    // A captured graph replays one batch shape: partial batches are dropped.
    let min_batch = if graphed { cfg.batch_size } else { 2 };
    let batches = if graphed {
        n / cfg.batch_size
    } else {
        batch_count(n, cfg.batch_size)
    };
    let steps_per_epoch = batches.div_ceil(cfg.accumulate);
    let total = cfg.epochs * steps_per_epoch;
    let mut s = Session::start(cfg)?;
    let mut ema = new_ema(cfg, &s)?;
    let resumed = match &cfg.resume {
        Some(path) => resume_or_restart(path, cfg, &mut s, &mut ema)?,
        None => None,
    };
    let schedule = Schedule::from_spec(&cfg.schedule, cfg.optimizer.lr, steps_per_epoch, total);
    let resumed_from = resumed.as_ref().map(|m| m.epoch);
    on_event(&s.start_event(cfg, steps_per_epoch as u64, cfg.epochs as u32, resumed_from));

    let mut clock = Clock::new(cfg.progress_every);
    let (mut epochs, mut step) = match resumed {
        Some(m) => {
            s.init = m.init;
            (m.epochs, m.step as usize)
        }
        None => (Vec::with_capacity(cfg.epochs), 0),
    };
    let mut last_valid = Vec::new();
    let mut last_auc = epochs.last().and_then(|m: &EpochMetrics| m.valid_auc);
    let mixer = Mixer::from_spec(&cfg.augment, cfg.seed)?;
    let mut graph = graphed.then(GraphedTrainer::default);
    for epoch in epochs.len() + 1..=cfg.epochs {
        let started = Instant::now();
        // Every epoch draws from generators seeded for that epoch alone (the shuffle, dropout,
        // stochastic depth; augmentation and mixing derive theirs from (seed, epoch, position)),
        // so a run resumed after epoch k repeats epochs k+1.. exactly.
        let epoch_seed = epoch_seed(cfg.seed, epoch as u64);
        seed_everything(epoch_seed, cfg.device);
        let mut order: Vec<usize> = (0..n).collect();
        order.shuffle(&mut StdRng::seed_from_u64(epoch_seed));
        let plan: Vec<Vec<usize>> = order
            .chunks(cfg.batch_size)
            .filter(|c| c.len() >= min_batch)
            .map(<[usize]>::to_vec)
            .collect();
        let mut losses = LossLog::default();
        let mut images = 0;
        let loader_cfg = LoaderConfig {
            augment: Some(cfg.augment.clone()),
            seed: cfg.seed,
            epoch: epoch as u64,
            threads: cfg.loader_threads(),
            prefetch: PREFETCH,
        };
        // Loader threads decode and augment ahead; this thread only trains (tensors stay here).
        std::thread::scope(|scope| -> Result<(), TrainerError> {
            let mut loader = Loader::scoped(scope, data.cache, &data.train, plan, &loader_cfg)?;
            let mut index = 0u64;
            loop {
                let mut group = Vec::with_capacity(cfg.accumulate);
                for host in loader.by_ref().take(cfg.accumulate) {
                    let mut batch = host?.to_device(cfg.device, cfg.channels_last);
                    if let Some(m) = &mixer {
                        m.apply(&mut batch, epoch as u64, index)?;
                    }
                    index += 1;
                    group.push(batch);
                }
                if group.is_empty() {
                    return Ok(());
                }
                let lr = schedule.lr(step);
                let loss = match &mut graph {
                    Some(g) => g.step(&mut s, cfg, &group[0], lr)?,
                    None => s.step(cfg, &group, lr)?,
                };
                if let Some(ema) = &mut ema {
                    ema.update()?;
                }
                images += group
                    .iter()
                    .map(|b| b.images.size()[0] as usize)
                    .sum::<usize>();
                losses.push(step, epoch, lr, loss);
                step += 1;
                let due = clock.due();
                if due || losses.pending.len() >= CHECK_EVERY {
                    losses.check()?;
                }
                if due {
                    on_event(&TrainerEvent::Progress(Progress {
                        epoch: epoch as u32,
                        epochs: cfg.epochs as u32,
                        step: step as u64,
                        steps: total as u64,
                        lr,
                        loss: losses.mean(),
                        valid_auc: last_auc,
                        images_per_s: rate(images, started),
                        resumed_from,
                    }));
                }
            }
        })?;
        losses.check()?;
        let images_per_s = rate(images, started);
        let eval_net = ema.as_ref().map_or(&s.net, |e| &e.net);
        let (probs, valid_loss) = predict(eval_net, cfg, data.cache, &data.valid)?;
        let last_step = step.saturating_sub(1);
        let at = (epoch, last_step, schedule.lr(last_step));
        check_finite(&probs, "validation", at)?;
        last_auc = roc_auc(&data.valid.labels, &probs);
        let m = EpochMetrics {
            epoch: epoch as u32,
            train_loss: losses.mean(),
            // The validation rows are labelled and never empty (FoldData checks).
            valid_loss: valid_loss.unwrap_or(f64::NAN),
            valid_auc: last_auc,
            lr: at.2,
            seconds: started.elapsed().as_secs_f64(),
            images_per_s,
        };
        tracing::info!(epoch, train_loss = m.train_loss, valid_loss = m.valid_loss, valid_auc = ?m.valid_auc, "epoch");
        on_event(&TrainerEvent::Epoch(m.clone()));
        epochs.push(m);
        last_valid = probs;
        if let Some(plan) = cfg
            .checkpoint
            .as_ref()
            .filter(|p| due_checkpoint(p, epoch, cfg))
        {
            let meta = ResumeMeta {
                format: resume::FORMAT,
                arch: cfg.arch.name(),
                image_size: cfg.image_size,
                seed: cfg.seed,
                optimizer: s.opt.name().to_string(),
                epoch: epoch as u32,
                step: step as u64,
                ema_updates: ema.as_ref().map(Ema::updates),
                epochs: epochs.clone(),
                init: s.init.clone(),
            };
            // A checkpoint only saves time on a retry: failing to write one must not fail the run.
            match resume::save(&plan.path, &meta, &s.vs, ema.as_ref(), &s.opt) {
                Ok(Some(path)) => on_event(&TrainerEvent::Checkpoint {
                    path,
                    epoch: epoch as u32,
                }),
                Ok(None) => {}
                Err(e) => tracing::warn!(error = %e, "resume checkpoint not written"),
            }
        }
    }
    if last_valid.is_empty() {
        // Resumed after the last epoch (the attempt died predicting): validate once more.
        let eval_net = ema.as_ref().map_or(&s.net, |e| &e.net);
        last_valid = predict(eval_net, cfg, data.cache, &data.valid)?.0;
    }
    let (vs, net) = match ema {
        Some(e) => (e.vs, e.net),
        None => (s.vs, s.net),
    };
    let (test, _) = predict(&net, cfg, data.cache, &data.test)?;
    let last_step = step.saturating_sub(1);
    check_finite(
        &test,
        "test",
        (cfg.epochs, last_step, schedule.lr(last_step)),
    )?;
    let outcome = TrainOutcome {
        epochs,
        oof_rows: data.valid_rows.clone(),
        oof: last_valid,
        test,
        steps: step as u64,
        init: s.init,
        resumed_from,
    };
    Ok(Trained { vs, net, outcome })
}

fn new_ema(cfg: &TrainConfig, s: &Session) -> Result<Option<Ema>, TrainerError> {
    cfg.ema
        .map(|decay| Ema::new(&s.vs, &cfg.arch, cfg.metadata, decay))
        .transpose()
}

/// Loads the resume checkpoint at `path` into the fresh run `s` (and `ema`) and returns its
/// header. A checkpoint that cannot be read or belongs to another run is not fatal: the run
/// starts over from a rebuilt session, and the log says why.
fn resume_or_restart(
    path: &Path,
    cfg: &TrainConfig,
    s: &mut Session,
    ema: &mut Option<Ema>,
) -> Result<Option<ResumeMeta>, TrainerError> {
    let loaded = Resume::load(path, cfg, s.opt.name()).and_then(|r| {
        r.apply(path, &s.vs, ema.as_mut(), &mut s.opt)?;
        Ok(r.meta)
    });
    match loaded {
        Ok(meta) => {
            tracing::info!(epoch = meta.epoch, step = meta.step, "resumed");
            Ok(Some(meta))
        }
        Err(e) => {
            tracing::warn!(error = %e, "starting over");
            // A failed copy may have filled part of the run: rebuild it whole.
            *s = Session::start(cfg)?;
            *ema = new_ema(cfg, s)?;
            Ok(None)
        }
    }
}

/// Whether the epoch just finished gets a resume checkpoint: every `every` epochs and the last.
fn due_checkpoint(plan: &CheckpointPlan, epoch: usize, cfg: &TrainConfig) -> bool {
    epoch.is_multiple_of(plan.every.max(1)) || epoch == cfg.epochs
}

/// The seed of one epoch's generators, mixed so neighbouring epochs and seeds share nothing.
fn epoch_seed(seed: u64, epoch: u64) -> u64 {
    let mut z = seed ^ epoch.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The checks `train` and the LR finder share: a sound config, a cache at its size, and
/// enough training rows for one batch.
pub(crate) fn check_inputs(cfg: &TrainConfig, data: &FoldData<'_>) -> Result<(), TrainerError> {
    cfg.validate()?;
    if data.cache.size() != cfg.image_size {
        return Err(TrainerError::CacheSize {
            expected: cfg.image_size,
            found: data.cache.size(),
        });
    }
    let min = if cfg.graphed() { cfg.batch_size } else { 2 };
    if data.train.len() < min {
        return Err(TrainerError::EmptySplit {
            fold: data.fold,
            what: "training",
            min,
        });
    }
    Ok(())
}

/// Batches an epoch of `n` examples makes: the last partial batch is dropped when it has a
/// single example (batch norm needs two).
pub(crate) fn batch_count(n: usize, batch_size: usize) -> usize {
    n / batch_size + usize::from(n % batch_size >= 2)
}

fn rate(images: usize, since: Instant) -> f64 {
    images as f64 / since.elapsed().as_secs_f64().max(1e-9)
}

/// The network, its optimizer and the initial weights' report: what a run starts from.
pub(crate) struct Session {
    pub vs: VarStore,
    pub net: Net,
    pub opt: Optim,
    pub init: Option<LoadReport>,
}

impl Session {
    /// Seeds the generators, builds the network, loads the initial weights and the optimizer.
    pub fn start(cfg: &TrainConfig) -> Result<Session, TrainerError> {
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
        if cfg.channels_last {
            // Before the optimizer: its state tensors copy the parameters' layout.
            vs_to_channels_last(&vs)?;
        }
        let opt = Optim::with_capturable(&vs, &cfg.optimizer, cfg.graphed())?;
        Ok(Session { vs, net, opt, init })
    }

    pub fn start_event(
        &self,
        cfg: &TrainConfig,
        steps_per_epoch: u64,
        epochs: u32,
        resumed_from: Option<u32>,
    ) -> TrainerEvent {
        let parameters = self
            .vs
            .trainable_variables()
            .iter()
            .map(|t| t.numel() as u64)
            .sum();
        TrainerEvent::Start {
            device: device_name(cfg.device),
            parameters,
            steps_per_epoch,
            epochs,
            init: self.init.as_ref().map(LoadReport::summary),
            resumed_from,
        }
    }

    /// One optimizer step at rate `lr` over `group`, batches already on the device (gradient
    /// accumulation: each batch's loss scaled by 1 / `group.len()`). The forward pass and the
    /// loss run under bf16 autocast when the config asks; backward runs outside it. Returns the
    /// step's mean loss, detached and still on the device.
    pub fn step(
        &mut self,
        cfg: &TrainConfig,
        group: &[Batch],
        lr: f64,
    ) -> Result<Tensor, TrainerError> {
        self.opt.set_lr(lr);
        self.opt.zero_grad()?;
        let scale = 1.0 / group.len() as f64;
        let mut total: Option<Tensor> = None;
        for batch in group {
            let labels = batch
                .labels
                .as_ref()
                .expect("training examples are labelled");
            let loss = batch_loss(&self.net, cfg, &batch.images, &batch.meta, labels)? * scale;
            loss.f_backward()?;
            let loss = loss.detach();
            total = Some(match total {
                Some(t) => t + loss,
                None => loss,
            });
        }
        self.opt.step()?;
        Ok(total.expect("an optimizer step has at least one batch"))
    }
}

/// A training batch's mean loss: the forward pass in train mode and BCE-with-logits against
/// the (smoothed) labels, under bf16 autocast when the config asks (backward runs outside it).
pub(crate) fn batch_loss(
    net: &Net,
    cfg: &TrainConfig,
    images: &Tensor,
    meta: &Tensor,
    labels: &Tensor,
) -> Result<Tensor, TrainerError> {
    let targets = smooth_labels(labels, cfg.label_smoothing);
    let _autocast = cfg.bf16.then(|| Autocast::bf16(cfg.device)).transpose()?;
    let logits = net.forward_t(images, Some(meta), true);
    Ok(logits
        .to_kind(Kind::Float)
        .f_binary_cross_entropy_with_logits::<Tensor>(&targets, None, None, Reduction::Mean)?)
}

/// Label smoothing for a binary target: `y·(1−ε) + ε/2`.
fn smooth_labels(labels: &Tensor, eps: f64) -> Tensor {
    if eps == 0.0 {
        labels.shallow_clone()
    } else {
        labels * (1.0 - eps) + eps / 2.0
    }
}

/// Probabilities for every example of `ex` in order (eval mode, no gradients), and the mean
/// BCE loss when the examples are labelled. The one prediction path: validation, out-of-fold
/// and test predictions all come through here. Batches come from the loader (no augmentation);
/// with `cfg.tta` > 1 each batch's probability is the mean over that many dihedral views
/// (`tta`), and the loss is that of the averaged probabilities.
pub fn predict(
    net: &Net,
    cfg: &TrainConfig,
    cache: &ImageCache,
    ex: &Examples,
) -> Result<(Vec<f32>, Option<f64>), TrainerError> {
    let all: Vec<usize> = (0..ex.len()).collect();
    let plan: Vec<Vec<usize>> = all
        .chunks(cfg.eval_batch_size.max(1))
        .map(<[usize]>::to_vec)
        .collect();
    let mut probs = Vec::with_capacity(ex.len());
    let mut loss_sum = Tensor::zeros([], (Kind::Double, cfg.device));
    let loader_cfg = LoaderConfig::eval(cfg.loader_threads());
    std::thread::scope(|scope| -> Result<(), TrainerError> {
        let loader = Loader::scoped(scope, cache, ex, plan, &loader_cfg)?;
        for host in loader {
            let batch = host?.to_device(cfg.device, cfg.channels_last);
            let p = tch::no_grad(|| -> Result<Tensor, TrainerError> {
                let _autocast = cfg.bf16.then(|| Autocast::bf16(cfg.device)).transpose()?;
                Ok(tta_average(&batch.images, cfg.tta as usize, |view| {
                    net.forward_t(view, Some(&batch.meta), false)
                        .to_kind(Kind::Float)
                        .sigmoid()
                }))
            })?;
            if let Some(labels) = &batch.labels {
                // Written out rather than `binary_cross_entropy`, which refuses (panics on) a NaN
                // probability: a diverged model must reach `check_finite`, which names the step.
                let q = p.clamp(1e-7, 1.0 - 1e-7);
                let l = labels * q.log() + (labels.neg() + 1.0) * (q.neg() + 1.0).log();
                loss_sum -= l.sum(Kind::Double);
            }
            probs.extend(Vec::<f32>::try_from(p.to_device(Device::Cpu))?);
        }
        Ok(())
    })?;
    let loss =
        (ex.is_labelled() && !ex.is_empty()).then(|| loss_sum.double_value(&[]) / ex.len() as f64);
    Ok((probs, loss))
}

/// Predictions go to the coordinator, which refuses NaN: fail the job here, naming the epoch.
/// `at` is the (epoch, step, learning rate) of the last optimizer step before the predictions.
fn check_finite(
    probs: &[f32],
    what: &'static str,
    at: (usize, usize, f64),
) -> Result<(), TrainerError> {
    let count = probs.iter().filter(|p| !p.is_finite()).count();
    if count > 0 {
        let (epoch, step, lr) = at;
        return Err(TrainerError::NonFinitePredictions {
            what,
            epoch,
            step,
            lr,
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

/// `cpu`, `cuda:N`: how events and results name a device.
pub fn device_name(device: Device) -> String {
    match device {
        Device::Cpu => "cpu".into(),
        Device::Cuda(i) => format!("cuda:{i}"),
        other => format!("{other:?}").to_ascii_lowercase(),
    }
}

/// Says when the next `progress` event is due: at most one per interval.
pub(crate) struct Clock {
    every: Duration,
    last: Instant,
}

impl Clock {
    pub fn new(every: Duration) -> Clock {
        Clock {
            every,
            last: Instant::now(),
        }
    }

    /// True (and restarts the interval) when an interval has passed since the last `true`.
    pub fn due(&mut self) -> bool {
        let now = Instant::now();
        if now.duration_since(self.last) >= self.every {
            self.last = now;
            true
        } else {
            false
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Diverged weights can leave a finite loss and NaN predictions; the error names where.
    #[test]
    fn non_finite_predictions_name_epoch_step_and_rate() {
        assert!(check_finite(&[0.1, 0.9], "validation", (1, 10, 0.1)).is_ok());
        let msg = check_finite(
            &[0.1, f32::NAN, f32::INFINITY],
            "validation",
            (2, 20, 100.0),
        )
        .unwrap_err()
        .to_string();
        assert!(
            msg.starts_with(
                "2 of 3 validation predictions are not finite after epoch 2 (step 20, learning rate 1.000e2)"
            ),
            "{msg}"
        );
    }

    #[test]
    fn smoothing_moves_targets_toward_one_half_and_batches_keep_two() {
        let labels = Tensor::from_slice(&[0f32, 1.0]);
        let smoothed = Vec::<f32>::try_from(smooth_labels(&labels, 0.1)).unwrap();
        assert_eq!(smoothed, [0.05, 0.95]);
        let same = Vec::<f32>::try_from(smooth_labels(&labels, 0.0)).unwrap();
        assert_eq!(same, [0.0, 1.0]);
        // A trailing batch of one is dropped (batch norm), of two kept.
        assert_eq!(
            [
                batch_count(64, 32),
                batch_count(65, 32),
                batch_count(66, 32)
            ],
            [2, 2, 3]
        );
        assert_eq!(batch_count(1, 32), 0);
        let mut clock = Clock::new(Duration::from_secs(3600));
        assert!(!clock.due(), "an interval must pass before the first event");
        assert!(Clock::new(Duration::ZERO).due());
    }
}
