//! PostgreSQL job store, for clusters: claims use `FOR UPDATE SKIP LOCKED` so many coordinators
//! and workers claim concurrently without blocking each other, and `LISTEN/NOTIFY` on
//! `stackhive_work` wakes the long-polls of every coordinator. Times come from the database
//! clock (`sh_now_ms()`), never from a coordinator's.
//!
//! Must not: hold a transaction across a network call to a worker, or loop over jobs one
//! statement at a time on the hot paths (submit, lease, heartbeat, complete).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions};
use sqlx::PgPool;
use tokio::sync::Notify;

use super::artifacts::postgres as artifacts;
use super::datasets::postgres as datasets;
use super::features::postgres as features;
use super::imports::postgres as imports;
use super::sweeps::postgres as sweeps;
use super::tokens::postgres as tokens;
use super::Store;
use crate::error::{Error, Result};
use crate::model::*;

mod admin;
pub(crate) mod dialect;
mod rows;
mod run;
mod submit;

pub(crate) const WORK_CHANNEL: &str = "stackhive_work";
/// Revoked tokens: every coordinator drops the tokens it had verified.
const TOKENS_CHANNEL: &str = "stackhive_tokens";

pub struct PgStore {
    pool: PgPool,
    policy: Policy,
    notify: Arc<Notify>,
    /// Odd while the LISTEN connection is up; bumped by two on each token revocation anywhere in
    /// the cluster, and made even whenever the connection is lost (a revocation may go unheard
    /// until it is back).
    token_epoch: Arc<AtomicU64>,
    _listener: AbortOnDrop,
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl PgStore {
    /// Connects, applies migrations and starts the LISTEN task.
    pub async fn connect(url: &str, policy: Policy, max_connections: u32) -> Result<Self> {
        let opts: PgConnectOptions = url
            .parse()
            .map_err(|e| Error::Config(format!("invalid postgres url {url:?}: {e}")))?;
        let pool = PgPoolOptions::new()
            .max_connections(max_connections.max(2))
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(opts)
            .await?;
        Self::from_pool(pool, policy).await
    }

    pub async fn from_pool(pool: PgPool, policy: Policy) -> Result<Self> {
        sqlx::migrate!("../migrations/postgres").run(&pool).await?;
        let notify = Arc::new(Notify::new());
        let token_epoch = Arc::new(AtomicU64::new(0));
        let listener = tokio::spawn(listen(pool.clone(), notify.clone(), token_epoch.clone()));
        Ok(Self {
            pool,
            policy,
            notify,
            token_epoch,
            _listener: AbortOnDrop(listener),
        })
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    fn wake(&self) {
        self.notify.notify_waiters();
    }
}

/// Relays NOTIFYs from any coordinator to this process's long-polls and token caches.
/// PgListener reconnects by itself; on an error we wake everyone anyway (a missed notification
/// only costs a poll) and bump the token epoch (a missed revocation must not linger).
async fn listen(pool: PgPool, notify: Arc<Notify>, token_epoch: Arc<AtomicU64>) {
    let set_listening = |up: bool| {
        let e = token_epoch.load(Ordering::Acquire);
        if (e % 2 == 1) != up {
            token_epoch.fetch_add(1, Ordering::AcqRel);
        }
    };
    loop {
        set_listening(false);
        let mut listener = match PgListener::connect_with(&pool).await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "cannot open LISTEN connection; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        if let Err(e) = listener.listen_all([WORK_CHANNEL, TOKENS_CHANNEL]).await {
            tracing::warn!(error = %e, "LISTEN failed; retrying");
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        }
        set_listening(true);
        // try_recv, not recv: recv reconnects silently and drops what was sent meanwhile;
        // here a lost connection is noticed (Ok(None)) and a fresh listener is made.
        loop {
            match listener.try_recv().await {
                Ok(Some(n)) if n.channel() == TOKENS_CHANNEL => {
                    token_epoch.fetch_add(2, Ordering::AcqRel);
                }
                Ok(Some(_)) => notify.notify_waiters(),
                Ok(None) | Err(_) => {
                    tracing::warn!("LISTEN connection lost; reconnecting");
                    set_listening(false);
                    notify.notify_waiters();
                    break;
                }
            }
        }
    }
}

/// Runs a transaction body again when PostgreSQL aborted it for a deadlock or a serialization
/// conflict (rare: two batches touching shared dependents in different orders).
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

#[async_trait]
impl Store for PgStore {
    fn backend(&self) -> &'static str {
        "postgres"
    }

    fn pool_use(&self) -> (u32, usize) {
        (self.pool.size(), self.pool.num_idle())
    }

