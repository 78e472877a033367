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
//!
//! `--data` replaces the random tensors with the real pipeline, as a `cnn` job runs it: a
//! generated ISIC-like dataset cached at `--size`, batches built by `--loader-threads` threads
//! with the heavy augmentation (rotation, shear, stretch, cutout, colour jitter, vignette,
//! flips) and prefetched, then uploaded and normalised on the device inside the timed loop.

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
    /// Train on generated, cached, augmented images through the loader instead of one random
    /// tensor.
    #[arg(long)]
    data: bool,
    /// Loader threads with --data.
    #[arg(long, default_value_t = 4)]
    loader_threads: usize,
    /// Where --data keeps its generated dataset and cache (default: a temporary folder).
    #[arg(long)]
    data_dir: Option<std::path::PathBuf>,
}

/// The real input pipeline for `--data`: batches of the generated dataset, augmented by the
/// loader's threads, in a fixed order long enough for every step.
struct Pipeline {
    _tmp: tempfile::TempDir,
    cache: std::sync::Arc<stackhive_data::cache::ImageCache>,
    examples: std::sync::Arc<stackhive_trainer::data::Examples>,
}

impl Pipeline {
    fn new(args: &Args) -> anyhow::Result<Pipeline> {
        use stackhive_data::cache::ensure_cache;
        use stackhive_data::synth::{generate, SynthConfig};
        let tmp = tempfile::tempdir()?;
        let dir = args
            .data_dir
            .clone()
            .unwrap_or_else(|| tmp.path().to_path_buf());
        let root = dir.join("ds");
        if !root.join("images").exists() {
            // About 2 batches of distinct images; the loader cycles through them.
            let cfg = SynthConfig {
                patients: (2 * args.batch as usize / 14).max(4),
                test_patients: 0,
                image_size: args.size.max(256),
                positive_rate: 0.2,
                seed: 1,
                ..SynthConfig::default()
            };
            generate(&cfg, &root).context("generating the benchmark dataset")?;
        }
        let cache = ensure_cache(&root, args.size, &dir.join("cache"), false)?.cache;
        let ds = stackhive_data::isic::Dataset::load(&root)?;
        let mut examples = stackhive_trainer::data::Examples::default();
        for row in &ds.train {
            let i = cache
                .index_of(&row.image_name)
                .context("an image of the benchmark dataset is missing from its cache")?;
            examples.images.push(i);
            examples.labels.push(row.target);
            examples
                .meta
                .push(stackhive_trainer::meta::encode_train(row));
        }
        Ok(Pipeline {
            _tmp: tmp,
            cache: std::sync::Arc::new(cache),
            examples: std::sync::Arc::new(examples),
        })
    }

    /// A loader for `steps` batches of `batch` images, heavy augmentation on.
    fn loader(
        &self,
        args: &Args,
        steps: usize,
    ) -> anyhow::Result<stackhive_trainer::loader::Loader<'static>> {
        use stackhive_spec::AugmentSpec;
        let n = self.examples.len();
        let plan = (0..steps)
            .map(|b| {
                (0..args.batch as usize)
                    .map(|i| (b * args.batch as usize + i) % n)
                    .collect()
            })
            .collect();
        let cfg = stackhive_trainer::loader::LoaderConfig {
            augment: Some(AugmentSpec::heavy()),
            seed: 0,
            epoch: 0,
            threads: args.loader_threads.max(1),
            prefetch: 2,
        };
        Ok(stackhive_trainer::loader::Loader::new(
            self.cache.clone(),
            self.examples.clone(),
            plan,
            &cfg,
        )?)
    }
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
    let pipeline = args.data.then(|| Pipeline::new(&args)).transpose()?;
    let mut loader = match &pipeline {
        Some(p) => Some(p.loader(&args, args.warmup.max(1) + args.steps)?),
        None => None,
    };
    // The next input batch: from the loader (uploaded and normalised on the device), or the
    // same random tensor every step.
    let mut next_images = |fallback: &Tensor| -> anyhow::Result<Tensor> {
        match loader.as_mut() {
            Some(l) => {
                let host = l.next().context("the loader ran out of batches")??;
                Ok(host.to_device(device, args.channels_last).images)
            }
            None => Ok(fallback.shallow_clone()),
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
            static_images.copy_(&next_images(&images)?);
            graphed.replay()?;
        }
        started
    } else {
        let mut step = |opt: &mut Opt| -> anyhow::Result<()> {
            let batch = next_images(&images)?;
            let loss = loss_of(&batch)?;
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
    let input = if args.data {
        format!(
            "loader {} threads + heavy augmentation",
            args.loader_threads
        )
    } else {
        "random tensor".to_string()
    };
    println!(
        "{arch} {precision} train on {device:?} (input {input}, cpu threads {}, optimizer {optimizer}, channels-last {}, cuda graph {}): batch {} at {s}x{s}, {params} parameters: {images_per_s:.1} images/s ({} steps in {secs:.2} s{peak})",
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
