//! `stackhive bench queue`: N no-op jobs submitted in batches by concurrent clients and pushed
//! end to end — gRPC submit, claim, run, gRPC complete — by M workers, against an in-process
//! coordinator on a fresh database. Prints jobs/s and submit-to-start latency per store, then
//! the claim latency over a large finished history; with `--security off,on`, once plaintext
//! without tokens and once over TLS with a bearer token on every call, side by side.

use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use serde::Serialize;
use stackhive_coordinator::model::{JobFilter, JobState, Policy};
use stackhive_coordinator::CoordinatorConfig;
use stackhive_proto::connect::{AuthChannel as Channel, ClientOptions};
use stackhive_proto::v1 as pb;
use stackhive_proto::v1::job_service_client::JobServiceClient;

use super::db::BenchDb;
use super::{history, percentile, Backend, QueueArgs, Security};

#[derive(Serialize, Debug)]
struct Figures {
    stored_predictions: u64,
    backend: &'static str,
    security: &'static str,
    jobs: u64,
    workers: u32,
    submit_batch: u32,
    wall_s: f64,
    jobs_per_s: f64,
    submit_jobs_per_s: f64,
    start_latency_p50_ms: f64,
    start_latency_p99_ms: f64,
    end_to_end_p50_ms: f64,
    end_to_end_p99_ms: f64,
    idle_start_p50_ms: f64,
    idle_start_p99_ms: f64,
    history_rows: u64,
    claim1_p50_ms_before: f64,
    claim1_p99_ms_before: f64,
    claim1_p50_ms_history: f64,
    claim1_p99_ms_history: f64,
    claim100_p50_ms_history: f64,
    claim100_p99_ms_history: f64,
}

pub async fn run(json: bool, args: &QueueArgs) -> anyhow::Result<()> {
    for &backend in &args.stores.db {
        for &security in &args.security {
            for &stored in &args.predictions {
                let f = one(backend, security, stored, args)
                    .await
                    .with_context(|| format!("{backend:?} bench ({security:?}) failed"))?;
                if json {
                    println!("{}", serde_json::to_string(&f)?);
                } else {
                    print_human(&f);
                }
            }
        }
    }
    Ok(())
}

#[derive(Parser)]
struct WorkerArgs {
    #[command(flatten)]
    config: stackhive_worker::WorkerConfig,
}

async fn one(
    backend: Backend,
    security: Security,
    stored: u64,
    a: &QueueArgs,
) -> anyhow::Result<Figures> {
    let db = BenchDb::create(backend, &a.stores.pg_url).await?;
    if stored > 0 {
        eprintln!("   storing {stored} ISIC-sized prediction sets first…");
        let store = stackhive_coordinator::store::open(&db.url, Policy::default(), 4).await?;
        super::predictions::seed(&store, stored, 4).await?;
    }
    let figures = measure(backend, security, a, &db).await.map(|mut f| {
        f.stored_predictions = stored;
        f
    });
    db.drop_db().await?;
    figures
}

/// How the bench's clients and workers reach a coordinator run with `security`: the URL, the
/// options of the bench's own client (an admin token: it submits, leases and completes) and
/// the flags of its workers (a worker token).
struct Access {
    url: String,
    client: ClientOptions,
    worker_flags: Vec<String>,
    _files: Option<tempfile::TempDir>,
}

/// Certificates and tokens for a secured run; the coordinator's settings are filled in.
async fn secure(
    security: Security,
    db_url: &str,
    port: u16,
    config: &mut CoordinatorConfig,
) -> anyhow::Result<Access> {
    if security == Security::Off {
        return Ok(Access {
            url: format!("http://127.0.0.1:{port}"),
            client: ClientOptions::default(),
            worker_flags: Vec::new(),
            _files: None,
        });
    }
    let dir = tempfile::tempdir()?;
    crate::tls::generate("bench CA", &["localhost".into()])?.write(dir.path())?;
    config.tls_cert = Some(dir.path().join("server.pem"));
    config.tls_key = Some(dir.path().join("server.key"));
    config.auth = stackhive_coordinator::config::AuthMode::Required;
    let store = stackhive_coordinator::store::open(db_url, config.policy(), 2).await?;
    let (_, admin) = stackhive_coordinator::api::tokens::create(&*store, "bench", "admin").await?;
    let (_, worker) =
        stackhive_coordinator::api::tokens::create(&*store, "bench-workers", "worker").await?;
    let ca = dir.path().join("ca.pem");
    Ok(Access {
        url: format!("https://localhost:{port}"),
        client: ClientOptions {
            token: Some(admin),
            tls_ca: Some(ca.clone()),
            ..Default::default()
        },
        worker_flags: vec![
            format!("--token={worker}"),
            format!("--tls-ca={}", ca.display()),
        ],
        _files: Some(dir),
    })
}

