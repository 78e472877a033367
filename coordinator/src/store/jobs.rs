//! The queue's contract: jobs, their leases and their reports. Both backends implement it once
//! (`sql.rs`) over their own SQL (`postgres/`, `sqlite/`: `submit`, `run`, `admin`).

use std::sync::Arc;

use tokio::sync::Notify;

use crate::domain::model::*;
use crate::error::Result;

/// Jobs and their leases: the queue, its rules and its reports (`store::jobs`).
#[async_trait::async_trait]
pub trait JobStore: Send + Sync {
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
    /// that were failed or cancelled because of them. Returns every re-queued or re-blocked id. A
    /// job in another state is `FailedPrecondition`, unknown ids `NotFound`; nothing changes then.
    async fn retry(&self, ids: &[JobId]) -> Result<Vec<JobId>>;

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
    /// - otherwise `Failed` with the reason; blocked dependents fail too ("dependency 7 failed:
    ///   …").
    async fn fail(&self, f: &Failure) -> Result<FailOutcome>;

    /// Running jobs whose lease expired: `crashes + 1`; `Cancelled` if cancel was requested,
    /// `Failed` ("worker lost N times") once crashes reach `crash_limit`, otherwise back to
    /// `Queued` in their old place. Safe to run from several coordinators at once.
    async fn reap_expired(&self) -> Result<ReapOutcome>;

    /// Deletes up to `limit` finished jobs that finished before `before` and have no unfinished
    /// dependents (retention). Returns how many were deleted.
    async fn purge_finished(&self, before: Millis, limit: u32) -> Result<u64>;
}
