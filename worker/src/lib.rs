//! stackhive worker: a daemon per machine that advertises its resources (CPU slots, GPUs and
//! their memory, tags) to a coordinator, leases jobs that fit, runs them (several at once),
//! heartbeats and reports their results. Entry points: [`run`] with the built-in job kinds, or
//! [`run_with`] and an [`ExecutorRegistry`] to add kinds. It keeps no state of its own beyond
//! the jobs it is running: the coordinator's database is the truth.

pub mod artifacts;
mod capacity;
mod client;
pub mod config;
mod daemon;
#[cfg(test)]
mod daemon_tests;
pub mod datasets;
mod error;
pub mod executor;
pub mod features;
pub mod guard;
mod job;
pub mod metrics;
mod reporter;
pub mod stacker;

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;

use stackhive_spec::CnnKind;

pub use client::Identity;
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

/// This program when it is the worker binary, which can act as a shell job's guard
/// (`guard`); `None` inside another program (a test harness), where jobs run unguarded.
fn guard_binary() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    (exe.file_name()? == "stackhive-worker").then_some(exe)
}

/// The built-in kinds plus `dataset-prefetch`, which needs the dataset cache and a channel to
/// the coordinator; `shell` runs as `--run-as` when given, and `--disable-kinds` are left out.
pub fn builtin_registry(config: &WorkerConfig) -> Result<ExecutorRegistry, WorkerError> {
    let settings = config.validate()?;
    let mut registry = ExecutorRegistry::with_builtins();
    registry.register(
        "shell",
        executor::ShellExecutor {
            run_as: settings.run_as.clone(),
            guard: guard_binary(),
        },
    );
    let channel = config
        .client
        .channel(config.coordinator.trim())
        .map_err(|e| WorkerError::Endpoint {
            url: config.coordinator.clone(),
            message: e.to_string(),
        })?;
    let cache = Arc::new(datasets::DatasetCache::new(
        &config.dataset_cache,
        config.shared_data.clone(),
    ));
    registry.register(
        "dataset-prefetch",
        executor::PrefetchExecutor::new(cache.clone(), channel.clone()),
    );
    match find_trainer(config)? {
        Some(binary) => {
            let setup = Arc::new(executor::TrainerSetup {
                binary,
                work_dir: config.work_dir.clone(),
                image_cache: config.image_cache.clone(),
                keep_job_dirs: config.keep_job_dirs,
            });
            for kind in [CnnKind::Cnn, CnnKind::LrFind] {
                let exec =
                    executor::CnnExecutor::new(kind, setup.clone(), cache.clone(), channel.clone());
                registry.register(kind.name(), exec);
            }
        }
        None => tracing::info!(
            "no stackhive-trainer next to this program and no --trainer: not offering cnn and lr-find"
        ),
    }
    let feature_cache = Arc::new(features::FeatureCache::new(&config.feature_cache));
    registry.register(
        "ensemble",
        executor::EnsembleExecutor::new(feature_cache.clone(), channel.clone()),
    );
    match find_sibling(config.stacker.as_ref(), "stackhive-stacker", "stacker")? {
        Some(binary) => {
            let exec = executor::StackExecutor::new(
                feature_cache.clone(),
                Arc::new(stacker::Stacker::new(
                    binary,
                    settings.slots as usize,
                    registry.reserved().clone(),
                )),
                channel.clone(),
            );
            registry.register(stacker::KIND, exec);
        }
        None => tracing::info!(
            "no stackhive-stacker next to this program and no --stacker: not offering stack"
        ),
    }
    for kind in &config.disable_kinds {
        let kind = kind.trim();
        if !kind.is_empty() && !registry.remove(kind) {
            tracing::warn!(
                kind,
                "--disable-kinds names a kind this worker does not offer anyway"
            );
        }
    }
    if nix::unistd::geteuid().is_root()
        && settings.run_as.is_none()
        && registry.get("shell").is_some()
    {
        tracing::warn!(
            "running as root and offering shell jobs: their commands run as root; give --run-as USER \
             or --disable-kinds shell"
        );
    }
    Ok(registry)
}

/// `--trainer` (which must exist), else `stackhive-trainer` next to the running program.
fn find_trainer(config: &WorkerConfig) -> Result<Option<PathBuf>, WorkerError> {
    find_sibling(config.trainer.as_ref(), "stackhive-trainer", "trainer")
}

/// `given` (which must exist), else `name` next to the running program.
fn find_sibling(
    given: Option<&PathBuf>,
    name: &str,
    flag: &'static str,
) -> Result<Option<PathBuf>, WorkerError> {
    if let Some(p) = given {
        if !p.is_file() {
            return Err(WorkerError::Config(ConfigError::Invalid {
                flag,
                expected: format!("the path of the {name} binary"),
                found: format!("{} (no such file)", p.display()),
            }));
        }
        return Ok(Some(p.clone()));
    }
    let sibling = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|d| d.join(name)));
    Ok(sibling.filter(|p| p.is_file()))
}

/// [`run`] with the kinds of `registry`.
pub async fn run_with(
    config: WorkerConfig,
    registry: ExecutorRegistry,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), WorkerError> {
    daemon::run(config, registry, shutdown).await
}
