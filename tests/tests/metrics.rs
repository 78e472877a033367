//! Operations (issue 16): the coordinator's and a worker's Prometheus endpoints, scraped over
//! plain HTTP while real jobs run: submissions, completions, retries, latencies, the sampled
//! gauges of jobs by state and kind and of workers alive on the coordinator; slots, jobs and
//! durations by kind on the worker.

use std::time::Duration;

use serde_json::json;
use stackhive_proto::v1 as pb;
use stackhive_tests::cluster::*;
use stackhive_tests::db::TestDb;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coordinator_and_worker_metrics_count_what_happened() {
    let db = TestDb::postgres().await;
    let (cm, wm) = (free_port(), free_port());
    let coord = Coordinator::start(
        &db.url,
        0,
        &[
            "--metrics-addr",
            &format!("127.0.0.1:{cm}"),
            "--backoff-base-ms",
            "100",
            "--backoff-max-ms",
            "200",
        ],
    )
    .await;
    let mut c = coord.jobs().await;
    let mut jobs: Vec<pb::JobSpec> = (0..10)
        .map(|_| pb::JobSpec {
            experiment: "metered".into(),
            ..spec("noop", json!({}))
        })
        .collect();
    jobs.push(pb::JobSpec {
        experiment: "metered".into(),
        max_attempts: 2,
        ..spec("shell", json!({"command": "exit 3"}))
    });
    submit(&mut c, jobs).await;
    let w = Worker::start(
        "metered",
        &coord.url,
        &["--slots", "2", "--metrics-addr", &format!("127.0.0.1:{wm}")],
    );
    wait_for("every job finished", Duration::from_secs(60), || {
        let mut c = c.clone();
        async move {
            let n = counts(&mut c, "metered").await;
            (n.succeeded == 10 && n.failed == 1).then_some(())
        }
    })
    .await;

    // Counters and latencies, recorded as the calls happen.
    let text = wait_for(
        "the sampled gauges",
        Duration::from_secs(20),
        || async move {
            // Sampled every few seconds: wait for a sample taken after every job finished.
            let t = scrape_metrics(cm);
            let noop = metric(
                &t,
                "stackhive_jobs",
                &[("kind", "noop"), ("state", "succeeded")],
            );
            let shell = metric(
                &t,
                "stackhive_jobs",
                &[("kind", "shell"), ("state", "failed")],
            );
            (noop == Some(10.0) && shell == Some(1.0)).then_some(t)
        },
    )
    .await;
    let at = |name: &str, labels: &[(&str, &str)]| {
        metric(&text, name, labels).unwrap_or_else(|| panic!("no {name} {labels:?} in:\n{text}"))
    };
    assert_eq!(at("stackhive_jobs_submitted_total", &[]), 11.0);
    assert_eq!(at("stackhive_jobs_completed_total", &[]), 10.0);
    assert_eq!(
        at("stackhive_job_retries_total", &[("why", "failure")]),
        1.0
    );
    assert_eq!(at("stackhive_job_failures_total", &[]), 2.0);
    assert!(at("stackhive_complete_seconds_count", &[]) >= 1.0);
    assert!(at("stackhive_lease_query_seconds_count", &[]) >= 1.0);
    assert_eq!(at("stackhive_workers_alive", &[]), 1.0);
    assert!(at("stackhive_db_connections", &[("use", "open")]) >= 1.0);

    // The worker's own view.
    let text = scrape_metrics(wm);
    let at = |name: &str, labels: &[(&str, &str)]| {
        metric(&text, name, labels).unwrap_or_else(|| panic!("no {name} {labels:?} in:\n{text}"))
    };
    assert_eq!(at("stackhive_worker_slots", &[("use", "total")]), 2.0);
    assert_eq!(at("stackhive_worker_slots", &[("use", "busy")]), 0.0);
    assert_eq!(
        at(
            "stackhive_worker_jobs_total",
            &[("kind", "noop"), ("outcome", "succeeded")]
        ),
        10.0
    );
    assert_eq!(
        at(
            "stackhive_worker_jobs_total",
            &[("kind", "shell"), ("outcome", "failed")]
        ),
        2.0
    );
    assert_eq!(
        at(
            "stackhive_worker_job_seconds_count",
            &[("kind", "noop"), ("outcome", "succeeded")]
        ),
        10.0
    );
    w.terminate(Duration::from_secs(20)).await;
    coord.kill().await;
}
