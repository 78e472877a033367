//! The worker daemon: registers, leases jobs while it has free capacity, runs each as its own
//! task, heartbeats the running ones, and on shutdown drains, hands back and flushes before it
//! deregisters. How a job runs is `job.rs`'s business, how reports travel `reporter.rs`'s.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use stackhive_proto::v1::{
    Completion, DeregisterRequest, HeartbeatRequest, LeaseRequest, LeasedJob, RegisterRequest,
    Resources, StopReason,
};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tonic::Code;
use tracing::Instrument as _;

use crate::capacity::Capacity;
use crate::client::{request, Coordinator, RpcError, RPC_TIMEOUT};
use crate::config::{Settings, WorkerConfig};
use crate::error::WorkerError;
use crate::executor::{ExecutorRegistry, JobCtx, JobSlot, StopCause};
use crate::job::{self, Outcome};
use crate::reporter::{self, FailItem, Reports};

/// Pause after a Lease call that came back empty at once, so that a coordinator that does not
/// long-poll (or `--lease-wait-ms 0`) does not make the worker spin.
const EMPTY_LEASE_PAUSE: Duration = Duration::from_millis(100);
/// Wait before asking again after a Lease refusal that is not an outage.
const REFUSED_RETRY: Duration = Duration::from_secs(5);
/// Longest wait for Deregister on the way out; the coordinator notices a silent worker anyway.
const DEREGISTER_TIMEOUT: Duration = Duration::from_secs(5);

