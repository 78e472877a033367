//! Artifacts, written once for both backends over their dialects (`postgres::dialect`,
//! `sqlite::dialect`): 1 MiB chunks per upload, named as a job's artifact by one fenced
//! transaction. The job row is read under the dialect's `LOCK_SHARE` (PostgreSQL's `FOR
//! SHARE`; SQLite's write transaction holds the whole database), so a lease expiring or a
//! completion racing the commit waits for it and a stale attempt can never name its upload.
//! Every chunk is its own short transaction: nothing holds a connection for a whole upload.

use crate::domain::model::*;
use crate::error::Result;

/// Job artifacts (checkpoints, resume states) as chunked uploads, fenced like reports.
#[async_trait::async_trait]
pub trait ArtifactStore: Send + Sync {
    /// Starts an artifact upload for `job` and returns its id. Its chunks stay invisible until
    /// `commit_artifact` names them; `NotFound` when the job does not exist.
    async fn begin_artifact_upload(&self, job: JobId) -> Result<String>;

    /// Stores `data` at byte `start` of upload `upload`, as rows of at most `CHUNK_BYTES`, in
    /// one short transaction, and marks the upload as still in use.
    async fn put_artifact_chunk(&self, upload: &str, start: u64, data: &[u8]) -> Result<()>;

    /// In one transaction: checks that `rec.job_id` is running at `rec.attempt` leased to `worker`
    /// (`Stale` otherwise) and that the upload's chunks add up to `rec.size` bytes, then names
    /// upload `rec.upload_id` as the job's artifact `rec.name` in place of the upload that held
    /// that name before. That upload's bytes are removed after the commit, outside the fenced
    /// transaction (the reaper's purge catches them if that fails). Returns the stored record.
    async fn commit_artifact(&self, rec: &ArtifactRecord, worker: &str) -> Result<ArtifactRecord>;

    /// Removes an upload that will not be committed, with its chunks.
    async fn discard_artifact_upload(&self, upload: &str) -> Result<()>;

    /// The job's artifacts by name (empty when it has none, `NotFound` when the job does not
    /// exist).
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
}

