//! Coordinator settings: every flag also reads a `STACKHIVE_*` environment variable.

use std::net::SocketAddr;

use crate::model::Policy;

#[derive(clap::Args, Clone, Debug)]
pub struct CoordinatorConfig {
    /// Address to serve gRPC on (the listener passed to `run` wins when one is given).
    #[arg(long, env = "STACKHIVE_LISTEN", default_value = "127.0.0.1:50051")]
    pub listen: SocketAddr,

    /// Job store: postgres://user@host/db for a cluster, sqlite://path for one machine.
    #[arg(long, env = "STACKHIVE_DB", default_value = "sqlite://stackhive.db")]
    pub db: String,

    /// Maximum database connections of this coordinator.
    #[arg(long, env = "STACKHIVE_DB_MAX_CONNECTIONS", default_value_t = 16)]
    pub db_max_connections: u32,

    /// Lease length; a worker that misses heartbeats this long loses its jobs.
    #[arg(long, env = "STACKHIVE_LEASE_TTL_MS", default_value_t = 30_000)]
    pub lease_ttl_ms: u32,

    /// How often workers are told to heartbeat (default: a third of the lease).
    #[arg(long, env = "STACKHIVE_HEARTBEAT_INTERVAL_MS")]
    pub heartbeat_interval_ms: Option<u32>,

    /// How often expired leases are looked for.
    #[arg(long, env = "STACKHIVE_REAP_INTERVAL_MS", default_value_t = 1_000)]
    pub reap_interval_ms: u32,

    /// Most jobs accepted in one submit request.
    #[arg(long, env = "STACKHIVE_MAX_BATCH_JOBS", default_value_t = 10_000)]
    pub max_batch_jobs: u32,

    /// Largest gRPC message accepted, in MiB (predictions of big test sets are large).
    #[arg(long, env = "STACKHIVE_MAX_MESSAGE_MB", default_value_t = 64)]
    pub max_message_mb: u32,

    /// Where uploaded datasets are kept, one folder per content hash. Coordinators that share a
    /// database should share this folder too (a network file system), or each can serve only
    /// the datasets uploaded through it.
    #[arg(long, env = "STACKHIVE_DATA_DIR", default_value = "stackhive-data")]
    pub data_dir: std::path::PathBuf,

    /// Finished jobs older than this are deleted (0 keeps them forever).
    #[arg(long, env = "STACKHIVE_RETENTION_HOURS", default_value_t = 0)]
    pub retention_hours: u32,

    /// Serve Prometheus metrics on this address.
    #[arg(long, env = "STACKHIVE_METRICS_ADDR")]
    pub metrics_addr: Option<SocketAddr>,

    /// Attempts allowed for retryable failures when a job does not say.
    #[arg(long, env = "STACKHIVE_DEFAULT_MAX_ATTEMPTS", default_value_t = 3)]
    pub default_max_attempts: u32,

    /// Worker losses tolerated while running a job when the job does not say.
    #[arg(long, env = "STACKHIVE_DEFAULT_CRASH_LIMIT", default_value_t = 3)]
    pub default_crash_limit: u32,

    /// First retry delay; doubles with each failure, with jitter.
    #[arg(long, env = "STACKHIVE_BACKOFF_BASE_MS", default_value_t = 1_000)]
    pub backoff_base_ms: u32,

    #[arg(long, env = "STACKHIVE_BACKOFF_MAX_MS", default_value_t = 300_000)]
    pub backoff_max_ms: u32,

    /// Waiting time worth one priority point (anti-starvation aging).
    #[arg(
        long,
        env = "STACKHIVE_AGING_MS_PER_PRIORITY",
        default_value_t = 60_000
    )]
    pub aging_ms_per_priority: u32,
}

impl CoordinatorConfig {
    /// Defaults for a given database URL, as the CLI would parse them.
    pub fn with_db(db: impl Into<String>) -> Self {
        Self {
            listen: "127.0.0.1:0".parse().expect("static address"),
            db: db.into(),
            db_max_connections: 16,
            lease_ttl_ms: 30_000,
            heartbeat_interval_ms: None,
            reap_interval_ms: 1_000,
            max_batch_jobs: 10_000,
            max_message_mb: 64,
            data_dir: "stackhive-data".into(),
            retention_hours: 0,
            metrics_addr: None,
            default_max_attempts: 3,
            default_crash_limit: 3,
            backoff_base_ms: 1_000,
            backoff_max_ms: 300_000,
            aging_ms_per_priority: 60_000,
        }
    }

    pub fn policy(&self) -> Policy {
        Policy {
            default_max_attempts: self.default_max_attempts.max(1),
            default_crash_limit: self.default_crash_limit.max(1),
            backoff_base_ms: self.backoff_base_ms as i64,
            backoff_max_ms: self.backoff_max_ms as i64,
            aging_ms_per_priority: self.aging_ms_per_priority as i64,
            worker_dead_after_ms: (self.lease_ttl_ms as i64 * 2).max(5_000),
        }
    }

    pub fn heartbeat_interval_ms(&self) -> u32 {
        self.heartbeat_interval_ms
            .unwrap_or(self.lease_ttl_ms / 3)
            .max(50)
    }
}
