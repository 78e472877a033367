//! Level-2 stacking (issue 12): the model zoo trained fold by fold on a feature matrix.
//! `prep` makes a matrix ready and holds what the jobs of one feature set share (fold rows,
//! standardised folds, binned LightGBM datasets, nearest neighbours); `models` is the zoo;
//! `kfold` runs one job over every fold, its folds side by side on the `cores` it holds or
//! borrows. The `stackhive-stacker` binary serves jobs to a worker over its stdin and stdout
//! (`serve`).
//!
//! Must not: talk to the coordinator (the worker does), or write to stdout outside the serve
//! protocol (libraries' logs are routed away).

pub mod cores;
pub mod error;
pub mod kfold;
mod lgb;
pub mod models;
pub mod prep;
pub mod serve;

pub use error::StackError;
pub use kfold::{run, StackOutcome};
pub use prep::Prepared;
