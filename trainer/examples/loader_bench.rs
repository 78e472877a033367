//! Throughput of the training data pipeline (issue 4, item 5, and the benchmark goal of
//! thousands of 224×224 images/s): images/s through `Loader` with no augmentation, flips only,
//! and the heavy default-style augmentation, for several worker-thread counts, with and without
//! the `to_device(Cpu)` conversion on the consuming thread; plus the single-thread cost of
//! augmenting one image, which is what scales with cores. Nothing here is asserted.
//!
//! ```sh
//! cargo run --release -p stackhive-trainer --example loader_bench -- --images 1500 --threads 1,2
//! ```
//!
//! The images are generated (`stackhive_data::synth`) and cached once per run at `--size`.
//! libtorch runs on one thread, as the training loop's conversion would beside the workers.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use clap::Parser;
use stackhive_data::cache::ensure_cache;
use stackhive_data::cache::ImageCache;
use stackhive_data::synth::{generate, SynthConfig};
use stackhive_spec::cnn::AugmentSpec;
use stackhive_trainer::augment::geometry::{self, Dihedral};
use stackhive_trainer::augment::{image_rng, pixels, Augmenter, Jitter};
use stackhive_trainer::data::Examples;
use stackhive_trainer::loader::{Loader, LoaderConfig};
use stackhive_trainer::meta::META_DIM;
use tch::Device;

#[derive(Debug, Parser)]
struct Args {
    /// About this many generated images.
    #[arg(long, default_value_t = 1500)]
    images: usize,
    /// Cached image side.
    #[arg(long, default_value_t = 224)]
    size: u32,
    #[arg(long, default_value_t = 128)]
    batch: usize,
    /// Epochs timed per configuration.
    #[arg(long, default_value_t = 2)]
    epochs: u64,
    /// Worker-thread counts to time, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,2")]
    threads: Vec<usize>,
    /// Batches each worker may hold ready.
    #[arg(long, default_value_t = 2)]
    prefetch: usize,
    /// Only time the single transforms (per image, one thread) and exit.
    #[arg(long)]
    transforms_only: bool,
    /// Keep the generated dataset and cache here (default: a temporary folder).
    #[arg(long)]
    dir: Option<PathBuf>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tch::set_num_threads(1);
    let tmp = tempfile::tempdir()?;
    let dir = args.dir.clone().unwrap_or_else(|| tmp.path().to_path_buf());
    let root = dir.join("ds");
    if !root.join("images").exists() {
        let cfg = SynthConfig {
            patients: (args.images / 14).max(1),
            test_patients: 0,
            image_size: args.size.max(256),
            seed: 1,
            progress: true,
            ..SynthConfig::default()
        };
        let r = generate(&cfg, &root).context("generating images")?;
        println!(
            "generated {} images in {:.1} s",
            r.rows,
            r.elapsed.as_secs_f64()
        );
    }
    let ensured = ensure_cache(&root, args.size, &dir.join("cache"), true)?;
    let cache = Arc::new(ensured.cache);
    let n = cache.len();
    let examples = Arc::new(Examples {
        images: (0..n).collect(),
        labels: (0..n).map(|i| u8::from(i % 50 == 0)).collect(),
        meta: vec![[0.0; META_DIM]; n],
    });
    let cores = std::thread::available_parallelism().map_or(1, |c| c.get());
    println!(
        "{n} images of {s}×{s}, batch {b}, {e} epochs per figure, {cores} cores, prefetch {p}",
        s = args.size,
        b = args.batch,
        e = args.epochs,
        p = args.prefetch
    );

