//! The stacker's error. Messages go back to the worker and from there to the user, so they say
//! what was expected and what was found, and whether another attempt could help.

#[derive(Debug, thiserror::Error)]
pub enum StackError {
    /// The job cannot run as given (bad input data, an unusable feature set).
    #[error("{0}")]
    Input(String),
    /// The model produced something unusable (NaN, diverged weights).
    #[error("{0}")]
    Diverged(String),
    /// A library call failed.
    #[error("{0}")]
    Library(String),
    #[error("{0}")]
    Io(String),
    #[error("cancelled")]
    Cancelled,
}

impl StackError {
    /// Whether another attempt of the same job could succeed.
    pub fn retryable(&self) -> bool {
        matches!(self, StackError::Library(_) | StackError::Io(_))
    }
}
