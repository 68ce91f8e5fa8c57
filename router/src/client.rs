//! Connections to replicas' data ports: one shared HTTP/1.1 keep-alive pool per router (a
//! connection per in-flight request, reused; no multiplexing task in between), and the
//! classification of a failed call into what the router does next.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};

use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::wire::{self, Answer, AnswerBody, Call};

/// Largest request or response body between routers and replicas (Ray allows 2 GiB - 1).
pub const MAX_MESSAGE_BYTES: usize = (2 << 30) - 1;

/// Ray's variable for the largest gRPC message, in bytes (its default: 2 GiB - 1).
pub const MAX_MESSAGE_SIZE_ENV: &str = "RAY_SERVE_GRPC_MAX_MESSAGE_SIZE";

/// The variable (and `--max-request-body-bytes`'s) for the largest HTTP request body.
pub const MAX_BODY_ENV: &str = "PHOTON_MAX_REQUEST_BODY_BYTES";
/// The HTTP front door's default body limit.
pub const DEFAULT_MAX_BODY_BYTES: usize = 100 << 20;

/// The largest body a replica's data port takes: the larger of what the two front doors
/// forward (`PHOTON_MAX_REQUEST_BODY_BYTES`, `RAY_SERVE_GRPC_MAX_MESSAGE_SIZE`, as the
/// replica's environment, inherited from the head, sets them), and never more.
pub fn replica_max_message_bytes() -> usize {
    let http = std::env::var(MAX_BODY_ENV).ok().and_then(|v| v.trim().parse().ok()).unwrap_or(DEFAULT_MAX_BODY_BYTES);
    let grpc = max_message_bytes_from_env().unwrap_or(MAX_MESSAGE_BYTES);
    http.max(grpc).min(MAX_MESSAGE_BYTES)
}

/// The largest gRPC message: `RAY_SERVE_GRPC_MAX_MESSAGE_SIZE` when set, else Ray's default;
/// a value that is not a positive byte count is an error naming the variable.
pub fn max_message_bytes_from_env() -> Result<usize, String> {
    match std::env::var(MAX_MESSAGE_SIZE_ENV) {
        Err(_) => Ok(MAX_MESSAGE_BYTES),
        Ok(text) => match text.trim().parse::<usize>() {
            Ok(n) if n > 0 => Ok(n.min(MAX_MESSAGE_BYTES)),
            _ => Err(format!("{MAX_MESSAGE_SIZE_ENV}: must be a positive number of bytes, got {text:?}")),
        },
    }
}

/// The connection pool shared by every replica client of one router.
pub type Pool = Client<HttpConnector, Full<Bytes>>;

/// A new pool: Nagle off, short connect timeout, idle connections kept for reuse.
pub fn new_pool() -> Pool {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(Duration::from_secs(2)));
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(60))
        .pool_max_idle_per_host(4096)
        .build(connector)
}

thread_local! {
    /// One pool per thread: a proxy thread running its own single-threaded runtime then keeps
    /// each request, its connection and its connection task on one thread.
    static POOL: Pool = new_pool();
}

/// A client of one replica; cheap to clone.
#[derive(Clone)]
pub struct ReplicaClient {
    address: String,
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
    /// The replica answered that it failed the request outside the deployment's code (the
    /// `failed` outcome); the replica itself is fine.
    Reported(String),
    /// The deployment's code raised.
    Deployment(String),
}

impl ReplicaClient {
    /// A client of the replica whose data port is `address` (`host:port`).
    pub fn new(address: &str) -> Self {
        ReplicaClient { address: address.to_string() }
    }

    /// Sends one call.
    pub async fn call(&self, call: Call) -> Result<Answer, ReplicaFailure> {
        let mut builder = http::Request::builder()
            .method(call.http_method)
            .uri(format!("http://{}{}", self.address, call.path_and_query));
        if let Some(h) = builder.headers_mut() {
            *h = call.headers;
            if let Ok(v) = http::HeaderValue::from_str(&call.request_id) {
                h.insert(wire::REQUEST_ID, v);
            }
            if call.method != "__call__" {
                if let Ok(v) = http::HeaderValue::from_str(&call.method) {
                    h.insert(wire::METHOD, v);
                }
            }
            if !call.route_prefix.is_empty() {
                if let Ok(v) = http::HeaderValue::from_str(&call.route_prefix) {
                    h.insert(wire::ROUTE_PREFIX, v);
                }
            }
            crate::cluster_auth::attach(h);
        }
        let request = builder.body(Full::new(call.body)).map_err(|e| ReplicaFailure::Failed(e.to_string()))?;
        let pool = POOL.with(Pool::clone);
        let response = pool.request(request).await.map_err(|e| {
            if e.is_connect() {
                ReplicaFailure::Unreachable(format!("{e:?}"))
            } else {
                ReplicaFailure::Failed(format!("{e:?}"))
            }
        })?;
        let (mut parts, body) = response.into_parts();
        match parts.headers.remove(wire::OUTCOME).as_ref().map(|v| v.as_bytes()) {
            Some(b) if b == wire::OUTCOME_REJECTED.as_bytes() => Err(ReplicaFailure::Refused),
            Some(b) if b == wire::OUTCOME_ERROR.as_bytes() => {
                let message = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                Err(ReplicaFailure::Deployment(String::from_utf8_lossy(&message).into_owned()))
            }
            Some(b) if b == wire::OUTCOME_FAILED.as_bytes() => {
                let message = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                Err(ReplicaFailure::Reported(String::from_utf8_lossy(&message).into_owned()))
            }
            _ => {
                let upgrade = (parts.status == http::StatusCode::SWITCHING_PROTOCOLS)
                    .then(|| parts.extensions.remove::<hyper::upgrade::OnUpgrade>())
                    .flatten();
                if upgrade.is_none() {
                    wire::strip_hop_by_hop(&mut parts.headers);
                }
                parts.headers.remove(http::header::DATE);
                Ok(Answer { status: parts.status, headers: parts.headers, body: AnswerBody::new(body), upgrade })
            }
        }
    }
}
