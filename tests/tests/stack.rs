//! Level 2 end to end (issue 12): predictions made elsewhere are imported as level-1 models,
//! a feature set is built from them with the tabular and patient-level columns, and `stack`
//! jobs of several model types run through a real worker and its stacker process, completing
//! with out-of-fold predictions for every validating row and the test predictions, read back
//! like level-1 predictions. Bad imports, definitions and payloads are refused, naming the
//! problem.

use std::collections::HashMap;
use std::time::Duration;

use rand::{Rng, SeedableRng};
use stackhive_data::isic::Dataset;
use stackhive_data::synth::{generate, SynthConfig};
use stackhive_proto::v1 as pb;
use stackhive_proto::v1::feature_service_client::FeatureServiceClient;
use stackhive_proto::v1::job_service_client::JobServiceClient;
use stackhive_tests::cluster::{bin, job, spec, state, submit, wait_for, Coordinator, Worker};
use stackhive_tests::db::TestDb;
use tonic::transport::Channel;
use tonic::Code;

/// Predictions of a model that sees the latent logit through noise of `sd`, for every
/// validating train row (out of fold) and every test row.
fn noisy_model(
    ds: &Dataset,
    latent: &HashMap<String, f64>,
    sd: f64,
    seed: u64,
    experiment: &str,
    name: &str,
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
        dataset: "isic-l2".into(),
        oof_names,
        oof,
        test_names,
        test,
    }
}

