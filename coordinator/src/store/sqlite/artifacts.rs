//! Artifacts on SQLite: 1 MiB chunks per upload, named as a job's artifact by one fenced
//! `BEGIN IMMEDIATE` transaction, so nothing changes the job between the fence check and the
//! write. Every chunk is its own short write transaction: the one writer connection is never
//! held for a whole upload.

use sqlx::{Row, SqlitePool};

use crate::error::{Error, Result};

type Pool = SqlitePool;
use crate::model::*;
use crate::store::{check_artifact_bytes, check_artifact_fence, CHUNK_BYTES};

const COLUMNS: &str = "job_id, attempt, name, size, blake3, upload_id, created_at";

fn record(r: &sqlx::sqlite::SqliteRow) -> Result<ArtifactRecord> {
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

pub async fn begin(pool: &SqlitePool, job: JobId) -> Result<String> {
    let id = uuid::Uuid::new_v4().simple().to_string();
    let inserted = sqlx::query(
        "INSERT INTO artifact_uploads (id, job_id, touched_at)
         SELECT ?1, id, ?3 FROM jobs WHERE id = ?2",
    )
    .bind(&id)
    .bind(job)
    .bind(now_ms())
    .execute(pool)
    .await?
    .rows_affected();
    if inserted == 0 {
        return Err(Error::NotFound(format!("job {job} does not exist")));
    }
    Ok(id)
}

pub async fn put_chunk(pool: &SqlitePool, upload: &str, start: u64, data: &[u8]) -> Result<()> {
    let mut tx = super::begin(pool).await?;
    let touched = sqlx::query("UPDATE artifact_uploads SET touched_at = ?2 WHERE id = ?1")
        .bind(upload)
        .bind(now_ms())
        .execute(&mut *tx)
        .await?
        .rows_affected();
    if touched == 0 {
        return Err(Error::NotFound(format!(
            "artifact upload {upload} does not exist (its job was deleted, or it sat idle too long)"
        )));
    }
    let mut at = start;
    for row in data.chunks(CHUNK_BYTES) {
        sqlx::query("INSERT INTO artifact_chunks (upload_id, start, data) VALUES (?1, ?2, ?3)")
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

pub async fn commit(
    pool: &SqlitePool,
    rec: &ArtifactRecord,
    worker: &str,
) -> Result<ArtifactRecord> {
    let mut tx = super::begin(pool).await?;
    let found = fence_row(&mut tx, rec.job_id).await?;
    check_artifact_fence(rec.job_id, rec.attempt, worker, &rec.name, found)?;
    let stored: i64 = sqlx::query_scalar(
        "SELECT COALESCE(SUM(length(data)), 0) FROM artifact_chunks
         WHERE upload_id = ?1",
    )
    .bind(&rec.upload_id)
    .fetch_one(&mut *tx)
    .await?;
    check_artifact_bytes(rec, stored)?;
    let replaced: Option<String> = sqlx::query_scalar(
        "DELETE FROM artifacts WHERE job_id = ?1 AND name = ?2 RETURNING upload_id",
    )
    .bind(rec.job_id)
    .bind(&rec.name)
    .fetch_optional(&mut *tx)
    .await?;
    let row = sqlx::query(&format!(
        "INSERT INTO artifacts ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
         RETURNING {COLUMNS}"
    ))
    .bind(rec.job_id)
    .bind(rec.attempt as i32)
    .bind(&rec.name)
    .bind(rec.size as i64)
    .bind(&rec.blake3)
    .bind(&rec.upload_id)
    .bind(now_ms())
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

pub async fn discard(pool: &SqlitePool, upload: &str) -> Result<()> {
    sqlx::query("DELETE FROM artifact_uploads WHERE id = ?1")
        .bind(upload)
        .execute(pool)
        .await?;
    Ok(())
}

pub async fn list(pool: &SqlitePool, job: JobId) -> Result<Vec<ArtifactRecord>> {
    let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM jobs WHERE id = ?1)")
        .bind(job)
        .fetch_one(pool)
        .await?;
    if !exists {
        return Err(Error::NotFound(format!("job {job} does not exist")));
    }
    let rows = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM artifacts WHERE job_id = ?1 ORDER BY name"
    ))
    .bind(job)
    .fetch_all(pool)
    .await?;
    rows.iter().map(record).collect()
}

pub async fn get(pool: &SqlitePool, job: JobId, name: &str) -> Result<ArtifactRecord> {
    let row = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM artifacts WHERE job_id = ?1 AND name = ?2"
    ))
    .bind(job)
    .bind(name)
    .fetch_optional(pool)
    .await?
    .ok_or_else(|| Error::NotFound(format!("job {job} has no artifact {name:?}")))?;
    record(&row)
}

pub async fn chunks(
    pool: &SqlitePool,
    upload: &str,
    from: u64,
    limit: u32,
) -> Result<Vec<(u64, Vec<u8>)>> {
    let rows: Vec<(i64, Vec<u8>)> = sqlx::query_as(
        "SELECT start, data FROM artifact_chunks WHERE upload_id = ?1 AND start >= ?2
         ORDER BY start LIMIT ?3",
    )
    .bind(upload)
    .bind(from as i64)
    .bind(i64::from(limit))
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(|(s, d)| (s as u64, d)).collect())
}

pub async fn delete(
    pool: &SqlitePool,
    job: JobId,
    attempt: u32,
    worker: &str,
    name: &str,
) -> Result<bool> {
    let mut tx = super::begin(pool).await?;
    let found = fence_row(&mut tx, job).await?;
    check_artifact_fence(job, attempt, worker, name, found)?;
    let removed: Option<String> = sqlx::query_scalar(
        "DELETE FROM artifacts WHERE job_id = ?1 AND name = ?2 RETURNING upload_id",
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

pub async fn purge_stale(pool: &SqlitePool, idle_ms: i64) -> Result<u64> {
    Ok(sqlx::query(
        "DELETE FROM artifact_uploads WHERE touched_at < ?1
           AND NOT EXISTS (SELECT 1 FROM artifacts a WHERE a.upload_id = artifact_uploads.id)",
    )
    .bind(now_ms() - idle_ms)
    .execute(pool)
    .await?
    .rows_affected())
}

/// The job's (state, attempt, worker) for the artifact fence.
async fn fence_row(
    conn: &mut sqlx::SqliteConnection,
    job: JobId,
) -> Result<Option<(i64, i64, Option<String>)>> {
    Ok(
        sqlx::query_as("SELECT state, attempt, worker_id FROM jobs WHERE id = ?1")
            .bind(job)
            .fetch_optional(conn)
            .await?,
    )
}
