//! The spec crate's error: a payload or architecture that cannot be run. Messages follow
//! STYLE.md (lower case, what was expected and what was found), because the coordinator returns
//! them verbatim to the user who submitted the job.

#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum SpecError {
    #[error("unknown architecture {found:?}, expected efficientnet-b0..b7, efficientnet-phiN, efficientnet-wX-dY, resnet18/34/50, resnext50-32x4d or seresnext50-32x4d")]
    UnknownArch { found: String },
    #[error("architecture {arch}: {reason}")]
    BadArch { arch: String, reason: String },
    #[error("image size {found} does not fit {arch}: expected {expected}")]
    ImageSize {
        arch: String,
        found: u32,
        expected: String,
    },
    /// A field with a value outside its range, or fields that contradict each other.
    #[error("{kind} payload field {field:?}: {message}")]
    Field {
        kind: &'static str,
        field: String,
        message: String,
    },
    /// The payload is not the JSON its kind reads (unknown field, wrong type, missing field).
    #[error("{kind} payload: {message}")]
    Json { kind: &'static str, message: String },
}
