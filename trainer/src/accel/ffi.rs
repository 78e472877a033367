//! The Rust side of `trainer/csrc/accel.h`: the shim's `extern "C"` declarations and thin safe
//! wrappers over them, for the rest of `accel` only. All of the crate's `unsafe` for the shim
//! lives here; the other `accel` modules must not need any.
//!
//! Invariants kept here: every tensor pointer handed to the shim comes from a live `Tensor`
//! borrowed for the whole call; slices passed together have equal lengths (asserted, since the
//! C side indexes them by one count); a tensor the shim returns is a fresh `new at::Tensor`,
//! owned by the `Tensor` built from it; every error string is freed exactly once.

// The workspace denies `unsafe_code`; calling the C++ shim cannot be done without it.
#![allow(unsafe_code)]

use std::ffi::CStr;
use std::os::raw::{c_char, c_int};
use std::ptr::{self, NonNull};

use tch::Tensor;
use torch_sys::C_tensor;

use super::AccelError;

#[repr(C)]
pub(super) struct ShkGraph {
    _opaque: [u8; 0],
}

#[repr(C)]
pub(super) struct ShkSideStream {
    _opaque: [u8; 0],
}

extern "C" {
    fn shk_free_error(err: *mut c_char);

    fn shk_autocast_enter_bf16(
        device_type: c_int,
        prev_enabled: *mut c_int,
        prev_dtype: *mut c_int,
    ) -> *mut c_char;
    fn shk_autocast_exit(device_type: c_int, prev_enabled: c_int, prev_dtype: c_int)
        -> *mut c_char;
    fn shk_autocast_state(
        device_type: c_int,
        enabled: *mut c_int,
        dtype: *mut c_int,
    ) -> *mut c_char;

    fn shk_to_channels_last(t: *const C_tensor, out: *mut *mut C_tensor) -> *mut c_char;
    fn shk_is_channels_last(t: *const C_tensor, out: *mut c_int) -> *mut c_char;
    fn shk_set_data_channels_last(t: *const C_tensor) -> *mut c_char;

    fn shk_fused_adamw_step(
        params: *const *const C_tensor,
        exp_avgs: *const *const C_tensor,
        exp_avg_sqs: *const *const C_tensor,
        steps: *const *const C_tensor,
        n: usize,
        lr_tensor: *const C_tensor,
        lr: f64,
        beta1: f64,
        beta2: f64,
        weight_decay: f64,
        eps: f64,
        stepped: *mut u8,
    ) -> *mut c_char;
    fn shk_fused_sgd_step(
        params: *const *const C_tensor,
        bufs: *const *const C_tensor,
        started: *const u8,
        n: usize,
        lr_tensor: *const C_tensor,
        lr: f64,
        momentum: f64,
        dampening: f64,
        nesterov: c_int,
        weight_decay: f64,
        stepped: *mut u8,
    ) -> *mut c_char;
    fn shk_clear_grads(params: *const *const C_tensor, n: usize) -> *mut c_char;

    fn shk_cuda_compiled() -> c_int;
    fn shk_cuda_mem_get_info(device: i64, free: *mut u64, total: *mut u64) -> *mut c_char;
    fn shk_cuda_empty_cache() -> *mut c_char;
    fn shk_cuda_max_memory_allocated(device: i64, bytes: *mut u64) -> *mut c_char;
    fn shk_cuda_reset_peak_memory_stats(device: i64) -> *mut c_char;
    fn shk_cuda_synchronize(device: i64) -> *mut c_char;

    fn shk_side_stream_enter(device: i64, out: *mut *mut ShkSideStream) -> *mut c_char;
    fn shk_side_stream_exit(s: *mut ShkSideStream) -> *mut c_char;

    fn shk_graph_new(device: i64, out: *mut *mut ShkGraph) -> *mut c_char;
    fn shk_graph_capture_begin(g: *mut ShkGraph) -> *mut c_char;
    fn shk_graph_capture_end(g: *mut ShkGraph) -> *mut c_char;
    fn shk_graph_replay(g: *mut ShkGraph) -> *mut c_char;
    fn shk_graph_reset(g: *mut ShkGraph) -> *mut c_char;
    fn shk_graph_free(g: *mut ShkGraph);
}

