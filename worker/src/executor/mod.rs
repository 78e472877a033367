//! How a job kind is run: the [`Executor`] trait, the context a job runs with, and the registry
//! that maps kind names to executors. The built-in kinds are `noop`, `sleep`, `shell` and
//! `ensemble` (plain Rust); the other ML kinds are added by registering more executors. Executors never talk to the coordinator; the
//! daemon reports what they return.

mod builtin;
mod cnn;
pub mod ensemble;
mod prefetch;
pub mod preselect;
pub(crate) mod shell;
mod stack;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

use stackhive_proto::v1::{LeasedJob, Predictions};
use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};

pub use builtin::{NoopExecutor, SleepExecutor};
pub use cnn::{CnnExecutor, TrainerSetup, CHECKPOINT_ARTIFACT};
pub use ensemble::EnsembleExecutor;
pub use prefetch::PrefetchExecutor;
pub use shell::{RunAs, ShellExecutor, TAIL_BYTES};
pub use stack::StackExecutor;

use crate::client::Identity;

/// Runs the jobs of one kind.
///
/// `run` should return soon after `ctx.cancelled()` fires (cancel, lease loss, timeout or
/// shutdown); what it returns then is ignored in favour of the stop reason. An executor that
/// ignores cancellation is abandoned after a grace period, so resources it holds (child
/// processes) must be released on drop as well.
#[async_trait::async_trait]
pub trait Executor: Send + Sync + 'static {
    async fn run(&self, job: &LeasedJob, ctx: JobCtx) -> Result<JobOutput, JobError>;
}

/// What a successful job returns.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct JobOutput {
    /// A JSON document, or empty.
    pub result_json: String,
    pub predictions: Option<Predictions>,
}

impl JobOutput {
    pub fn json(value: &serde_json::Value) -> Self {
        Self {
            result_json: value.to_string(),
            predictions: None,
        }
    }
}

/// A failed attempt. Retryable failures are re-queued by the coordinator while attempts remain.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct JobError {
    pub message: String,
    pub retryable: bool,
}

impl JobError {
    /// A failure another attempt may not repeat (a crash, a flaky disk, a non-zero exit).
    pub fn retryable(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            retryable: true,
        }
    }

    /// A failure every attempt would repeat (a bad payload).
    pub fn permanent(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            retryable: false,
        }
    }

    /// A coordinator's answer to `what`: permanent when it refused the request itself (not
    /// found, invalid, a failed precondition), retryable otherwise (an outage, a timeout).
    pub fn from_status(what: &str, s: &tonic::Status) -> Self {
        let msg = format!("{what}: {}", s.message());
        match s.code() {
            tonic::Code::NotFound
            | tonic::Code::InvalidArgument
            | tonic::Code::FailedPrecondition => JobError::permanent(msg),
            _ => JobError::retryable(msg),
        }
    }
}

/// Why a running job was told to stop. The first reason given wins.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum StopCause {
    /// A user cancelled it; reported as a failure "cancelled".
    Cancelled = 1,
    /// The coordinator gave the job to someone else; nothing is reported.
    LeaseLost = 2,
    /// Its `timeout_s` passed; reported as a retryable failure.
    Timeout = 3,
    /// The worker is shutting down; the job is handed back unrun.
    Handback = 4,
}

/// The worker's record of one running attempt, shared by the job's task, its context and the
/// heartbeat.
#[derive(Debug)]
pub(crate) struct JobSlot {
    pub(crate) id: i64,
    pub(crate) attempt: u32,
    token: CancellationToken,
    cause: AtomicU8,
    progress: Mutex<Option<String>>,
    pub(crate) gpus: Vec<u32>,
}

impl JobSlot {
    pub(crate) fn new(id: i64, attempt: u32, gpus: Vec<u32>) -> Self {
        Self {
            id,
            attempt,
            token: CancellationToken::new(),
            cause: AtomicU8::new(0),
            progress: Mutex::new(None),
            gpus,
        }
    }

    /// Asks the job to stop; a later reason does not replace the first.
    pub(crate) fn stop(&self, cause: StopCause) {
        let _ = self
            .cause
            .compare_exchange(0, cause as u8, Ordering::AcqRel, Ordering::Acquire);
        self.token.cancel();
    }

    pub(crate) fn cause(&self) -> Option<StopCause> {
        match self.cause.load(Ordering::Acquire) {
            1 => Some(StopCause::Cancelled),
            2 => Some(StopCause::LeaseLost),
            3 => Some(StopCause::Timeout),
            4 => Some(StopCause::Handback),
            _ => None,
        }
    }

    pub(crate) fn token(&self) -> &CancellationToken {
        &self.token
    }

    /// The latest progress document, for the heartbeat.
    pub(crate) fn progress(&self) -> String {
        self.progress
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .unwrap_or_default()
    }
}

/// What an executor gets besides the job: a cancellation signal, the GPUs assigned to the job,
/// and a place to publish progress that the next heartbeat carries to the coordinator.
#[derive(Clone, Debug)]
pub struct JobCtx {
    slot: Arc<JobSlot>,
    identity: Identity,
}

impl JobCtx {
    /// A context outside the daemon, for running an executor directly (tests, tools).
    pub fn new(gpus: Vec<u32>) -> Self {
        Self::for_slot(Arc::new(JobSlot::new(0, 0, gpus)), Identity::default())
    }

    pub(crate) fn for_slot(slot: Arc<JobSlot>, identity: Identity) -> Self {
        Self { slot, identity }
    }

    /// The worker running the job: artifact uploads of the attempt carry its id and key.
    pub fn worker(&self) -> &Identity {
        &self.identity
    }

    pub(crate) fn slot(&self) -> &Arc<JobSlot> {
        &self.slot
    }

