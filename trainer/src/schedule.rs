//! Learning-rate schedules, each a pure function of the optimizer step, so the loop can name the
//! rate of any step (e.g. the one whose loss was NaN) and a resumed run gets the same rates:
//! - one-cycle (Smith & Topping 2017, "Super-Convergence"), with PyTorch `OneCycleLR`'s
//!   defaults: cosine warm-up from `max / 25` to `max` over the first 30% of steps, then cosine
//!   annealing to `max / 25 / 1e4`;
//! - cyclic (Smith 2017, "Cyclical Learning Rates", the triangular policy): linear between
//!   `lr · base_fraction` and `lr`, starting low, a full cycle every `cycle_epochs`;
//! - step: `lr · gamma^⌊epoch / step_epochs⌋`;
//! - constant.
//!
//! Step, cyclic and constant take an optional linear warm-up over `warmup_epochs`: its factor
//! `(step + 1) / warmup_steps` (capped at 1) multiplies the schedule, so the first step already
//! moves the weights a little and the rate reaches the schedule's at the end of the warm-up.
//! Epochs count optimizer steps (`steps_per_epoch` of them), not batches. Nothing here touches
//! an optimizer.

use std::f64::consts::PI;

use stackhive_spec::{ScheduleName, ScheduleSpec};

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct OneCycle {
    pub max_lr: f64,
    pub total_steps: usize,
    /// Share of the steps spent warming up.
    pub pct_start: f64,
    /// Initial rate is `max_lr / div_factor`.
    pub div_factor: f64,
    /// Final rate is the initial one divided by this.
    pub final_div_factor: f64,
}

impl OneCycle {
    pub fn new(max_lr: f64, total_steps: usize) -> OneCycle {
        OneCycle {
            max_lr,
            total_steps,
            pct_start: 0.3,
            div_factor: 25.0,
            final_div_factor: 1e4,
        }
    }

    /// The rate at `step` (0-based); steps past the end keep the final rate.
    pub fn lr(&self, step: usize) -> f64 {
        let initial = self.max_lr / self.div_factor;
        let last = initial / self.final_div_factor;
        let end = self.total_steps.saturating_sub(1).max(1) as f64;
        let warm = (self.pct_start * end).max(1.0);
        let t = (step as f64).min(end);
        let cos =
            |from: f64, to: f64, frac: f64| to + (from - to) * (1.0 + (PI * frac).cos()) / 2.0;
        if t <= warm {
            cos(initial, self.max_lr, t / warm)
        } else {
            cos(self.max_lr, last, (t - warm) / (end - warm).max(1.0))
        }
    }
}

/// The shape of a schedule other than one-cycle, in optimizer steps.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Shape {
    /// Triangular between `lr · base_fraction` and `lr`, one full cycle per `cycle_steps`.
    Cyclic {
        base_fraction: f64,
        cycle_steps: f64,
    },
    /// `lr · gamma^⌊step / every⌋`.
    Step {
        gamma: f64,
        every: usize,
    },
    Constant,
}

/// A learning-rate schedule over a whole run.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Schedule {
    OneCycle(OneCycle),
    Other {
        lr: f64,
        shape: Shape,
        /// Steps of linear warm-up (0: none).
        warmup_steps: f64,
    },
}

impl Schedule {
    /// The schedule `spec` describes for peak rate `lr`, `steps_per_epoch` optimizer steps per
    /// epoch and `total_steps` in all.
    pub fn from_spec(
        spec: &ScheduleSpec,
        lr: f64,
        steps_per_epoch: usize,
        total_steps: usize,
    ) -> Schedule {
        let per_epoch = steps_per_epoch.max(1) as f64;
        let shape = match spec.name {
            ScheduleName::OneCycle => {
                return Schedule::OneCycle(OneCycle {
                    max_lr: lr,
                    total_steps,
                    pct_start: spec.pct_start,
                    div_factor: spec.div_factor,
                    final_div_factor: spec.final_div_factor,
                })
            }
            ScheduleName::Cyclic => Shape::Cyclic {
                base_fraction: spec.base_fraction,
                // A cycle needs a low and a high step.
                cycle_steps: (spec.cycle_epochs * per_epoch).max(2.0),
            },
            ScheduleName::Step => Shape::Step {
                gamma: spec.gamma,
                every: (spec.step_epochs.max(1) as usize) * steps_per_epoch.max(1),
            },
            ScheduleName::Constant => Shape::Constant,
        };
        Schedule::Other {
            lr,
            shape,
            warmup_steps: (spec.warmup_epochs * per_epoch).max(0.0),
        }
    }

