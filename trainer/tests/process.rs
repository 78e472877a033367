//! The `stackhive-trainer` process contract (issue 4, item 1; `stackhive_spec::process`): given
//! the worker's `TrainerJob` file it prints one `TrainerEvent` per stdout line, writes
//! `result.json` (and for `cnn`, `model.ot`), and exits 0; a job that cannot run prints an
//! `error` event last and exits `EXIT_PERMANENT` when the same input would fail again, 1 when
//! another try might pass (`EXIT_OUT_OF_MEMORY` needs a GPU; `TrainerError`'s unit tests cover
//! how it is recognised).

mod synth_fixture;

use std::path::Path;
use std::process::{Command, Output};

use stackhive_spec::process::{EXIT_PERMANENT, JOB_FILE};
use stackhive_spec::{CnnKind, CnnResult, CnnSpec, LrFindResult, TrainerEvent, TrainerJob};
use stackhive_trainer::{load_fitting, Arch, Net};
use synth_fixture::{fixture, Fixture, TINY};
use tch::nn::VarStore;
use tch::Device;

fn job(fx: &Fixture, kind: CnnKind, spec: serde_json::Value) -> TrainerJob {
    TrainerJob {
        kind,
        spec: serde_json::from_value::<CnnSpec>(spec).unwrap(),
        dataset_dir: fx.root.clone(),
        cache_dir: fx.caches.clone(),
        folds: fx.folds.fold.clone(),
        device: "cpu".into(),
        cpu_threads: Some(1),
        gpu_mem_mb: 0,
        init_weights: None,
        resume: None,
        progress_every_ms: 0,
    }
}

