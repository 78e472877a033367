//! The one implementation of the store's contract for both backends. `sql_store!(Type,
//! backend)` implements every concern's trait for `Type` over the SQL of `store::backend`
//! (its `submit`, `run` and `admin` modules, which differ in locking and types) and the
//! modules written once for both (`artifacts`, `datasets`, `tokens`, `features`, `sweeps`,
//! `imports`, `predictions`). The rules that are not SQL live here once: which statements
//! retry on a deadlock or serialization conflict, when long-polls are woken, which
//! connection pool a call reads or writes through, and the clock of rows stamped in Rust.
//!
//! What a backend type provides: `reader()` and `writer()` (its pools; the same one on
//! PostgreSQL), `policy`, `notify`, `pool_counts()` and `revocation_epoch()`.

/// Runs a transaction body again when the database aborted it for a deadlock or a
/// serialization conflict (PostgreSQL: rare, two batches touching shared dependents in
/// different orders; SQLite's write transactions never conflict).
macro_rules! retry_conflicts {
    ($body:expr) => {{
        let mut tries = 0;
        loop {
            match $body.await {
                Err(crate::error::Error::Database(sqlx::Error::Database(ref db)))
                    if tries < 5
                        && matches!(db.code().as_deref(), Some("40P01") | Some("40001")) =>
                {
                    tries += 1;
                    tokio::time::sleep(std::time::Duration::from_millis(5 * tries)).await;
                }
                other => break other,
            }
        }
    }};
}