    /// The rate at optimizer step `step` (0-based).
    pub fn lr(&self, step: usize) -> f64 {
        let (lr, shape, warmup_steps) = match *self {
            Schedule::OneCycle(s) => return s.lr(step),
            Schedule::Other {
                lr,
                shape,
                warmup_steps,
            } => (lr, shape, warmup_steps),
        };
        let t = step as f64;
        let base = match shape {
            Shape::Cyclic {
                base_fraction,
                cycle_steps,
            } => {
                let x = (t / cycle_steps).fract();
                let triangle = 1.0 - (2.0 * x - 1.0).abs();
                lr * (base_fraction + (1.0 - base_fraction) * triangle)
            }
            Shape::Step { gamma, every } => lr * gamma.powi((step / every.max(1)) as i32),
            Shape::Constant => lr,
        };
        if warmup_steps > 0.0 && t < warmup_steps {
            base * ((t + 1.0) / warmup_steps).min(1.0)
        } else {
            base
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-12 * b.abs().max(1e-12)
    }

    #[test]
    fn one_cycle_warms_up_peaks_and_anneals() {
        let s = OneCycle::new(1e-3, 101);
        assert!((s.lr(0) - 4e-5).abs() < 1e-12);
        assert!((s.lr(30) - 1e-3).abs() < 1e-12);
        assert!(s.lr(15) > s.lr(0) && s.lr(15) < 1e-3);
        assert!((s.lr(100) - 4e-9).abs() < 1e-15);
        assert!(s.lr(60) < s.lr(40));
        // The spec's factors reach the same schedule.
        let from_spec = Schedule::from_spec(&ScheduleSpec::default(), 1e-3, 10, 101);
        assert_eq!(from_spec, Schedule::OneCycle(s));
    }

    #[test]
    fn cyclic_is_triangular_between_the_fraction_and_the_peak() {
        let spec = ScheduleSpec {
            name: ScheduleName::Cyclic,
            base_fraction: 0.1,
            cycle_epochs: 2.0,
            ..ScheduleSpec::default()
        };
        // 5 steps an epoch: a cycle of 10 steps, low at 0, 10, 20; high at 5, 15.
        let s = Schedule::from_spec(&spec, 1.0, 5, 40);
        for (step, want) in [(0, 0.1), (5, 1.0), (10, 0.1), (15, 1.0), (20, 0.1)] {
            assert!(close(s.lr(step), want), "step {step}: {}", s.lr(step));
        }
        // Linear in between: a quarter cycle is half-way.
        assert!(close(s.lr(2), 0.1 + 0.9 * 0.4), "{}", s.lr(2));
        assert!(
            close(s.lr(7), s.lr(3)),
            "symmetric: {} {}",
            s.lr(7),
            s.lr(3)
        );
    }

    #[test]
    fn step_decays_every_step_epochs() {
        let spec = ScheduleSpec {
            name: ScheduleName::Step,
            step_epochs: 2,
            gamma: 0.5,
            ..ScheduleSpec::default()
        };
        let s = Schedule::from_spec(&spec, 0.2, 10, 100);
        for (step, want) in [
            (0, 0.2),
            (19, 0.2),
            (20, 0.1),
            (39, 0.1),
            (40, 0.05),
            (99, 0.0125),
        ] {
            assert!(close(s.lr(step), want), "step {step}: {}", s.lr(step));
        }
    }

    #[test]
    fn warm_up_is_linear_then_hands_over() {
        let spec = ScheduleSpec {
            name: ScheduleName::Constant,
            warmup_epochs: 1.0,
            ..ScheduleSpec::default()
        };
        let s = Schedule::from_spec(&spec, 1.0, 4, 20);
        let lrs: Vec<f64> = (0..6).map(|i| s.lr(i)).collect();
        assert_eq!(lrs, [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]);
        // With a step schedule the warm-up scales the first epoch only.
        let spec = ScheduleSpec {
            name: ScheduleName::Step,
            step_epochs: 1,
            gamma: 0.1,
            warmup_epochs: 0.5,
            ..ScheduleSpec::default()
        };
        let s = Schedule::from_spec(&spec, 1.0, 4, 20);
        assert!(close(s.lr(0), 0.5) && close(s.lr(1), 1.0) && close(s.lr(4), 0.1));
        // No warm-up: the first step runs at the full rate.
        let s = Schedule::from_spec(
            &ScheduleSpec {
                name: ScheduleName::Constant,
                ..ScheduleSpec::default()
            },
            0.3,
            4,
            20,
        );
        assert_eq!(s.lr(0), 0.3);
    }
}
