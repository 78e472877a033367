//! Preprocessing throughput of the image cache (images/s decoded, cropped and resized into the
//! cache) and of the synthetic generator, on this machine's cores. Figures for the closing note
//! of issue 3; nothing here is asserted.
//!
//! `cargo run --release -p stackhive-data --example cache_bench [IMAGES] [SOURCE_SIZE] [TARGET]`
//! (defaults 2000, 512, 256).

use std::time::Instant;

use rayon::prelude::*;
use stackhive_data::cache::{build_cache, decode, list_images, ImageCache};
use stackhive_data::synth::{generate, SynthConfig};

fn arg(i: usize, default: u32) -> u32 {
    std::env::args().nth(i).map_or(default, |a| {
        a.parse().expect("arguments are positive integers")
    })
}

fn main() {
    let images = arg(1, 2000) as usize;
    let source = arg(2, 512);
    let target = arg(3, 256);
    let threads = rayon::current_num_threads();
    let dir = tempfile::tempdir().expect("temporary folder");
    let root = dir.path().join("ds");

    // About `images` rows: the lognormal count averages 14 to 16 images per patient.
    let cfg = SynthConfig {
        patients: (images / 14).max(1),
        test_patients: 0,
        image_size: source,
        seed: 1,
        progress: true,
        ..SynthConfig::default()
    };
    let report = generate(&cfg, &root).expect("generate");
    let secs = report.elapsed.as_secs_f64();
    println!(
        "generator: {} images of {source}×{source} in {secs:.1} s = {:.0} images/s on {threads} threads \
         (oracle AUC {:.3}, {} positives)",
        report.rows,
        report.rows as f64 / secs,
        report.oracle_auc.unwrap_or(f64::NAN),
        report.positives
    );

    // The generator at its default size, where the JPEG work is small.
    let small = dir.path().join("small");
    let cfg128 = SynthConfig {
        image_size: 128,
        progress: false,
        ..cfg.clone()
    };
    let r128 = generate(&cfg128, &small).expect("generate 128");
    println!(
        "generator: {} images of 128×128 in {:.1} s = {:.0} images/s on {threads} threads",
        r128.rows,
        r128.elapsed.as_secs_f64(),
        r128.rows as f64 / r128.elapsed.as_secs_f64()
    );
    std::fs::remove_dir_all(&small).expect("remove the 128 dataset");

    let list = list_images(&root.join("images")).expect("list images");
    let bytes: u64 = list
        .iter()
        .map(|(_, p)| std::fs::metadata(p).map_or(0, |m| m.len()))
        .sum();
    println!(
        "dataset: {} JPEGs, {:.1} MB, {:.0} KB each",
        list.len(),
        bytes as f64 / 1e6,
        bytes as f64 / 1e3 / list.len() as f64
    );

    let t = Instant::now();
    list.par_iter().for_each(|(name, path)| {
        decode(name, path).expect("decode");
    });
    let decode_secs = t.elapsed().as_secs_f64();
    println!(
        "decode only: {:.0} images/s on {threads} threads",
        list.len() as f64 / decode_secs
    );

    let out = dir.path().join("cache.shvc");
    let built = build_cache(&list, target, &out, true).expect("build cache");
    println!(
        "cache build {target}×{target}: {} images in {:.1} s = {:.0} images/s on {threads} threads \
         ({:.0} MB, {} vignettes cropped)",
        built.images,
        built.elapsed.as_secs_f64(),
        built.images_per_sec(),
        built.bytes as f64 / 1e6,
        built.vignettes
    );

    let t = Instant::now();
    let cache = ImageCache::open(&out).expect("open cache");
    let open_ms = t.elapsed().as_secs_f64() * 1e3;
    let t = Instant::now();
    let checksum: u64 = (0..cache.len())
        .map(|i| cache.image(i).iter().map(|&b| u64::from(b)).sum::<u64>())
        .sum();
    let epoch = t.elapsed().as_secs_f64();
    println!(
        "cache read: open {open_ms:.1} ms, one epoch over every pixel {:.2} s = {:.0} images/s, one thread \
         (checksum {checksum})",
        epoch,
        cache.len() as f64 / epoch
    );
}
