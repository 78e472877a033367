//! The `cnn` kind end to end with real processes on the machine's PostgreSQL: a generated
//! ISIC-like dataset (32×32 images) is registered through the CLI, a real worker runs
//! `stackhive-trainer` in a child process per job, and the job completes with out-of-fold
//! predictions for exactly its fold's validation rows, test predictions, per-epoch metrics and
//! a checkpoint artifact that seeds a wider network. Also: bad payloads refused at submit, a
//! diverging job and a GPU job on a machine without one fail with their reason, and a killed
//! worker's job (its trainer dies with it) is retried on another worker, which resumes from the
//! last epoch's checkpoint the first attempt stored.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::{json, Value};
use stackhive_data::synth::{generate, SynthConfig};
use stackhive_proto::v1 as pb;
use stackhive_proto::v1::artifact_service_client::ArtifactServiceClient;
use stackhive_proto::v1::dataset_service_client::DatasetServiceClient;
use stackhive_proto::v1::job_service_client::JobServiceClient;
use stackhive_tests::cluster::*;
use stackhive_tests::db::TestDb;
use tonic::transport::Channel;

/// Short leases so a dead worker's job comes back within the test.
const FAST: &[&str] = &[
    "--lease-ttl-ms",
    "3000",
    "--heartbeat-interval-ms",
    "300",
    "--reap-interval-ms",
    "200",
    "--backoff-base-ms",
    "200",
    "--backoff-max-ms",
    "800",
];

/// A tiny EfficientNet (width and depth ×0.25) at 32×32: seconds per epoch on one core.
fn payload(fold: u16, epochs: u32) -> Value {
    json!({
        "dataset": "tiny",
        "folds": { "k": 3, "seed": 7 },
        "fold": fold,
        "arch": "efficientnet-w0.25-d0.25",
        "image_size": 32,
        "epochs": epochs,
        "batch_size": 16,
        "optimizer": { "lr": 0.003 },
    })
}

fn cnn_spec(payload: Value) -> pb::JobSpec {
    one_slot(spec("cnn", payload))
}

/// `s` on one CPU slot: the trainer then runs one libtorch thread.
fn one_slot(mut s: pb::JobSpec) -> pb::JobSpec {
    s.resources = Some(pb::Resources {
        cpu_slots: 1,
        ..Default::default()
    });
    s
}

struct Cluster {
    _db: TestDb,
    coord: Coordinator,
    c: JobServiceClient<Channel>,
    dir: tempfile::TempDir,
}

/// A coordinator with fast leases, keeping datasets in the folder every coordinator of the
/// test shares.
async fn start_coordinator(db_url: &str, dir: &Path) -> Coordinator {
    let store = dir.join("store");
    let mut flags = FAST.to_vec();
    flags.extend(["--data-dir", store.to_str().unwrap()]);
    Coordinator::start(db_url, 0, &flags).await
}

