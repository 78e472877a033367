//! The CLI's connection to a coordinator: one thin method per `JobService` RPC, each turning a
//! `tonic::Status` into a message a user can act on. Nothing here formats output or decides
//! what a command does with the answer. The credentials and TLS settings of the command line
//! (`--token`, `--tls-ca`, …) are set once per process by [`set_client_options`] and used by
//! every connection the command makes.

use std::error::Error as _;
use std::time::Duration;

use std::sync::OnceLock;

use stackhive_proto::connect::{AuthChannel, ClientOptions};
use stackhive_proto::v1::job_service_client::JobServiceClient;
use stackhive_proto::v1::{
    CancelRequest, CancelResponse, GetJobRequest, GetJobResponse, ListJobsRequest,
    ListJobsResponse, ListWorkersRequest, ListWorkersResponse, RetryRequest, RetryResponse,
    SubmitRequest, SubmitResponse, WatchEvent, WatchRequest,
};
use tonic::{Code, Status, Streaming};

/// Predictions of a large test set easily pass tonic's 4 MiB default.
const MAX_MESSAGE_BYTES: usize = 256 << 20;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A failed call, worded for the person at the terminal.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ApiError {
    #[error("{url:?} is not a coordinator URL: {reason}")]
    BadUrl { url: String, reason: String },
    #[error("cannot reach the coordinator at {url}: {reason}")]
    Unreachable { url: String, reason: String },
    /// Any other status: `<what kind of failure>: <the coordinator's message>`.
    #[error("{0}")]
    Rejected(String),
}

static CLIENT_OPTIONS: OnceLock<ClientOptions> = OnceLock::new();

/// The command line's credentials and TLS settings, for every connection of this process.
pub fn set_client_options(options: ClientOptions) {
    let _ = CLIENT_OPTIONS.set(options);
}

fn client_options() -> ClientOptions {
    CLIENT_OPTIONS.get().cloned().unwrap_or_default()
}

/// A connected `JobService` client.
#[derive(Clone)]
pub struct Api {
    url: String,
    channel: AuthChannel,
    inner: JobServiceClient<AuthChannel>,
}

