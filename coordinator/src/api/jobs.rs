//! `JobService`: the client-facing API (submit, get, list, watch, cancel, retry, workers;
//! streamed predictions are `super::predictions`).
//! Responses are paged by encoded size as well as by rows; watch streams are bounded in
//! number and in the ids they follow, and end when their client goes.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use prost::Message as _;
use stackhive_proto::v1 as pb;
use stackhive_proto::v1::job_service_server::JobService;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::convert;
use crate::domain::model::*;
use crate::domain::validate;
use crate::error::Error;
use crate::metrics as m;
use crate::store::Store;

const DEFAULT_PAGE: u32 = 100;
const MAX_PAGE: u32 = 1000;
const WATCH_CHANGED_CAP: u32 = 500;
/// Fastest poll a watch may ask for: each poll is a few queries.
const MIN_WATCH_INTERVAL_MS: u32 = 200;

pub struct JobApi {
    store: Arc<dyn Store>,
    files: crate::services::datasets::DatasetFiles,
    max_batch: u32,
    max_watches: u32,
    watches: Arc<tokio::sync::Semaphore>,
    policy: Policy,
    shutdown: tokio::sync::watch::Receiver<bool>,
}

impl JobApi {
    pub fn new(
        store: Arc<dyn Store>,
        files: crate::services::datasets::DatasetFiles,
        max_batch: u32,
        max_watches: u32,
        policy: Policy,
        shutdown: tokio::sync::watch::Receiver<bool>,
    ) -> Self {
        Self {
            store,
            files,
            max_batch,
            max_watches,
            watches: Arc::new(tokio::sync::Semaphore::new(max_watches as usize)),
            policy,
            shutdown,
        }
    }
}

/// The jobs of `jobs` that fit in one response: at least one, then as many as stay under
/// `MAX_PAGE_BYTES` encoded. Returns them and whether some were left out.
fn fit_page(jobs: &[Job]) -> (Vec<pb::Job>, bool) {
    let mut out = Vec::with_capacity(jobs.len());
    let mut bytes = 0usize;
    for j in jobs {
        let pj = convert::job(j);
        bytes += pj.encoded_len() + 8;
        if !out.is_empty() && bytes > validate::MAX_PAGE_BYTES {
            return (out, true);
        }
        out.push(pj);
    }
    (out, false)
}