fn latent(dir: &std::path::Path) -> HashMap<String, f64> {
    let mut r = csv::Reader::from_path(dir.join("latent.csv")).unwrap();
    r.records()
        .map(|rec| {
            let rec = rec.unwrap();
            (rec[0].to_string(), rec[2].parse().unwrap())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imported_models_stack_through_a_worker() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("isic");
    generate(
        &SynthConfig {
            patients: 160,
            test_patients: 40,
            image_size: 16,
            positive_rate: 0.15,
            external_2019: 30,
            seed: 21,
            ..Default::default()
        },
        &data,
    )
    .unwrap();
    let ds = Dataset::load(&data).unwrap();
    let truth = latent(&data);
    let db = TestDb::postgres().await;
    let coord = Coordinator::start(
        &db.url,
        0,
        &["--data-dir", tmp.path().join("coord").to_str().unwrap()],
    )
    .await;
    let out = std::process::Command::new(bin("stackhive"))
        .args(["--coordinator", &coord.url, "dataset", "add", "isic-l2"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let channel = Channel::from_shared(coord.url.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut jobs = JobServiceClient::new(channel.clone()).max_encoding_message_size(64 << 20);
    let mut features =
        FeatureServiceClient::new(channel.clone()).max_decoding_message_size(64 << 20);

    // Three level-1 models of different quality.
    for (i, sd) in [0.6, 1.0, 1.5].into_iter().enumerate() {
        let r = jobs
            .import_predictions(noisy_model(
                &ds,
                &truth,
                sd,
                i as u64,
                "level1",
                &format!("notebook-{i}"),
            ))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(r.test_rows as usize, ds.test.len());
    }
    // Bad imports store nothing: a NaN, a row missing, a name the dataset does not have.
    let mut nan = noisy_model(&ds, &truth, 1.0, 9, "level1", "bad");
    nan.oof[3] = f32::NAN;
    let mut short = noisy_model(&ds, &truth, 1.0, 9, "level1", "bad");
    short.oof.pop();
    short.oof_names.pop();
    let mut stranger = noisy_model(&ds, &truth, 1.0, 9, "level1", "bad");
    stranger.test_names[0] = "ISIC_NOPE".into();
    for (bad, want) in [
        (nan, "expected a finite number"),
        (short, "miss 1 of"),
        (stranger, "ISIC_NOPE"),
    ] {
        let e = jobs.import_predictions(bad).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
        assert!(e.message().contains(want), "{}", e.message());
    }

    let definition = pb::FeatureDefinition {
        dataset: "isic-l2".into(),
        k: 5,
        seed: 42,
        experiment: "level1".into(),
        tabular: true,
        patient: true,
        ..Default::default()
    };
    let set = features
        .build_feature_set(pb::BuildFeatureSetRequest {
            definition: Some(definition.clone()),
            name: "l2-set".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let validating = ds.train.iter().filter(|r| !r.is_external()).count();
    assert_eq!(
        set.train_rows as usize, validating,
        "external rows never validate: {set:?}"
    );
    assert_eq!(set.models.len(), 3);
    assert!(
        set.columns
            .iter()
            .any(|c| c == "notebook-0:rank_in_patient"),
        "{:?}",
        set.columns
    );
    assert!(
        set.columns.iter().any(|c| c == "anatom_site"),
        "{:?}",
        set.columns
    );
    // The same definition again: the same set, built once.
    let again = features
        .build_feature_set(pb::BuildFeatureSetRequest {
            definition: Some(definition),
            name: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (again.id.clone(), again.blake3.clone()),
        (set.id.clone(), set.blake3.clone())
    );

    // Submit-time refusals: an unknown type, a value out of range.
    for (payload, want) in [
        (
            serde_json::json!({"features": "l2-set", "model": "svm"}),
            "unknown model type \"svm\"",
        ),
        (
            serde_json::json!({"features": "l2-set", "model": "knn", "params": {"k": 0}}),
            "knn expects an integer from 5 to 500",
        ),
    ] {
        let e = jobs
            .submit(pb::SubmitRequest {
                idempotency_key: String::new(),
                jobs: vec![spec("stack", payload)],
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument);
        assert!(e.message().contains(want), "{}", e.message());
    }

    let _worker = Worker::start(
        "stacker",
        &coord.url,
        &[
            "--slots",
            "2",
            "--feature-cache",
            tmp.path().join("features").to_str().unwrap(),
        ],
    );
    let mut c = coord.jobs().await;
    let models = ["lightgbm", "logreg", "knn", "xgboost-rf"];
    let mut specs: Vec<pb::JobSpec> = models
        .iter()
        .map(|m| {
            let mut s = spec(
                "stack",
                serde_json::json!({"features": "l2-set", "model": m, "seed": 1}),
            );
            s.experiment = "level2".into();
            s
        })
        .collect();
    let mut missing = spec(
        "stack",
        serde_json::json!({"features": "no-such-set", "model": "knn"}),
    );
    missing.experiment = "level2".into();
    specs.push(missing);
    let ids = submit(&mut c, specs).await;
    let finished = wait_for("the stack jobs", Duration::from_secs(240), || {
        let mut c = c.clone();
        let ids = ids.clone();
        async move {
            let mut all = Vec::new();
            for id in ids {
                let j = job(&mut c, id).await;
                if !pb::JobState::try_from(j.state).unwrap().is_finished() {
                    return None;
                }
                all.push(j);
            }
            Some(all)
        }
    })
    .await;
    for (j, model) in finished.iter().zip(models) {
        assert_eq!(state(j), pb::JobState::Succeeded, "{model}: {}", j.error);
        let r: serde_json::Value = serde_json::from_str(&j.result_json).unwrap();
        let auc = r["cv_auc"].as_f64().unwrap();
        eprintln!(
            "{model}: CV AUC {auc:.3} in {:.1} s",
            r["seconds"].as_f64().unwrap()
        );
        assert!(auc > 0.6, "{model}: CV AUC {auc}");
        assert_eq!(r["fold_aucs"].as_array().unwrap().len(), 5);
        assert_eq!(
            (
                j.prediction_rows_oof as usize,
                j.prediction_rows_test as usize
            ),
            (validating, ds.test.len())
        );
        let p = jobs
            .get_job(pb::GetJobRequest {
                id: j.id,
                include_predictions: true,
            })
            .await
            .unwrap()
            .into_inner()
            .predictions
            .unwrap();
        // Named by their dataset rows, as level-1 predictions are: every validating row once.
        let mut rows = p.oof_rows.clone();
        rows.sort_unstable();
        let want: Vec<u32> = (0..ds.train.len())
            .filter(|&i| !ds.train[i].is_external())
            .map(|i| i as u32)
            .collect();
        assert_eq!(rows, want);
    }
    let failed = finished.last().unwrap();
    assert_eq!(state(failed), pb::JobState::Failed);
    assert!(failed.error.contains("no-such-set"), "{}", failed.error);
    assert_eq!(failed.attempt, 1, "a missing feature set is not retried");
}
