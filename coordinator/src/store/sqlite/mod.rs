//! SQLite job store, the embedded single-machine default: one file, no server.
//!
//! All writes go through ONE connection (a pool of size 1) and each is one short
//! `BEGIN IMMEDIATE` transaction, so writers queue in the pool instead of failing with
//! SQLITE_BUSY or deadlocking on a read-to-write lock upgrade. Reads (get, list, count) use a
//! separate small pool; WAL mode lets them run beside the writer. `synchronous = FULL` makes
//! every commit durable before the call returns: no accepted job may be lost. Times come from
//! the coordinator process clock (`now_ms()`), which is fine with one process per file.
//!
//! Must not: hold a transaction across anything but its own statements, or loop over jobs one
//! statement at a time on the hot paths (submit, lease, heartbeat, complete); those bind lists
//! as JSON text to `json_each` (or multi-row INSERTs) so a batch costs a few statements.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use tokio::sync::Notify;

use super::artifacts::sqlite as artifacts;
use super::datasets::sqlite as datasets;
use super::features::sqlite as features;
use super::imports::sqlite as imports;
use super::sweeps::sqlite as sweeps;
use super::tokens::sqlite as tokens;
use super::Store;
use crate::error::{Error, Result};
use crate::model::*;

mod admin;
pub(crate) mod dialect;
mod rows;
mod run;
mod submit;

/// Connections for get/list/count; WAL readers never wait for the writer.
const READ_CONNECTIONS: u32 = 4;

pub struct SqliteStore {
    /// Exactly one connection: every write transaction runs on it, one after another.
    write: SqlitePool,
    read: SqlitePool,
    policy: Policy,
    notify: Arc<Notify>,
}

impl SqliteStore {
    /// Opens (creating on first use) the database named by `sqlite://path` or
    /// `sqlite:///abs/path`, and applies migrations before returning.
    pub async fn open(url: &str, policy: Policy) -> Result<SqliteStore> {
        let base: SqliteConnectOptions = url.parse().map_err(|e| {
            Error::Config(format!(
                "invalid sqlite url {url:?}: {e}; expected sqlite://path"
            ))
        })?;
        let base = base
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(5))
            .foreign_keys(true)
            // 32 MiB of page cache per connection: the queue and lease indexes stay hot.
            .pragma("cache_size", "-32768");
        let in_memory = url.contains(":memory:") || url.contains("mode=memory");
        if !in_memory {
            create_parent_dir(base.get_filename())?;
        }

        // WAL is a property of the file: set once, by the writer, before any reader connects.
        let write = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            // Keep the one connection (and its prepared statements) for the store's lifetime.
            .idle_timeout(None)
            .max_lifetime(None)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(
                base.clone()
                    .create_if_missing(true)
                    .journal_mode(SqliteJournalMode::Wal),
            )
            .await?;
        sqlx::migrate!("../migrations/sqlite").run(&write).await?;

        // An in-memory database exists only within its connections' shared cache; one pool
        // is simpler and just as fast there.
        let read = if in_memory {
            write.clone()
        } else {
            SqlitePoolOptions::new()
                .max_connections(READ_CONNECTIONS)
                .acquire_timeout(Duration::from_secs(30))
                .connect_with(base.read_only(true))
                .await?
        };
        Ok(SqliteStore {
            write,
            read,
            policy,
            notify: Arc::new(Notify::new()),
        })
    }

    /// Wakes the long-polls of this process (there are no other coordinators on one file).
    fn wake(&self) {
        self.notify.notify_waiters();
    }
}

fn create_parent_dir(file: &Path) -> Result<()> {
    match file.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => std::fs::create_dir_all(dir).map_err(|e| {
            Error::Config(format!(
                "cannot create the database directory {}: {e}",
                dir.display()
            ))
        }),
        _ => Ok(()),
    }
}

