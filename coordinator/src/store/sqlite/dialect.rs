//! SQLite's side of the SQL the two stores share (`store::artifacts`, `store::datasets`): the
//! types, the clock, the row lock of a fenced write (none: the write transaction holds the
//! database) and how a write transaction starts. Nothing else belongs here.

use crate::error::Result;

pub type Db = sqlx::Sqlite;
pub type Row = sqlx::sqlite::SqliteRow;
pub type Pool = sqlx::SqlitePool;
pub type Tx = sqlx::Transaction<'static, Db>;

/// Milliseconds since the epoch (SQLite ≥ 3.42; sqlx bundles 3.46).
pub const NOW: &str = "CAST(unixepoch('subsec') * 1000 AS INTEGER)";

/// `BEGIN IMMEDIATE` already holds the database against every other writer.
pub const LOCK_SHARE: &str = "";

/// The names of dataset `d`, as the text of a JSON array in name order.
pub const DATASET_NAMES: &str = "(SELECT json_group_array(name) FROM \
    (SELECT n.name FROM dataset_names n WHERE n.hash = d.hash ORDER BY n.name))";

/// A write transaction holding the write lock from its first statement, so the checks it makes
/// still hold when it writes (another process on the same file waits `busy_timeout`).
pub async fn begin(pool: &Pool) -> Result<Tx> {
    Ok(pool.begin_with("BEGIN IMMEDIATE").await?)
}

/// Nothing to tell: no coordinator caches tokens on SQLite (`revocation_epoch` is `None`).
pub async fn token_revoked(_tx: &mut Tx, _id: &str) -> Result<()> {
    Ok(())
}
