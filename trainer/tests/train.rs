//! Real, tiny training runs (issue 4, tests) on generated 32×32 images: a tiny EfficientNet
//! from compound scaling must learn from pixels (validation AUC clearly above chance), its
//! out-of-fold predictions must cover exactly the fold's validation rows, a diverging run must
//! fail naming the step and the learning rate, and the `stackhive-trainer` binary must run a
//! whole job in its own process.
//!
//! libtorch runs on one thread here: tests run in parallel on a 2-core machine, and OpenMP
//! threads spin-wait, so two tests each using every core run many times slower.

use std::path::{Path, PathBuf};
use std::process::Command;

use stackhive_data::cache::{build_cache, list_images, ImageCache};
use stackhive_data::folds::{self, FoldSpec, Folds};
use stackhive_data::isic::Dataset;
use stackhive_data::synth::{generate, SynthConfig};
use stackhive_trainer::data::FoldData;
use stackhive_trainer::{load_fitting, train, Arch, JobResult, Net, TrainConfig, TrainerError};
use tch::nn::VarStore;
use tch::Device;

const FOLD: u16 = 0;
const TINY: &str = "efficientnet-w0.25-d0.25";

struct Fixture {
    dir: tempfile::TempDir,
    root: PathBuf,
    dataset: Dataset,
    folds: Folds,
    cache: ImageCache,
}

/// `patients` training patients (about 12 images each), 20% positives, 32×32 images, 5 folds.
fn fixture(patients: usize) -> Fixture {
    tch::set_num_threads(1);
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("data");
    let cfg = SynthConfig {
        patients,
        test_patients: 4,
        positive_rate: 0.2,
        image_size: 32,
        seed: 7,
        ..SynthConfig::default()
    };
    generate(&cfg, &root).unwrap();
    let dataset = Dataset::load(&root).unwrap();
    let folds = folds::assign(
        &dataset.train,
        &FoldSpec {
            k: 5,
            ..FoldSpec::default()
        },
    )
    .unwrap();
    let cache_path = dir.path().join("cache.shvc");
    build_cache(
        &list_images(&root.join("images")).unwrap(),
        32,
        &cache_path,
        false,
    )
    .unwrap();
    let cache = ImageCache::open(&cache_path).unwrap();
    Fixture {
        dir,
        root,
        dataset,
        folds,
        cache,
    }
}

fn tiny_config() -> TrainConfig {
    let mut cfg = TrainConfig::new(Arch::parse(TINY).unwrap(), 32);
    cfg.epochs = 10;
    cfg.batch_size = 64;
    cfg.max_lr = 6e-3;
    cfg.seed = 1;
    cfg
}

/// The bound: with 160 patients the validation fold holds about 420 rows, 80 of them positive.
/// A model that has learned nothing scores 0.5 with a standard deviation of
/// √((n₁ + n₀ + 1) / (12 n₁ n₀)) ≈ 0.036 there, so 0.65 lies more than 4 deviations above
/// chance. The run is seeded and deterministic; here it reaches 0.74, and while tuning, other
/// training seeds and a second data seed gave 0.72-0.73, so the margin also absorbs other CPUs'
/// rounding and changes in the generator. About 40 patients proved too noisy: validation folds
/// of ~100 rows swung between 0.50 and 0.73 with the seed. Images only (no metadata head, whose
/// inputs alone rank near 0.65): the signal must come from the pixels.
#[test]
fn tiny_efficientnet_learns_from_pixels_and_predicts_exactly_the_fold() {
    let fx = fixture(160);
    let data = FoldData::new(&fx.dataset, &fx.folds, FOLD, &fx.cache).unwrap();
    let cfg = tiny_config();
    let mut seen = Vec::new();
    let trained = train(&cfg, &data, &mut |m| {
        eprintln!("{m:?}");
        seen.push(m.epoch);
    })
    .unwrap();
    let out = &trained.outcome;
    assert_eq!(seen, (1..=cfg.epochs).collect::<Vec<_>>());
    assert!(out
        .epochs
        .iter()
        .all(|m| m.train_loss.is_finite() && m.valid_loss.is_finite()));
    let auc = out.epochs.last().unwrap().valid_auc.unwrap();
    assert!(
        auc >= 0.65,
        "validation AUC {auc:.3}, expected at least 0.65"
    );

    assert_eq!(out.oof_rows, fx.folds.validation_rows(FOLD));
    assert_eq!(out.oof.len(), out.oof_rows.len());
    assert_eq!(out.test.len(), fx.dataset.test.len());
    assert!(out
        .oof
        .iter()
        .chain(&out.test)
        .all(|p| (0.0..=1.0).contains(p)));
}