/// Runs the binary on `job` (written as `dir/job.json`) with output folder `dir/out`; returns
/// the process output and its stdout parsed as events.
fn run(dir: &Path, job: &str) -> (Output, Vec<TrainerEvent>) {
    std::fs::create_dir_all(dir).unwrap();
    let job_path = dir.join(JOB_FILE);
    std::fs::write(&job_path, job).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_stackhive-trainer"))
        .arg("--job")
        .arg(&job_path)
        .arg("--out")
        .arg(dir.join("out"))
        .env("TORCH_CPP_LOG_LEVEL", "ERROR")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let events = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not an event ({e}): {l}")))
        .collect();
    (out, events)
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn spec(fold: u16) -> serde_json::Value {
    serde_json::json!({
        "dataset": "synthetic", "folds": { "scheme": "triple-stratified", "k": 5, "seed": 42 },
        "fold": fold, "arch": TINY, "image_size": 32, "epochs": 2, "batch_size": 32,
        "optimizer": { "lr": 3e-3 }, "metadata": true, "seed": 3
    })
}

/// A `cnn` job with the metadata head: events in order, a result whose predictions cover the
/// fold, and a checkpoint that loads whole into the same network.
#[test]
fn cnn_job_streams_events_and_writes_its_result_and_checkpoint() {
    let fx = fixture(40);
    let dir = fx.dir.path().join("cnn");
    let job = job(&fx, CnnKind::Cnn, spec(2));
    let (out, events) = run(&dir, &serde_json::to_string(&job).unwrap());
    assert!(out.status.success(), "{:?}: {}", out.status, stderr(&out));
    assert!(
        matches!(events[0], TrainerEvent::Start { epochs: 2, .. }),
        "{events:?}"
    );
    let epochs = events
        .iter()
        .filter(|e| matches!(e, TrainerEvent::Epoch(_)))
        .count();
    assert_eq!(epochs, 2, "{events:?}");
    assert!(events
        .iter()
        .any(|e| matches!(e, TrainerEvent::Progress(_))));
    let result_path = dir.join("out/result.json");
    assert_eq!(
        events.last(),
        Some(&TrainerEvent::Done {
            result: result_path.clone()
        })
    );

    let result: CnnResult = serde_json::from_slice(&std::fs::read(&result_path).unwrap()).unwrap();
    let rows: Vec<u32> = fx
        .folds
        .validation_rows(2)
        .iter()
        .map(|&r| r as u32)
        .collect();
    assert_eq!(result.oof_rows, rows);
    assert_eq!(result.oof.len(), rows.len());
    assert_eq!(result.test.len(), fx.dataset.test.len());
    assert_eq!(
        (result.fold, result.image_size, result.epochs.len()),
        (2, 32, 2)
    );
    assert_eq!(result.device, "cpu");
    let vs = VarStore::new(Device::Cpu);
    let _ = Net::new(&vs.root(), &Arch::parse(TINY).unwrap(), true);
    let report = load_fitting(&vs, &dir.join("out").join(&result.checkpoint), false).unwrap();
    assert_eq!(
        report.loaded.len(),
        vs.variables().len(),
        "{}",
        report.summary()
    );
}

/// An `lr-find` job writes its sweep and no checkpoint; jobs that cannot run say why, last, and
/// exit with the code the worker's retry decision reads.
#[test]
fn lr_find_job_and_failures_follow_the_contract() {
    let fx = fixture(40);
    let mut sweep = spec(0);
    sweep["sweep"] = serde_json::json!({ "min_lr": 1e-5, "max_lr": 1e-2, "steps": 8 });
    let dir = fx.dir.path().join("lr");
    let (out, events) = run(
        &dir,
        &serde_json::to_string(&job(&fx, CnnKind::LrFind, sweep)).unwrap(),
    );
    assert!(out.status.success(), "{:?}: {}", out.status, stderr(&out));
    assert!(
        matches!(events.last(), Some(TrainerEvent::Done { .. })),
        "{events:?}"
    );
    let result: LrFindResult =
        serde_json::from_slice(&std::fs::read(dir.join("out/result.json")).unwrap()).unwrap();
    assert_eq!(result.lrs.len(), 8);
    assert!(!dir.join("out/model.ot").exists());

    let fails = |name: &str, job: String| -> (i32, String, bool) {
        let (out, events) = run(&fx.dir.path().join(name), &job);
        let Some(TrainerEvent::Error { message, permanent }) = events.last().cloned() else {
            panic!(
                "{name}: expected an error event last, found {events:?}; {}",
                stderr(&out)
            )
        };
        assert!(!fx.dir.path().join(name).join("out/result.json").exists());
        (out.status.code().unwrap(), message, permanent)
    };
    let mut bad = spec(0);
    bad["arch"] = "effnet".into();
    let (code, message, permanent) = fails(
        "arch",
        serde_json::to_string(&job(&fx, CnnKind::Cnn, bad)).unwrap(),
    );
    assert_eq!((code, permanent), (EXIT_PERMANENT, true), "{message}");
    assert!(
        message.starts_with("unknown architecture \"effnet\""),
        "{message}"
    );

    let mut short = job(&fx, CnnKind::Cnn, spec(0));
    short.folds.pop();
    let (code, message, _) = fails("folds", serde_json::to_string(&short).unwrap());
    assert_eq!(code, EXIT_PERMANENT, "{message}");
    assert_eq!(
        message,
        format!(
            "the fold assignment has {} rows, the dataset has {} train rows",
            fx.dataset.train.len() - 1,
            fx.dataset.train.len()
        )
    );

    let mut beyond = job(&fx, CnnKind::Cnn, spec(0));
    beyond.folds[3] = 5;
    let (code, message, _) = fails("fold-value", serde_json::to_string(&beyond).unwrap());
    assert_eq!(code, EXIT_PERMANENT, "{message}");
    assert_eq!(
        message,
        "the fold assignment puts train row 3 in fold 5; expected -1 (external) or 0..=4"
    );

    let (code, message, _) = fails("json", "{ \"kind\": \"cnn\" ".into());
    assert_eq!(code, EXIT_PERMANENT, "{message}");
    assert!(message.starts_with("cannot parse job file"), "{message}");

    // A GPU libtorch cannot see: the worker would lease the job again, so it is permanent.
    let mut gpu = job(&fx, CnnKind::Cnn, spec(0));
    gpu.device = "cuda:99".into();
    let (code, message, permanent) = fails("gpu", serde_json::to_string(&gpu).unwrap());
    assert_eq!((code, permanent), (EXIT_PERMANENT, true), "{message}");
    assert!(
        message.starts_with("device cuda:99 is not available"),
        "{message}"
    );

    // An output folder that cannot be made may work on another try: exit 1.
    let blocked = fx.dir.path().join("blocked");
    std::fs::create_dir_all(&blocked).unwrap();
    std::fs::write(blocked.join("out"), "a file where the output folder goes").unwrap();
    let good = serde_json::to_string(&job(&fx, CnnKind::Cnn, spec(0))).unwrap();
    let (code, message, permanent) = fails("blocked", good);
    assert_eq!((code, permanent), (1, false), "{message}");
    assert!(message.starts_with("cannot access"), "{message}");
}
