//! Background upkeep of one coordinator: returns expired leases to the queue (or fails jobs past
//! their crash limit), removes artifact uploads abandoned mid-way and dataset files that no
//! registration owns (staging folders of killed uploads, content left by a crash between placing
//! and registering), feeds running sweeps a window of jobs, and applies retention. Every
//! coordinator runs it; the store makes concurrent runs safe (`SKIP LOCKED` on PostgreSQL).

use std::sync::Arc;
use std::time::Duration;

use crate::domain::model::now_ms;
use crate::metrics as m;
use crate::services::artifacts::STALE_UPLOAD_MS;
use crate::services::datasets::DatasetFiles;
use crate::store::Store;

/// Dataset files untouched this long with no registration are leftovers. Long enough that an
/// upload still hashing or registering is never taken for one.
pub const DATASET_LEFTOVER_AGE: Duration = Duration::from_secs(3600);

pub async fn run(
    store: Arc<dyn Store>,
    files: DatasetFiles,
    max_batch: u32,
    interval: Duration,
    retention_hours: u32,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_purge = std::time::Instant::now();
    purge_dataset_leftovers(&*store, &files, DATASET_LEFTOVER_AGE).await;
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
        if let Err(e) = crate::services::sweeps::feed(&store, &files, max_batch).await {
            tracing::warn!(error = %e, "feeding sweeps failed");
        }
        let purge_now = last_purge.elapsed() > Duration::from_secs(60);
        if purge_now {
            last_purge = std::time::Instant::now();
            match store.purge_stale_uploads(STALE_UPLOAD_MS).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(removed = n, "abandoned artifact uploads removed"),
                Err(e) => tracing::warn!(error = %e, "removing abandoned artifact uploads failed"),
            }
            purge_dataset_leftovers(&*store, &files, DATASET_LEFTOVER_AGE).await;
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

/// Removes staging folders idle for `age`, and content folders older than `age` that no
/// registered dataset names. Returns how many folders went.
pub async fn purge_dataset_leftovers(
    store: &dyn Store,
    files: &DatasetFiles,
    age: Duration,
) -> usize {
    let f = files.clone();
    let mut removed = tokio::task::spawn_blocking(move || f.purge_incoming(age))
        .await
        .unwrap_or(0);
    for hash in files.stored_hashes() {
        if files.age_of(&hash).is_none_or(|a| a <= age) {
            continue;
        }
        match store.get_dataset(&hash).await {
            Err(crate::Error::NotFound(_)) => {
                if files.remove(&hash).await.is_ok() {
                    removed += 1;
                }
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, "cannot look up stored datasets; leftovers kept");
                break;
            }
        }
    }
    if removed > 0 {
        tracing::info!(removed, "dataset files without a registration removed");
    }
    removed
}
