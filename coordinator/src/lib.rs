//! stackhive coordinator: a stateless gRPC server over a job store. All state lives in the
//! database (PostgreSQL for clusters, SQLite embedded), so several coordinators may serve one
//! PostgreSQL. Entry point: [`server::run`].

pub mod api;
pub mod artifacts;
pub mod auth;
pub mod config;
pub mod datasets;
pub mod error;
pub mod features;
pub mod folds;
pub mod imports;
pub mod kinds;
pub mod metrics;
pub mod model;
pub mod reaper;
pub mod restack;
pub mod server;
pub mod store;
pub mod sweeps;
pub mod validate;

pub use config::CoordinatorConfig;
pub use error::{Error, Result};
pub use server::run;