    fn work_notify(&self) -> Arc<Notify> {
        self.notify.clone()
    }

    async fn submit(&self, batch: SubmitBatch) -> Result<SubmitOutcome> {
        let out = retry_conflicts!(submit::submit(&self.pool, &self.policy, &batch))?;
        if !out.deduplicated {
            self.wake();
        }
        Ok(out)
    }

    async fn get_job(&self, id: JobId) -> Result<Job> {
        admin::get_job(&self.pool, id).await
    }

    async fn get_predictions(&self, id: JobId) -> Result<Option<Predictions>> {
        admin::get_predictions(&self.pool, id).await
    }

    async fn get_predictions_many(&self, ids: &[JobId]) -> Result<Vec<(JobId, Predictions)>> {
        super::predictions::postgres::many(&self.pool, ids).await
    }

    async fn list_jobs(&self, filter: &JobFilter) -> Result<Vec<Job>> {
        admin::list_jobs(&self.pool, filter).await
    }

    async fn count_states(&self, filter: &JobFilter) -> Result<StateCounts> {
        admin::count_states(&self.pool, filter).await
    }

    async fn cancel(&self, ids: &[JobId]) -> Result<CancelOutcome> {
        retry_conflicts!(admin::cancel(&self.pool, ids))
    }

    async fn retry(&self, ids: &[JobId]) -> Result<Vec<JobId>> {
        let out = retry_conflicts!(admin::retry(&self.pool, &self.policy, ids))?;
        self.wake();
        Ok(out)
    }

    async fn register_worker(&self, id: &str, info: &WorkerInfo, key_hash: &str) -> Result<()> {
        admin::register_worker(&self.pool, id, info, key_hash).await
    }

    async fn renew_worker(&self, id: &str, info: &WorkerInfo) -> Result<()> {
        admin::renew_worker(&self.pool, id, info).await
    }

    async fn worker_key(&self, id: &str) -> Result<Option<String>> {
        admin::worker_key(&self.pool, id).await
    }

    async fn deregister_worker(&self, worker_id: &str) -> Result<()> {
        admin::deregister_worker(&self.pool, worker_id).await
    }

    async fn list_workers(&self, include_dead: bool) -> Result<Vec<WorkerRecord>> {
        admin::list_workers(&self.pool, &self.policy, include_dead).await
    }

    async fn lease(&self, q: &LeaseQuery) -> Result<Vec<LeasedJob>> {
        retry_conflicts!(run::lease(&self.pool, q))
    }

    async fn heartbeat(
        &self,
        worker_id: &str,
        jobs: &[ActiveJob],
        lease_ttl_ms: i64,
    ) -> Result<Vec<StopJob>> {
        retry_conflicts!(run::heartbeat(&self.pool, worker_id, jobs, lease_ttl_ms))
    }

    async fn complete(&self, worker_id: &str, items: &[Completion]) -> Result<CompleteOutcome> {
        let (out, woke) =
            retry_conflicts!(run::complete(&self.pool, &self.policy, worker_id, items))?;
        if woke {
            self.wake();
        }
        Ok(out)
    }

    async fn fail(&self, f: &Failure) -> Result<FailOutcome> {
        let out = retry_conflicts!(run::fail(&self.pool, &self.policy, f))?;
        if out.state == JobState::Queued {
            self.wake();
        }
        Ok(out)
    }

    async fn reap_expired(&self) -> Result<ReapOutcome> {
        let out = retry_conflicts!(run::reap(&self.pool))?;
        if !out.requeued.is_empty() {
            self.wake();
        }
        Ok(out)
    }

    async fn purge_finished(&self, before: Millis, limit: u32) -> Result<u64> {
        admin::purge(&self.pool, before, limit).await
    }

    async fn begin_artifact_upload(&self, job: JobId) -> Result<String> {
        artifacts::begin(&self.pool, job).await
    }

    async fn put_artifact_chunk(&self, upload: &str, start: u64, data: &[u8]) -> Result<()> {
        artifacts::put_chunk(&self.pool, upload, start, data).await
    }

    async fn commit_artifact(&self, rec: &ArtifactRecord, worker: &str) -> Result<ArtifactRecord> {
        artifacts::commit(&self.pool, rec, worker).await
    }

    async fn discard_artifact_upload(&self, upload: &str) -> Result<()> {
        artifacts::discard(&self.pool, upload).await
    }

    async fn list_artifacts(&self, job: JobId) -> Result<Vec<ArtifactRecord>> {
        artifacts::list(&self.pool, job).await
    }

