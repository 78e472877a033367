//! `stackhive bench predictions` (issue 12, item 6): ISIC-sized prediction sets (33,126
//! out-of-fold and 10,982 test values, as a level-2 model reports them) written into a fresh
//! store, their size on disk, and all of them read back through `StreamPredictions` (what an
//! ensemble does) and with the store's bulk read. `seed` is shared with `bench queue
//! --predictions`, which measures the queue beside a full predictions table.

use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use serde::Serialize;
use stackhive_coordinator::model::{Policy, Predictions};
use stackhive_coordinator::store::Store;
use stackhive_coordinator::CoordinatorConfig;
use stackhive_proto::connect::ClientOptions;
use stackhive_proto::v1 as pb;
use stackhive_proto::v1::job_service_client::JobServiceClient;

use super::db::BenchDb;
use super::queue::connect;
use super::{Backend, PredictionBenchArgs};

/// ISIC 2020: validating train rows and test rows.
pub const OOF_ROWS: usize = 33_126;
pub const TEST_ROWS: usize = 10_982;
const EXPERIMENT: &str = "stored-predictions";

#[derive(Serialize, Debug)]
struct Figures {
    backend: &'static str,
    models: u64,
    mb_per_model: f64,
    write_models_per_s: f64,
    write_mb_per_s: f64,
    disk_mb: f64,
    stream_seconds: f64,
    stream_models_per_s: f64,
    stream_mb_per_s: f64,
    store_read_seconds: f64,
}

fn payload_mb(models: u64) -> f64 {
    models as f64 * (OOF_ROWS * 8 + TEST_ROWS * 4) as f64 / 1e6
}

/// Stores `n` prediction sets as finished models of one experiment, `tasks` writers at once;
/// returns the ids.
pub async fn seed(store: &Arc<dyn Store>, n: u64, tasks: u64) -> anyhow::Result<Vec<i64>> {
    let mut handles = Vec::new();
    for t in 0..tasks {
        let store = store.clone();
        handles.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            let mut i = t;
            while i < n {
                // Values that do not compress, as real predictions do not.
                let mut x = (i as u32).wrapping_mul(2_654_435_761) | 1;
                let mut next = move || {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    x as f32 / u32::MAX as f32
                };
                let p = Predictions {
                    oof_rows: (0..OOF_ROWS as u32).collect(),
                    oof: (0..OOF_ROWS).map(|_| next()).collect(),
                    test: (0..TEST_ROWS).map(|_| next()).collect(),
                };
                let id = store
                    .import_predictions(EXPERIMENT, &format!("model-{i}"), "{}", &p)
                    .await?;
                ids.push(id);
                i += tasks;
            }
            anyhow::Ok(ids)
        }));
    }
    let mut ids = Vec::new();
    for h in handles {
        ids.extend(h.await??);
    }
    ids.sort_unstable();
    Ok(ids)
}

async fn disk_mb(backend: Backend, db: &BenchDb) -> anyhow::Result<f64> {
    Ok(match backend {
        Backend::Postgres => {
            use sqlx::Connection;
            let mut c = sqlx::PgConnection::connect(&db.url).await?;
            let bytes: i64 = sqlx::query_scalar("SELECT pg_total_relation_size('predictions')")
                .fetch_one(&mut c)
                .await?;
            bytes as f64 / 1e6
        }
        Backend::Sqlite => {
            let path = db.url.trim_start_matches("sqlite://");
            let size = |p: String| std::fs::metadata(p).map_or(0, |m| m.len());
            (size(path.to_string()) + size(format!("{path}-wal"))) as f64 / 1e6
        }
    })
}

pub async fn run(json: bool, args: &PredictionBenchArgs) -> anyhow::Result<()> {
    for &backend in &args.stores.db {
        let db = BenchDb::create(backend, &args.stores.pg_url).await?;
        let f = measure(backend, args, &db).await;
        db.drop_db().await?;
        let f = f.with_context(|| format!("{backend:?} bench failed"))?;
        if json {
            println!("{}", serde_json::to_string(&f)?);
        } else {
            println!(
                "{} — {} models of {} + {} predictions ({:.2} MB each)",
                f.backend, f.models, OOF_ROWS, TEST_ROWS, f.mb_per_model
            );
            println!(
                "  write                {:>8.1} models/s  {:>7.1} MB/s   on disk {:.0} MB",
                f.write_models_per_s, f.write_mb_per_s, f.disk_mb
            );
            println!(
                "  read all, gRPC       {:>8.1} models/s  {:>7.1} MB/s   ({:.1} s for all)",
                f.stream_models_per_s, f.stream_mb_per_s, f.stream_seconds
            );
            println!("  read all, store only {:>8.1} s", f.store_read_seconds);
        }
    }
    Ok(())
}

async fn measure(
    backend: Backend,
    args: &PredictionBenchArgs,
    db: &BenchDb,
) -> anyhow::Result<Figures> {
    let store = stackhive_coordinator::store::open(&db.url, Policy::default(), 8).await?;
    let t = Instant::now();
    let ids = seed(&store, args.models, 4).await?;
    let write_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let mut read = 0;
    for chunk in ids.chunks(1024) {
        read += store.get_predictions_many(chunk).await?.len();
    }
    let store_read_seconds = t.elapsed().as_secs_f64();
    anyhow::ensure!(read == ids.len(), "read {read} of {} sets back", ids.len());

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://127.0.0.1:{}", listener.local_addr()?.port());
    let (stop, rx) = tokio::sync::oneshot::channel::<()>();
    let coordinator = tokio::spawn(stackhive_coordinator::run(
        CoordinatorConfig::with_db(db.url.clone()),
        listener,
        async {
            let _ = rx.await;
        },
    ));
    let channel = connect(&url, &ClientOptions::default()).await?;
    let mut client = JobServiceClient::new(channel).max_decoding_message_size(64 << 20);
    let t = Instant::now();
    let mut stream = client
        .stream_predictions(pb::StreamPredictionsRequest {
            experiment: EXPERIMENT.into(),
            ..Default::default()
        })
        .await?
        .into_inner();
    let mut got = 0u64;
    while let Some(m) = stream.message().await? {
        let p = m.predictions.unwrap_or_default();
        anyhow::ensure!(
            p.oof.len() == OOF_ROWS && p.test.len() == TEST_ROWS,
            "short set"
        );
        got += 1;
    }
    let stream_seconds = t.elapsed().as_secs_f64();
    anyhow::ensure!(got == args.models, "streamed {got} of {} sets", args.models);
    let _ = stop.send(());
    coordinator.await?.context("bench coordinator")?;
    Ok(Figures {
        backend: match backend {
            Backend::Postgres => "postgres",
            Backend::Sqlite => "sqlite",
        },
        models: args.models,
        mb_per_model: payload_mb(1),
        write_models_per_s: args.models as f64 / write_s,
        write_mb_per_s: payload_mb(args.models) / write_s,
        disk_mb: disk_mb(backend, db).await?,
        stream_seconds,
        stream_models_per_s: args.models as f64 / stream_seconds,
        stream_mb_per_s: payload_mb(args.models) / stream_seconds,
        store_read_seconds,
    })
}
