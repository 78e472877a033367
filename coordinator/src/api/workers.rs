//! `WorkerService`: register, long-poll lease, heartbeat, complete, fail, deregister. Every
//! call after Register proves the worker's identity with its key (`auth::workers`), and every
//! report is fenced by `(job_id, attempt, worker)` in the store; stale ones are counted and
//! refused.

use std::sync::Arc;
use std::time::{Duration, Instant};

use stackhive_proto::v1 as pb;
use stackhive_proto::v1::worker_service_server::WorkerService;
use tonic::{Request, Response, Status};

use super::convert;
use crate::auth::secrets;
use crate::auth::workers::WorkerKeys;
use crate::domain::model::*;
use crate::domain::validate;
use crate::error::Error;
use crate::metrics as m;
use crate::store::Store;

const MAX_LEASE_BATCH: u32 = 10_000;
const MAX_WAIT: Duration = Duration::from_secs(60);
/// Fallback poll while waiting: catches backoff expiries and any missed notification.
const POLL: Duration = Duration::from_millis(500);

pub struct WorkerApi {
    store: Arc<dyn Store>,
    keys: Arc<WorkerKeys>,
    lease_ttl_ms: u32,
    heartbeat_interval_ms: u32,
    shutdown: tokio::sync::watch::Receiver<bool>,
}

impl WorkerApi {
    pub fn new(
        store: Arc<dyn Store>,
        keys: Arc<WorkerKeys>,
        lease_ttl_ms: u32,
        heartbeat_interval_ms: u32,
        shutdown: tokio::sync::watch::Receiver<bool>,
    ) -> Self {
        Self {
            store,
            keys,
            lease_ttl_ms,
            heartbeat_interval_ms,
            shutdown,
        }
    }
}

