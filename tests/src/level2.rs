//! Level-1 models for the level-2 and ensemble tests: predictions that see a generated
//! dataset's latent truth through noise of a chosen size, shaped as an import request, so a
//! test controls exactly how good each model is.

use std::collections::HashMap;
use std::path::Path;

use stackhive_data::isic::Dataset;
use stackhive_proto::v1 as pb;

/// Each image's latent probability, from the generator's `latent.csv` in `dir`.
pub fn latent(dir: &Path) -> HashMap<String, f64> {
    stackhive_data::synth::noisy::read_latent(dir).expect("latent.csv")
}

/// A model that sees the latent logit through noise of scale `sd`
/// (`stackhive_data::synth::noisy`), as an import of `name` into `experiment`.
pub fn noisy_model(
    ds: &Dataset,
    latent: &HashMap<String, f64>,
    sd: f64,
    seed: u64,
    (dataset, experiment, name): (&str, &str, &str),
) -> pb::ImportPredictionsRequest {
    let m = stackhive_data::synth::noisy::noisy_model(ds, latent, sd, seed);
    pb::ImportPredictionsRequest {
        experiment: experiment.into(),
        name: name.into(),
        dataset: dataset.into(),
        oof_names: m.oof_names,
        oof: m.oof,
        test_names: m.test_names,
        test: m.test,
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
