//! Background upkeep of one coordinator: returns expired leases to the queue (or fails jobs
//! past their crash limit), removes artifact uploads abandoned mid-way, and applies retention. Every coordinator runs it; the store makes
//! concurrent runs safe (`SKIP LOCKED` on PostgreSQL).

use std::sync::Arc;
use std::time::Duration;

use crate::artifacts::STALE_UPLOAD_MS;
use crate::metrics as m;
use crate::model::now_ms;
use crate::store::Store;

pub async fn run(
    store: Arc<dyn Store>,
    interval: Duration,
    retention_hours: u32,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_purge = std::time::Instant::now();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return,
        }
        match store.reap_expired().await {
            Ok(out) => {
                let n = out.requeued.len() + out.failed.len() + out.cancelled.len();
                if n > 0 {
                    metrics::counter!(m::REAPED).increment(n as u64);
                    tracing::warn!(requeued = ?out.requeued, failed = ?out.failed,
                        cancelled = ?out.cancelled, "expired leases reclaimed");
                }
            }
            Err(e) => tracing::warn!(error = %e, "reaping expired leases failed"),
        }
        let purge_now = last_purge.elapsed() > Duration::from_secs(60);
        if purge_now {
            last_purge = std::time::Instant::now();
            match store.purge_stale_uploads(STALE_UPLOAD_MS).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(removed = n, "abandoned artifact uploads removed"),
                Err(e) => tracing::warn!(error = %e, "removing abandoned artifact uploads failed"),
            }
        }
        if retention_hours > 0 && purge_now {
            let before = now_ms() - retention_hours as i64 * 3_600_000;
            match store.purge_finished(before, 10_000).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(deleted = n, "finished jobs past retention deleted"),
                Err(e) => tracing::warn!(error = %e, "retention purge failed"),
            }
        }
    }
}
