//! Daemon tests against an in-process fake of the coordinator's WorkerService: batching of
//! completions, cancel and lease loss from heartbeats, drain and hand-back on shutdown, and
//! riding out a coordinator restart. The fake keeps just enough state to fence reports by
//! `(job_id, attempt)`; the real coordinator's tests live with it.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use stackhive_proto::v1::worker_service_server::{WorkerService, WorkerServiceServer};
use stackhive_proto::v1::*;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{Request, Response, Status};

use crate::{run, WorkerConfig, WorkerError};

#[derive(Default)]
struct State {
    next_id: i64,
    queue: VecDeque<LeasedJob>,
    /// Running job id → current attempt (the fencing token).
    running: HashMap<i64, u32>,
    cancel: HashSet<i64>,
    lose: HashSet<i64>,
    completed: Vec<(i64, u32, String)>,
    failed: Vec<FailRequest>,
    workers: HashSet<String>,
    registrations: usize,
    complete_calls: usize,
    deregistered: Vec<String>,
    progress: HashMap<i64, String>,
    /// Jobs whose completions the fake refuses as invalid, as the coordinator refuses
    /// predictions that do not fit their job.
    refuse: HashSet<i64>,
}

#[derive(Clone)]
struct Fake(Arc<Mutex<State>>);

impl Fake {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.0.lock().expect("fake state")
    }

    fn submit(&self, kind: &str, payload: &str, n: usize) -> Vec<i64> {
        let mut s = self.state();
        (0..n)
            .map(|_| {
                s.next_id += 1;
                let id = s.next_id;
                s.queue.push_back(LeasedJob {
                    id,
                    kind: kind.into(),
                    payload_json: payload.into(),
                    resources: Some(Resources {
                        cpu_slots: 1,
                        ..Default::default()
                    }),
                    ..Default::default()
                });
                id
            })
            .collect()
    }

    fn known(&self, worker_id: &str) -> Result<(), Status> {
        if self.state().workers.contains(worker_id) {
            Ok(())
        } else {
            Err(Status::not_found(format!("worker {worker_id} not found")))
        }
    }
}

#[tonic::async_trait]
impl WorkerService for Fake {
    async fn register(
        &self,
        req: Request<RegisterRequest>,
    ) -> Result<Response<RegisterResponse>, Status> {
        let req = req.into_inner();
        assert_eq!(
            req.kinds,
            ["dataset-prefetch", "ensemble", "noop", "shell", "sleep"]
        );
        let mut s = self.state();
        s.registrations += 1;
        let worker_id = format!("w{}", s.registrations);
        s.workers.insert(worker_id.clone());
        Ok(Response::new(RegisterResponse {
            worker_key: format!("key-of-{worker_id}"),
            worker_id,
            lease_ttl_ms: 2_000,
            heartbeat_interval_ms: 50,
        }))
    }

