//! PostgreSQL job store, for clusters: claims use `FOR UPDATE SKIP LOCKED` so many coordinators
//! and workers claim concurrently without blocking each other, and `LISTEN/NOTIFY` on
//! `stackhive_work` wakes the long-polls of every coordinator. Times come from the database
//! clock (`sh_now_ms()`), never from a coordinator's.
//!
//! Must not: hold a transaction across a network call to a worker, or loop over jobs one
//! statement at a time on the hot paths (submit, lease, heartbeat, complete).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions};
use sqlx::PgPool;
use tokio::sync::Notify;

use crate::domain::model::*;
use crate::error::{Error, Result};

pub(crate) mod admin;
pub(crate) mod dialect;
pub(crate) mod rows;
mod run;
mod submit;

pub(crate) const WORK_CHANNEL: &str = "stackhive_work";
/// Revoked tokens: every coordinator drops the tokens it had verified.
const TOKENS_CHANNEL: &str = "stackhive_tokens";

pub struct PgStore {
    pool: PgPool,
    policy: Policy,
    notify: Arc<Notify>,
    /// Odd while the LISTEN connection is up; bumped by two on each token revocation anywhere in
    /// the cluster, and made even whenever the connection is lost (a revocation may go unheard
    /// until it is back).
    token_epoch: Arc<AtomicU64>,
    _listener: AbortOnDrop,
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl PgStore {
    /// Connects, applies migrations and starts the LISTEN task.
    pub async fn connect(url: &str, policy: Policy, max_connections: u32) -> Result<Self> {
        let opts: PgConnectOptions = url
            .parse()
            .map_err(|e| Error::Config(format!("invalid postgres url {url:?}: {e}")))?;
        let pool = PgPoolOptions::new()
            .max_connections(max_connections.max(2))
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(opts)
            .await?;
        Self::from_pool(pool, policy).await
    }

    pub async fn from_pool(pool: PgPool, policy: Policy) -> Result<Self> {
        sqlx::migrate!("../migrations/postgres").run(&pool).await?;
        let notify = Arc::new(Notify::new());
        let token_epoch = Arc::new(AtomicU64::new(0));
        let listener = tokio::spawn(listen(pool.clone(), notify.clone(), token_epoch.clone()));
        Ok(Self {
            pool,
            policy,
            notify,
            token_epoch,
            _listener: AbortOnDrop(listener),
        })
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    fn reader(&self) -> &PgPool {
        &self.pool
    }

    fn writer(&self) -> &PgPool {
        &self.pool
    }

    fn pool_counts(&self) -> (u32, usize) {
        (self.pool.size(), self.pool.num_idle())
    }

    /// While LISTEN is down a revocation could go unheard: no caching then.
    fn revocation_epoch(&self) -> Option<u64> {
        let epoch = self.token_epoch.load(Ordering::Acquire);
        (epoch % 2 == 1).then_some(epoch)
    }
}

/// Relays NOTIFYs from any coordinator to this process's long-polls and token caches.
/// PgListener reconnects by itself; on an error we wake everyone anyway (a missed notification
/// only costs a poll) and bump the token epoch (a missed revocation must not linger).
async fn listen(pool: PgPool, notify: Arc<Notify>, token_epoch: Arc<AtomicU64>) {
    let set_listening = |up: bool| {
        let e = token_epoch.load(Ordering::Acquire);
        if (e % 2 == 1) != up {
            token_epoch.fetch_add(1, Ordering::AcqRel);
        }
    };
    loop {
        set_listening(false);
        let mut listener = match PgListener::connect_with(&pool).await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "cannot open LISTEN connection; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        if let Err(e) = listener.listen_all([WORK_CHANNEL, TOKENS_CHANNEL]).await {
            tracing::warn!(error = %e, "LISTEN failed; retrying");
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        }
        set_listening(true);
        // try_recv, not recv: recv reconnects silently and drops what was sent meanwhile;
        // here a lost connection is noticed (Ok(None)) and a fresh listener is made.
        loop {
            match listener.try_recv().await {
                Ok(Some(n)) if n.channel() == TOKENS_CHANNEL => {
                    token_epoch.fetch_add(2, Ordering::AcqRel);
                }
                Ok(Some(_)) => notify.notify_waiters(),
                Ok(None) | Err(_) => {
                    tracing::warn!("LISTEN connection lost; reconnecting");
                    set_listening(false);
                    notify.notify_waiters();
                    break;
                }
            }
        }
    }
}

crate::store::sql::sql_store!(PgStore, postgres);
