//! Fused AdamW and SGD over a VarStore's trainable variables, through ATen's `_fused_adamw_` and
//! `_fused_sgd_` kernels (one kernel for all parameters on CUDA, a vectorised loop on CPU), the
//! kernels behind PyTorch's `AdamW(fused=True)` and `SGD(fused=True)`.
//!
//! Semantics follow PyTorch: decoupled weight decay for AdamW (optionally sparing 1-D
//! parameters, as a second parameter group would), bias correction per parameter
//! from its own step count, parameters whose gradient is undefined are skipped (their step
//! counts and momentum stay as they are), `zero_grad` sets gradients to undefined.
//! State lives in tensors on the parameters' device, created when the optimizer is; with
//! `capturable`, the learning rate lives in a device tensor too, so a step captured in a CUDA
//! graph picks up `set_lr` on every replay. The optimizer must not allocate during `step`
//! (captured steps must not). `state` and `load_state` hand the state to a resume checkpoint
//! and back; loading copies into the existing tensors, so their storage (and any captured graph
//! reading it) stays valid.

use std::collections::HashMap;

use tch::nn::VarStore;
use tch::{Device, Kind, Tensor};

use super::ffi;
use super::AccelError;

/// PyTorch's `AdamW` defaults; `capturable` puts the learning rate in a device tensor.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FusedAdamWConfig {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
    /// Decay parameters of one dimension or fewer (biases, batch-norm scales and shifts) too,
    /// as PyTorch does (the default); false spares them, as timm's recipes do.
    pub decay_1d: bool,
    pub capturable: bool,
}

impl Default for FusedAdamWConfig {
    fn default() -> Self {
        FusedAdamWConfig {
            lr: 1e-3,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 1e-2,
            decay_1d: true,
            capturable: false,
        }
    }
}

/// PyTorch's `SGD` settings; `capturable` puts the learning rate in a device tensor.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FusedSgdConfig {
    pub lr: f64,
    pub momentum: f64,
    pub dampening: f64,
    pub nesterov: bool,
    pub weight_decay: f64,
    /// As [`FusedAdamWConfig::decay_1d`].
    pub decay_1d: bool,
    pub capturable: bool,
}

impl Default for FusedSgdConfig {
    fn default() -> Self {
        FusedSgdConfig {
            lr: 1e-2,
            momentum: 0.9,
            dampening: 0.0,
            nesterov: false,
            weight_decay: 0.0,
            decay_1d: true,
            capturable: false,
        }
    }
}

/// What both optimizers share: the parameters, the learning rate and the per-step scratch.
#[derive(Debug)]
struct Params {
    /// The parameters that decay first (`params[..decayed]`), then those that do not: two
    /// groups, one kernel launch each.
    params: Vec<Tensor>,
    decayed: usize,
    lr: f64,
    /// The learning rate as a 0-d f32 tensor on the parameters' device, in capturable mode.
    lr_tensor: Option<Tensor>,
    /// Which parameters had a gradient at the last step, filled by the shim.
    stepped: Vec<u8>,
}

impl Params {
    fn new(
        vs: &VarStore,
        optimizer: &'static str,
        lr: f64,
        capturable: bool,
        decay_1d: bool,
    ) -> Result<Params, AccelError> {
        check_range(
            "learning rate",
            lr,
            0.0,
            f64::INFINITY,
            "a finite value >= 0",
        )?;
        let (mut params, spared): (Vec<Tensor>, Vec<Tensor>) = vs
            .trainable_variables()
            .into_iter()
            .partition(|t| decay_1d || t.dim() > 1);
        let decayed = params.len();
        params.extend(spared);
        let first = params
            .first()
            .ok_or(AccelError::NoParameters { optimizer })?;
        let (device, kind) = (first.device(), first.kind());
        if !matches!(
            kind,
            Kind::Float | Kind::Double | Kind::Half | Kind::BFloat16
        ) {
            return Err(mixed(optimizer, 0, "a floating-point kind", kind, device));
        }
        for (index, p) in params.iter().enumerate().skip(1) {
            if p.device() != device || p.kind() != kind {
                let expected = format!("{kind:?} on {device:?}");
                return Err(mixed(optimizer, index, &expected, p.kind(), p.device()));
            }
        }
        let lr_tensor = capturable.then(|| Tensor::full([], lr, (Kind::Float, device)));
        let stepped = vec![0; params.len()];
        Ok(Params {
            params,
            decayed,
            lr,
            lr_tensor,
            stepped,
        })
    }