async fn measure(
    backend: Backend,
    security: Security,
    a: &QueueArgs,
    db: &BenchDb,
) -> anyhow::Result<Figures> {
    eprintln!(
        "== {backend:?}, security {security:?}: {} no-op jobs, {} workers, batches of {}",
        a.jobs, a.workers, a.batch
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let mut config = CoordinatorConfig::with_db(db.url.clone());
    config.db_max_connections = 8;
    let access = secure(
        security,
        &db.url,
        listener.local_addr()?.port(),
        &mut config,
    )
    .await?;
    let url = access.url.clone();
    let (stop_coord, coord_rx) = tokio::sync::oneshot::channel::<()>();
    let coordinator = tokio::spawn(stackhive_coordinator::run(config, listener, async {
        let _ = coord_rx.await;
    }));
    let channel = connect(&url, &access.client).await?;
    let mut jobs = JobServiceClient::new(channel.clone())
        .max_decoding_message_size(64 << 20)
        .max_encoding_message_size(64 << 20);

    let (stop_workers, workers_rx) = tokio::sync::watch::channel(false);
    let mut workers = Vec::new();
    for i in 0..a.workers {
        let flags = [
            "bench-worker".to_string(),
            format!("--coordinator={url}"),
            format!("--name=bench-{i}"),
            format!("--slots={}", a.slots),
            format!("--lease-batch={}", a.lease_batch),
            "--report-batch=5000".to_string(),
            "--lease-wait-ms=1000".to_string(),
            "--drain-timeout-s=5".to_string(),
        ];
        let w = WorkerArgs::try_parse_from(flags.into_iter().chain(access.worker_flags.clone()))?;
        let mut rx = workers_rx.clone();
        workers.push(tokio::spawn(stackhive_worker::run(w.config, async move {
            let _ = rx.wait_for(|stop| *stop).await;
        })));
    }
    if let Err(e) = wait_workers(&mut jobs, a.workers as usize).await {
        // A worker that refused its settings has already ended: its error says why.
        for w in workers.into_iter().filter(|w| w.is_finished()) {
            w.await?.context("bench worker")?;
        }
        return Err(e);
    }

    let started = Instant::now();
    let started_ms = stackhive_coordinator::model::now_ms();
    let per = a.jobs / a.submitters as u64;
    let mut submitters = Vec::new();
    for s in 0..a.submitters {
        let mut c = jobs.clone();
        let n = if s == a.submitters - 1 {
            a.jobs - per * (a.submitters as u64 - 1)
        } else {
            per
        };
        let batch = a.batch as u64;
        submitters.push(tokio::spawn(async move {
            let mut left = n;
            let mut k = 0;
            while left > 0 {
                let size = left.min(batch);
                let specs = (0..size)
                    .map(|_| pb::JobSpec {
                        kind: "noop".into(),
                        experiment: "bench".into(),
                        ..Default::default()
                    })
                    .collect();
                c.submit(pb::SubmitRequest {
                    idempotency_key: format!("bench-{s}-{k}"),
                    jobs: specs,
                })
                .await
                .context("submit")?;
                left -= size;
                k += 1;
            }
            anyhow::Ok(())
        }));
    }
    for s in submitters {
        s.await??;
    }
    let submit_s = started.elapsed().as_secs_f64();
    loop {
        // Only unfinished jobs are counted: the database holds nothing but this run's jobs, and
        // counting a whole experiment on every poll would be load of its own.
        let counts = jobs
            .list_jobs(pb::ListJobsRequest {
                states: vec![
                    pb::JobState::Blocked as i32,
                    pb::JobState::Queued as i32,
                    pb::JobState::Running as i32,
                ],
                page_size: 1,
                ..Default::default()
            })
            .await?
            .into_inner()
            .counts
            .unwrap_or_default();
        if counts.blocked + counts.queued + counts.running == 0 {
            break;
        }
        // Polling is only for knowing when to stop: the figures come from the store's own
        // timestamps, so a slow poll costs no accuracy and adds no load worth measuring.
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let done = jobs
        .list_jobs(pb::ListJobsRequest {
            experiment: "bench".into(),
            page_size: 1,
            ..Default::default()
        })
        .await?
        .into_inner()
        .counts
        .unwrap_or_default();
    anyhow::ensure!(
        done.succeeded == a.jobs,
        "expected {} bench jobs to succeed, found {done:?}",
        a.jobs
    );
    // Light load: one job at a time into idle workers, so the figure is the wake-up path
    // (NOTIFY or the in-process signal, then a claim), not queueing behind 100k jobs.
    let idle_jobs = 200;
    for k in 0..idle_jobs {
        let spec = pb::JobSpec {
            kind: "noop".into(),
            experiment: "idle".into(),
            ..Default::default()
        };
        jobs.submit(pb::SubmitRequest {
            idempotency_key: format!("idle-{k}"),
            jobs: vec![spec],
        })
        .await?;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    loop {
        let c = jobs
            .list_jobs(pb::ListJobsRequest {
                experiment: "idle".into(),
                page_size: 1,
                ..Default::default()
            })
            .await?
            .into_inner()
            .counts
            .unwrap_or_default();
        if c.succeeded == idle_jobs {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = stop_workers.send(true);
    for w in workers {
        w.await?.context("bench worker")?;
    }

    let (start_lat, e2e_lat, last_finish) = latencies(&db.url, "bench").await?;
    let (idle_lat, _, _) = latencies(&db.url, "idle").await?;
    let wall_s = (last_finish - started_ms) as f64 / 1e3;
    let mut f = Figures {
        stored_predictions: 0,
        backend: match backend {
            Backend::Postgres => "postgres",
            Backend::Sqlite => "sqlite",
        },
        security: match security {
            Security::Off => "plaintext, no tokens",
            Security::On => "TLS + tokens",
        },
        jobs: a.jobs,
        workers: a.workers,
        submit_batch: a.batch,
        wall_s,
        jobs_per_s: a.jobs as f64 / wall_s,
        submit_jobs_per_s: a.jobs as f64 / submit_s,
        start_latency_p50_ms: percentile(&start_lat, 50.0),
        start_latency_p99_ms: percentile(&start_lat, 99.0),
        end_to_end_p50_ms: percentile(&e2e_lat, 50.0),
        end_to_end_p99_ms: percentile(&e2e_lat, 99.0),
        idle_start_p50_ms: percentile(&idle_lat, 50.0),
        idle_start_p99_ms: percentile(&idle_lat, 99.0),
        history_rows: 0,
        claim1_p50_ms_before: f64::NAN,
        claim1_p99_ms_before: f64::NAN,
        claim1_p50_ms_history: f64::NAN,
        claim1_p99_ms_history: f64::NAN,
        claim100_p50_ms_history: f64::NAN,
        claim100_p99_ms_history: f64::NAN,
    };

    if a.history > 0 {
        (f.claim1_p50_ms_before, f.claim1_p99_ms_before) =
            history::claim_latency(channel.clone(), &mut jobs, a.claims, 1).await?;
        eprintln!("   seeding {} finished jobs…", a.history);
        let t = Instant::now();
        history::seed(backend, &db.url, a.history).await?;
        eprintln!("   seeded in {:.1} s", t.elapsed().as_secs_f64());
        f.history_rows = a.history + a.jobs;
        (f.claim1_p50_ms_history, f.claim1_p99_ms_history) =
            history::claim_latency(channel.clone(), &mut jobs, a.claims, 1).await?;
        (f.claim100_p50_ms_history, f.claim100_p99_ms_history) =
            history::claim_latency(channel.clone(), &mut jobs, a.claims / 3, 100).await?;
    }
    drop(jobs);
    drop(channel);
    let _ = stop_coord.send(());
    coordinator.await?.context("bench coordinator")?;
    Ok(f)
}

pub(super) async fn connect(url: &str, options: &ClientOptions) -> anyhow::Result<Channel> {
    let ep = options.endpoint(url)?.tcp_nodelay(true);
    let credentials = options.credentials()?;
    for _ in 0..100 {
        if let Ok(c) = ep.connect().await {
            return Ok(tonic::service::interceptor::InterceptedService::new(
                c.into(),
                credentials,
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    anyhow::bail!("bench coordinator at {url} did not come up")
}

async fn wait_workers(jobs: &mut JobServiceClient<Channel>, n: usize) -> anyhow::Result<()> {
    for _ in 0..200 {
        let w = jobs
            .list_workers(pb::ListWorkersRequest {
                include_dead: false,
            })
            .await?
            .into_inner();
        if w.workers.len() >= n {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    anyhow::bail!("bench workers did not register")
}

/// Submit-to-start and submit-to-finish latencies (ms, sorted), read from the store's own
/// timestamps (one clock for both ends).
/// Also returns the last finish time (epoch ms): with the store on this machine, its clock is
/// this machine's clock.
async fn latencies(url: &str, experiment: &str) -> anyhow::Result<(Vec<f64>, Vec<f64>, i64)> {
    let store = stackhive_coordinator::store::open(url, Policy::default(), 2).await?;
    let mut filter = JobFilter {
        experiment: Some(experiment.into()),
        states: vec![JobState::Succeeded],
        limit: 20_000,
        ..Default::default()
    };
    let (mut start, mut e2e, mut last_finish) = (Vec::new(), Vec::new(), 0);
    loop {
        let page = store.list_jobs(&filter).await?;
        let Some(last) = page.last() else { break };
        filter.after_id = Some(last.id);
        for j in &page {
            start.push((j.started_at.unwrap_or(j.created_at) - j.created_at) as f64);
            e2e.push((j.finished_at.unwrap_or(j.created_at) - j.created_at) as f64);
            last_finish = last_finish.max(j.finished_at.unwrap_or(0));
        }
    }
    start.sort_by(f64::total_cmp);
    e2e.sort_by(f64::total_cmp);
    Ok((start, e2e, last_finish))
}

fn print_human(f: &Figures) {
    println!(
        "{} ({}) — {} no-op jobs, {} workers, submit batches of {}, {} stored prediction sets",
        f.backend, f.security, f.jobs, f.workers, f.submit_batch, f.stored_predictions
    );
    println!(
        "  end to end        {:>10.0} jobs/s   ({:.2} s wall)",
        f.jobs_per_s, f.wall_s
    );
    println!("  submit only       {:>10.0} jobs/s", f.submit_jobs_per_s);
    println!(
        "  submit → start    p50 {:>8.1} ms   p99 {:>8.1} ms",
        f.start_latency_p50_ms, f.start_latency_p99_ms
    );
    println!(
        "  submit → finish   p50 {:>8.1} ms   p99 {:>8.1} ms",
        f.end_to_end_p50_ms, f.end_to_end_p99_ms
    );
    println!(
        "  submit → start, one job at a time into idle workers   p50 {:>6.1} ms   p99 {:>6.1} ms",
        f.idle_start_p50_ms, f.idle_start_p99_ms
    );
    if f.history_rows > 0 {
        println!(
            "  claim of 1 job, {} finished rows   p50 {:>6.2} ms   p99 {:>6.2} ms",
            f.jobs, f.claim1_p50_ms_before, f.claim1_p99_ms_before
        );
        println!(
            "  claim of 1 job, {} finished rows   p50 {:>6.2} ms   p99 {:>6.2} ms",
            f.history_rows, f.claim1_p50_ms_history, f.claim1_p99_ms_history
        );
        println!(
            "  claim of 100 jobs, {} finished rows p50 {:>6.2} ms   p99 {:>6.2} ms",
            f.history_rows, f.claim100_p50_ms_history, f.claim100_p99_ms_history
        );
    }
}
