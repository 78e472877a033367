//! The optimizers a `cnn` job can ask for (issue 4, item 4), behind one small type the training
//! loop and the LR finder drive: AdamW (Loshchilov & Hutter, decoupled weight decay) and SGD
//! with momentum, optionally Nesterov, with L2 weight decay — both libtorch's own
//! implementations through tch, or (the default) the same rules as ATen's fused kernels
//! (`_fused_adamw_` / `_fused_sgd_` through `accel`): one kernel launch per step for all
//! parameters instead of several per parameter, which is what keeps a GPU busy. The two agree
//! to 1e-7 (tests/accel.rs); the loop does not know which one it drives. Weight decay applies
//! to every trainable variable unless `decay_1d` is off, which spares biases and norms (the
//! fused ones only: tch's own optimizers see one group). Only the fused ones can
//! hand their state to a resume checkpoint: tch exposes none of libtorch's.
//! Nothing here picks a learning rate: the schedule does.

use std::collections::HashMap;

use stackhive_spec::{OptimizerName, OptimizerSpec};
use tch::nn::{self, OptimizerConfig, VarStore};
use tch::Tensor;

use crate::accel::{FusedAdamW, FusedAdamWConfig, FusedSgd, FusedSgdConfig};
use crate::error::TrainerError;

/// Which update rule, with its own settings.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum OptimKind {
    AdamW { betas: (f64, f64), eps: f64 },
    Sgd { momentum: f64, nesterov: bool },
}

/// An optimizer's settings; the rate is the schedule's peak.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct OptimConfig {
    pub kind: OptimKind,
    /// Peak learning rate.
    pub lr: f64,
    /// Decoupled for AdamW, L2 (added to the gradient) for SGD.
    pub weight_decay: f64,
    /// Decay 1-D parameters (biases, norms) too; libtorch's optimizers always do.
    pub decay_1d: bool,
    /// Use ATen's fused kernels (default) rather than libtorch's per-parameter optimizers.
    pub fused: bool,
}

impl OptimConfig {
    /// AdamW with PyTorch's defaults at rate `lr`.
    pub fn adamw(lr: f64) -> OptimConfig {
        OptimConfig {
            kind: OptimKind::AdamW {
                betas: (0.9, 0.999),
                eps: 1e-8,
            },
            lr,
            weight_decay: 1e-2,
            decay_1d: true,
            fused: true,
        }
    }

    /// What a payload's `optimizer` asks for, its unset values at that optimizer's defaults.
    pub fn from_spec(spec: &OptimizerSpec) -> OptimConfig {
        let kind = match spec.name {
            OptimizerName::Adamw => OptimKind::AdamW {
                betas: spec.betas(),
                eps: spec.eps(),
            },
            OptimizerName::Sgd => OptimKind::Sgd {
                momentum: spec.momentum(),
                nesterov: spec.nesterov,
            },
        };
        OptimConfig {
            kind,
            lr: spec.lr(),
            weight_decay: spec.weight_decay(),
            decay_1d: spec.decay_1d,
            fused: true,
        }
    }

    pub fn validate(&self) -> Result<(), TrainerError> {
        let bad = |m: String| Err(TrainerError::Config(m));
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return bad(format!(
                "expected a positive finite learning rate, found {}",
                self.lr
            ));
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            return bad(format!(
                "expected a non-negative weight decay, found {}",
                self.weight_decay
            ));
        }
        match self.kind {
            OptimKind::AdamW {
                betas: (b1, b2),
                eps,
            } => {
                if !((0.0..1.0).contains(&b1) && (0.0..1.0).contains(&b2)) {
                    return bad(format!(
                        "expected AdamW betas in [0, 1), found ({b1}, {b2})"
                    ));
                }
                if !(eps.is_finite() && eps > 0.0) {
                    return bad(format!("expected a positive AdamW epsilon, found {eps}"));
                }
            }
            OptimKind::Sgd { momentum, nesterov } => {
                if !(0.0..1.0).contains(&momentum) {
                    return bad(format!(
                        "expected an SGD momentum in [0, 1), found {momentum}"
                    ));
                }
                if nesterov && momentum == 0.0 {
                    return bad("nesterov needs a momentum above 0, found 0".into());
                }
            }
        }
        Ok(())
    }
}

/// A built optimizer over a `VarStore`'s trainable variables.
///
/// Every method returns a `Result` although tch's optimizer panics instead: the fused variant
/// reports libtorch's errors, and the loop already propagates them.
#[derive(Debug)]
pub enum Optim {
    /// libtorch's `torch::optim::AdamW` / `SGD`.
    Torch(nn::Optimizer),
    FusedAdamW(FusedAdamW),
    FusedSgd(FusedSgd),
}

