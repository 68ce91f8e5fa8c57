//! The data path between routers and replicas: each call is one plain HTTP/1.1 request on a
//! pooled keep-alive connection to the replica's data port, as a reverse proxy forwards it
//! (method, path and query, headers, body), plus a few `x-photon-*` headers. The replica's
//! answer is the HTTP response itself; `x-photon-outcome` marks the two answers that are not
//! the deployment's: a refusal (not started: try another replica) and an error raised by the
//! deployment's code.

use bytes::Bytes;
use http::{HeaderMap, HeaderName, Method, StatusCode};

/// Request id of the request that caused the call.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-photon-request-id");
/// Deployment method to call (absent: `__call__`).
pub const METHOD: HeaderName = HeaderName::from_static("x-photon-method");
/// Route prefix the front door matched.
pub const ROUTE_PREFIX: HeaderName = HeaderName::from_static("x-photon-route-prefix");
/// Set by the replica on answers that are not the deployment's own.
pub const OUTCOME: HeaderName = HeaderName::from_static("x-photon-outcome");
/// `OUTCOME` value: the replica did not start the request (full or draining).
pub const OUTCOME_REJECTED: &str = "rejected";
/// `OUTCOME` value: the deployment's code raised; the body holds the message.
pub const OUTCOME_ERROR: &str = "error";

/// Headers that belong to one connection and are never forwarded (RFC 9110 section 7.6.1), plus
/// the body framing, which each hop sets for itself.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    for name in [
        http::header::CONNECTION,
        http::header::TRANSFER_ENCODING,
        http::header::TE,
        http::header::TRAILER,
        http::header::UPGRADE,
        http::header::CONTENT_LENGTH,
        http::header::PROXY_AUTHORIZATION,
    ] {
        headers.remove(name);
    }
    headers.remove("keep-alive");
    headers.remove("proxy-connection");
}

/// One call to a deployment.
#[derive(Debug, Clone)]
pub struct Call {
    /// `x-request-id` of the originating request.
    pub request_id: String,
    /// `__call__`, or the method a handle calls.
    pub method: String,
    /// HTTP method of the originating request (POST for handle calls).
    pub http_method: Method,
    /// Path and query as the application sees them.
    pub path_and_query: String,
    /// Request headers (hop-by-hop ones removed).
    pub headers: HeaderMap,
    /// Body.
    pub body: Bytes,
    /// The route prefix that matched (empty for handle calls).
    pub route_prefix: String,
}

impl Call {
    /// A handle call of `method` with a JSON body.
    pub fn handle(method: &str, body: Bytes, request_id: &str) -> Call {
        let mut headers = HeaderMap::new();
        headers.insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
        Call {
            request_id: request_id.to_string(),
            method: method.to_string(),
            http_method: Method::POST,
            path_and_query: "/".to_string(),
            headers,
            body,
            route_prefix: String::new(),
        }
    }
}

/// A deployment's answer.
#[derive(Debug, Clone)]
pub struct Answer {
    /// HTTP status.
    pub status: StatusCode,
    /// Response headers (hop-by-hop ones removed).
    pub headers: HeaderMap,
    /// Body.
    pub body: Bytes,
}
