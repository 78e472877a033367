//! Scheduling end to end with real worker processes: dependencies, cancelling a running job,
//! retries with backoff, resource matching, and a graceful SIGTERM.

use std::time::Duration;

use serde_json::json;
use stackhive_proto::v1 as pb;
use stackhive_tests::cluster::*;
use stackhive_tests::db::TestDb;

const FAST: &[&str] = &[
    "--lease-ttl-ms",
    "2000",
    "--heartbeat-interval-ms",
    "200",
    "--reap-interval-ms",
    "200",
    "--backoff-base-ms",
    "300",
    "--backoff-max-ms",
    "2000",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dependencies_run_in_order_and_failures_cascade() {
    let db = TestDb::postgres().await;
    let coord = Coordinator::start(&db.url, 0, FAST).await;
    let mut c = coord.jobs().await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("order");
    let step = |name: &str| {
        spec(
            "shell",
            json!({ "command": format!("sleep 0.2; echo {name} >> {}", log.display()) }),
        )
    };
    let mut report = step("report");
    report.depends_on_batch = vec![0, 1];
    let mut doomed = spec("shell", json!({ "command": "exit 7" }));
    doomed.max_attempts = 1;
    let mut after_doomed = step("never");
    after_doomed.depends_on_batch = vec![3];
    let ids = submit(
        &mut c,
        vec![step("fold-a"), step("fold-b"), report, doomed, after_doomed],
    )
    .await;
    let w = Worker::start("w", &coord.url, &["--slots", "4"]);
    wait_state(
        &mut c,
        ids[2],
        pb::JobState::Succeeded,
        Duration::from_secs(30),
    )
    .await;
    let order = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<&str> = order.lines().collect();
    assert_eq!(lines.len(), 3, "{order}");
    assert_eq!(
        lines[2], "report",
        "the dependent ran after both parents: {order}"
    );
    let failed = wait_state(
        &mut c,
        ids[3],
        pb::JobState::Failed,
        Duration::from_secs(30),
    )
    .await;
    assert!(
        failed.error.contains("exited with code 7"),
        "{}",
        failed.error
    );
    let dependent = wait_state(
        &mut c,
        ids[4],
        pb::JobState::Failed,
        Duration::from_secs(10),
    )
    .await;
    assert!(
        dependent
            .error
            .starts_with(&format!("dependency {} failed", ids[3])),
        "{}",
        dependent.error
    );
    w.terminate(Duration::from_secs(20)).await;
    coord.kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_running_job_kills_its_process() {
    let db = TestDb::postgres().await;
    let coord = Coordinator::start(&db.url, 0, FAST).await;
    let mut c = coord.jobs().await;
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("pid");
    let cmd = format!("echo $$ > {}; exec sleep 120", pidfile.display());
    let id = submit(&mut c, vec![spec("shell", json!({ "command": cmd }))]).await[0];
    let w = Worker::start("w", &coord.url, &["--slots", "1"]);
    wait_state(&mut c, id, pb::JobState::Running, Duration::from_secs(30)).await;
    let pid: i32 = wait_for("the job's pid file", Duration::from_secs(10), || {
        let p = pidfile.clone();
        async move {
            std::fs::read_to_string(p)
                .ok()
                .and_then(|s| s.trim().parse().ok())
        }
    })
    .await;
    let out = c
        .cancel(pb::CancelRequest {
            job_ids: vec![id],
            experiment: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(out.stopping, vec![id]);
    let j = wait_state(&mut c, id, pb::JobState::Cancelled, Duration::from_secs(10)).await;
    assert!(j.error.contains("cancel"), "{}", j.error);
    wait_for(
        "the job's process to be gone",
        Duration::from_secs(5),
        || async move {
            let gone = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_err()
                || std::fs::read_to_string(format!("/proc/{pid}/stat"))
                    .is_ok_and(|s| s.contains(") Z "));
            gone.then_some(())
        },
    )
    .await;
    // The worker keeps serving after the kill.
    let next = submit(&mut c, vec![spec("noop", json!({}))]).await[0];
    wait_state(
        &mut c,
        next,
        pb::JobState::Succeeded,
        Duration::from_secs(10),
    )
    .await;
    w.terminate(Duration::from_secs(20)).await;
    coord.kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flaky_job_is_retried_with_backoff_until_max_attempts() {
    let db = TestDb::postgres().await;
    let coord = Coordinator::start(&db.url, 0, FAST).await;
    let mut c = coord.jobs().await;
    let dir = tempfile::tempdir().unwrap();
    let stamps = dir.path().join("stamps");
    let cmd = format!("date +%s%3N >> {}; exit 3", stamps.display());
    let mut s = spec("shell", json!({ "command": cmd }));
    s.max_attempts = 3;
    let id = submit(&mut c, vec![s]).await[0];
    let w = Worker::start("w", &coord.url, &["--slots", "1"]);
    let j = wait_state(&mut c, id, pb::JobState::Failed, Duration::from_secs(30)).await;
    assert_eq!((j.attempt, j.failures), (3, 3));
    assert!(j.error.contains("exited with code 3"), "{}", j.error);
    let times: Vec<i64> = std::fs::read_to_string(&stamps)
        .unwrap()
        .lines()
        .map(|l| l.parse().unwrap())
        .collect();
    assert_eq!(times.len(), 3);
    // base 300 ms, doubling, equal jitter: gaps of at least 150 ms and then 300 ms
    assert!(
        times[1] - times[0] >= 150,
        "first retry too soon: {times:?}"
    );
    assert!(
        times[2] - times[1] >= 300,
        "second retry too soon: {times:?}"
    );
    w.terminate(Duration::from_secs(20)).await;
    coord.kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gpu_jobs_never_go_to_cpu_only_workers() {
    let db = TestDb::postgres().await;
    let coord = Coordinator::start(&db.url, 0, FAST).await;
    let mut c = coord.jobs().await;
    let mut gpu = spec(
        "shell",
        json!({ "command": "echo gpu=$CUDA_VISIBLE_DEVICES" }),
    );
    gpu.resources = Some(pb::Resources {
        cpu_slots: 1,
        gpus: 1,
        gpu_mem_mb: 16_000,
        tags: vec![],
    });
    let cpu_jobs: Vec<pb::JobSpec> = (0..20).map(|_| spec("noop", json!({}))).collect();
    let mut all = vec![gpu];
    all.extend(cpu_jobs);
    let ids = submit(&mut c, all).await;
    let cpu_worker = Worker::start("cpu-only", &coord.url, &["--slots", "4"]);
    for &id in &ids[1..] {
        wait_state(&mut c, id, pb::JobState::Succeeded, Duration::from_secs(30)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        state(&job(&mut c, ids[0]).await),
        pb::JobState::Queued,
        "no worker with a GPU yet"
    );
    let small = Worker::start(
        "small-gpu",
        &coord.url,
        &["--slots", "2", "--gpus", "1", "--gpu-mem-mb", "8000"],
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        state(&job(&mut c, ids[0]).await),
        pb::JobState::Queued,
        "8 GB is less than the 16 GB asked for"
    );
    let big = Worker::start(
        "big-gpu",
        &coord.url,
        &["--slots", "2", "--gpus", "2", "--gpu-mem-mb", "24000"],
    );
    let j = wait_state(
        &mut c,
        ids[0],
        pb::JobState::Succeeded,
        Duration::from_secs(30),
    )
    .await;
    let workers = c
        .list_workers(pb::ListWorkersRequest { include_dead: true })
        .await
        .unwrap()
        .into_inner()
        .workers;
    let ran_on = workers
        .iter()
        .find(|w| w.id == j.worker_id)
        .expect("worker of the GPU job");
    assert_eq!(ran_on.name, "big-gpu");
    assert!(
        j.result_json.contains("gpu=0") || j.result_json.contains("gpu=1"),
        "{}",
        j.result_json
    );
    for w in [cpu_worker, small, big] {
        w.terminate(Duration::from_secs(20)).await;
    }
    coord.kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_hands_running_jobs_back() {
    let db = TestDb::postgres().await;
    let coord = Coordinator::start(&db.url, 0, FAST).await;
    let mut c = coord.jobs().await;
    let id = submit(&mut c, vec![spec("sleep", json!({ "ms": 120_000 }))]).await[0];
    let w = Worker::start(
        "leaving",
        &coord.url,
        &["--slots", "1", "--drain-timeout-s", "1"],
    );
    wait_state(&mut c, id, pb::JobState::Running, Duration::from_secs(30)).await;
    let status = w.terminate(Duration::from_secs(20)).await;
    assert!(status.success(), "graceful exit: {status:?}");
    let j = job(&mut c, id).await;
    assert_eq!(
        state(&j),
        pb::JobState::Queued,
        "handed back at once, not after the lease expired"
    );
    assert_eq!((j.failures, j.crashes), (0, 0));
    let workers = c
        .list_workers(pb::ListWorkersRequest {
            include_dead: false,
        })
        .await
        .unwrap()
        .into_inner()
        .workers;
    assert!(
        workers.iter().all(|w| w.name != "leaving"),
        "the worker deregistered"
    );
    coord.kill().await;
}

/// A shell job's processes die with a worker killed by SIGKILL (issue 16): the command and a
/// child it left in the background are gone within seconds, so the retry on another worker
/// never runs beside an orphan of the first attempt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shell_jobs_die_with_a_killed_worker() {
    let db = TestDb::postgres().await;
    let coord = Coordinator::start(&db.url, 0, FAST).await;
    let mut c = coord.jobs().await;
    let dir = tempfile::tempdir().unwrap();
    let (sh_pid, bg_pid) = (dir.path().join("sh.pid"), dir.path().join("bg.pid"));
    let cmd = format!(
        "sleep 600 & echo $! > {}; echo $$ > {}; wait",
        bg_pid.display(),
        sh_pid.display()
    );
    let id = submit(&mut c, vec![spec("shell", json!({ "command": cmd }))]).await[0];
    let w = Worker::start("doomed", &coord.url, &["--slots", "1"]);
    wait_state(&mut c, id, pb::JobState::Running, Duration::from_secs(30)).await;
    let read = |p: std::path::PathBuf| async move {
        std::fs::read_to_string(p)
            .ok()
            .and_then(|s| s.trim().parse::<i32>().ok())
    };
    let sh: i32 = wait_for("the shell's pid", Duration::from_secs(10), || {
        read(sh_pid.clone())
    })
    .await;
    let bg: i32 = wait_for(
        "the background child's pid",
        Duration::from_secs(10),
        || read(bg_pid.clone()),
    )
    .await;
    let alive = |pid: i32| {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok()
            && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .is_ok_and(|s| s.contains(") Z "))
    };
    assert!(alive(sh) && alive(bg), "the job runs");
    w.kill().await;
    wait_for(
        "the job's processes to die with their worker",
        Duration::from_secs(5),
        || async move { (!alive(sh) && !alive(bg)).then_some(()) },
    )
    .await;
    coord.kill().await;
}