#[async_trait]
impl Store for SqliteStore {
    fn backend(&self) -> &'static str {
        "sqlite"
    }

    fn pool_use(&self) -> (u32, usize) {
        (
            self.write.size() + self.read.size(),
            self.write.num_idle() + self.read.num_idle(),
        )
    }

    fn work_notify(&self) -> Arc<Notify> {
        self.notify.clone()
    }

    async fn submit(&self, batch: SubmitBatch) -> Result<SubmitOutcome> {
        let (out, queued) = submit::submit(&self.write, &self.policy, &batch).await?;
        if queued {
            self.wake();
        }
        Ok(out)
    }

    async fn get_job(&self, id: JobId) -> Result<Job> {
        admin::get_job(&self.read, id).await
    }

    async fn get_predictions(&self, id: JobId) -> Result<Option<Predictions>> {
        admin::get_predictions(&self.read, id).await
    }

    async fn get_predictions_many(&self, ids: &[JobId]) -> Result<Vec<(JobId, Predictions)>> {
        super::predictions::sqlite::many(&self.read, ids).await
    }

    async fn list_jobs(&self, filter: &JobFilter) -> Result<Vec<Job>> {
        admin::list_jobs(&self.read, filter).await
    }

    async fn count_states(&self, filter: &JobFilter) -> Result<StateCounts> {
        admin::count_states(&self.read, filter).await
    }

    async fn cancel(&self, ids: &[JobId]) -> Result<CancelOutcome> {
        admin::cancel(&self.write, ids).await
    }

    async fn retry(&self, ids: &[JobId]) -> Result<Vec<JobId>> {
        let (revived, queued) = admin::retry(&self.write, &self.policy, ids).await?;
        if queued {
            self.wake();
        }
        Ok(revived)
    }

    async fn register_worker(&self, id: &str, info: &WorkerInfo, key_hash: &str) -> Result<()> {
        admin::register_worker(&self.write, id, info, key_hash).await
    }

    async fn renew_worker(&self, id: &str, info: &WorkerInfo) -> Result<()> {
        admin::renew_worker(&self.write, id, info).await
    }

    async fn worker_key(&self, id: &str) -> Result<Option<String>> {
        admin::worker_key(&self.read, id).await
    }

    async fn deregister_worker(&self, worker_id: &str) -> Result<()> {
        admin::deregister_worker(&self.write, worker_id).await
    }

    async fn list_workers(&self, include_dead: bool) -> Result<Vec<WorkerRecord>> {
        admin::list_workers(&self.read, &self.policy, include_dead).await
    }

    async fn lease(&self, q: &LeaseQuery) -> Result<Vec<LeasedJob>> {
        run::lease(&self.write, q).await
    }

    async fn heartbeat(
        &self,
        worker_id: &str,
        jobs: &[ActiveJob],
        lease_ttl_ms: i64,
    ) -> Result<Vec<StopJob>> {
        run::heartbeat(&self.write, worker_id, jobs, lease_ttl_ms).await
    }

    async fn complete(&self, worker_id: &str, items: &[Completion]) -> Result<CompleteOutcome> {
        let (out, unblocked) = run::complete(&self.write, &self.policy, worker_id, items).await?;
        if unblocked {
            self.wake();
        }
        Ok(out)
    }

    async fn fail(&self, f: &Failure) -> Result<FailOutcome> {
        let out = run::fail(&self.write, &self.policy, f).await?;
        if out.state == JobState::Queued && out.run_after <= now_ms() {
            self.wake();
        }
        Ok(out)
    }

    async fn reap_expired(&self) -> Result<ReapOutcome> {
        let out = run::reap(&self.write).await?;
        if !out.requeued.is_empty() {
            self.wake();
        }
        Ok(out)
    }

    async fn purge_finished(&self, before: Millis, limit: u32) -> Result<u64> {
        admin::purge(&self.write, before, limit).await
    }

    async fn begin_artifact_upload(&self, job: JobId) -> Result<String> {
        artifacts::begin(&self.write, job).await
    }

    async fn put_artifact_chunk(&self, upload: &str, start: u64, data: &[u8]) -> Result<()> {
        artifacts::put_chunk(&self.write, upload, start, data).await
    }

    async fn commit_artifact(&self, rec: &ArtifactRecord, worker: &str) -> Result<ArtifactRecord> {
        artifacts::commit(&self.write, rec, worker).await
    }

    async fn discard_artifact_upload(&self, upload: &str) -> Result<()> {
        artifacts::discard(&self.write, upload).await
    }

    async fn list_artifacts(&self, job: JobId) -> Result<Vec<ArtifactRecord>> {
        artifacts::list(&self.read, job).await
    }

    async fn get_artifact(&self, job: JobId, name: &str) -> Result<ArtifactRecord> {
        artifacts::get(&self.read, job, name).await
    }

    async fn artifact_chunks(
        &self,
        upload: &str,
        from: u64,
        limit: u32,
    ) -> Result<Vec<(u64, Vec<u8>)>> {
        artifacts::chunks(&self.read, upload, from, limit).await
    }

    async fn delete_artifact(
        &self,
        job: JobId,
        attempt: u32,
        worker: &str,
        name: &str,
    ) -> Result<bool> {
        artifacts::delete(&self.write, job, attempt, worker, name).await
    }

    async fn create_token(&self, t: &TokenRecord) -> Result<()> {
        tokens::create(&self.write, t).await
    }

    async fn get_token(&self, id: &str) -> Result<Option<TokenRecord>> {
        tokens::get(&self.read, id).await
    }

    async fn list_tokens(&self, include_revoked: bool) -> Result<Vec<TokenRecord>> {
        tokens::list(&self.read, include_revoked).await
    }

    async fn revoke_token(&self, id: &str) -> Result<bool> {
        let mut tx = dialect::begin(&self.write).await?;
        let revoked = tokens::revoke(&mut tx, id, now_ms()).await?;
        tx.commit().await?;
        Ok(revoked)
    }

    fn token_epoch(&self) -> Option<u64> {
        None
    }

    async fn import_predictions(
        &self,
        experiment: &str,
        name: &str,
        result: &str,
        p: &Predictions,
    ) -> Result<JobId> {
        let mut tx = dialect::begin(&self.write).await?;
        let id = imports::import(&mut tx, experiment, name, result, p, now_ms()).await?;
        tx.commit().await?;
        Ok(id)
    }

    async fn create_sweep(&self, s: &SweepRecord) -> Result<SweepRecord> {
        let mut rec = s.clone();
        rec.created_at = now_ms();
        sweeps::create(&mut *self.write.acquire().await?, &rec).await
    }

    async fn get_sweep(&self, id: i64) -> Result<SweepRecord> {
        sweeps::get(&mut *self.read.acquire().await?, id).await
    }

    async fn list_sweeps(&self, state: Option<&str>) -> Result<Vec<SweepRecord>> {
        sweeps::list(&mut *self.read.acquire().await?, state).await
    }

    async fn update_sweep(&self, s: &SweepRecord, expect_submitted: u64) -> Result<bool> {
        sweeps::update(
            &mut *self.write.acquire().await?,
            s.id,
            expect_submitted,
            s.submitted,
            s.n,
            &s.state,
            &s.features,
            &s.error,
            now_ms(),
        )
        .await
    }

    async fn put_feature_set(
        &self,
        rec: &FeatureSetRecord,
        bytes: &[u8],
        name: Option<&str>,
    ) -> Result<(FeatureSetRecord, bool)> {
        let mut tx = dialect::begin(&self.write).await?;
        let out = features::put(&mut tx, rec, bytes, name).await?;
        tx.commit().await?;
        Ok(out)
    }

    async fn get_feature_set(&self, id_or_name: &str) -> Result<FeatureSetRecord> {
        features::get(&mut *self.read.acquire().await?, id_or_name).await
    }

    async fn list_feature_sets(&self) -> Result<Vec<FeatureSetRecord>> {
        features::list(&mut *self.read.acquire().await?).await
    }

    async fn feature_set_chunks(
        &self,
        id: &str,
        from: u64,
        limit: u32,
    ) -> Result<Vec<(u64, Vec<u8>)>> {
        features::chunks(&mut *self.read.acquire().await?, id, from, limit).await
    }

    async fn purge_stale_uploads(&self, idle_ms: i64) -> Result<u64> {
        artifacts::purge_stale(&self.write, idle_ms).await
    }

    async fn register_dataset(&self, rec: &DatasetRecord, name: &str) -> Result<DatasetRecord> {
        datasets::register(&self.write, rec, name).await
    }

    async fn get_dataset(&self, hash_or_name: &str) -> Result<DatasetRecord> {
        datasets::get(&self.read, hash_or_name).await
    }

    async fn list_datasets(&self) -> Result<Vec<DatasetRecord>> {
        datasets::list(&self.read).await
    }

    async fn put_folds(&self, rec: &FoldsRecord) -> Result<(FoldsRecord, bool)> {
        datasets::put_folds(&self.write, rec).await
    }

    async fn get_folds(
        &self,
        dataset_hash: &str,
        scheme: &str,
        k: u32,
        seed: u64,
    ) -> Result<Option<FoldsRecord>> {
        datasets::get_folds(&self.read, dataset_hash, scheme, k, seed).await
    }
}

