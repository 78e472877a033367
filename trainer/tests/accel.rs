//! The libtorch shim (`stackhive_trainer::accel`, issue 4, item 6) on the CPU: bf16 autocast,
//! channels-last, fused AdamW and SGD against references, and clean errors from the CUDA parts
//! on a machine without a GPU. The one CUDA test skips itself (saying so) without a GPU.

use stackhive_trainer::accel::{
    cuda_compiled, cuda_empty_cache, cuda_max_memory_allocated, cuda_mem_get_info,
    cuda_reset_peak_memory_stats, is_channels_last, to_channels_last, vs_to_channels_last,
    AccelError, Autocast, CudaGraph, FusedAdamW, FusedAdamWConfig, FusedSgd, FusedSgdConfig,
    GraphedStep, SideStream,
};
use stackhive_trainer::{Arch, Net};
use tch::nn::{self, ModuleT, OptimizerConfig, VarStore};
use tch::{Device, Kind, Reduction, Tensor};

/// One libtorch thread: tests run in parallel on 2 cores and OpenMP threads spin-wait.
fn one_thread() {
    tch::set_num_threads(1);
}

/// conv → relu → pool → linear, plus a linear head used only from step `LATE` on and a
/// variable never used: optimizers must skip what has no gradient.
struct Tiny {
    conv: nn::Conv2D,
    fc: nn::Linear,
    late: nn::Linear,
}

const LATE: usize = 2;

impl Tiny {
    fn new(vs: &VarStore) -> Tiny {
        let p = vs.root();
        let _unused = p.var("unused", &[5], nn::Init::Const(0.5));
        Tiny {
            conv: nn::conv2d(&p / "conv", 3, 4, 3, Default::default()),
            fc: nn::linear(&p / "fc", 4, 1, Default::default()),
            late: nn::linear(&p / "late", 4, 1, Default::default()),
        }
    }

    fn loss(&self, x: &Tensor, y: &Tensor, step: usize) -> Tensor {
        let feat = x
            .apply(&self.conv)
            .relu()
            .mean_dim(&[2i64, 3][..], false, Kind::Float);
        let fc = feat.apply(&self.fc);
        let logit = if step >= LATE {
            fc + feat.apply(&self.late)
        } else {
            fc
        };
        logit
            .squeeze_dim(1)
            .binary_cross_entropy_with_logits::<Tensor>(y, None, None, Reduction::Mean)
    }
}

/// Two var stores holding the same `Tiny`, and a fixed batch per step.
fn twins() -> (VarStore, Tiny, VarStore, Tiny, Vec<(Tensor, Tensor)>) {
    tch::manual_seed(7);
    let vs_a = VarStore::new(Device::Cpu);
    let a = Tiny::new(&vs_a);
    let mut vs_b = VarStore::new(Device::Cpu);
    let b = Tiny::new(&vs_b);
    vs_b.copy(&vs_a).unwrap();
    let batches = (0..6)
        .map(|_| {
            let x = Tensor::randn([6, 3, 8, 8], (Kind::Float, Device::Cpu));
            let y = Tensor::rand([6], (Kind::Float, Device::Cpu))
                .lt(0.5)
                .to_kind(Kind::Float);
            (x, y)
        })
        .collect();
    (vs_a, a, vs_b, b, batches)
}

fn var(vs: &VarStore, name: &str) -> Tensor {
    vs.variables()[name].shallow_clone()
}

fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
    (a - b).abs().max().double_value(&[])
}

/// Every variable of `a` equals its twin in `b` within `tol`, and has moved from `init` by more
/// than 1e-3 unless it is `unused` (which must not have moved at all).
fn assert_twins(a: &VarStore, b: &VarStore, init: &VarStore, tol: f64, what: &str) {
    let mut worst = (0.0, String::new());
    for (name, t) in a.variables() {
        let d = max_diff(&t, &var(b, &name));
        if d >= worst.0 {
            worst = (d, name.clone());
        }
        assert!(
            d < tol,
            "{what}: {name} differs by {d:e}, expected < {tol:e}"
        );
        let moved = max_diff(&t, &var(init, &name));
        if name == "unused" {
            assert_eq!(moved, 0.0, "{what}: the unused variable moved");
        } else {
            assert!(moved > 1e-3, "{what}: {name} moved only {moved:e}");
        }
    }
    eprintln!("{what}: largest difference {:e} ({})", worst.0, worst.1);
}

