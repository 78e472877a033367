//! An exponential moving average of the weights (issue 4, item 4; Polyak averaging as timm's
//! `ModelEmaV2` and TensorFlow's `ExponentialMovingAverage` keep it): a second network of the
//! same architecture whose every variable — batch-norm running statistics included — follows
//! the trained one after each optimizer step, `shadow ← d·shadow + (1 − d)·live`. Validation,
//! the predictions and the checkpoint read the shadow network when a job sets `ema`.
//!
//! The decay ramps up as TensorFlow's `num_updates` does, `d = min(decay, (1 + n) / (10 + n))`
//! after `n` updates: without it, a short run's average would still be mostly the random
//! initialisation. It must not touch gradients or the optimizer.

use tch::nn::VarStore;
use tch::{Device, Tensor};

use crate::arch::Arch;
use crate::error::TrainerError;
use crate::models::Net;

#[derive(Debug)]
pub struct Ema {
    /// The shadow variables, frozen.
    pub vs: VarStore,
    pub net: Net,
    decay: f64,
    updates: u64,
    /// (shadow, live) pairs sharing storage with the two stores.
    pairs: Vec<(Tensor, Tensor)>,
}

impl Ema {
    /// A shadow of `live` (built for `arch` with `metadata`), starting equal to it.
    pub fn new(
        live: &VarStore,
        arch: &Arch,
        metadata: bool,
        decay: f64,
    ) -> Result<Ema, TrainerError> {
        if !(0.0..1.0).contains(&decay) {
            return Err(TrainerError::Config(format!(
                "expected an EMA decay in [0, 1), found {decay}"
            )));
        }
        let mut vs = VarStore::new(live.device());
        let net = Net::new(&vs.root(), arch, metadata);
        vs.copy(live)?;
        vs.freeze();
        let shadow = vs.variables();
        let mut pairs = Vec::with_capacity(shadow.len());
        for (name, l) in live.variables() {
            let s = shadow.get(&name).ok_or_else(|| {
                TrainerError::Config(format!(
                    "the EMA network has no variable {name}; expected the same architecture"
                ))
            })?;
            pairs.push((s.shallow_clone(), l));
        }
        Ok(Ema {
            vs,
            net,
            decay,
            updates: 0,
            pairs,
        })
    }

    /// The decay the next update uses.
    pub fn current_decay(&self) -> f64 {
        let n = self.updates as f64;
        self.decay.min((1.0 + n) / (10.0 + n))
    }

    /// Moves the shadow toward the live weights; call after each optimizer step.
    pub fn update(&mut self) -> Result<(), TrainerError> {
        let weight = 1.0 - self.current_decay();
        tch::no_grad(|| -> Result<(), TrainerError> {
            for (shadow, live) in &mut self.pairs {
                if shadow.is_floating_point() {
                    let _ = shadow.f_lerp_(live, weight)?;
                } else {
                    // Counters (e.g. batches tracked) are copied, not averaged.
                    shadow.f_copy_(live)?;
                }
            }
            Ok(())
        })?;
        self.updates += 1;
        Ok(())
    }

    /// Updates so far (the decay's ramp reads it).
    pub fn updates(&self) -> u64 {
        self.updates
    }

    /// Continues the ramp after `updates` earlier updates (a resumed run).
    pub fn set_updates(&mut self, updates: u64) {
        self.updates = updates;
    }

    pub fn device(&self) -> Device {
        self.vs.device()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Kind;

    #[test]
    fn shadow_follows_every_variable_with_a_ramped_decay() {
        tch::manual_seed(0);
        let arch = Arch::parse("efficientnet-w0.25-d0.25").unwrap();
        let live = VarStore::new(Device::Cpu);
        let _net = Net::new(&live.root(), &arch, true);
        let mut ema = Ema::new(&live, &arch, true, 0.5).unwrap();
        let vars = live.variables();
        let running = vars
            .keys()
            .find(|k| k.ends_with("running_mean"))
            .expect("batch norm statistics are variables")
            .clone();
        let weight = vars.keys().find(|k| k.ends_with("weight")).unwrap().clone();
        // Move every live variable by +1, then average: the first decay is min(0.5, 1/10).
        tch::no_grad(|| {
            for t in vars.values() {
                let mut t = t.shallow_clone();
                let _ = t.g_add_scalar_(1.0);
            }
        });
        let before = ema.vs.variables()[&weight].copy();
        assert!((ema.current_decay() - 0.1).abs() < 1e-12);
        ema.update().unwrap();
        let shadow = ema.vs.variables();
        for name in [&weight, &running] {
            let gap = (&vars[name] - &shadow[name])
                .mean(Kind::Float)
                .double_value(&[]);
            // shadow = 0.1·old + 0.9·(old + 1) = old + 0.9.
            assert!((gap - 0.1).abs() < 1e-5, "{name}: gap {gap}");
        }
        let step = (&shadow[&weight] - &before)
            .mean(Kind::Float)
            .double_value(&[]);
        assert!((step - 0.9).abs() < 1e-5, "{step}");
        // Later updates are capped by the configured decay.
        for _ in 0..20 {
            ema.update().unwrap();
        }
        assert_eq!(ema.current_decay(), 0.5);
    }
}