impl Optim {
    /// Builds the optimizer `cfg` describes over `vs`, at rate `cfg.lr` until [`Optim::set_lr`].
    pub fn new(vs: &VarStore, cfg: &OptimConfig) -> Result<Optim, TrainerError> {
        Optim::with_capturable(vs, cfg, false)
    }

    /// As [`Optim::new`]; with `capturable`, a fused optimizer keeps its rate in a device
    /// tensor, so its step can be captured in a CUDA graph (`accel::GraphedStep`).
    pub fn with_capturable(
        vs: &VarStore,
        cfg: &OptimConfig,
        capturable: bool,
    ) -> Result<Optim, TrainerError> {
        cfg.validate()?;
        if cfg.fused {
            return Ok(match cfg.kind {
                OptimKind::AdamW {
                    betas: (beta1, beta2),
                    eps,
                } => Optim::FusedAdamW(FusedAdamW::new(
                    vs,
                    FusedAdamWConfig {
                        lr: cfg.lr,
                        beta1,
                        beta2,
                        eps,
                        weight_decay: cfg.weight_decay,
                        decay_1d: cfg.decay_1d,
                        capturable,
                    },
                )?),
                OptimKind::Sgd { momentum, nesterov } => Optim::FusedSgd(FusedSgd::new(
                    vs,
                    FusedSgdConfig {
                        lr: cfg.lr,
                        momentum,
                        dampening: 0.0,
                        nesterov,
                        weight_decay: cfg.weight_decay,
                        decay_1d: cfg.decay_1d,
                        capturable,
                    },
                )?),
            });
        }
        let opt = match cfg.kind {
            OptimKind::AdamW {
                betas: (beta1, beta2),
                eps,
            } => nn::AdamW {
                beta1,
                beta2,
                wd: cfg.weight_decay,
                eps,
                amsgrad: false,
            }
            .build(vs, cfg.lr)?,
            OptimKind::Sgd { momentum, nesterov } => nn::Sgd {
                momentum,
                dampening: 0.0,
                wd: cfg.weight_decay,
                nesterov,
            }
            .build(vs, cfg.lr)?,
        };
        Ok(Optim::Torch(opt))
    }

    pub fn set_lr(&mut self, lr: f64) {
        match self {
            Optim::Torch(o) => o.set_lr(lr),
            Optim::FusedAdamW(o) => o.set_lr(lr),
            Optim::FusedSgd(o) => o.set_lr(lr),
        }
    }

    /// Clears the gradients before a step's first backward pass.
    pub fn zero_grad(&mut self) -> Result<(), TrainerError> {
        match self {
            Optim::Torch(o) => o.zero_grad(),
            Optim::FusedAdamW(o) => o.zero_grad()?,
            Optim::FusedSgd(o) => o.zero_grad()?,
        }
        Ok(())
    }

    /// Updates the variables from their accumulated gradients.
    pub fn step(&mut self) -> Result<(), TrainerError> {
        match self {
            Optim::Torch(o) => o.step(),
            Optim::FusedAdamW(o) => o.step()?,
            Optim::FusedSgd(o) => o.step()?,
        }
        Ok(())
    }

