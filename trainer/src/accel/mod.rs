//! What tch 0.24 does not expose, through the C++ shim in `trainer/csrc` (issue 4, item 6):
//! bf16 autocast (`Autocast`), channels-last layout (`to_channels_last`,
//! `vs_to_channels_last`), ATen's fused AdamW and SGD (`FusedAdamW`, `FusedSgd`), CUDA memory
//! queries, and CUDA graphs (`CudaGraph`, `GraphedStep`).
//!
//! Everything here is safe Rust over `ffi`, the one module allowed `unsafe`. It must not
//! panic or abort on a libtorch error: every shim call reports errors as `AccelError`, and the
//! CUDA calls fail cleanly on a machine without a GPU (or a build without the CUDA headers).
//! It does not decide policy (precision, layout, optimizer): the training loop does.

mod autocast;
mod cuda;
mod ffi;
mod layout;
mod optim;

pub use autocast::Autocast;
pub use cuda::{
    cuda_compiled, cuda_empty_cache, cuda_max_memory_allocated, cuda_mem_get_info,
    cuda_reset_peak_memory_stats, cuda_synchronize, CudaGraph, GraphedStep, SideStream,
};
pub use layout::{is_channels_last, to_channels_last, vs_to_channels_last};
pub use optim::{FusedAdamW, FusedAdamWConfig, FusedSgd, FusedSgdConfig};

#[derive(Debug, thiserror::Error)]
pub enum AccelError {
    /// libtorch (through the shim) refused or failed; `op` says what we asked of it.
    #[error("{op}: {message}")]
    Torch { op: &'static str, message: String },
    #[error(transparent)]
    Tch(#[from] tch::TchError),
    #[error("{what} need a CUDA device, found {found}")]
    NeedsCuda { what: &'static str, found: String },
    #[error("{what} need CUDA, but the accel shim was built without the CUDA runtime headers (cuda_runtime_api.h) or libcudart; rebuild where build.rs finds them")]
    NoCudaBuild { what: &'static str },
    #[error("device {found} is not available: libtorch sees {count} CUDA device(s)")]
    DeviceUnavailable { found: String, count: i64 },
    #[error("bf16 autocast runs on cpu or cuda, found {found}")]
    AutocastDevice { found: String },
    #[error("{optimizer} found no trainable variables in the var store; expected at least one")]
    NoParameters { optimizer: &'static str },
    #[error("{optimizer} needs all trainable variables on one device with one floating-point kind: expected {expected}, found {found} for trainable variable {index}")]
    MixedParameters {
        optimizer: &'static str,
        index: usize,
        expected: String,
        found: String,
    },
    #[error("optimizer state does not fit this optimizer: {0}")]
    StateMismatch(String),
    #[error("invalid {what} {found}: expected {expected}")]
    Invalid {
        what: &'static str,
        expected: &'static str,
        found: String,
    },
}