    fn set_lr(&mut self, lr: f64) {
        self.lr = lr;
        if let Some(t) = &mut self.lr_tensor {
            // In place: a captured step reads this very memory.
            let _ = t.fill_(lr);
        }
    }

    fn zero_grad(&self) -> Result<(), AccelError> {
        ffi::clear_grads(&self.params)
    }

    /// The two groups' index ranges and weight decays, empty groups left out.
    fn groups(&self, weight_decay: f64) -> Vec<(std::ops::Range<usize>, f64)> {
        [
            (0..self.decayed, weight_decay),
            (self.decayed..self.params.len(), 0.0),
        ]
        .into_iter()
        .filter(|(r, _)| !r.is_empty())
        .collect()
    }
}

/// Names one state list for a checkpoint: `<what>.<parameter index>`.
fn named<'a>(what: &str, tensors: &'a [Tensor]) -> impl Iterator<Item = (String, Tensor)> + 'a {
    let what = what.to_string();
    tensors
        .iter()
        .enumerate()
        .map(move |(i, t)| (format!("{what}.{i}"), t.shallow_clone()))
}

/// Copies `state["<what>.<i>"]` into `into[i]` for every `i`, in place; each must be there with
/// the same shape.
fn restore(
    what: &str,
    into: &mut [Tensor],
    state: &HashMap<String, Tensor>,
) -> Result<(), AccelError> {
    for (i, dst) in into.iter_mut().enumerate() {
        let key = format!("{what}.{i}");
        let src = state.get(&key).ok_or_else(|| {
            AccelError::StateMismatch(format!(
                "expected {key} for {} parameters, found no such tensor",
                state.len()
            ))
        })?;
        if src.size() != dst.size() {
            return Err(AccelError::StateMismatch(format!(
                "{key} has shape {:?}, expected {:?}",
                src.size(),
                dst.size()
            )));
        }
        tch::no_grad(|| dst.f_copy_(src))?;
    }
    Ok(())
}

/// Fails unless the state holds exactly `count` entries per list in `lists`, so a checkpoint of
/// a larger model cannot leave some entries unused.
fn check_count(
    state: &HashMap<String, Tensor>,
    lists: &[&str],
    count: usize,
    extra: usize,
) -> Result<(), AccelError> {
    let expected = lists.len() * count + extra;
    if state.len() != expected {
        return Err(AccelError::StateMismatch(format!(
            "expected {expected} state tensors for {count} parameters, found {}",
            state.len()
        )));
    }
    Ok(())
}

fn mixed(
    optimizer: &'static str,
    index: usize,
    expected: &str,
    kind: Kind,
    device: Device,
) -> AccelError {
    AccelError::MixedParameters {
        optimizer,
        index,
        expected: expected.to_string(),
        found: format!("{kind:?} on {device:?}"),
    }
}

fn check_range(
    what: &'static str,
    value: f64,
    low: f64,
    below: f64,
    expected: &'static str,
) -> Result<(), AccelError> {
    if value.is_finite() && value >= low && value < below {
        return Ok(());
    }
    Err(AccelError::Invalid {
        what,
        expected,
        found: value.to_string(),
    })
}

/// AdamW with ATen's fused kernel; matches PyTorch's `AdamW(fused=True)` (and libtorch's
/// `torch::optim::AdamW`, which tch's `nn::AdamW` wraps).
#[derive(Debug)]
pub struct FusedAdamW {
    cfg: FusedAdamWConfig,
    p: Params,
    exp_avgs: Vec<Tensor>,
    exp_avg_sqs: Vec<Tensor>,
    /// Per-parameter step counts, 0-d f32 tensors on the device, as the kernel wants them.
    steps: Vec<Tensor>,
}

