//! `stackhive bench …`: benchmarks that print figures (never pass/fail). `queue` pushes no-op
//! jobs end to end through a real coordinator, real gRPC and real workers, on PostgreSQL and on
//! SQLite, and measures claim latency over a large finished history; `artifacts` moves a
//! checkpoint-sized artifact into the database and back; `stack` trains level-2 models on an
//! ISIC-sized matrix, side by side with the same models in Python; `ensemble` combines tens of
//! thousands of models streamed, beside the same work read at once.

mod artifacts;
mod chaos;
pub mod cluster;
mod db;
mod ensemble;
mod history;
mod predictions;
mod queue;
mod stack;
mod stack_data;
mod stack_python;

use std::path::PathBuf;

use clap::{Args, Subcommand, ValueEnum};

#[derive(Args, Debug)]
pub struct BenchArgs {
    #[command(subcommand)]
    pub which: Bench,
}

#[derive(Subcommand, Debug)]
pub enum Bench {
    /// Jobs/s and submit-to-start latency of no-op jobs through gRPC, per store.
    Queue(QueueArgs),
    /// MB/s of a checkpoint-sized artifact uploaded and fetched back, per store.
    Artifacts(ArtifactBenchArgs),
    /// Writing, storing and reading back thousands of ISIC-sized prediction sets, per store.
    Predictions(PredictionBenchArgs),
    /// Level-2 models per hour, per type and for a random sweep, beside the same models in Python.
    Stack(stack::StackBenchArgs),
    /// The meta-ensemble over tens of thousands of models: streamed versus read at once.
    Ensemble(ensemble::EnsembleBenchArgs),
    /// Workers SIGKILLed, the coordinator and PostgreSQL restarted under a queue of short jobs;
    /// fails unless every job ends and every result is its final attempt's.
    Chaos(chaos::ChaosArgs),
    /// A coordinator, worker processes and a few thousand small jobs with dependencies on this
    /// machine (what `stackhive demo` ran before it ran the mission).
    Cluster(ClusterArgs),
}

#[derive(Args, Debug, Clone)]
pub struct ClusterArgs {
    /// Jobs to submit.
    #[arg(long, env = "STACKHIVE_CLUSTER_JOBS", default_value_t = 3000,
          value_parser = clap::value_parser!(u32).range(2..=200_000))]
    pub jobs: u32,

    /// Worker processes to start.
    #[arg(long, env = "STACKHIVE_CLUSTER_WORKERS", default_value_t = 3,
          value_parser = clap::value_parser!(u32).range(1..=64))]
    pub workers: u32,

    /// CPU slots of each worker (jobs it runs at once).
    #[arg(long, env = "STACKHIVE_CLUSTER_SLOTS", default_value_t = 8,
          value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub slots: u32,

    /// Job store of the embedded coordinator (default: SQLite in a temporary directory).
    #[arg(long, env = "STACKHIVE_CLUSTER_DB", value_name = "URL")]
    pub db: Option<String>,

    /// The worker binary (default: `stackhive-worker` next to this executable).
    #[arg(long, env = "STACKHIVE_WORKER_BIN", value_name = "PATH")]
    pub worker_bin: Option<PathBuf>,
}

/// The stores a bench measures, each on a fresh database of its own.
#[derive(Args, Debug, Clone)]
pub struct StoreArgs {
    /// Stores to measure.
    #[arg(
        long,
        env = "STACKHIVE_BENCH_DB",
        value_delimiter = ',',
        default_value = "postgres,sqlite"
    )]
    pub db: Vec<Backend>,

    /// Admin URL of a PostgreSQL server; the bench creates and drops its own database there.
    #[arg(
        long,
        env = "STACKHIVE_BENCH_PG_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/postgres"
    )]
    pub pg_url: String,
}

#[derive(Args, Debug, Clone)]
pub struct ArtifactBenchArgs {
    #[command(flatten)]
    pub stores: StoreArgs,

