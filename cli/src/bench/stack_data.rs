//! The matrix `stackhive bench stack` trains on: an ISIC-2020-sized synthetic dataset
//! (`stackhive_data::synth`, tiny images), nine level-1 "models" that are noisy views of each
//! image's true logit (sharing part of their noise, as real CNNs do), triple-stratified 5 folds,
//! and the product's own ISIC matrix builder with the tabular and patient features — about 50
//! columns. Also writes the raw arrays and the meta the Python side reads.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use rand::{Rng, SeedableRng};
use stackhive_data::features::{self, Extras, Level1};
use stackhive_data::folds::{self, FoldSpec, Scheme};
use stackhive_data::isic::Dataset;
use stackhive_data::matrix::{ColumnKind, FeatureMatrix};
use stackhive_data::synth::{generate, SynthConfig, LATENT_CSV};

/// Noise (in logits) of each level-1 model, best first.
const MODEL_NOISE: [f64; 9] = [0.9, 1.0, 1.1, 1.2, 1.3, 1.5, 1.7, 2.0, 2.4];
/// Noise every model shares (what no CNN sees).
const SHARED_NOISE: f64 = 0.8;

/// The matrix, where it was written, and its raw form for Python.
pub struct BenchMatrix {
    pub matrix: FeatureMatrix,
    pub path: PathBuf,
}

/// Generates the dataset under `work` and writes `work/matrix.shmx` and the raw files.
pub fn build(
    work: &Path,
    patients: usize,
    test_patients: usize,
    seed: u64,
) -> anyhow::Result<BenchMatrix> {
    let data = work.join("isic");
    if data.exists() {
        std::fs::remove_dir_all(&data)
            .with_context(|| format!("cannot clear {}", data.display()))?;
    }
    let cfg = SynthConfig {
        patients,
        test_patients,
        positive_rate: 0.0176,
        image_size: 16,
        mean_images_per_patient: 16.1,
        max_images_per_patient: 115,
        seed,
        ..Default::default()
    };
    generate(&cfg, &data).context("cannot generate the bench dataset")?;
    let ds = Dataset::load(&data)?;
    let truth = latent_logits(&data)?;
    let spec = FoldSpec {
        scheme: Scheme::TripleStratified,
        k: 5,
        seed,
    };
    let fold = folds::assign(&ds.train, &spec)?.fold;
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed ^ 0x5eed);
    let normal = |rng: &mut rand::rngs::StdRng| -> f64 {
        // Box-Muller: enough for noise.
        let (u, v): (f64, f64) = (rng.random::<f64>().max(1e-12), rng.random());
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    };
    let names_train: Vec<&str> = ds.train.iter().map(|r| r.image_name.as_str()).collect();
    let names_test: Vec<&str> = ds.test.iter().map(|r| r.image_name.as_str()).collect();
    let shared: HashMap<&str, f64> = names_train
        .iter()
        .chain(&names_test)
        .map(|&n| (n, SHARED_NOISE * normal(&mut rng)))
        .collect();
    let models: Vec<Level1> = MODEL_NOISE
        .iter()
        .enumerate()
        .map(|(i, &sd)| {
            let mut view = |n: &str| {
                let z = truth[n] + shared[n] + sd * normal(&mut rng);
                (1.0 / (1.0 + (-z).exp())) as f32
            };
            Level1 {
                name: format!("cnn-{i}"),
                oof: names_train.iter().map(|n| view(n)).collect(),
                test: names_test.iter().map(|n| view(n)).collect(),
            }
        })
        .collect();
    let extras = Extras {
        tabular: true,
        patient: true,
    };
    let matrix = features::isic(&ds, &fold, 5, &models, extras)?;
    let path = work.join("matrix.shmx");
    std::fs::write(&path, matrix.to_bytes()?)?;
    write_raw(work, &matrix)?;
    std::fs::remove_dir_all(&data).ok();
    Ok(BenchMatrix { matrix, path })
}

/// Each image's true logit, from the generator's `latent.csv`.
fn latent_logits(dir: &Path) -> anyhow::Result<HashMap<String, f64>> {
    let mut r = csv::Reader::from_path(dir.join(LATENT_CSV))?;
    let mut out = HashMap::new();
    for rec in r.records() {
        let rec = rec?;
        let p: f64 = rec[2].parse()?;
        let p = p.clamp(1e-9, 1.0 - 1e-9);
        out.insert(rec[0].to_string(), (p / (1.0 - p)).ln());
    }
    Ok(out)
}

/// `meta.json`, `x_train.f32`, `y_train.u8`, `folds.u16`, `x_test.f32` (little-endian).
fn write_raw(work: &Path, m: &FeatureMatrix) -> anyhow::Result<()> {
    let f32s = |v: &[f32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
    std::fs::write(work.join("x_train.f32"), f32s(&m.train))?;
    std::fs::write(work.join("x_test.f32"), f32s(&m.test))?;
    std::fs::write(work.join("y_train.u8"), &m.labels)?;
    let folds: Vec<u8> = m.folds.iter().flat_map(|f| f.to_le_bytes()).collect();
    std::fs::write(work.join("folds.u16"), folds)?;
    let (categorical, levels): (Vec<usize>, Vec<u32>) = m
        .columns
        .iter()
        .enumerate()
        .filter_map(|(i, c)| match c.kind {
            ColumnKind::Categorical { levels } => Some((i, levels)),
            ColumnKind::Numeric => None,
        })
        .unzip();
    let meta = serde_json::json!({
        "cols": m.cols(),
        "categorical": categorical,
        "levels": levels,
        "k": m.k,
    });
    std::fs::write(work.join("meta.json"), meta.to_string())?;
    Ok(())
}
