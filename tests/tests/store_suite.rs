//! One suite, two stores: every scheduling rule of the `Store` contract is checked on
//! PostgreSQL (a fresh database per test) and on SQLite (a fresh file per test).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use stackhive_coordinator::model::*;
use stackhive_coordinator::store::{Store, CHUNK_BYTES};
use stackhive_coordinator::Error;
use stackhive_tests::db;

fn noop() -> NewJob {
    NewJob {
        kind: "noop".into(),
        payload: "{}".into(),
        ..Default::default()
    }
}

fn batch(jobs: Vec<NewJob>) -> SubmitBatch {
    SubmitBatch {
        idempotency_key: None,
        body_hash: String::new(),
        jobs,
    }
}

fn cpu(slots: u32) -> Resources {
    Resources {
        cpu_slots: slots,
        ..Default::default()
    }
}

fn q(free: Resources, max_jobs: u32) -> LeaseQuery {
    LeaseQuery {
        worker_id: "w1".into(),
        free,
        max_jobs,
        lease_ttl_ms: 30_000,
    }
}

/// The workers the cases lease and report as; a store only deals with registered workers.
const WORKERS: [&str; 8] = ["w1", "w-old", "w0", "w2", "w3", "w4", "w5", "w6"];

async fn register_workers(s: &dyn Store) {
    for id in WORKERS {
        s.register_worker(id, &worker_info(id), "key-hash")
            .await
            .unwrap();
    }
}

fn worker_info(name: &str) -> WorkerInfo {
    WorkerInfo {
        name: name.into(),
        hostname: "h".into(),
        resources: cpu(4),
        gpu_mem_mb: vec![],
        kinds: vec!["noop".into(), "sleep".into()],
        version: "t".into(),
    }
}

async fn submit(s: &dyn Store, jobs: Vec<NewJob>) -> Vec<JobId> {
    s.submit(batch(jobs)).await.expect("submit").ids
}

async fn state(s: &dyn Store, id: JobId) -> JobState {
    s.get_job(id).await.unwrap().state
}

fn done(id: JobId, attempt: u32) -> Completion {
    Completion {
        id,
        attempt,
        result: Some("{\"ok\":true}".into()),
        predictions: None,
        progress: None,
    }
}

pub async fn submit_lease_complete(s: Arc<dyn Store>) {
    let ids = submit(&*s, vec![noop(), noop(), noop()]).await;
    assert_eq!(ids.len(), 3);
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]),
        "ids grow in submission order: {ids:?}"
    );
    let leased = s.lease(&q(cpu(2), 10)).await.unwrap();
    let got: Vec<JobId> = leased.iter().map(|j| j.id).collect::<Vec<_>>();
    assert_eq!(
        got,
        ids[..2],
        "two slots claim the two oldest jobs, oldest first"
    );
    assert!(leased.iter().all(|j| j.attempt == 1 && j.kind == "noop"));
    let out = s
        .complete(
            "w1",
            &leased.iter().map(|j| done(j.id, 1)).collect::<Vec<_>>(),
        )
        .await
        .unwrap();
    assert_eq!(out.accepted.len(), 2);
    assert!(out.stale.is_empty());
    let j = s.get_job(ids[0]).await.unwrap();
    assert_eq!(j.state, JobState::Succeeded);
    assert_eq!(j.result.as_deref(), Some("{\"ok\":true}"));
    assert!(j.finished_at.is_some() && j.started_at.is_some());
    assert_eq!(
        j.worker_id.as_deref(),
        Some("w1"),
        "a finished job names the worker that ran it"
    );
    assert_eq!(state(&*s, ids[2]).await, JobState::Queued);
    let counts = s.count_states(&JobFilter::default()).await.unwrap();
    assert_eq!((counts.succeeded, counts.queued), (2, 1));
}

pub async fn priorities_and_aging(s: Arc<dyn Store>) {
    let low = submit(
        &*s,
        vec![NewJob {
            priority: -5,
            ..noop()
        }],
    )
    .await[0];
    let high = submit(
        &*s,
        vec![NewJob {
            priority: 5,
            ..noop()
        }],
    )
    .await[0];
    let first = s.lease(&q(cpu(1), 1)).await.unwrap();
    assert_eq!(first[0].id, high, "higher priority runs first");
    let second = s.lease(&q(cpu(1), 1)).await.unwrap();
    assert_eq!(second[0].id, low);

    // Issue 11: a claim of several jobs lists them in queue order on both stores, not in id
    // or row order.
    let jobs: Vec<NewJob> = [-3, 4, 0, 9, 4]
        .into_iter()
        .map(|priority| NewJob { priority, ..noop() })
        .collect();
    let ids = submit(&*s, jobs).await;
    let leased: Vec<JobId> = s
        .lease(&q(cpu(8), 8))
        .await
        .unwrap()
        .iter()
        .map(|j| j.id)
        .collect();
    assert_eq!(leased, [ids[3], ids[1], ids[4], ids[2], ids[0]]);
}

pub async fn aging_prevents_starvation(s: Arc<dyn Store>) {
    // fast aging: one priority point is worth 20 ms of waiting
    let low = submit(
        &*s,
        vec![NewJob {
            priority: 0,
            ..noop()
        }],
    )
    .await[0];
    tokio::time::sleep(Duration::from_millis(400)).await;
    let high = submit(
        &*s,
        vec![NewJob {
            priority: 5,
            ..noop()
        }],
    )
    .await[0];
    let first = s.lease(&q(cpu(1), 1)).await.unwrap();
    assert_eq!(
        first[0].id, low,
        "a job that waited 400 ms outranks a +5 job worth 100 ms"
    );
    let second = s.lease(&q(cpu(1), 1)).await.unwrap();
    assert_eq!(second[0].id, high);
}

pub async fn resource_matching(s: Arc<dyn Store>) {
    let gpu_job = NewJob {
        resources: Resources {
            cpu_slots: 1,
            gpus: 1,
            gpu_mem_mb: 16_000,
            tags: vec![],
        },
        ..noop()
    };
    let tagged = NewJob {
        resources: Resources {
            cpu_slots: 1,
            tags: vec!["bigmem".into()],
            ..Default::default()
        },
        ..noop()
    };
    let ids = submit(&*s, vec![gpu_job, tagged, noop()]).await;
    let cpu_only = s.lease(&q(cpu(8), 10)).await.unwrap();
    assert_eq!(
        cpu_only.iter().map(|j| j.id).collect::<Vec<_>>(),
        vec![ids[2]],
        "a CPU-only, untagged worker gets neither the GPU job nor the tagged one"
    );
    let small_gpu = Resources {
        cpu_slots: 8,
        gpus: 1,
        gpu_mem_mb: 8_000,
        tags: vec![],
    };
    assert!(
        s.lease(&q(small_gpu, 10)).await.unwrap().is_empty(),
        "8 GB GPU is too small"
    );
    let big_gpu = Resources {
        cpu_slots: 8,
        gpus: 2,
        gpu_mem_mb: 24_000,
        tags: vec!["bigmem".into(), "x".into()],
    };
    let got = s.lease(&q(big_gpu, 10)).await.unwrap();
    let got: HashSet<JobId> = got.iter().map(|j| j.id).collect();
    assert_eq!(got, HashSet::from([ids[0], ids[1]]));
}

