//! Sweep records (issue 12), written once for both backends like the tokens. Advancing a
//! sweep is a compare-and-set on `submitted`, so two coordinators feeding the same sweep never
//! both advance it.

use crate::domain::model::*;
use crate::error::Result;

/// Sweeps of level-2 models.
#[async_trait::async_trait]
pub trait SweepStore: Send + Sync {
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
}

macro_rules! for_backend {
    ($db:ty, $row:ty) => {
        use sqlx::Row;

        use crate::error::{Error, Result};
        use crate::domain::model::{Millis, SweepRecord};

        type Conn = <$db as sqlx::Database>::Connection;

        const COLUMNS: &str = "id, experiment, features, definition, models, n, submitted, seed, \
                               cpu_slots, priority, state, error, created_at, updated_at";

        fn record(r: &$row) -> Result<SweepRecord> {
            let models: String = r.try_get("models")?;
            Ok(SweepRecord {
                id: r.try_get("id")?,
                experiment: r.try_get("experiment")?,
                features: r.try_get("features")?,
                definition: r.try_get("definition")?,
                models: serde_json::from_str(&models)
                    .map_err(|e| Error::Config(format!("sweep models are unreadable: {e}")))?,
                n: r.try_get::<i64, _>("n")? as u64,
                submitted: r.try_get::<i64, _>("submitted")? as u64,
                seed: r.try_get::<i64, _>("seed")? as u64,
                cpu_slots: r.try_get::<i64, _>("cpu_slots")? as u32,
                priority: r.try_get::<i64, _>("priority")? as i32,
                state: r.try_get("state")?,
                error: r.try_get("error")?,
                created_at: r.try_get("created_at")?,
                updated_at: r.try_get("updated_at")?,
            })
        }

        pub async fn create(conn: &mut Conn, s: &SweepRecord) -> Result<SweepRecord> {
            let row = sqlx::query(&format!(
                "INSERT INTO sweeps (experiment, features, definition, models, n, submitted, seed,
                    cpu_slots, priority, state, error, created_at, updated_at)
                 VALUES ($1, $2, $3, $4, $5, 0, $6, $7, $8, $9, '', $10, $10)
                 RETURNING {COLUMNS}"
            ))
            .bind(&s.experiment)
            .bind(&s.features)
            .bind(&s.definition)
            .bind(serde_json::to_string(&s.models).expect("models serialise"))
            .bind(s.n as i64)
            .bind(s.seed as i64)
            .bind(i64::from(s.cpu_slots))
            .bind(i64::from(s.priority))
            .bind(&s.state)
            .bind(s.created_at)
            .fetch_one(&mut *conn)
            .await?;
            record(&row)
        }

        pub async fn get(conn: &mut Conn, id: i64) -> Result<SweepRecord> {
            let row = sqlx::query(&format!("SELECT {COLUMNS} FROM sweeps WHERE id = $1"))
                .bind(id)
                .fetch_optional(&mut *conn)
                .await?
                .ok_or_else(|| Error::NotFound(format!("sweep {id} does not exist")))?;
            record(&row)
        }

        /// All sweeps, or those in `state`.
        pub async fn list(conn: &mut Conn, state: Option<&str>) -> Result<Vec<SweepRecord>> {
            let rows = sqlx::query(&format!(
                "SELECT {COLUMNS} FROM sweeps WHERE ($1 = '' OR state = $1) ORDER BY id"
            ))
            .bind(state.unwrap_or(""))
            .fetch_all(&mut *conn)
            .await?;
            rows.iter().map(record).collect()
        }

        /// Sets the state (and error), the feature set, `n` or `submitted`; `submitted` only
        /// when it still equals `expect_submitted`. Returns whether the row changed.
        #[allow(clippy::too_many_arguments)]
        pub async fn update(
            conn: &mut Conn,
            id: i64,
            expect_submitted: u64,
            submitted: u64,
            n: u64,
            state: &str,
            features: &str,
            error: &str,
            now: Millis,
        ) -> Result<bool> {
            let n = sqlx::query(
                "UPDATE sweeps SET submitted = $3, n = $4, state = $5, features = $6, error = $7,
                    updated_at = $8
                 WHERE id = $1 AND submitted = $2",
            )
            .bind(id)
            .bind(expect_submitted as i64)
            .bind(submitted as i64)
            .bind(n as i64)
            .bind(state)
            .bind(features)
            .bind(error)
            .bind(now)
            .execute(&mut *conn)
            .await?
            .rows_affected();
            Ok(n == 1)
        }
    };
}

pub(crate) mod postgres {
    for_backend!(sqlx::Postgres, sqlx::postgres::PgRow);
}

pub(crate) mod sqlite {
    for_backend!(sqlx::Sqlite, sqlx::sqlite::SqliteRow);
}
