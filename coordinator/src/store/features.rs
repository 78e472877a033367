//! Feature sets (issue 12), written once for both backends like the tokens: `$N` placeholders
//! and plain columns, one body compiled per backend. A set's row and its chunks are written in
//! one transaction, so a set is either whole or absent.
//!
//! Must not: replace a stored set (an id names its content forever), or give a name to a
//! second set.

use crate::domain::model::*;
use crate::error::Result;

/// Level-2 feature sets and their matrices.
#[async_trait::async_trait]
pub trait FeatureStore: Send + Sync {
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
}

use crate::error::Error;

/// Rows of matrix bytes.
pub const CHUNK: usize = 1 << 20;

fn name_taken(name: &str, id: &str) -> Error {
    Error::AlreadyExists(format!(
        "feature set name {name} is already used by feature set {id}"
    ))
}

macro_rules! for_backend {
    ($db:ty, $row:ty) => {
        use sqlx::Row;

        use super::{name_taken, CHUNK};
        use crate::domain::model::FeatureSetRecord;
        use crate::error::{Error, Result};

        type Conn = <$db as sqlx::Database>::Connection;

        const COLUMNS: &str = "id, definition, info, size, blake3, created_at";

        fn record(r: &$row, names: Vec<String>) -> Result<FeatureSetRecord> {
            Ok(FeatureSetRecord {
                id: r.try_get("id")?,
                names,
                definition: r.try_get("definition")?,
                info: r.try_get("info")?,
                size: r.try_get::<i64, _>("size")? as u64,
                blake3: r.try_get("blake3")?,
                created_at: r.try_get("created_at")?,
            })
        }

        async fn names(conn: &mut Conn, id: &str) -> Result<Vec<String>> {
            Ok(
                sqlx::query_scalar(
                    "SELECT name FROM feature_set_names WHERE id = $1 ORDER BY name",
                )
                .bind(id)
                .fetch_all(&mut *conn)
                .await?,
            )
        }

        /// Stores the set and its bytes unless a set with this id exists, then adds `name`.
        /// Returns the stored record and whether this call stored the bytes.
        pub async fn put(
            conn: &mut Conn,
            rec: &FeatureSetRecord,
            bytes: &[u8],
            name: Option<&str>,
        ) -> Result<(FeatureSetRecord, bool)> {
            let inserted = sqlx::query(&format!(
                "INSERT INTO feature_sets ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6)
                 ON CONFLICT (id) DO NOTHING"
            ))
            .bind(&rec.id)
            .bind(&rec.definition)
            .bind(&rec.info)
            .bind(rec.size as i64)
            .bind(&rec.blake3)
            .bind(rec.created_at)
            .execute(&mut *conn)
            .await?
            .rows_affected()
                == 1;
            if inserted {
                for (i, part) in bytes.chunks(CHUNK).enumerate() {
                    sqlx::query("INSERT INTO feature_chunks (id, start, data) VALUES ($1, $2, $3)")
                        .bind(&rec.id)
                        .bind((i * CHUNK) as i64)
                        .bind(part)
                        .execute(&mut *conn)
                        .await?;
                }
            }
            if let Some(name) = name {
                let owner: Option<String> =
                    sqlx::query_scalar("SELECT id FROM feature_set_names WHERE name = $1")
                        .bind(name)
                        .fetch_optional(&mut *conn)
                        .await?;
                match owner {
                    Some(id) if id != rec.id => return Err(name_taken(name, &id)),
                    Some(_) => {}
                    None => {
                        sqlx::query("INSERT INTO feature_set_names (name, id) VALUES ($1, $2)")
                            .bind(name)
                            .bind(&rec.id)
                            .execute(&mut *conn)
                            .await?;
                    }
                }
            }
            let stored = get(conn, &rec.id).await?;
            Ok((stored, inserted))
        }

        /// By id or by name.
        pub async fn get(conn: &mut Conn, key: &str) -> Result<FeatureSetRecord> {
            let row = sqlx::query(&format!(
                "SELECT {COLUMNS} FROM feature_sets
                 WHERE id = $1 OR id = (SELECT id FROM feature_set_names WHERE name = $1)"
            ))
            .bind(key)
            .fetch_optional(&mut *conn)
            .await?
            .ok_or_else(|| Error::NotFound(format!("no feature set has the id or name {key:?}")))?;
            let id: String = row.try_get("id")?;
            let names = names(conn, &id).await?;
            record(&row, names)
        }

        pub async fn list(conn: &mut Conn) -> Result<Vec<FeatureSetRecord>> {
            let rows = sqlx::query(&format!(
                "SELECT {COLUMNS} FROM feature_sets ORDER BY created_at, id"
            ))
            .fetch_all(&mut *conn)
            .await?;
            let mut out = Vec::with_capacity(rows.len());
            for r in rows {
                let id: String = r.try_get("id")?;
                let n = names(conn, &id).await?;
                out.push(record(&r, n)?);
            }
            Ok(out)
        }

        /// Up to `limit` chunks starting at byte `from` or later, in byte order.
        pub async fn chunks(
            conn: &mut Conn,
            id: &str,
            from: u64,
            limit: u32,
        ) -> Result<Vec<(u64, Vec<u8>)>> {
            let rows: Vec<(i64, Vec<u8>)> = sqlx::query_as(
                "SELECT start, data FROM feature_chunks WHERE id = $1 AND start >= $2
                 ORDER BY start LIMIT $3",
            )
            .bind(id)
            .bind(from as i64)
            .bind(i64::from(limit))
            .fetch_all(&mut *conn)
            .await?;
            Ok(rows.into_iter().map(|(s, d)| (s as u64, d)).collect())
        }
    };
}

pub(crate) mod postgres {
    for_backend!(sqlx::Postgres, sqlx::postgres::PgRow);
}

pub(crate) mod sqlite {
    for_backend!(sqlx::Sqlite, sqlx::sqlite::SqliteRow);
}
