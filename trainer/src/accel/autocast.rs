//! `Autocast`: an RAII guard for bf16 autocast (PyTorch's `torch.autocast(device, bfloat16)`),
//! which libtorch 2.11 only offers as global setters. Within the guard, eligible ops (matmul,
//! conv, linear...) run in bf16 and reductions stay in fp32; parameters stay fp32.
//!
//! Autocast state is per thread, so the guard is `!Send`; it must not outlive the scope that
//! made it, and guards must drop in reverse order of creation (Rust's scope order does this).
//! Wrap the forward pass and the loss only, never `backward`: autograd runs each op's backward
//! in the dtype its forward used.

use std::marker::PhantomData;

use tch::Device;

use super::ffi::{self, AutocastDevice, AutocastState};
use super::AccelError;

#[derive(Debug)]
pub struct Autocast {
    device: AutocastDevice,
    prev: AutocastState,
    /// Autocast state is thread-local: keep the guard on its thread.
    _not_send: PhantomData<*const ()>,
}

impl Autocast {
    /// Enables bf16 autocast for `device`'s type (CPU or CUDA) until the guard drops, then
    /// restores whatever was set before (nested guards work).
    pub fn bf16(device: Device) -> Result<Autocast, AccelError> {
        let kind = match device {
            Device::Cpu => AutocastDevice::Cpu,
            Device::Cuda(i) => {
                let count = tch::Cuda::device_count();
                if i as i64 >= count {
                    return Err(AccelError::DeviceUnavailable {
                        found: format!("cuda:{i}"),
                        count,
                    });
                }
                AutocastDevice::Cuda
            }
            other => {
                return Err(AccelError::AutocastDevice {
                    found: format!("{other:?}").to_lowercase(),
                })
            }
        };
        let prev = ffi::autocast_enter_bf16(kind)?;
        Ok(Autocast {
            device: kind,
            prev,
            _not_send: PhantomData,
        })
    }

    /// Whether autocast is on for `device`'s type on this thread now (false for devices
    /// autocast does not know).
    pub fn is_enabled(device: Device) -> Result<bool, AccelError> {
        let kind = match device {
            Device::Cpu => AutocastDevice::Cpu,
            Device::Cuda(_) => AutocastDevice::Cuda,
            _ => return Ok(false),
        };
        Ok(ffi::autocast_state(kind)?.enabled)
    }
}

impl Drop for Autocast {
    fn drop(&mut self) {
        // Restoring only sets thread-local flags; it cannot fail for a device type `bf16`
        // accepted, so a failure here is a shim bug worth a log line, not a panic in drop.
        if let Err(e) = ffi::autocast_exit(self.device, self.prev) {
            tracing::error!(error = %e, "restoring the autocast state");
        }
    }
}