    /// Size of the artifact in MiB (a B7 checkpoint is ~260).
    #[arg(long, env = "STACKHIVE_BENCH_MB", default_value_t = 256)]
    pub mb: u64,

    /// Upload-and-fetch rounds (each replaces the previous upload).
    #[arg(long, env = "STACKHIVE_BENCH_ROUNDS", default_value_t = 3)]
    pub rounds: u32,
}

#[derive(Args, Debug, Clone)]
pub struct PredictionBenchArgs {
    #[command(flatten)]
    pub stores: StoreArgs,

    /// Prediction sets written and read back (ISIC-sized: 33,126 out-of-fold and 10,982 test
    /// values each).
    #[arg(long, env = "STACKHIVE_BENCH_MODELS", default_value_t = 5_000)]
    pub models: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Backend {
    Postgres,
    Sqlite,
}

#[derive(Args, Debug, Clone)]
pub struct QueueArgs {
    #[command(flatten)]
    pub stores: StoreArgs,

    /// No-op jobs pushed end to end.
    #[arg(long, env = "STACKHIVE_BENCH_JOBS", default_value_t = 100_000)]
    pub jobs: u64,

    /// Jobs per submit request.
    #[arg(long, env = "STACKHIVE_BENCH_BATCH", default_value_t = 5_000)]
    pub batch: u32,

    /// Concurrent submitting clients.
    #[arg(long, env = "STACKHIVE_BENCH_SUBMITTERS", default_value_t = 2)]
    pub submitters: u32,

    /// Workers (each with its own gRPC connection, lease loop and reporter).
    #[arg(long, env = "STACKHIVE_BENCH_WORKERS", default_value_t = 3)]
    pub workers: u32,

    /// CPU slots per worker (a no-op job takes one).
    #[arg(long, env = "STACKHIVE_BENCH_SLOTS", default_value_t = 4096)]
    pub slots: u32,

    /// Jobs per lease call.
    #[arg(long, env = "STACKHIVE_BENCH_LEASE_BATCH", default_value_t = 2048)]
    pub lease_batch: u32,

    /// Finished jobs seeded before measuring claim latency (0 skips that part).
    #[arg(long, env = "STACKHIVE_BENCH_HISTORY", default_value_t = 1_000_000)]
    pub history: u64,

    /// Lease calls timed for the claim-latency figures.
    #[arg(long, env = "STACKHIVE_BENCH_CLAIMS", default_value_t = 300)]
    pub claims: u32,

    /// Transport and authentication to measure, each in a run of its own on a fresh database:
    /// `off` (plaintext, no tokens) and `on` (TLS, bearer tokens on every call).
    #[arg(
        long,
        env = "STACKHIVE_BENCH_SECURITY",
        value_delimiter = ',',
        default_value = "off"
    )]
    pub security: Vec<Security>,

    /// ISIC-sized prediction sets stored before measuring, each count in a run of its own on a
    /// fresh database: `0,5000` shows whether a full predictions table slows the queue.
    #[arg(
        long,
        env = "STACKHIVE_BENCH_PREDICTIONS",
        value_delimiter = ',',
        default_value = "0"
    )]
    pub predictions: Vec<u64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Security {
    Off,
    On,
}

pub async fn run(json: bool, args: &BenchArgs) -> anyhow::Result<std::process::ExitCode> {
    match &args.which {
        Bench::Queue(a) => queue::run(json, a).await?,
        Bench::Artifacts(a) => artifacts::run(json, a).await?,
        Bench::Predictions(a) => predictions::run(json, a).await?,
        Bench::Stack(a) => stack::run(json, a).await?,
        Bench::Ensemble(a) => ensemble::run(json, a).await?,
        Bench::Chaos(a) => return chaos::run(json, a).await,
        Bench::Cluster(a) => return cluster::run(json, a).await,
    }
    Ok(std::process::ExitCode::SUCCESS)
}

/// p-th percentile (0..=100) of sorted values.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (p / 100.0 * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}