pub async fn claims_fit_capacity(s: Arc<dyn Store>) {
    let two = NewJob {
        resources: cpu(2),
        ..noop()
    };
    submit(&*s, vec![two.clone(), two.clone(), two]).await;
    let got = s.lease(&q(cpu(5), 10)).await.unwrap();
    assert_eq!(got.len(), 2, "5 free slots hold two 2-slot jobs, not three");
    assert!(s.lease(&q(cpu(1), 10)).await.unwrap().is_empty());
}

pub async fn dependencies_unblock_and_cascade(s: Arc<dyn Store>) {
    let child = NewJob {
        depends_on_batch: vec![0, 1],
        ..noop()
    };
    let ids = submit(&*s, vec![noop(), noop(), child]).await;
    assert_eq!(state(&*s, ids[2]).await, JobState::Blocked);
    let leased = s.lease(&q(cpu(10), 10)).await.unwrap();
    assert_eq!(leased.len(), 2, "the blocked child is not claimable");
    s.complete("w1", &[done(ids[0], 1)]).await.unwrap();
    assert_eq!(
        state(&*s, ids[2]).await,
        JobState::Blocked,
        "one parent is still running"
    );
    s.complete("w1", &[done(ids[1], 1)]).await.unwrap();
    assert_eq!(state(&*s, ids[2]).await, JobState::Queued);

    // A dependency on an existing job, then a non-retryable failure of the parent.
    let parent = submit(&*s, vec![noop()]).await[0];
    let kid = submit(
        &*s,
        vec![NewJob {
            depends_on: vec![parent],
            ..noop()
        }],
    )
    .await[0];
    let grandkid = submit(
        &*s,
        vec![NewJob {
            depends_on: vec![kid],
            ..noop()
        }],
    )
    .await[0];
    s.lease(&q(cpu(10), 10)).await.unwrap();
    let f = Failure {
        worker_id: "w1".into(),
        id: parent,
        attempt: 1,
        reason: "boom".into(),
        retryable: false,
        handback: false,
    };
    assert_eq!(s.fail(&f).await.unwrap().state, JobState::Failed);
    for id in [kid, grandkid] {
        let j = s.get_job(id).await.unwrap();
        assert_eq!(j.state, JobState::Failed);
        assert_eq!(
            j.error.as_deref(),
            Some(format!("dependency {parent} failed: boom").as_str())
        );
    }
    // Retrying the parent revives the dependents it took down.
    let revived: HashSet<JobId> = s.retry(&[parent]).await.unwrap().into_iter().collect();
    assert_eq!(revived, HashSet::from([parent, kid, grandkid]));
    assert_eq!(state(&*s, parent).await, JobState::Queued);
    assert_eq!(state(&*s, kid).await, JobState::Blocked);
    assert_eq!(state(&*s, grandkid).await, JobState::Blocked);
    // A failed job cannot be depended on; a missing one neither; nothing is stored then.
    let before = s.count_states(&JobFilter::default()).await.unwrap().total();
    let err = s
        .submit(batch(vec![
            noop(),
            NewJob {
                depends_on: vec![999_999],
                ..noop()
            },
        ]))
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::InvalidArgument(ref m) if m == "dependency 999999 does not exist"),
        "{err:?}"
    );
    assert_eq!(
        s.count_states(&JobFilter::default()).await.unwrap().total(),
        before,
        "nothing half-written"
    );
}

pub async fn fencing_rejects_stale_reports(s: Arc<dyn Store>) {
    let id = submit(&*s, vec![noop()]).await[0];
    let mut short = q(cpu(1), 1);
    short.lease_ttl_ms = 50;
    let first = s.lease(&short).await.unwrap();
    assert_eq!(first[0].attempt, 1);
    tokio::time::sleep(Duration::from_millis(120)).await;
    let reaped = s.reap_expired().await.unwrap();
    assert_eq!(reaped.requeued, vec![id]);
    let j = s.get_job(id).await.unwrap();
    assert_eq!((j.state, j.crashes), (JobState::Queued, 1));
    let second = s.lease(&q(cpu(1), 1)).await.unwrap();
    assert_eq!(second[0].attempt, 2);
    // The dead attempt reports late: refused, nothing changes.
    let out = s.complete("w-old", &[done(id, 1)]).await.unwrap();
    assert!(out.accepted.is_empty());
    assert_eq!(out.stale.len(), 1);
    assert!(out.stale[0].2.contains("attempt 2"), "{}", out.stale[0].2);
    let stops = s
        .heartbeat(
            "w-old",
            &[ActiveJob {
                id,
                attempt: 1,
                progress: None,
            }],
            30_000,
        )
        .await
        .unwrap();
    assert_eq!(
        stops,
        vec![StopJob {
            id,
            attempt: 1,
            reason: StopReason::LeaseLost
        }]
    );
    let stale_fail = Failure {
        worker_id: "w-old".into(),
        id,
        attempt: 1,
        reason: "late".into(),
        retryable: true,
        handback: false,
    };
    assert!(matches!(s.fail(&stale_fail).await, Err(Error::Stale(_))));
    assert_eq!(state(&*s, id).await, JobState::Running);
    // The live attempt completes once.
    assert_eq!(
        s.complete("w1", &[done(id, 2)]).await.unwrap().accepted,
        vec![id]
    );
    assert_eq!(
        s.complete("w1", &[done(id, 2)]).await.unwrap().stale.len(),
        1,
        "a second completion is stale"
    );
}

pub async fn heartbeats_renew_leases(s: Arc<dyn Store>) {
    let ids = submit(&*s, vec![noop(), noop()]).await;
    let mut short = q(cpu(2), 2);
    short.lease_ttl_ms = 150;
    assert_eq!(s.lease(&short).await.unwrap().len(), 2);
    let active: Vec<ActiveJob> = ids
        .iter()
        .map(|&id| ActiveJob {
            id,
            attempt: 1,
            progress: Some("{\"step\":1}".into()),
        })
        .collect();
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(60)).await;
        let stops = s.heartbeat("w1", &active, 150).await.unwrap();
        assert!(stops.is_empty());
        assert!(
            s.reap_expired().await.unwrap().requeued.is_empty(),
            "a renewed lease is not reaped"
        );
    }
    for &id in &ids {
        let j = s.get_job(id).await.unwrap();
        assert_eq!(j.state, JobState::Running);
        assert_eq!(j.progress.as_deref(), Some("{\"step\":1}"));
    }
    // A completion's own progress document is the job's last word; without one, the last
    // heartbeat's stays.
    let last = Completion {
        progress: Some("{\"step\":2}".into()),
        ..done(ids[0], 1)
    };
    let out = s.complete("w1", &[last, done(ids[1], 1)]).await.unwrap();
    assert_eq!(out.accepted.len(), 2);
    let last = s.get_job(ids[0]).await.unwrap().progress;
    assert_eq!(last.as_deref(), Some("{\"step\":2}"));
    let kept = s.get_job(ids[1]).await.unwrap().progress;
    assert_eq!(kept.as_deref(), Some("{\"step\":1}"));
}

