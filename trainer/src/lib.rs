//! stackhive's level-1 CNN trainer on libtorch (tch 0.24, libtorch 2.11 from the PyTorch wheel;
//! see `scripts/setup.sh`'s `ensure_libtorch`): architectures by name (`arch`), the networks
//! (`models`), initial weights that fit across sizes (`weights`), the tabular metadata features
//! (`meta`), fold data and batches (`data`), the one-cycle schedule (`schedule`), the training
//! loop (`train`) and a whole `cnn` job (`job`), which the `stackhive-trainer` binary runs in a
//! process of its own so a CUDA out-of-memory error or a libtorch abort ends that job alone.
//!
//! Only this crate links libtorch: the CLI and the coordinator must never depend on it.

pub mod arch;
pub mod data;
pub mod device;
pub mod error;
pub mod job;
pub mod meta;
pub mod models;
pub mod schedule;
pub mod train;
pub mod weights;

pub use arch::{Arch, EfficientNetSpec, ResNetDepth};
pub use device::parse_device;
pub use error::TrainerError;
pub use job::{run_job, CnnJob, JobResult};
pub use models::Net;
pub use train::{train, EpochMetrics, InitWeights, TrainConfig, TrainOutcome, Trained};
pub use weights::{load_fitting, LoadReport};
