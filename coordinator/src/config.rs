//! Coordinator settings: every flag also reads a `STACKHIVE_*` environment variable. Also the
//! one rule deciding how a listener is secured (tokens, TLS), so the CLI can announce it
//! before serving.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::auth::tls::TlsFiles;
use crate::error::{Error, Result};

use crate::domain::model::Policy;

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

    /// Bearer tokens: `auto` requires them unless the listener is on a loopback address;
    /// `required` always; `off` only on a loopback address.
    #[arg(long, env = "STACKHIVE_AUTH", value_enum, default_value_t = AuthMode::Auto)]
    pub auth: AuthMode,

    /// Serve TLS with this certificate chain (PEM); reloaded when the file changes.
    #[arg(long, env = "STACKHIVE_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// Private key (PEM) of --tls-cert.
    #[arg(long, env = "STACKHIVE_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// CA (PEM) of client certificates: clients may present one, and worker-protocol calls
    /// must (mutual TLS for workers). Needs --tls-cert.
    #[arg(long, env = "STACKHIVE_TLS_CLIENT_CA", requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,

    /// How often the TLS files are checked for changes.
    #[arg(long, env = "STACKHIVE_TLS_RELOAD_MS", default_value_t = 10_000)]
    pub tls_reload_ms: u32,

    /// Serve plaintext gRPC on a non-loopback address (a trusted network only).
    #[arg(long, env = "STACKHIVE_ALLOW_PLAINTEXT")]
    pub allow_plaintext: bool,

    /// Watch streams served at once; more are refused (RESOURCE_EXHAUSTED) until one ends.
    #[arg(long, env = "STACKHIVE_MAX_WATCHES", default_value_t = stackhive_proto::limits::DEFAULT_MAX_WATCHES)]
    pub max_watches: u32,
}

/// `--auth`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthMode {
    Auto,
    Required,
    Off,
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
            auth: AuthMode::Auto,
            tls_cert: None,
            tls_key: None,
            tls_client_ca: None,
            tls_reload_ms: 10_000,
            allow_plaintext: false,
            max_watches: stackhive_proto::limits::DEFAULT_MAX_WATCHES,
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

    /// How the listener at `addr` is secured, or why these settings are refused there.
    pub fn security(&self, addr: SocketAddr) -> Result<Security> {
        let loopback = addr.ip().is_loopback();
        let tokens = match self.auth {
            AuthMode::Required => true,
            AuthMode::Auto => !loopback,
            AuthMode::Off if loopback => false,
            AuthMode::Off => {
                return Err(Error::Config(format!(
                    "--auth off is allowed only on a loopback address, and {addr} is not one; \
                     create tokens (`stackhive token create`) and use --auth auto"
                )))
            }
        };
        let tls = match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => Some(TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
                client_ca: self.tls_client_ca.clone(),
                reload_every: Duration::from_millis(self.tls_reload_ms.max(100) as u64),
            }),
            _ => None,
        };
        if tls.is_none() && !loopback && !self.allow_plaintext {
            return Err(Error::Config(format!(
                "refusing to serve plaintext gRPC on {addr}, which is not a loopback address: \
                 give --tls-cert and --tls-key, or --allow-plaintext on a trusted network"
            )));
        }
        Ok(Security { tokens, tls })
    }

    pub fn heartbeat_interval_ms(&self) -> u32 {
        self.heartbeat_interval_ms
            .unwrap_or(self.lease_ttl_ms / 3)
            .max(50)
    }
}

/// What `CoordinatorConfig::security` decided.
#[derive(Clone, Debug)]
pub struct Security {
    /// Every call but health needs a bearer token.
    pub tokens: bool,
    pub tls: Option<TlsFiles>,
}

impl Security {
    /// One line for the start-up announcement.
    pub fn describe(&self) -> String {
        let transport = match &self.tls {
            None => "plaintext".to_string(),
            Some(t) if t.client_ca.is_some() => "TLS, client certificates for workers".into(),
            Some(_) => "TLS".into(),
        };
        let auth = if self.tokens {
            "bearer tokens required"
        } else {
            "authentication off (loopback listener: anyone on this machine may call it)"
        };
        format!("{transport}, {auth}")
    }
}
