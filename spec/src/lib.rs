//! What stackhive's ML job kinds ask for and what their trainer process answers, free of
//! libtorch: architecture names and the image sizes they take (`arch`), the `cnn` / `lr-find`
//! payload and its validation (`cnn`), the worker–trainer process contract (`process`), and the
//! level-2 `stack` payload with the model zoo's hyperparameter spaces (`stack`) and the
//! worker–stacker process contract (`stacker`).
//! The coordinator validates payloads with it at submit time, the worker turns a payload into a
//! trainer job with it, and the trainer reads it. It must not depend on tch.

pub mod arch;
pub mod cnn;
pub mod error;
pub mod process;
pub mod stack;
pub mod stacker;

pub use arch::{Arch, EfficientNetSpec, ResNetDepth};
pub use cnn::{
    AugmentSpec, CnnKind, CnnSpec, InitWeightsSpec, OptimizerName, OptimizerSpec, Precision,
    ScheduleName, ScheduleSpec, SweepSpec,
};
pub use error::SpecError;
pub use process::{CnnResult, EpochMetrics, LrFindResult, Progress, TrainerEvent, TrainerJob};
pub use stack::{ModelType, Params, StackJob, StackSpec};