/// A coordinator with the dataset `tiny` registered through the CLI.
async fn cluster() -> Cluster {
    let db = TestDb::postgres().await;
    let dir = tempfile::tempdir().unwrap();
    let coord = start_coordinator(&db.url, dir.path()).await;
    let data = dir.path().join("tiny");
    let cfg = SynthConfig {
        patients: 60,
        test_patients: 6,
        image_size: 32,
        external_2019: 20,
        positive_rate: 0.3,
        external_positive_rate: 0.3,
        seed: 5,
        ..Default::default()
    };
    generate(&cfg, &data).expect("generate dataset");
    let out = Command::new(bin("stackhive"))
        .args(["--coordinator", &coord.url, "dataset", "add", "tiny"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "dataset add: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let c = coord.jobs().await;
    Cluster {
        _db: db,
        coord,
        c,
        dir,
    }
}

/// Worker flags that keep its caches inside the test's folder.
fn worker_flags(dir: &Path, name: &str, extra: &[&str]) -> Vec<String> {
    let mut flags: Vec<String> = ["--slots", "2"].iter().map(|s| s.to_string()).collect();
    for (flag, sub) in [
        ("--dataset-cache", "datasets"),
        ("--image-cache", "images"),
        ("--work-dir", "jobs"),
    ] {
        flags.push(flag.into());
        flags.push(dir.join(name).join(sub).display().to_string());
    }
    flags.extend(extra.iter().map(|s| s.to_string()));
    flags
}

fn start_worker(dir: &Path, name: &str, url: &str, extra: &[&str]) -> Worker {
    let flags = worker_flags(dir, name, extra);
    let refs: Vec<&str> = flags.iter().map(String::as_str).collect();
    Worker::start(name, url, &refs)
}

/// Waits until job `id` is finished in any state.
async fn finished(c: &mut JobServiceClient<Channel>, id: i64, timeout: Duration) -> pb::Job {
    wait_for(&format!("job {id} to finish"), timeout, || {
        let mut c = c.clone();
        async move {
            let j = job(&mut c, id).await;
            matches!(
                state(&j),
                pb::JobState::Succeeded | pb::JobState::Failed | pb::JobState::Cancelled
            )
            .then_some(j)
        }
    })
    .await
}

async fn predictions(c: &mut JobServiceClient<Channel>, id: i64) -> pb::Predictions {
    c.get_job(pb::GetJobRequest {
        id,
        include_predictions: true,
    })
    .await
    .unwrap()
    .into_inner()
    .predictions
    .expect("predictions stored")
}

async fn channel(url: &str) -> Channel {
    Channel::from_shared(url.to_string())
        .unwrap()
        .connect()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cnn_fold_trains_in_a_child_process_and_reports_oof_test_and_a_checkpoint() {
    let Cluster {
        _db,
        coord,
        mut c,
        dir,
    } = cluster().await;
    let worker = start_worker(dir.path(), "w1", &coord.url, &[]);
    let mut sweep = payload(0, 1);
    sweep["sweep"] = json!({ "min_lr": 1e-5, "max_lr": 10.0, "steps": 30 });
    let lr_find = one_slot(spec("lr-find", sweep));
    // A wider network seeded by the fold job's checkpoint, submitted with it: it waits for its
    // dependency, named in init_weights, and loads the tensors whose shapes fit.
    let mut fold = cnn_spec(payload(1, 3));
    fold.name = "fold1".into();
    let mut wider = payload(0, 1);
    wider["arch"] = json!("efficientnet-w0.3-d0.25");
    wider["init_weights"] = json!({ "dependency": "fold1" });
    let mut seeded = cnn_spec(wider);
    seeded.depends_on_batch = vec![0];
    let ids = submit(&mut c, vec![fold, lr_find, seeded]).await;
    let id = ids[0];
    let done = finished(&mut c, id, Duration::from_secs(600)).await;
    assert_eq!(state(&done), pb::JobState::Succeeded, "{}", done.error);

    // The learning-rate sweep reports its curve and a suggestion inside the swept range.
    let swept = finished(&mut c, ids[1], Duration::from_secs(600)).await;
    assert_eq!(state(&swept), pb::JobState::Succeeded, "{}", swept.error);
    let curve: Value = serde_json::from_str(&swept.result_json).unwrap();
    let lrs = curve["lrs"].as_array().unwrap();
    assert!(
        lrs.len() >= 5 && lrs.len() == curve["losses"].as_array().unwrap().len(),
        "{curve}"
    );
    let suggestion = curve["suggestion"].as_f64().expect("a suggested rate");
    assert!((1e-5..=10.0).contains(&suggestion), "{curve}");

    let result: Value = serde_json::from_str(&done.result_json).unwrap();
    assert_eq!(result["epochs"].as_array().unwrap().len(), 3, "{result}");
    for e in result["epochs"].as_array().unwrap() {
        assert!(e["train_loss"].as_f64().unwrap().is_finite(), "{e}");
        assert!(e["valid_loss"].as_f64().unwrap().is_finite(), "{e}");
    }
    // The last progress document the heartbeats carried: the final epoch, with an AUC.
    let progress: Value = serde_json::from_str(&done.progress_json).unwrap_or(Value::Null);
    assert_eq!(progress["epoch"], 3, "progress {}", done.progress_json);

    // Out-of-fold rows are exactly fold 1's validation rows, per the coordinator's folds.
    let folds = DatasetServiceClient::new(channel(&coord.url).await)
        .get_folds(pb::FoldsRequest {
            dataset: "tiny".into(),
            scheme: "triple-stratified".into(),
            k: 3,
            seed: 7,
        })
        .await
        .unwrap()
        .into_inner();
    let expected: Vec<u32> = folds
        .fold
        .iter()
        .enumerate()
        .filter(|(_, &f)| f == 1)
        .map(|(row, _)| row as u32)
        .collect();
    let p = predictions(&mut c, id).await;
    assert_eq!(p.oof_rows, expected);
    assert_eq!(p.oof.len(), expected.len());
    let test_rows = std::fs::read_to_string(dir.path().join("tiny/test.csv"))
        .unwrap()
        .lines()
        .count()
        - 1;
    assert_eq!(p.test.len(), test_rows);
    assert!(p.oof.iter().chain(&p.test).all(|v| (0.0..=1.0).contains(v)));

    // The checkpoint is an artifact, and its record matches the result's.
    let mut artifacts = ArtifactServiceClient::new(channel(&coord.url).await);
    let listed = artifacts
        .list_artifacts(pb::ListArtifactsRequest { job_id: id })
        .await
        .unwrap()
        .into_inner()
        .artifacts;
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0].name, "model.ot");
    assert_eq!(result["checkpoint"]["blake3"], listed[0].blake3.as_str());
    let fetched = dir.path().join("fetched.ot");
    let out = Command::new(bin("stackhive"))
        .args(["--coordinator", &coord.url, "artifact", "get"])
        .arg(id.to_string())
        .arg("--output")
        .arg(&fetched)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bytes = std::fs::read(&fetched).unwrap();
    assert_eq!(blake3::hash(&bytes).to_hex().as_str(), listed[0].blake3);

    // The checkpoint seeded the wider network: the tensors whose shapes fit are loaded.
    let id2 = ids[2];
    let done2 = finished(&mut c, id2, Duration::from_secs(600)).await;
    assert_eq!(state(&done2), pb::JobState::Succeeded, "{}", done2.error);
    let r2: Value = serde_json::from_str(&done2.result_json).unwrap();
    // "loaded N, sliced S, random R of T tensors; U unused"
    let init = r2["init"].as_str().unwrap_or_default();
    let loaded: usize = init
        .strip_prefix("loaded ")
        .and_then(|rest| rest.split(',').next())
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0);
    assert!(loaded > 0 && init.contains("random"), "init report: {r2}");

    worker.terminate(Duration::from_secs(20)).await;
    coord.kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_cnn_payloads_are_refused_at_submit_and_failing_jobs_say_why() {
    let Cluster {
        _db,
        coord,
        mut c,
        dir,
    } = cluster().await;
    let cases: Vec<(Value, &str)> = vec![
        (json!({"arch": "efficientnet-b9"}), "unknown architecture"),
        (json!({"arch": "resnet19"}), "unknown architecture"),
        (json!({"image_size": 100}), "nearest: 96 or 128"),
        (json!({"fold": 3}), "out of range"),
        (
            json!({"optimizer": {"name": "adamw", "momentum": 0.9}}),
            "momentum",
        ),
        (json!({"epochs": 0}), "epochs"),
        (json!({"sweep": {}}), "lr-find"),
        (json!({"augment": {"mixup": -1}}), "augment.mixup"),
        (json!({"learning_rate": 0.1}), "unknown field"),
        (
            json!({"init_weights": {"dependency": "seed"}}),
            "init_weights.dependency names \"seed\", but the job has no dependencies",
        ),
    ];
    for (patch, expected) in cases {
        let mut p = payload(0, 1);
        for (k, v) in patch.as_object().unwrap() {
            p[k] = v.clone();
        }
        let err = c
            .submit(pb::SubmitRequest {
                idempotency_key: uuid::Uuid::new_v4().to_string(),
                jobs: vec![cnn_spec(p.clone())],
            })
            .await
            .expect_err("a bad payload must be refused");
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{p}: {err:?}");
        assert!(
            err.message().contains(expected),
            "{p}: expected {expected:?} in {:?}",
            err.message()
        );
    }
    // Initial weights from a dependency that leaves no checkpoint (an lr-find job).
    let mut sweep = one_slot(spec("lr-find", payload(0, 1)));
    sweep.name = "sweep".into();
    let mut p = payload(0, 1);
    p["init_weights"] = json!({ "dependency": "sweep" });
    let mut seeded = cnn_spec(p);
    seeded.depends_on_batch = vec![0];
    let err = c
        .submit(pb::SubmitRequest {
            idempotency_key: String::new(),
            jobs: vec![sweep, seeded],
        })
        .await
        .expect_err("an lr-find job cannot seed weights");
    assert!(
        err.message()
            .contains("of kind lr-find; expected a cnn job"),
        "{}",
        err.message()
    );
    let none = c
        .list_jobs(pb::ListJobsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(none.jobs.is_empty(), "nothing is stored for refused jobs");

    // The example fold set in the README is accepted as it is; its seeded job waits for fold 0.
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/cnn-folds.toml");
    let out = Command::new(bin("stackhive"))
        .args(["--coordinator", &coord.url, "submit", "--file", example])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let example_jobs = counts(&mut c, "effnet-demo").await;
    assert_eq!(
        (example_jobs.queued, example_jobs.blocked),
        (4, 1),
        "{example_jobs:?}"
    );
    c.cancel(pb::CancelRequest {
        experiment: "effnet-demo".into(),
        ..Default::default()
    })
    .await
    .unwrap();

    // A worker that claims a GPU on this GPU-less machine: the trainer finds no CUDA device and
    // the job fails for good with that reason. A diverging job fails naming step and rate.
    let worker = start_worker(
        dir.path(),
        "w1",
        &coord.url,
        &["--gpus", "1", "--gpu-mem-mb", "16000"],
    );
    let mut gpu = cnn_spec(payload(0, 1));
    gpu.resources = Some(pb::Resources {
        cpu_slots: 1,
        gpus: 1,
        ..Default::default()
    });
    let mut diverging = payload(0, 2);
    diverging["optimizer"] = json!({ "name": "sgd", "lr": 100.0 });
    diverging["schedule"] = json!({ "name": "constant" });
    let ids = submit(&mut c, vec![gpu, cnn_spec(diverging)]).await;
    let gpu_job = finished(&mut c, ids[0], Duration::from_secs(300)).await;
    assert_eq!(state(&gpu_job), pb::JobState::Failed);
    assert!(gpu_job.error.contains("cuda"), "{}", gpu_job.error);
    assert_eq!(gpu_job.attempt, 1, "a missing GPU is not retried");
    let nan_job = finished(&mut c, ids[1], Duration::from_secs(300)).await;
    assert_eq!(state(&nan_job), pb::JobState::Failed);
    assert!(
        nan_job.error.contains("step") && nan_job.error.contains("learning rate"),
        "{}",
        nan_job.error
    );
    assert_eq!(nan_job.attempt, 1, "a diverging job is not retried");
    worker.terminate(Duration::from_secs(20)).await;
    coord.kill().await;
}

/// Processes whose command line mentions `needle`.
fn processes_with(needle: &str) -> Vec<i32> {
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(cmd) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
        let zombie = stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'));
        if !zombie && String::from_utf8_lossy(&cmd).contains(needle) {
            found.push(pid);
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_workers_cnn_job_resumes_on_another_worker_from_its_last_epoch() {
    let Cluster {
        _db: db,
        coord,
        mut c,
        dir,
    } = cluster().await;
    // The rescue goes through a second coordinator on the same database (sharing the dataset
    // folder, as coordinators of one cluster do); the first dies with the worker, so the
    // resume checkpoint can only come from the database.
    let doomed = start_worker(dir.path(), "doomed", &coord.url, &[]);
    let id = submit(&mut c, vec![cnn_spec(payload(2, 3))]).await[0];
    // Wait until the first epoch's resume checkpoint is stored on the coordinator: the
    // trainer is really training and a retry has something to resume from.
    let mut artifacts = ArtifactServiceClient::new(channel(&coord.url).await);
    let names = |a: &mut ArtifactServiceClient<Channel>| {
        let mut a = a.clone();
        async move {
            let listed = a
                .list_artifacts(pb::ListArtifactsRequest { job_id: id })
                .await
                .unwrap()
                .into_inner();
            listed
                .artifacts
                .into_iter()
                .map(|x| x.name)
                .collect::<Vec<_>>()
        }
    };
    wait_for(
        "the first resume checkpoint to be stored",
        Duration::from_secs(300),
        || {
            let names = names(&mut artifacts);
            async move { names.await.contains(&"resume.ot".to_string()).then_some(()) }
        },
    )
    .await;
    let running = job(&mut c, id).await;
    assert_eq!(
        (state(&running), running.attempt),
        (pb::JobState::Running, 1)
    );
    let needle = format!("job-{id}-a1");
    assert!(!processes_with(&needle).is_empty(), "the trainer runs");
    doomed.kill().await;
    // The trainer dies with its worker (parent-death signal): no orphan keeps training. The
    // signal is immediate, but a killed libtorch process still has to finish a write it is in
    // and free its memory, which on a loaded machine took over 10 s once; an orphan that kept
    // training would stay for minutes.
    wait_for(
        "the orphaned trainer to exit",
        Duration::from_secs(30),
        || {
            let gone = processes_with(&needle).is_empty();
            async move { gone.then_some(()) }
        },
    )
    .await;

    coord.kill().await;
    let coord = start_coordinator(&db.url, dir.path()).await;
    let mut c = coord.jobs().await;
    let mut artifacts = ArtifactServiceClient::new(channel(&coord.url).await);
    let rescuer = start_worker(dir.path(), "rescuer", &coord.url, &[]);
    let done = finished(&mut c, id, Duration::from_secs(600)).await;
    assert_eq!(state(&done), pb::JobState::Succeeded, "{}", done.error);
    assert_eq!(done.attempt, 2, "the job ran again after the lease expired");
    assert_ne!(done.worker_id, running.worker_id);
    // The retry continued after a stored epoch instead of starting over, and its result still
    // holds all three epochs' metrics.
    let result: Value = serde_json::from_str(&done.result_json).unwrap();
    let from = result["resumed_from"]
        .as_u64()
        .expect("resumed_from is set");
    assert!((1..=3).contains(&from), "resumed from epoch {from}");
    // The heartbeats said so too (what `stackhive watch` shows).
    let progress: Value = serde_json::from_str(&done.progress_json).unwrap();
    assert_eq!(progress["resumed_from"].as_u64(), Some(from), "{progress}");
    let epochs: Vec<u64> = result["epochs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["epoch"].as_u64().unwrap())
        .collect();
    assert_eq!(epochs, [1, 2, 3]);
    let p = predictions(&mut c, id).await;
    assert!(!p.oof.is_empty() && !p.test.is_empty());
    // The final checkpoint is kept; the resume one is gone.
    assert_eq!(names(&mut artifacts).await, ["model.ot"]);
    rescuer.terminate(Duration::from_secs(20)).await;
    coord.kill().await;
}
