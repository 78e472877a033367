//! `stackhive bench artifacts`: a checkpoint-sized file uploaded as a job's artifact and
//! fetched back through an in-process coordinator on a fresh database, per store, with the
//! worker's own upload and fetch code (hash, chunked gRPC, database chunks, verified fetch).
//! Prints MB/s both ways; a B7 checkpoint is ~260 MB, its resume state ~800 MB.

use std::time::Instant;

use anyhow::Context;
use serde::Serialize;
use stackhive_coordinator::CoordinatorConfig;
use stackhive_proto::v1 as pb;
use stackhive_proto::v1::job_service_client::JobServiceClient;
use stackhive_proto::v1::worker_service_client::WorkerServiceClient;
use stackhive_worker::artifacts;

use super::db::BenchDb;
use super::queue::connect;
use super::{ArtifactBenchArgs, Backend};

#[derive(Serialize, Debug)]
struct Figures {
    backend: &'static str,
    mb: u64,
    rounds: u32,
    upload_mb_per_s: f64,
    fetch_mb_per_s: f64,
}

pub async fn run(json: bool, args: &ArtifactBenchArgs) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("checkpoint.bin");
    write_incompressible(&file, args.mb << 20)?;
    for &backend in &args.stores.db {
        let db = BenchDb::create(backend, &args.stores.pg_url).await?;
        let f = measure(backend, args, &db, &file, dir.path()).await;
        db.drop_db().await?;
        let f = f.with_context(|| format!("{backend:?} bench failed"))?;
        if json {
            println!("{}", serde_json::to_string(&f)?);
        } else {
            println!(
                "{:<8} {} MB x{}: upload {:>7.1} MB/s   fetch {:>7.1} MB/s",
                f.backend, f.mb, f.rounds, f.upload_mb_per_s, f.fetch_mb_per_s
            );
        }
    }
    Ok(())
}

/// Weights do not compress; neither does this.
fn write_incompressible(path: &std::path::Path, bytes: u64) -> anyhow::Result<()> {
    use rand::{RngCore, SeedableRng};
    use std::io::Write;
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut buf = vec![0u8; 1 << 20];
    let mut left = bytes;
    while left > 0 {
        rng.fill_bytes(&mut buf);
        let n = left.min(buf.len() as u64) as usize;
        out.write_all(&buf[..n])?;
        left -= n as u64;
    }
    out.flush()?;
    Ok(())
}

async fn measure(
    backend: Backend,
    a: &ArtifactBenchArgs,
    db: &BenchDb,
    file: &std::path::Path,
    scratch: &std::path::Path,
) -> anyhow::Result<Figures> {
    eprintln!(
        "== {backend:?}: a {} MB artifact, {} rounds",
        a.mb, a.rounds
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let coordinator = tokio::spawn(stackhive_coordinator::run(
        CoordinatorConfig::with_db(db.url.clone()),
        listener,
        async {
            let _ = stop_rx.await;
        },
    ));
    let channel = connect(&url, &Default::default()).await?;
    // One running job whose attempt may upload.
    let id = JobServiceClient::new(channel.clone())
        .submit(pb::SubmitRequest {
            idempotency_key: String::new(),
            jobs: vec![pb::JobSpec {
                kind: "noop".into(),
                payload_json: "{}".into(),
                ..Default::default()
            }],
        })
        .await?
        .into_inner()
        .job_ids[0];
    let (attempt, who) = lease(&channel, id).await?;
    let mut up = 0.0;
    let mut down = 0.0;
    for round in 0..a.rounds {
        let t = Instant::now();
        artifacts::upload(channel.clone(), &who, id, attempt, "model.ot", file).await?;
        up += t.elapsed().as_secs_f64();
        let t = Instant::now();
        let cache = scratch.join(format!("fetched-{backend:?}-{round}"));
        let got = artifacts::fetch_cached(channel.clone(), id, "model.ot", &cache).await?;
        down += t.elapsed().as_secs_f64();
        std::fs::remove_dir_all(got.parent().expect("cached in a folder"))?;
    }
    drop(channel);
    let _ = stop.send(());
    coordinator.await?.context("bench coordinator")?;
    let mb = (a.mb * a.rounds as u64) as f64;
    Ok(Figures {
        backend: match backend {
            Backend::Postgres => "postgres",
            Backend::Sqlite => "sqlite",
        },
        mb: a.mb,
        rounds: a.rounds,
        upload_mb_per_s: mb / up,
        fetch_mb_per_s: mb / down,
    })
}

/// Registers a worker and leases job `id`: the attempt and the worker's identity.
async fn lease(
    channel: &stackhive_proto::connect::AuthChannel,
    id: i64,
) -> anyhow::Result<(u32, stackhive_worker::Identity)> {
    let mut w = WorkerServiceClient::new(channel.clone());
    let one = || pb::Resources {
        cpu_slots: 1,
        ..Default::default()
    };
    let me = w
        .register(pb::RegisterRequest {
            name: "bench".into(),
            kinds: vec!["noop".into()],
            resources: Some(one()),
            ..Default::default()
        })
        .await?
        .into_inner();
    let who = stackhive_worker::Identity::new(&me.worker_id, &me.worker_key);
    let jobs = w
        .lease(pb::LeaseRequest {
            worker_id: me.worker_id,
            worker_key: me.worker_key,
            free: Some(one()),
            max_jobs: 1,
            wait_ms: 5_000,
        })
        .await?
        .into_inner()
        .jobs;
    jobs.into_iter()
        .find(|j| j.id == id)
        .map(|j| (j.attempt, who))
        .context("the bench job was not leased")
}
