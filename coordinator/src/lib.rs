//! stackhive coordinator: a stateless gRPC server over a job store. All state lives in the
//! database (PostgreSQL for clusters, SQLite embedded), so several coordinators may serve one
//! PostgreSQL. Entry point: [`server::run`].
//!
//! Rooms: `domain/` (jobs, kinds, validation), `store/` (the database), `services/` (what the
//! coordinator does over the store), `api/` (the gRPC handlers), `auth/` (tokens, roles, TLS);
//! beside them the configuration, errors, metrics and the server that wires them together.

pub mod api;
pub mod auth;
pub mod config;
pub mod domain;
pub mod error;
pub mod metrics;
pub mod server;
pub mod services;
pub mod store;

pub use config::CoordinatorConfig;
/// The domain types, at the crate root for the crates that use them (the CLI, the tests).
pub use domain::model;
pub use error::{Error, Result};
pub use server::run;