#[cfg(test)]
mod tests {
    //! The basics on a temp file; the shared suite for both backends lives in `tests/`.

    use super::*;

    async fn store(policy: Policy) -> (tempfile::TempDir, SqliteStore) {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite://{}/nested/store.db", dir.path().display());
        let store = SqliteStore::open(&url, policy).await.expect("open store");
        let w1 = WorkerInfo {
            kinds: vec!["noop".into()],
            ..WorkerInfo::default()
        };
        store
            .register_worker("w1", &w1, "")
            .await
            .expect("register w1");
        (dir, store)
    }

    fn job(name: &str) -> NewJob {
        NewJob {
            kind: "noop".into(),
            name: name.into(),
            payload: "{}".into(),
            resources: Resources {
                cpu_slots: 1,
                ..Resources::default()
            },
            ..NewJob::default()
        }
    }

    fn batch(jobs: Vec<NewJob>) -> SubmitBatch {
        SubmitBatch {
            idempotency_key: None,
            body_hash: "h".into(),
            jobs,
        }
    }

    fn query(cpu_slots: u32, max_jobs: u32, lease_ttl_ms: i64) -> LeaseQuery {
        LeaseQuery {
            worker_id: "w1".into(),
            free: Resources {
                cpu_slots,
                ..Resources::default()
            },
            max_jobs,
            lease_ttl_ms,
        }
    }

