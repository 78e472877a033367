//! The job store: one interface, two implementations (PostgreSQL for clusters, SQLite as the
//! embedded single-machine default) that pass one shared test suite. All scheduler state lives
//! here; the gRPC layer validates input and maps errors but holds no state of its own.
//!
//! Every method is one short transaction. Nothing holds a transaction or a connection while a
//! job runs.

use std::sync::Arc;

use crate::domain::model::*;
use crate::error::{Error, Result};

mod artifacts;
mod codec;
mod datasets;
pub mod features;
mod imports;
mod jobs;
pub mod postgres;
mod predictions;
mod reads;
pub(crate) mod sql;
pub mod sqlite;
mod sweeps;
mod tokens;
mod workers;

pub use artifacts::ArtifactStore;
pub use codec::{decode_f32s, decode_u32s, encode_f32s, encode_u32s};
pub use datasets::DatasetStore;
pub use features::FeatureStore;
pub use jobs::JobStore;
pub use predictions::PredictionStore;
pub use sweeps::SweepStore;
pub use tokens::TokenStore;
pub(crate) use workers::not_registered;
pub use workers::WorkerStore;

/// The job states as `jobs.state` stores them, for SQL text (`format!("… WHERE state =
/// {QUEUED}")`): a state is never written as a bare number in a statement.
pub(crate) mod codes {
    use crate::domain::model::JobState;

    pub const BLOCKED: i16 = JobState::Blocked as i16;
    pub const QUEUED: i16 = JobState::Queued as i16;
    pub const RUNNING: i16 = JobState::Running as i16;
    pub const SUCCEEDED: i16 = JobState::Succeeded as i16;
    pub const FAILED: i16 = JobState::Failed as i16;
    pub const CANCELLED: i16 = JobState::Cancelled as i16;
}

/// `Policy::sort_key` as SQL, for the statements that order a job in the database: the queue
/// order key of a job entering the queue at `enqueued_at` with `priority` (SQL expressions),
/// `aging` the placeholder bound to `policy.aging_ms_per_priority`. Smaller runs first.
pub(crate) fn sort_key_sql(enqueued_at: &str, priority: &str, aging: &str) -> String {
    format!("({enqueued_at} - CAST({priority} AS BIGINT) * {aging})")
}

/// Largest row of artifact bytes: reads stream one row at a time.
pub const CHUNK_BYTES: usize = 1 << 20;

/// Semantics every implementation must keep (the shared suite in `tests/store_suite.rs` checks
/// them on both backends), one trait per concern; `Store` is all of them. Both backends
/// implement them once, in `sql.rs`, over the SQL each backend module holds.
pub trait Store:
    JobStore
    + WorkerStore
    + DatasetStore
    + ArtifactStore
    + TokenStore
    + PredictionStore
    + FeatureStore
    + SweepStore
    + Send
    + Sync
    + 'static
{
    /// "postgres" or "sqlite".
    fn backend(&self) -> &'static str;

    /// Database connections open and idle, for the metrics.
    fn pool_use(&self) -> (u32, usize);
}

/// Opens the store named by a URL: `postgres://…` or `sqlite://path` (created on first use).
/// Migrations are applied before it returns.
pub async fn open(url: &str, policy: Policy, max_connections: u32) -> Result<Arc<dyn Store>> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Arc::new(
            postgres::PgStore::connect(url, policy, max_connections).await?,
        ))
    } else if url.starts_with("sqlite:") {
        Ok(Arc::new(sqlite::SqliteStore::open(url, policy).await?))
    } else {
        Err(Error::Config(format!(
            "unsupported database url {url:?}: expected postgres://… or sqlite://path"
        )))
    }
}

/// The fence of artifact changes: only the worker holding the running attempt of a job may
/// commit or delete its artifacts. `found` is the job's (state code, attempt, worker), `None`
/// when it does not exist.
pub(crate) fn check_artifact_fence(
    job: JobId,
    attempt: u32,
    worker: &str,
    name: &str,
    found: Option<(i64, i64, Option<String>)>,
) -> Result<()> {
    let Some((code, current, holder)) = found else {
        return Err(Error::NotFound(format!("job {job} does not exist")));
    };
    let state = JobState::from_code(code)
        .ok_or_else(|| Error::Config(format!("job {job} has unknown state code {code}")))?;
    let now = FenceState {
        state,
        attempt: current as u32,
        worker: holder.as_deref(),
    };
    match fence_breach(job, attempt, worker, now) {
        None => Ok(()),
        Some(why) => Err(Error::Stale(format!("artifact {name}: {why}"))),
    }
}

/// `commit_artifact`'s check that every chunk of the upload arrived.
pub(crate) fn check_artifact_bytes(rec: &ArtifactRecord, stored: i64) -> Result<()> {
    if stored != rec.size as i64 {
        return Err(Error::Config(format!(
            "upload {} of artifact {} holds {stored} bytes in the database, expected {}",
            rec.upload_id, rec.name, rec.size
        )));
    }
    Ok(())
}

/// Maps a unique violation to `AlreadyExists`, everything else to a database error (both
/// backends report the violation through sqlx's error kind).
pub(crate) fn map_unique(e: sqlx::Error, what: impl FnOnce() -> String) -> Error {
    match &e {
        sqlx::Error::Database(db) if db.kind() == sqlx::error::ErrorKind::UniqueViolation => {
            Error::AlreadyExists(what())
        }
        _ => Error::Database(e),
    }
}
