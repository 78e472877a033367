//! `stackhive bench chaos` (issue 16): the scheduler under fire, bounded in time. A fresh
//! PostgreSQL database, a coordinator process on a fixed port and `--workers` worker
//! processes; `--jobs` short shell jobs that print their attempt number. While they run, a
//! random worker is killed with SIGKILL every `--kill-every-ms` (and replaced), the coordinator
//! is killed and restarted `--coordinator-restarts` times, and PostgreSQL is restarted
//! `--pg-restarts` times with `--pg-restart-cmd`, each at a share of the jobs finished. At the end, read from the database: every job
//! is terminal, and every succeeded job's result comes from its final attempt (the attempt it
//! printed is the one the job records); the counts are printed and any breach fails the run.
//!
//! Must not: pass when a job is lost, stuck or succeeded from a stale attempt.

use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use rand::{Rng as _, SeedableRng as _};
use serde::Serialize;
use sqlx::Row as _;
use stackhive_coordinator::model::JobState;
use stackhive_proto::v1 as pb;
use tokio::process::{Child, Command};

use super::db::BenchDb;
use super::Backend;
use crate::client::Api;

#[derive(Args, Debug, Clone)]
pub struct ChaosArgs {
    #[arg(long, default_value_t = 10_000)]
    pub jobs: u32,
    #[arg(long, default_value_t = 8)]
    pub workers: u32,
    /// Slots per worker.
    #[arg(long, default_value_t = 4)]
    pub slots: u32,
    /// A worker is SIGKILLed (and replaced) this often.
    #[arg(long, default_value_t = 3000)]
    pub kill_every_ms: u64,
    #[arg(long, default_value_t = 3)]
    pub coordinator_restarts: u32,
    #[arg(long, default_value_t = 1)]
    pub pg_restarts: u32,
    /// How PostgreSQL is restarted (run with `sh -c`); without it, PostgreSQL is left alone.
    #[arg(long, env = "STACKHIVE_CHAOS_PG_RESTART")]
    pub pg_restart_cmd: Option<String>,
    /// The run fails if the jobs are not all terminal by then.
    #[arg(long, default_value_t = 1200)]
    pub deadline_s: u64,
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    #[arg(
        long,
        env = "STACKHIVE_BENCH_PG_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/postgres"
    )]
    pub pg_url: String,
    #[arg(long, env = "STACKHIVE_WORKER_BIN", value_name = "PATH")]
    pub worker_bin: Option<PathBuf>,
}

#[derive(Serialize, Debug, Default)]
struct Counts {
    jobs: u64,
    succeeded: u64,
    failed: u64,
    cancelled: u64,
    not_terminal: u64,
    attempts: u64,
    max_attempt: u64,
    result_from_stale_attempt: u64,
    workers_killed: u32,
    coordinator_restarts: u32,
    pg_restarts: u32,
    seconds: f64,
}

/// Leases short enough that a killed worker's jobs come back within seconds.
const FAST: &[&str] = &[
    "--lease-ttl-ms",
    "2000",
    "--heartbeat-interval-ms",
    "400",
    "--reap-interval-ms",
    "300",
    "--backoff-base-ms",
    "100",
    "--backoff-max-ms",
    "1000",
];

fn spawn_coordinator(dir: &Path, db: &str, port: u16, n: u32) -> anyhow::Result<Child> {
    let exe = std::env::current_exe().context("cannot find the stackhive binary")?;
    let log = std::fs::File::create(dir.join(format!("coordinator-{n}.log")))?;
    Command::new(exe)
        .args(["coordinator", "--listen", &format!("127.0.0.1:{port}")])
        .args(["--db", db])
        .args(FAST)
        .stdout(Stdio::null())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .context("cannot start the coordinator")
}

