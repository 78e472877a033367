//! The meta-ensemble end to end (issue 15): level-1 models of known quality are imported into
//! an experiment of a generated dataset; `stackhive ensemble recommend` gives a verdict,
//! `export` writes a submission with one row per test image in a stable order, `report` writes
//! the HTML file, and an `ensemble` job runs the same work on a real worker and completes with
//! the recommended ensemble's predictions. Bad input gets a clear error and leaves no file.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use stackhive_data::synth::SynthConfig;
use stackhive_proto::v1 as pb;
use stackhive_proto::v1::feature_service_client::FeatureServiceClient;
use stackhive_proto::v1::job_service_client::JobServiceClient;
use stackhive_tests::cluster::{bin, job, spec, state, wait_for, Worker};
use stackhive_tests::level2::{noisy_model, registered, Registered};
use tonic::transport::Channel;
use tonic::Code;

const DATASET: &str = "isic-ens";
const SETTINGS: &[&str] = &["--bootstrap", "200", "--shakeup", "200"];

fn cli(url: &str, args: &[&str]) -> Output {
    Command::new(bin("stackhive"))
        .args(["--coordinator", url])
        .args(args)
        .output()
        .expect("run stackhive")
}

fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "stackhive failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn with_source<'a>(args: &[&'a str], data: &'a str) -> Vec<&'a str> {
    let mut v = args.to_vec();
    v.extend(["--dataset", DATASET, "--truth", data]);
    v.extend(SETTINGS);
    v
}

