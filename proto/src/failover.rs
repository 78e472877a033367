//! Several coordinators of one cluster behind one channel (issue 16): a worker or the CLI is
//! given `--coordinator http://a:50051,http://b:50051` and keeps working when one of them
//! dies for good. Calls go to the current coordinator until one fails at the transport level
//! (refused, reset, unreachable), and from then on to the next in the list; the failed call's
//! error still reaches its caller, whose own retry (every worker call has one) lands on the
//! next coordinator. A gRPC status, even UNAVAILABLE, is an answer and moves nothing.
//!
//! Must not: replay a request itself (its body is consumed, and a report must reach the
//! coordinator once, through the caller's fencing), or spread calls over coordinators that all
//! work (one at a time keeps a worker's long poll and its reports on one coordinator).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use tonic::body::Body;
use tonic::codegen::http;
use tonic::codegen::Service;
use tonic::transport::Channel;

/// The coordinators' channels (each with its address, for the log), one of them current.
#[derive(Clone, Debug)]
pub struct Failover {
    channels: Arc<[(String, Channel)]>,
    current: Arc<AtomicUsize>,
}

impl Failover {
    /// Over `channels` (at least one), starting with the first.
    pub fn new(channels: Vec<(String, Channel)>) -> Self {
        assert!(
            !channels.is_empty(),
            "a failover channel needs a coordinator"
        );
        Failover {
            channels: channels.into(),
            current: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// Makes channel `i` the current one (the one found reachable first).
    pub fn starting_at(self, i: usize) -> Self {
        self.current
            .store(i % self.channels.len(), Ordering::Relaxed);
        self
    }

    /// The index of the coordinator calls go to now.
    pub fn current(&self) -> usize {
        self.current.load(Ordering::Relaxed)
    }
}

impl From<Channel> for Failover {
    fn from(c: Channel) -> Self {
        Failover::new(vec![(String::new(), c)])
    }
}

type ResponseFuture =
    Pin<Box<dyn Future<Output = Result<http::Response<Body>, tonic::transport::Error>> + Send>>;

impl Service<http::Request<Body>> for Failover {
    type Response = http::Response<Body>;
    type Error = tonic::transport::Error;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Readiness is the chosen channel's, awaited in `call`.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let n = self.channels.len();
        let i = self.current.load(Ordering::Relaxed) % n;
        let mut channel = self.channels[i].1.clone();
        let (current, channels) = (self.current.clone(), self.channels.clone());
        Box::pin(async move {
            let result = async {
                std::future::poll_fn(|cx| channel.poll_ready(cx)).await?;
                channel.call(request).await
            }
            .await;
            if result.is_err() && n > 1 {
                // Only the first of several calls failing together moves it on.
                let next = (i + 1) % n;
                if current
                    .compare_exchange(i, next, Ordering::Relaxed, Ordering::Relaxed)
                    .is_ok()
                {
                    tracing::warn!(
                        from = %channels[i].0,
                        to = %channels[next].0,
                        "coordinator unreachable; the next calls go to another"
                    );
                }
            }
            result
        })
    }
}
