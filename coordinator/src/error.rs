//! The coordinator's domain error and its single mapping to `tonic::Status`. Handlers and stores
//! return `Error`; nothing else decides gRPC codes.

use crate::metrics as m;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad input from a client or worker; nothing was stored.
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    NotFound(String),
    /// An idempotency key reused with a different body.
    #[error("{0}")]
    AlreadyExists(String),
    /// The request is well-formed but the job is not in a state that allows it.
    #[error("{0}")]
    FailedPrecondition(String),
    /// A report whose `(job_id, attempt)` fencing token no longer matches the job.
    #[error("stale report: {0}")]
    Stale(String),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("{0}")]
    Config(String),
    /// No credentials, or credentials that prove nothing (unknown or revoked token).
    #[error("{0}")]
    Unauthenticated(String),
    /// Known caller, not allowed to do this (a role without the call, another worker's key).
    #[error("{0}")]
    PermissionDenied(String),
    /// A per-coordinator budget is used up (watch streams); try later.
    #[error("{0}")]
    ResourceExhausted(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn invalid(msg: impl Into<String>) -> Self {
        Self::InvalidArgument(msg.into())
    }
}

impl From<Error> for tonic::Status {
    fn from(e: Error) -> Self {
        use tonic::Status;
        match e {
            Error::InvalidArgument(m) => Status::invalid_argument(m),
            Error::NotFound(m) => Status::not_found(m),
            Error::AlreadyExists(m) => Status::already_exists(m),
            Error::FailedPrecondition(m) => Status::failed_precondition(m),
            Error::Unauthenticated(m) => Status::unauthenticated(m),
            Error::PermissionDenied(m) => Status::permission_denied(m),
            Error::ResourceExhausted(m) => Status::resource_exhausted(m),
            Error::Stale(msg) => {
                metrics::counter!(m::STALE_REPORTS).increment(1);
                Status::failed_precondition(format!("stale report: {msg}"))
            }
            Error::Database(ref err) if is_connection_error(err) => {
                tracing::warn!(error = %err, "database unavailable");
                Status::unavailable(e.to_string())
            }
            Error::Database(_) | Error::Migrate(_) | Error::Config(_) => {
                tracing::error!(error = %e, "internal error");
                Status::internal(e.to_string())
            }
        }
    }
}

fn is_connection_error(e: &sqlx::Error) -> bool {
    matches!(
        e,
        sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed
    )
}