fn spawn_worker(bin: &Path, dir: &Path, url: &str, n: u32, slots: u32) -> anyhow::Result<Child> {
    let log = std::fs::File::create(dir.join(format!("worker-{n}.log")))?;
    Command::new(bin)
        .current_dir(dir)
        .args(["--coordinator", url, "--name", &format!("chaos-{n}")])
        .args(["--slots", &slots.to_string(), "--lease-wait-ms", "1000"])
        .stdout(log.try_clone()?)
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .context("cannot start a worker")
}

async fn kill(child: &mut Child) {
    let _ = child.start_kill();
    let _ = child.wait().await;
}

pub async fn run(json: bool, args: &ChaosArgs) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let worker_bin = crate::local::worker_binary(args.worker_bin.as_deref())?;
    let dir = tempfile::Builder::new()
        .prefix("stackhive-chaos-")
        .tempdir()
        .context("cannot create a temporary directory")?;
    let db = BenchDb::create(Backend::Postgres, &args.pg_url).await?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let mut coordinator = spawn_coordinator(dir.path(), &db.url, port, 0)?;
    let api = connect(&url).await?;

    let mut counts = Counts::default();
    let specs: Vec<pb::JobSpec> = (0..args.jobs)
        .map(|i| pb::JobSpec {
            kind: "shell".into(),
            payload_json: serde_json::json!({
                "command": format!("sleep 0.0{}; echo $STACKHIVE_ATTEMPT", i % 5)
            })
            .to_string(),
            experiment: "chaos".into(),
            // Kills every few seconds: a job may die with several workers before it finishes.
            max_attempts: 50,
            crash_limit: 50,
            ..Default::default()
        })
        .collect();
    for chunk in specs.chunks(5_000) {
        let key = format!("chaos-{}", uuid::Uuid::new_v4());
        crate::submit::submit(&api, chunk.to_vec(), &key).await?;
    }
    drop(api);

    let mut workers: Vec<Child> = Vec::new();
    let mut spawned = 0;
    for _ in 0..args.workers {
        spawned += 1;
        workers.push(spawn_worker(
            &worker_bin,
            dir.path(),
            &url,
            spawned,
            args.slots,
        )?);
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(args.seed);
    let deadline = started + Duration::from_secs(args.deadline_s);
    // The restarts are spread over the run by progress (the share of jobs finished), so they
    // land mid-run at any size: the coordinator's at 1/(n+1), 2/(n+1), …; PostgreSQL's between.
    let restart_at: Vec<f64> = (1..=args.coordinator_restarts)
        .map(|i| f64::from(i) / f64::from(args.coordinator_restarts + 1))
        .collect();
    let pg_at: Vec<f64> = (1..=args.pg_restarts)
        .map(|i| (f64::from(i) - 0.4) / f64::from(args.pg_restarts + 1))
        .collect();
    let mut last_kill = Instant::now();
    let mut done = 0.0;
    loop {
        if let Some(left) = remaining(&db.url).await? {
            if left == 0 {
                break;
            }
            done = 1.0 - left as f64 / f64::from(args.jobs.max(1));
        }
        if Instant::now() > deadline {
            break;
        }
        if last_kill.elapsed() >= Duration::from_millis(args.kill_every_ms) && !workers.is_empty() {
            let i = rng.random_range(0..workers.len());
            kill(&mut workers[i]).await;
            counts.workers_killed += 1;
            spawned += 1;
            workers[i] = spawn_worker(&worker_bin, dir.path(), &url, spawned, args.slots)?;
            last_kill = Instant::now();
        }
        if restart_at
            .get(counts.coordinator_restarts as usize)
            .is_some_and(|&at| done >= at)
        {
            kill(&mut coordinator).await;
            counts.coordinator_restarts += 1;
            tokio::time::sleep(Duration::from_millis(500)).await;
            coordinator =
                spawn_coordinator(dir.path(), &db.url, port, counts.coordinator_restarts)?;
        }
        if let Some(cmd) = &args.pg_restart_cmd {
            if pg_at
                .get(counts.pg_restarts as usize)
                .is_some_and(|&at| done >= at)
            {
                let status = Command::new("sh").args(["-c", cmd]).status().await?;
                if !status.success() {
                    bail!("restarting PostgreSQL with {cmd:?} failed: {status}");
                }
                counts.pg_restarts += 1;
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    for w in &mut workers {
        kill(w).await;
    }
    kill(&mut coordinator).await;
    verify(&db.url, &mut counts).await?;
    counts.seconds = started.elapsed().as_secs_f64();
    if json {
        crate::output::print_json(&serde_json::to_value(&counts)?);
    } else {
        outln!(
            "{} jobs, {} workers: {} succeeded, {} failed, {} cancelled, {} not terminal",
            counts.jobs,
            args.workers,
            counts.succeeded,
            counts.failed,
            counts.cancelled,
            counts.not_terminal
        );
        outln!(
            "{} attempts (at most {} for one job); {} results from a stale attempt",
            counts.attempts,
            counts.max_attempt,
            counts.result_from_stale_attempt
        );
        outln!(
            "{} workers SIGKILLed, the coordinator restarted {} times, PostgreSQL {} times, in {:.0} s",
            counts.workers_killed,
            counts.coordinator_restarts,
            counts.pg_restarts,
            counts.seconds
        );
    }
    let ok = counts.not_terminal == 0
        && counts.result_from_stale_attempt == 0
        && counts.jobs == u64::from(args.jobs);
    if !ok {
        let kept = dir.keep();
        eprintln!("chaos run failed; logs are kept in {}", kept.display());
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// The coordinator may be down (it is restarted): connect with retries.
async fn connect(url: &str) -> anyhow::Result<Api> {
    let mut last = None;
    for _ in 0..100 {
        match Api::connect(url).await {
            Ok(api) => return Ok(api),
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(anyhow::anyhow!("the coordinator did not come up: {last:?}"))
}

/// Jobs not yet terminal, straight from the database; `None` while it is restarting.
async fn remaining(db: &str) -> anyhow::Result<Option<i64>> {
    use sqlx::Connection as _;
    let Ok(mut c) = sqlx::PgConnection::connect(db).await else {
        return Ok(None);
    };
    let unfinished = [JobState::Blocked, JobState::Queued, JobState::Running].map(JobState::code);
    let n = sqlx::query_scalar::<_, i64>("SELECT count(*) FROM jobs WHERE state = ANY($1)")
        .bind(&unfinished[..])
        .fetch_one(&mut c)
        .await
        .ok();
    let _ = c.close().await;
    Ok(n)
}

/// The final tally, from the database: states, attempts, and the attempt each succeeded
/// job's accepted result printed against the attempt the job records.
async fn verify(db: &str, counts: &mut Counts) -> anyhow::Result<()> {
    use sqlx::Connection as _;
    let mut c = sqlx::PgConnection::connect(db)
        .await
        .context("cannot read the chaos database")?;
    let rows = sqlx::query("SELECT state, attempt, result FROM jobs")
        .fetch_all(&mut c)
        .await?;
    for r in rows {
        let state = JobState::from_code(r.try_get::<i16, _>("state")?.into());
        let attempt = r.try_get::<i32, _>("attempt")? as u64;
        counts.jobs += 1;
        counts.attempts += attempt;
        counts.max_attempt = counts.max_attempt.max(attempt);
        match state {
            Some(JobState::Succeeded) => {
                counts.succeeded += 1;
                let result: Option<String> = r.try_get("result")?;
                let printed = result
                    .and_then(|s| serde_json::from_str::<serde_json::Value>(&s).ok())
                    .and_then(|v| v["stdout_tail"].as_str().map(|t| t.trim().to_string()));
                if printed.as_deref() != Some(attempt.to_string().as_str()) {
                    counts.result_from_stale_attempt += 1;
                }
            }
            Some(JobState::Failed) => counts.failed += 1,
            Some(JobState::Cancelled) => counts.cancelled += 1,
            _ => counts.not_terminal += 1,
        }
    }
    Ok(())
}
