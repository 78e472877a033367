//! Datasets and folds on SQLite: written once, read often; none of this is on the job path.

use sqlx::{Row, SqlitePool};

use crate::error::{Error, Result};
use crate::model::now_ms;
use crate::model::*;

const DATASET_COLUMNS: &str = "d.hash, d.manifest, d.summary, d.storage_path, d.total_bytes, \
    d.files, d.registered_at, \
    (SELECT json_group_array(name) FROM (SELECT n.name FROM dataset_names n WHERE n.hash = d.hash ORDER BY n.name)) AS names";

fn dataset(r: &sqlx::sqlite::SqliteRow) -> Result<DatasetRecord> {
    Ok(DatasetRecord {
        hash: r.try_get("hash")?,
        names: serde_json::from_str(&r.try_get::<String, _>("names")?)
            .map_err(|e| Error::Config(format!("bad dataset names in the database: {e}")))?,
        manifest: r.try_get("manifest")?,
        summary: r.try_get("summary")?,
        storage_path: r.try_get("storage_path")?,
        total_bytes: r.try_get::<i64, _>("total_bytes")? as u64,
        files: r.try_get::<i64, _>("files")? as u32,
        registered_at: r.try_get("registered_at")?,
    })
}

pub async fn register(pool: &SqlitePool, rec: &DatasetRecord, name: &str) -> Result<DatasetRecord> {
    let mut tx = super::begin(pool).await?;
    sqlx::query(
        "INSERT INTO datasets (hash, manifest, summary, storage_path, total_bytes, files,
            registered_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT (hash) DO NOTHING",
    )
    .bind(&rec.hash)
    .bind(&rec.manifest)
    .bind(&rec.summary)
    .bind(&rec.storage_path)
    .bind(rec.total_bytes as i64)
    .bind(rec.files as i32)
    .bind(now_ms())
    .execute(&mut *tx)
    .await?;
    let owner: String = sqlx::query_scalar(
        "INSERT INTO dataset_names (name, hash) VALUES (?1, ?2)
         ON CONFLICT (name) DO UPDATE SET name = EXCLUDED.name RETURNING hash",
    )
    .bind(name)
    .bind(&rec.hash)
    .fetch_one(&mut *tx)
    .await?;
    if owner != rec.hash {
        return Err(Error::AlreadyExists(format!(
            "dataset name {name:?} already names dataset {owner}, not {}; pick another name",
            rec.hash
        )));
    }
    tx.commit().await?;
    get(pool, &rec.hash).await
}

pub async fn get(pool: &SqlitePool, key: &str) -> Result<DatasetRecord> {
    let row = sqlx::query(&format!(
        "SELECT {DATASET_COLUMNS} FROM datasets d
         WHERE d.hash = ?1 OR d.hash = (SELECT hash FROM dataset_names WHERE name = ?1)"
    ))
    .bind(key)
    .fetch_optional(pool)
    .await?
    .ok_or_else(|| Error::NotFound(format!("no dataset has the hash or name {key:?}")))?;
    dataset(&row)
}

pub async fn list(pool: &SqlitePool) -> Result<Vec<DatasetRecord>> {
    let rows = sqlx::query(&format!(
        "SELECT {DATASET_COLUMNS} FROM datasets d ORDER BY d.registered_at, d.hash"
    ))
    .fetch_all(pool)
    .await?;
    rows.iter().map(dataset).collect()
}

fn folds(r: &sqlx::sqlite::SqliteRow) -> Result<FoldsRecord> {
    Ok(FoldsRecord {
        dataset_hash: r.try_get("dataset_hash")?,
        scheme: r.try_get("scheme")?,
        k: r.try_get::<i64, _>("k")? as u32,
        seed: r.try_get::<i64, _>("seed")? as u64,
        assignment: r.try_get("assignment")?,
        report: r.try_get("report")?,
        created_at: r.try_get("created_at")?,
    })
}

pub async fn put_folds(pool: &SqlitePool, rec: &FoldsRecord) -> Result<(FoldsRecord, bool)> {
    let inserted = sqlx::query(
        "INSERT INTO folds (dataset_hash, scheme, k, seed, assignment, report, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT DO NOTHING",
    )
    .bind(&rec.dataset_hash)
    .bind(&rec.scheme)
    .bind(rec.k as i32)
    .bind(rec.seed as i64)
    .bind(&rec.assignment)
    .bind(&rec.report)
    .bind(now_ms())
    .execute(pool)
    .await?
    .rows_affected()
        == 1;
    let stored = get_folds(pool, &rec.dataset_hash, &rec.scheme, rec.k, rec.seed)
        .await?
        .ok_or_else(|| Error::NotFound(format!("dataset {} does not exist", rec.dataset_hash)))?;
    Ok((stored, inserted))
}

pub async fn get_folds(
    pool: &SqlitePool,
    hash: &str,
    scheme: &str,
    k: u32,
    seed: u64,
) -> Result<Option<FoldsRecord>> {
    let row = sqlx::query(
        "SELECT * FROM folds WHERE dataset_hash = ?1 AND scheme = ?2 AND k = ?3 AND seed = ?4",
    )
    .bind(hash)
    .bind(scheme)
    .bind(k as i32)
    .bind(seed as i64)
    .fetch_optional(pool)
    .await?;
    row.as_ref().map(folds).transpose()
}
