//! Training throughput of one architecture on random tensors (no data loading), for comparison
//! with PyTorch eager on the same model, batch and precision (issue 4, benchmark):
//!
//! ```sh
//! cargo run --release -p stackhive-trainer --example train_bench -- --device cuda --batch 128 --size 224 --steps 20
//! ```
//!
//! Each step is a full AdamW training step (forward, BCE-with-logits, backward, update). The
//! first `--warmup` steps (allocator, cuDNN autotuning) are not timed; on CUDA the clock stops
//! after a device synchronisation. The options compare the accelerations of `accel` (issue 4,
//! item 6), typically in this order:
//!
//! ```sh
//! train_bench --device cuda                                   # tch AdamW, fp32
//! train_bench --device cuda --optimizer fused-adamw           # ATen's fused AdamW
//! train_bench --device cuda --optimizer fused-adamw --precision bf16 --channels-last
//! train_bench --device cuda --optimizer fused-adamw --precision bf16 --channels-last --cuda-graph
//! ```
//!
//! With `--cuda-graph` the warm-up steps run eagerly on a side stream, one step is captured,
//! and each timed step copies a batch into the captured input buffer and replays the graph.

use std::time::Instant;

use anyhow::{bail, Context};
use clap::{Parser, ValueEnum};
use stackhive_trainer::accel::{
    cuda_max_memory_allocated, cuda_reset_peak_memory_stats, to_channels_last, vs_to_channels_last,
    AccelError, Autocast, FusedAdamW, FusedAdamWConfig, GraphedStep,
};
use stackhive_trainer::{parse_device, Arch, Net};
use tch::nn::{self, OptimizerConfig, VarStore};
use tch::{Device, Kind, Reduction, Tensor};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Precision {
    Fp32,
    /// bf16 autocast around forward and loss; parameters and optimizer stay fp32.
    Bf16,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Optimizer {
    /// tch's `nn::AdamW` (libtorch's `torch::optim::AdamW`, one kernel per tensor and op).
    Adamw,
    /// ATen's `_fused_adamw_`: one kernel for all parameters.
    FusedAdamw,
}

#[derive(Debug, Parser)]
struct Args {
    /// auto, cpu, cuda or cuda:N.
    #[arg(long, default_value = "auto")]
    device: String,
    #[arg(long, default_value = "efficientnet-b0")]
    arch: String,
    #[arg(long, default_value_t = 128)]
    batch: i64,
    #[arg(long, default_value_t = 224)]
    size: u32,
    /// Timed steps.
    #[arg(long, default_value_t = 20)]
    steps: usize,
    /// Untimed steps first (with --cuda-graph: eager steps before the capture, at least 1).
    #[arg(long, default_value_t = 3)]
    warmup: usize,
    /// libtorch's CPU threads (default: libtorch's choice).
    #[arg(long)]
    threads: Option<i32>,
    #[arg(long, value_enum, default_value_t = Precision::Fp32)]
    precision: Precision,
    /// Channels-last parameters and inputs.
    #[arg(long)]
    channels_last: bool,
    #[arg(long, value_enum, default_value_t = Optimizer::Adamw)]
    optimizer: Optimizer,
    /// Capture one training step as a CUDA graph and replay it (needs --optimizer fused-adamw).
    #[arg(long)]
    cuda_graph: bool,
}

enum Opt {
    Tch(nn::Optimizer),
    Fused(FusedAdamW),
}

fn sync(device: Device) {
    if let Device::Cuda(i) = device {
        tch::Cuda::synchronize(i as i64);
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let device = parse_device(&args.device)?;
    let arch = Arch::parse(&args.arch)?;
    arch.check_image_size(args.size)?;
    if args.cuda_graph && args.optimizer != Optimizer::FusedAdamw {
        bail!("--cuda-graph needs --optimizer fused-adamw, found --optimizer adamw (tch's AdamW cannot be captured)");
    }
    if let Some(n) = args.threads {
        tch::set_num_threads(n);
    }
    if device.is_cuda() {
        tch::Cuda::cudnn_set_benchmark(true);
    }
    tch::manual_seed(0);
    let vs = VarStore::new(device);
    let net = Net::new(&vs.root(), &arch, false);
    if args.channels_last {
        vs_to_channels_last(&vs).context("converting the parameters to channels-last")?;
    }
    let mut opt = match args.optimizer {
        Optimizer::Adamw => Opt::Tch(
            nn::AdamW::default()
                .build(&vs, 1e-3)
                .context("building AdamW")?,
        ),
        Optimizer::FusedAdamw => {
            let cfg = FusedAdamWConfig {
                capturable: args.cuda_graph,
                ..Default::default()
            };
            Opt::Fused(FusedAdamW::new(&vs, cfg).context("building fused AdamW")?)
        }
    };
    let s = args.size as i64;
    let layout = |t: Tensor| {
        if args.channels_last {
            to_channels_last(&t)
        } else {
            t
        }
    };
    let images = layout(Tensor::randn([args.batch, 3, s, s], (Kind::Float, device)));
    let labels = Tensor::rand([args.batch], (Kind::Float, device))
        .lt(0.5)
        .to_kind(Kind::Float);
    // Forward and loss, under bf16 autocast when asked; backward runs outside it.
    let loss_of = |images: &Tensor| -> Result<Tensor, AccelError> {
        let _autocast = match args.precision {
            Precision::Bf16 => Some(Autocast::bf16(device)?),
            Precision::Fp32 => None,
        };
        let logits = net.forward_t(images, None, true);
        Ok(logits.binary_cross_entropy_with_logits::<Tensor>(&labels, None, None, Reduction::Mean))
    };
    let started = if args.cuda_graph {
        let Opt::Fused(fused) = &mut opt else {
            unreachable!("checked above: --cuda-graph implies fused-adamw");
        };
        // The captured step reads `static_images`; each timed step copies `images` into it.
        let mut static_images = images.copy();
        let graphed = GraphedStep::capture(&vs, args.warmup.max(1), || {
            let loss = loss_of(&static_images)?;
            loss.f_backward()?;
            fused.step()?;
            Ok(loss)
        })
        .context("capturing the training step as a cuda graph")?;
        sync(device);
        reset_peak(device);
        let started = Instant::now();
        for _ in 0..args.steps {
            static_images.copy_(&images);
            graphed.replay()?;
        }
        started
    } else {
        let step = |opt: &mut Opt| -> anyhow::Result<()> {
            let loss = loss_of(&images)?;
            match opt {
                Opt::Tch(o) => o.backward_step(&loss),
                Opt::Fused(o) => o.backward_step(&loss)?,
            }
            Ok(())
        };
        for _ in 0..args.warmup {
            step(&mut opt)?;
        }
        sync(device);
        reset_peak(device);
        let started = Instant::now();
        for _ in 0..args.steps {
            step(&mut opt)?;
        }
        started
    };
    sync(device);
    let secs = started.elapsed().as_secs_f64();
    let images_per_s = (args.batch as usize * args.steps) as f64 / secs;
    let params: i64 = vs
        .trainable_variables()
        .iter()
        .map(|t| t.numel() as i64)
        .sum();
    let precision = match args.precision {
        Precision::Fp32 => "fp32",
        Precision::Bf16 => "bf16",
    };
    let optimizer = match args.optimizer {
        Optimizer::Adamw => "adamw",
        Optimizer::FusedAdamw => "fused-adamw",
    };
    let on_off = |b: bool| if b { "on" } else { "off" };
    let peak = match device {
        Device::Cuda(i) => cuda_max_memory_allocated(i)
            .map(|b| format!(", peak {:.0} MiB", b as f64 / (1 << 20) as f64))
            .unwrap_or_default(),
        _ => String::new(),
    };
    println!(
        "{arch} {precision} train on {device:?} (cpu threads {}, optimizer {optimizer}, channels-last {}, cuda graph {}): batch {} at {s}x{s}, {params} parameters: {images_per_s:.1} images/s ({} steps in {secs:.2} s{peak})",
        tch::get_num_threads(),
        on_off(args.channels_last),
        on_off(args.cuda_graph),
        args.batch,
        args.steps,
    );
    Ok(())
}

/// Peak memory then covers the timed steps only (best effort: a CUDA build of the shim may
/// still lack CUDA support, and then the line just has no peak).
fn reset_peak(device: Device) {
    if let Device::Cuda(i) = device {
        let _ = cuda_reset_peak_memory_stats(i);
    }
}
