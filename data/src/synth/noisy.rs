//! Level-1 models of a chosen quality for a generated dataset: predictions that see each
//! image's latent probability (`latent.csv`) through noise of a chosen size. What the level-2
//! and ensemble tests and `stackhive bench ensemble` import, so each model's quality is known.
//!
//! Must not: predict an external row out of fold (those rows only ever train).

use std::collections::HashMap;
use std::path::Path;

use rand::{Rng, SeedableRng};

use super::LATENT_CSV;
use crate::error::DataError;
use crate::isic::Dataset;

/// Each image's latent probability, from the generator's `latent.csv` in `dir`.
pub fn read_latent(dir: &Path) -> Result<HashMap<String, f64>, DataError> {
    let path = dir.join(LATENT_CSV);
    let bad = |e: String| DataError::Features(format!("{}: {e}", path.display()));
    let mut r = csv::Reader::from_path(&path).map_err(|e| bad(e.to_string()))?;
    let mut out = HashMap::new();
    for rec in r.records() {
        let rec = rec.map_err(|e| bad(e.to_string()))?;
        let p: f64 = rec[2]
            .parse()
            .map_err(|_| bad(format!("probability {:?} is not a number", &rec[2])))?;
        out.insert(rec[0].to_string(), p);
    }
    Ok(out)
}

/// One model's predictions by image name: every validating train row (out of fold) and every
/// test row, in the dataset's order.
pub struct NoisyModel {
    pub oof_names: Vec<String>,
    pub oof: Vec<f32>,
    pub test_names: Vec<String>,
    pub test: Vec<f32>,
}

/// A model that sees the latent logit through uniform noise of scale `sd` (about `sd` standard
/// deviations of the logit), drawn from `seed`: the same seed and scale give the same model.
pub fn noisy_model(ds: &Dataset, latent: &HashMap<String, f64>, sd: f64, seed: u64) -> NoisyModel {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut noisy = |image: &str| {
        let p = latent
            .get(image)
            .copied()
            .unwrap_or(0.5)
            .clamp(1e-6, 1.0 - 1e-6);
        let z = (p / (1.0 - p)).ln() + sd * (rng.random::<f64>() * 2.0 - 1.0) * 1.7;
        (1.0 / (1.0 + (-z).exp())) as f32
    };
    let oof_names: Vec<String> = ds
        .train
        .iter()
        .filter(|r| !r.is_external())
        .map(|r| r.image_name.clone())
        .collect();
    let oof = oof_names.iter().map(|n| noisy(n)).collect();
    let test_names: Vec<String> = ds.test.iter().map(|r| r.image_name.clone()).collect();
    let test = test_names.iter().map(|n| noisy(n)).collect();
    NoisyModel {
        oof_names,
        oof,
        test_names,
        test,
    }
}