macro_rules! sql_store {
    ($store:ident, $backend:ident) => {
        mod contract {
            use std::sync::Arc;

            use async_trait::async_trait;
            use tokio::sync::Notify;

            use crate::domain::model::*;
            use crate::error::Result;
            use crate::store::sql::retry_conflicts;
            use crate::store::$backend::{admin, dialect, run, submit};
            use crate::store::{
                artifacts::$backend as artifacts, datasets::$backend as datasets,
                features::$backend as features, imports::$backend as imports,
                predictions::$backend as predictions, reads::$backend as reads,
                sweeps::$backend as sweeps, tokens::$backend as tokens,
                workers::$backend as workers,
            };
            use crate::store::{
                ArtifactStore, DatasetStore, FeatureStore, JobStore, PredictionStore, Store,
                SweepStore, TokenStore, WorkerStore,
            };

            type This = super::$store;

            impl This {
                /// Wakes this process's long-polls (other coordinators hear of new work
                /// through the database, where it has a way to tell them).
                fn wake(&self) {
                    self.notify.notify_waiters();
                }
            }

            impl Store for This {
                fn backend(&self) -> &'static str {
                    stringify!($backend)
                }

                fn pool_use(&self) -> (u32, usize) {
                    self.pool_counts()
                }
            }

            #[async_trait]
            impl JobStore for This {
                fn work_notify(&self) -> Arc<Notify> {
                    self.notify.clone()
                }

                async fn submit(&self, batch: SubmitBatch) -> Result<SubmitOutcome> {
                    let (out, queued) =
                        retry_conflicts!(submit::submit(self.writer(), &self.policy, &batch))?;
                    if queued {
                        self.wake();
                    }
                    Ok(out)
                }

                async fn get_job(&self, id: JobId) -> Result<Job> {
                    reads::get_job(self.reader(), id).await
                }

                async fn list_jobs(&self, filter: &JobFilter) -> Result<Vec<Job>> {
                    reads::list_jobs(self.reader(), filter).await
                }

                async fn count_states(&self, filter: &JobFilter) -> Result<StateCounts> {
                    reads::count_states(self.reader(), filter).await
                }

                async fn cancel(&self, ids: &[JobId]) -> Result<CancelOutcome> {
                    retry_conflicts!(admin::cancel(self.writer(), ids))
                }

                async fn retry(&self, ids: &[JobId]) -> Result<Vec<JobId>> {
                    let (revived, queued) =
                        retry_conflicts!(admin::retry(self.writer(), &self.policy, ids))?;
                    if queued {
                        self.wake();
                    }
                    Ok(revived)
                }

                async fn lease(&self, q: &LeaseQuery) -> Result<Vec<LeasedJob>> {
                    retry_conflicts!(run::lease(self.writer(), q))
                }

                async fn heartbeat(
                    &self,
                    worker_id: &str,
                    jobs: &[ActiveJob],
                    lease_ttl_ms: i64,
                ) -> Result<Vec<StopJob>> {
                    retry_conflicts!(run::heartbeat(self.writer(), worker_id, jobs, lease_ttl_ms))
                }

                async fn complete(
                    &self,
                    worker_id: &str,
                    items: &[Completion],
                ) -> Result<CompleteOutcome> {
                    let (out, unblocked) = retry_conflicts!(run::complete(
                        self.writer(),
                        &self.policy,
                        worker_id,
                        items
                    ))?;
                    if unblocked {
                        self.wake();
                    }
                    Ok(out)
                }

                async fn fail(&self, f: &Failure) -> Result<FailOutcome> {
                    let out = retry_conflicts!(run::fail(self.writer(), &self.policy, f))?;
                    // A retry waiting out its backoff is not claimable yet.
                    if out.state == JobState::Queued && out.run_after <= now_ms() {
                        self.wake();
                    }
                    Ok(out)
                }

                async fn reap_expired(&self) -> Result<ReapOutcome> {
                    let out = retry_conflicts!(run::reap(self.writer()))?;
                    if !out.requeued.is_empty() {
                        self.wake();
                    }
                    Ok(out)
                }

                async fn purge_finished(&self, before: Millis, limit: u32) -> Result<u64> {
                    admin::purge(self.writer(), before, limit).await
                }
            }

            #[async_trait]
            impl WorkerStore for This {
                async fn register_worker(
                    &self,
                    id: &str,
                    info: &WorkerInfo,
                    key_hash: &str,
                ) -> Result<()> {
                    admin::register_worker(self.writer(), id, info, key_hash).await
                }

                async fn renew_worker(&self, id: &str, info: &WorkerInfo) -> Result<()> {
                    admin::renew_worker(self.writer(), id, info).await
                }

                async fn worker_key(&self, id: &str) -> Result<Option<String>> {
                    workers::worker_key(self.reader(), id).await
                }

                async fn deregister_worker(&self, worker_id: &str) -> Result<()> {
                    workers::deregister_worker(self.writer(), worker_id).await
                }

                async fn list_workers(&self, include_dead: bool) -> Result<Vec<WorkerRecord>> {
                    admin::list_workers(self.reader(), &self.policy, include_dead).await
                }
            }

            #[async_trait]
            impl DatasetStore for This {
                async fn register_dataset(
                    &self,
                    rec: &DatasetRecord,
                    name: &str,
                ) -> Result<DatasetRecord> {
                    datasets::register(self.writer(), rec, name).await
                }

                async fn get_dataset(&self, hash_or_name: &str) -> Result<DatasetRecord> {
                    datasets::get(self.reader(), hash_or_name).await
                }

                async fn list_datasets(&self) -> Result<Vec<DatasetRecord>> {
                    datasets::list(self.reader()).await
                }

                async fn put_folds(&self, rec: &FoldsRecord) -> Result<(FoldsRecord, bool)> {
                    datasets::put_folds(self.writer(), rec).await
                }

                async fn get_folds(
                    &self,
                    dataset_hash: &str,
                    scheme: &str,
                    k: u32,
                    seed: u64,
                ) -> Result<Option<FoldsRecord>> {
                    datasets::get_folds(self.reader(), dataset_hash, scheme, k, seed).await
                }
            }

            #[async_trait]
            impl ArtifactStore for This {
                async fn begin_artifact_upload(&self, job: JobId) -> Result<String> {
                    artifacts::begin(self.writer(), job).await
                }

                async fn put_artifact_chunk(
                    &self,
                    upload: &str,
                    start: u64,
                    data: &[u8],
                ) -> Result<()> {
                    artifacts::put_chunk(self.writer(), upload, start, data).await
                }

                async fn commit_artifact(
                    &self,
                    rec: &ArtifactRecord,
                    worker: &str,
                ) -> Result<ArtifactRecord> {
                    artifacts::commit(self.writer(), rec, worker).await
                }

                async fn discard_artifact_upload(&self, upload: &str) -> Result<()> {
                    artifacts::discard(self.writer(), upload).await
                }

                async fn list_artifacts(&self, job: JobId) -> Result<Vec<ArtifactRecord>> {
                    artifacts::list(self.reader(), job).await
                }

                async fn get_artifact(&self, job: JobId, name: &str) -> Result<ArtifactRecord> {
                    artifacts::get(self.reader(), job, name).await
                }

                async fn artifact_chunks(
                    &self,
                    upload: &str,
                    from: u64,
                    limit: u32,
                ) -> Result<Vec<(u64, Vec<u8>)>> {
                    artifacts::chunks(self.reader(), upload, from, limit).await
                }

                async fn delete_artifact(
                    &self,
                    job: JobId,
                    attempt: u32,
                    worker: &str,
                    name: &str,
                ) -> Result<bool> {
                    artifacts::delete(self.writer(), job, attempt, worker, name).await
                }

                async fn purge_stale_uploads(&self, idle_ms: i64) -> Result<u64> {
                    artifacts::purge_stale(self.writer(), idle_ms).await
                }
            }

            #[async_trait]
            impl TokenStore for This {
                async fn create_token(&self, t: &TokenRecord) -> Result<()> {
                    tokens::create(self.writer(), t).await
                }

                async fn get_token(&self, id: &str) -> Result<Option<TokenRecord>> {
                    tokens::get(self.reader(), id).await
                }

                async fn list_tokens(&self, include_revoked: bool) -> Result<Vec<TokenRecord>> {
                    tokens::list(self.reader(), include_revoked).await
                }

                async fn revoke_token(&self, id: &str) -> Result<bool> {
                    let mut tx = dialect::begin(self.writer()).await?;
                    let revoked = tokens::revoke(&mut tx, id, now_ms()).await?;
                    dialect::token_revoked(&mut tx, id).await?;
                    tx.commit().await?;
                    Ok(revoked)
                }

                fn token_epoch(&self) -> Option<u64> {
                    self.revocation_epoch()
                }
            }

            #[async_trait]
            impl PredictionStore for This {
                async fn get_predictions(&self, id: JobId) -> Result<Option<Predictions>> {
                    reads::get_predictions(self.reader(), id).await
                }

                async fn get_predictions_many(
                    &self,
                    ids: &[JobId],
                ) -> Result<Vec<(JobId, Predictions)>> {
                    predictions::many(self.reader(), ids).await
                }

                async fn import_predictions(
                    &self,
                    experiment: &str,
                    name: &str,
                    result: &str,
                    p: &Predictions,
                ) -> Result<JobId> {
                    let mut tx = dialect::begin(self.writer()).await?;
                    let id =
                        imports::import(&mut tx, experiment, name, result, p, now_ms()).await?;
                    tx.commit().await?;
                    Ok(id)
                }
            }

            #[async_trait]
            impl FeatureStore for This {
                async fn put_feature_set(
                    &self,
                    rec: &FeatureSetRecord,
                    bytes: &[u8],
                    name: Option<&str>,
                ) -> Result<(FeatureSetRecord, bool)> {
                    let mut tx = dialect::begin(self.writer()).await?;
                    let out = features::put(&mut tx, rec, bytes, name).await?;
                    tx.commit().await?;
                    Ok(out)
                }

                async fn get_feature_set(&self, id_or_name: &str) -> Result<FeatureSetRecord> {
                    features::get(&mut *self.reader().acquire().await?, id_or_name).await
                }

                async fn list_feature_sets(&self) -> Result<Vec<FeatureSetRecord>> {
                    features::list(&mut *self.reader().acquire().await?).await
                }

                async fn feature_set_chunks(
                    &self,
                    id: &str,
                    from: u64,
                    limit: u32,
                ) -> Result<Vec<(u64, Vec<u8>)>> {
                    features::chunks(&mut *self.reader().acquire().await?, id, from, limit).await
                }
            }

            #[async_trait]
            impl SweepStore for This {
                async fn create_sweep(&self, s: &SweepRecord) -> Result<SweepRecord> {
                    let mut rec = s.clone();
                    rec.created_at = now_ms();
                    sweeps::create(&mut *self.writer().acquire().await?, &rec).await
                }

                async fn get_sweep(&self, id: i64) -> Result<SweepRecord> {
                    sweeps::get(&mut *self.reader().acquire().await?, id).await
                }

                async fn list_sweeps(&self, state: Option<&str>) -> Result<Vec<SweepRecord>> {
                    sweeps::list(&mut *self.reader().acquire().await?, state).await
                }

                async fn update_sweep(
                    &self,
                    s: &SweepRecord,
                    expect_submitted: u64,
                ) -> Result<bool> {
                    sweeps::update(
                        &mut *self.writer().acquire().await?,
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
            }
        }
    };
}

pub(crate) use {retry_conflicts, sql_store};
