//! Delivery of job reports to the coordinator. Completions are batched: one task sends a
//! Complete call as soon as there is something to send and gathers whatever finishes while that
//! call is in flight into the next one, so latency stays low when idle and throughput scales
//! when busy (tens of thousands of no-op jobs a second). Failures go one Fail call each, a few
//! at a time. Stale reports are logged and dropped (the job was re-run elsewhere); reports that
//! could not be delivered because the coordinator is unreachable are kept and retried.

use std::sync::Arc;
use std::time::Duration;

use futures::stream::{FuturesUnordered, StreamExt};
use prost::Message;
use stackhive_proto::v1::{CompleteRequest, Completion, FailRequest, RefusalKind};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::Code;

use crate::client::{request, Coordinator, RpcError, RPC_TIMEOUT};

/// Keeps a Complete call well under the coordinator's message limit even when completions
/// carry predictions; a single larger completion still goes alone.
const MAX_BATCH_BYTES: usize = 8 << 20;
/// Fail calls in flight at once.
const MAX_FAILS_IN_FLIGHT: usize = 16;
/// Longest failure reason sent; an executor's message could be a whole log.
use stackhive_proto::limits::MAX_REASON_BYTES;
/// Wait before retrying a refusal that is neither an outage nor about the report itself.
const REFUSED_RETRY: Duration = Duration::from_secs(5);

/// A failed (or handed back) attempt, waiting to be reported.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct FailItem {
    pub(crate) id: i64,
    pub(crate) attempt: u32,
    pub(crate) reason: String,
    pub(crate) retryable: bool,
    pub(crate) handback: bool,
}

/// Where job tasks drop their reports. Sending never waits.
#[derive(Clone, Debug)]
pub(crate) struct Reports {
    complete: UnboundedSender<Completion>,
    fail: UnboundedSender<FailItem>,
}

impl Reports {
    pub(crate) fn complete(&self, c: Completion) {
        if self.complete.send(c).is_err() {
            tracing::error!("completion reported after the reporter stopped; dropped");
        }
    }

    pub(crate) fn fail(&self, f: FailItem) {
        if self.fail.send(f).is_err() {
            tracing::error!("failure reported after the reporter stopped; dropped");
        }
    }
}

/// The reporter's tasks. After `finish` fires they deliver what is queued and end; after
/// `abort` fires they stop retrying. Each task returns how many reports it could not deliver.
pub(crate) struct Reporter {
    pub(crate) completions: JoinHandle<usize>,
    pub(crate) failures: JoinHandle<usize>,
}

pub(crate) fn spawn(
    coord: Arc<Coordinator>,
    max_batch: usize,
    finish: CancellationToken,
    abort: CancellationToken,
) -> (Reports, Reporter) {
    let (complete_tx, complete_rx) = unbounded_channel();
    let (fail_tx, fail_rx) = unbounded_channel();
    let completions = tokio::spawn(completion_loop(
        coord.clone(),
        complete_rx,
        fail_tx.clone(),
        max_batch.max(1),
        finish.clone(),
        abort.clone(),
    ));
    let failures = tokio::spawn(failure_loop(coord, fail_rx, finish, abort));
    let reports = Reports {
        complete: complete_tx,
        fail: fail_tx,
    };
    (
        reports,
        Reporter {
            completions,
            failures,
        },
    )
}

async fn completion_loop(
    coord: Arc<Coordinator>,
    mut rx: UnboundedReceiver<Completion>,
    refused: UnboundedSender<FailItem>,
    max_batch: usize,
    finish: CancellationToken,
    abort: CancellationToken,
) -> usize {
    let mut closed = false;
    loop {
        let first = tokio::select! {
            biased;
            c = rx.recv() => c,
            _ = finish.cancelled(), if !closed => {
                // Everything already queued is still received; nothing new can come.
                rx.close();
                closed = true;
                continue;
            }
        };
        let Some(first) = first else { return 0 };
        let mut bytes = first.encoded_len();
        let mut batch = Vec::with_capacity(max_batch.min(1024));
        batch.push(first);
        while batch.len() < max_batch && bytes < MAX_BATCH_BYTES {
            match rx.try_recv() {
                Ok(c) => {
                    bytes += c.encoded_len();
                    batch.push(c);
                }
                Err(_) => break,
            }
        }
        let undelivered = deliver_completions(&coord, batch, &refused, &abort).await;
        if undelivered > 0 {
            // Aborted: count what is still queued as well.
            rx.close();
            let mut rest = 0;
            while rx.try_recv().is_ok() {
                rest += 1;
            }
            return undelivered + rest;
        }
    }
}

