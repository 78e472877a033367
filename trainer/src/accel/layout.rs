//! Channels-last (NHWC-in-memory) layout for convolutions, which cuDNN runs fastest with bf16
//! on tensor cores. Shapes stay `[N, C, H, W]`; only the strides change, so models need no
//! edits: convert the parameters once (`vs_to_channels_last`) before building the optimizer,
//! and each input batch (`to_channels_last`); conv outputs then stay channels-last.
//!
//! It must not change any value: a channels-last tensor holds the same numbers as before.

use tch::nn::VarStore;
use tch::Tensor;

use super::ffi;
use super::AccelError;

/// `t` with channels-last strides (a copy unless it already has them); tensors that are not
/// 4-D are returned as they are (a shallow clone).
///
/// # Panics
/// Only when libtorch fails to allocate the copy, as tch's own tensor methods do.
pub fn to_channels_last(t: &Tensor) -> Tensor {
    if t.dim() != 4 {
        return t.shallow_clone();
    }
    ffi::to_channels_last(t).unwrap_or_else(|e| panic!("{e}"))
}

/// Whether `t` is a 4-D tensor laid out channels-last. Tensors whose channel or spatial sizes
/// are 1 can be both this and contiguous.
pub fn is_channels_last(t: &Tensor) -> bool {
    // Reading sizes and strides cannot fail for a live tensor.
    ffi::is_channels_last(t).unwrap_or(false)
}

/// Re-strides every 4-D variable of `vs` (conv weights) to channels-last in place, keeping its
/// identity, so the `Net` built on `vs` and later optimizers see the new layout. Returns how
/// many variables were 4-D. Call it before building an optimizer: optimizer state is created
/// with the layout of the parameters at that time.
pub fn vs_to_channels_last(vs: &VarStore) -> Result<usize, AccelError> {
    let mut count = 0;
    for t in vs.variables().values().filter(|t| t.dim() == 4) {
        ffi::set_data_channels_last(t)?;
        count += 1;
    }
    Ok(count)
}