    async fn lease(&self, req: Request<LeaseRequest>) -> Result<Response<LeaseResponse>, Status> {
        let req = req.into_inner();
        self.known(&req.worker_id)?;
        let free = req.free.unwrap_or_default().cpu_slots;
        assert!(req.max_jobs <= free, "asked for more jobs than free slots");
        let deadline = Instant::now() + Duration::from_millis(req.wait_ms.into());
        loop {
            {
                let mut s = self.state();
                let mut jobs = Vec::new();
                while jobs.len() < req.max_jobs as usize {
                    let Some(mut job) = s.queue.pop_front() else {
                        break;
                    };
                    job.attempt += 1;
                    s.running.insert(job.id, job.attempt);
                    jobs.push(job);
                }
                if !jobs.is_empty() || Instant::now() >= deadline {
                    return Ok(Response::new(LeaseResponse { jobs }));
                }
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    async fn heartbeat(
        &self,
        req: Request<HeartbeatRequest>,
    ) -> Result<Response<HeartbeatResponse>, Status> {
        let req = req.into_inner();
        self.known(&req.worker_id)?;
        let mut s = self.state();
        let mut stop = Vec::new();
        for j in req.jobs {
            if !j.progress_json.is_empty() {
                s.progress.insert(j.id, j.progress_json);
            }
            let reason = if s.running.get(&j.id) != Some(&j.attempt) || s.lose.contains(&j.id) {
                StopReason::LeaseLost
            } else if s.cancel.contains(&j.id) {
                StopReason::Cancelled
            } else {
                continue;
            };
            stop.push(StopJob {
                id: j.id,
                attempt: j.attempt,
                reason: reason as i32,
            });
        }
        Ok(Response::new(HeartbeatResponse {
            stop,
            lease_ttl_ms: 2_000,
        }))
    }

    async fn complete(
        &self,
        req: Request<CompleteRequest>,
    ) -> Result<Response<CompleteResponse>, Status> {
        let req = req.into_inner();
        let mut s = self.state();
        s.complete_calls += 1;
        let mut accepted = 0;
        let mut rejected = Vec::new();
        // Per item, as the coordinator answers: accepted, stale or invalid.
        for c in req.completions {
            let refusal = if s.running.get(&c.id) != Some(&c.attempt) {
                Some((RefusalKind::Stale, "stale"))
            } else if s.refuse.contains(&c.id) {
                Some((RefusalKind::Invalid, "predictions do not fit the job"))
            } else {
                None
            };
            match refusal {
                None => {
                    s.running.remove(&c.id);
                    s.completed.push((c.id, c.attempt, c.result_json));
                    accepted += 1;
                }
                Some((kind, reason)) => rejected.push(Rejection {
                    id: c.id,
                    attempt: c.attempt,
                    reason: reason.into(),
                    kind: kind as i32,
                }),
            }
        }
        Ok(Response::new(CompleteResponse { accepted, rejected }))
    }

    async fn fail(&self, req: Request<FailRequest>) -> Result<Response<FailResponse>, Status> {
        let req = req.into_inner();
        let mut s = self.state();
        if s.running.get(&req.id) != Some(&req.attempt) {
            return Err(Status::failed_precondition("stale report"));
        }
        s.running.remove(&req.id);
        if req.handback {
            let mut job = LeasedJob {
                id: req.id,
                attempt: req.attempt,
                kind: "sleep".into(),
                ..Default::default()
            };
            job.payload_json = r#"{"ms": 1}"#.into();
            s.queue.push_front(job);
        }
        s.failed.push(req);
        Ok(Response::new(FailResponse::default()))
    }

    async fn deregister(
        &self,
        req: Request<DeregisterRequest>,
    ) -> Result<Response<DeregisterResponse>, Status> {
        let mut s = self.state();
        let id = req.into_inner().worker_id;
        s.workers.remove(&id);
        s.deregistered.push(id);
        Ok(Response::new(DeregisterResponse {}))
    }
}

/// A fake coordinator serving on `addr` until stopped.
struct Server {
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl Server {
    async fn start(fake: Fake, addr: SocketAddr) -> Self {
        let listener = tokio::net::TcpListener::bind(addr).await.expect("bind");
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(WorkerServiceServer::new(fake))
                .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async {
                    let _ = stopped.await;
                })
                .await
                .expect("fake coordinator");
        });
        Self {
            stop: Some(stop),
            task,
        }
    }

    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = self.task.await;
    }
}

async fn free_addr() -> SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    l.local_addr().expect("addr")
}

fn config(addr: SocketAddr) -> WorkerConfig {
    let mut c = WorkerConfig::new(format!("http://{addr}"));
    c.slots = Some(64);
    c.lease_wait_ms = 200;
    c
}

/// A running worker and the trigger of its shutdown future.
struct Worker {
    shutdown: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), WorkerError>>,
}

impl Worker {
    fn start(config: WorkerConfig) -> Self {
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(run(config, async {
            let _ = rx.await;
        }));
        Self {
            shutdown: Some(tx),
            task,
        }
    }

    async fn stop(mut self) -> Result<(), WorkerError> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        tokio::time::timeout(Duration::from_secs(30), self.task)
            .await
            .expect("worker stops")
            .expect("worker task")
    }
}

async fn until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_noop_jobs_complete_once_each_in_batches() {
    let addr = free_addr().await;
    let fake = Fake(Default::default());
    let server = Server::start(fake.clone(), addr).await;
    let ids = fake.submit("noop", "", 5_000);
    let worker = Worker::start(config(addr));

    until("every job completed", || {
        fake.state().completed.len() == ids.len()
    })
    .await;
    worker.stop().await.expect("clean shutdown");

    server.stop().await;
    let s = fake.state();
    let done: HashSet<i64> = s.completed.iter().map(|c| c.0).collect();
    assert_eq!(done.len(), ids.len(), "a job was completed twice");
    assert!(s.failed.is_empty(), "{:?}", s.failed);
    // Batched: far fewer calls than jobs.
    assert!(
        s.complete_calls * 5 < ids.len(),
        "{} Complete calls",
        s.complete_calls
    );
    assert_eq!(s.deregistered, ["w1"]);
}