impl FusedAdamW {
    /// An optimizer over `vs`'s trainable variables as they are now (convert them to
    /// channels-last first, if wanted: the state copies their layout).
    pub fn new(vs: &VarStore, cfg: FusedAdamWConfig) -> Result<FusedAdamW, AccelError> {
        check_range("adamw beta1", cfg.beta1, 0.0, 1.0, "a value in [0, 1)")?;
        check_range("adamw beta2", cfg.beta2, 0.0, 1.0, "a value in [0, 1)")?;
        check_range(
            "adamw eps",
            cfg.eps,
            0.0,
            f64::INFINITY,
            "a finite value >= 0",
        )?;
        let wd = cfg.weight_decay;
        check_range(
            "adamw weight decay",
            wd,
            0.0,
            f64::INFINITY,
            "a finite value >= 0",
        )?;
        let p = Params::new(vs, "fused adamw", cfg.lr, cfg.capturable, cfg.decay_1d)?;
        let zeros = || p.params.iter().map(Tensor::zeros_like).collect::<Vec<_>>();
        let (exp_avgs, exp_avg_sqs) = (zeros(), zeros());
        let steps = p
            .params
            .iter()
            .map(|t| Tensor::zeros([], (Kind::Float, t.device())))
            .collect();
        Ok(FusedAdamW {
            cfg,
            p,
            exp_avgs,
            exp_avg_sqs,
            steps,
        })
    }

    pub fn config(&self) -> FusedAdamWConfig {
        FusedAdamWConfig {
            lr: self.p.lr,
            ..self.cfg
        }
    }

    pub fn set_lr(&mut self, lr: f64) {
        self.p.set_lr(lr);
    }

    /// Sets every parameter's gradient to undefined (PyTorch's `zero_grad()`), so the next
    /// backward allocates it afresh instead of adding to it.
    pub fn zero_grad(&mut self) -> Result<(), AccelError> {
        self.p.zero_grad()
    }

    /// The moments and step counts, named by parameter index (shared storage, not copies).
    pub fn state(&self) -> Vec<(String, Tensor)> {
        named("exp_avg", &self.exp_avgs)
            .chain(named("exp_avg_sq", &self.exp_avg_sqs))
            .chain(named("step", &self.steps))
            .collect()
    }

    /// Copies a `state` taken from an optimizer over the same parameters into this one.
    pub fn load_state(&mut self, state: &HashMap<String, Tensor>) -> Result<(), AccelError> {
        let lists = ["exp_avg", "exp_avg_sq", "step"];
        check_count(state, &lists, self.p.params.len(), 0)?;
        restore("exp_avg", &mut self.exp_avgs, state)?;
        restore("exp_avg_sq", &mut self.exp_avg_sqs, state)?;
        restore("step", &mut self.steps, state)
    }

    /// One AdamW update of every parameter that has a gradient.
    pub fn step(&mut self) -> Result<(), AccelError> {
        let c = self.cfg;
        for (r, wd) in self.p.groups(c.weight_decay) {
            ffi::fused_adamw_step(
                &self.p.params[r.clone()],
                &self.exp_avgs[r.clone()],
                &self.exp_avg_sqs[r.clone()],
                &self.steps[r.clone()],
                self.p.lr_tensor.as_ref(),
                self.p.lr,
                (c.beta1, c.beta2, wd, c.eps),
                &mut self.p.stepped[r],
            )?;
        }
        Ok(())
    }

    /// `zero_grad`, `loss.backward()`, `step`.
    pub fn backward_step(&mut self, loss: &Tensor) -> Result<(), AccelError> {
        self.zero_grad()?;
        loss.f_backward()?;
        self.step()
    }
}

/// SGD with ATen's fused kernel; matches PyTorch's `SGD(fused=True)`.
#[derive(Debug)]
pub struct FusedSgd {
    cfg: FusedSgdConfig,
    p: Params,
    /// Momentum buffers (none without momentum), allocated up front so `step` never allocates.
    bufs: Option<Vec<Tensor>>,
    /// Whether each buffer holds a momentum yet: its first step copies the gradient in.
    started: Vec<u8>,
}

