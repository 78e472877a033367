//! The learning-rate finder of an `lr-find` job (issue 4, item 7; Smith 2017, "Cyclical
//! Learning Rates", section 3.3, as fastai runs it): train on the fold's training rows while the
//! rate grows geometrically from `sweep.min_lr` to `sweep.max_lr` over `sweep.steps` optimizer
//! steps (cycling through reshuffled batches), record each step's loss and fastai's
//! bias-corrected running average of it, and stop once that average exceeds `sweep.diverge`
//! times its best. It suggests the rate where the smoothed loss falls fastest against log lr
//! (away from both ends of the curve) and reports the rate of the lowest smoothed loss.
//!
//! The network is thrown away afterwards: no checkpoint, no validation, no predictions. The
//! optimizer, accumulation and label smoothing are the job's; its schedule and EMA are not used.

use std::time::Instant;

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use stackhive_spec::{LrFindResult, Progress, SweepSpec, TrainerEvent};

use crate::config::TrainConfig;
use crate::data::FoldData;
use crate::error::TrainerError;
use crate::loader::{Loader, LoaderConfig};
use crate::train::{batch_count, check_inputs, Clock, Session};

/// Sweeps the learning rate for `cfg` on `data.train` as `sweep` says.
pub fn lr_find(
    cfg: &TrainConfig,
    sweep: &SweepSpec,
    data: &FoldData<'_>,
    on_event: &mut dyn FnMut(&TrainerEvent),
) -> Result<LrFindResult, TrainerError> {
    check_inputs(cfg, data)?;
    check_sweep(sweep)?;
    let steps = sweep.steps as usize;
    let mut s = Session::start(cfg)?;
    on_event(&s.start_event(cfg, steps as u64, 1, None));

    let n = data.train.len();
    let per_pass = batch_count(n, cfg.batch_size);
    // The whole sweep's batches up front (reshuffled each pass), built ahead by the loader.
    let mut rng = StdRng::seed_from_u64(cfg.seed);
    let mut order: Vec<usize> = (0..n).collect();
    let mut plan = Vec::with_capacity(steps * cfg.accumulate);
    while plan.len() < steps * cfg.accumulate {
        order.shuffle(&mut rng);
        plan.extend(
            order
                .chunks(cfg.batch_size)
                .take(per_pass)
                .map(<[usize]>::to_vec),
        );
    }
    plan.truncate(steps * cfg.accumulate);
    let loader_cfg = LoaderConfig {
        augment: Some(cfg.augment.clone()),
        seed: cfg.seed,
        epoch: 0,
        threads: cfg.loader_threads(),
        prefetch: 2,
    };
    let mut curve = Curve::new(sweep.smoothing, sweep.diverge);
    let mut clock = Clock::new(cfg.progress_every);
    let started = Instant::now();
    let mut images = 0;
    let mut stopped_early = false;
    std::thread::scope(|scope| -> Result<(), TrainerError> {
        let mut loader = Loader::scoped(scope, data.cache, &data.train, plan, &loader_cfg)?;
        for i in 0..steps {
            let lr = sweep_lr(sweep, i);
            let mut group = Vec::with_capacity(cfg.accumulate);
            for host in loader.by_ref().take(cfg.accumulate) {
                group.push(host?.to_device(cfg.device, cfg.channels_last));
            }
            images += group
                .iter()
                .map(|b| b.images.size()[0] as usize)
                .sum::<usize>();
            let loss = s.step(cfg, &group, lr)?.double_value(&[]);
            if !loss.is_finite() {
                if i == 0 {
                    // Not divergence: even the smallest rate gives no loss.
                    return Err(TrainerError::NonFiniteLoss {
                        step: 0,
                        epoch: 1,
                        lr,
                        loss,
                    });
                }
                stopped_early = true;
                return Ok(());
            }
            let diverged = curve.push(lr, loss);
            if clock.due() {
                on_event(&TrainerEvent::Progress(Progress {
                    epoch: 1,
                    epochs: 1,
                    step: i as u64 + 1,
                    steps: steps as u64,
                    lr,
                    loss: *curve.smoothed.last().expect("a point was just pushed"),
                    valid_auc: None,
                    images_per_s: images as f64 / started.elapsed().as_secs_f64().max(1e-9),
                    resumed_from: None,
                }));
            }
            if diverged {
                stopped_early = i + 1 < steps;
                return Ok(());
            }
        }
        Ok(())
    })?;
    tracing::info!(points = curve.lrs.len(), stopped_early, "lr sweep");
    Ok(curve.into_result(cfg.arch.name(), stopped_early))
}

/// The rate of sweep step `i`: `min_lr · (max_lr / min_lr)^(i / (steps − 1))`.
pub fn sweep_lr(sweep: &SweepSpec, i: usize) -> f64 {
    let last = sweep.steps.saturating_sub(1).max(1) as f64;
    sweep.min_lr * (sweep.max_lr / sweep.min_lr).powf(i as f64 / last)
}

fn check_sweep(sweep: &SweepSpec) -> Result<(), TrainerError> {
    let ok = sweep.min_lr.is_finite()
        && sweep.min_lr > 0.0
        && sweep.max_lr.is_finite()
        && sweep.max_lr > sweep.min_lr
        && sweep.steps >= 2
        && (0.0..1.0).contains(&sweep.smoothing)
        && sweep.diverge > 1.0;
    if ok {
        return Ok(());
    }
    Err(TrainerError::Config(format!(
        "expected a sweep with 0 < min_lr < max_lr, at least 2 steps, smoothing in [0, 1) and diverge above 1, found min_lr {}, max_lr {}, {} steps, smoothing {}, diverge {}",
        sweep.min_lr, sweep.max_lr, sweep.steps, sweep.smoothing, sweep.diverge
    )))
}