impl WorkerApi {
    /// Registers a new worker, or renews the one named by `resume` when its key matches.
    /// Returns the id and key the worker is to use.
    async fn register_as(
        &self,
        resume: Option<(&str, &str)>,
        info: &WorkerInfo,
    ) -> Result<(String, String), Error> {
        if let Some((id, key)) = resume {
            match self.keys.verify(id, key).await {
                Ok(()) => {
                    self.store.renew_worker(id, info).await?;
                    return Ok((id.to_string(), key.to_string()));
                }
                // Forgotten (a new database): a new identity; its old jobs are gone too.
                Err(Error::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        let id = uuid::Uuid::new_v4().to_string();
        let key = secrets::new_worker_key();
        self.store
            .register_worker(&id, info, &secrets::sha256_hex(&key))
            .await?;
        Ok((id, key))
    }
}

#[tonic::async_trait]
impl WorkerService for WorkerApi {
    async fn register(
        &self,
        req: Request<pb::RegisterRequest>,
    ) -> Result<Response<pb::RegisterResponse>, Status> {
        let r = req.into_inner();
        validate::worker_info(&r).map_err(Error::invalid)?;
        let resources = validate::resources(&r.resources.unwrap_or_default())
            .map_err(|e| Error::invalid(format!("worker resources: {e}")))?;
        if r.gpu_mem_mb.len() > resources.gpus as usize {
            return Err(Error::invalid(format!(
                "worker lists memory for {} GPUs but offers {}",
                r.gpu_mem_mb.len(),
                resources.gpus
            ))
            .into());
        }
        let info = WorkerInfo {
            name: r.name,
            hostname: r.hostname,
            resources,
            gpu_mem_mb: r.gpu_mem_mb,
            kinds: r.kinds,
            version: r.version,
        };
        let resume =
            (!r.worker_id.is_empty()).then_some((r.worker_id.as_str(), r.worker_key.as_str()));
        let (id, key) = self.register_as(resume, &info).await?;
        tracing::info!(worker_id = %id, name = %info.name, slots = info.resources.cpu_slots,
            gpus = info.resources.gpus, renewed = resume.is_some_and(|(old, _)| old == id),
            "worker registered");
        Ok(Response::new(pb::RegisterResponse {
            worker_id: id,
            lease_ttl_ms: self.lease_ttl_ms,
            heartbeat_interval_ms: self.heartbeat_interval_ms,
            worker_key: key,
        }))
    }

    async fn lease(
        &self,
        req: Request<pb::LeaseRequest>,
    ) -> Result<Response<pb::LeaseResponse>, Status> {
        let r = req.into_inner();
        self.keys.verify(&r.worker_id, &r.worker_key).await?;
        let free = validate::resources(&r.free.unwrap_or_default())
            .map_err(|e| Error::invalid(format!("free resources: {e}")))?;
        let q = LeaseQuery {
            worker_id: r.worker_id,
            free,
            max_jobs: r.max_jobs.min(MAX_LEASE_BATCH),
            lease_ttl_ms: self.lease_ttl_ms as i64,
        };
        let deadline = Instant::now() + Duration::from_millis(r.wait_ms as u64).min(MAX_WAIT);
        let notify = self.store.work_notify();
        let mut shutdown = self.shutdown.clone();
        loop {
            // Register interest before looking, so a submit between the two is not missed.
            let notified = notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let started = Instant::now();
            let jobs = self.store.lease(&q).await?;
            metrics::histogram!(m::LEASE_SECONDS).record(started.elapsed().as_secs_f64());
            let now = Instant::now();
            if !jobs.is_empty() || now >= deadline || *shutdown.borrow() {
                metrics::counter!(m::LEASED).increment(jobs.len() as u64);
                return Ok(Response::new(pb::LeaseResponse {
                    jobs: jobs.into_iter().map(convert::leased).collect(),
                }));
            }
            tokio::select! {
                _ = &mut notified => {}
                _ = tokio::time::sleep((deadline - now).min(POLL)) => {}
                _ = shutdown.changed() => {}
            }
        }
    }

    async fn heartbeat(
        &self,
        req: Request<pb::HeartbeatRequest>,
    ) -> Result<Response<pb::HeartbeatResponse>, Status> {
        let r = req.into_inner();
        self.keys.verify(&r.worker_id, &r.worker_key).await?;
        for j in r.jobs.iter().filter(|j| !j.progress_json.is_empty()) {
            validate::progress(j.id, &j.progress_json)?;
        }
        let jobs: Vec<ActiveJob> = r
            .jobs
            .into_iter()
            .map(|j| ActiveJob {
                id: j.id,
                attempt: j.attempt,
                progress: (!j.progress_json.is_empty()).then_some(j.progress_json),
            })
            .collect();
        let stops = self
            .store
            .heartbeat(&r.worker_id, &jobs, self.lease_ttl_ms as i64)
            .await?;
        Ok(Response::new(pb::HeartbeatResponse {
            stop: stops
                .into_iter()
                .map(|s| pb::StopJob {
                    id: s.id,
                    attempt: s.attempt,
                    reason: match s.reason {
                        StopReason::Cancelled => pb::StopReason::Cancelled,
                        StopReason::LeaseLost => pb::StopReason::LeaseLost,
                    } as i32,
                })
                .collect(),
            lease_ttl_ms: self.lease_ttl_ms,
        }))
    }

    async fn complete(
        &self,
        req: Request<pb::CompleteRequest>,
    ) -> Result<Response<pb::CompleteResponse>, Status> {
        let r = req.into_inner();
        self.keys.verify(&r.worker_id, &r.worker_key).await?;
        let started = std::time::Instant::now();
        let (items, refused) = validate::completions(r.completions)?;
        let mut out = self.store.complete(&r.worker_id, &items).await?;
        out.invalid.extend(refused);
        metrics::histogram!(m::COMPLETE_SECONDS).record(started.elapsed().as_secs_f64());
        metrics::counter!(m::COMPLETED).increment(out.accepted.len() as u64);
        let accepted: std::collections::HashSet<JobId> = out.accepted.iter().copied().collect();
        let stored = items
            .iter()
            .filter(|c| c.predictions.is_some() && accepted.contains(&c.id))
            .count();
        metrics::counter!(m::PREDICTIONS_STORED).increment(stored as u64);
        metrics::counter!(m::STALE_REPORTS).increment(out.stale.len() as u64);
        let rejection = |kind: pb::RefusalKind| {
            move |(id, attempt, reason): (JobId, u32, String)| pb::Rejection {
                id,
                attempt,
                reason,
                kind: kind as i32,
            }
        };
        let rejected = (out.stale.into_iter().map(rejection(pb::RefusalKind::Stale)))
            .chain(
                out.invalid
                    .into_iter()
                    .map(rejection(pb::RefusalKind::Invalid)),
            )
            .collect();
        Ok(Response::new(pb::CompleteResponse {
            accepted: out.accepted.len() as u32,
            rejected,
        }))
    }

    async fn fail(
        &self,
        req: Request<pb::FailRequest>,
    ) -> Result<Response<pb::FailResponse>, Status> {
        let r = req.into_inner();
        self.keys.verify(&r.worker_id, &r.worker_key).await?;
        let mut reason = r.reason;
        stackhive_proto::limits::cut_to(&mut reason, validate::MAX_REASON_BYTES);
        let f = Failure {
            worker_id: r.worker_id,
            id: r.id,
            attempt: r.attempt,
            reason,
            retryable: r.retryable,
            handback: r.handback,
        };
        let out = self.store.fail(&f).await?;
        metrics::counter!(m::FAILED_REPORTS).increment(1);
        if out.state == JobState::Queued {
            let why = if f.handback { "handback" } else { "failure" };
            metrics::counter!(m::RETRIES, "why" => why).increment(1);
        }
        tracing::info!(job_id = f.id, attempt = f.attempt, state = %out.state, reason = %f.reason,
            "job attempt failed");
        Ok(Response::new(pb::FailResponse {
            state: convert::state_to_pb(out.state) as i32,
            run_after_ms: out.run_after,
        }))
    }

    async fn deregister(
        &self,
        req: Request<pb::DeregisterRequest>,
    ) -> Result<Response<pb::DeregisterResponse>, Status> {
        let r = req.into_inner();
        self.keys.verify(&r.worker_id, &r.worker_key).await?;
        self.store.deregister_worker(&r.worker_id).await?;
        tracing::info!(worker_id = %r.worker_id, "worker deregistered");
        Ok(Response::new(pb::DeregisterResponse {}))
    }
}
