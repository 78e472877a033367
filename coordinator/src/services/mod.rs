//! The coordinator's services over the store, each one room: artifact uploads and fetches
//! (`artifacts`), dataset files (`datasets`), folds (`folds`), level-2 feature sets
//! (`features`, `restack`), imported predictions (`imports`), sweeps (`sweeps`) and the reaper
//! of expired leases and old jobs (`reaper`). The gRPC handlers in `api/` call them.

pub mod artifacts;
pub mod datasets;
pub mod features;
pub mod folds;
pub mod imports;
pub mod reaper;
pub mod restack;
pub mod sweeps;
