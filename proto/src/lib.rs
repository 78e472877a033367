//! The stackhive v1 gRPC API: messages, clients and servers generated from
//! `proto/stackhive/v1/*.proto`, the codec they share, the protocol's limits, how clients
//! connect, and the log and trace set-up every binary shares (`telemetry`).

pub mod codec;
pub mod connect;
pub mod failover;
pub mod limits;
pub mod telemetry;

pub mod v1 {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("stackhive.v1");

    /// Encoded descriptors for gRPC server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        tonic::include_file_descriptor_set!("stackhive_v1_descriptor");
}

pub use v1::*;

impl v1::JobState {
    /// True for states a job never leaves on its own.
    pub fn is_finished(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Cancelled)
    }
}