macro_rules! for_backend {
    ($backend:ident) => {
        use sqlx::Row as _;

        use crate::error::{Error, Result};
        use crate::domain::model::*;
        use crate::store::$backend::dialect::{self, Pool, Row, NOW};
        use crate::store::{check_artifact_bytes, check_artifact_fence, CHUNK_BYTES};

        const COLUMNS: &str = "job_id, CAST(attempt AS BIGINT) AS attempt, name, size, blake3, \
                               upload_id, created_at";
        const INSERTED: &str = "job_id, attempt, name, size, blake3, upload_id, created_at";

        fn record(r: &Row) -> Result<ArtifactRecord> {
            Ok(ArtifactRecord {
                job_id: r.try_get("job_id")?,
                attempt: r.try_get::<i64, _>("attempt")? as u32,
                name: r.try_get("name")?,
                size: r.try_get::<i64, _>("size")? as u64,
                blake3: r.try_get("blake3")?,
                upload_id: r.try_get("upload_id")?,
                created_at: r.try_get("created_at")?,
            })
        }

        pub async fn begin(pool: &Pool, job: JobId) -> Result<String> {
            let id = uuid::Uuid::new_v4().simple().to_string();
            let inserted = sqlx::query(&format!(
                "INSERT INTO artifact_uploads (id, job_id, touched_at)
                 SELECT $1, id, {NOW} FROM jobs WHERE id = $2"
            ))
            .bind(&id)
            .bind(job)
            .execute(pool)
            .await?
            .rows_affected();
            if inserted == 0 {
                return Err(Error::NotFound(format!("job {job} does not exist")));
            }
            Ok(id)
        }

        pub async fn put_chunk(pool: &Pool, upload: &str, start: u64, data: &[u8]) -> Result<()> {
            let mut tx = dialect::begin(pool).await?;
            let touched = sqlx::query(&format!(
                "UPDATE artifact_uploads SET touched_at = {NOW} WHERE id = $1"
            ))
            .bind(upload)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if touched == 0 {
                return Err(Error::NotFound(format!(
                    "artifact upload {upload} does not exist (its job was deleted, or it sat idle \
                     too long)"
                )));
            }
            let mut at = start;
            for row in data.chunks(CHUNK_BYTES) {
                sqlx::query(
                    "INSERT INTO artifact_chunks (upload_id, start, data) VALUES ($1, $2, $3)",
                )
                .bind(upload)
                .bind(at as i64)
                .bind(row)
                .execute(&mut *tx)
                .await?;
                at += row.len() as u64;
            }
            tx.commit().await?;
            Ok(())
        }

        pub async fn commit(pool: &Pool, rec: &ArtifactRecord, worker: &str) -> Result<ArtifactRecord> {
            let mut tx = dialect::begin(pool).await?;
            let found = fence_row(&mut tx, rec.job_id).await?;
            check_artifact_fence(rec.job_id, rec.attempt, worker, &rec.name, found)?;
            let stored: i64 = sqlx::query_scalar(
                "SELECT CAST(COALESCE(SUM(octet_length(data)), 0) AS BIGINT) FROM artifact_chunks
                 WHERE upload_id = $1",
            )
            .bind(&rec.upload_id)
            .fetch_one(&mut *tx)
            .await?;
            check_artifact_bytes(rec, stored)?;
            let replaced: Option<String> = sqlx::query_scalar(
                "DELETE FROM artifacts WHERE job_id = $1 AND name = $2 RETURNING upload_id",
            )
            .bind(rec.job_id)
            .bind(&rec.name)
            .fetch_optional(&mut *tx)
            .await?;
            let row = sqlx::query(&format!(
                "INSERT INTO artifacts ({INSERTED}) VALUES ($1, $2, $3, $4, $5, $6, {NOW})
                 RETURNING {COLUMNS}"
            ))
            .bind(rec.job_id)
            .bind(i64::from(rec.attempt))
            .bind(&rec.name)
            .bind(rec.size as i64)
            .bind(&rec.blake3)
            .bind(&rec.upload_id)
            .fetch_one(&mut *tx)
            .await?;
            tx.commit().await?;
            let stored = record(&row)?;
            if let Some(old) = replaced {
                discard_quietly(pool, &old).await;
            }
            Ok(stored)
        }

        /// Removes an upload no artifact names any more; on failure the reaper's purge removes it.
        async fn discard_quietly(pool: &Pool, upload: &str) {
            if let Err(e) = discard(pool, upload).await {
                tracing::warn!(%upload, error = %e, "cannot remove a replaced artifact's bytes yet");
            }
        }

        pub async fn discard(pool: &Pool, upload: &str) -> Result<()> {
            sqlx::query("DELETE FROM artifact_uploads WHERE id = $1")
                .bind(upload)
                .execute(pool)
                .await?;
            Ok(())
        }

        pub async fn list(pool: &Pool, job: JobId) -> Result<Vec<ArtifactRecord>> {
            let exists: bool =
                sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM jobs WHERE id = $1)")
                    .bind(job)
                    .fetch_one(pool)
                    .await?;
            if !exists {
                return Err(Error::NotFound(format!("job {job} does not exist")));
            }
            let rows = sqlx::query(&format!(
                "SELECT {COLUMNS} FROM artifacts WHERE job_id = $1 ORDER BY name"
            ))
            .bind(job)
            .fetch_all(pool)
            .await?;
            rows.iter().map(record).collect()
        }

        pub async fn get(pool: &Pool, job: JobId, name: &str) -> Result<ArtifactRecord> {
            let row = sqlx::query(&format!(
                "SELECT {COLUMNS} FROM artifacts WHERE job_id = $1 AND name = $2"
            ))
            .bind(job)
            .bind(name)
            .fetch_optional(pool)
            .await?
            .ok_or_else(|| Error::NotFound(format!("job {job} has no artifact {name:?}")))?;
            record(&row)
        }

        pub async fn chunks(
            pool: &Pool,
            upload: &str,
            from: u64,
            limit: u32,
        ) -> Result<Vec<(u64, Vec<u8>)>> {
            let rows: Vec<(i64, Vec<u8>)> = sqlx::query_as(
                "SELECT start, data FROM artifact_chunks WHERE upload_id = $1 AND start >= $2
                 ORDER BY start LIMIT $3",
            )
            .bind(upload)
            .bind(from as i64)
            .bind(i64::from(limit))
            .fetch_all(pool)
            .await?;
            Ok(rows.into_iter().map(|(s, d)| (s as u64, d)).collect())
        }

        pub async fn delete(
            pool: &Pool,
            job: JobId,
            attempt: u32,
            worker: &str,
            name: &str,
        ) -> Result<bool> {
            let mut tx = dialect::begin(pool).await?;
            let found = fence_row(&mut tx, job).await?;
            check_artifact_fence(job, attempt, worker, name, found)?;
            let removed: Option<String> = sqlx::query_scalar(
                "DELETE FROM artifacts WHERE job_id = $1 AND name = $2 RETURNING upload_id",
            )
            .bind(job)
            .bind(name)
            .fetch_optional(&mut *tx)
            .await?;
            tx.commit().await?;
            match removed {
                Some(upload) => {
                    discard_quietly(pool, &upload).await;
                    Ok(true)
                }
                None => Ok(false),
            }
        }

        pub async fn purge_stale(pool: &Pool, idle_ms: i64) -> Result<u64> {
            Ok(sqlx::query(&format!(
                "DELETE FROM artifact_uploads WHERE touched_at < {NOW} - $1
                   AND NOT EXISTS (SELECT 1 FROM artifacts a
                                   WHERE a.upload_id = artifact_uploads.id)"
            ))
            .bind(idle_ms)
            .execute(pool)
            .await?
            .rows_affected())
        }

        /// The job's (state, attempt, worker) for the artifact fence, held against a concurrent
        /// claim until the transaction ends.
        async fn fence_row(
            tx: &mut dialect::Tx,
            job: JobId,
        ) -> Result<Option<(i64, i64, Option<String>)>> {
            Ok(sqlx::query_as(&format!(
                "SELECT CAST(state AS BIGINT), CAST(attempt AS BIGINT), worker_id FROM jobs
                 WHERE id = $1 {}",
                dialect::LOCK_SHARE
            ))
            .bind(job)
            .fetch_optional(&mut **tx)
            .await?)
        }
    };
}

pub(crate) mod postgres {
    for_backend!(postgres);
}

pub(crate) mod sqlite {
    for_backend!(sqlite);
}
