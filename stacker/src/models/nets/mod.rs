//! The level-2 nets on tch: a fully connected net and an entity-embedding net, sharing one
//! training loop on autograd (Adam on binary cross-entropy with logits, shuffled minibatches),
//! and TabNet, whose passes are written by hand (`tabnet`) but which shuffles, initialises and
//! fails the same way. Each job has one source of randomness: weights are initialised, batches
//! shuffled and dropout masks drawn from the job's own ChaCha generator, never from torch's
//! process-wide one: the stacker trains several jobs at once, and each must give the same
//! result for the same seed.
//!
//! Must not: train on a fold's validation rows (inputs come from `prep`'s fold split), or
//! report a prediction after a non-finite loss (the job fails as diverged).

pub mod embedding;
pub mod mlp;
pub mod tabnet;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use stackhive_spec::stack::{ModelType, Params};
use tch::nn::{self, OptimizerConfig};
use tch::{Kind, Reduction, Tensor};

use crate::error::StackError;
use crate::models::{Fit, FoldPrediction};

/// Trains a net on one fold, with libtorch limited to the fold's threads first. libtorch's
/// thread settings (OpenMP's, and MKL's under `at::set_num_threads`) belong to the thread
/// that sets them, and a fold runs on a thread of its own. The autograd nets' first operators
/// happen to apply the process's setting (`serve` sets one thread) to their thread, but
/// TabNet's first call is a matrix product, which MKL then spread over every core: two folds
/// side by side kept four threads spinning on two cores, and a small TabNet took 70 s in the
/// bench's sweep instead of 13.
///
/// The fold runs with denormal numbers flushed to zero (FTZ and DAZ on x86, FZ on aarch64), as
/// TensorFlow runs by default and `torch.set_flush_denormal(True)` asks: values under 1.2e-38
/// appear as a net trains, and on Intel cores an operation on one can take a microcode assist.
/// One fold of the bench sweep's widest MLP took 39.6 s with them and 7.2 s without, on an
/// Intel Xeon. The flags belong to the thread and are restored when the fold ends; threads it
/// starts (libtorch's intra-op ones) inherit them.
pub fn fit(model: ModelType, p: &Params, f: &Fit<'_>) -> Result<FoldPrediction, StackError> {
    tch::set_num_threads(f.threads.max(1) as i32);
    let fit = || match model {
        ModelType::Mlp => mlp::fit(p, f),
        ModelType::EntityEmbedding => embedding::fit(p, f),
        ModelType::Tabnet => tabnet::fit(p, f),
        other => unreachable!("{other} is not a net"),
    };
    // SAFETY: the mode only changes results below f32's smallest normal value, to zero, in
    // code that never relies on gradual underflow; the guard restores the thread's mode.
    #[allow(unsafe_code)]
    unsafe {
        no_denormals::no_denormals(fit)
    }
}

/// The inputs of a batch: dense features, and categorical codes for nets that embed them.
pub struct Inputs {
    pub dense: Tensor,
    pub codes: Option<Tensor>,
}

impl Inputs {
    fn rows(&self, idx: &Tensor) -> Inputs {
        Inputs {
            dense: self.dense.index_select(0, idx),
            codes: self.codes.as_ref().map(|c| c.index_select(0, idx)),
        }
    }

    fn len(&self) -> i64 {
        self.dense.size()[0]
    }
}

/// What a net's forward pass gives: logits for a batch.
pub type Forward = Result<Tensor, StackError>;

pub trait Net {
    fn forward(&self, x: &Inputs, train: bool, rng: &mut ChaCha8Rng) -> Forward;
}

/// How a net is trained.
pub struct Schedule {
    pub epochs: usize,
    pub batch: usize,
    pub lr: f64,
    pub weight_decay: f64,
}

/// A fully connected layer, initialised from the job's generator.
pub struct Linear {
    w: Tensor,
    b: Option<Tensor>,
}

impl Linear {
    pub fn new(p: nn::Path<'_>, fan_in: i64, fan_out: i64, rng: &mut ChaCha8Rng) -> Linear {
        let bound = 1.0 / (fan_in as f64).sqrt();
        let mut uniform = |n: i64| -> Tensor {
            let v: Vec<f32> = (0..n)
                .map(|_| rng.random_range(-bound..bound) as f32)
                .collect();
            Tensor::from_slice(&v)
        };
        let w = p.var_copy("weight", &uniform(fan_in * fan_out).view([fan_out, fan_in]));
        let b = Some(p.var_copy("bias", &uniform(fan_out)));
        Linear { w, b }
    }

    pub fn forward(&self, x: &Tensor) -> Tensor {
        x.linear(&self.w, self.b.as_ref())
    }
}

/// A `[fan_out, fan_in]` weight matrix, row-major, drawn as `torch.nn.init.xavier_normal_`
/// with `gain` draws it: normal, sd = gain·√(2 / (fan_in + fan_out)). pytorch-tabnet's
/// initialisation, whose larger weights set the effective step size of Adam at its rates.
pub fn xavier_values(fan_in: usize, fan_out: usize, gain: f64, rng: &mut ChaCha8Rng) -> Vec<f32> {
    let sd = gain * (2.0 / (fan_in + fan_out) as f64).sqrt();
    (0..fan_in * fan_out)
        .map(|_| (sd * rng.sample::<f64, _>(rand_distr::StandardNormal)) as f32)
        .collect()
}

