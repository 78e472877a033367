//! The trainer's one error type. Messages follow STYLE.md: lower case, say what was expected
//! and what was found, so a failed `cnn` job tells its user what to change. It also decides how
//! the trainer process exits (`is_permanent`, `exit_code`): a failure the same input would
//! repeat must not be retried by the worker, and a CUDA out-of-memory error is told apart from
//! both. It must not decide anything about retries itself: the worker does.

use std::any::Any;
use std::path::PathBuf;

use stackhive_data::cache::CacheError;
use stackhive_data::error::DataError;
use stackhive_spec::process::{EXIT_OUT_OF_MEMORY, EXIT_PERMANENT};
use stackhive_spec::SpecError;

#[derive(Debug, thiserror::Error)]
pub enum TrainerError {
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
    /// Training losses can stay finite while the weights or batch-norm statistics overflow
    /// (batch norm renormalises in training mode only), so this too names the step and rate.
    #[error("{count} of {total} {what} predictions are not finite after epoch {epoch} (step {step}, learning rate {lr:.3e}); expected probabilities: the weights diverged, try a lower learning rate")]
    NonFinitePredictions {
        what: &'static str,
        epoch: usize,
        step: usize,
        lr: f64,
        count: usize,
        total: usize,
    },
    #[error("fold index {fold} out of range for {k} folds; expected 0..={}", k - 1)]
    FoldOutOfRange { fold: u16, k: u16 },
    #[error("the fold assignment has {found} rows, the dataset has {expected} train rows")]
    FoldRows { expected: usize, found: usize },
    #[error("the fold assignment puts train row {row} in fold {found}; expected -1 (external) or 0..={}", k - 1)]
    FoldValue { row: usize, found: i16, k: u16 },
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
    #[error("cannot parse job file {}: {message}", path.display())]
    JobFile { path: PathBuf, message: String },
    #[error("unknown device {found:?}; expected auto, cpu, cuda or cuda:N")]
    UnknownDevice { found: String },
    #[error("device {found} is not available: {reason}")]
    DeviceUnavailable { found: String, reason: String },
    #[error("CUDA out of memory on {device}: {message}; use a smaller batch_size (with accumulate to keep the effective batch) or a smaller image_size, or ask for a GPU with more memory")]
    OutOfMemory { device: String, message: String },
    #[error("the job asks for {need} MiB of GPU memory, {device} has {total} MiB; expected a worker whose --gpu-mem-mb matches its GPUs")]
    GpuTooSmall {
        device: String,
        need: u64,
        total: u64,
    },
    #[error("cannot resume from {}: {message}", path.display())]
    Resume { path: PathBuf, message: String },
    #[error("the trainer failed unexpectedly: {0}")]
    Panic(String),
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error(transparent)]
    Accel(#[from] crate::accel::AccelError),
    #[error("data loader: {0}")]
    Loader(#[from] crate::loader::LoaderError),
    #[error(transparent)]
    Mix(#[from] crate::mix::MixError),
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

/// libtorch's wording for a failed CUDA allocation: the caching allocator's
/// `CUDA out of memory. Tried to allocate …`, the runtime's `CUDA error: out of memory`, and
/// cuBLAS / cuDNN failing to allocate their workspaces.
const OOM_MARKERS: [&str; 4] = [
    "CUDA out of memory",
    "CUDA error: out of memory",
    "CUBLAS_STATUS_ALLOC_FAILED",
    "CUDNN_STATUS_ALLOC_FAILED",
];

impl TrainerError {
    /// Whether running the same job again would fail the same way: a bad payload or job file,
    /// data that does not fit it, weights that fit nothing, a diverging loss, memory this GPU
    /// does not have, or a GPU libtorch cannot see (the worker advertised a device it lacks and
    /// would lease the job again). I/O and unexpected libtorch failures may pass on another try.
    pub fn is_permanent(&self) -> bool {
        use TrainerError::*;
        match self {
            WeightsFitNothing { .. }
            | ReadWeights { .. }
            | NonFiniteLoss { .. }
            | NonFinitePredictions { .. }
            | FoldOutOfRange { .. }
            | FoldRows { .. }
            | FoldValue { .. }
            | EmptySplit { .. }
            | MissingImage { .. }
            | CacheSize { .. }
            | Config(_)
            | JobFile { .. }
            | UnknownDevice { .. }
            | DeviceUnavailable { .. }
            | OutOfMemory { .. }
            | GpuTooSmall { .. }
            | Spec(_) => true,
            Data(e) => !matches!(e, DataError::Read { .. } | DataError::Write { .. }),
            Cache(e) => matches!(
                e,
                CacheError::Decode { .. }
                    | CacheError::DuplicateName(_)
                    | CacheError::InvalidSize(_)
                    | CacheError::NoImages(_)
            ),
            Accel(e) => !matches!(
                e,
                crate::accel::AccelError::Torch { .. } | crate::accel::AccelError::Tch(_)
            ),
            Mix(_) => true,
            // The loop starts over rather than fail on a bad resume checkpoint; should one reach
            // here, a retry without it can still succeed.
            Resume { .. } | Loader(_) | Panic(_) | Io { .. } | Torch(_) => false,
        }
    }

    /// The trainer process's exit status for this error (see `stackhive_spec::process`).
    pub fn exit_code(&self) -> i32 {
        match self {
            TrainerError::OutOfMemory { .. } => EXIT_OUT_OF_MEMORY,
            e if e.is_permanent() => EXIT_PERMANENT,
            _ => 1,
        }
    }

    /// A libtorch error reported as a `Result`, with CUDA out of memory told apart.
    pub fn from_torch(e: tch::TchError, device: &str) -> TrainerError {
        match out_of_memory(&e.to_string(), device) {
            Some(oom) => oom,
            None => TrainerError::Torch(e),
        }
    }

    /// A panic caught around the training code. tch panics on most libtorch errors (its
    /// non-`f_` calls unwrap), so this is where CUDA running out of memory usually surfaces.
    pub fn from_panic(payload: &(dyn Any + Send), device: &str) -> TrainerError {
        let text = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied())
            .unwrap_or("a panic without a message");
        out_of_memory(text, device).unwrap_or_else(|| TrainerError::Panic(first_line(text)))
    }

    /// This error, with a libtorch out-of-memory failure recognised.
    pub fn classify(self, device: &str) -> TrainerError {
        match self {
            TrainerError::Torch(e) => TrainerError::from_torch(e, device),
            other => other,
        }
    }
}

fn out_of_memory(text: &str, device: &str) -> Option<TrainerError> {
    let at = OOM_MARKERS.iter().find_map(|m| text.find(m))?;
    Some(TrainerError::OutOfMemory {
        device: device.to_string(),
        message: first_line(&text[at..])
            .trim_end_matches(['.', '"', ')'])
            .to_string(),
    })
}

/// libtorch messages carry a C++ backtrace after the first line.
fn first_line(text: &str) -> String {
    text.lines().next().unwrap_or("").trim().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_of_memory_is_recognised_in_panics_and_errors() {
        let msg = "called `Result::unwrap()` on an `Err` value: Torch(\"CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity of 79.10 GiB of which 1.20 GiB is free.\nException raised from malloc at …\")";
        let e = TrainerError::from_panic(&msg.to_string(), "cuda:0");
        assert_eq!(e.exit_code(), EXIT_OUT_OF_MEMORY);
        assert!(e.is_permanent());
        let text = e.to_string();
        assert!(
            text.starts_with("CUDA out of memory on cuda:0: CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity of 79.10 GiB of which 1.20 GiB is free; use a smaller batch_size"),
            "{text}"
        );
        assert!(text.ends_with("ask for a GPU with more memory"), "{text}");
        let e = TrainerError::from_torch(
            tch::TchError::Torch("CUDA error: out of memory\nCUDA kernel errors …".into()),
            "cuda:1",
        );
        assert!(matches!(e, TrainerError::OutOfMemory { .. }), "{e}");

        // Anything else is a retryable failure, with the first line of the message.
        let e = TrainerError::from_panic(&"index out of bounds\nbacktrace", "cpu");
        assert_eq!(e.exit_code(), 1);
        assert_eq!(
            e.to_string(),
            "the trainer failed unexpectedly: index out of bounds"
        );
        let e = TrainerError::NonFiniteLoss {
            step: 3,
            epoch: 1,
            lr: 10.0,
            loss: f64::NAN,
        };
        assert_eq!(e.exit_code(), EXIT_PERMANENT);
    }
}