/// State shared by the lease loop, the heartbeat and the job tasks.
struct Shared {
    settings: Settings,
    coord: Arc<Coordinator>,
    registry: ExecutorRegistry,
    capacity: Mutex<Capacity>,
    /// One stored permit wakes the (single) lease loop when a job frees its resources.
    capacity_freed: Notify,
    running: Mutex<HashMap<(i64, u32), Arc<JobSlot>>>,
    /// Wakes drain waiters when the last running job ends.
    idle: Notify,
    reports: Reports,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panicking job task cannot leave these maps half-updated; keep going.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

pub(crate) async fn run(
    config: WorkerConfig,
    registry: ExecutorRegistry,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), WorkerError> {
    let settings = config.validate()?;
    if let Some(addr) = config.metrics_addr {
        crate::metrics::install(addr, settings.slots, &settings.gpu_mem_mb)
            .map_err(WorkerError::Metrics)?;
    }
    let register = RegisterRequest {
        name: settings.name.clone(),
        hostname: settings.hostname.clone(),
        resources: Some(Resources {
            cpu_slots: settings.slots,
            gpus: settings.gpu_mem_mb.len() as u32,
            gpu_mem_mb: settings.gpu_mem_mb.iter().copied().min().unwrap_or(0),
            tags: settings.tags.clone(),
        }),
        gpu_mem_mb: settings.gpu_mem_mb.clone(),
        kinds: registry.kinds(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        ..Default::default()
    };
    let coord = Arc::new(Coordinator::new(
        &settings.coordinator,
        &settings.client,
        register,
    )?);
    tracing::info!(
        coordinator = %settings.coordinator,
        name = %settings.name,
        slots = settings.slots,
        gpus = settings.gpu_mem_mb.len(),
        tags = ?settings.tags,
        kinds = ?registry.kinds(),
        "worker starting"
    );

    tokio::pin!(shutdown);
    let never = CancellationToken::new();
    tokio::select! {
        r = coord.register(&never) => match r {
            Ok(()) => {}
            Err(RpcError::Status(s)) => {
                return Err(WorkerError::Register { code: s.code(), message: s.message().to_string() })
            }
            Err(RpcError::Stopped) => return Ok(()),
        },
        _ = &mut shutdown => {
            tracing::info!("shutdown requested before the worker registered");
            return Ok(());
        }
    }

    let finish_reports = CancellationToken::new();
    let abort_reports = CancellationToken::new();
    let (reports, reporter) = reporter::spawn(
        coord.clone(),
        settings.report_batch,
        finish_reports.clone(),
        abort_reports.clone(),
    );
    let shared = Arc::new(Shared {
        capacity: Mutex::new(Capacity::new(
            settings.slots,
            &settings.gpu_mem_mb,
            &settings.tags,
        )),
        settings,
        coord: coord.clone(),
        registry,
        capacity_freed: Notify::new(),
        running: Mutex::new(HashMap::new()),
        idle: Notify::new(),
        reports,
    });

    let stop_leasing = CancellationToken::new();
    let stop_heartbeat = CancellationToken::new();
    let mut lease_task = tokio::spawn(lease_loop(shared.clone(), stop_leasing.clone()));
    let heartbeat_task = tokio::spawn(heartbeat_loop(shared.clone(), stop_heartbeat.clone()));

    let mut task_error = None;
    let lease_result = tokio::select! {
        _ = &mut shutdown => None,
        r = &mut lease_task => Some(r),
    };
    let drain_deadline = tokio::time::Instant::now() + shared.settings.drain_timeout;
    stop_leasing.cancel();
    // An in-flight Lease is awaited, not dropped: what it brings is handed back at once.
    let lease_result = match lease_result {
        Some(r) => r,
        None => lease_task.await,
    };
    if let Err(e) = lease_result {
        tracing::error!(error = %e, "lease loop failed; shutting down");
        task_error = Some(e.to_string());
    }
    tracing::info!(
        running = shared.running_count(),
        "shutting down: no new jobs"
    );

    drain(&shared, drain_deadline).await;
    // Heartbeats went on during the drain to keep the remaining leases alive.
    stop_heartbeat.cancel();
    if let Err(e) = heartbeat_task.await {
        tracing::error!(error = %e, "heartbeat task failed");
        task_error.get_or_insert(e.to_string());
    }

    finish_reports.cancel();
    let flush_timeout = shared.settings.drain_timeout.max(Duration::from_secs(10));
    let (completions, failures) = match flush(reporter, abort_reports, flush_timeout).await {
        Ok(undelivered) => undelivered,
        Err(e) => {
            task_error.get_or_insert(e);
            (0, 0)
        }
    };

    deregister(&coord).await;
    if let Some(e) = task_error {
        return Err(WorkerError::Task(e));
    }
    if completions + failures > 0 {
        return Err(WorkerError::Undelivered {
            completions,
            failures,
        });
    }
    tracing::info!("worker stopped");
    Ok(())
}

/// Waits for running jobs until `deadline`, then hands back the rest.
async fn drain(shared: &Shared, deadline: tokio::time::Instant) {
    if tokio::time::timeout_at(deadline, shared.wait_idle())
        .await
        .is_ok()
    {
        return;
    }
    let left: Vec<Arc<JobSlot>> = lock(&shared.running).values().cloned().collect();
    tracing::warn!(
        jobs = left.len(),
        drain_timeout_s = shared.settings.drain_timeout.as_secs(),
        "drain timeout passed; handing back the jobs still running"
    );
    for slot in left {
        slot.stop(StopCause::Handback);
    }
    // Bounded: an executor that ignores the stop is abandoned after job::STOP_GRACE.
    shared.wait_idle().await;
}

/// Lets the reporter deliver what is queued, giving up after `timeout`. Returns the numbers of
/// completions and failures left undelivered.
async fn flush(
    reporter: reporter::Reporter,
    abort: CancellationToken,
    timeout: Duration,
) -> Result<(usize, usize), String> {
    let timer = tokio::spawn({
        let abort = abort.clone();
        async move {
            tokio::time::sleep(timeout).await;
            tracing::warn!("coordinator still unreachable; giving up on undelivered reports");
            abort.cancel();
        }
    });
    let completions = reporter.completions.await;
    let failures = reporter.failures.await;
    timer.abort();
    Ok((
        completions.map_err(|e| e.to_string())?,
        failures.map_err(|e| e.to_string())?,
    ))
}

async fn deregister(coord: &Coordinator) {
    let (worker_id, worker_key) = coord.identity().current();
    let stop = CancellationToken::new();
    let call = coord.call("deregister", &stop, |mut c| {
        let req = request(
            DeregisterRequest {
                worker_id: worker_id.to_string(),
                worker_key: worker_key.to_string(),
            },
            DEREGISTER_TIMEOUT,
        );
        async move { c.deregister(req).await }
    });
    match tokio::time::timeout(DEREGISTER_TIMEOUT, call).await {
        Ok(Ok(_)) => tracing::info!(worker_id = %worker_id, "deregistered"),
        Ok(Err(e)) => tracing::warn!(worker_id = %worker_id, error = ?e, "deregister refused"),
        Err(_) => tracing::warn!(worker_id = %worker_id, "deregister timed out"),
    }
}

impl Shared {
    fn running_count(&self) -> usize {
        lock(&self.running).len()
    }

    async fn wait_idle(&self) {
        loop {
            let notified = self.idle.notified();
            tokio::pin!(notified);
            // Registered before the check, so that a job ending in between is not missed.
            notified.as_mut().enable();
            if lock(&self.running).is_empty() {
                return;
            }
            notified.await;
        }
    }

    fn hand_back(&self, job: &LeasedJob, reason: &str) {
        self.reports.fail(FailItem {
            id: job.id,
            attempt: job.attempt,
            reason: reason.to_string(),
            retryable: true,
            handback: true,
        });
    }
}

/// Takes the job's resources, records it as running and starts its task.
fn start_job(shared: &Arc<Shared>, job: LeasedJob) {
    let Some(alloc) = lock(&shared.capacity).allocate(job.resources.as_ref()) else {
        // The coordinator matched the job against our own offer, so this means the two
        // disagree; giving it back costs the job nothing.
        tracing::warn!(
            job_id = job.id,
            attempt = job.attempt,
            needs = ?job.resources,
            "leased job does not fit the free resources; handing it back"
        );
        shared.hand_back(&job, "worker lacks the resources the job needs");
        return;
    };
    let slot = Arc::new(JobSlot::new(job.id, job.attempt, alloc.gpus));
    lock(&shared.running).insert((job.id, job.attempt), slot.clone());
    // The job's span: every call it makes to the coordinator is a child, in one trace.
    let span = tracing::info_span!(
        "job",
        otel.name = %format!("job {}", job.kind),
        job.id = job.id,
        job.kind = %job.kind,
        job.attempt = job.attempt,
    );
    tokio::spawn(run_job(shared.clone(), job, slot, alloc.slots).instrument(span));
}

/// Frees a job's resources when its task ends, however it ends.
struct Release<'a> {
    shared: &'a Shared,
    slot: &'a JobSlot,
    slots: u32,
}

impl Drop for Release<'_> {
    fn drop(&mut self) {
        let empty = {
            let mut running = lock(&self.shared.running);
            running.remove(&(self.slot.id, self.slot.attempt));
            running.is_empty()
        };
        lock(&self.shared.capacity).release(self.slots, &self.slot.gpus);
        self.shared.capacity_freed.notify_one();
        if empty {
            self.shared.idle.notify_waiters();
        }
    }
}

