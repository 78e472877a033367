//! Datasets and folds, written once for both backends over their dialects: written once, read
//! often; none of this is on the job path. A dataset's content row is stored once per hash and
//! may carry several names; a name belongs to one content.

use crate::domain::model::*;
use crate::error::Result;

/// Registered datasets and their stored folds.
#[async_trait::async_trait]
pub trait DatasetStore: Send + Sync {
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
}

macro_rules! for_backend {
    ($backend:ident) => {
        use sqlx::Row as _;

        use crate::error::{Error, Result};
        use crate::domain::model::*;
        use crate::store::$backend::dialect::{self, Pool, Row, DATASET_NAMES, NOW};

        fn dataset_columns() -> String {
            format!(
                "d.hash, d.manifest, d.summary, d.storage_path, d.total_bytes, \
                 CAST(d.files AS BIGINT) AS files, d.registered_at, {DATASET_NAMES} AS names"
            )
        }

        fn dataset(r: &Row) -> Result<DatasetRecord> {
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

        pub async fn register(pool: &Pool, rec: &DatasetRecord, name: &str) -> Result<DatasetRecord> {
            let mut tx = dialect::begin(pool).await?;
            sqlx::query(&format!(
                "INSERT INTO datasets (hash, manifest, summary, storage_path, total_bytes, files,
                    registered_at)
                 VALUES ($1, $2, $3, $4, $5, $6, {NOW}) ON CONFLICT (hash) DO NOTHING"
            ))
            .bind(&rec.hash)
            .bind(&rec.manifest)
            .bind(&rec.summary)
            .bind(&rec.storage_path)
            .bind(rec.total_bytes as i64)
            .bind(rec.files as i32)
            .execute(&mut *tx)
            .await?;
            let owner: String = sqlx::query_scalar(
                "INSERT INTO dataset_names (name, hash) VALUES ($1, $2)
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

        pub async fn get(pool: &Pool, key: &str) -> Result<DatasetRecord> {
            let row = sqlx::query(&format!(
                "SELECT {} FROM datasets d
                 WHERE d.hash = $1 OR d.hash = (SELECT hash FROM dataset_names WHERE name = $1)",
                dataset_columns()
            ))
            .bind(key)
            .fetch_optional(pool)
            .await?
            .ok_or_else(|| Error::NotFound(format!("no dataset has the hash or name {key:?}")))?;
            dataset(&row)
        }

        pub async fn list(pool: &Pool) -> Result<Vec<DatasetRecord>> {
            let rows = sqlx::query(&format!(
                "SELECT {} FROM datasets d ORDER BY d.registered_at, d.hash",
                dataset_columns()
            ))
            .fetch_all(pool)
            .await?;
            rows.iter().map(dataset).collect()
        }

        fn folds(r: &Row) -> Result<FoldsRecord> {
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

        pub async fn put_folds(pool: &Pool, rec: &FoldsRecord) -> Result<(FoldsRecord, bool)> {
            let inserted = sqlx::query(&format!(
                "INSERT INTO folds (dataset_hash, scheme, k, seed, assignment, report, created_at)
                 VALUES ($1, $2, $3, $4, $5, $6, {NOW}) ON CONFLICT DO NOTHING"
            ))
            .bind(&rec.dataset_hash)
            .bind(&rec.scheme)
            .bind(rec.k as i32)
            .bind(rec.seed as i64)
            .bind(&rec.assignment)
            .bind(&rec.report)
            .execute(pool)
            .await?
            .rows_affected()
                == 1;
            let stored = get_folds(pool, &rec.dataset_hash, &rec.scheme, rec.k, rec.seed)
                .await?
                .ok_or_else(|| {
                    Error::NotFound(format!("dataset {} does not exist", rec.dataset_hash))
                })?;
            Ok((stored, inserted))
        }

        pub async fn get_folds(
            pool: &Pool,
            hash: &str,
            scheme: &str,
            k: u32,
            seed: u64,
        ) -> Result<Option<FoldsRecord>> {
            let row = sqlx::query(
                "SELECT dataset_hash, scheme, CAST(k AS BIGINT) AS k, seed, assignment, report,
                        created_at
                 FROM folds WHERE dataset_hash = $1 AND scheme = $2 AND k = $3 AND seed = $4",
            )
            .bind(hash)
            .bind(scheme)
            .bind(k as i32)
            .bind(seed as i64)
            .fetch_optional(pool)
            .await?;
            row.as_ref().map(folds).transpose()
        }
    };
}

pub(crate) mod postgres {
    for_backend!(postgres);
}

pub(crate) mod sqlite {
    for_backend!(sqlite);
}
