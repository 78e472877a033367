//! PostgreSQL's side of the SQL the two stores share (`store::artifacts`, `store::datasets`):
//! the types, the database's clock, the row lock of a fenced write and how a write transaction
//! starts. Nothing else belongs here.

use crate::error::Result;

pub type Db = sqlx::Postgres;
pub type Row = sqlx::postgres::PgRow;
pub type Pool = sqlx::PgPool;
pub type Tx = sqlx::Transaction<'static, Db>;

/// Milliseconds since the epoch by the database's clock: one clock for every coordinator.
pub const NOW: &str = "sh_now_ms()";

/// Ends a read of a job row inside a fenced write: a claim, expiry or completion racing the
/// write waits for its commit.
pub const LOCK_SHARE: &str = "FOR SHARE";

/// The names of dataset `d`, as the text of a JSON array in name order.
pub const DATASET_NAMES: &str = "(SELECT COALESCE(json_agg(n.name ORDER BY n.name), '[]')::text \
    FROM dataset_names n WHERE n.hash = d.hash)";

pub async fn begin(pool: &Pool) -> Result<Tx> {
    Ok(pool.begin().await?)
}

/// Every coordinator hears of a revocation at commit and drops the tokens it had verified.
pub async fn token_revoked(tx: &mut Tx, id: &str) -> Result<()> {
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(super::TOKENS_CHANNEL)
        .bind(id)
        .execute(&mut **tx)
        .await?;
    Ok(())
}
