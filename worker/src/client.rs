//! The connection to the coordinator: a lazily connected channel that reconnects by itself, a
//! retry loop with exponential backoff for outages (a coordinator restart must not stop the
//! worker's jobs), and the worker's registration, renewed when the coordinator forgets it. It
//! decides nothing about jobs.

use std::future::Future;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rand::Rng;
use stackhive_proto::connect::{AuthChannel, ClientOptions};
use stackhive_proto::v1::worker_service_client::WorkerServiceClient;
use stackhive_proto::v1::RegisterRequest;
use tokio_util::sync::CancellationToken;
use tonic::{Code, Status};
use tracing::Instrument as _;

use crate::error::WorkerError;

pub(crate) type Client = WorkerServiceClient<AuthChannel>;

/// Deadline of one RPC attempt (a Lease adds its long-poll wait).
pub(crate) const RPC_TIMEOUT: Duration = Duration::from_secs(30);
const BACKOFF_START: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// Large enough for a Complete batch that carries predictions of a big test set.
const MAX_MESSAGE_BYTES: usize = 256 << 20;

#[derive(Debug)]
pub(crate) enum RpcError {
    /// The caller's stop token fired while waiting to retry.
    Stopped,
    /// A definite answer from the coordinator (not an outage).
    Status(Status),
}

/// True for errors that say the coordinator is down, restarting or overloaded, after which the
/// same request may well succeed. Definite answers (not found, stale, invalid) are not.
pub(crate) fn is_transient(s: &Status) -> bool {
    matches!(
        s.code(),
        Code::Unavailable
            | Code::DeadlineExceeded
            | Code::Cancelled
            | Code::Aborted
            | Code::Unknown
            // A database hiccup behind the coordinator; the report must be kept, not dropped.
            | Code::Internal
    )
}

/// Sets the per-attempt deadline.
pub(crate) fn request<T>(msg: T, timeout: Duration) -> tonic::Request<T> {
    let mut req = tonic::Request::new(msg);
    req.set_timeout(timeout);
    req
}

/// The registration the coordinator handed out: the worker's id and the key that proves it.
#[derive(Clone, Debug)]
struct Registration {
    worker_id: Arc<str>,
    worker_key: Arc<str>,
}

/// The worker's current identity, shared with the executors (artifact uploads carry it). It
/// changes only when the worker registers anew.
#[derive(Clone, Debug)]
pub struct Identity(Arc<RwLock<Registration>>);

impl Default for Identity {
    fn default() -> Self {
        Self(Arc::new(RwLock::new(Registration {
            worker_id: Arc::from(""),
            worker_key: Arc::from(""),
        })))
    }
}

impl Identity {
    /// An identity handed out by a Register call made elsewhere (tools, benchmarks).
    pub fn new(worker_id: &str, worker_key: &str) -> Self {
        let me = Self::default();
        me.set(worker_id, worker_key);
        me
    }

    /// The worker id and its key, read together.
    pub fn current(&self) -> (Arc<str>, Arc<str>) {
        let r = self.0.read().unwrap_or_else(|e| e.into_inner());
        (r.worker_id.clone(), r.worker_key.clone())
    }

    fn set(&self, worker_id: &str, worker_key: &str) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = Registration {
            worker_id: Arc::from(worker_id),
            worker_key: Arc::from(worker_key),
        };
    }
}

pub(crate) struct Coordinator {
    client: Client,
    register: RegisterRequest,
    current: Identity,
    /// Serializes re-registration, so that two tasks that both hear NOT_FOUND register once.
    registering: tokio::sync::Mutex<()>,
    heartbeat_interval_ms: AtomicU32,
}

impl Coordinator {
    /// Nothing connects yet: the first RPC does, and a broken connection is re-made on the next.
    pub(crate) fn new(
        url: &str,
        options: &ClientOptions,
        register: RegisterRequest,
    ) -> Result<Self, WorkerError> {
        let endpoints = options
            .endpoints(url)
            .map_err(|e| WorkerError::Endpoint {
                url: url.to_string(),
                message: e.to_string(),
            })?
            .into_iter()
            .map(|e| {
                e.tcp_nodelay(true)
                    .tcp_keepalive(Some(Duration::from_secs(30)))
                    // Notices a coordinator that vanished without closing the connection
                    // (power loss), instead of waiting on a dead long poll.
                    .http2_keep_alive_interval(Duration::from_secs(15))
                    .keep_alive_timeout(Duration::from_secs(10))
                    .keep_alive_while_idle(true)
            })
            .collect();
        let credentials = options.credentials().map_err(|e| WorkerError::Endpoint {
            url: url.to_string(),
            message: e.to_string(),
        })?;
        // Several coordinators: calls move to the next when one is unreachable.
        let channel = tonic::service::interceptor::InterceptedService::new(
            stackhive_proto::connect::lazy(endpoints),
            credentials,
        );
        let client = WorkerServiceClient::new(channel)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        Ok(Self {
            client,
            register,
            current: Identity::default(),
            registering: tokio::sync::Mutex::new(()),
            heartbeat_interval_ms: AtomicU32::new(10_000),
        })
    }

