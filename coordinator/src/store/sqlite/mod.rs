//! SQLite job store, the embedded single-machine default: one file, no server.
//!
//! All writes go through ONE connection (a pool of size 1) and each is one short
//! `BEGIN IMMEDIATE` transaction, so writers queue in the pool instead of failing with
//! SQLITE_BUSY or deadlocking on a read-to-write lock upgrade. Reads (get, list, count) use a
//! separate small pool; WAL mode lets them run beside the writer. `synchronous = FULL` makes
//! every commit durable before the call returns: no accepted job may be lost. Times come from
//! the coordinator process clock (`now_ms()`), which is fine with one process per file.
//!
//! Must not: hold a transaction across anything but its own statements, or loop over jobs one
//! statement at a time on the hot paths (submit, lease, heartbeat, complete); those bind lists
//! as JSON text to `json_each` (or multi-row INSERTs) so a batch costs a few statements.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use tokio::sync::Notify;

use crate::domain::model::*;
use crate::error::{Error, Result};

pub(crate) mod admin;
pub(crate) mod dialect;
pub(crate) mod rows;
mod run;
mod submit;

/// Connections for get/list/count; WAL readers never wait for the writer.
const READ_CONNECTIONS: u32 = 4;

pub struct SqliteStore {
    /// Exactly one connection: every write transaction runs on it, one after another.
    write: SqlitePool,
    read: SqlitePool,
    policy: Policy,
    notify: Arc<Notify>,
}

impl SqliteStore {
    /// Opens (creating on first use) the database named by `sqlite://path` or
    /// `sqlite:///abs/path`, and applies migrations before returning.
    pub async fn open(url: &str, policy: Policy) -> Result<SqliteStore> {
        let base: SqliteConnectOptions = url.parse().map_err(|e| {
            Error::Config(format!(
                "invalid sqlite url {url:?}: {e}; expected sqlite://path"
            ))
        })?;
        let base = base
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(5))
            .foreign_keys(true)
            // 32 MiB of page cache per connection: the queue and lease indexes stay hot.
            .pragma("cache_size", "-32768");
        let in_memory = url.contains(":memory:") || url.contains("mode=memory");
        if !in_memory {
            create_parent_dir(base.get_filename())?;
        }

        // WAL is a property of the file: set once, by the writer, before any reader connects.
        let write = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            // Keep the one connection (and its prepared statements) for the store's lifetime.
            .idle_timeout(None)
            .max_lifetime(None)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(
                base.clone()
                    .create_if_missing(true)
                    .journal_mode(SqliteJournalMode::Wal),
            )
            .await?;
        sqlx::migrate!("../migrations/sqlite").run(&write).await?;

        // An in-memory database exists only within its connections' shared cache; one pool
        // is simpler and just as fast there.
        let read = if in_memory {
            write.clone()
        } else {
            SqlitePoolOptions::new()
                .max_connections(READ_CONNECTIONS)
                .acquire_timeout(Duration::from_secs(30))
                .connect_with(base.read_only(true))
                .await?
        };
        Ok(SqliteStore {
            write,
            read,
            policy,
            notify: Arc::new(Notify::new()),
        })
    }

    /// Wakes the long-polls of this process (there are no other coordinators on one file).
    fn reader(&self) -> &SqlitePool {
        &self.read
    }

    fn writer(&self) -> &SqlitePool {
        &self.write
    }

    fn pool_counts(&self) -> (u32, usize) {
        (
            self.write.size() + self.read.size(),
            self.write.num_idle() + self.read.num_idle(),
        )
    }

    /// Tokens are looked up on every call (microseconds on SQLite): nothing to cache.
    fn revocation_epoch(&self) -> Option<u64> {
        None
    }
}

fn create_parent_dir(file: &Path) -> Result<()> {
    match file.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => std::fs::create_dir_all(dir).map_err(|e| {
            Error::Config(format!(
                "cannot create the database directory {}: {e}",
                dir.display()
            ))
        }),
        _ => Ok(()),
    }
}

crate::store::sql::sql_store!(SqliteStore, sqlite);