impl FusedSgd {
    pub fn new(vs: &VarStore, cfg: FusedSgdConfig) -> Result<FusedSgd, AccelError> {
        check_range(
            "sgd momentum",
            cfg.momentum,
            0.0,
            f64::INFINITY,
            "a finite value >= 0",
        )?;
        check_range(
            "sgd dampening",
            cfg.dampening,
            0.0,
            1.0,
            "a value in [0, 1)",
        )?;
        let wd = cfg.weight_decay;
        check_range(
            "sgd weight decay",
            wd,
            0.0,
            f64::INFINITY,
            "a finite value >= 0",
        )?;
        if cfg.nesterov && (cfg.momentum <= 0.0 || cfg.dampening != 0.0) {
            return Err(AccelError::Invalid {
                what: "sgd nesterov setting",
                expected: "momentum > 0 and dampening 0 with nesterov",
                found: format!("momentum {} and dampening {}", cfg.momentum, cfg.dampening),
            });
        }
        let p = Params::new(vs, "fused sgd", cfg.lr, cfg.capturable, cfg.decay_1d)?;
        let bufs = (cfg.momentum != 0.0)
            .then(|| p.params.iter().map(Tensor::zeros_like).collect::<Vec<_>>());
        let started = vec![0; p.params.len()];
        Ok(FusedSgd {
            cfg,
            p,
            bufs,
            started,
        })
    }

    pub fn config(&self) -> FusedSgdConfig {
        FusedSgdConfig {
            lr: self.p.lr,
            ..self.cfg
        }
    }

    pub fn set_lr(&mut self, lr: f64) {
        self.p.set_lr(lr);
    }

    /// Sets every parameter's gradient to undefined (PyTorch's `zero_grad()`).
    pub fn zero_grad(&mut self) -> Result<(), AccelError> {
        self.p.zero_grad()
    }

    /// The momentum buffers by parameter index and which of them hold a momentum yet
    /// (`started`, one byte per parameter); shared storage for the buffers.
    pub fn state(&self) -> Vec<(String, Tensor)> {
        let started = Tensor::from_slice(&self.started);
        let bufs = self.bufs.as_deref().unwrap_or(&[]);
        named("momentum", bufs)
            .chain([("started".to_string(), started)])
            .collect()
    }

    /// Copies a `state` taken from an optimizer over the same parameters into this one.
    pub fn load_state(&mut self, state: &HashMap<String, Tensor>) -> Result<(), AccelError> {
        let n = self.p.params.len();
        let lists: &[&str] = if self.bufs.is_some() {
            &["momentum"]
        } else {
            &[]
        };
        check_count(state, lists, n, 1)?;
        if let Some(bufs) = &mut self.bufs {
            restore("momentum", bufs, state)?;
        }
        let started = state
            .get("started")
            .map(|t| Vec::<u8>::try_from(t.to_kind(Kind::Uint8).to_device(Device::Cpu)))
            .transpose()?
            .unwrap_or_default();
        if started.len() != n {
            return Err(AccelError::StateMismatch(format!(
                "expected {n} momentum flags (started), found {}",
                started.len()
            )));
        }
        self.started = started;
        Ok(())
    }

    /// One SGD update of every parameter that has a gradient.
    pub fn step(&mut self) -> Result<(), AccelError> {
        let c = self.cfg;
        for (r, wd) in self.p.groups(c.weight_decay) {
            ffi::fused_sgd_step(
                &self.p.params[r.clone()],
                self.bufs.as_deref().map(|b| &b[r.clone()]),
                &self.started[r.clone()],
                self.p.lr_tensor.as_ref(),
                self.p.lr,
                (c.momentum, c.dampening, c.nesterov, wd),
                &mut self.p.stepped[r],
            )?;
        }
        for (s, &stepped) in self.started.iter_mut().zip(&self.p.stepped) {
            *s |= stepped;
        }
        Ok(())
    }

    /// `zero_grad`, `loss.backward()`, `step`.
    pub fn backward_step(&mut self, loss: &Tensor) -> Result<(), AccelError> {
        self.zero_grad()?;
        loss.f_backward()?;
        self.step()
    }
}