fn snapshot(vs: &VarStore) -> VarStore {
    let mut copy = VarStore::new(Device::Cpu);
    Tiny::new(&copy);
    copy.copy(vs).unwrap();
    copy
}

#[test]
fn bf16_autocast_applies_inside_the_guard_only() {
    one_thread();
    let vs = VarStore::new(Device::Cpu);
    let conv = nn::conv2d(vs.root() / "c", 3, 4, 3, Default::default());
    let x = Tensor::randn([2, 3, 8, 8], (Kind::Float, Device::Cpu));
    let m = Tensor::randn([8, 3], (Kind::Float, Device::Cpu));
    let kinds = || (x.apply(&conv).kind(), x.view([-1, 8]).matmul(&m).kind());
    assert_eq!(kinds(), (Kind::Float, Kind::Float));
    assert!(!Autocast::is_enabled(Device::Cpu).unwrap());
    {
        let _outer = Autocast::bf16(Device::Cpu).unwrap();
        assert_eq!(kinds(), (Kind::BFloat16, Kind::BFloat16));
        {
            let _inner = Autocast::bf16(Device::Cpu).unwrap();
            assert_eq!(kinds(), (Kind::BFloat16, Kind::BFloat16));
        }
        // The inner guard restored the outer state, not "off".
        assert!(Autocast::is_enabled(Device::Cpu).unwrap());
        assert_eq!(kinds(), (Kind::BFloat16, Kind::BFloat16));
        // Parameters stay fp32.
        assert_eq!(var(&vs, "c.weight").kind(), Kind::Float);
    }
    assert!(!Autocast::is_enabled(Device::Cpu).unwrap());
    assert_eq!(kinds(), (Kind::Float, Kind::Float));
}

#[test]
fn channels_last_var_store_keeps_the_forward() {
    one_thread();
    tch::manual_seed(3);
    let vs = VarStore::new(Device::Cpu);
    let net = Net::new(
        &vs.root(),
        &Arch::parse("efficientnet-w0.25-d0.25").unwrap(),
        false,
    );
    let x = Tensor::randn([2, 3, 32, 32], (Kind::Float, Device::Cpu));
    let before = tch::no_grad(|| ModuleT::forward_t(&net, &x, false));

    let four_d = vs.variables().values().filter(|t| t.dim() == 4).count();
    assert!(four_d > 5, "expected conv weights, found {four_d}");
    assert_eq!(vs_to_channels_last(&vs).unwrap(), four_d);
    for (name, t) in vs.variables() {
        if t.dim() == 4 {
            assert!(is_channels_last(&t), "{name} is not channels-last");
        }
    }
    // A k×k conv weight [O, I, k, k] with I > 1 has NHWC strides now.
    let (name, w) = vs
        .variables()
        .into_iter()
        .find(|(_, t)| t.dim() == 4 && t.size()[1] > 1 && t.size()[2] > 1)
        .expect("a k×k conv with several input channels");
    let s = w.size();
    let (i, k) = (s[1], s[3]);
    assert_eq!(w.stride(), vec![i * s[2] * k, 1, k * i, i], "{name} {s:?}");
    assert!(w.requires_grad(), "{name} lost requires_grad");

    let xc = to_channels_last(&x);
    assert!(is_channels_last(&xc) && !is_channels_last(&x));
    assert_eq!(max_diff(&xc, &x), 0.0);
    let after = tch::no_grad(|| ModuleT::forward_t(&net, &xc, false));
    let d = max_diff(&before, &after);
    assert!(d < 1e-4, "channels-last forward differs by {d:e}");
    // Not 4-D: returned as it is.
    let v = Tensor::ones([3], (Kind::Float, Device::Cpu));
    assert!(!is_channels_last(&to_channels_last(&v)));
}

