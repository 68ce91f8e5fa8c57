//! The controller: holds target state from applied configs, reconciles it against the replicas
//! the orchestrator runs, health-checks replicas, and publishes the routing table to every
//! router (in-process through a `watch`, remote through `WatchRoutingTable`).

#![warn(missing_docs)]

mod actor;
pub mod auth;
pub mod autoscale;
pub mod checkpoint;
mod grpc;
pub mod metrics;
mod replica_client;
pub mod rest;
pub mod state;
pub mod status;

pub use actor::{spawn, ControllerHandle};
pub use grpc::ControllerGrpc;
pub use state::Placement;

/// Controller failures.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ControllerError {
    /// The actor has stopped (shutdown).
    #[error("the controller has stopped")]
    Stopped,
    /// The config was applied but the state store did not take it (a restarted controller
    /// would not know it).
    #[error("the config was applied but could not be saved to the state store: {0}")]
    NotSaved(String),
}
