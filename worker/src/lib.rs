//! stackhive worker: a daemon per machine that advertises its resources (CPU slots, GPUs and
//! their memory, tags) to a coordinator, leases jobs that fit, runs them (several at once),
//! heartbeats and reports their results. Entry points: [`run`] with the built-in job kinds, or
//! [`run_with`] and an [`ExecutorRegistry`] to add kinds. It keeps no state of its own beyond
//! the jobs it is running: the coordinator's database is the truth.

mod capacity;
mod client;
pub mod config;
mod daemon;
pub mod datasets;
#[cfg(test)]
mod daemon_tests;
mod error;
pub mod executor;
mod job;
mod reporter;

use std::future::Future;

pub use config::{ConfigError, Settings, WorkerConfig};
pub use error::WorkerError;
pub use executor::{Executor, ExecutorRegistry, JobCtx, JobError, JobOutput};
pub use stackhive_proto::v1::LeasedJob;

/// Runs a worker with the built-in kinds (`noop`, `sleep`, `shell`) until `shutdown` resolves,
/// then drains: no new jobs, up to `--drain-timeout-s` for running ones, the rest handed back,
/// pending reports flushed, and the worker deregistered.
pub async fn run(
    config: WorkerConfig,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), WorkerError> {
    run_with(config, ExecutorRegistry::with_builtins(), shutdown).await
}

/// [`run`] with the kinds of `registry`.
pub async fn run_with(
    config: WorkerConfig,
    registry: ExecutorRegistry,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), WorkerError> {
    daemon::run(config, registry, shutdown).await
}
