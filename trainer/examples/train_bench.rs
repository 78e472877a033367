//! Training throughput of one architecture on random tensors (fp32, no data loading), for
//! comparison with PyTorch eager on the same model, batch and precision (issue 4, benchmark):
//!
//! ```sh
//! cargo run --release -p stackhive-trainer --example train_bench -- --device cuda --batch 128 --size 224 --steps 20
//! ```
//!
//! Each step is a full AdamW training step (forward, BCE-with-logits, backward, update). The
//! first `--warmup` steps (allocator, cuDNN autotuning) are not timed; on CUDA the clock stops
//! after a device synchronisation.

use std::time::Instant;

use anyhow::Context;
use clap::Parser;
use stackhive_trainer::{parse_device, Arch, Net};
use tch::nn::{self, OptimizerConfig, VarStore};
use tch::{Device, Kind, Reduction, Tensor};

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
    /// Untimed steps first.
    #[arg(long, default_value_t = 3)]
    warmup: usize,
    /// libtorch's CPU threads (default: libtorch's choice).
    #[arg(long)]
    threads: Option<i32>,
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
    if let Some(n) = args.threads {
        tch::set_num_threads(n);
    }
    if device.is_cuda() {
        tch::Cuda::cudnn_set_benchmark(true);
    }
    tch::manual_seed(0);
    let vs = VarStore::new(device);
    let net = Net::new(&vs.root(), &arch, false);
    let mut opt = nn::AdamW::default()
        .build(&vs, 1e-3)
        .context("building AdamW")?;
    let s = args.size as i64;
    let images = Tensor::randn([args.batch, 3, s, s], (Kind::Float, device));
    let labels = Tensor::rand([args.batch], (Kind::Float, device))
        .lt(0.5)
        .to_kind(Kind::Float);
    let step = |opt: &mut nn::Optimizer| {
        let logits = net.forward_t(&images, None, true);
        let loss =
            logits.binary_cross_entropy_with_logits::<Tensor>(&labels, None, None, Reduction::Mean);
        opt.backward_step(&loss);
    };
    for _ in 0..args.warmup {
        step(&mut opt);
    }
    sync(device);
    let started = Instant::now();
    for _ in 0..args.steps {
        step(&mut opt);
    }
    sync(device);
    let secs = started.elapsed().as_secs_f64();
    let images_per_s = (args.batch as usize * args.steps) as f64 / secs;
    let params: i64 = vs
        .trainable_variables()
        .iter()
        .map(|t| t.numel() as i64)
        .sum();
    println!(
        "{arch} fp32 train on {device:?} (cpu threads {}): batch {} at {s}x{s}, {params} parameters: {images_per_s:.1} images/s ({} steps in {secs:.2} s)",
        tch::get_num_threads(),
        args.batch,
        args.steps,
    );
    Ok(())
}