/// Issue 11: a batch with a refused item stores the rest; the refused job is reported failed
/// for good with the coordinator's reason, and nothing is sent twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_completion_fails_its_job_and_the_rest_complete() {
    let addr = free_addr().await;
    let fake = Fake(Default::default());
    let server = Server::start(fake.clone(), addr).await;
    let ids = fake.submit("noop", "", 200);
    let bad = [ids[7], ids[150]];
    fake.state().refuse.extend(bad);
    let worker = Worker::start(config(addr));

    until("every job answered", || {
        let s = fake.state();
        s.completed.len() + s.failed.len() == ids.len()
    })
    .await;
    worker.stop().await.expect("clean shutdown");
    server.stop().await;
    let s = fake.state();
    let failed: HashSet<i64> = s.failed.iter().map(|f| f.id).collect();
    assert_eq!(failed, bad.into_iter().collect());
    for f in &s.failed {
        assert!(!f.retryable && !f.handback, "{f:?}");
        assert_eq!(
            f.reason,
            "coordinator refused the result: predictions do not fit the job"
        );
    }
    let done: HashSet<i64> = s.completed.iter().map(|c| c.0).collect();
    assert_eq!(done.len(), s.completed.len(), "a job was completed twice");
    assert_eq!(done.len(), ids.len() - bad.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_carry_cancel_and_lease_loss() {
    let addr = free_addr().await;
    let fake = Fake(Default::default());
    let server = Server::start(fake.clone(), addr).await;
    let ids = fake.submit("sleep", r#"{"ms": 60000}"#, 2);
    let shell = fake.submit("shell", r#"{"command": "exit 4"}"#, 1);
    let worker = Worker::start(config(addr));

    until("the shell job failed", || fake.state().failed.len() == 1).await;
    {
        let s = fake.state();
        assert_eq!(s.failed[0].id, shell[0]);
        assert!(s.failed[0].retryable);
        assert_eq!(s.failed[0].reason, "command exited with code 4");
    }
    until("both sleeps run", || fake.state().running.len() == 2).await;
    {
        let mut s = fake.state();
        s.cancel.insert(ids[0]);
        s.lose.insert(ids[1]);
    }
    until("the cancelled job reported", || {
        fake.state().failed.len() == 2
    })
    .await;
    // Give a lease-lost report (which must not come) time to arrive.
    tokio::time::sleep(Duration::from_millis(300)).await;
    worker.stop().await.expect("clean shutdown");

    server.stop().await;
    let s = fake.state();
    assert_eq!(s.failed.len(), 2, "{:?}", s.failed);
    let cancelled = &s.failed[1];
    assert_eq!((cancelled.id, cancelled.attempt), (ids[0], 1));
    assert_eq!(cancelled.reason, "cancelled");
    assert!(!cancelled.retryable && !cancelled.handback);
    assert!(s.completed.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_drains_short_jobs_and_hands_back_the_rest() {
    let addr = free_addr().await;
    let fake = Fake(Default::default());
    let server = Server::start(fake.clone(), addr).await;
    let short = fake.submit("sleep", r#"{"ms": 300}"#, 1);
    let long = fake.submit("sleep", r#"{"ms": 60000}"#, 1);
    let mut cfg = config(addr);
    // Long enough for the 300 ms job on a loaded machine (with a 1 s drain, a full CI run on 2
    // cores once recorded no completion for it); the 60 s job still outlasts it.
    cfg.drain_timeout_s = 5;
    let worker = Worker::start(cfg);

    until("both run", || fake.state().running.len() == 2).await;
    let started = Instant::now();
    worker.stop().await.expect("clean shutdown");
    assert!(started.elapsed() < Duration::from_secs(10));

    server.stop().await;
    let s = fake.state();
    assert_eq!(s.completed.iter().map(|c| c.0).collect::<Vec<_>>(), short);
    assert_eq!(s.failed.len(), 1);
    assert_eq!(s.failed[0].id, long[0]);
    assert!(s.failed[0].handback);
    assert_eq!(s.deregistered, ["w1"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_rides_out_a_coordinator_that_is_down_or_forgets_it() {
    let addr = free_addr().await;
    let fake = Fake(Default::default());
    // Nothing listens yet: the worker must keep trying to register.
    let worker = Worker::start(config(addr));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let server = Server::start(fake.clone(), addr).await;
    let first = fake.submit("sleep", r#"{"ms": 1500}"#, 1);
    until("the job runs", || fake.state().running.len() == 1).await;

    // The coordinator goes away while the job runs and comes back having forgotten the
    // worker; the job's completion must still arrive.
    server.stop().await;
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    fake.state().workers.clear();
    let server = Server::start(fake.clone(), addr).await;
    until("the job completed", || fake.state().completed.len() == 1).await;
    let second = fake.submit("noop", "", 1);
    until("a new job completed", || fake.state().completed.len() == 2).await;
    worker.stop().await.expect("clean shutdown");

    server.stop().await;
    let s = fake.state();
    assert_eq!(s.completed[0].0, first[0]);
    assert_eq!(s.completed[1].0, second[0]);
    assert_eq!(s.registrations, 2, "registers again after NOT_FOUND");
    assert_eq!(s.deregistered, ["w2"]);
}