async fn run_job(shared: Arc<Shared>, job: LeasedJob, slot: Arc<JobSlot>, slots: u32) {
    // Dropped last: the report is queued before the job stops counting as running, so a drain
    // that sees no running jobs also sees every report.
    let _release = Release {
        shared: &shared,
        slot: &slot,
        slots,
    };
    // While it runs, the stacker does not lend the cores of a job of another kind.
    let _reserved = shared.registry.reserving(&job.kind).map(|r| r.hold(slots));
    let started = Instant::now();
    tracing::info!(job_id = job.id, attempt = job.attempt, kind = %job.kind, gpus = ?slot.gpus, "started");
    let held = (i64::from(slots), slot.gpus.len() as i64);
    crate::metrics::hold(held.0, held.1);
    let ctx = JobCtx::for_slot(slot.clone(), shared.coord.identity());
    let outcome = job::execute(&shared.registry, &job, ctx).await;
    crate::metrics::hold(-held.0, -held.1);
    let elapsed_ms = started.elapsed().as_millis() as u64;
    let name = match &outcome {
        Outcome::Succeeded(_) => "succeeded",
        Outcome::Failed { .. } => "failed",
        Outcome::HandBack => "handed_back",
        Outcome::Dropped => "lease_lost",
    };
    crate::metrics::finished(&job.kind, name, started.elapsed());
    match outcome {
        Outcome::Succeeded(out) => {
            tracing::info!(job_id = job.id, attempt = job.attempt, kind = %job.kind, elapsed_ms, "succeeded");
            shared.reports.complete(Completion {
                id: job.id,
                attempt: job.attempt,
                result_json: out.result_json,
                predictions: out.predictions,
                progress_json: slot.progress(),
            });
        }
        Outcome::Failed { reason, retryable } => {
            tracing::info!(
                job_id = job.id,
                attempt = job.attempt,
                kind = %job.kind,
                elapsed_ms,
                retryable,
                error = %reason,
                "failed"
            );
            shared.reports.fail(FailItem {
                id: job.id,
                attempt: job.attempt,
                reason,
                retryable,
                handback: false,
            });
        }
        Outcome::HandBack => {
            tracing::info!(job_id = job.id, attempt = job.attempt, kind = %job.kind, elapsed_ms, "handed back");
            shared.hand_back(&job, "worker shutting down");
        }
        Outcome::Dropped => {
            tracing::warn!(job_id = job.id, attempt = job.attempt, kind = %job.kind, elapsed_ms, "stopped: lease lost");
        }
    }
}

