//! Metric names, in one place, and the Prometheus exporter set-up. Counters and latencies are
//! recorded where the events happen (`metrics::counter!(SUBMITTED)`); the gauges of what the
//! database holds (jobs by state and kind, workers alive) are sampled by [`sample`] every
//! [`SAMPLE_EVERY`], only when the exporter runs.

pub const SUBMITTED: &str = "stackhive_jobs_submitted_total";
pub const LEASED: &str = "stackhive_jobs_leased_total";
pub const COMPLETED: &str = "stackhive_jobs_completed_total";
pub const FAILED_REPORTS: &str = "stackhive_job_failures_total";
pub const STALE_REPORTS: &str = "stackhive_stale_reports_total";
pub const REAPED: &str = "stackhive_leases_expired_total";
pub const LEASE_SECONDS: &str = "stackhive_lease_query_seconds";
/// Latency of a Complete call (validation, fencing, storing the predictions).
pub const COMPLETE_SECONDS: &str = "stackhive_complete_seconds";
/// Jobs whose predictions were stored (completions with predictions, and imports).
pub const PREDICTIONS_STORED: &str = "stackhive_predictions_stored_total";
/// Failed attempts sent back to the queue for another try (label `why`: failure or handback).
pub const RETRIES: &str = "stackhive_job_retries_total";
/// Gauges sampled from the database.
pub const JOBS: &str = "stackhive_jobs";
pub const WORKERS_ALIVE: &str = "stackhive_workers_alive";
pub const DB_CONNECTIONS: &str = "stackhive_db_connections";

/// How often the gauges are sampled.
pub const SAMPLE_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// Serves `/metrics` on `addr` in the background.
pub fn install_prometheus(addr: std::net::SocketAddr) -> Result<(), String> {
    metrics_exporter_prometheus::PrometheusBuilder::new()
        .with_http_listener(addr)
        .install()
        .map_err(|e| format!("cannot start the metrics exporter on {addr}: {e}"))
}

/// Samples the database's gauges until `stop` turns true: jobs by state and kind (one count per
/// known kind), workers alive, and the connection pool's use.
pub async fn sample(
    store: std::sync::Arc<dyn crate::store::Store>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    use crate::domain::model::JobFilter;
    let states = |c: &crate::domain::model::StateCounts| {
        [
            ("blocked", c.blocked),
            ("queued", c.queued),
            ("running", c.running),
            ("succeeded", c.succeeded),
            ("failed", c.failed),
            ("cancelled", c.cancelled),
        ]
    };
    loop {
        // Jobs are read before workers and published after them, so a scrape that sees the jobs
        // a worker finished also sees that worker (it registered before it took them).
        let mut jobs = Vec::new();
        for kind in crate::domain::kinds::KNOWN_KINDS {
            let filter = JobFilter {
                kind: Some(kind.to_string()),
                ..Default::default()
            };
            if let Ok(c) = store.count_states(&filter).await {
                jobs.push((*kind, c));
            }
        }
        if let Ok(w) = store.list_workers(false).await {
            metrics::gauge!(WORKERS_ALIVE).set(w.len() as f64);
        }
        for (kind, c) in &jobs {
            for (state, n) in states(c) {
                metrics::gauge!(JOBS, "state" => state, "kind" => *kind).set(n as f64);
            }
        }
        let (size, idle) = store.pool_use();
        metrics::gauge!(DB_CONNECTIONS, "use" => "open").set(f64::from(size));
        metrics::gauge!(DB_CONNECTIONS, "use" => "idle").set(idle as f64);
        tokio::select! {
            _ = tokio::time::sleep(SAMPLE_EVERY) => {}
            _ = stop.changed() => return,
        }
    }
}
