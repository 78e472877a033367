//! The job store: one interface, two implementations (PostgreSQL for clusters, SQLite as the
//! embedded single-machine default) that pass one shared test suite. All scheduler state lives
//! here; the gRPC layer validates input and maps errors but holds no state of its own.
//!
//! Every method is one short transaction. Nothing holds a transaction or a connection while a
//! job runs.

use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::Notify;

use crate::error::{Error, Result};
use crate::model::*;

mod artifacts;
mod codec;
mod datasets;
pub mod features;
mod imports;
pub mod postgres;
mod predictions;
pub mod sqlite;
mod sweeps;
mod tokens;

pub use codec::{decode_f32s, decode_u32s, encode_f32s, encode_u32s};

/// Largest row of artifact bytes: reads stream one row at a time.
pub const CHUNK_BYTES: usize = 1 << 20;

/// Semantics every implementation must keep (the shared suite in `tests/store_suite.rs` checks
/// them on both backends).
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// "postgres" or "sqlite".
    fn backend(&self) -> &'static str;

    /// Database connections open and idle, for the metrics.
    fn pool_use(&self) -> (u32, usize);

    /// Woken whenever new work may be claimable (submit, unblock, requeue), including, on
    /// PostgreSQL, by other coordinators through LISTEN/NOTIFY. Long-polls wait on it.
    fn work_notify(&self) -> Arc<Notify>;

    /// Stores all jobs of the batch in one transaction, or none.
    /// - A job with unfinished dependencies is `Blocked`, otherwise `Queued`.
    /// - `depends_on` ids must exist (`InvalidArgument` "dependency 42 does not exist") and must
    ///   not be failed or cancelled (`FailedPrecondition`); `depends_on_batch` indices were
    ///   checked for range and cycles by the caller.
    /// - With an idempotency key already stored: same `body_hash` returns the original ids with
    ///   `deduplicated = true`; a different hash is `AlreadyExists`.
    /// - `max_attempts`/`crash_limit` of 0 take the policy defaults; `cpu_slots` of 0 means 1.
    async fn submit(&self, batch: SubmitBatch) -> Result<SubmitOutcome>;

    /// `NotFound` "job 42 does not exist".
    async fn get_job(&self, id: JobId) -> Result<Job>;

    /// `None` when the job exists but has no stored predictions; `NotFound` when it does not exist.
    async fn get_predictions(&self, id: JobId) -> Result<Option<Predictions>>;

    /// The stored predictions of those of `ids` that have some, in ascending id order, read in
    /// a few statements (an ensemble reads thousands).
    async fn get_predictions_many(&self, ids: &[JobId]) -> Result<Vec<(JobId, Predictions)>>;

    /// Jobs matching the filter in ascending id order.
    async fn list_jobs(&self, filter: &JobFilter) -> Result<Vec<Job>>;

    /// Counts by state of the jobs matching the filter (ignoring `after_id`, `limit` and
    /// `updated_after`).
    async fn count_states(&self, filter: &JobFilter) -> Result<StateCounts>;

    /// Queued/blocked jobs become `Cancelled` at once (their blocked dependents too, with an
    /// error naming the cancelled dependency); running jobs get `cancel_requested` and are
    /// listed as `stopping` (the worker learns it from its next heartbeat); finished jobs are
    /// left alone. Unknown ids are `NotFound` and nothing is changed.
    async fn cancel(&self, ids: &[JobId]) -> Result<CancelOutcome>;

    /// Failed or cancelled jobs go back to `Queued` (or `Blocked` while dependencies are
    /// unfinished) with their failure and crash counts reset, and so do the transitive dependents
    /// that were failed or cancelled because of them. Returns every re-queued or re-blocked id.
    /// A job in another state is `FailedPrecondition`, unknown ids `NotFound`; nothing changes then.
    async fn retry(&self, ids: &[JobId]) -> Result<Vec<JobId>>;

    /// Stores a new worker under `id` with the SHA-256 of its key (`AlreadyExists` when the id
    /// is taken).
    async fn register_worker(&self, id: &str, info: &WorkerInfo, key_hash: &str) -> Result<()>;
    /// A known worker registering again: its description is replaced, it is no longer
    /// deregistered and `last_seen = now`. `NotFound` when the id is unknown.
    async fn renew_worker(&self, id: &str, info: &WorkerInfo) -> Result<()>;
    /// The stored key hash of worker `id`, `None` when the id is unknown.
    async fn worker_key(&self, id: &str) -> Result<Option<String>>;
    /// `NotFound` "worker … is not registered" when the id is unknown.
    async fn deregister_worker(&self, worker_id: &str) -> Result<()>;
    /// Workers with `running_jobs` counted from the jobs table. Deregistered workers and workers
    /// not seen for `policy.worker_dead_after_ms` are left out unless `include_dead`.
    async fn list_workers(&self, include_dead: bool) -> Result<Vec<WorkerRecord>>;

    /// `NotFound` "worker … is not registered" unless `q.worker_id` is registered and not
    /// deregistered; its `last_seen` becomes now whether or not it gets work. Then claims, in
    /// one short transaction, up to `max_jobs` queued jobs with `run_after <= now`, in
    /// queue order (`sort_key`, then id), each of which individually fits `free` (cpu_slots, gpus,
    /// gpu_mem_mb per GPU when the job needs GPUs, and every job tag among the worker's tags),
    /// taking the longest prefix of that order whose summed cpu_slots and gpus fit `free`.
    /// Each claimed job: `Running`, `attempt + 1`, `worker_id`, `started_at = now`,
    /// `lease_expires_at = now + lease_ttl_ms`. On PostgreSQL concurrent claims skip locked rows.
    async fn lease(&self, q: &LeaseQuery) -> Result<Vec<LeasedJob>>;

    /// `NotFound` unless the worker is registered and not deregistered. Renews
    /// `lease_expires_at = now + lease_ttl_ms` for each running job whose `(id, attempt)`
    /// matches and that is leased to `worker_id`, and stores its progress; updates the
    /// worker's `last_seen`. Returns the jobs the worker must stop: matching ones with
    /// `cancel_requested` (`Cancelled`) and ones that no longer match (`LeaseLost`).
    async fn heartbeat(
        &self,
        worker_id: &str,
        jobs: &[ActiveJob],
        lease_ttl_ms: i64,
    ) -> Result<Vec<StopJob>>;

    /// Marks each running job whose `(id, attempt)` matches and that is leased to `worker_id`
    /// (the fence: `model::fence_breach`) as `Succeeded` with its result and
    /// predictions, then unblocks dependents whose last dependency this was. Non-matching items
    /// are returned as stale and change nothing. If a matching job's predictions do not have
    /// the row counts it expects (`expect_*_rows` when non-zero), the whole call is
    /// `InvalidArgument` and nothing is stored.
    async fn complete(&self, worker_id: &str, items: &[Completion]) -> Result<CompleteOutcome>;

    /// Reports a failed attempt; `Stale` when `(id, attempt, worker_id)` does not match a
    /// running job (`model::fence_breach`).
    /// - `handback`: back to `Queued` at once, keeping its place; no counters change.
    /// - `cancel_requested`: `Cancelled`.
    /// - retryable with `failures + 1 < max_attempts`: `Queued` with `failures + 1` and
    ///   `run_after = now + policy.backoff_ms(failures + 1)`.
    /// - otherwise `Failed` with the reason; blocked dependents fail too ("dependency 7 failed: …").
    async fn fail(&self, f: &Failure) -> Result<FailOutcome>;

    /// Running jobs whose lease expired: `crashes + 1`; `Cancelled` if cancel was requested,
    /// `Failed` ("worker lost N times") once crashes reach `crash_limit`, otherwise back to
    /// `Queued` in their old place. Safe to run from several coordinators at once.
    async fn reap_expired(&self) -> Result<ReapOutcome>;

    /// Records a dataset whose files are stored and verified, under `name`. The content row is
    /// written once per hash; a name already used for other content is `AlreadyExists`.
    /// Returns the record with every name it has.
    async fn register_dataset(&self, rec: &DatasetRecord, name: &str) -> Result<DatasetRecord>;

    /// By hash or by name; `NotFound` otherwise.
    async fn get_dataset(&self, hash_or_name: &str) -> Result<DatasetRecord>;

    async fn list_datasets(&self) -> Result<Vec<DatasetRecord>>;

    /// Stores folds unless folds for the same (dataset, scheme, k, seed) exist; returns the
    /// stored record and whether this call stored it.
    async fn put_folds(&self, rec: &FoldsRecord) -> Result<(FoldsRecord, bool)>;

    async fn get_folds(
        &self,
        dataset_hash: &str,
        scheme: &str,
        k: u32,
        seed: u64,
    ) -> Result<Option<FoldsRecord>>;

    /// Starts an artifact upload for `job` and returns its id. Its chunks stay invisible until
    /// `commit_artifact` names them; `NotFound` when the job does not exist.
    async fn begin_artifact_upload(&self, job: JobId) -> Result<String>;

    /// Stores `data` at byte `start` of upload `upload`, as rows of at most `CHUNK_BYTES`, in
    /// one short transaction, and marks the upload as still in use.
    async fn put_artifact_chunk(&self, upload: &str, start: u64, data: &[u8]) -> Result<()>;

    /// In one transaction: checks that `rec.job_id` is running at `rec.attempt` leased to
    /// `worker` (`Stale` otherwise) and that the upload's chunks add up to `rec.size` bytes, then names upload
    /// `rec.upload_id` as the job's artifact `rec.name` in place of the upload that held that
    /// name before. That upload's bytes are removed after the commit, outside the fenced
    /// transaction (the reaper's purge catches them if that fails). Returns the stored record.
    async fn commit_artifact(&self, rec: &ArtifactRecord, worker: &str) -> Result<ArtifactRecord>;

    /// Removes an upload that will not be committed, with its chunks.
    async fn discard_artifact_upload(&self, upload: &str) -> Result<()>;

    /// The job's artifacts by name (empty when it has none, `NotFound` when the job does not exist).
    async fn list_artifacts(&self, job: JobId) -> Result<Vec<ArtifactRecord>>;

    /// `NotFound` when the job has no artifact of that name.
    async fn get_artifact(&self, job: JobId, name: &str) -> Result<ArtifactRecord>;

    /// Up to `limit` chunks `(start, bytes)` of an upload that start at byte `from` or later, in
    /// byte order.
    async fn artifact_chunks(
        &self,
        upload: &str,
        from: u64,
        limit: u32,
    ) -> Result<Vec<(u64, Vec<u8>)>>;

    /// Removes artifact `name` of `job`, fenced like `commit_artifact` (`Stale` unless the job
    /// is running at `attempt` leased to `worker`), then its bytes as `commit_artifact` does.
    /// False when there was none.
    async fn delete_artifact(
        &self,
        job: JobId,
        attempt: u32,
        worker: &str,
        name: &str,
    ) -> Result<bool>;

    /// Removes uncommitted uploads untouched for `idle_ms` (a coordinator that died mid-upload
    /// leaves them). Returns how many.
    async fn purge_stale_uploads(&self, idle_ms: i64) -> Result<u64>;

    /// Stores a new token (`AlreadyExists` when its id is taken).
    async fn create_token(&self, t: &TokenRecord) -> Result<()>;

    /// The token with this id, revoked or not.
    async fn get_token(&self, id: &str) -> Result<Option<TokenRecord>>;

    /// Tokens by creation time; revoked ones only with `include_revoked`.
    async fn list_tokens(&self, include_revoked: bool) -> Result<Vec<TokenRecord>>;

    /// Sets `revoked_at = now`; false when it was revoked already, `NotFound` when unknown. On
    /// PostgreSQL every coordinator hears of it at once (NOTIFY), see `token_epoch`.
    async fn revoke_token(&self, id: &str) -> Result<bool>;

    /// For caches of verified tokens: `Some(n)` where a store tells every coordinator about
    /// revocations (PostgreSQL), with `n` changing on each revocation or lost notification
    /// connection; `None` where tokens must be looked up on every call (SQLite, where that
    /// costs microseconds).
    fn token_epoch(&self) -> Option<u64>;

    /// Stores predictions made elsewhere as a succeeded job of kind `imported` in `experiment`,
    /// named `name`, with `result`; returns its id.
    async fn import_predictions(
        &self,
        experiment: &str,
        name: &str,
        result: &str,
        p: &Predictions,
    ) -> Result<JobId>;

    /// Stores a new sweep (its `id`, `submitted` and times are set here).
    async fn create_sweep(&self, s: &SweepRecord) -> Result<SweepRecord>;

    /// `NotFound` when there is none.
    async fn get_sweep(&self, id: i64) -> Result<SweepRecord>;

    /// All sweeps, or those in `state`.
    async fn list_sweeps(&self, state: Option<&str>) -> Result<Vec<SweepRecord>>;

    /// Writes `s`'s `submitted`, `n`, `state`, `features` and `error` if its `submitted` is
    /// still `expect_submitted` (compare-and-set); false when another coordinator got there
    /// first.
    async fn update_sweep(&self, s: &SweepRecord, expect_submitted: u64) -> Result<bool>;

    /// Stores a feature set and its matrix bytes in one transaction unless one with its id
    /// exists, and names it `name` (`AlreadyExists` when the name is another set's). Returns the
    /// stored record and whether this call stored the bytes.
    async fn put_feature_set(
        &self,
        rec: &FeatureSetRecord,
        bytes: &[u8],
        name: Option<&str>,
    ) -> Result<(FeatureSetRecord, bool)>;

    /// By id or name; `NotFound` otherwise.
    async fn get_feature_set(&self, id_or_name: &str) -> Result<FeatureSetRecord>;

    async fn list_feature_sets(&self) -> Result<Vec<FeatureSetRecord>>;

    /// Up to `limit` chunks `(start, bytes)` of a set's matrix starting at byte `from` or later.
    async fn feature_set_chunks(
        &self,
        id: &str,
        from: u64,
        limit: u32,
    ) -> Result<Vec<(u64, Vec<u8>)>>;

    /// Deletes up to `limit` finished jobs that finished before `before` and have no unfinished
    /// dependents (retention). Returns how many were deleted.
    async fn purge_finished(&self, before: Millis, limit: u32) -> Result<u64>;
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