    async fn get_artifact(&self, job: JobId, name: &str) -> Result<ArtifactRecord> {
        artifacts::get(&self.pool, job, name).await
    }

    async fn artifact_chunks(
        &self,
        upload: &str,
        from: u64,
        limit: u32,
    ) -> Result<Vec<(u64, Vec<u8>)>> {
        artifacts::chunks(&self.pool, upload, from, limit).await
    }

    async fn delete_artifact(
        &self,
        job: JobId,
        attempt: u32,
        worker: &str,
        name: &str,
    ) -> Result<bool> {
        artifacts::delete(&self.pool, job, attempt, worker, name).await
    }

    async fn create_token(&self, t: &TokenRecord) -> Result<()> {
        tokens::create(&self.pool, t).await
    }

    async fn get_token(&self, id: &str) -> Result<Option<TokenRecord>> {
        tokens::get(&self.pool, id).await
    }

    async fn list_tokens(&self, include_revoked: bool) -> Result<Vec<TokenRecord>> {
        tokens::list(&self.pool, include_revoked).await
    }

    async fn revoke_token(&self, id: &str) -> Result<bool> {
        // The NOTIFY is delivered at commit: every coordinator drops its cached tokens.
        let mut tx = self.pool.begin().await?;
        let revoked = tokens::revoke(&mut tx, id, now_ms()).await?;
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(TOKENS_CHANNEL)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(revoked)
    }

    async fn import_predictions(
        &self,
        experiment: &str,
        name: &str,
        result: &str,
        p: &Predictions,
    ) -> Result<JobId> {
        let mut tx = self.pool.begin().await?;
        let id = imports::import(&mut tx, experiment, name, result, p, now_ms()).await?;
        tx.commit().await?;
        Ok(id)
    }

    async fn create_sweep(&self, s: &SweepRecord) -> Result<SweepRecord> {
        let mut rec = s.clone();
        rec.created_at = now_ms();
        sweeps::create(&mut *self.pool.acquire().await?, &rec).await
    }

    async fn get_sweep(&self, id: i64) -> Result<SweepRecord> {
        sweeps::get(&mut *self.pool.acquire().await?, id).await
    }

    async fn list_sweeps(&self, state: Option<&str>) -> Result<Vec<SweepRecord>> {
        sweeps::list(&mut *self.pool.acquire().await?, state).await
    }

    async fn update_sweep(&self, s: &SweepRecord, expect_submitted: u64) -> Result<bool> {
        sweeps::update(
            &mut *self.pool.acquire().await?,
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
        let mut tx = self.pool.begin().await?;
        let out = features::put(&mut tx, rec, bytes, name).await?;
        tx.commit().await?;
        Ok(out)
    }

    async fn get_feature_set(&self, id_or_name: &str) -> Result<FeatureSetRecord> {
        features::get(&mut *self.pool.acquire().await?, id_or_name).await
    }

    async fn list_feature_sets(&self) -> Result<Vec<FeatureSetRecord>> {
        features::list(&mut *self.pool.acquire().await?).await
    }

    async fn feature_set_chunks(
        &self,
        id: &str,
        from: u64,
        limit: u32,
    ) -> Result<Vec<(u64, Vec<u8>)>> {
        features::chunks(&mut *self.pool.acquire().await?, id, from, limit).await
    }

    fn token_epoch(&self) -> Option<u64> {
        // While LISTEN is down a revocation could go unheard: no caching then.
        let epoch = self.token_epoch.load(Ordering::Acquire);
        (epoch % 2 == 1).then_some(epoch)
    }

    async fn purge_stale_uploads(&self, idle_ms: i64) -> Result<u64> {
        artifacts::purge_stale(&self.pool, idle_ms).await
    }

    async fn register_dataset(&self, rec: &DatasetRecord, name: &str) -> Result<DatasetRecord> {
        datasets::register(&self.pool, rec, name).await
    }

    async fn get_dataset(&self, hash_or_name: &str) -> Result<DatasetRecord> {
        datasets::get(&self.pool, hash_or_name).await
    }

    async fn list_datasets(&self) -> Result<Vec<DatasetRecord>> {
        datasets::list(&self.pool).await
    }

    async fn put_folds(&self, rec: &FoldsRecord) -> Result<(FoldsRecord, bool)> {
        datasets::put_folds(&self.pool, rec).await
    }

    async fn get_folds(
        &self,
        dataset_hash: &str,
        scheme: &str,
        k: u32,
        seed: u64,
    ) -> Result<Option<FoldsRecord>> {
        datasets::get_folds(&self.pool, dataset_hash, scheme, k, seed).await
    }
}
