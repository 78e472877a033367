//! The worker's Prometheus metrics (issue 16), served on `--metrics-addr`: its slots and GPUs,
//! total and busy, each GPU's memory, and its jobs by kind and outcome with their durations.
//! Names in one place; values recorded where jobs start and end (`daemon`).

use std::net::SocketAddr;
use std::time::Duration;

pub const SLOTS: &str = "stackhive_worker_slots";
pub const GPUS: &str = "stackhive_worker_gpus";
pub const GPU_MEMORY_BYTES: &str = "stackhive_worker_gpu_memory_bytes";
pub const JOBS: &str = "stackhive_worker_jobs_total";
pub const JOB_SECONDS: &str = "stackhive_worker_job_seconds";

/// Serves `/metrics` on `addr` and publishes what the worker has.
pub fn install(addr: SocketAddr, slots: u32, gpu_mem_mb: &[u64]) -> Result<(), String> {
    metrics_exporter_prometheus::PrometheusBuilder::new()
        .with_http_listener(addr)
        .install()
        .map_err(|e| format!("cannot start the metrics exporter on {addr}: {e}"))?;
    metrics::gauge!(SLOTS, "use" => "total").set(f64::from(slots));
    metrics::gauge!(SLOTS, "use" => "busy").set(0.0);
    metrics::gauge!(GPUS, "use" => "total").set(gpu_mem_mb.len() as f64);
    metrics::gauge!(GPUS, "use" => "busy").set(0.0);
    for (i, mb) in gpu_mem_mb.iter().enumerate() {
        metrics::gauge!(GPU_MEMORY_BYTES, "gpu" => i.to_string()).set(*mb as f64 * 1048576.0);
    }
    Ok(())
}

/// A job took `slots` slots and `gpus` GPUs (negative when it gave them back).
pub fn hold(slots: i64, gpus: i64) {
    metrics::gauge!(SLOTS, "use" => "busy").increment(slots as f64);
    metrics::gauge!(GPUS, "use" => "busy").increment(gpus as f64);
}

/// A job of `kind` ended with `outcome` after `took`.
pub fn finished(kind: &str, outcome: &'static str, took: Duration) {
    metrics::counter!(JOBS, "kind" => kind.to_string(), "outcome" => outcome).increment(1);
    metrics::histogram!(JOB_SECONDS, "kind" => kind.to_string(), "outcome" => outcome)
        .record(took.as_secs_f64());
}
