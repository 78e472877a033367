//! CUDA memory queries, side streams and CUDA graphs (`at::cuda::CUDAGraph`), for the training
//! loop's memory report and for replaying a whole captured training step (`GraphedStep`).
//!
//! On a machine without a GPU, or when build.rs found no CUDA runtime headers, every call here
//! returns an error saying which; it must never touch a device it has not checked exists.

use std::marker::PhantomData;

use tch::nn::VarStore;
use tch::{Device, Tensor};

use super::ffi::{self, GraphHandle, SideStreamHandle};
use super::AccelError;

/// Whether the shim was built with CUDA (graphs, streams, memory queries); a machine may still
/// have no GPU.
pub fn cuda_compiled() -> bool {
    ffi::cuda_compiled()
}

fn require_build(what: &'static str) -> Result<(), AccelError> {
    if ffi::cuda_compiled() {
        Ok(())
    } else {
        Err(AccelError::NoCudaBuild { what })
    }
}

/// The CUDA device index of `device`, for an operation `what` that only CUDA has.
fn cuda_index(device: Device, what: &'static str) -> Result<i64, AccelError> {
    match device {
        Device::Cuda(i) => {
            require_build(what)?;
            Ok(i as i64)
        }
        other => Err(AccelError::NeedsCuda {
            what,
            found: format!("{other:?}").to_lowercase(),
        }),
    }
}

/// Free and total bytes of CUDA device `device_index` (`cudaMemGetInfo`; other processes'
/// allocations count as used).
pub fn cuda_mem_get_info(device_index: usize) -> Result<(u64, u64), AccelError> {
    require_build("cuda memory queries")?;
    ffi::cuda_mem_get_info(device_index as i64)
}

/// Returns the caching allocator's unused cached blocks to the driver (all devices).
pub fn cuda_empty_cache() -> Result<(), AccelError> {
    require_build("cuda memory queries")?;
    ffi::cuda_empty_cache()
}

/// Peak bytes held by tensors on the device since start or the last
/// `cuda_reset_peak_memory_stats` (PyTorch's `torch.cuda.max_memory_allocated`).
pub fn cuda_max_memory_allocated(device_index: usize) -> Result<u64, AccelError> {
    require_build("cuda memory queries")?;
    ffi::cuda_max_memory_allocated(device_index as i64)
}

pub fn cuda_reset_peak_memory_stats(device_index: usize) -> Result<(), AccelError> {
    require_build("cuda memory queries")?;
    ffi::cuda_reset_peak_memory_stats(device_index as i64)
}

/// Waits for all work queued on the device.
pub fn cuda_synchronize(device_index: usize) -> Result<(), AccelError> {
    require_build("cuda synchronization")?;
    ffi::cuda_synchronize(device_index as i64)
}

/// A stream from libtorch's pool, current on its device (for this thread) until `exit` or
/// drop; it first waits for the work already queued on the previous stream, and on exit the
/// previous stream waits for it. `!Send`: current streams are per thread.
#[derive(Debug)]
pub struct SideStream {
    handle: SideStreamHandle,
}

impl SideStream {
    pub fn enter(device: Device) -> Result<SideStream, AccelError> {
        let index = cuda_index(device, "side streams")?;
        let handle = SideStreamHandle::enter(index)?;
        Ok(SideStream { handle })
    }

    /// Restores the previous stream, reporting errors that a drop could only log.
    pub fn exit(self) -> Result<(), AccelError> {
        self.handle.exit()
    }
}

/// A CUDA graph: the kernels one closure queues, captured once and replayed with one launch.
/// Replays read and write the same memory addresses as the capture did.
#[derive(Debug)]
pub struct CudaGraph {
    handle: GraphHandle,
    device: Device,
    captured: bool,
}

impl CudaGraph {
    pub fn new(device: Device) -> Result<CudaGraph, AccelError> {
        let index = cuda_index(device, "cuda graphs")?;
        let handle = GraphHandle::new(index)?;
        Ok(CudaGraph {
            handle,
            device,
            captured: false,
        })
    }

    /// Captures what `body` queues on the device, as PyTorch's `torch.cuda.graph` does:
    /// synchronize, switch to a side stream, capture, switch back. Nothing runs during
    /// capture: tensors `body` returns hold their values only after a `replay`. Host-side
    /// work in `body` (Rust code, `.item()`, device-to-host copies) is not captured, and a
    /// synchronizing call fails the capture.
    pub fn capture<T>(
        &mut self,
        body: impl FnOnce() -> Result<T, AccelError>,
    ) -> Result<T, AccelError> {
        let index = cuda_index(self.device, "cuda graphs")?;
        if self.captured {
            self.reset()?;
        }
        ffi::cuda_synchronize(index)?;
        let side = SideStreamHandle::enter(index)?;
        let result = self.handle.capture_begin().and_then(|()| {
            let out = body();
            // Always end a begun capture, so the stream leaves capture mode.
            let end = self.handle.capture_end();
            let out = out?;
            end.map(|()| out)
        });
        let exit = side.exit();
        match result {
            Ok(out) => {
                exit?;
                self.captured = true;
                Ok(out)
            }
            Err(e) => {
                // Best effort: a failed capture leaves nothing worth keeping.
                let _ = self.handle.reset();
                Err(e)
            }
        }
    }