    let configs = [
        ("none", None),
        ("flips", Some(AugmentSpec::default())),
        ("heavy", Some(AugmentSpec::heavy())),
    ];
    // One thread, no loader: the cost of one image, which is what more cores divide.
    let len = cache.image_len();
    let mut dst = vec![0u8; len];
    for (name, spec) in &configs {
        let aug = spec.as_ref().map(|s| Augmenter::new(s, args.size as usize));
        let t = Instant::now();
        for i in 0..n {
            match &aug {
                Some(a) => a.apply(cache.image(i), &mut dst, &mut image_rng(0, 0, i as u64)),
                None => dst.copy_from_slice(cache.image(i)),
            }
        }
        let us = t.elapsed().as_secs_f64() * 1e6 / n as f64;
        println!(
            "per image, one thread, {name:>5}: {us:7.1} µs = {:6.0} images/s per core",
            1e6 / us
        );
    }

    per_transform(&cache);
    if args.transforms_only {
        return Ok(());
    }

    for (name, spec) in &configs {
        for &threads in &args.threads {
            for device in [false, true] {
                let t = Instant::now();
                let mut images = 0;
                for epoch in 0..args.epochs {
                    let order: Vec<usize> = (0..n).collect();
                    let batches: Vec<Vec<usize>> =
                        order.chunks(args.batch).map(<[usize]>::to_vec).collect();
                    let cfg = LoaderConfig {
                        augment: spec.clone(),
                        seed: 1,
                        epoch,
                        threads,
                        prefetch: args.prefetch,
                    };
                    let loader = Loader::new(cache.clone(), examples.clone(), batches, &cfg)?;
                    for hb in loader {
                        let hb = hb?;
                        images += hb.len;
                        if device {
                            let b = hb.to_device(Device::Cpu, false);
                            std::hint::black_box(&b.images);
                        }
                    }
                }
                let secs = t.elapsed().as_secs_f64();
                println!(
                    "loader {name:>5}, {threads} thread{}, {:<21}: {:7.0} images/s",
                    if threads == 1 { " " } else { "s" },
                    if device {
                        "with to_device(Cpu)"
                    } else {
                        "host batches only"
                    },
                    images as f64 / secs
                );
            }
        }
    }
    Ok(())
}

/// Single-thread cost of each transform over the cache's images, to see where time goes.
fn per_transform(cache: &ImageCache) {
    let size = cache.size() as usize;
    let n = cache.len().min(300);
    let mut dst = vec![0u8; cache.image_len()];
    let only = std::env::var("LOADER_BENCH_ONLY").ok();
    let mut time = |name: &str, f: &mut dyn FnMut(&[u8], &mut [u8])| {
        if only.as_deref().is_some_and(|o| !name.starts_with(o)) {
            return;
        }
        // Best of three passes: the figures are for a quiet machine.
        let mut best = f64::INFINITY;
        for _ in 0..3 {
            let t = Instant::now();
            for i in 0..n {
                f(cache.image(i), &mut dst);
            }
            best = best.min(t.elapsed().as_secs_f64());
        }
        let us = best * 1e6 / n as f64;
        println!("per image, one thread, {name:<22}: {us:7.1} µs");
    };
    let rot = geometry::compose(&geometry::rotation(17.0), &geometry::shear(5.0));
    let jit = |hue| Jitter {
        brightness: 1.1,
        contrast: 0.9,
        hue,
    };
    time("copy", &mut |s, d| d.copy_from_slice(s));
    time("hflip", &mut |s, d| {
        geometry::dihedral(s, d, size, Dihedral::HFLIP)
    });
    time("quarter turn", &mut |s, d| {
        geometry::dihedral(s, d, size, Dihedral::ROT90)
    });
    time("warp", &mut |s, d| geometry::warp(s, d, size, &rot));
    time("brightness+contrast", &mut |s, d| {
        d.copy_from_slice(s);
        pixels::jitter(d, jit(0.0));
    });
    time("brightness+contrast+hue", &mut |s, d| {
        d.copy_from_slice(s);
        pixels::jitter(d, jit(0.03));
    });
    time("vignette", &mut |s, d| {
        d.copy_from_slice(s);
        pixels::vignette(d, size, 0.45 * size as f64);
    });
    time("cutout 4 × 0.1", &mut |s, d| {
        d.copy_from_slice(s);
        for k in 0..4 {
            pixels::cutout(d, size, 30 * k, 40 * k, size / 10);
        }
    });
}
