//! Metric names, in one place, and the Prometheus exporter set-up. Values are recorded where
//! the events happen (`metrics::counter!(SUBMITTED)`), never computed from the database here.

pub const SUBMITTED: &str = "stackhive_jobs_submitted_total";
pub const LEASED: &str = "stackhive_jobs_leased_total";
pub const COMPLETED: &str = "stackhive_jobs_completed_total";
pub const FAILED_REPORTS: &str = "stackhive_job_failures_total";
pub const STALE_REPORTS: &str = "stackhive_stale_reports_total";
pub const REAPED: &str = "stackhive_leases_expired_total";
pub const LEASE_SECONDS: &str = "stackhive_lease_query_seconds";

/// Serves `/metrics` on `addr` in the background.
pub fn install_prometheus(addr: std::net::SocketAddr) -> Result<(), String> {
    metrics_exporter_prometheus::PrometheusBuilder::new()
        .with_http_listener(addr)
        .install()
        .map_err(|e| format!("cannot start the metrics exporter on {addr}: {e}"))
}
