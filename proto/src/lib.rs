//! Generated protobuf and gRPC code: Photon's internal API (`photon.v1`). Generated modules only;
//! conversions into domain types live in the crates that use them.

/// Photon's internal controller and replica API, and the gRPC API of its model deployments.
#[allow(missing_docs, clippy::all)]
pub mod photon {
    /// Version 1 of the internal API.
    pub mod v1 {
        tonic::include_proto!("photon.v1");
    }
}

pub use photon::v1;

/// Ray Serve's gRPC API (`ray.serve`): the built-in service and Ray's test services.
#[allow(missing_docs, clippy::all, non_camel_case_types)]
pub mod ray {
    /// Package `ray.serve`.
    pub mod serve {
        tonic::include_proto!("ray.serve");
    }
}
