//! The trainer's one error type. Messages follow STYLE.md: lower case, say what was expected
//! and what was found, so a failed `cnn` job tells its user what to change.

use std::path::PathBuf;

use stackhive_data::cache::CacheError;
use stackhive_data::error::DataError;

#[derive(Debug, thiserror::Error)]
pub enum TrainerError {
    #[error("unknown architecture {found:?}, expected efficientnet-b0..b7, efficientnet-phiN, efficientnet-wX-dY or resnet18/34/50")]
    UnknownArch { found: String },
    #[error("architecture {arch}: {reason}")]
    BadArch { arch: String, reason: String },
    #[error("image size {found} does not fit {arch}: expected {expected}")]
    ImageSize {
        arch: String,
        found: u32,
        expected: String,
    },
    #[error("weights in {} fit none of the model's {tensors} tensors", path.display())]
    WeightsFitNothing { path: PathBuf, tensors: usize },
    #[error("cannot read weights {}: {source}", path.display())]
    ReadWeights {
        path: PathBuf,
        source: tch::TchError,
    },
    #[error("loss is {loss} at step {step} (epoch {epoch}, learning rate {lr:.3e}); expected a finite loss")]
    NonFiniteLoss {
        step: usize,
        epoch: usize,
        lr: f64,
        loss: f64,
    },
    #[error("{count} of {total} {what} predictions are not finite after epoch {epoch}; expected probabilities")]
    NonFinitePredictions {
        what: &'static str,
        epoch: usize,
        count: usize,
        total: usize,
    },
    #[error("fold index {fold} out of range for {k} folds; expected 0..={}", k - 1)]
    FoldOutOfRange { fold: u16, k: u16 },
    #[error("the fold assignment has {found} rows, the dataset has {expected} train rows")]
    FoldRows { expected: usize, found: usize },
    #[error("fold {fold} has no {what} rows; expected at least {min}")]
    EmptySplit {
        fold: u16,
        what: &'static str,
        min: usize,
    },
    #[error("image {name} ({what}) is not in the image cache {}", cache.display())]
    MissingImage {
        name: String,
        what: &'static str,
        cache: PathBuf,
    },
    #[error(
        "the image cache holds {found}×{found} images, the job trains at {expected}×{expected}"
    )]
    CacheSize { expected: u32, found: u32 },
    #[error("invalid training config: {0}")]
    Config(String),
    #[error("unknown device {found:?}; expected auto, cpu, cuda or cuda:N")]
    UnknownDevice { found: String },
    #[error("device {found} is not available: {reason}")]
    DeviceUnavailable { found: String, reason: String },
    #[error(transparent)]
    Data(#[from] DataError),
    #[error(transparent)]
    Cache(#[from] CacheError),
    #[error("cannot access {}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
}
