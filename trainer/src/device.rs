//! Device names as jobs and flags spell them: `auto` (the first GPU when there is one, else the
//! CPU), `cpu`, `cuda` (= `cuda:0`) or `cuda:N`. Asking for a GPU that is not there is an error,
//! never a silent fall-back to the CPU.

use tch::{Cuda, Device};

use crate::error::TrainerError;

pub fn parse_device(s: &str) -> Result<Device, TrainerError> {
    let norm = s.trim().to_ascii_lowercase();
    let unknown = || TrainerError::UnknownDevice {
        found: s.to_string(),
    };
    let index = match norm.as_str() {
        "auto" => return Ok(Device::cuda_if_available()),
        "cpu" => return Ok(Device::Cpu),
        "cuda" | "gpu" => 0,
        other => other
            .strip_prefix("cuda:")
            .and_then(|n| n.parse::<usize>().ok())
            .ok_or_else(unknown)?,
    };
    let count = Cuda::device_count();
    if (index as i64) < count {
        return Ok(Device::Cuda(index));
    }
    let reason = if count == 0 {
        "libtorch sees no CUDA device".to_string()
    } else {
        format!("libtorch sees {count} CUDA device(s), expected an index below {count}")
    };
    Err(TrainerError::DeviceUnavailable {
        found: norm,
        reason,
    })
}