#[test]
fn diverging_loss_and_bad_folds_and_sizes_are_clear_errors() {
    let fx = fixture(40);
    let data = FoldData::new(&fx.dataset, &fx.folds, FOLD, &fx.cache).unwrap();
    let mut cfg = tiny_config();
    cfg.max_lr = 1e30;
    cfg.epochs = 1;
    let err = train(&cfg, &data, &mut |_| {}).unwrap_err();
    let msg = err.to_string();
    let TrainerError::NonFiniteLoss { step, lr, .. } = err else {
        panic!("expected a non-finite loss, got {msg}")
    };
    assert!(lr > 1e27, "{msg}");
    assert!(
        msg.contains(&format!("at step {step} (epoch 1, learning rate")),
        "{msg}"
    );

    let err = FoldData::new(&fx.dataset, &fx.folds, 5, &fx.cache)
        .unwrap_err()
        .to_string();
    assert_eq!(err, "fold index 5 out of range for 5 folds; expected 0..=4");
    let mut cfg = tiny_config();
    cfg.image_size = 64;
    let err = train(&cfg, &data, &mut |_| {}).unwrap_err().to_string();
    assert_eq!(
        err,
        "the image cache holds 32×32 images, the job trains at 64×64"
    );
    cfg.image_size = 48;
    let err = train(&cfg, &data, &mut |_| {}).unwrap_err().to_string();
    assert!(
        err.starts_with("image size 48 does not fit efficientnet-w0.25-d0.25"),
        "{err}"
    );
}

fn trainer(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_stackhive-trainer"))
        .args(args)
        .env("TORCH_CPP_LOG_LEVEL", "ERROR")
        .output()
        .unwrap()
}

/// The binary runs one job in its own process (with the metadata head), streams one JSON line
/// per epoch, and leaves a result whose predictions cover the fold and a checkpoint that loads.
#[test]
fn trainer_binary_runs_one_job_in_its_own_process() {
    let fx = fixture(40);
    let out = fx.dir.path().join("out");
    let job = serde_json::json!({
        "dataset": fx.root, "cache_dir": fx.dir.path().join("caches"), "fold": 2,
        "folds": { "scheme": "triple-stratified", "k": 5, "seed": 42 },
        "arch": TINY, "image_size": 32, "epochs": 2, "batch_size": 32, "max_lr": 3e-3,
        "metadata": true, "device": "cpu", "cpu_threads": 1
    });
    let job_path = fx.dir.path().join("job.json");
    std::fs::write(&job_path, job.to_string()).unwrap();
    let run = trainer(&[
        "--job",
        job_path.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&run.stderr)
    );
    let events: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        events.iter().filter(|e| e["event"] == "epoch").count(),
        2,
        "{stdout}"
    );
    assert_eq!(events.last().unwrap()["event"], "done", "{stdout}");

    let result: JobResult =
        serde_json::from_slice(&std::fs::read(out.join("result.json")).unwrap()).unwrap();
    assert_eq!(result.outcome.oof_rows, fx.folds.validation_rows(2));
    assert_eq!(result.outcome.oof.len(), result.outcome.oof_rows.len());
    assert_eq!(result.outcome.test.len(), fx.dataset.test.len());
    let vs = VarStore::new(Device::Cpu);
    let _ = Net::new(&vs.root(), &Arch::parse(TINY).unwrap(), true);
    let report = load_fitting(&vs, Path::new(&result.checkpoint), false).unwrap();
    assert_eq!(
        report.loaded.len(),
        vs.variables().len(),
        "{}",
        report.summary()
    );

    // Bad input fails the process with the reason on stderr.
    let bad = fx.dir.path().join("bad.json");
    std::fs::write(
        &bad,
        serde_json::json!({ "dataset": fx.root, "cache_dir": "c", "arch": "effnet" }).to_string(),
    )
    .unwrap();
    let run = trainer(&[
        "--job",
        bad.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(!run.status.success());
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        stderr.contains("unknown architecture \"effnet\""),
        "{stderr}"
    );
}
