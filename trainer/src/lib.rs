//! stackhive's level-1 CNN trainer on libtorch (tch 0.24, libtorch 2.11 from the PyTorch wheel;
//! see `scripts/setup.sh`'s `ensure_libtorch`): architectures by name (`arch`), the networks
//! (`models`), initial weights that fit across sizes (`weights`), the tabular metadata features
//! (`meta`), fold data and batches (`data`), the run's resolved settings (`config`), optimizers
//! (`optim`), learning-rate schedules (`schedule`), the weights' moving average (`ema`), the
//! training loop (`train`), resume checkpoints (`resume`), the learning-rate finder
//! (`lr_find`) and a whole trainer job (`job`: `cnn` or `lr-find`, the `stackhive_spec::TrainerJob` contract), which the
//! `stackhive-trainer` binary runs in a process of its own so a CUDA out-of-memory error or a
//! libtorch abort ends that job alone.
//!
//! Only this crate links libtorch: the CLI and the coordinator must never depend on it.

/// Architecture names live in the libtorch-free spec crate, which the coordinator also reads.
pub use stackhive_spec::arch;
pub mod accel;
pub mod augment;
pub mod config;
pub mod data;
pub mod device;
pub mod ema;
pub mod error;
mod graphed;
pub mod job;
pub mod loader;
pub mod lr_find;
pub mod meta;
pub mod mix;
pub mod models;
pub mod optim;
pub mod resume;
pub mod schedule;
pub mod train;
pub mod tta;
pub mod weights;

pub use arch::{Arch, EfficientNetSpec, ResNetDepth};
pub use config::{InitWeights, TrainConfig};
pub use device::parse_device;
pub use error::TrainerError;
pub use job::{run_job, JobOutput};
pub use lr_find::lr_find;
pub use models::Net;
pub use optim::{Optim, OptimConfig, OptimKind};
pub use schedule::Schedule;
pub use stackhive_spec::{CnnResult, EpochMetrics, LrFindResult, TrainerEvent, TrainerJob};
pub use train::{predict, train, TrainOutcome, Trained};
pub use weights::{load_fitting, LoadReport};
