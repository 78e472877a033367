//! Training steps replayed from a CUDA graph, for `cnn` jobs with `cuda_graph` on a GPU
//! (issue 4's speed goal: one launch per step instead of one per kernel). The first full batch
//! trains with one eager step — the warm-up `accel::GraphedStep` needs, and a real step like
//! any other — while the step is captured on static input buffers; every later batch is copied
//! into those buffers and the graph replayed. Same loss, optimizer and schedule as the eager
//! path (`train::Session::step`); the loop drops partial batches in this mode, because a graph
//! replays one shape. It must not decide whether to capture: the config does (`graphed`).

use tch::Tensor;

use crate::accel::{AccelError, GraphedStep};
use crate::config::TrainConfig;
use crate::data::Batch;
use crate::error::TrainerError;
use crate::train::{batch_loss, Session};

/// The captured step and the static buffers it reads.
struct Captured {
    step: GraphedStep,
    images: Tensor,
    meta: Tensor,
    labels: Tensor,
}

/// Captures on the first call, replays afterwards.
#[derive(Default)]
pub(crate) struct GraphedTrainer {
    captured: Option<Captured>,
}

fn accel(e: TrainerError) -> AccelError {
    AccelError::Torch {
        op: "graphed training step",
        message: e.to_string(),
    }
}

impl GraphedTrainer {
    /// One optimizer step on `batch` (a full batch, on the device) at rate `lr`; returns the
    /// step's mean loss, detached and on the device.
    pub fn step(
        &mut self,
        s: &mut Session,
        cfg: &TrainConfig,
        batch: &Batch,
        lr: f64,
    ) -> Result<Tensor, TrainerError> {
        s.opt.set_lr(lr);
        let labels = batch
            .labels
            .as_ref()
            .expect("training examples are labelled");
        if let Some(c) = &mut self.captured {
            c.images.f_copy_(&batch.images)?;
            c.meta.f_copy_(&batch.meta)?;
            c.labels.f_copy_(labels)?;
            // A copy: the static loss is overwritten by the next replay.
            return Ok(c.step.replay()?.copy());
        }
        // Fresh tensors (same layout as the batch) that stay put as the graph's inputs.
        let (images, meta, labels) = (batch.images.copy(), batch.meta.copy(), labels.copy());
        let (net, opt) = (&s.net, &mut s.opt);
        let mut warm_up_loss = None;
        let step = GraphedStep::capture(&s.vs, 1, || {
            let loss = batch_loss(net, cfg, &images, &meta, &labels).map_err(accel)?;
            loss.f_backward()?;
            opt.step().map_err(accel)?;
            let loss = loss.detach();
            if warm_up_loss.is_none() {
                // The warm-up runs; the capture that follows only records.
                warm_up_loss = Some(loss.copy());
            }
            Ok(loss)
        })?;
        self.captured = Some(Captured {
            step,
            images,
            meta,
            labels,
        });
        Ok(warm_up_loss.expect("the warm-up step ran"))
    }
}