/// Turns the shim's error string (NULL: success) into a result, freeing it.
fn check(op: &'static str, err: *mut c_char) -> Result<(), AccelError> {
    if err.is_null() {
        return Ok(());
    }
    // SAFETY: a non-NULL return is a NUL-terminated string from strdup, freed once, here.
    let message = unsafe { CStr::from_ptr(err) }
        .to_string_lossy()
        .into_owned();
    unsafe { shk_free_error(err) };
    Err(AccelError::Torch { op, message })
}

fn ptrs(tensors: &[Tensor]) -> Vec<*const C_tensor> {
    tensors.iter().map(Tensor::as_ptr).collect()
}

/// Autocast's device types, as the shim numbers them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum AutocastDevice {
    Cpu = 0,
    Cuda = 1,
}

/// The autocast state of one device type: enabled, and ATen's ScalarType code of its dtype.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct AutocastState {
    pub enabled: bool,
    pub dtype: i32,
}

pub(super) fn autocast_enter_bf16(device: AutocastDevice) -> Result<AutocastState, AccelError> {
    let (mut enabled, mut dtype) = (0, 0);
    // SAFETY: plain values and two out-pointers to locals.
    check("entering bf16 autocast", unsafe {
        shk_autocast_enter_bf16(device as c_int, &mut enabled, &mut dtype)
    })?;
    Ok(AutocastState {
        enabled: enabled != 0,
        dtype,
    })
}

pub(super) fn autocast_exit(device: AutocastDevice, prev: AutocastState) -> Result<(), AccelError> {
    // SAFETY: plain values.
    check("leaving autocast", unsafe {
        shk_autocast_exit(device as c_int, c_int::from(prev.enabled), prev.dtype)
    })
}

pub(super) fn autocast_state(device: AutocastDevice) -> Result<AutocastState, AccelError> {
    let (mut enabled, mut dtype) = (0, 0);
    // SAFETY: plain values and two out-pointers to locals.
    check("reading the autocast state", unsafe {
        shk_autocast_state(device as c_int, &mut enabled, &mut dtype)
    })?;
    Ok(AutocastState {
        enabled: enabled != 0,
        dtype,
    })
}

pub(super) fn to_channels_last(t: &Tensor) -> Result<Tensor, AccelError> {
    let mut out: *mut C_tensor = ptr::null_mut();
    // SAFETY: `t` is live for the call; on success `out` is a new at::Tensor we now own.
    check("converting to channels-last", unsafe {
        shk_to_channels_last(t.as_ptr(), &mut out)
    })?;
    Ok(unsafe { Tensor::from_ptr(out) })
}

pub(super) fn is_channels_last(t: &Tensor) -> Result<bool, AccelError> {
    let mut out = 0;
    // SAFETY: `t` is live for the call.
    check("checking channels-last", unsafe {
        shk_is_channels_last(t.as_ptr(), &mut out)
    })?;
    Ok(out != 0)
}

pub(super) fn set_data_channels_last(t: &Tensor) -> Result<(), AccelError> {
    // SAFETY: `t` is live for the call.
    check("converting a variable to channels-last", unsafe {
        shk_set_data_channels_last(t.as_ptr())
    })
}

