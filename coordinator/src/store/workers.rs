//! The workers' contract: registration, keys, liveness. Both backends implement it once
//! (`sql.rs`); the statements that read alike on both are here, written once, and the rest
//! (arrays or JSON for kinds and tags) is each backend's `admin`.

use crate::domain::model::*;
use crate::error::{Error, Result};

/// Registered workers.
#[async_trait::async_trait]
pub trait WorkerStore: Send + Sync {
    /// Stores a new worker under `id` with the SHA-256 of its key (`AlreadyExists` when the id
    /// is taken).
    async fn register_worker(&self, id: &str, info: &WorkerInfo, key_hash: &str) -> Result<()>;

    /// A known worker registering again: its description is replaced, it is no longer
    /// deregistered and `last_seen = now`. `NotFound` when the id is unknown.
    async fn renew_worker(&self, id: &str, info: &WorkerInfo) -> Result<()>;

    /// The stored key hash of worker `id`, `None` when the id is unknown.
    async fn worker_key(&self, id: &str) -> Result<Option<String>>;

    /// `NotFound` "worker … is not registered" when the id is unknown.
    async fn deregister_worker(&self, worker_id: &str) -> Result<()>;

    /// Workers with `running_jobs` counted from the jobs table. Deregistered workers and workers
    /// not seen for `policy.worker_dead_after_ms` are left out unless `include_dead`.
    async fn list_workers(&self, include_dead: bool) -> Result<Vec<WorkerRecord>>;
}

/// What a call from an unknown or deregistered worker gets.
pub(crate) fn not_registered(worker_id: &str) -> Error {
    Error::NotFound(format!(
        "worker {worker_id} is not registered; register first"
    ))
}

macro_rules! for_backend {
    ($backend:ident) => {
        use crate::error::Result;
        use crate::store::workers::not_registered;
        use crate::store::$backend::dialect::{Pool, NOW};

        pub async fn worker_key(pool: &Pool, id: &str) -> Result<Option<String>> {
            Ok(
                sqlx::query_scalar("SELECT key_hash FROM workers WHERE id = $1")
                    .bind(id)
                    .fetch_optional(pool)
                    .await?,
            )
        }

        pub async fn deregister_worker(pool: &Pool, worker_id: &str) -> Result<()> {
            let n = sqlx::query(&format!(
                "UPDATE workers SET deregistered = TRUE, last_seen = {NOW} WHERE id = $1"
            ))
            .bind(worker_id)
            .execute(pool)
            .await?
            .rows_affected();
            if n == 0 {
                return Err(not_registered(worker_id));
            }
            Ok(())
        }
    };
}

pub(crate) mod postgres {
    for_backend!(postgres);
}

pub(crate) mod sqlite {
    for_backend!(sqlite);
}
