//! A batch on the host, as the loader's workers pack it, and its one trip to the device. It
//! must not augment: what arrives here is final apart from scaling and layout.

use tch::{Device, Kind, Tensor};

use crate::data::Batch;
use crate::meta::META_DIM;

/// ImageNet channel statistics, for weights pre-trained there (as `crate::data`).
const MEAN: [f32; 3] = [0.485, 0.456, 0.406];
const STD: [f32; 3] = [0.229, 0.224, 0.225];

/// One batch on the host: images packed HWC one after another, as the cache stores them.
#[derive(Clone, PartialEq)]
pub struct HostBatch {
    /// Position of the batch in the epoch.
    pub index: usize,
    /// Examples in the batch.
    pub len: usize,
    /// Side of the square images.
    pub size: usize,
    /// `len × size × size × 3` bytes.
    pub pixels: Vec<u8>,
    /// `len × META_DIM` features.
    pub meta: Vec<f32>,
    /// `len` labels as 0/1 floats; empty for unlabelled examples.
    pub labels: Vec<f32>,
}

impl std::fmt::Debug for HostBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostBatch")
            .field("index", &self.index)
            .field("len", &self.len)
            .field("size", &self.size)
            .field("labelled", &!self.labels.is_empty())
            .finish_non_exhaustive()
    }
}

impl HostBatch {
    /// Moves the batch to `device`: one copy of the `u8` pixels (a quarter of the float bytes),
    /// then, on the device, u8 → float, /255 and ImageNet normalisation, and NHWC → NCHW. With
    /// `channels_last` the NHWC storage is kept (the permuted view IS the channels-last layout,
    /// no copy); otherwise the `u8` pixels are transposed before widening, the cheaper order,
    /// and the result is contiguous NCHW. On CUDA the pixels go through pinned memory with a
    /// non-blocking copy, so the host does not wait for the device's queued work (a copy from
    /// pageable memory synchronises the stream), and the normalisation is one fused kernel.
    pub fn to_device(&self, device: Device, channels_last: bool) -> Batch {
        let (n, s) = (self.len as i64, self.size as i64);
        let host = |t: Tensor| upload(&t, device);
        let nhwc = host(Tensor::from_slice(&self.pixels).view([n, s, s, 3]));
        let (pixels, per_channel) = if channels_last {
            (nhwc, [3i64].as_slice())
        } else {
            (
                nhwc.permute([0, 3, 1, 2]).contiguous(),
                [1i64, 3, 1, 1].as_slice(),
            )
        };
        let scale: Vec<f32> = STD.iter().map(|sd| 1.0 / (255.0 * sd)).collect();
        let shift: Vec<f32> = MEAN.iter().zip(STD).map(|(m, sd)| -m / sd).collect();
        // Through `host` too: a pageable copy, however small, would wait for the stream.
        let scale = host(Tensor::from_slice(&scale).view(per_channel));
        let shift = host(Tensor::from_slice(&shift).view(per_channel));
        let normalised = if device.is_cuda() {
            // shift + pixels·scale with type promotion from u8: one memory-bound kernel.
            shift.addcmul(&pixels, &scale)
        } else {
            // On CPU, promotion inside addcmul is slower than widening then two in-place ops.
            let mut x = pixels.to_kind(Kind::Float);
            let _ = x.g_mul_(&scale);
            let _ = x.g_add_(&shift);
            x
        };
        let images = if channels_last {
            normalised.permute([0, 3, 1, 2])
        } else {
            normalised
        };
        let meta = host(Tensor::from_slice(&self.meta).view([n, META_DIM as i64]));
        let labels = (!self.labels.is_empty()).then(|| host(Tensor::from_slice(&self.labels)));
        Batch {
            images,
            meta,
            labels,
        }
    }
}

/// Copies a host tensor to `device`. On CUDA it goes through pinned memory without blocking:
/// a copy from pageable memory, however small, waits for all the work queued on the stream,
/// which would stall the training loop once per batch.
pub fn upload(t: &Tensor, device: Device) -> Tensor {
    if device.is_cuda() {
        t.pin_memory(device)
            .to_device_(device, t.kind(), true, false)
    } else {
        t.to_device(device)
    }
}