/// Fused AdamW against libtorch's `torch::optim::AdamW` (tch's `nn::AdamW`), 6 steps with a
/// learning-rate change and a head whose gradient appears late.
fn adamw_matches_tch(channels_last: bool, capturable: bool) {
    one_thread();
    let (vs_a, a, vs_b, b, batches) = twins();
    let init = snapshot(&vs_a);
    if channels_last {
        assert_eq!(vs_to_channels_last(&vs_a).unwrap(), 1);
    }
    let cfg = FusedAdamWConfig {
        lr: 2e-2,
        weight_decay: 0.5,
        capturable,
        ..Default::default()
    };
    let mut fused = FusedAdamW::new(&vs_a, cfg).unwrap();
    let mut reference = nn::AdamW {
        wd: cfg.weight_decay,
        ..Default::default()
    }
    .build(&vs_b, cfg.lr)
    .unwrap();
    for (step, (x, y)) in batches.iter().enumerate() {
        if step == 3 {
            fused.set_lr(3e-3);
            reference.set_lr(3e-3);
        }
        let xa = if channels_last {
            to_channels_last(x)
        } else {
            x.shallow_clone()
        };
        fused.backward_step(&a.loss(&xa, y, step)).unwrap();
        reference.backward_step(&b.loss(x, y, step));
    }
    let what = format!("adamw (channels-last {channels_last}, capturable {capturable})");
    assert_twins(&vs_a, &vs_b, &init, 1e-6, &what);
    if channels_last {
        assert!(is_channels_last(&var(&vs_a, "conv.weight")));
    }
}

#[test]
fn fused_adamw_matches_tch_adamw() {
    adamw_matches_tch(false, false);
}

#[test]
fn fused_adamw_matches_with_channels_last_and_a_tensor_lr() {
    adamw_matches_tch(true, true);
}

/// PyTorch's SGD, written out: weight decay into the gradient, momentum buffer started with
/// the gradient itself, then blended with dampening; Nesterov looks one step ahead.
fn reference_sgd(params: &[Tensor], bufs: &mut [Option<Tensor>], c: &FusedSgdConfig) {
    tch::no_grad(|| {
        for (p, buf) in params.iter().zip(bufs.iter_mut()) {
            let g = p.grad();
            if !g.defined() {
                continue;
            }
            let mut d = &g + p * c.weight_decay;
            if c.momentum != 0.0 {
                let b = match buf.take() {
                    None => d.copy(),
                    Some(b) => b * c.momentum + &d * (1.0 - c.dampening),
                };
                d = if c.nesterov {
                    &d + &b * c.momentum
                } else {
                    b.copy()
                };
                *buf = Some(b);
            }
            let mut p = p.shallow_clone();
            p -= d * c.lr;
        }
    });
}

#[test]
fn fused_sgd_matches_the_written_out_rule() {
    for (momentum, dampening, nesterov) in [
        (0.9, 0.0, false),
        (0.9, 0.0, true),
        (0.8, 0.3, false),
        (0.0, 0.0, false),
    ] {
        one_thread();
        let (vs_a, a, vs_b, b, batches) = twins();
        let init = snapshot(&vs_a);
        let cfg = FusedSgdConfig {
            lr: 0.5,
            momentum,
            dampening,
            nesterov,
            weight_decay: 1e-2,
            decay_1d: true,
            capturable: momentum == 0.0,
        };
        let mut fused = FusedSgd::new(&vs_a, cfg).unwrap();
        let params = vs_b.trainable_variables();
        let mut bufs: Vec<Option<Tensor>> = params.iter().map(|_| None).collect();
        for (step, (x, y)) in batches.iter().enumerate() {
            fused.backward_step(&a.loss(x, y, step)).unwrap();
            for p in &params {
                let mut p = p.shallow_clone();
                p.zero_grad();
            }
            b.loss(x, y, step).backward();
            reference_sgd(&params, &mut bufs, &cfg);
        }
        let what = format!("sgd (momentum {momentum}, dampening {dampening}, nesterov {nesterov})");
        assert_twins(&vs_a, &vs_b, &init, 1e-6, &what);
    }
}

