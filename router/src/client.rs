//! Connections to replicas: one lazily connected HTTP/2 channel per replica, explicit message
//! size limits, and the classification of a failed call into what the router does next.

use std::error::Error as _;
use std::time::Duration;

use photon_proto::v1 as pb;
use photon_proto::v1::replica_service_client::ReplicaServiceClient;
use tonic::transport::{Channel, Endpoint};
use tonic::Code;

/// Largest request or response body between routers and replicas (Ray allows 2 GiB - 1).
pub const MAX_MESSAGE_BYTES: usize = (2 << 30) - 1;

/// A cheap-to-clone client of one replica.
#[derive(Clone)]
pub struct ReplicaClient {
    inner: ReplicaServiceClient<Channel>,
}

/// How a call to a replica failed.
#[derive(Debug)]
pub enum ReplicaFailure {
    /// The replica did not start the request (full or draining): try another.
    Refused,
    /// No connection could be made: the request never reached it; try another.
    Unreachable(String),
    /// The connection broke or the replica died after it took the request.
    Failed(String),
    /// The deployment's code raised.
    Deployment(String),
}

impl ReplicaClient {
    /// A client that connects on first use to `address` (`host:port`).
    pub fn lazy(address: &str) -> Self {
        let endpoint = Endpoint::from_shared(format!("http://{address}"))
            .unwrap_or_else(|_| Endpoint::from_static("http://127.0.0.1:1"))
            .tcp_nodelay(true)
            .connect_timeout(Duration::from_secs(2))
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_while_idle(true);
        let channel = endpoint.connect_lazy();
        let inner = ReplicaServiceClient::new(channel)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        ReplicaClient { inner }
    }

    /// Sends one request.
    pub async fn call(&self, request: pb::CallRequest) -> Result<pb::CallResponse, ReplicaFailure> {
        let mut client = self.inner.clone();
        client.call(request).await.map(tonic::Response::into_inner).map_err(|s| classify(&s))
    }

    /// The underlying gRPC client (health checks, reconfigure).
    pub fn grpc(&self) -> ReplicaServiceClient<Channel> {
        self.inner.clone()
    }
}

/// Maps a replica call's status to what the router should do.
pub fn classify(status: &tonic::Status) -> ReplicaFailure {
    match status.code() {
        Code::ResourceExhausted => ReplicaFailure::Refused,
        Code::Internal if status.source().is_none() => ReplicaFailure::Deployment(status.message().to_string()),
        Code::Unavailable if is_connect_error(status) => ReplicaFailure::Unreachable(status.to_string()),
        _ => ReplicaFailure::Failed(status.to_string()),
    }
}

/// Whether the failure happened while connecting, i.e. before anything was sent.
fn is_connect_error(status: &tonic::Status) -> bool {
    let mut source = status.source();
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind::*;
            if matches!(io.kind(), ConnectionRefused | AddrNotAvailable | NotConnected | TimedOut) {
                return true;
            }
        }
        if let Some(t) = e.downcast_ref::<tonic::transport::Error>() {
            // tonic reports connection setup failures as transport errors on a fresh channel.
            if t.to_string().contains("connect") {
                return true;
            }
        }
        source = e.source();
    }
    false
}

/// Accepted connections of a gRPC server with Nagle's algorithm off: tonic sets `TCP_NODELAY`
/// only on sockets it accepts itself, and a small response held back by Nagle waits for the
/// peer's delayed ACK (tens of milliseconds).
pub fn incoming_nodelay(
    listener: tokio::net::TcpListener,
) -> impl tokio_stream::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    use tokio_stream::StreamExt;
    tokio_stream::wrappers::TcpListenerStream::new(listener).map(|conn| {
        let stream = conn?;
        stream.set_nodelay(true)?;
        Ok(stream)
    })
}