/// One AdamW step over `params` (with state `exp_avgs`, `exp_avg_sqs`, `steps`); `stepped[i]`
/// says whether `params[i]` had a gradient.
#[allow(clippy::too_many_arguments)]
pub(super) fn fused_adamw_step(
    params: &[Tensor],
    exp_avgs: &[Tensor],
    exp_avg_sqs: &[Tensor],
    steps: &[Tensor],
    lr_tensor: Option<&Tensor>,
    lr: f64,
    (beta1, beta2, weight_decay, eps): (f64, f64, f64, f64),
    stepped: &mut [u8],
) -> Result<(), AccelError> {
    let n = params.len();
    assert!(
        exp_avgs.len() == n && exp_avg_sqs.len() == n && steps.len() == n && stepped.len() == n,
        "fused adamw state lists must match the {n} parameters"
    );
    let (p, m, v, s) = (ptrs(params), ptrs(exp_avgs), ptrs(exp_avg_sqs), ptrs(steps));
    let lr_t = lr_tensor.map_or(ptr::null(), Tensor::as_ptr);
    // SAFETY: four arrays of `n` live tensor pointers, `stepped` holds `n` bytes.
    check("fused adamw step", unsafe {
        shk_fused_adamw_step(
            p.as_ptr(),
            m.as_ptr(),
            v.as_ptr(),
            s.as_ptr(),
            n,
            lr_t,
            lr,
            beta1,
            beta2,
            weight_decay,
            eps,
            stepped.as_mut_ptr(),
        )
    })
}

/// One SGD step; `bufs` is `None` without momentum, `started[i]` says whether `bufs[i]` holds a
/// momentum yet.
#[allow(clippy::too_many_arguments)]
pub(super) fn fused_sgd_step(
    params: &[Tensor],
    bufs: Option<&[Tensor]>,
    started: &[u8],
    lr_tensor: Option<&Tensor>,
    lr: f64,
    (momentum, dampening, nesterov, weight_decay): (f64, f64, bool, f64),
    stepped: &mut [u8],
) -> Result<(), AccelError> {
    let n = params.len();
    assert!(
        bufs.is_none_or(|b| b.len() == n) && started.len() == n && stepped.len() == n,
        "fused sgd state lists must match the {n} parameters"
    );
    let p = ptrs(params);
    let b = bufs.map(ptrs);
    let b_ptr = b.as_ref().map_or(ptr::null(), |b| b.as_ptr());
    let lr_t = lr_tensor.map_or(ptr::null(), Tensor::as_ptr);
    // SAFETY: arrays of `n` live tensor pointers (or NULL buffers, which the shim refuses when
    // momentum is on), `started` and `stepped` hold `n` bytes.
    check("fused sgd step", unsafe {
        shk_fused_sgd_step(
            p.as_ptr(),
            b_ptr,
            started.as_ptr(),
            n,
            lr_t,
            lr,
            momentum,
            dampening,
            c_int::from(nesterov),
            weight_decay,
            stepped.as_mut_ptr(),
        )
    })
}

pub(super) fn clear_grads(params: &[Tensor]) -> Result<(), AccelError> {
    let p = ptrs(params);
    // SAFETY: an array of `n` live tensor pointers.
    check("clearing gradients", unsafe {
        shk_clear_grads(p.as_ptr(), p.len())
    })
}

pub(super) fn cuda_compiled() -> bool {
    // SAFETY: no arguments, no side effects.
    unsafe { shk_cuda_compiled() != 0 }
}

pub(super) fn cuda_mem_get_info(device: i64) -> Result<(u64, u64), AccelError> {
    let (mut free, mut total) = (0, 0);
    // SAFETY: out-pointers to locals.
    check("querying cuda memory", unsafe {
        shk_cuda_mem_get_info(device, &mut free, &mut total)
    })?;
    Ok((free, total))
}

pub(super) fn cuda_empty_cache() -> Result<(), AccelError> {
    // SAFETY: no arguments.
    check("emptying the cuda cache", unsafe { shk_cuda_empty_cache() })
}

pub(super) fn cuda_max_memory_allocated(device: i64) -> Result<u64, AccelError> {
    let mut bytes = 0;
    // SAFETY: an out-pointer to a local.
    check("querying peak cuda memory", unsafe {
        shk_cuda_max_memory_allocated(device, &mut bytes)
    })?;
    Ok(bytes)
}

