//! The worker's library error: what can stop [`crate::run`] from starting or from shutting down
//! cleanly. Failures of single jobs are not errors here; they are reported to the coordinator.

use crate::config::ConfigError;

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("invalid configuration: {0}")]
    Config(#[from] ConfigError),

    #[error("invalid coordinator address {url:?}: {message}")]
    Endpoint { url: String, message: String },

    #[error("{0}")]
    Metrics(String),

    /// The coordinator answered Register with a definite refusal (not an outage).
    #[error("coordinator refused to register this worker ({code:?}): {message}")]
    Register { code: tonic::Code, message: String },

    /// Shutdown ran out of time while the coordinator could not be reached. The jobs concerned
    /// are not lost: their leases expire and the coordinator runs them again.
    #[error(
        "{completions} completion(s) and {failures} failure report(s) could not be delivered \
         before shutdown; the coordinator will re-run those jobs when their leases expire"
    )]
    Undelivered { completions: usize, failures: usize },

    /// A worker task panicked; the daemon still drained and handed back what it could.
    #[error("worker task failed: {0}")]
    Task(String),
}
