//! Fault tests with real processes on the machine's PostgreSQL: workers and coordinators are
//! killed with SIGKILL mid-run, and no accepted job is lost or done twice.

use std::time::Duration;

use serde_json::json;
use stackhive_proto::v1 as pb;
use stackhive_tests::cluster::*;
use stackhive_tests::db::TestDb;

/// Short leases so a dead worker's jobs come back within a test.
const FAST: &[&str] = &[
    "--lease-ttl-ms",
    "1500",
    "--heartbeat-interval-ms",
    "300",
    "--reap-interval-ms",
    "200",
    "--backoff-base-ms",
    "200",
    "--backoff-max-ms",
    "800",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_worker_job_is_retried_once_and_late_report_rejected() {
    let db = TestDb::postgres().await;
    let coord = Coordinator::start(&db.url, 0, FAST).await;
    let mut c = coord.jobs().await;
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("runs");
    let cmd = format!("echo run >> {}; sleep 2", marker.display());
    let id = submit(&mut c, vec![spec("shell", json!({ "command": cmd }))]).await[0];

    let doomed = Worker::start("doomed", &coord.url, &["--slots", "2"]);
    let running = wait_state(&mut c, id, pb::JobState::Running, Duration::from_secs(30)).await;
    assert_eq!(running.attempt, 1);
    doomed.kill().await;

    let rescuer = Worker::start("rescuer", &coord.url, &["--slots", "2"]);
    let done = wait_state(&mut c, id, pb::JobState::Succeeded, Duration::from_secs(30)).await;
    assert_eq!(done.attempt, 2, "the job ran again after the lease expired");
    assert_eq!(done.crashes, 1);
    assert_ne!(done.worker_id, running.worker_id);

    // The dead attempt's report arrives late: refused, the result stays the retry's. A report
    // for attempt 1 from a live, registered worker is stale (the attempt and its worker moved
    // on); one in the dead worker's name without its key proves nothing.
    let mut w = coord.workers_api().await;
    let me = w
        .register(pb::RegisterRequest {
            name: "late".into(),
            resources: Some(pb::Resources {
                cpu_slots: 1,
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let late = w
        .complete(pb::CompleteRequest {
            worker_id: me.worker_id.clone(),
            worker_key: me.worker_key.clone(),
            completions: vec![pb::Completion {
                id,
                attempt: 1,
                result_json: "{\"late\":true}".into(),
                progress_json: String::new(),
                predictions: None,
            }],
        })
        .await
        .unwrap()
        .into_inner();
    let (kind, why) = refused_one(late);
    assert_eq!(kind, pb::RefusalKind::Stale, "{why}");
    let late_fail = w
        .fail(pb::FailRequest {
            worker_id: me.worker_id,
            worker_key: me.worker_key,
            id,
            attempt: 1,
            reason: "late".into(),
            retryable: true,
            handback: false,
        })
        .await
        .unwrap_err();
    assert_eq!(late_fail.code(), tonic::Code::FailedPrecondition);
    let forged = w
        .fail(pb::FailRequest {
            worker_id: running.worker_id,
            worker_key: String::new(),
            id,
            attempt: 1,
            reason: "late".into(),
            retryable: false,
            handback: false,
        })
        .await
        .unwrap_err();
    assert_eq!(forged.code(), tonic::Code::PermissionDenied, "{forged:?}");
    let after = job(&mut c, id).await;
    assert_eq!(state(&after), pb::JobState::Succeeded);
    assert!(!after.result_json.contains("late"), "{}", after.result_json);
    rescuer.terminate(Duration::from_secs(20)).await;
    coord.kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_limit_fails_a_job_that_keeps_killing_workers() {
    let db = TestDb::postgres().await;
    let coord = Coordinator::start(&db.url, 0, FAST).await;
    let mut c = coord.jobs().await;
    let mut s = spec("sleep", json!({ "ms": 60_000 }));
    s.crash_limit = 2;
    let id = submit(&mut c, vec![s]).await[0];
    for round in 1..=2u32 {
        let w = Worker::start(&format!("victim-{round}"), &coord.url, &["--slots", "1"]);
        wait_for(
            "the job to run on the new worker",
            Duration::from_secs(30),
            || {
                let mut c = c.clone();
                async move {
                    let j = job(&mut c, id).await;
                    (state(&j) == pb::JobState::Running && j.attempt == round).then_some(())
                }
            },
        )
        .await;
        w.kill().await;
    }
    let j = wait_state(&mut c, id, pb::JobState::Failed, Duration::from_secs(30)).await;
    assert_eq!(j.crashes, 2);
    assert!(j.error.starts_with("worker lost 2 times"), "{}", j.error);
    coord.kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coordinator_killed_and_restarted_loses_nothing() {
    let db = TestDb::postgres().await;
    let coord = Coordinator::start(&db.url, 0, FAST).await;
    let port = coord.port();
    let url = coord.url.clone();
    let mut c = coord.jobs().await;
    let n = 400;
    let jobs = (0..n)
        .map(|i| pb::JobSpec {
            experiment: "restart".into(),
            name: format!("j{i}"),
            ..spec("sleep", json!({ "ms": 15 }))
        })
        .collect();
    submit(&mut c, jobs).await;
    let w1 = Worker::start("w1", &url, &["--slots", "4"]);
    let w2 = Worker::start("w2", &url, &["--slots", "4"]);
    wait_for(
        "some progress before the crash",
        Duration::from_secs(30),
        || {
            let mut c = c.clone();
            async move { (counts(&mut c, "restart").await.succeeded >= 40).then_some(()) }
        },
    )
    .await;
    coord.kill().await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    let coord = Coordinator::start(&db.url, port, FAST).await;
    let mut c = coord.jobs().await;
    let finished = wait_for(
        "every job to finish after the restart",
        Duration::from_secs(90),
        || {
            let mut c = c.clone();
            async move {
                let k = counts(&mut c, "restart").await;
                (k.succeeded + k.failed + k.cancelled == n).then_some(k)
            }
        },
    )
    .await;
    assert_eq!(
        finished.succeeded, n,
        "every accepted job succeeded: {finished:?}"
    );
    let workers = c
        .list_workers(pb::ListWorkersRequest {
            include_dead: false,
        })
        .await
        .unwrap()
        .into_inner()
        .workers;
    let names: std::collections::HashSet<String> = workers
        .iter()
        .filter(|w| w.alive)
        .map(|w| w.name.clone())
        .collect();
    assert!(
        names.contains("w1") && names.contains("w2"),
        "both workers reconnected: {names:?}"
    );
    w1.terminate(Duration::from_secs(20)).await;
    w2.terminate(Duration::from_secs(20)).await;
    coord.kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_coordinators_share_one_postgres() {
    let db = TestDb::postgres().await;
    let a = Coordinator::start(&db.url, 0, FAST).await;
    let b = Coordinator::start(&db.url, 0, FAST).await;
    let wa = Worker::start("on-a", &a.url, &["--slots", "8"]);
    let wb = Worker::start("on-b", &b.url, &["--slots", "8"]);
    let n = 3000u64;
    let mut ca = a.jobs().await;
    let mut cb = b.jobs().await;
    for (i, c) in [&mut ca, &mut cb].into_iter().enumerate() {
        let jobs = (0..n / 2)
            .map(|k| pb::JobSpec {
                experiment: "shared".into(),
                name: format!("{i}-{k}"),
                ..spec("noop", json!({}))
            })
            .collect();
        submit(c, jobs).await;
    }
    wait_for(
        "all jobs done through two coordinators",
        Duration::from_secs(120),
        || {
            let mut c = ca.clone();
            async move { (counts(&mut c, "shared").await.succeeded == n).then_some(()) }
        },
    )
    .await;
    // Each job ran exactly once: one attempt, and both workers took part.
    let mut by_worker = std::collections::HashMap::<String, u64>::new();
    let mut token = String::new();
    loop {
        let page = cb
            .list_jobs(pb::ListJobsRequest {
                experiment: "shared".into(),
                page_size: 1000,
                page_token: token,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        for j in &page.jobs {
            assert_eq!(j.attempt, 1, "job {} ran {} times", j.id, j.attempt);
            *by_worker.entry(j.worker_id.clone()).or_default() += 1;
        }
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(by_worker.values().sum::<u64>(), n);
    assert_eq!(by_worker.len(), 2, "both workers did work: {by_worker:?}");
    wa.terminate(Duration::from_secs(20)).await;
    wb.terminate(Duration::from_secs(20)).await;
    a.kill().await;
    b.kill().await;
}

/// Workers and the CLI given both coordinators' addresses keep working when the one they use
/// dies for good mid-run (issue 16): every job finishes through the other, and a command that
/// lists the dead one first still answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_and_the_cli_fail_over_when_a_coordinator_dies_for_good() {
    let db = TestDb::postgres().await;
    let a = Coordinator::start(&db.url, 0, FAST).await;
    let b = Coordinator::start(&db.url, 0, FAST).await;
    // A first: the workers use it until it dies.
    let both = format!("{},{}", a.url, b.url);
    let w1 = Worker::start("fo-1", &both, &["--slots", "4"]);
    let w2 = Worker::start("fo-2", &both, &["--slots", "4"]);
    let n = 300u64;
    let mut cb = b.jobs().await;
    let jobs = (0..n)
        .map(|k| pb::JobSpec {
            experiment: "failover".into(),
            name: format!("j{k}"),
            ..spec("sleep", json!({"ms": 40}))
        })
        .collect();
    submit(&mut cb, jobs).await;
    wait_for("some jobs done through A", Duration::from_secs(60), || {
        let mut c = cb.clone();
        async move { (counts(&mut c, "failover").await.succeeded >= 40).then_some(()) }
    })
    .await;
    let a_url = a.url.clone();
    a.kill().await;
    wait_for("every job done through B", Duration::from_secs(120), || {
        let mut c = cb.clone();
        async move { (counts(&mut c, "failover").await.succeeded == n).then_some(()) }
    })
    .await;
    let c = counts(&mut cb, "failover").await;
    assert_eq!((c.failed, c.cancelled), (0, 0), "{c:?}");

    let out = std::process::Command::new(bin("stackhive"))
        .args(["--coordinator", &format!("{a_url},{}", b.url), "--json"])
        .args(["jobs", "--experiment", "failover", "--state", "succeeded"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let w = std::process::Command::new(bin("stackhive"))
        .args(["--coordinator", &format!("{a_url},{}", b.url), "workers"])
        .output()
        .unwrap();
    let listed = String::from_utf8_lossy(&w.stdout);
    assert!(
        listed.contains("fo-1") && listed.contains("fo-2"),
        "{listed}"
    );
    w1.terminate(Duration::from_secs(20)).await;
    w2.terminate(Duration::from_secs(20)).await;
    b.kill().await;
}
