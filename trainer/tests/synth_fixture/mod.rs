//! The fixture the trainer's training tests share: a generated ISIC-like dataset of 32×32
//! images (20% positives, 5 triple-stratified folds), its image cache built the way a job
//! builds it (`ensure_cache` into a cache folder, so a job run on the same folders reuses it),
//! and the tiny EfficientNet the tests train. Test helpers only, no assertions.
//!
//! libtorch runs on one thread here: tests run in parallel on a 2-core machine, and OpenMP
//! threads spin-wait, so two tests each using every core run many times slower.

#![allow(dead_code)]

use std::path::PathBuf;
use std::time::Duration;

use stackhive_data::cache::{ensure_cache, ImageCache};
use stackhive_data::folds::{self, FoldSpec, Folds};
use stackhive_data::isic::Dataset;
use stackhive_data::synth::{generate, SynthConfig};
use stackhive_trainer::{Arch, OptimConfig, TrainConfig, TrainerEvent};

/// Width and depth multipliers of ¼: about 124k parameters, quick on one CPU thread.
pub const TINY: &str = "efficientnet-w0.25-d0.25";
pub const SIZE: u32 = 32;

pub struct Fixture {
    pub dir: tempfile::TempDir,
    /// The dataset folder (ISIC layout).
    pub root: PathBuf,
    /// The cache folder `cache` was built in.
    pub caches: PathBuf,
    pub dataset: Dataset,
    pub folds: Folds,
    pub cache: ImageCache,
}

/// `patients` training patients (about 12 images each), 4 test patients.
pub fn fixture(patients: usize) -> Fixture {
    tch::set_num_threads(1);
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("data");
    let cfg = SynthConfig {
        patients,
        test_patients: 4,
        positive_rate: 0.2,
        image_size: SIZE,
        seed: 7,
        ..SynthConfig::default()
    };
    generate(&cfg, &root).unwrap();
    let dataset = Dataset::load(&root).unwrap();
    let folds = folds::assign(&dataset.train, &fold_spec()).unwrap();
    let caches = dir.path().join("caches");
    let cache = ensure_cache(&root, SIZE, &caches, false).unwrap().cache;
    Fixture {
        dir,
        root,
        caches,
        dataset,
        folds,
        cache,
    }
}

pub fn fold_spec() -> FoldSpec {
    FoldSpec {
        k: 5,
        ..FoldSpec::default()
    }
}

/// AdamW on a one-cycle schedule peaking at 6e-3, batch 64, flips, seed 1, images only.
pub fn tiny_config(epochs: usize) -> TrainConfig {
    let mut cfg = TrainConfig::new(Arch::parse(TINY).unwrap(), SIZE);
    cfg.epochs = epochs;
    cfg.batch_size = 64;
    cfg.optimizer = OptimConfig::adamw(6e-3);
    cfg.seed = 1;
    cfg.progress_every = Duration::ZERO;
    cfg
}

/// Collects events, echoing them to stderr (shown when a test fails).
pub fn recorder(events: &mut Vec<TrainerEvent>) -> impl FnMut(&TrainerEvent) + '_ {
    move |e| {
        if !matches!(e, TrainerEvent::Progress(_)) {
            eprintln!("{e:?}");
        }
        events.push(e.clone());
    }
}