impl Api {
    /// Connects at once, so that a wrong address fails before any work is done.
    pub async fn connect(url: &str) -> Result<Self, ApiError> {
        let url = normalize_url(url);
        let options = client_options();
        let endpoints = options
            .endpoints(&url)
            .map_err(|e| ApiError::BadUrl {
                url: url.clone(),
                reason: error_chain(&e),
            })?
            .into_iter()
            .map(|e| e.connect_timeout(CONNECT_TIMEOUT).tcp_nodelay(true))
            .collect();
        let credentials = options.credentials().map_err(|e| ApiError::BadUrl {
            url: url.clone(),
            reason: error_chain(&e),
        })?;
        let channel = stackhive_proto::connect::connect_first(endpoints)
            .await
            .map_err(|e| ApiError::Unreachable {
                url: url.clone(),
                reason: error_chain(&e),
            })?;
        let channel = tonic::service::interceptor::InterceptedService::new(channel, credentials);
        let inner = JobServiceClient::new(channel.clone())
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        Ok(Api {
            url,
            channel,
            inner,
        })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// The connection, for the other services (datasets).
    pub fn channel(&self) -> AuthChannel {
        self.channel.clone()
    }

    pub async fn submit(&self, req: SubmitRequest) -> Result<SubmitResponse, ApiError> {
        self.inner
            .clone()
            .submit(req)
            .await
            .map(|r| r.into_inner())
            .map_err(|s| self.error(s))
    }

    pub async fn get_job(&self, req: GetJobRequest) -> Result<GetJobResponse, ApiError> {
        self.inner
            .clone()
            .get_job(req)
            .await
            .map(|r| r.into_inner())
            .map_err(|s| self.error(s))
    }

    pub async fn list_jobs(&self, req: ListJobsRequest) -> Result<ListJobsResponse, ApiError> {
        self.inner
            .clone()
            .list_jobs(req)
            .await
            .map(|r| r.into_inner())
            .map_err(|s| self.error(s))
    }

    pub async fn watch(&self, req: WatchRequest) -> Result<WatchStream, ApiError> {
        let inner = self
            .inner
            .clone()
            .watch(req)
            .await
            .map_err(|s| self.error(s))?
            .into_inner();
        Ok(WatchStream {
            api: self.clone(),
            inner,
        })
    }

    pub async fn cancel(&self, req: CancelRequest) -> Result<CancelResponse, ApiError> {
        self.inner
            .clone()
            .cancel(req)
            .await
            .map(|r| r.into_inner())
            .map_err(|s| self.error(s))
    }

    pub async fn retry(&self, req: RetryRequest) -> Result<RetryResponse, ApiError> {
        self.inner
            .clone()
            .retry(req)
            .await
            .map(|r| r.into_inner())
            .map_err(|s| self.error(s))
    }

    pub async fn list_workers(
        &self,
        req: ListWorkersRequest,
    ) -> Result<ListWorkersResponse, ApiError> {
        self.inner
            .clone()
            .list_workers(req)
            .await
            .map(|r| r.into_inner())
            .map_err(|s| self.error(s))
    }

    fn error(&self, status: Status) -> ApiError {
        status_error(&self.url, &status)
    }
}

/// The events of a `Watch` call.
pub struct WatchStream {
    api: Api,
    inner: Streaming<WatchEvent>,
}

impl WatchStream {
    /// The next event; `None` once the coordinator closed the stream.
    pub async fn next(&mut self) -> Result<Option<WatchEvent>, ApiError> {
        self.inner.message().await.map_err(|s| self.api.error(s))
    }
}

/// `host:port` is accepted as shorthand for `http://host:port`.
/// Each listed address with a scheme (`host:port` means `http://host:port`).
pub fn normalize_url(url: &str) -> String {
    stackhive_proto::connect::addresses(url)
        .into_iter()
        .map(|u| {
            if u.contains("://") {
                u.to_string()
            } else {
                format!("http://{u}")
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// One mapping from gRPC status to message, used by every command.
pub fn status_error(url: &str, status: &Status) -> ApiError {
    let mut message = status.message().to_string();
    if let Some(source) = status.source() {
        let chain = error_chain(source);
        if !message.contains(&chain) {
            message = if message.is_empty() {
                chain
            } else {
                format!("{message}: {chain}")
            };
        }
    }
    let what = match status.code() {
        Code::Unavailable => {
            return ApiError::Unreachable {
                url: url.to_string(),
                reason: if message.is_empty() {
                    "unavailable".into()
                } else {
                    message
                },
            }
        }
        Code::Ok => "unexpected status",
        Code::Cancelled => "cancelled",
        Code::Unknown => "error from the coordinator",
        Code::InvalidArgument => "invalid argument",
        Code::DeadlineExceeded => "deadline exceeded",
        Code::NotFound => "not found",
        Code::AlreadyExists => "already exists",
        Code::PermissionDenied => "permission denied",
        Code::ResourceExhausted => "resource exhausted",
        Code::FailedPrecondition => "failed precondition",
        Code::Aborted => "aborted",
        Code::OutOfRange => "out of range",
        Code::Unimplemented => "not supported by this coordinator",
        Code::Internal => "internal error in the coordinator",
        Code::DataLoss => "data loss",
        Code::Unauthenticated => "unauthenticated",
    };
    ApiError::Rejected(if message.is_empty() {
        what.to_string()
    } else {
        format!("{what}: {message}")
    })
}

/// An error and its causes as one line, skipping wrappers that add no information
/// ("transport error") and causes already quoted by their parent.
fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut next = Some(error);
    while let Some(e) = next {
        let text = e.to_string();
        if !text.is_empty() && text != "transport error" && !parts.iter().any(|p| p.contains(&text))
        {
            parts.push(text);
        }
        next = e.source();
    }
    if parts.is_empty() {
        "transport error".into()
    } else {
        parts.join(": ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_become_messages_naming_the_failure() {
        let s = Status::invalid_argument(
            "job 0: unknown job kind \"nop\", expected one of noop, sleep, shell",
        );
        assert_eq!(
            status_error("http://h:1", &s).to_string(),
            "invalid argument: job 0: unknown job kind \"nop\", expected one of noop, sleep, shell"
        );
        assert_eq!(
            status_error("http://h:1", &Status::not_found("job 9 does not exist")).to_string(),
            "not found: job 9 does not exist"
        );
        assert_eq!(
            status_error("http://h:1", &Status::unavailable("connection refused")).to_string(),
            "cannot reach the coordinator at http://h:1: connection refused"
        );
    }

    #[tokio::test]
    async fn an_unreachable_coordinator_is_named() {
        // Port 1 on localhost is never a coordinator; the connection is refused at once.
        let err = Api::connect("127.0.0.1:1")
            .await
            .err()
            .expect("no server there");
        let text = err.to_string();
        assert!(
            text.starts_with("cannot reach the coordinator at http://127.0.0.1:1: "),
            "{text}"
        );
        assert!(matches!(
            Api::connect("http://[bad").await.err(),
            Some(ApiError::BadUrl { .. })
        ));
    }
}
