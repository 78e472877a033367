//! gRPC handlers. They stay thin: validate (`crate::domain::validate`), call the store, convert.
//! State and SQL live in `crate::store`; error codes come from `impl From<Error> for Status`.

pub mod artifacts;
mod convert;
pub mod datasets;
pub mod features;
pub mod jobs;
mod predictions;
pub mod sweeps;
pub mod tokens;
pub mod workers;

pub use artifacts::ArtifactApi;
pub use datasets::DatasetApi;
pub use features::FeatureApi;
pub use jobs::JobApi;
pub use sweeps::SweepApi;
pub use tokens::TokenApi;
pub use workers::WorkerApi;