pub async fn retries_back_off_then_fail(s: Arc<dyn Store>) {
    let id = submit(
        &*s,
        vec![NewJob {
            max_attempts: 3,
            ..noop()
        }],
    )
    .await[0];
    // When the last failure was reported: the backoff runs from there, so the lease calls
    // made since (slow on a loaded machine) count towards it.
    let mut failed_at = std::time::Instant::now();
    for attempt in 1..=3u32 {
        let mut got = s.lease(&q(cpu(1), 1)).await.unwrap();
        let waited = std::time::Instant::now();
        while got.is_empty() {
            assert!(
                waited.elapsed() < Duration::from_secs(5),
                "backoff never ended"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
            got = s.lease(&q(cpu(1), 1)).await.unwrap();
        }
        if attempt > 1 {
            // base 100 ms doubling, equal jitter: at least half the step must have passed
            assert!(
                failed_at.elapsed() >= Duration::from_millis(40),
                "retry {attempt} came too soon"
            );
        }
        assert_eq!(got[0].attempt, attempt);
        let f = Failure {
            worker_id: "w1".into(),
            id,
            attempt,
            reason: format!("flaky {attempt}"),
            retryable: true,
            handback: false,
        };
        failed_at = std::time::Instant::now();
        let out = s.fail(&f).await.unwrap();
        if attempt < 3 {
            assert_eq!(out.state, JobState::Queued);
            assert!(out.run_after > now_ms() - 5_000);
            assert!(
                s.lease(&q(cpu(1), 1)).await.unwrap().is_empty(),
                "no claim during backoff"
            );
        } else {
            assert_eq!(out.state, JobState::Failed);
        }
    }
    let j = s.get_job(id).await.unwrap();
    assert_eq!(
        (j.state, j.failures, j.error.as_deref()),
        (JobState::Failed, 3, Some("flaky 3"))
    );
}

pub async fn crash_limit_fails_the_job(s: Arc<dyn Store>) {
    let id = submit(
        &*s,
        vec![NewJob {
            crash_limit: 2,
            ..noop()
        }],
    )
    .await[0];
    let mut short = q(cpu(1), 1);
    short.lease_ttl_ms = 30;
    for round in 1..=2 {
        assert_eq!(s.lease(&short).await.unwrap().len(), 1, "round {round}");
        tokio::time::sleep(Duration::from_millis(80)).await;
        s.reap_expired().await.unwrap();
    }
    let j = s.get_job(id).await.unwrap();
    assert_eq!((j.state, j.crashes), (JobState::Failed, 2));
    assert!(j.error.unwrap().starts_with("worker lost 2 times"));
}

pub async fn cancellation(s: Arc<dyn Store>) {
    let ids = submit(&*s, vec![noop(), noop()]).await;
    let child = submit(
        &*s,
        vec![NewJob {
            depends_on: vec![ids[0]],
            ..noop()
        }],
    )
    .await[0];
    let running = s.lease(&q(cpu(1), 1)).await.unwrap();
    assert_eq!(running[0].id, ids[0]);
    let out = s.cancel(&[ids[0], ids[1]]).await.unwrap();
    assert_eq!(out.cancelled, vec![ids[1]]);
    assert_eq!(out.stopping, vec![ids[0]]);
    assert_eq!(state(&*s, ids[1]).await, JobState::Cancelled);
    let stops = s
        .heartbeat(
            "w1",
            &[ActiveJob {
                id: ids[0],
                attempt: 1,
                progress: None,
            }],
            30_000,
        )
        .await
        .unwrap();
    assert_eq!(
        stops,
        vec![StopJob {
            id: ids[0],
            attempt: 1,
            reason: StopReason::Cancelled
        }]
    );
    let f = Failure {
        worker_id: "w1".into(),
        id: ids[0],
        attempt: 1,
        reason: "killed".into(),
        retryable: true,
        handback: false,
    };
    assert_eq!(s.fail(&f).await.unwrap().state, JobState::Cancelled);
    let c = s.get_job(child).await.unwrap();
    assert_eq!(c.state, JobState::Cancelled);
    assert_eq!(
        c.error.as_deref(),
        Some(format!("dependency {} was cancelled", ids[0]).as_str())
    );
    let again = s.cancel(&[ids[0]]).await.unwrap();
    assert_eq!(again.already_finished, vec![ids[0]]);
    assert!(matches!(
        s.cancel(&[424_242]).await,
        Err(Error::NotFound(_))
    ));
}

pub async fn idempotent_submit(s: Arc<dyn Store>) {
    let b = SubmitBatch {
        idempotency_key: Some("k1".into()),
        body_hash: "h1".into(),
        jobs: vec![noop(), noop()],
    };
    let first = s.submit(b.clone()).await.unwrap();
    let again = s.submit(b.clone()).await.unwrap();
    assert_eq!(
        again,
        SubmitOutcome {
            ids: first.ids.clone(),
            deduplicated: true
        }
    );
    let other = SubmitBatch {
        body_hash: "h2".into(),
        ..b
    };
    assert!(matches!(
        s.submit(other).await,
        Err(Error::AlreadyExists(_))
    ));
    assert_eq!(
        s.count_states(&JobFilter::default()).await.unwrap().total(),
        2
    );
}

pub async fn predictions_are_checked_and_stored(s: Arc<dyn Store>) {
    let id = submit(
        &*s,
        vec![NewJob {
            expect_oof_rows: 4,
            expect_test_rows: 2,
            ..noop()
        }],
    )
    .await[0];
    s.lease(&q(cpu(1), 1)).await.unwrap();
    let bad = Completion {
        id,
        attempt: 1,
        result: None,
        progress: None,
        predictions: Some(Predictions {
            oof_rows: vec![0, 1, 2],
            oof: vec![0.1, 0.2, 0.3],
            test: vec![0.5, 0.6],
        }),
    };
    let out = s.complete("w1", &[bad]).await.unwrap();
    assert_eq!(
        out.invalid,
        [(
            id,
            1,
            format!("predictions for job {id} have 3 out-of-fold rows, the job expects 4")
        )]
    );
    assert!(out.accepted.is_empty() && out.stale.is_empty());
    assert_eq!(state(&*s, id).await, JobState::Running, "nothing stored");
    assert_eq!(s.get_predictions(id).await.unwrap(), None);
    let p = Predictions {
        oof_rows: vec![3, 5, 7, 9],
        oof: vec![0.1, 0.2, 0.3, 0.4],
        test: vec![0.5, 0.6],
    };
    let good = Completion {
        id,
        attempt: 1,
        result: None,
        progress: None,
        predictions: Some(p.clone()),
    };
    assert_eq!(s.complete("w1", &[good]).await.unwrap().accepted, vec![id]);
    assert_eq!(s.get_predictions(id).await.unwrap(), Some(p));
    let j = s.get_job(id).await.unwrap();
    assert_eq!((j.prediction_rows_oof, j.prediction_rows_test), (4, 2));
}

/// More jobs than one statement reads (`store::predictions::CHUNK` is 256), asked for out of
/// order, with repeats and with jobs that have no predictions: each stored set once, in id order.
pub async fn predictions_are_read_in_bulk(s: Arc<dyn Store>) {
    let mut stored = Vec::new();
    for i in 0..600u32 {
        let p = Predictions {
            oof_rows: vec![i, i + 1],
            oof: vec![i as f32, 0.5],
            test: vec![0.25],
        };
        let id = s
            .import_predictions("bulk", &format!("m{i}"), "{}", &p)
            .await
            .unwrap();
        stored.push((id, p));
    }
    let without = submit(&*s, vec![noop()]).await[0];
    let mut ask: Vec<JobId> = stored.iter().rev().map(|(id, _)| *id).collect();
    ask.push(without);
    ask.push(stored[7].0);
    ask.push(987_654_321);
    let got = s.get_predictions_many(&ask).await.unwrap();
    assert_eq!(got, stored);
    assert!(s.get_predictions_many(&[]).await.unwrap().is_empty());
}

pub async fn handback_keeps_counters(s: Arc<dyn Store>) {
    let id = submit(&*s, vec![noop()]).await[0];
    s.lease(&q(cpu(1), 1)).await.unwrap();
    let f = Failure {
        worker_id: "w1".into(),
        id,
        attempt: 1,
        reason: "worker shutting down".into(),
        retryable: true,
        handback: true,
    };
    assert_eq!(s.fail(&f).await.unwrap().state, JobState::Queued);
    let j = s.get_job(id).await.unwrap();
    assert_eq!((j.failures, j.crashes, j.attempt), (0, 0, 1));
    assert_eq!(
        s.lease(&q(cpu(1), 1)).await.unwrap()[0].attempt,
        2,
        "claimable at once"
    );
}

pub async fn listing_paging_and_workers(s: Arc<dyn Store>) {
    let mut jobs = Vec::new();
    for i in 0..25 {
        jobs.push(NewJob {
            experiment: if i % 2 == 0 {
                "even".into()
            } else {
                "odd".into()
            },
            ..noop()
        });
    }
    submit(&*s, jobs).await;
    let mut f = JobFilter {
        experiment: Some("even".into()),
        limit: 5,
        ..Default::default()
    };
    let mut seen = Vec::new();
    loop {
        let page = s.list_jobs(&f).await.unwrap();
        if page.is_empty() {
            break;
        }
        f.after_id = Some(page.last().unwrap().id);
        seen.extend(page.into_iter().map(|j| j.id));
    }
    assert_eq!(seen.len(), 13);
    assert!(seen.windows(2).all(|w| w[0] < w[1]));
    let info = worker_info("blade-1");
    s.register_worker("blade-1", &info, "hash-1").await.unwrap();
    assert!(matches!(
        s.register_worker("blade-1", &info, "hash-2").await,
        Err(Error::AlreadyExists(_))
    ));
    assert_eq!(
        s.worker_key("blade-1").await.unwrap().as_deref(),
        Some("hash-1")
    );
    assert_eq!(s.worker_key("nobody").await.unwrap(), None);
    let mut lq = q(cpu(3), 3);
    lq.worker_id = "blade-1".into();
    s.lease(&lq).await.unwrap();
    let workers = s.list_workers(false).await.unwrap();
    let mine = workers.iter().find(|w| w.id == "blade-1").unwrap();
    assert_eq!((mine.info.name.as_str(), mine.running_jobs), ("blade-1", 3));
    // What its running jobs hold, so a listing shows what is free.
    let held: u32 = s
        .list_jobs(&JobFilter {
            states: vec![JobState::Running],
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap()
        .iter()
        .filter(|j| j.worker_id.as_deref() == Some("blade-1"))
        .map(|j| j.spec.resources.cpu_slots)
        .sum();
    assert_eq!((mine.busy_slots, mine.busy_gpus), (held, 0));
    assert!(held >= 3, "each leased job holds a slot: {held}");
    s.deregister_worker("blade-1").await.unwrap();
    let alive = s.list_workers(false).await.unwrap();
    assert!(alive.iter().all(|w| w.id != "blade-1"));
    let all = s.list_workers(true).await.unwrap();
    assert!(all.iter().any(|w| w.id == "blade-1" && w.deregistered));
    assert!(matches!(
        s.deregister_worker("nobody").await,
        Err(Error::NotFound(_))
    ));
    // Registering again renews it under its id.
    let mut renewed = info.clone();
    renewed.resources = cpu(8);
    s.renew_worker("blade-1", &renewed).await.unwrap();
    let back = s.list_workers(false).await.unwrap();
    let mine = back.iter().find(|w| w.id == "blade-1").unwrap();
    assert_eq!(mine.info.resources.cpu_slots, 8);
    assert!(matches!(
        s.renew_worker("nobody", &info).await,
        Err(Error::NotFound(_))
    ));
}

/// Issue 14: the fence is (job, attempt, worker), and only a registered, not deregistered
/// worker claims or heartbeats. Issue 11: a lease marks its worker seen on both stores, work or
/// no work.
pub async fn workers_act_only_as_themselves(s: Arc<dyn Store>) {
    let id = submit(&*s, vec![noop()]).await[0];
    let mut stranger = q(cpu(1), 1);
    stranger.worker_id = "made-up".into();
    assert!(matches!(s.lease(&stranger).await, Err(Error::NotFound(_))));
    assert_eq!(state(&*s, id).await, JobState::Queued, "nothing claimed");

    let seen_before =
        |w: &[WorkerRecord], id: &str| w.iter().find(|r| r.id == id).unwrap().last_seen;
    let before = seen_before(&s.list_workers(true).await.unwrap(), "w-old");
    tokio::time::sleep(Duration::from_millis(15)).await;
    let mut idle = q(cpu(1), 1);
    idle.worker_id = "w-old".into();
    idle.max_jobs = 0;
    assert!(s.lease(&idle).await.unwrap().is_empty());
    let after = seen_before(&s.list_workers(true).await.unwrap(), "w-old");
    assert!(
        after > before,
        "an empty lease marks the worker seen: {before} -> {after}"
    );

    let leased = s.lease(&q(cpu(1), 1)).await.unwrap();
    assert_eq!((leased[0].id, leased[0].attempt), (id, 1));
    // Another registered worker reporting the current attempt: refused, nothing changes.
    let out = s.complete("w-old", &[done(id, 1)]).await.unwrap();
    assert!(out.accepted.is_empty());
    assert!(
        out.stale[0].2.contains("leased to another worker"),
        "{:?}",
        out.stale
    );
    let beat = [ActiveJob {
        id,
        attempt: 1,
        progress: Some("{\"forged\":true}".into()),
    }];
    let stops = s.heartbeat("w-old", &beat, 30_000).await.unwrap();
    assert_eq!(stops[0].reason, StopReason::LeaseLost);
    assert_eq!(
        s.get_job(id).await.unwrap().progress,
        None,
        "no forged progress"
    );
    let forged = Failure {
        worker_id: "w-old".into(),
        id,
        attempt: 1,
        reason: "forged".into(),
        retryable: false,
        handback: false,
    };
    assert!(matches!(s.fail(&forged).await, Err(Error::Stale(m)) if m.contains("another worker")));
    assert_eq!(state(&*s, id).await, JobState::Running);

    // A deregistered worker neither claims nor heartbeats; its own job's lease is not renewed.
    s.deregister_worker("w1").await.unwrap();
    assert!(matches!(
        s.lease(&q(cpu(1), 1)).await,
        Err(Error::NotFound(_))
    ));
    let own = [ActiveJob {
        id,
        attempt: 1,
        progress: None,
    }];
    assert!(matches!(
        s.heartbeat("w1", &own, 30_000).await,
        Err(Error::NotFound(_))
    ));
    s.renew_worker("w1", &worker_info("w1")).await.unwrap();
    assert!(s.heartbeat("w1", &own, 30_000).await.unwrap().is_empty());
    assert_eq!(
        s.complete("w1", &[done(id, 1)]).await.unwrap().accepted,
        vec![id]
    );
}

/// Issue 16: a worker claims only kinds it registered; the others wait for a worker that runs
/// them, in their place.
pub async fn claims_match_registered_kinds(s: Arc<dyn Store>) {
    let cnn = submit(
        &*s,
        vec![NewJob {
            kind: "cnn".into(),
            ..noop()
        }],
    )
    .await[0];
    let plain = submit(&*s, vec![noop()]).await[0];
    let got = s.lease(&q(cpu(4), 4)).await.unwrap();
    assert_eq!(got.iter().map(|j| j.id).collect::<Vec<_>>(), [plain]);
    assert_eq!(state(&*s, cnn).await, JobState::Queued);
    let gpu_box = WorkerInfo {
        kinds: vec!["cnn".into(), "noop".into()],
        ..worker_info("gpu-box")
    };
    s.register_worker("gpu-box", &gpu_box, "h").await.unwrap();
    let mut lq = q(cpu(4), 4);
    lq.worker_id = "gpu-box".into();
    let got = s.lease(&lq).await.unwrap();
    assert_eq!(got.iter().map(|j| j.id).collect::<Vec<_>>(), [cnn]);
}

/// Tokens: stored by id with the hash of their secret; revocation is kept, and told.
pub async fn tokens_are_stored_and_revoked(s: Arc<dyn Store>) {
    let t = TokenRecord {
        id: "0123456789ab".into(),
        name: "ci".into(),
        role: Role::Submitter,
        secret_hash: "h".repeat(64),
        created_at: 1_000,
        revoked_at: None,
    };
    s.create_token(&t).await.unwrap();
    assert!(matches!(
        s.create_token(&t).await,
        Err(Error::AlreadyExists(_))
    ));
    let admin = TokenRecord {
        id: "ba9876543210".into(),
        name: "ops".into(),
        role: Role::Admin,
        created_at: 2_000,
        ..t.clone()
    };
    s.create_token(&admin).await.unwrap();
    assert_eq!(s.get_token(&t.id).await.unwrap(), Some(t.clone()));
    assert_eq!(s.get_token("nope").await.unwrap(), None);
    let ids = |v: Vec<TokenRecord>| v.into_iter().map(|t| t.id).collect::<Vec<_>>();
    assert_eq!(
        ids(s.list_tokens(false).await.unwrap()),
        [t.id.clone(), admin.id.clone()]
    );
    let epoch = s.token_epoch();
    assert!(s.revoke_token(&t.id).await.unwrap());
    assert!(!s.revoke_token(&t.id).await.unwrap(), "revoked once");
    assert!(matches!(
        s.revoke_token("nope").await,
        Err(Error::NotFound(_))
    ));
    assert!(s
        .get_token(&t.id)
        .await
        .unwrap()
        .unwrap()
        .revoked_at
        .is_some());
    assert_eq!(
        ids(s.list_tokens(false).await.unwrap()),
        std::slice::from_ref(&admin.id)
    );
    assert_eq!(s.list_tokens(true).await.unwrap().len(), 2);
    // A store that caches verified tokens hears of the revocation (PostgreSQL: NOTIFY);
    // SQLite never offers a cache.
    match epoch {
        None => assert_eq!(s.backend(), "sqlite"),
        Some(e) => {
            let deadline = std::time::Instant::now() + Duration::from_secs(5);
            while s.token_epoch() == Some(e) && std::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            assert_ne!(s.token_epoch(), Some(e), "revocation heard");
        }
    }
}

pub async fn retention_purges_only_old_finished(s: Arc<dyn Store>) {
    let ids = submit(&*s, vec![noop(), noop()]).await;
    let got = s.lease(&q(cpu(1), 1)).await.unwrap();
    s.complete("w1", &[done(got[0].id, 1)]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(s.purge_finished(now_ms() + 1_000, 100).await.unwrap(), 1);
    assert!(matches!(s.get_job(ids[0]).await, Err(Error::NotFound(_))));
    assert_eq!(state(&*s, ids[1]).await, JobState::Queued);
}

pub async fn concurrent_claims_take_each_job_once(s: Arc<dyn Store>) {
    let n = 600;
    let mut all = Vec::new();
    for chunk in 0..3 {
        let jobs = (0..n / 3)
            .map(|i| NewJob {
                name: format!("{chunk}-{i}"),
                ..noop()
            })
            .collect();
        all.extend(submit(&*s, jobs).await);
    }
    let mut tasks = Vec::new();
    for w in 0..6 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            loop {
                let mut lq = q(cpu(25), 25);
                lq.worker_id = format!("w{w}");
                let got = s.lease(&lq).await.unwrap();
                if got.is_empty() {
                    return mine;
                }
                let items: Vec<Completion> = got.iter().map(|j| done(j.id, j.attempt)).collect();
                let out = s.complete(&lq.worker_id, &items).await.unwrap();
                assert!(out.stale.is_empty());
                mine.extend(got.into_iter().map(|j| j.id));
            }
        }));
    }
    let mut seen = Vec::new();
    for t in tasks {
        seen.extend(t.await.unwrap());
    }
    let unique: HashSet<JobId> = seen.iter().copied().collect();
    assert_eq!(seen.len(), n, "each job claimed exactly once");
    assert_eq!(unique, all.into_iter().collect());
    assert_eq!(
        s.count_states(&JobFilter::default())
            .await
            .unwrap()
            .succeeded,
        n as u64
    );
}

