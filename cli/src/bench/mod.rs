//! `stackhive bench …`: benchmarks that print figures (never pass/fail). `queue` pushes no-op
//! jobs end to end through a real coordinator, real gRPC and real workers, on PostgreSQL and on
//! SQLite, and measures claim latency over a large finished history; `artifacts` moves a
//! checkpoint-sized artifact into the database and back.

mod artifacts;
mod db;
mod history;
mod queue;

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
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Security {
    Off,
    On,
}

pub async fn run(json: bool, args: &BenchArgs) -> anyhow::Result<()> {
    match &args.which {
        Bench::Queue(a) => queue::run(json, a).await,
        Bench::Artifacts(a) => artifacts::run(json, a).await,
    }
}

/// p-th percentile (0..=100) of sorted values.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (p / 100.0 * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}