#[test]
fn optimizers_refuse_bad_settings() {
    let vs = VarStore::new(Device::Cpu);
    let err = FusedAdamW::new(&vs, FusedAdamWConfig::default()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "fused adamw found no trainable variables in the var store; expected at least one"
    );
    Tiny::new(&vs);
    let bad = FusedAdamWConfig {
        beta2: 1.0,
        ..Default::default()
    };
    let err = FusedAdamW::new(&vs, bad).unwrap_err().to_string();
    assert_eq!(err, "invalid adamw beta2 1: expected a value in [0, 1)");
    let bad = FusedSgdConfig {
        nesterov: true,
        dampening: 0.1,
        ..Default::default()
    };
    let err = FusedSgd::new(&vs, bad).unwrap_err().to_string();
    assert!(
        err.contains("momentum > 0 and dampening 0 with nesterov"),
        "{err}"
    );
}

#[test]
fn cuda_parts_fail_cleanly_without_a_gpu() {
    if tch::Cuda::is_available() {
        eprintln!("skipped: this machine has a CUDA device");
        return;
    }
    let err = CudaGraph::new(Device::Cpu).unwrap_err().to_string();
    assert_eq!(err, "cuda graphs need a CUDA device, found cpu");
    let vs = VarStore::new(Device::Cpu);
    Tiny::new(&vs);
    let err = GraphedStep::capture(&vs, 3, || unreachable!("no step runs on the cpu"))
        .unwrap_err()
        .to_string();
    assert_eq!(err, "cuda graphs need a CUDA device, found cpu");
    let err = SideStream::enter(Device::Cpu).unwrap_err().to_string();
    assert_eq!(err, "side streams need a CUDA device, found cpu");

    // On cuda:0 the shim itself refuses: its C++ error comes back as a value.
    let absent = |r: Result<(), AccelError>, what: &str| {
        let err = r.unwrap_err();
        let msg = err.to_string();
        eprintln!("{what}: {msg}");
        if cuda_compiled() {
            assert!(
                matches!(err, AccelError::Torch { .. })
                    && msg
                        .contains("cuda device 0 is not available: libtorch sees 0 CUDA device(s)"),
                "{what}: {msg}"
            );
        } else {
            assert!(
                matches!(err, AccelError::NoCudaBuild { .. }),
                "{what}: {msg}"
            );
        }
    };
    absent(CudaGraph::new(Device::Cuda(0)).map(drop), "graph");
    absent(SideStream::enter(Device::Cuda(0)).map(drop), "side stream");
    absent(cuda_mem_get_info(0).map(drop), "mem_get_info");
    absent(
        cuda_max_memory_allocated(0).map(drop),
        "max_memory_allocated",
    );
    absent(cuda_reset_peak_memory_stats(0), "reset_peak_memory_stats");
    absent(cuda_empty_cache(), "empty_cache");
    let err = Autocast::bf16(Device::Cuda(0)).unwrap_err().to_string();
    assert_eq!(
        err,
        "device cuda:0 is not available: libtorch sees 0 CUDA device(s)"
    );
}

/// Either fused optimizer, for the CUDA graph test.
enum Fused {
    AdamW(FusedAdamW),
    Sgd(FusedSgd),
}

impl Fused {
    fn new(vs: &VarStore, adamw: bool) -> Fused {
        if adamw {
            let cfg = FusedAdamWConfig {
                lr: 1e-2,
                capturable: true,
                ..Default::default()
            };
            Fused::AdamW(FusedAdamW::new(vs, cfg).unwrap())
        } else {
            let cfg = FusedSgdConfig {
                lr: 0.5,
                capturable: true,
                ..Default::default()
            };
            Fused::Sgd(FusedSgd::new(vs, cfg).unwrap())
        }
    }

    fn step(&mut self) -> Result<(), AccelError> {
        match self {
            Fused::AdamW(o) => o.step(),
            Fused::Sgd(o) => o.step(),
        }
    }

    fn backward_step(&mut self, loss: &Tensor) {
        match self {
            Fused::AdamW(o) => o.backward_step(loss).unwrap(),
            Fused::Sgd(o) => o.backward_step(loss).unwrap(),
        }
    }