/// Shuffles an epoch's row order in place (Fisher–Yates with the job's generator).
pub fn shuffle(order: &mut [i64], rng: &mut ChaCha8Rng) {
    for i in (1..order.len()).rev() {
        order.swap(i, rng.random_range(0..=i));
    }
}

/// The error of a training loss that is no longer finite.
pub fn diverged(loss: f64, epoch: usize) -> StackError {
    StackError::Diverged(format!(
        "the training loss is {loss} in epoch {}; the net diverged (try a lower lr)",
        epoch + 1
    ))
}

/// Inverted dropout with a mask from the job's generator: one `u32` draw per element, kept
/// when under `keep`·2³², drawn in bulk (a draw at a time was a third of an MLP's time).
pub fn dropout(x: &Tensor, p: f64, train: bool, rng: &mut ChaCha8Rng) -> Tensor {
    if !train || p <= 0.0 {
        return x.shallow_clone();
    }
    let keep = 1.0 - p;
    let (threshold, scale) = ((keep * 4_294_967_296.0) as u64, (1.0 / keep) as f32);
    let mut draws = vec![0u32; x.numel()];
    rng.fill(&mut draws[..]);
    let mask: Vec<f32> = draws
        .iter()
        .map(|&r| if (r as u64) < threshold { scale } else { 0.0 })
        .collect();
    x * Tensor::from_slice(&mask).view(x.size().as_slice())
}

pub fn rng(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed)
}

/// Row-major f32 values as an `[rows, cols]` tensor.
pub fn matrix(values: &[f32], cols: usize) -> Tensor {
    let rows = values.len() / cols.max(1);
    Tensor::from_slice(values).view([rows as i64, cols as i64])
}

/// Trains `net` on (`x`, `y`) and returns its probabilities for each of `predict`.
pub fn train(
    vs: &nn::VarStore,
    net: &dyn Net,
    x: &Inputs,
    y: &[f32],
    predict: &[&Inputs],
    s: &Schedule,
    rng: &mut ChaCha8Rng,
) -> Result<Vec<Vec<f32>>, StackError> {
    let mut opt = nn::Adam {
        wd: s.weight_decay,
        ..Default::default()
    }
    .build(vs, s.lr)
    .map_err(|e| StackError::Library(format!("optimizer: {e}")))?;
    let target = Tensor::from_slice(y);
    let n = x.len() as usize;
    let mut order: Vec<i64> = (0..n as i64).collect();
    for epoch in 0..s.epochs {
        shuffle(&mut order, rng);
        for chunk in order.chunks(s.batch.max(2)) {
            // A batch of one cannot be normalised; it is left out.
            if chunk.len() < 2 {
                continue;
            }
            let idx = Tensor::from_slice(chunk);
            let logits = net.forward(&x.rows(&idx), true, rng)?;
            let loss = logits.binary_cross_entropy_with_logits::<Tensor>(
                &target.index_select(0, &idx),
                None,
                None,
                Reduction::Mean,
            );
            let value = loss.double_value(&[]);
            if !value.is_finite() {
                return Err(diverged(value, epoch));
            }
            opt.backward_step(&loss);
        }
    }
    let _guard = tch::no_grad_guard();
    predict
        .iter()
        .map(|inputs| {
            let mut out = Vec::with_capacity(inputs.len() as usize);
            let rows = inputs.len();
            let mut at = 0;
            while at < rows {
                let hi = (at + 4096).min(rows);
                let idx = Tensor::arange_start(at, hi, (Kind::Int64, tch::Device::Cpu));
                let logits = net.forward(&inputs.rows(&idx), false, rng)?;
                let p = logits.sigmoid();
                out.extend(
                    Vec::<f32>::try_from(&p).map_err(|e| StackError::Library(e.to_string()))?,
                );
                at = hi;
            }
            Ok(out)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The mask keeps `1 - p` of the elements, each scaled by `1 / (1 - p)`, and drops the rest.
    #[test]
    fn dropout_keeps_its_share_scaled_up() {
        let x = Tensor::ones([1000, 1000], (Kind::Float, tch::Device::Cpu));
        let mut g = rng(5);
        for p in [0.05, 0.25, 0.5] {
            let v = Vec::<f32>::try_from(dropout(&x, p, true, &mut g).flatten(0, 1)).unwrap();
            let scale = (1.0 / (1.0 - p)) as f32;
            assert!(v.iter().all(|&e| e == 0.0 || e == scale), "p {p}");
            let kept = v.iter().filter(|&&e| e > 0.0).count() as f64 / v.len() as f64;
            // One million Bernoulli draws: the share's sd is at most 0.0005.
            assert!((kept - (1.0 - p)).abs() < 0.003, "p {p}: kept {kept}");
        }
        let same = dropout(&x, 0.3, false, &mut g);
        assert!(same.equal(&x));
    }
}