pub async fn datasets_and_folds_are_stored_once(s: Arc<dyn Store>) {
    let rec = DatasetRecord {
        hash: "ab12".into(),
        manifest: "{\"files\":[]}".into(),
        summary: "{}".into(),
        storage_path: "/data/ab12".into(),
        total_bytes: 10,
        files: 3,
        ..Default::default()
    };
    let first = s.register_dataset(&rec, "isic-small").await.unwrap();
    assert_eq!(first.names, vec!["isic-small".to_string()]);
    let again = s.register_dataset(&rec, "alias").await.unwrap();
    assert_eq!(
        again.names,
        vec!["alias".to_string(), "isic-small".to_string()]
    );
    assert_eq!(
        again.registered_at, first.registered_at,
        "content row written once"
    );
    let other = DatasetRecord {
        hash: "cd34".into(),
        ..rec.clone()
    };
    assert!(matches!(
        s.register_dataset(&other, "alias").await,
        Err(Error::AlreadyExists(_))
    ));
    assert!(
        matches!(s.get_dataset("cd34").await, Err(Error::NotFound(_))),
        "nothing half-registered"
    );
    assert_eq!(s.get_dataset("isic-small").await.unwrap().hash, "ab12");
    assert_eq!(s.get_dataset("ab12").await.unwrap().files, 3);
    assert_eq!(s.list_datasets().await.unwrap().len(), 1);

    let folds = FoldsRecord {
        dataset_hash: "ab12".into(),
        scheme: "triple-stratified".into(),
        k: 5,
        seed: u64::MAX - 1,
        assignment: vec![0, 0, 1, 0, 255, 255],
        report: "{}".into(),
        created_at: 0,
    };
    let (stored, inserted) = s.put_folds(&folds).await.unwrap();
    assert!(inserted);
    assert_eq!(
        (stored.seed, stored.assignment.clone()),
        (u64::MAX - 1, folds.assignment.clone())
    );
    let changed = FoldsRecord {
        assignment: vec![9, 9],
        ..folds.clone()
    };
    let (kept, inserted) = s.put_folds(&changed).await.unwrap();
    assert!(!inserted);
    assert_eq!(
        kept.assignment, folds.assignment,
        "folds are computed once and kept"
    );
    assert!(s.get_folds("ab12", "group", 5, 1).await.unwrap().is_none());
}

