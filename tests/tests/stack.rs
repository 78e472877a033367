//! Level 2 end to end (issue 12): predictions made elsewhere are imported as level-1 models,
//! a feature set is built from them with the tabular and patient-level columns, and `stack`
//! jobs of several model types run through a real worker and its stacker process, completing
//! with out-of-fold predictions for every validating row and the test predictions, read back
//! like level-1 predictions. Bad imports, definitions and payloads are refused, naming the
//! problem.

use std::time::Duration;

use stackhive_data::synth::SynthConfig;
use stackhive_proto::v1 as pb;
use stackhive_proto::v1::feature_service_client::FeatureServiceClient;
use stackhive_proto::v1::job_service_client::JobServiceClient;
use stackhive_tests::cluster::{job, spec, state, submit, wait_for, Worker};
use stackhive_tests::level2::{noisy_model, registered, Registered};
use tonic::transport::Channel;
use tonic::Code;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imported_models_stack_through_a_worker() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = SynthConfig {
        patients: 160,
        test_patients: 40,
        image_size: 16,
        positive_rate: 0.15,
        external_2019: 30,
        seed: 21,
        ..Default::default()
    };
    let Registered {
        db: _db,
        coord,
        dataset: ds,
        latent: truth,
        ..
    } = registered(tmp.path(), "isic-l2", &cfg).await;
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
                ("isic-l2", "level1", &format!("notebook-{i}")),
            ))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(r.test_rows as usize, ds.test.len());
    }
    // Bad imports store nothing: a NaN, a row missing, a name the dataset does not have.
    let mut nan = noisy_model(&ds, &truth, 1.0, 9, ("isic-l2", "level1", "bad"));
    nan.oof[3] = f32::NAN;
    let mut short = noisy_model(&ds, &truth, 1.0, 9, ("isic-l2", "level1", "bad"));
    short.oof.pop();
    short.oof_names.pop();
    let mut stranger = noisy_model(&ds, &truth, 1.0, 9, ("isic-l2", "level1", "bad"));
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

    let definition = definition_level1();
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
    // Streamed predictions: the experiment's models in id order, as GetJob returns them; a
    // listed job without predictions ends the stream with its id.
    let mut stream = jobs
        .stream_predictions(pb::StreamPredictionsRequest {
            experiment: "level2".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut streamed = Vec::new();
    while let Some(m) = stream.message().await.unwrap() {
        streamed.push(m);
    }
    assert_eq!(
        streamed.iter().map(|m| m.job_id).collect::<Vec<_>>(),
        finished[..models.len()]
            .iter()
            .map(|j| j.id)
            .collect::<Vec<_>>()
    );
    for m in &streamed {
        let one = jobs
            .get_job(pb::GetJobRequest {
                id: m.job_id,
                include_predictions: true,
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(one.predictions, m.predictions);
    }
    let mut listed = jobs
        .stream_predictions(pb::StreamPredictionsRequest {
            job_ids: finished.iter().map(|j| j.id).collect(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let e = listed.message().await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    let last = finished.last().unwrap().id;
    assert!(
        e.message()
            .contains(&format!("job {last} has no stored predictions")),
        "{}",
        e.message()
    );

    let failed = finished.last().unwrap();
    assert_eq!(state(failed), pb::JobState::Failed);
    assert!(failed.error.contains("no-such-set"), "{}", failed.error);
    assert_eq!(failed.attempt, 1, "a missing feature set is not retried");

    // Restacking: a level-3 set of the level-2 models carries the level-2 inputs too, and a
    // model trains on it; restacking level-1 models (no stack job among them) is refused.
    let level3 = features
        .build_feature_set(pb::BuildFeatureSetRequest {
            definition: Some(pb::FeatureDefinition {
                dataset: "isic-l2".into(),
                k: 5,
                seed: 42,
                experiment: "level2".into(),
                restack: true,
                ..Default::default()
            }),
            name: "l3-set".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(level3.models.len(), models.len());
    let inputs: Vec<&String> = level3
        .columns
        .iter()
        .filter(|c| c.starts_with("in-"))
        .collect();
    assert_eq!(
        (inputs.len(), level3.columns.len()),
        (set.columns.len(), set.columns.len() + models.len()),
        "{:?}",
        level3.columns
    );
    let e = features
        .build_feature_set(pb::BuildFeatureSetRequest {
            definition: Some(pb::FeatureDefinition {
                restack: true,
                ..definition_level1()
            }),
            name: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    assert!(
        e.message()
            .contains("none of the chosen models is a stack job"),
        "{}",
        e.message()
    );
    let mut l3 = spec(
        "stack",
        serde_json::json!({"features": "l3-set", "model": "logreg", "seed": 1}),
    );
    l3.experiment = "level3".into();
    let id = submit(&mut c, vec![l3]).await[0];
    let done = wait_for("the level-3 job", Duration::from_secs(120), || {
        let mut c = c.clone();
        async move {
            let j = job(&mut c, id).await;
            pb::JobState::try_from(j.state)
                .unwrap()
                .is_finished()
                .then_some(j)
        }
    })
    .await;
    assert_eq!(state(&done), pb::JobState::Succeeded, "{}", done.error);
}

fn definition_level1() -> pb::FeatureDefinition {
    pb::FeatureDefinition {
        dataset: "isic-l2".into(),
        k: 5,
        seed: 42,
        experiment: "level1".into(),
        tabular: true,
        patient: true,
        ..Default::default()
    }
}