    fn set_lr(&mut self, lr: f64) {
        match self {
            Fused::AdamW(o) => o.set_lr(lr),
            Fused::Sgd(o) => o.set_lr(lr),
        }
    }
}

/// A captured step replayed per batch trains like eager steps, `set_lr` included. SGD is
/// compared element by element; AdamW by the median difference, since its first steps move
/// each weight by ±lr whatever the gradient's size, so a gradient element within rounding of
/// zero may legitimately flip between two runs of nondeterministic cuDNN kernels.
fn graphed_vs_eager(device: Device, adamw: bool) {
    tch::manual_seed(11);
    let vs_a = VarStore::new(device);
    let a = Tiny::new(&vs_a);
    let mut vs_b = VarStore::new(device);
    let b = Tiny::new(&vs_b);
    vs_b.copy(&vs_a).unwrap();
    let mut opt_a = Fused::new(&vs_a, adamw);
    let mut opt_b = Fused::new(&vs_b, adamw);
    let batch = |_| {
        let x = Tensor::randn([6, 3, 8, 8], (Kind::Float, device));
        let y = Tensor::rand([6], (Kind::Float, device))
            .lt(0.5)
            .to_kind(Kind::Float);
        (x, y)
    };
    let batches: Vec<_> = (0..6).map(batch).collect();
    let (mut sx, mut sy) = (batches[0].0.copy(), batches[0].1.copy());
    let warmup = 3;
    // Steps LATE and later only: the captured graph always uses the late head.
    let graphed = GraphedStep::capture(&vs_a, warmup, || {
        let loss = a.loss(&sx, &sy, LATE);
        loss.f_backward()?;
        opt_a.step()?;
        Ok(loss)
    })
    .unwrap();
    for _ in 0..warmup {
        opt_b.backward_step(&b.loss(&batches[0].0, &batches[0].1, LATE));
    }
    for (i, (x, y)) in batches.iter().enumerate().skip(1) {
        if i == 3 {
            opt_a.set_lr(if adamw { 1e-3 } else { 0.05 });
            opt_b.set_lr(if adamw { 1e-3 } else { 0.05 });
        }
        sx.copy_(x);
        sy.copy_(y);
        let loss_a = graphed.replay().unwrap().double_value(&[]);
        let loss_b = b.loss(x, y, LATE);
        opt_b.backward_step(&loss_b);
        let loss_b = loss_b.double_value(&[]);
        assert!(
            (loss_a - loss_b).abs() < 1e-3,
            "adamw {adamw}, step {i}: loss {loss_a} vs {loss_b}"
        );
    }
    for (name, t) in vs_a.variables() {
        let diff = (&t - var(&vs_b, &name)).abs();
        let (max, median) = (
            diff.max().double_value(&[]),
            diff.median().double_value(&[]),
        );
        eprintln!("adamw {adamw}: {name} differs by {max:e} at most, {median:e} median");
        if adamw {
            assert!(median < 1e-5, "{name}: median difference {median:e}");
        } else {
            assert!(max < 1e-4, "{name}: difference {max:e}");
        }
    }
}

/// GPU only, so ignored by default (CI has no GPU): CUDA graphs of whole training steps, and
/// the memory queries. On a GPU machine: `cargo test -p stackhive-trainer --test accel -- --ignored`.
#[test]
#[ignore = "needs a CUDA GPU"]
fn graphed_step_trains_like_eager_steps_on_cuda() {
    assert!(tch::Cuda::is_available(), "this test needs a CUDA device");
    let device = Device::Cuda(0);
    cuda_reset_peak_memory_stats(0).unwrap();
    graphed_vs_eager(device, false);
    graphed_vs_eager(device, true);
    let (free, total) = cuda_mem_get_info(0).unwrap();
    assert!(free > 0 && free <= total, "free {free} of {total}");
    assert!(cuda_max_memory_allocated(0).unwrap() > 0);
    cuda_empty_cache().unwrap();
    let bf16 = Autocast::bf16(device).unwrap();
    let x = Tensor::randn([4, 4], (Kind::Float, device));
    assert_eq!(x.matmul(&x).kind(), Kind::BFloat16);
    drop(bf16);
    assert_eq!(x.matmul(&x).kind(), Kind::Float);
}