    pub(crate) fn worker_id(&self) -> Arc<str> {
        self.current.current().0
    }

    /// The id and key every worker call carries.
    pub(crate) fn identity(&self) -> Identity {
        self.current.clone()
    }

    pub(crate) fn heartbeat_interval(&self) -> Duration {
        Duration::from_millis(self.heartbeat_interval_ms.load(Ordering::Relaxed).into())
    }

    /// Registers (again), retrying through outages until `stop` fires. Registering again
    /// presents the current id and key, so the coordinator keeps this worker's identity and the
    /// reports of the jobs it runs stay valid.
    pub(crate) async fn register(&self, stop: &CancellationToken) -> Result<(), RpcError> {
        let (id, key) = self.current.current();
        let mut register = self.register.clone();
        register.worker_id = id.to_string();
        register.worker_key = key.to_string();
        let resp = self
            .call("register", stop, |mut c| {
                let req = request(register.clone(), RPC_TIMEOUT);
                async move { c.register(req).await }
            })
            .await?;
        // Guard against a coordinator that leaves the interval out: a third of the lease keeps
        // two heartbeats of slack before it expires.
        let ttl = if resp.lease_ttl_ms > 0 {
            resp.lease_ttl_ms
        } else {
            30_000
        };
        let interval = match resp.heartbeat_interval_ms {
            0 => ttl / 3,
            n => n,
        }
        .max(50);
        self.heartbeat_interval_ms
            .store(interval, Ordering::Relaxed);
        self.current.set(&resp.worker_id, &resp.worker_key);
        tracing::info!(
            worker_id = %resp.worker_id,
            lease_ttl_ms = ttl,
            heartbeat_interval_ms = interval,
            "registered"
        );
        Ok(())
    }

    /// Registers again after the coordinator said it does not know `stale_id` (it forgot the
    /// worker, e.g. declared it dead during an outage). Running jobs go on; their heartbeats
    /// tell whether their leases survived.
    pub(crate) async fn reregister(
        &self,
        stale_id: &str,
        stop: &CancellationToken,
    ) -> Result<(), RpcError> {
        let _guard = self.registering.lock().await;
        if &*self.worker_id() != stale_id {
            return Ok(());
        }
        tracing::warn!(worker_id = %stale_id, "coordinator does not know this worker; registering again");
        self.register(stop).await
    }

    /// Runs `f` until it gets an answer, retrying transient errors with exponential backoff and
    /// jitter. `stop` ends the waiting between attempts, never an attempt in flight: a Lease
    /// answer dropped on the floor would leave claimed jobs stranded until their leases expire.
    /// The call is one client span (`otel.name` = `rpc`), so the coordinator's span of each
    /// attempt is its child.
    pub(crate) async fn call<T, F, Fut>(
        &self,
        rpc: &'static str,
        stop: &CancellationToken,
        f: F,
    ) -> Result<T, RpcError>
    where
        F: FnMut(Client) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        let span = tracing::info_span!("call", otel.name = rpc, otel.kind = "client");
        self.call_retrying(rpc, stop, f).instrument(span).await
    }

    async fn call_retrying<T, F, Fut>(
        &self,
        rpc: &'static str,
        stop: &CancellationToken,
        mut f: F,
    ) -> Result<T, RpcError>
    where
        F: FnMut(Client) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        let mut delay = BACKOFF_START;
        let mut failures = 0u32;
        loop {
            match f(self.client.clone()).await {
                Ok(resp) => {
                    if failures > 0 {
                        tracing::info!(rpc, failures, "coordinator reachable again");
                    }
                    return Ok(resp.into_inner());
                }
                Err(status) if is_transient(&status) => {
                    failures += 1;
                    // Equal jitter, so that a rack of workers does not reconnect in lockstep.
                    let half = delay / 2;
                    let wait = half + rand::rng().random_range(Duration::ZERO..=half);
                    if failures == 1 || failures.is_multiple_of(20) {
                        tracing::warn!(
                            rpc,
                            code = ?status.code(),
                            error = %status.message(),
                            failures,
                            retry_in_ms = wait.as_millis() as u64,
                            "coordinator unavailable; retrying"
                        );
                    } else {
                        tracing::debug!(rpc, code = ?status.code(), failures, "retrying");
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = stop.cancelled() => return Err(RpcError::Stopped),
                    }
                    delay = (delay * 2).min(BACKOFF_MAX);
                }
                Err(status) => return Err(RpcError::Status(status)),
            }
        }
    }
}