/// The generated dataset the ensemble tests start from: 160 training patients, 15% positive.
fn small_dataset(test_patients: usize, seed: u64) -> SynthConfig {
    SynthConfig {
        patients: 160,
        test_patients,
        image_size: 16,
        positive_rate: 0.15,
        seed,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ensembles_are_recommended_exported_reported_and_run_as_jobs() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = small_dataset(50, 5);
    let Registered {
        db: _db,
        coord,
        data,
        dataset: ds,
        latent: truth,
    } = registered(tmp.path(), DATASET, &cfg).await;
    let url = coord.url.clone();
    let channel = Channel::from_shared(url.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut jobs = JobServiceClient::new(channel).max_encoding_message_size(64 << 20);

    // An experiment with no finished model is refused, naming the problem.
    let data_s = data.to_str().unwrap();
    let none = cli(
        &url,
        &with_source(&["ensemble", "recommend", "empty"], data_s),
    );
    assert!(!none.status.success());
    assert!(
        String::from_utf8_lossy(&none.stderr).contains("no finished model"),
        "{}",
        String::from_utf8_lossy(&none.stderr)
    );

    for (i, sd) in [0.5, 0.6, 0.8, 1.0, 1.3, 1.8].into_iter().enumerate() {
        jobs.import_predictions(noisy_model(
            &ds,
            &truth,
            sd,
            10 + i as u64,
            (DATASET, "l1", &format!("model-{i}")),
        ))
        .await
        .unwrap();
    }

    // The verdict, with every method's nested AUC and test AUC (the truth is known here).
    let text = ok(cli(
        &url,
        &with_source(&["ensemble", "recommend", "l1"], data_s),
    ));
    assert!(text.contains("recommend"), "{text}");
    let summary: serde_json::Value = serde_json::from_str(&ok(cli(
        &url,
        &with_source(&["--json", "ensemble", "recommend", "l1"], data_s),
    )))
    .unwrap();
    let methods = summary["methods"].as_array().expect("methods");
    let by_name = |n: &str| {
        methods
            .iter()
            .find(|m| m["method"] == n)
            .unwrap_or_else(|| panic!("no method {n}: {summary}"))
    };
    let recommended = by_name(summary["recommendation"]["method"].as_str().unwrap());
    let median = by_name("median");
    // The recommended ensemble's held-out AUC is not below the median's by more than its
    // confidence interval.
    let width = recommended["ci_high"].as_f64().unwrap() - recommended["ci_low"].as_f64().unwrap();
    let (rec_test, med_test) = (
        recommended["test_auc"].as_f64().unwrap(),
        median["test_auc"].as_f64().unwrap(),
    );
    assert!(
        rec_test >= med_test - width,
        "recommended test AUC {rec_test} vs median {med_test} (interval width {width})"
    );
    assert!(med_test > 0.7, "the models carry signal: {med_test}");

    // The submission: one row per test image, in the dataset's order, values in [0, 1]; the
    // same bytes when exported again.
    let out = tmp.path().join("out");
    let out_s = out.to_str().unwrap();
    ok(cli(
        &url,
        &with_source(&["export", "l1", "--out", out_s], data_s),
    ));
    let first = std::fs::read_to_string(out.join("submission.csv")).unwrap();
    let lines: Vec<&str> = first.lines().collect();
    assert_eq!(lines[0], "image_name,target");
    assert_eq!(lines.len(), ds.test.len() + 1);
    for (line, row) in lines[1..].iter().zip(&ds.test) {
        let (name, v) = line.split_once(',').unwrap();
        assert_eq!(name, row.image_name);
        let v: f64 = v.parse().unwrap();
        assert!((0.0..=1.0).contains(&v), "{line}");
    }
    let oof = std::fs::read_to_string(out.join("oof.csv")).unwrap();
    let validating = ds.train.iter().filter(|r| !r.is_external()).count();
    assert_eq!(oof.lines().count(), validating + 1);
    assert!(oof
        .lines()
        .next()
        .unwrap()
        .starts_with("image_name,fold,target,"));
    ok(cli(
        &url,
        &with_source(&["export", "l1", "--out", out_s], data_s),
    ));
    assert_eq!(
        std::fs::read_to_string(out.join("submission.csv")).unwrap(),
        first,
        "an export is stable"
    );
    // A method chosen by name, and one that does not exist.
    ok(cli(
        &url,
        &with_source(
            &["export", "l1", "--out", out_s, "--method", "median"],
            data_s,
        ),
    ));
    let bad = cli(
        &url,
        &with_source(
            &["export", "l1", "--out", out_s, "--method", "best-guess"],
            data_s,
        ),
    );
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("median"));

    // The report; a path that cannot be written is an error that leaves nothing behind.
    let report = out.join("report.html");
    ok(cli(
        &url,
        &with_source(&["report", "l1", "--out", report.to_str().unwrap()], data_s),
    ));
    let html = std::fs::read_to_string(&report).unwrap();
    assert!(
        html.contains("<svg") && html.contains("model-0"),
        "{}",
        &html[..200.min(html.len())]
    );
    let blocked = out.join("not-a-folder");
    std::fs::write(&blocked, "x").unwrap();
    let unwritable = blocked.join("report.html");
    let e = cli(
        &url,
        &with_source(
            &["report", "l1", "--out", unwritable.to_str().unwrap()],
            data_s,
        ),
    );
    assert!(!e.status.success());
    assert!(
        String::from_utf8_lossy(&e.stderr).contains("not-a-folder"),
        "{}",
        String::from_utf8_lossy(&e.stderr)
    );
    assert_eq!(count_files(&out), 4, "no temporary file is left");

    // Bad settings are refused at submit.
    let e = jobs
        .submit(pb::SubmitRequest {
            idempotency_key: String::new(),
            jobs: vec![spec(
                "ensemble",
                serde_json::json!({"features": "x", "config": {"public_fraction": 1.5}}),
            )],
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("public_fraction"), "{}", e.message());

    // The same work as a job on a real worker.
    let _worker = Worker::start(
        "ensembler",
        &url,
        &[
            "--slots",
            "2",
            "--feature-cache",
            tmp.path().join("features").to_str().unwrap(),
        ],
    );
    let submitted: serde_json::Value = serde_json::from_str(&ok(cli(
        &url,
        &with_source(
            &["--json", "ensemble", "submit", "l1", "--cpu", "2"],
            data_s,
        ),
    )))
    .unwrap();
    let id = submitted["job_id"].as_i64().unwrap();
    let mut c = coord.jobs().await;
    let done = wait_for("the ensemble job", Duration::from_secs(180), || {
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
    let result: serde_json::Value = serde_json::from_str(&done.result_json).unwrap();
    assert!(result["recommendation"]["method"].is_string(), "{result}");
    let with = c
        .get_job(pb::GetJobRequest {
            id,
            include_predictions: true,
        })
        .await
        .unwrap()
        .into_inner();
    let p = with.predictions.expect("predictions");
    assert_eq!(p.oof.len(), validating);
    assert_eq!(p.test.len(), ds.test.len());
}

fn count_files(dir: &Path) -> usize {
    std::fs::read_dir(dir).unwrap().count()
}

/// More models than the ensemble may hold: an `ensemble` job given experiments and a limit
/// streams every model's predictions, ranks them by out-of-fold AUC, keeps the best that pass
/// the correlation cap (exact copies never do), builds the set of those and combines them. The
/// models it keeps are exactly those the `Preselector` keeps when handed every model here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ensemble_over_more_models_than_it_keeps_streams_and_preselects_them() {
    const DISTINCT: usize = 60;
    const COPIES: usize = 3;
    const KEEP: usize = 20;
    const CAP: f64 = 0.995;
    let tmp = tempfile::tempdir().unwrap();
    let cfg = small_dataset(40, 9);
    let Registered {
        db: _db,
        coord,
        data,
        dataset: ds,
        latent: truth,
    } = registered(tmp.path(), DATASET, &cfg).await;
    let url = coord.url.clone();
    let mut jobs = coord.jobs().await.max_encoding_message_size(64 << 20);

    // Each distinct model three times over (same noise, so the copies correlate exactly), in
    // import order; the local copy of each out-of-fold vector is what the worker will see.
    let labels: Vec<u8> = ds
        .train
        .iter()
        .filter(|r| !r.is_external())
        .map(|r| r.target)
        .collect();
    let mut local: Vec<(String, Vec<f32>)> = Vec::new();
    for i in 0..DISTINCT {
        let sd = 0.4 + 1.6 * i as f64 / DISTINCT as f64;
        for copy in 0..COPIES {
            let name = format!("m{i}-c{copy}");
            let req = noisy_model(&ds, &truth, sd, 100 + i as u64, (DATASET, "many", &name));
            local.push((name, req.oof.clone()));
            jobs.import_predictions(req).await.unwrap();
        }
    }
    let mut ranked: Vec<(f64, usize)> = local
        .iter()
        .enumerate()
        .map(|(i, (_, oof))| (stackhive_data::auc::roc_auc(&labels, oof).unwrap(), i))
        .collect();
    ranked.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    let mut pre = stackhive_ensemble::Preselector::new(&labels, CAP, KEEP);
    let mut expected: Vec<String> = Vec::new();
    for &(auc, i) in &ranked {
        let (name, oof) = &local[i];
        let model = stackhive_ensemble::Model {
            id: i as i64 + 1,
            name: name.clone(),
            kind: "imported".into(),
            oof: oof.clone(),
            test: Vec::new(),
        };
        if pre.push(model, auc).unwrap() {
            expected.push(name.clone());
        }
    }
    assert_eq!(expected.len(), KEEP, "enough distinct models to fill it");
    assert!(
        expected.iter().all(|n| n.ends_with("-c0")),
        "a copy never passes the cap: {expected:?}"
    );

    let _worker = Worker::start(
        "streamer",
        &url,
        &[
            "--slots",
            "2",
            "--feature-cache",
            tmp.path().join("features").to_str().unwrap(),
        ],
    );
    let data_s = data.to_str().unwrap();
    let keep = KEEP.to_string();
    let submitted: serde_json::Value = serde_json::from_str(&ok(cli(
        &url,
        &with_source(
            &[
                "--json",
                "ensemble",
                "submit",
                "many",
                "--cpu",
                "2",
                "--max-models",
                &keep,
            ],
            data_s,
        ),
    )))
    .unwrap();
    let id = submitted["job_id"].as_i64().unwrap();
    let c = coord.jobs().await;
    let done = wait_for(
        "the streamed ensemble job",
        Duration::from_secs(180),
        || {
            let mut c = c.clone();
            async move {
                let j = job(&mut c, id).await;
                pb::JobState::try_from(j.state)
                    .unwrap()
                    .is_finished()
                    .then_some(j)
            }
        },
    )
    .await;
    assert_eq!(state(&done), pb::JobState::Succeeded, "{}", done.error);
    let result: serde_json::Value = serde_json::from_str(&done.result_json).unwrap();
    let p = &result["preselect"];
    assert_eq!(p["models"], DISTINCT * COPIES, "{p}");
    assert_eq!(p["kept"], KEEP, "{p}");
    assert!(
        p["examined"].as_u64().unwrap() < (DISTINCT * COPIES) as u64,
        "it stops once full: {p}"
    );
    let set = result["features"].as_str().unwrap().to_string();
    assert_eq!(p["features"], set.as_str());
    let info = FeatureServiceClient::connect(url.clone())
        .await
        .unwrap()
        .get_feature_set(pb::GetFeatureSetRequest { feature_set: set })
        .await
        .unwrap()
        .into_inner();
    let mut got = info.columns.clone();
    got.sort();
    expected.sort();
    assert_eq!(got, expected, "the worker keeps what the preselector keeps");
    let recommended = result["recommendation"]["method"].as_str().unwrap();
    assert!(!recommended.is_empty(), "{result}");

    // The same choice made on the command line's side.
    let local_run: serde_json::Value = serde_json::from_str(&ok(cli(
        &url,
        &with_source(
            &[
                "--json",
                "ensemble",
                "recommend",
                "many",
                "--max-models",
                &keep,
            ],
            data_s,
        ),
    )))
    .unwrap();
    assert_eq!(local_run["models_total"], KEEP, "{local_run}");

    // Bad limits are refused before any work.
    let e = cli(
        &url,
        &with_source(
            &["ensemble", "recommend", "many", "--max-models", "1"],
            data_s,
        ),
    );
    assert!(!e.status.success());
    let stderr = String::from_utf8_lossy(&e.stderr);
    assert!(stderr.contains("must be 2 to 20000, found 1"), "{stderr}");
}