    /// Runs the captured kernels again on the current stream.
    pub fn replay(&self) -> Result<(), AccelError> {
        if !self.captured {
            return Err(AccelError::Invalid {
                what: "cuda graph replay",
                expected: "a captured graph",
                found: "a graph with nothing captured".to_string(),
            });
        }
        self.handle.replay()
    }

    /// Frees the captured graph and its memory pool; the next `capture` starts afresh.
    pub fn reset(&mut self) -> Result<(), AccelError> {
        self.captured = false;
        self.handle.reset()
    }
}

/// A whole training step (forward, loss, backward, optimizer step) captured as one CUDA graph
/// and replayed per batch, which removes the per-kernel launch cost of eager execution.
///
/// **The static-buffer rule.** A replay re-runs the captured kernels on the exact memory they
/// used during capture; nothing the step closure does in Rust is re-run. So:
/// - the closure must read its inputs from *static* tensors allocated before `capture`
///   (e.g. `images: [B, 3, H, W]`, `labels: [B]` on the device) and kept alive, unmoved and
///   unreallocated, as long as the `GraphedStep`; before each `replay`, copy the next batch into
///   them with `copy_` (same shape, kind and layout: a channels-last static input needs
///   channels-last copies). A batch of another size needs its own capture (or an eager step);
/// - the loss `replay` returns is the tensor produced at capture: read it after each replay
///   (e.g. `.double_value(&[])`), never keep tensors made inside the closure and expect them to
///   be fresh otherwise;
/// - the optimizer must be a fused one built with `capturable: true` (so `set_lr` reaches the
///   replays), and must not be `zero_grad`-ed between replays: the captured backward
///   overwrites the gradients in place;
/// - host-side decisions in the closure (branches on values, `.item()`, a varying dropout rate,
///   data-dependent shapes) are frozen at capture. Enter `Autocast` inside the closure around
///   the forward pass, not around `capture`.
///
/// `capture` first runs `warmup` (at least 1) eager steps on a side stream, as PyTorch's
/// recipe does, so cuDNN/cuBLAS set-up and autotuning happen outside the capture. These are
/// real training steps: they update the parameters.
#[derive(Debug)]
pub struct GraphedStep {
    graph: CudaGraph,
    loss: Tensor,
    _not_send: PhantomData<*const ()>,
}

impl GraphedStep {
    /// Warms up and captures `step`, which runs forward, loss, `loss.backward()` and the
    /// optimizer's `step` on the static inputs and returns the loss tensor. Gradients of
    /// `vs`'s trainable variables are cleared before each warm-up step and before the capture
    /// (so the captured backward allocates them from the graph's pool); `step` must not
    /// clear them itself (use the optimizer's `step`, not `backward_step`).
    pub fn capture<F>(vs: &VarStore, warmup: usize, mut step: F) -> Result<GraphedStep, AccelError>
    where
        F: FnMut() -> Result<Tensor, AccelError>,
    {
        let device = vs.device();
        let index = cuda_index(device, "cuda graphs")?;
        if warmup == 0 {
            return Err(AccelError::Invalid {
                what: "cuda graph warm-up",
                expected: "at least 1 eager step before capture",
                found: "0 steps".to_string(),
            });
        }
        let mut graph = CudaGraph::new(device)?;
        let params = vs.trainable_variables();
        let side = SideStreamHandle::enter(index)?;
        for _ in 0..warmup {
            ffi::clear_grads(&params)?;
            drop(step()?);
        }
        side.exit()?;
        ffi::clear_grads(&params)?;
        let loss = graph.capture(&mut step)?;
        Ok(GraphedStep {
            graph,
            loss,
            _not_send: PhantomData,
        })
    }

    /// One training step on whatever the static inputs hold now; returns the loss tensor,
    /// whose value is this step's once the stream gets there.
    pub fn replay(&self) -> Result<&Tensor, AccelError> {
        self.graph.replay()?;
        Ok(&self.loss)
    }

    /// The static loss tensor (the last replay's loss).
    pub fn loss(&self) -> &Tensor {
        &self.loss
    }
}
