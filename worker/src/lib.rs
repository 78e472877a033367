//! stackhive worker: a daemon per machine that advertises its resources (CPU slots, GPUs and
//! their memory, tags) to a coordinator, leases jobs that fit, runs them (several at once),
//! heartbeats and reports their results. Entry points: [`run`] with the built-in job kinds, or
//! [`run_with`] and an [`ExecutorRegistry`] to add kinds. It keeps no state of its own beyond
//! the jobs it is running: the coordinator's database is the truth.

mod capacity;
mod client;
pub mod config;
mod daemon;
#[cfg(test)]
mod daemon_tests;
pub mod datasets;
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
    let registry = builtin_registry(&config)?;
    run_with(config, registry, shutdown).await
}

/// The built-in kinds plus `dataset-prefetch`, which needs the dataset cache and a channel to
/// the coordinator.
pub fn builtin_registry(config: &WorkerConfig) -> Result<ExecutorRegistry, WorkerError> {
    let mut registry = ExecutorRegistry::with_builtins();
    let channel = tonic::transport::Endpoint::from_shared(config.coordinator.trim().to_string())
        .map_err(|e| WorkerError::Endpoint {
            url: config.coordinator.clone(),
            message: e.to_string(),
        })?
        .connect_lazy();
    let cache = datasets::DatasetCache::new(&config.dataset_cache, config.shared_data.clone());
    registry.register(
        "dataset-prefetch",
        executor::PrefetchExecutor::new(std::sync::Arc::new(cache), channel),
    );
    Ok(registry)
}

/// [`run`] with the kinds of `registry`.
pub async fn run_with(
    config: WorkerConfig,
    registry: ExecutorRegistry,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), WorkerError> {
    daemon::run(config, registry, shutdown).await
}