async fn lease_loop(shared: Arc<Shared>, stop: CancellationToken) {
    let settings = &shared.settings;
    let wait_ms = settings.lease_wait.as_millis() as u32;
    loop {
        if stop.is_cancelled() {
            return;
        }
        let offer = lock(&shared.capacity).offer();
        let Some(free) = offer else {
            tokio::select! {
                _ = shared.capacity_freed.notified() => continue,
                _ = stop.cancelled() => return,
            }
        };
        let max_jobs = settings.lease_batch.min(free.cpu_slots);
        let (worker_id, worker_key) = shared.coord.identity().current();
        let asked = Instant::now();
        let leased = shared
            .coord
            .call("lease", &stop, |mut c| {
                let req = LeaseRequest {
                    worker_id: worker_id.to_string(),
                    worker_key: worker_key.to_string(),
                    free: Some(free.clone()),
                    max_jobs,
                    wait_ms,
                };
                let req = request(req, RPC_TIMEOUT + settings.lease_wait);
                async move { c.lease(req).await }
            })
            .await;
        match leased {
            Ok(resp) if stop.is_cancelled() => {
                for job in &resp.jobs {
                    tracing::info!(
                        job_id = job.id,
                        attempt = job.attempt,
                        "leased during shutdown; handing back"
                    );
                    shared.hand_back(job, "worker shutting down");
                }
                return;
            }
            Ok(resp) => {
                if resp.jobs.is_empty() {
                    if asked.elapsed() < EMPTY_LEASE_PAUSE {
                        tokio::select! {
                            _ = tokio::time::sleep(EMPTY_LEASE_PAUSE) => {}
                            _ = stop.cancelled() => return,
                        }
                    }
                    continue;
                }
                tracing::debug!(jobs = resp.jobs.len(), max_jobs, "leased");
                for job in resp.jobs {
                    start_job(&shared, job);
                }
            }
            Err(RpcError::Stopped) => return,
            Err(RpcError::Status(s)) => {
                let refused = if s.code() == Code::NotFound {
                    match shared.coord.reregister(&worker_id, &stop).await {
                        Ok(()) => continue,
                        Err(RpcError::Stopped) => return,
                        Err(RpcError::Status(s)) => s,
                    }
                } else {
                    s
                };
                tracing::error!(
                    code = ?refused.code(),
                    error = %refused.message(),
                    "coordinator refused to lease; asking again later"
                );
                tokio::select! {
                    _ = tokio::time::sleep(REFUSED_RETRY) => {}
                    _ = stop.cancelled() => return,
                }
            }
        }
    }
}

async fn heartbeat_loop(shared: Arc<Shared>, stop: CancellationToken) {
    let coord = &shared.coord;
    let mut next = tokio::time::Instant::now() + coord.heartbeat_interval();
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(next) => {}
            _ = stop.cancelled() => return,
        }
        next = tokio::time::Instant::now() + coord.heartbeat_interval();
        let (worker_id, worker_key) = coord.identity().current();
        let sent = coord
            .call("heartbeat", &stop, |mut c| {
                // A fresh list on every attempt: jobs end while the coordinator is away.
                let req = HeartbeatRequest {
                    worker_id: worker_id.to_string(),
                    worker_key: worker_key.to_string(),
                    jobs: shared.active_jobs(),
                };
                let req = request(req, RPC_TIMEOUT);
                async move { c.heartbeat(req).await }
            })
            .await;
        match sent {
            Ok(resp) => shared.apply_stops(&resp.stop),
            Err(RpcError::Stopped) => return,
            Err(RpcError::Status(s)) if s.code() == Code::NotFound => {
                match coord.reregister(&worker_id, &stop).await {
                    // Renew the leases under the new id without waiting a whole interval.
                    Ok(()) => next = tokio::time::Instant::now(),
                    Err(RpcError::Stopped) => return,
                    Err(RpcError::Status(s)) => {
                        tracing::error!(code = ?s.code(), error = %s.message(), "registering again refused");
                    }
                }
            }
            Err(RpcError::Status(s)) => {
                tracing::error!(code = ?s.code(), error = %s.message(), "heartbeat refused");
            }
        }
    }
}

impl Shared {
    fn active_jobs(&self) -> Vec<stackhive_proto::v1::ActiveJob> {
        lock(&self.running)
            .values()
            .map(|s| stackhive_proto::v1::ActiveJob {
                id: s.id,
                attempt: s.attempt,
                progress_json: s.progress(),
            })
            .collect()
    }

    fn apply_stops(&self, stops: &[stackhive_proto::v1::StopJob]) {
        if stops.is_empty() {
            return;
        }
        let running = lock(&self.running);
        for stop in stops {
            // A job that already ended, or an older attempt, needs nothing.
            let Some(slot) = running.get(&(stop.id, stop.attempt)) else {
                continue;
            };
            match stop.reason() {
                StopReason::Cancelled => {
                    tracing::info!(
                        job_id = stop.id,
                        attempt = stop.attempt,
                        "cancel requested; stopping"
                    );
                    slot.stop(StopCause::Cancelled);
                }
                StopReason::LeaseLost | StopReason::Unspecified => {
                    tracing::warn!(
                        job_id = stop.id,
                        attempt = stop.attempt,
                        "lease lost; stopping without a report"
                    );
                    slot.stop(StopCause::LeaseLost);
                }
            }
        }
    }
}
