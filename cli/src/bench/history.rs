//! Claim latency over a large finished history: seeds N finished jobs straight into the store's
//! tables (as months of use would leave them), queues fresh work, and times single `Lease`
//! calls through gRPC. The queue index is partial (queued rows only), so history should not
//! show in these figures; this measures that it does not.

use std::time::Instant;

use anyhow::Context;
use stackhive_proto::connect::AuthChannel as Channel;
use stackhive_proto::v1 as pb;
use stackhive_proto::v1::worker_service_client::WorkerServiceClient;

use super::{percentile, Backend};

/// Inserts `n` succeeded no-op jobs finished a day ago, in chunks.
pub async fn seed(backend: Backend, url: &str, n: u64) -> anyhow::Result<()> {
    const CHUNK: u64 = 250_000;
    let mut left = n;
    match backend {
        Backend::Postgres => {
            use sqlx::ConnectOptions;
            let opts: sqlx::postgres::PgConnectOptions = url.parse()?;
            // Seeding statements are slow on purpose; keep sqlx from warning about them.
            let mut c = opts
                .log_slow_statements(log::LevelFilter::Off, Default::default())
                .connect()
                .await?;
            while left > 0 {
                let k = left.min(CHUNK);
                sqlx::query(
                    "INSERT INTO jobs (kind, experiment, sort_key, state, max_attempts, crash_limit,
                        attempt, worker_id, created_at, started_at, finished_at, updated_at)
                     SELECT 'noop', 'history', 0, 4, 3, 3, 1, 'seed', t, t, t, t
                     FROM generate_series(1, $1) g, (SELECT sh_now_ms() - 86400000 AS t) x",
                )
                .bind(k as i64)
                .execute(&mut c)
                .await
                .context("seeding finished jobs")?;
                left -= k;
            }
            sqlx::query("VACUUM ANALYZE jobs").execute(&mut c).await?;
        }
        Backend::Sqlite => {
            use sqlx::ConnectOptions;
            let opts: sqlx::sqlite::SqliteConnectOptions = url.parse()?;
            let mut c = opts
                .log_slow_statements(log::LevelFilter::Off, Default::default())
                .connect()
                .await?;
            let t = stackhive_coordinator::model::now_ms() - 86_400_000;
            while left > 0 {
                let k = left.min(CHUNK);
                sqlx::query(
                    "WITH RECURSIVE g(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM g WHERE x < ?1)
                     INSERT INTO jobs (kind, experiment, sort_key, state, max_attempts, crash_limit,
                        attempt, worker_id, created_at, started_at, finished_at, updated_at)
                     SELECT 'noop', 'history', 0, 4, 3, 3, 1, 'seed', ?2, ?2, ?2, ?2 FROM g",
                )
                .bind(k as i64)
                .bind(t)
                .execute(&mut c)
                .await
                .context("seeding finished jobs")?;
                left -= k;
            }
            sqlx::query("ANALYZE").execute(&mut c).await?;
        }
    }
    Ok(())
}

/// Times `claims` Lease calls of `max_jobs` each, one at a time; returns (p50, p99) in ms.
pub async fn claim_latency(
    channel: Channel,
    jobs: &mut stackhive_proto::v1::job_service_client::JobServiceClient<Channel>,
    claims: u32,
    max_jobs: u32,
) -> anyhow::Result<(f64, f64)> {
    let total = claims as usize * max_jobs as usize;
    let mut left = total;
    while left > 0 {
        let k = left.min(5_000);
        let batch = (0..k)
            .map(|_| pb::JobSpec {
                kind: "noop".into(),
                experiment: "claims".into(),
                ..Default::default()
            })
            .collect();
        jobs.submit(pb::SubmitRequest {
            idempotency_key: String::new(),
            jobs: batch,
        })
        .await?;
        left -= k;
    }
    let mut w = WorkerServiceClient::new(channel);
    let free = pb::Resources {
        cpu_slots: max_jobs,
        ..Default::default()
    };
    let me = w
        .register(pb::RegisterRequest {
            name: "bench-claims".into(),
            kinds: vec!["noop".into()],
            resources: Some(free.clone()),
            ..Default::default()
        })
        .await?
        .into_inner();
    let (id, key) = (me.worker_id, me.worker_key);
    let mut times = Vec::with_capacity(claims as usize);
    for _ in 0..claims {
        let t = Instant::now();
        let got = w
            .lease(pb::LeaseRequest {
                worker_id: id.clone(),
                worker_key: key.clone(),
                free: Some(free.clone()),
                max_jobs,
                wait_ms: 0,
            })
            .await?
            .into_inner()
            .jobs;
        times.push(t.elapsed().as_secs_f64() * 1e3);
        anyhow::ensure!(
            got.len() == max_jobs as usize,
            "lease returned {} jobs, expected {max_jobs}",
            got.len()
        );
        let completions = got
            .iter()
            .map(|j| pb::Completion {
                id: j.id,
                attempt: j.attempt,
                ..Default::default()
            })
            .collect();
        w.complete(pb::CompleteRequest {
            worker_id: id.clone(),
            worker_key: key.clone(),
            completions,
        })
        .await?;
    }
    times.sort_by(f64::total_cmp);
    Ok((percentile(&times, 50.0), percentile(&times, 99.0)))
}