async fn stage(s: &dyn Store, job: JobId, parts: &[&[u8]]) -> String {
    let upload = s.begin_artifact_upload(job).await.unwrap();
    let mut start = 0u64;
    for p in parts {
        s.put_artifact_chunk(&upload, start, p).await.unwrap();
        start += p.len() as u64;
    }
    upload
}

fn artifact(job: JobId, attempt: u32, name: &str, size: u64, upload: &str) -> ArtifactRecord {
    ArtifactRecord {
        job_id: job,
        attempt,
        name: name.into(),
        size,
        blake3: "ab".repeat(32),
        upload_id: upload.into(),
        created_at: 0,
    }
}

async fn bytes_of(s: &dyn Store, upload: &str) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let got = s
            .artifact_chunks(upload, out.len() as u64, 1)
            .await
            .unwrap();
        let Some((start, data)) = got.into_iter().next() else {
            return out;
        };
        assert_eq!(start, out.len() as u64, "chunks are contiguous");
        out.extend(data);
    }
}

pub async fn artifacts_are_fenced_replaced_and_purged(s: Arc<dyn Store>) {
    assert!(matches!(
        s.begin_artifact_upload(12_345).await,
        Err(Error::NotFound(_))
    ));
    let ids = submit(&*s, vec![noop()]).await;
    let job = ids[0];
    let attempt = s.lease(&q(cpu(1), 1)).await.unwrap()[0].attempt;
    assert!(s.list_artifacts(job).await.unwrap().is_empty());

    // Committed: listed, and its chunks read back in order.
    let first = stage(&*s, job, &[b"abc", b"de"]).await;
    let stored = s
        .commit_artifact(&artifact(job, attempt, "model.ot", 5, &first), "w1")
        .await
        .unwrap();
    assert_eq!((stored.attempt, stored.size), (attempt, 5));
    assert!(stored.created_at > 0);
    assert_eq!(s.get_artifact(job, "model.ot").await.unwrap(), stored);
    assert_eq!(bytes_of(&*s, &first).await, b"abcde");
    assert_eq!(
        s.artifact_chunks(&first, 3, 10).await.unwrap(),
        vec![(3, b"de".to_vec())]
    );

    // A write larger than a row is split into rows of CHUNK_BYTES.
    let big: Vec<u8> = (0..CHUNK_BYTES * 5 / 2).map(|i| (i % 251) as u8).collect();
    let large = stage(&*s, job, &[&big]).await;
    let rows = s.artifact_chunks(&large, 0, 10).await.unwrap();
    let starts: Vec<u64> = rows.iter().map(|(st, _)| *st).collect();
    assert_eq!(starts, [0, CHUNK_BYTES as u64, 2 * CHUNK_BYTES as u64]);
    assert_eq!(bytes_of(&*s, &large).await, big);
    s.discard_artifact_upload(&large).await.unwrap();
    assert!(s.artifact_chunks(&large, 0, 10).await.unwrap().is_empty());

    // Refused: a stale attempt, and an upload missing bytes. The stored artifact is untouched.
    let other = stage(&*s, job, &[b"xyz"]).await;
    assert!(matches!(
        s.commit_artifact(&artifact(job, attempt + 1, "model.ot", 3, &other), "w1")
            .await,
        Err(Error::Stale(_))
    ));
    assert!(matches!(
        s.commit_artifact(&artifact(job, attempt, "model.ot", 3, &other), "w-old")
            .await,
        Err(Error::Stale(m)) if m.contains("another worker")
    ));
    assert!(matches!(
        s.commit_artifact(&artifact(job, attempt, "model.ot", 4, &other), "w1")
            .await,
        Err(Error::Config(m)) if m.contains("holds 3 bytes")
    ));
    assert_eq!(s.get_artifact(job, "model.ot").await.unwrap(), stored);

    // Replaced: the new upload holds the name, the old one's bytes are gone.
    let replaced = s
        .commit_artifact(&artifact(job, attempt, "model.ot", 3, &other), "w1")
        .await
        .unwrap();
    assert_eq!(replaced.upload_id, other);
    assert!(s.artifact_chunks(&first, 0, 10).await.unwrap().is_empty());
    assert_eq!(bytes_of(&*s, &other).await, b"xyz");
    assert_eq!(s.list_artifacts(job).await.unwrap().len(), 1);

    // Deleted: only by the running attempt; a second delete finds nothing.
    let resume = stage(&*s, job, &[b"state"]).await;
    s.commit_artifact(&artifact(job, attempt, "resume.ot", 5, &resume), "w1")
        .await
        .unwrap();
    assert!(matches!(
        s.delete_artifact(job, attempt + 1, "w1", "resume.ot").await,
        Err(Error::Stale(_))
    ));
    assert!(matches!(
        s.delete_artifact(job, attempt, "w-old", "resume.ot").await,
        Err(Error::Stale(_))
    ));
    assert!(s
        .delete_artifact(job, attempt, "w1", "resume.ot")
        .await
        .unwrap());
    assert!(!s
        .delete_artifact(job, attempt, "w1", "resume.ot")
        .await
        .unwrap());
    assert!(matches!(
        s.get_artifact(job, "resume.ot").await,
        Err(Error::NotFound(_))
    ));
    assert!(s.artifact_chunks(&resume, 0, 10).await.unwrap().is_empty());

    // An upload never committed is purged once idle; committed ones stay.
    let abandoned = stage(&*s, job, &[b"half"]).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(s.purge_stale_uploads(5).await.unwrap(), 1);
    assert!(s
        .artifact_chunks(&abandoned, 0, 10)
        .await
        .unwrap()
        .is_empty());
    assert!(matches!(
        s.put_artifact_chunk(&abandoned, 4, b"more").await,
        Err(Error::NotFound(_))
    ));
    assert_eq!(bytes_of(&*s, &other).await, b"xyz");

    // A finished job's artifacts go with it at retention.
    s.complete("w1", &[done(job, attempt)]).await.unwrap();
    assert!(matches!(
        s.commit_artifact(
            &artifact(job, attempt, "late.ot", 0, &stage(&*s, job, &[]).await),
            "w1"
        )
        .await,
        Err(Error::Stale(_))
    ));
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(s.purge_finished(now_ms() + 1_000, 100).await.unwrap(), 1);
    assert!(matches!(
        s.list_artifacts(job).await,
        Err(Error::NotFound(_))
    ));
    assert!(s.artifact_chunks(&other, 0, 10).await.unwrap().is_empty());
}