pub(super) fn cuda_reset_peak_memory_stats(device: i64) -> Result<(), AccelError> {
    // SAFETY: a plain value.
    check("resetting peak cuda memory", unsafe {
        shk_cuda_reset_peak_memory_stats(device)
    })
}

pub(super) fn cuda_synchronize(device: i64) -> Result<(), AccelError> {
    // SAFETY: a plain value.
    check("synchronizing cuda", unsafe {
        shk_cuda_synchronize(device)
    })
}

/// A side stream made current by the shim; `exit` (or drop) restores the previous one.
/// Holding a raw pointer keeps it `!Send`: the current stream is per thread.
#[derive(Debug)]
pub(super) struct SideStreamHandle(NonNull<ShkSideStream>);

impl SideStreamHandle {
    pub(super) fn enter(device: i64) -> Result<SideStreamHandle, AccelError> {
        let mut out = ptr::null_mut();
        // SAFETY: an out-pointer to a local; on success it is a new shim object we own.
        check("entering a cuda side stream", unsafe {
            shk_side_stream_enter(device, &mut out)
        })?;
        let handle = NonNull::new(out).ok_or(AccelError::Torch {
            op: "entering a cuda side stream",
            message: "the shim returned no stream".to_string(),
        })?;
        Ok(SideStreamHandle(handle))
    }

    pub(super) fn exit(self) -> Result<(), AccelError> {
        let raw = self.0.as_ptr();
        std::mem::forget(self);
        // SAFETY: `raw` came from shk_side_stream_enter and is freed by this call, once.
        check("leaving a cuda side stream", unsafe {
            shk_side_stream_exit(raw)
        })
    }
}

impl Drop for SideStreamHandle {
    fn drop(&mut self) {
        // SAFETY: as in `exit`; `exit` forgets `self`, so this runs only when it was not called.
        let err = unsafe { shk_side_stream_exit(self.0.as_ptr()) };
        if let Err(e) = check("leaving a cuda side stream", err) {
            tracing::warn!(error = %e, "dropping a side stream");
        }
    }
}

/// An `at::cuda::CUDAGraph` owned by the shim, freed on drop. `!Send`, like the streams it is
/// captured on.
#[derive(Debug)]
pub(super) struct GraphHandle(NonNull<ShkGraph>);

impl GraphHandle {
    pub(super) fn new(device: i64) -> Result<GraphHandle, AccelError> {
        let mut out = ptr::null_mut();
        // SAFETY: an out-pointer to a local; on success it is a new shim object we own.
        check("creating a cuda graph", unsafe {
            shk_graph_new(device, &mut out)
        })?;
        let handle = NonNull::new(out).ok_or(AccelError::Torch {
            op: "creating a cuda graph",
            message: "the shim returned no graph".to_string(),
        })?;
        Ok(GraphHandle(handle))
    }

    pub(super) fn capture_begin(&mut self) -> Result<(), AccelError> {
        // SAFETY: a live graph we own.
        check("beginning a cuda graph capture", unsafe {
            shk_graph_capture_begin(self.0.as_ptr())
        })
    }

    pub(super) fn capture_end(&mut self) -> Result<(), AccelError> {
        // SAFETY: a live graph we own.
        check("ending a cuda graph capture", unsafe {
            shk_graph_capture_end(self.0.as_ptr())
        })
    }

    pub(super) fn replay(&self) -> Result<(), AccelError> {
        // SAFETY: a live graph we own; replay does not change the C++ object's state.
        check("replaying a cuda graph", unsafe {
            shk_graph_replay(self.0.as_ptr())
        })
    }

    pub(super) fn reset(&mut self) -> Result<(), AccelError> {
        // SAFETY: a live graph we own.
        check("resetting a cuda graph", unsafe {
            shk_graph_reset(self.0.as_ptr())
        })
    }
}

impl Drop for GraphHandle {
    fn drop(&mut self) {
        // SAFETY: a live graph we own, freed once.
        unsafe { shk_graph_free(self.0.as_ptr()) }
    }
}