/// The recorded sweep and its running average.
#[derive(Clone, Debug, Default)]
pub struct Curve {
    beta: f64,
    diverge: f64,
    avg: f64,
    best: f64,
    pub lrs: Vec<f64>,
    pub losses: Vec<f64>,
    pub smoothed: Vec<f64>,
}

impl Curve {
    pub fn new(smoothing: f64, diverge: f64) -> Curve {
        Curve {
            beta: smoothing,
            diverge,
            best: f64::INFINITY,
            ..Curve::default()
        }
    }

    /// Records one step; true when the smoothed loss has passed `diverge` times its best.
    /// fastai's average: `avg ← β·avg + (1−β)·loss`, smoothed `avg / (1 − β^k)` after `k`
    /// points, which removes the pull toward the zero it starts from.
    pub fn push(&mut self, lr: f64, loss: f64) -> bool {
        self.avg = self.beta * self.avg + (1.0 - self.beta) * loss;
        let k = self.lrs.len() as i32 + 1;
        let smoothed = self.avg / (1.0 - self.beta.powi(k));
        self.lrs.push(lr);
        self.losses.push(loss);
        self.smoothed.push(smoothed);
        let diverged = k > 1 && smoothed > self.diverge * self.best;
        self.best = self.best.min(smoothed);
        diverged
    }

    /// The rate where the smoothed loss falls fastest against log lr: the most negative
    /// central difference, skipping the first tenth (at least one point, where the average is
    /// still settling) and the last twentieth (at least one, the blow-up). `None` when no
    /// remaining point falls.
    pub fn suggestion(&self) -> Option<f64> {
        let n = self.smoothed.len();
        let first = (n / 10).max(1);
        let end = n.saturating_sub((n / 20).max(1)).min(n.saturating_sub(1));
        let x: Vec<f64> = self.lrs.iter().map(|lr| lr.ln()).collect();
        (first..end)
            .map(|i| {
                let slope = (self.smoothed[i + 1] - self.smoothed[i - 1]) / (x[i + 1] - x[i - 1]);
                (i, slope)
            })
            .filter(|(_, slope)| slope.is_finite() && *slope < 0.0)
            .min_by(|a, b| a.1.total_cmp(&b.1))
            .map(|(i, _)| self.lrs[i])
    }

    /// The rate of the lowest smoothed loss.
    pub fn min_loss_lr(&self) -> Option<f64> {
        self.smoothed
            .iter()
            .enumerate()
            .min_by(|a, b| a.1.total_cmp(b.1))
            .map(|(i, _)| self.lrs[i])
    }

    pub fn into_result(self, arch: String, stopped_early: bool) -> LrFindResult {
        LrFindResult {
            arch,
            suggestion: self.suggestion(),
            min_loss_lr: self.min_loss_lr(),
            lrs: self.lrs,
            losses: self.losses,
            smoothed: self.smoothed,
            stopped_early,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sweep_is_geometric_from_min_to_max() {
        let sweep = SweepSpec {
            min_lr: 1e-6,
            max_lr: 1.0,
            steps: 7,
            ..SweepSpec::default()
        };
        let lrs: Vec<f64> = (0..7).map(|i| sweep_lr(&sweep, i)).collect();
        for (got, want) in lrs.iter().zip([1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0]) {
            assert!((got / want - 1.0).abs() < 1e-12, "{got} vs {want}");
        }
    }

    #[test]
    fn smoothing_is_bias_corrected_and_divergence_stops() {
        let mut c = Curve::new(0.9, 4.0);
        // A constant loss stays itself once bias-corrected (no drift up from 0).
        for i in 0..5 {
            assert!(!c.push(1e-3 * (i + 1) as f64, 2.0));
        }
        assert!(
            c.smoothed.iter().all(|s| (s - 2.0).abs() < 1e-12),
            "{:?}",
            c.smoothed
        );
        // A blow-up passes 4 × best (8) within a few points.
        let mut stopped = None;
        for i in 0..20 {
            if c.push(1.0, 1000.0) {
                stopped = Some(i);
                break;
            }
        }
        assert_eq!(stopped, Some(0), "{:?}", c.smoothed);
    }

    /// A loss shaped like a real sweep: flat, falling fastest around 1e-3, a minimum near
    /// 1e-2, then exploding. The suggestion must land on the steep part, not at the minimum.
    #[test]
    fn suggests_the_steepest_fall_and_reports_the_minimum() {
        let mut c = Curve::new(0.0, 1e9);
        for i in 0..41 {
            let lr = 10f64.powf(-6.0 + i as f64 * 0.15);
            let x = lr.log10();
            let loss = 1.0 - 0.5 / (1.0 + (-(x + 3.0) * 3.0).exp()) + (lr * 10.0).powi(2);
            c.push(lr, loss);
        }
        let s = c.suggestion().unwrap();
        assert!((s.log10() + 3.0).abs() <= 0.2, "suggestion {s:e}");
        let m = c.min_loss_lr().unwrap();
        assert!(m > 1e-3 && m < 0.1, "minimum at {m:e}");

        // A curve that only rises has no suggestion.
        let mut up = Curve::new(0.0, 1e9);
        for i in 0..20 {
            up.push(1e-3 * (i + 1) as f64, i as f64);
        }
        assert_eq!(up.suggestion(), None);
        assert_eq!(up.min_loss_lr(), Some(1e-3));
    }
}