// Issue 11: the cases below were SQLite-only unit tests; they run on both stores now.

fn named_job(name: &str) -> NewJob {
    NewJob {
        name: name.into(),
        resources: cpu(1),
        ..noop()
    }
}

fn lease_q(cpu_slots: u32, max_jobs: u32, lease_ttl_ms: i64) -> LeaseQuery {
    LeaseQuery {
        lease_ttl_ms,
        ..q(cpu(cpu_slots), max_jobs)
    }
}

fn done_p(id: JobId, attempt: u32, predictions: Option<Predictions>) -> Completion {
    Completion {
        id,
        attempt,
        result: Some(r#"{"auc":0.9}"#.into()),
        predictions,
        progress: None,
    }
}

pub async fn submit_lease_complete_round_trip(s: Arc<dyn Store>) {
    let mut urgent = named_job("urgent");
    urgent.priority = 5;
    urgent.expect_oof_rows = 3;
    urgent.expect_test_rows = 2;
    let mut gpu = named_job("gpu");
    gpu.resources.gpus = 1;
    let mut tagged = named_job("tagged");
    tagged.resources.tags = vec!["big-disk".into()];
    let ids = s
        .submit(batch(vec![named_job("plain"), urgent, gpu, tagged]))
        .await
        .unwrap()
        .ids;
    assert_eq!(ids.len(), 4);

    // Only the two CPU jobs without tags fit, the higher priority first.
    let leased = s.lease(&lease_q(4, 10, 60_000)).await.unwrap();
    let got: Vec<JobId> = leased.iter().map(|j| j.id).collect();
    assert_eq!(got, vec![ids[1], ids[0]]);
    assert!(leased.iter().all(|j| j.attempt == 1));
    assert_eq!(s.get_job(ids[1]).await.unwrap().state, JobState::Running);

    let preds = Predictions {
        oof_rows: vec![0, 5, 9],
        oof: vec![0.1, 0.2, 0.3],
        test: vec![0.4, 0.5],
    };
    let out = s
        .complete(
            "w1",
            &[
                done_p(ids[1], 1, Some(preds.clone())),
                done_p(ids[0], 1, None),
            ],
        )
        .await
        .unwrap();
    assert_eq!(out.accepted, vec![ids[1], ids[0]]);
    assert!(out.stale.is_empty());

    let j = s.get_job(ids[1]).await.unwrap();
    assert_eq!(j.state, JobState::Succeeded);
    assert_eq!(j.result.as_deref(), Some(r#"{"auc":0.9}"#));
    assert_eq!((j.prediction_rows_oof, j.prediction_rows_test), (3, 2));
    assert_eq!(s.get_predictions(ids[1]).await.unwrap(), Some(preds));
    assert_eq!(s.get_predictions(ids[0]).await.unwrap(), None);
    assert!(matches!(
        s.get_predictions(999).await,
        Err(Error::NotFound(_))
    ));

    let counts = s.count_states(&JobFilter::default()).await.unwrap();
    assert_eq!((counts.succeeded, counts.queued), (2, 2));
    let page = JobFilter {
        after_id: Some(ids[0]),
        limit: 2,
        ..JobFilter::default()
    };
    let listed: Vec<JobId> = s
        .list_jobs(&page)
        .await
        .unwrap()
        .iter()
        .map(|j| j.id)
        .collect();
    assert_eq!(listed, vec![ids[1], ids[2]]);
}

/// Issue 11: `Complete` accepts and refuses per item. A batch holding a valid completion, a
/// stale one and one whose predictions do not fit its job stores the valid one and names the
/// other two with why; the refused job stays running for its worker to fail.
pub async fn complete_answers_each_item(s: Arc<dyn Store>) {
    let mut model = named_job("model");
    model.expect_oof_rows = 4;
    let ids = s
        .submit(batch(vec![named_job("other"), model, named_job("late")]))
        .await
        .unwrap()
        .ids;
    s.lease(&lease_q(3, 3, 60_000)).await.unwrap();
    let short = Predictions {
        oof_rows: vec![0, 1, 2],
        oof: vec![0.0; 3],
        test: vec![],
    };
    let out = s
        .complete(
            "w1",
            &[
                done_p(ids[0], 1, None),
                done_p(ids[1], 1, Some(short)),
                done_p(ids[2], 7, None),
            ],
        )
        .await
        .unwrap();
    assert_eq!(out.accepted, [ids[0]]);
    assert_eq!(
        out.invalid,
        [(
            ids[1],
            1,
            format!(
                "predictions for job {} have 3 out-of-fold rows, the job expects 4",
                ids[1]
            )
        )]
    );
    assert_eq!(
        out.stale,
        [(
            ids[2],
            7,
            format!(
                "job {} is at attempt 1, the report is for attempt 7",
                ids[2]
            )
        )]
    );
    assert_eq!(s.get_job(ids[0]).await.unwrap().state, JobState::Succeeded);
    assert_eq!(s.get_job(ids[1]).await.unwrap().state, JobState::Running);
    assert_eq!(s.get_predictions(ids[1]).await.unwrap(), None);
    assert_eq!(s.get_job(ids[2]).await.unwrap().state, JobState::Running);
}

/// Issue 11: a job completed twice in one batch is judged in order, as if its reports came one
/// after another: after an accepted copy the next is stale; after a stale or invalid copy a
/// valid one is accepted. Each job's predictions are stored once.
pub async fn repeated_completions_in_a_batch_are_judged_in_order(s: Arc<dyn Store>) {
    let mut fits = named_job("fits");
    fits.expect_oof_rows = 2;
    let ids = s
        .submit(batch(vec![named_job("a"), named_job("b"), fits]))
        .await
        .unwrap()
        .ids;
    s.lease(&lease_q(3, 3, 60_000)).await.unwrap();
    let rows = |n: usize| Predictions {
        oof_rows: (0..n as u32).collect(),
        oof: vec![0.5; n],
        test: vec![],
    };
    let out = s
        .complete(
            "w1",
            &[
                done_p(ids[0], 1, None),
                done_p(ids[0], 1, None),
                done_p(ids[1], 7, None),
                done_p(ids[1], 1, None),
                done_p(ids[2], 1, Some(rows(3))),
                done_p(ids[2], 1, Some(rows(2))),
            ],
        )
        .await
        .unwrap();
    let accepted: HashSet<JobId> = out.accepted.iter().copied().collect();
    assert_eq!(accepted, ids.iter().copied().collect(), "{out:?}");
    assert_eq!(out.accepted.len(), 3, "{out:?}");
    let stale: Vec<(JobId, u32)> = out.stale.iter().map(|r| (r.0, r.1)).collect();
    assert_eq!(stale.len(), 2, "{out:?}");
    assert!(
        stale.contains(&(ids[0], 1)) && stale.contains(&(ids[1], 7)),
        "{out:?}"
    );
    let again = out.stale.iter().find(|r| r.0 == ids[0]).unwrap();
    assert!(again.2.contains("succeeded"), "{again:?}");
    assert_eq!(out.invalid.len(), 1, "{out:?}");
    assert_eq!((out.invalid[0].0, out.invalid[0].1), (ids[2], 1));
    assert_eq!(s.get_predictions(ids[2]).await.unwrap(), Some(rows(2)));
    for id in ids {
        assert_eq!(s.get_job(id).await.unwrap().state, JobState::Succeeded);
    }
}

pub async fn dependencies_unblock_fail_and_revive(s: Arc<dyn Store>) {
    let mut child = named_job("child");
    child.depends_on_batch = vec![0, 1];
    let ids = s
        .submit(batch(vec![named_job("a"), named_job("b"), child]))
        .await
        .unwrap()
        .ids;
    let mut grandchild = named_job("grandchild");
    grandchild.depends_on = vec![ids[2]];
    let gc = s.submit(batch(vec![grandchild])).await.unwrap().ids[0];
    assert_eq!(
        s.get_job(ids[2]).await.unwrap().spec.depends_on,
        vec![ids[0], ids[1]]
    );
    assert_eq!(s.get_job(gc).await.unwrap().state, JobState::Blocked);

    // Both parents finish in one batch: the child must be counted down twice, once queued.
    s.lease(&lease_q(2, 2, 60_000)).await.unwrap();
    s.complete("w1", &[done_p(ids[0], 1, None), done_p(ids[1], 1, None)])
        .await
        .unwrap();
    assert_eq!(s.get_job(ids[2]).await.unwrap().state, JobState::Queued);

    let leased = s.lease(&lease_q(1, 1, 60_000)).await.unwrap();
    assert_eq!(leased[0].id, ids[2]);
    let f = Failure {
        worker_id: "w1".into(),
        id: ids[2],
        attempt: 1,
        reason: "out of memory".into(),
        retryable: false,
        handback: false,
    };
    assert_eq!(s.fail(&f).await.unwrap().state, JobState::Failed);
    let g = s.get_job(gc).await.unwrap();
    assert_eq!(g.state, JobState::Failed);
    assert_eq!(
        g.error.unwrap(),
        format!("dependency {} failed: out of memory", ids[2])
    );

    // Retrying the child revives the grandchild it took down, blocked behind it.
    assert_eq!(s.retry(&[ids[2]]).await.unwrap(), vec![ids[2], gc]);
    assert_eq!(s.get_job(ids[2]).await.unwrap().state, JobState::Queued);
    assert_eq!(s.get_job(gc).await.unwrap().state, JobState::Blocked);
    assert!(matches!(
        s.retry(&[ids[0]]).await,
        Err(Error::FailedPrecondition(_))
    ));

    // Cancelling the child cancels the grandchild, naming the cause.
    let out = s.cancel(&[ids[2]]).await.unwrap();
    assert_eq!(out.cancelled, vec![ids[2]]);
    let g = s.get_job(gc).await.unwrap();
    assert_eq!(g.state, JobState::Cancelled);
    assert_eq!(
        g.error.unwrap(),
        format!("dependency {} was cancelled", ids[2])
    );
    assert!(matches!(
        s.cancel(&[ids[0], 999]).await,
        Err(Error::NotFound(_))
    ));
}

pub async fn expired_leases_requeue_then_fail_and_fence_old_attempts(s: Arc<dyn Store>) {
    let flaky = NewJob {
        crash_limit: 2,
        ..named_job("flaky")
    };
    let id = s.submit(batch(vec![flaky])).await.unwrap().ids[0];

    // A zero TTL expires at once.
    let first = s.lease(&lease_q(1, 1, 0)).await.unwrap();
    assert_eq!(first[0].attempt, 1);
    let reaped = s.reap_expired().await.unwrap();
    assert_eq!(reaped.requeued, vec![id]);
    let j = s.get_job(id).await.unwrap();
    assert_eq!(
        (j.state, j.crashes, j.worker_id),
        (JobState::Queued, 1, None)
    );

    let second = s.lease(&lease_q(1, 1, 60_000)).await.unwrap();
    assert_eq!(second[0].attempt, 2);
    // The first worker comes back: its reports no longer count.
    let stale = s.complete("w1", &[done_p(id, 1, None)]).await.unwrap();
    assert!(stale.accepted.is_empty());
    assert_eq!(
        stale.stale[0].2,
        format!("job {id} is at attempt 2, the report is for attempt 1")
    );
    let hb = [ActiveJob {
        id,
        attempt: 1,
        progress: None,
    }];
    let stop = s.heartbeat("w1", &hb, 60_000).await.unwrap();
    assert_eq!(
        stop,
        vec![StopJob {
            id,
            attempt: 1,
            reason: StopReason::LeaseLost
        }]
    );
    let hb = [ActiveJob {
        id,
        attempt: 2,
        progress: Some("50%".into()),
    }];
    assert!(s.heartbeat("w1", &hb, 0).await.unwrap().is_empty());
    assert_eq!(
        s.get_job(id).await.unwrap().progress.as_deref(),
        Some("50%")
    );

    // The renewal above used a zero TTL, so this lease expires too: the crash limit is hit.
    let reaped = s.reap_expired().await.unwrap();
    assert_eq!(reaped.failed, vec![id]);
    let j = s.get_job(id).await.unwrap();
    assert_eq!(j.state, JobState::Failed);
    assert!(
        j.error.unwrap().starts_with("worker lost 2 times"),
        "crash limit error"
    );
    let f = Failure {
        worker_id: "w1".into(),
        id,
        attempt: 2,
        reason: "late".into(),
        retryable: true,
        handback: false,
    };
    assert!(matches!(s.fail(&f).await, Err(Error::Stale(_))));
}

pub async fn idempotent_submit_and_unknown_dependencies(s: Arc<dyn Store>) {
    let keyed = |hash: &str| SubmitBatch {
        idempotency_key: Some("k1".into()),
        body_hash: hash.into(),
        jobs: vec![named_job("a"), named_job("b")],
    };
    let first = s.submit(keyed("h1")).await.unwrap();
    assert!(!first.deduplicated);
    let again = s.submit(keyed("h1")).await.unwrap();
    assert_eq!(
        again,
        SubmitOutcome {
            ids: first.ids.clone(),
            deduplicated: true
        }
    );
    assert!(matches!(
        s.submit(keyed("h2")).await,
        Err(Error::AlreadyExists(_))
    ));
    let mut orphan = named_job("orphan");
    orphan.depends_on = vec![12345];
    let err = s.submit(batch(vec![orphan])).await.unwrap_err();
    assert_eq!(err.to_string(), "dependency 12345 does not exist");
    assert_eq!(
        s.count_states(&JobFilter::default()).await.unwrap().total(),
        2
    );
}

macro_rules! suite {
    ($backend:ident) => {
        mod $backend {
            use super::*;

            async fn store() -> db::TestStore {
                db::$backend(db::fast_policy()).await
            }

            macro_rules! case {
                ($name:ident) => {
                    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                    async fn $name() {
                        let t = store().await;
                        register_workers(&*t.store).await;
                        super::$name(t.store.clone()).await;
                    }
                };
            }

            case!(submit_lease_complete);
            case!(priorities_and_aging);
            case!(resource_matching);
            case!(claims_fit_capacity);
            case!(dependencies_unblock_and_cascade);
            case!(fencing_rejects_stale_reports);
            case!(heartbeats_renew_leases);
            case!(retries_back_off_then_fail);
            case!(crash_limit_fails_the_job);
            case!(cancellation);
            case!(idempotent_submit);
            case!(predictions_are_checked_and_stored);
            case!(predictions_are_read_in_bulk);
            case!(handback_keeps_counters);
            case!(listing_paging_and_workers);
            case!(retention_purges_only_old_finished);
            case!(concurrent_claims_take_each_job_once);
            case!(datasets_and_folds_are_stored_once);
            case!(artifacts_are_fenced_replaced_and_purged);
            case!(workers_act_only_as_themselves);
            case!(tokens_are_stored_and_revoked);
            case!(claims_match_registered_kinds);
            case!(submit_lease_complete_round_trip);
            case!(complete_answers_each_item);
            case!(repeated_completions_in_a_batch_are_judged_in_order);
            case!(dependencies_unblock_fail_and_revive);
            case!(expired_leases_requeue_then_fail_and_fence_old_attempts);
            case!(idempotent_submit_and_unknown_dependencies);

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn aging_prevents_starvation() {
                let mut p = db::fast_policy();
                p.aging_ms_per_priority = 20;
                let t = db::$backend(p).await;
                register_workers(&*t.store).await;
                super::aging_prevents_starvation(t.store.clone()).await;
            }
        }
    };
}

suite!(postgres);
suite!(sqlite);