    /// Resolves when the job must stop.
    pub fn cancelled(&self) -> WaitForCancellationFuture<'_> {
        self.slot.token.cancelled()
    }

    pub fn is_cancelled(&self) -> bool {
        self.slot.token.is_cancelled()
    }

    /// The token behind [`Self::cancelled`]; cancelling it stops the job.
    pub fn cancellation_token(&self) -> &CancellationToken {
        &self.slot.token
    }

    /// Indices of the GPUs this job may use.
    pub fn gpus(&self) -> &[u32] {
        &self.slot.gpus
    }

    /// The value for `CUDA_VISIBLE_DEVICES`: the assigned GPUs, or empty for a CPU job so that
    /// it cannot grab a GPU another job was given.
    pub fn cuda_visible_devices(&self) -> String {
        let parent = std::env::var("CUDA_VISIBLE_DEVICES").ok();
        visible_devices(&self.slot.gpus, parent.as_deref())
    }

    /// Publishes a progress document (JSON); only the latest one is kept. One that the
    /// coordinator would refuse (not JSON, or over `limits::MAX_PROGRESS_BYTES`) is dropped
    /// here with a warning: a refused heartbeat would leave every lease of the worker unrenewed.
    pub fn set_progress(&self, json: impl Into<String>) {
        let json = json.into();
        let limit = stackhive_proto::limits::MAX_PROGRESS_BYTES;
        if json.len() > limit {
            tracing::warn!(
                job_id = self.slot.id,
                bytes = json.len(),
                limit,
                "progress document too large; dropped"
            );
            return;
        }
        if serde_json::from_str::<serde::de::IgnoredAny>(&json).is_err() {
            tracing::warn!(
                job_id = self.slot.id,
                "progress document is not JSON; dropped"
            );
            return;
        }
        *self.slot.progress.lock().unwrap_or_else(|e| e.into_inner()) = Some(json);
    }

    /// The latest progress document, empty when none was published.
    pub fn progress(&self) -> String {
        self.slot.progress()
    }
}

/// GPU `i` of this worker is the `i`-th device the worker itself can see: a worker started with
/// `CUDA_VISIBLE_DEVICES=2,3` gives its GPU 0 to a job as device 2.
fn visible_devices(gpus: &[u32], parent: Option<&str>) -> String {
    let parent: Vec<&str> = parent
        .map(|p| {
            p.split(',')
                .map(str::trim)
                .filter(|d| !d.is_empty())
                .collect()
        })
        .unwrap_or_default();
    let devices: Vec<String> = gpus
        .iter()
        .map(|&i| match parent.get(i as usize) {
            Some(d) => (*d).to_string(),
            None => i.to_string(),
        })
        .collect();
    devices.join(",")
}

/// Executors by kind name, and the slots jobs of kinds other than `stack` hold (the stacker
/// must not lend those to its folds).
#[derive(Clone, Default)]
pub struct ExecutorRegistry {
    executors: HashMap<String, Arc<dyn Executor>>,
    reserved: crate::stacker::Reserved,
}

impl std::fmt::Debug for ExecutorRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExecutorRegistry")
            .field("kinds", &self.kinds())
            .finish()
    }
}

impl ExecutorRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// `noop`, `sleep` and `shell`.
    pub fn with_builtins() -> Self {
        let mut r = Self::new();
        r.register("noop", NoopExecutor);
        r.register("sleep", SleepExecutor);
        r.register("shell", ShellExecutor::default());
        r
    }

    /// Stops offering `kind`; false when it was not offered.
    pub fn remove(&mut self, kind: &str) -> bool {
        self.executors.remove(kind).is_some()
    }

    /// Adds or replaces the executor of `kind`.
    pub fn register(&mut self, kind: impl Into<String>, executor: impl Executor) -> &mut Self {
        self.executors.insert(kind.into(), Arc::new(executor));
        self
    }

    pub fn get(&self, kind: &str) -> Option<&Arc<dyn Executor>> {
        self.executors.get(kind)
    }

    /// What the daemon counts a job of `kind` in while it holds `slots`: `None` for `stack`,
    /// whose cores the stacker counts itself.
    pub(crate) fn reserving(&self, kind: &str) -> Option<&crate::stacker::Reserved> {
        (kind != crate::stacker::KIND).then_some(&self.reserved)
    }

    pub(crate) fn reserved(&self) -> &crate::stacker::Reserved {
        &self.reserved
    }

    /// Registered kind names, sorted; the worker advertises them when it registers.
    pub fn kinds(&self) -> Vec<String> {
        let mut kinds: Vec<String> = self.executors.keys().cloned().collect();
        kinds.sort();
        kinds
    }
}

/// Parses a job's JSON payload; an empty payload reads as `{}`.
pub(crate) fn parse_payload<T: serde::de::DeserializeOwned>(
    kind: &str,
    job: &LeasedJob,
) -> Result<T, JobError> {
    let text = if job.payload_json.trim().is_empty() {
        "{}"
    } else {
        job.payload_json.as_str()
    };
    serde_json::from_str(text)
        .map_err(|e| JobError::permanent(format!("invalid {kind} payload: {e}")))
}

#[cfg(test)]
mod tests {
    use super::visible_devices;

    #[test]
    fn gpu_indices_map_through_the_workers_own_visible_devices() {
        assert_eq!(visible_devices(&[1, 3], None), "1,3");
        assert_eq!(visible_devices(&[], None), "");
        assert_eq!(visible_devices(&[0, 1], Some("2, 3")), "2,3");
        assert_eq!(visible_devices(&[0], Some("GPU-5f1c")), "GPU-5f1c");
        assert_eq!(visible_devices(&[0], Some("")), "0");
    }
}
