//! The front doors: the HTTP proxy (and, later, gRPC) that match a request to an application
//! and hand it to the router. Depends only on the routing table the router is given, never on
//! controller internals.

#![warn(missing_docs)]

mod grpc;
mod http;
mod metrics;
pub mod respond;

pub use crate::grpc::{code_name as grpc_code_name, serve as serve_grpc, GrpcConfig};
pub use crate::http::{serve, serve_on_threads, HttpConfig};