    /// Which implementation this is, as resume checkpoints record it.
    pub fn name(&self) -> &'static str {
        match self {
            Optim::Torch(_) => "torch",
            Optim::FusedAdamW(_) => "fused-adamw",
            Optim::FusedSgd(_) => "fused-sgd",
        }
    }

    /// The state a resume checkpoint saves (shared storage); `None` for libtorch's optimizers.
    pub fn state(&self) -> Option<Vec<(String, Tensor)>> {
        match self {
            Optim::Torch(_) => None,
            Optim::FusedAdamW(o) => Some(o.state()),
            Optim::FusedSgd(o) => Some(o.state()),
        }
    }

    /// Copies a saved `state` (from [`Optim::state`] of the same optimizer) into this one.
    pub fn load_state(&mut self, state: &HashMap<String, Tensor>) -> Result<(), TrainerError> {
        match self {
            Optim::Torch(_) => Err(TrainerError::Config(
                "libtorch's optimizers cannot load a saved state; expected a fused optimizer"
                    .into(),
            )),
            Optim::FusedAdamW(o) => Ok(o.load_state(state)?),
            Optim::FusedSgd(o) => Ok(o.load_state(state)?),
        }
    }

    /// `zero_grad`, backward of `loss`, `step`: one unaccumulated step.
    pub fn backward_step(&mut self, loss: &Tensor) -> Result<(), TrainerError> {
        self.zero_grad()?;
        loss.f_backward()?;
        self.step()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    /// One step on `x² / 2` (gradient `x`) from x = 1 checks each rule's arithmetic, for
    /// libtorch's optimizers and the fused kernels alike (they must agree).
    fn one_step(cfg: OptimConfig) -> f64 {
        let run = |fused: bool| {
            let vs = VarStore::new(Device::Cpu);
            let x = vs.root().ones("x", &[1]);
            let mut opt = Optim::new(&vs, &OptimConfig { fused, ..cfg }).unwrap();
            let loss = (&x * &x).sum(Kind::Float) / 2.0;
            opt.backward_step(&loss).unwrap();
            x.double_value(&[0])
        };
        let (torch, fused) = (run(false), run(true));
        assert!((torch - fused).abs() < 1e-6, "torch {torch}, fused {fused}");
        fused
    }

    #[test]
    fn adamw_decays_decoupled_and_sgd_adds_l2() {
        // AdamW's first step moves by lr (m̂ / √v̂ = 1) and decays by lr · wd: 1 − 0.1 − 0.01.
        let adamw = OptimConfig {
            weight_decay: 0.1,
            ..OptimConfig::adamw(0.1)
        };
        assert!((one_step(adamw) - 0.89).abs() < 1e-6);
        // SGD adds wd · x to the gradient: 1 − 0.1 · (1 + 0.1).
        let sgd = OptimConfig {
            kind: OptimKind::Sgd {
                momentum: 0.9,
                nesterov: false,
            },
            lr: 0.1,
            weight_decay: 0.1,
            decay_1d: true,
            fused: true,
        };
        assert!((one_step(sgd) - 0.89).abs() < 1e-6);
        // Nesterov's first step looks ahead: g + μ·g.
        let nesterov = OptimConfig {
            kind: OptimKind::Sgd {
                momentum: 0.9,
                nesterov: true,
            },
            lr: 0.1,
            weight_decay: 0.0,
            decay_1d: true,
            fused: true,
        };
        assert!((one_step(nesterov) - (1.0 - 0.1 * 1.9)).abs() < 1e-6);
        let err = Optim::new(
            &VarStore::new(Device::Cpu),
            &OptimConfig {
                lr: f64::NAN,
                ..OptimConfig::adamw(1.0)
            },
        )
        .unwrap_err()
        .to_string();
        assert_eq!(
            err,
            "invalid training config: expected a positive finite learning rate, found NaN"
        );
    }

    /// With `decay_1d` off, the 1-D parameter (a bias) moves as without weight decay and the
    /// 2-D one (a weight) as with it, for both fused rules; `state` covers both groups.
    #[test]
    fn sparing_1d_parameters_takes_them_out_of_the_decay() {
        for sgd in [false, true] {
            let vs = VarStore::new(Device::Cpu);
            let w = vs.root().ones("w", &[2, 2]);
            let b = vs.root().ones("b", &[2]);
            let kind = if sgd {
                OptimKind::Sgd {
                    momentum: 0.9,
                    nesterov: false,
                }
            } else {
                OptimConfig::adamw(0.1).kind
            };
            let cfg = OptimConfig {
                kind,
                lr: 0.1,
                weight_decay: 0.5,
                decay_1d: false,
                fused: true,
            };
            let mut opt = Optim::new(&vs, &cfg).unwrap();
            // Gradient 1 everywhere.
            let loss = w.sum(Kind::Float) + b.sum(Kind::Float);
            opt.backward_step(&loss).unwrap();
            // AdamW: 1 − lr (− lr · wd when decayed); SGD: 1 − lr · (1 (+ wd when decayed)).
            // Both come to 0.85 decayed and 0.9 spared at these settings.
            let (decayed, spared) = (0.85, 0.9);
            let moved = |t: &Tensor| t.mean(Kind::Float).double_value(&[]);
            assert!(
                (moved(&w) - decayed).abs() < 1e-6,
                "sgd {sgd}: w {}",
                moved(&w)
            );
            assert!(
                (moved(&b) - spared).abs() < 1e-6,
                "sgd {sgd}: b {}",
                moved(&b)
            );
            let state = opt.state().unwrap();
            let expected = if sgd { 3 } else { 6 };
            assert_eq!(state.len(), expected, "sgd {sgd}: {state:?}");
        }
    }
}
