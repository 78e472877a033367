//! Level-1 models for the level-2 and ensemble tests: predictions that see a generated
//! dataset's latent truth through noise of a chosen size, shaped as an import request, so a
//! test controls exactly how good each model is.

use std::collections::HashMap;
use std::path::Path;

use rand::{Rng, SeedableRng};
use stackhive_data::isic::Dataset;
use stackhive_proto::v1 as pb;

/// Each image's latent probability, from the generator's `latent.csv` in `dir`.
pub fn latent(dir: &Path) -> HashMap<String, f64> {
    let mut r = csv::Reader::from_path(dir.join("latent.csv")).expect("latent.csv");
    r.records()
        .map(|rec| {
            let rec = rec.expect("latent row");
            (rec[0].to_string(), rec[2].parse().expect("probability"))
        })
        .collect()
}

/// Predictions of a model that sees the latent logit through uniform noise of scale `sd`, for
/// every validating train row (out of fold) and every test row of `dataset`, as an import of
/// `name` into `experiment`.
pub fn noisy_model(
    ds: &Dataset,
    latent: &HashMap<String, f64>,
    sd: f64,
    seed: u64,
    (dataset, experiment, name): (&str, &str, &str),
) -> pb::ImportPredictionsRequest {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut noisy = |image: &str| {
        let p = latent[image].clamp(1e-6, 1.0 - 1e-6);
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
    pb::ImportPredictionsRequest {
        experiment: experiment.into(),
        name: name.into(),
        dataset: dataset.into(),
        oof_names,
        oof,
        test_names,
        test,
    }
}

/// A generated dataset registered as `name` with a coordinator on a fresh PostgreSQL database:
/// what the level-2 and ensemble tests start from. The data lies in `dir/isic`.
pub struct Registered {
    pub db: crate::db::TestDb,
    pub coord: crate::cluster::Coordinator,
    pub data: std::path::PathBuf,
    pub dataset: Dataset,
    pub latent: HashMap<String, f64>,
}

pub async fn registered(
    dir: &Path,
    name: &str,
    cfg: &stackhive_data::synth::SynthConfig,
) -> Registered {
    let data = dir.join("isic");
    stackhive_data::synth::generate(cfg, &data).expect("generate a dataset");
    let dataset = Dataset::load(&data).expect("load the dataset");
    let latent = latent(&data);
    let db = crate::db::TestDb::postgres().await;
    let coord = crate::cluster::Coordinator::start(
        &db.url,
        0,
        &["--data-dir", dir.join("coord").to_str().unwrap()],
    )
    .await;
    let out = std::process::Command::new(crate::cluster::bin("stackhive"))
        .args(["--coordinator", &coord.url, "dataset", "add", name])
        .arg(&data)
        .output()
        .expect("run stackhive dataset add");
    assert!(
        out.status.success(),
        "dataset add failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Registered {
        db,
        coord,
        data,
        dataset,
        latent,
    }
}