/// Sends one batch until the coordinator has answered for every item: accepted, stale
/// (dropped: the job was re-run elsewhere) or invalid (the coordinator will never take it, so
/// the job is reported failed with the reason rather than re-run until it crashes out). A
/// request refused as a whole (too large for the coordinator) is sent again one item at a
/// time. Returns how many items were left undelivered because `abort` fired.
async fn deliver_completions(
    coord: &Coordinator,
    batch: Vec<Completion>,
    refused: &UnboundedSender<FailItem>,
    abort: &CancellationToken,
) -> usize {
    let mut pending = vec![batch];
    let mut reregistered = false;
    while let Some(items) = pending.pop() {
        let (worker_id, worker_key) = coord.identity().current();
        let req = CompleteRequest {
            worker_id: worker_id.to_string(),
            worker_key: worker_key.to_string(),
            completions: items,
        };
        let sent = tokio::select! {
            r = coord.call("complete", abort, |mut c| {
                let r = request(req.clone(), RPC_TIMEOUT);
                async move { c.complete(r).await }
            }) => r,
            _ = abort.cancelled() => Err(RpcError::Stopped),
        };
        let items = req.completions;
        let undelivered = || items.len() + pending.iter().map(Vec::len).sum::<usize>();
        match sent {
            Ok(resp) => {
                tracing::debug!(
                    accepted = resp.accepted,
                    rejected = resp.rejected.len(),
                    "completions delivered"
                );
                for r in &resp.rejected {
                    if r.kind() == RefusalKind::Stale {
                        tracing::info!(job_id = r.id, attempt = r.attempt, reason = %r.reason,
                            "completion rejected as stale; dropped");
                    } else if !fail_refused(refused, r.id, r.attempt, &r.reason) {
                        return 1;
                    }
                }
            }
            Err(RpcError::Stopped) => return undelivered(),
            Err(RpcError::Status(s)) => match s.code() {
                Code::NotFound if !reregistered => {
                    reregistered = true;
                    if coord.reregister(&worker_id, abort).await.is_err() {
                        return undelivered();
                    }
                    pending.push(items);
                }
                Code::InvalidArgument | Code::ResourceExhausted | Code::OutOfRange
                    if items.len() > 1 =>
                {
                    pending.extend(items.into_iter().map(|c| vec![c]));
                }
                Code::InvalidArgument | Code::ResourceExhausted | Code::OutOfRange => {
                    let c = &items[0];
                    if !fail_refused(refused, c.id, c.attempt, s.message()) {
                        return 1;
                    }
                }
                Code::NotFound => tracing::error!(
                    count = items.len(),
                    error = %s.message(),
                    "coordinator does not know these jobs; completions dropped"
                ),
                code => {
                    tracing::error!(?code, error = %s.message(), "complete refused; retrying");
                    pending.push(items);
                    tokio::select! {
                        _ = tokio::time::sleep(REFUSED_RETRY) => {}
                        _ = abort.cancelled() => {}
                    }
                }
            },
        }
    }
    0
}

/// Queues a completion the coordinator refused for good as the job's failure; false when the
/// failure reporter has stopped.
fn fail_refused(refused: &UnboundedSender<FailItem>, id: i64, attempt: u32, why: &str) -> bool {
    tracing::error!(job_id = id, attempt, error = %why,
        "coordinator refused the result; reporting the job as failed");
    let fail = FailItem {
        id,
        attempt,
        reason: format!("coordinator refused the result: {why}"),
        retryable: false,
        handback: false,
    };
    refused.send(fail).is_ok()
}

async fn failure_loop(
    coord: Arc<Coordinator>,
    mut rx: UnboundedReceiver<FailItem>,
    finish: CancellationToken,
    abort: CancellationToken,
) -> usize {
    let mut in_flight: FuturesUnordered<_> = FuturesUnordered::new();
    let mut undelivered = 0;
    let mut closed = false;
    loop {
        tokio::select! {
            biased;
            Some(delivered) = in_flight.next(), if !in_flight.is_empty() => {
                let delivered: bool = delivered;
                if !delivered {
                    undelivered += 1;
                }
            }
            f = rx.recv(), if in_flight.len() < MAX_FAILS_IN_FLIGHT => match f {
                Some(f) => in_flight.push(deliver_failure(coord.clone(), f, abort.clone())),
                None => break,
            },
            _ = finish.cancelled(), if !closed => {
                rx.close();
                closed = true;
            }
        }
    }
    while let Some(delivered) = in_flight.next().await {
        if !delivered {
            undelivered += 1;
        }
    }
    undelivered
}

/// Reports one failure; false when `abort` fired before the coordinator had it.
async fn deliver_failure(
    coord: Arc<Coordinator>,
    mut f: FailItem,
    abort: CancellationToken,
) -> bool {
    stackhive_proto::limits::cut_to(&mut f.reason, MAX_REASON_BYTES);
    let mut reregistered = false;
    loop {
        if abort.is_cancelled() {
            return false;
        }
        let (worker_id, worker_key) = coord.identity().current();
        let req = FailRequest {
            worker_id: worker_id.to_string(),
            worker_key: worker_key.to_string(),
            id: f.id,
            attempt: f.attempt,
            reason: f.reason.clone(),
            retryable: f.retryable,
            handback: f.handback,
        };
        let sent = tokio::select! {
            r = coord.call("fail", &abort, |mut c| {
                let r = request(req.clone(), RPC_TIMEOUT);
                async move { c.fail(r).await }
            }) => r,
            _ = abort.cancelled() => Err(RpcError::Stopped),
        };
        match sent {
            Ok(resp) => {
                tracing::debug!(
                    job_id = f.id,
                    attempt = f.attempt,
                    state = ?resp.state(),
                    "failure delivered"
                );
                return true;
            }
            Err(RpcError::Stopped) => return false,
            Err(RpcError::Status(s)) => match s.code() {
                Code::FailedPrecondition => {
                    tracing::info!(
                        job_id = f.id,
                        attempt = f.attempt,
                        error = %s.message(),
                        "failure report rejected as stale; dropped"
                    );
                    return true;
                }
                Code::NotFound if !reregistered => {
                    reregistered = true;
                    if coord.reregister(&worker_id, &abort).await.is_err() {
                        return false;
                    }
                }
                Code::NotFound | Code::InvalidArgument | Code::OutOfRange => {
                    tracing::error!(
                        job_id = f.id,
                        attempt = f.attempt,
                        code = ?s.code(),
                        error = %s.message(),
                        "coordinator refused the failure report; dropped"
                    );
                    return true;
                }
                code => {
                    tracing::error!(job_id = f.id, ?code, error = %s.message(), "fail refused; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(REFUSED_RETRY) => {}
                        _ = abort.cancelled() => return false,
                    }
                }
            },
        }
    }
}