    fn done(id: JobId, attempt: u32, predictions: Option<Predictions>) -> Completion {
        Completion {
            id,
            attempt,
            result: Some(r#"{"auc":0.9}"#.into()),
            predictions,
            progress: None,
        }
    }

    #[tokio::test]
    async fn submit_lease_complete_round_trip() {
        let (_dir, s) = store(Policy::default()).await;
        let mut urgent = job("urgent");
        urgent.priority = 5;
        urgent.expect_oof_rows = 3;
        urgent.expect_test_rows = 2;
        let mut gpu = job("gpu");
        gpu.resources.gpus = 1;
        let mut tagged = job("tagged");
        tagged.resources.tags = vec!["big-disk".into()];
        let ids = s
            .submit(batch(vec![job("plain"), urgent, gpu, tagged]))
            .await
            .unwrap()
            .ids;
        assert_eq!(ids.len(), 4);

        // Only the two CPU jobs without tags fit, the higher priority first.
        let leased = s.lease(&query(4, 10, 60_000)).await.unwrap();
        let got: Vec<JobId> = leased.iter().map(|j| j.id).collect();
        assert_eq!(got, vec![ids[1], ids[0]]);
        assert!(leased.iter().all(|j| j.attempt == 1));
        assert_eq!(s.get_job(ids[1]).await.unwrap().state, JobState::Running);

        let preds = Predictions {
            oof_rows: vec![0, 5, 9],
            oof: vec![0.1, 0.2, 0.3],
            test: vec![0.4, 0.5],
        };
        let out = s
            .complete(
                "w1",
                &[done(ids[1], 1, Some(preds.clone())), done(ids[0], 1, None)],
            )
            .await
            .unwrap();
        assert_eq!(out.accepted, vec![ids[1], ids[0]]);
        assert!(out.stale.is_empty());

        let j = s.get_job(ids[1]).await.unwrap();
        assert_eq!(j.state, JobState::Succeeded);
        assert_eq!(j.result.as_deref(), Some(r#"{"auc":0.9}"#));
        assert_eq!((j.prediction_rows_oof, j.prediction_rows_test), (3, 2));
        assert_eq!(s.get_predictions(ids[1]).await.unwrap(), Some(preds));
        assert_eq!(s.get_predictions(ids[0]).await.unwrap(), None);
        assert!(matches!(
            s.get_predictions(999).await,
            Err(Error::NotFound(_))
        ));

        let counts = s.count_states(&JobFilter::default()).await.unwrap();
        assert_eq!((counts.succeeded, counts.queued), (2, 2));
        let page = JobFilter {
            after_id: Some(ids[0]),
            limit: 2,
            ..JobFilter::default()
        };
        let listed: Vec<JobId> = s
            .list_jobs(&page)
            .await
            .unwrap()
            .iter()
            .map(|j| j.id)
            .collect();
        assert_eq!(listed, vec![ids[1], ids[2]]);
    }

    #[tokio::test]
    async fn wrong_prediction_sizes_store_nothing() {
        let (_dir, s) = store(Policy::default()).await;
        let mut model = job("model");
        model.expect_oof_rows = 4;
        let ids = s
            .submit(batch(vec![job("other"), model]))
            .await
            .unwrap()
            .ids;
        s.lease(&query(2, 2, 60_000)).await.unwrap();
        let short = Predictions {
            oof_rows: vec![0, 1, 2],
            oof: vec![0.0; 3],
            test: vec![],
        };
        let err = s
            .complete("w1", &[done(ids[0], 1, None), done(ids[1], 1, Some(short))])
            .await
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "predictions for job {} have 3 out-of-fold rows, the job expects 4",
                ids[1]
            )
        );
        // The whole call rolled back, the valid completion included.
        for id in ids {
            assert_eq!(s.get_job(id).await.unwrap().state, JobState::Running);
        }
    }

    #[tokio::test]
    async fn dependencies_unblock_fail_and_revive() {
        let (_dir, s) = store(Policy::default()).await;
        let mut child = job("child");
        child.depends_on_batch = vec![0, 1];
        let ids = s
            .submit(batch(vec![job("a"), job("b"), child]))
            .await
            .unwrap()
            .ids;
        let mut grandchild = job("grandchild");
        grandchild.depends_on = vec![ids[2]];
        let gc = s.submit(batch(vec![grandchild])).await.unwrap().ids[0];
        assert_eq!(
            s.get_job(ids[2]).await.unwrap().spec.depends_on,
            vec![ids[0], ids[1]]
        );
        assert_eq!(s.get_job(gc).await.unwrap().state, JobState::Blocked);

        // Both parents finish in one batch: the child must be counted down twice, once queued.
        s.lease(&query(2, 2, 60_000)).await.unwrap();
        s.complete("w1", &[done(ids[0], 1, None), done(ids[1], 1, None)])
            .await
            .unwrap();
        assert_eq!(s.get_job(ids[2]).await.unwrap().state, JobState::Queued);

        let leased = s.lease(&query(1, 1, 60_000)).await.unwrap();
        assert_eq!(leased[0].id, ids[2]);
        let f = Failure {
            worker_id: "w1".into(),
            id: ids[2],
            attempt: 1,
            reason: "out of memory".into(),
            retryable: false,
            handback: false,
        };
        assert_eq!(s.fail(&f).await.unwrap().state, JobState::Failed);
        let g = s.get_job(gc).await.unwrap();
        assert_eq!(g.state, JobState::Failed);
        assert_eq!(
            g.error.unwrap(),
            format!("dependency {} failed: out of memory", ids[2])
        );

        // Retrying the child revives the grandchild it took down, blocked behind it.
        assert_eq!(s.retry(&[ids[2]]).await.unwrap(), vec![ids[2], gc]);
        assert_eq!(s.get_job(ids[2]).await.unwrap().state, JobState::Queued);
        assert_eq!(s.get_job(gc).await.unwrap().state, JobState::Blocked);
        assert!(matches!(
            s.retry(&[ids[0]]).await,
            Err(Error::FailedPrecondition(_))
        ));

        // Cancelling the child cancels the grandchild, naming the cause.
        let out = s.cancel(&[ids[2]]).await.unwrap();
        assert_eq!(out.cancelled, vec![ids[2]]);
        let g = s.get_job(gc).await.unwrap();
        assert_eq!(g.state, JobState::Cancelled);
        assert_eq!(
            g.error.unwrap(),
            format!("dependency {} was cancelled", ids[2])
        );
        assert!(matches!(
            s.cancel(&[ids[0], 999]).await,
            Err(Error::NotFound(_))
        ));
    }

    #[tokio::test]
    async fn expired_leases_requeue_then_fail_and_fence_old_attempts() {
        let policy = Policy {
            default_crash_limit: 2,
            ..Policy::default()
        };
        let (_dir, s) = store(policy).await;
        let id = s.submit(batch(vec![job("flaky")])).await.unwrap().ids[0];

        // A zero TTL expires at once.
        let first = s.lease(&query(1, 1, 0)).await.unwrap();
        assert_eq!(first[0].attempt, 1);
        let reaped = s.reap_expired().await.unwrap();
        assert_eq!(reaped.requeued, vec![id]);
        let j = s.get_job(id).await.unwrap();
        assert_eq!(
            (j.state, j.crashes, j.worker_id),
            (JobState::Queued, 1, None)
        );

        let second = s.lease(&query(1, 1, 60_000)).await.unwrap();
        assert_eq!(second[0].attempt, 2);
        // The first worker comes back: its reports no longer count.
        let stale = s.complete("w1", &[done(id, 1, None)]).await.unwrap();
        assert!(stale.accepted.is_empty());
        assert_eq!(
            stale.stale[0].2,
            format!("job {id} is at attempt 2, the report is for attempt 1")
        );
        let hb = [ActiveJob {
            id,
            attempt: 1,
            progress: None,
        }];
        let stop = s.heartbeat("w1", &hb, 60_000).await.unwrap();
        assert_eq!(
            stop,
            vec![StopJob {
                id,
                attempt: 1,
                reason: StopReason::LeaseLost
            }]
        );
        let hb = [ActiveJob {
            id,
            attempt: 2,
            progress: Some("50%".into()),
        }];
        assert!(s.heartbeat("w1", &hb, 0).await.unwrap().is_empty());
        assert_eq!(
            s.get_job(id).await.unwrap().progress.as_deref(),
            Some("50%")
        );

        // The renewal above used a zero TTL, so this lease expires too: the crash limit is hit.
        let reaped = s.reap_expired().await.unwrap();
        assert_eq!(reaped.failed, vec![id]);
        let j = s.get_job(id).await.unwrap();
        assert_eq!(j.state, JobState::Failed);
        assert!(
            j.error.unwrap().starts_with("worker lost 2 times"),
            "crash limit error"
        );
        let f = Failure {
            worker_id: "w1".into(),
            id,
            attempt: 2,
            reason: "late".into(),
            retryable: true,
            handback: false,
        };
        assert!(matches!(s.fail(&f).await, Err(Error::Stale(_))));
    }

    #[tokio::test]
    async fn idempotent_submit() {
        let (_dir, s) = store(Policy::default()).await;
        let keyed = |hash: &str| SubmitBatch {
            idempotency_key: Some("k1".into()),
            body_hash: hash.into(),
            jobs: vec![job("a"), job("b")],
        };
        let first = s.submit(keyed("h1")).await.unwrap();
        assert!(!first.deduplicated);
        let again = s.submit(keyed("h1")).await.unwrap();
        assert_eq!(
            again,
            SubmitOutcome {
                ids: first.ids.clone(),
                deduplicated: true
            }
        );
        assert!(matches!(
            s.submit(keyed("h2")).await,
            Err(Error::AlreadyExists(_))
        ));
        let mut orphan = job("orphan");
        orphan.depends_on = vec![12345];
        let err = s.submit(batch(vec![orphan])).await.unwrap_err();
        assert_eq!(err.to_string(), "dependency 12345 does not exist");
        assert_eq!(
            s.count_states(&JobFilter::default()).await.unwrap().total(),
            2
        );
    }
}