fn filter_from(states: &[i32], kind: &str, experiment: &str) -> Result<JobFilter, Error> {
    let states = states
        .iter()
        .map(|&s| {
            convert::state_from_pb(s)
                .ok_or_else(|| Error::invalid(format!("unknown job state {s} in filter")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(JobFilter {
        states,
        kind: (!kind.is_empty()).then(|| kind.to_string()),
        experiment: (!experiment.is_empty()).then(|| experiment.to_string()),
        ..Default::default()
    })
}

#[tonic::async_trait]
impl JobService for JobApi {
    async fn submit(
        &self,
        req: Request<pb::SubmitRequest>,
    ) -> Result<Response<pb::SubmitResponse>, Status> {
        let batch = validate::submit(req.get_ref(), self.max_batch)?;
        // Initial weights named by dependency: look up the stored dependencies' names and
        // kinds in one read. Both are fixed at submission, so reading them before the submit
        // transaction cannot see them change; a dependency missing here is refused by that
        // transaction ("dependency 42 does not exist"), and a failed read is the caller's
        // error, never taken for a missing dependency.
        let ids: Vec<JobId> = batch
            .jobs
            .iter()
            .filter(|j| validate::init_dependency(j).is_some())
            .flat_map(|j| j.depends_on.iter().copied())
            .collect();
        let mut existing = std::collections::HashMap::new();
        if !ids.is_empty() {
            let filter = JobFilter {
                ids,
                ..Default::default()
            };
            for d in self.store.list_jobs(&filter).await? {
                existing.insert(d.id, (d.spec.name, d.spec.kind));
            }
        }
        validate::weight_sources(&batch.jobs, &existing)?;
        let n = batch.jobs.len();
        let out = self.store.submit(batch).await?;
        if !out.deduplicated {
            metrics::counter!(m::SUBMITTED).increment(n as u64);
        }
        Ok(Response::new(pb::SubmitResponse {
            job_ids: out.ids,
            deduplicated: out.deduplicated,
        }))
    }

    async fn get_job(
        &self,
        req: Request<pb::GetJobRequest>,
    ) -> Result<Response<pb::GetJobResponse>, Status> {
        let r = req.into_inner();
        let job = self.store.get_job(r.id).await?;
        let predictions = if r.include_predictions {
            self.store
                .get_predictions(r.id)
                .await?
                .map(convert::predictions)
        } else {
            None
        };
        Ok(Response::new(pb::GetJobResponse {
            job: Some(convert::job(&job)),
            predictions,
        }))
    }

    async fn list_jobs(
        &self,
        req: Request<pb::ListJobsRequest>,
    ) -> Result<Response<pb::ListJobsResponse>, Status> {
        let r = req.into_inner();
        let mut filter = filter_from(&r.states, &r.kind, &r.experiment)?;
        let page = if r.page_size == 0 {
            DEFAULT_PAGE
        } else {
            r.page_size.min(MAX_PAGE)
        };
        if !r.page_token.is_empty() {
            let after: JobId = r.page_token.parse().map_err(|_| {
                Error::invalid(format!(
                    "page token {:?} is not one this server issued",
                    r.page_token
                ))
            })?;
            filter.after_id = Some(after);
        }
        let counts = self.store.count_states(&filter).await?;
        filter.limit = page + 1;
        let mut jobs = self.store.list_jobs(&filter).await?;
        let more_rows = jobs.len() > page as usize;
        jobs.truncate(page as usize);
        let (jobs, more_bytes) = fit_page(&jobs);
        let next = if more_rows || more_bytes {
            jobs.last().map(|j| j.id.to_string()).unwrap_or_default()
        } else {
            String::new()
        };
        Ok(Response::new(pb::ListJobsResponse {
            jobs,
            next_page_token: next,
            counts: Some(convert::counts(&counts)),
        }))
    }

    type WatchStream = ReceiverStream<Result<pb::WatchEvent, Status>>;

    async fn watch(
        &self,
        req: Request<pb::WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let r = req.into_inner();
        if r.experiment.is_empty() && r.job_ids.is_empty() {
            return Err(
                Error::invalid("watch needs an experiment or job ids, found neither").into(),
            );
        }
        if r.job_ids.len() > validate::MAX_WATCH_IDS {
            return Err(Error::invalid(format!(
                "watch lists {} job ids, the limit is {}; watch an experiment instead",
                r.job_ids.len(),
                validate::MAX_WATCH_IDS
            ))
            .into());
        }
        let permit = self.watches.clone().try_acquire_owned().map_err(|_| {
            Error::ResourceExhausted(format!(
                "this coordinator serves {} watch streams already, its limit; try again later",
                self.max_watches
            ))
        })?;
        let filters: Vec<JobFilter> = [
            (!r.experiment.is_empty()).then(|| JobFilter {
                experiment: Some(r.experiment.clone()),
                ..Default::default()
            }),
            (!r.job_ids.is_empty()).then(|| JobFilter {
                ids: r.job_ids.clone(),
                ..Default::default()
            }),
        ]
        .into_iter()
        .flatten()
        .collect();
        let first = count_all(&*self.store, &filters).await?;
        if first.total() == 0 {
            return Err(Error::NotFound("no jobs match the watch request".into()).into());
        }
        let interval =
            Duration::from_millis(r.interval_ms.clamp(MIN_WATCH_INTERVAL_MS, 60_000) as u64);
        let (tx, rx) = mpsc::channel(4);
        let store = self.store.clone();
        let mut shutdown = self.shutdown.clone();
        tokio::spawn(async move {
            // Held for the stream's life: it counts against --max-watches until it ends.
            let _permit = permit;
            let mut cursor: Millis = 0;
            let mut sent_at_cursor: HashSet<JobId> = HashSet::new();
            let mut last_counts: Option<StateCounts> = None;
            loop {
                let event = watch_step(&*store, &filters, &mut cursor, &mut sent_at_cursor).await;
                let event = match event {
                    Ok((counts, changed)) => {
                        let done = counts.total() > 0 && counts.finished() == counts.total();
                        if changed.is_empty() && last_counts == Some(counts) && !done {
                            None
                        } else {
                            last_counts = Some(counts);
                            Some(Ok(pb::WatchEvent {
                                counts: Some(convert::counts(&counts)),
                                changed,
                                done,
                            }))
                        }
                    }
                    Err(e) => Some(Err(Status::from(e))),
                };
                if let Some(ev) = event {
                    let end = matches!(&ev, Ok(e) if e.done) || ev.is_err();
                    if tx.send(ev).await.is_err() || end {
                        return;
                    }
                }
                tokio::select! {
                    _ = tokio::time::sleep(interval) => {}
                    // The client went away: stop polling for it at once, even while nothing
                    // changes (a send would only notice on the next change).
                    _ = tx.closed() => return,
                    _ = shutdown.changed() => {
                        let _ = tx.send(Err(Status::unavailable("coordinator is shutting down"))).await;
                        return;
                    }
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn cancel(
        &self,
        req: Request<pb::CancelRequest>,
    ) -> Result<Response<pb::CancelResponse>, Status> {
        let r = req.into_inner();
        let mut ids = r.job_ids;
        if !r.experiment.is_empty() {
            let f = JobFilter {
                experiment: Some(r.experiment.clone()),
                states: vec![JobState::Blocked, JobState::Queued, JobState::Running],
                ..Default::default()
            };
            ids.extend(self.store.list_jobs(&f).await?.into_iter().map(|j| j.id));
        }
        if ids.is_empty() && r.experiment.is_empty() {
            return Err(
                Error::invalid("cancel needs job ids or an experiment, found neither").into(),
            );
        }
        ids.sort_unstable();
        ids.dedup();
        let out = self.store.cancel(&ids).await?;
        Ok(Response::new(pb::CancelResponse {
            cancelled: out.cancelled,
            stopping: out.stopping,
            already_finished: out.already_finished,
        }))
    }

    async fn retry(
        &self,
        req: Request<pb::RetryRequest>,
    ) -> Result<Response<pb::RetryResponse>, Status> {
        let mut ids = req.into_inner().job_ids;
        if ids.is_empty() {
            return Err(Error::invalid("retry needs at least one job id").into());
        }
        ids.sort_unstable();
        ids.dedup();
        let requeued = self.store.retry(&ids).await?;
        Ok(Response::new(pb::RetryResponse { requeued }))
    }

    async fn import_predictions(
        &self,
        req: Request<pb::ImportPredictionsRequest>,
    ) -> Result<Response<pb::ImportPredictionsResponse>, Status> {
        let (job_id, oof_rows, test_rows) =
            crate::services::imports::import(&self.store, &self.files, req.into_inner()).await?;
        metrics::counter!(m::PREDICTIONS_STORED).increment(1);
        Ok(Response::new(pb::ImportPredictionsResponse {
            job_id,
            oof_rows,
            test_rows,
        }))
    }

    type StreamPredictionsStream = super::predictions::Stream;

    async fn stream_predictions(
        &self,
        req: Request<pb::StreamPredictionsRequest>,
    ) -> Result<Response<Self::StreamPredictionsStream>, Status> {
        Ok(Response::new(super::predictions::stream(
            self.store.clone(),
            req.into_inner(),
        )?))
    }

    async fn list_workers(
        &self,
        req: Request<pb::ListWorkersRequest>,
    ) -> Result<Response<pb::ListWorkersResponse>, Status> {
        let include_dead = req.into_inner().include_dead;
        let workers = self.store.list_workers(include_dead).await?;
        let now = now_ms();
        let dead_after = self.policy.worker_dead_after_ms;
        Ok(Response::new(pb::ListWorkersResponse {
            workers: workers
                .iter()
                .map(|w| convert::worker(w, !w.deregistered && now - w.last_seen <= dead_after))
                .collect(),
        }))
    }
}

async fn count_all(store: &dyn Store, filters: &[JobFilter]) -> Result<StateCounts, Error> {
    let mut total = StateCounts::default();
    for f in filters {
        total.merge(&store.count_states(f).await?);
    }
    Ok(total)
}

/// One poll of a watch: counts, and jobs changed since the cursor (capped; counts are exact,
/// the changed list is a best-effort feed for progress displays).
async fn watch_step(
    store: &dyn Store,
    filters: &[JobFilter],
    cursor: &mut Millis,
    sent_at_cursor: &mut HashSet<JobId>,
) -> Result<(StateCounts, Vec<pb::Job>), Error> {
    let counts = count_all(store, filters).await?;
    let mut changed = Vec::new();
    let mut new_cursor = *cursor;
    for f in filters {
        let mut f = f.clone();
        f.updated_after = Some(*cursor - 1);
        f.limit = WATCH_CHANGED_CAP;
        for j in store.list_jobs(&f).await? {
            if j.updated_at == *cursor && sent_at_cursor.contains(&j.id) {
                continue;
            }
            new_cursor = new_cursor.max(j.updated_at);
            changed.push(j);
        }
    }
    if new_cursor != *cursor {
        sent_at_cursor.clear();
    }
    for j in changed.iter().filter(|j| j.updated_at == new_cursor) {
        sent_at_cursor.insert(j.id);
    }
    *cursor = new_cursor;
    changed.sort_by_key(|j| j.id);
    changed.dedup_by_key(|j| j.id);
    // Best effort like the row cap: an event never nears the message size limit.
    Ok((counts, fit_page(&changed).0))
}
