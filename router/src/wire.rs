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
/// `grpc` when the call came through the gRPC front door: the body is one protobuf message and
/// the replica answers with length-prefixed gRPC messages (so a stream keeps its message
/// boundaries across hops).
pub const PROTOCOL: HeaderName = HeaderName::from_static("x-photon-protocol");
/// `PROTOCOL` value for gRPC calls.
pub const PROTOCOL_GRPC: &str = "grpc";
/// A gRPC deployment's own status travels as the answer's `grpc-status` and `grpc-message`
/// headers (the message not yet percent-encoded) and its trailing metadata as headers with
/// this prefix; the gRPC front door turns them into trailers.
pub const GRPC_TRAILER_PREFIX: &str = "x-photon-grpc-trailer-";
/// The one trailer of a streamed gRPC answer from a replica: how the stream ended ([`GrpcEnd`]),
/// known only after the last message. The replica declares it in `Trailer` and sends it when the
/// router asked with `TE: trailers` (HTTP/1.1 chunked trailers must be named up front, and the
/// deployment's own trailing metadata is not known then, hence one field that carries them all).
pub const GRPC_END: HeaderName = HeaderName::from_static("x-photon-grpc-end");

/// How a streamed gRPC answer ended.
#[derive(Debug, Clone, PartialEq)]
pub enum GrpcEnd {
    /// The deployment's own status, in the answer-head vocabulary: `grpc-status`,
    /// `grpc-message` and [`GRPC_TRAILER_PREFIX`] headers (empty: it set none).
    Status(HeaderMap),
    /// The deployment's code raised after the stream began; the message, as a unary call's
    /// error body would carry it.
    Error(String),
}

impl GrpcEnd {
    /// The [`GRPC_END`] trailer's value: JSON, `{"status": [[name, value], ...]}` or
    /// `{"error": message}`.
    pub fn to_header(&self) -> http::HeaderValue {
        let json = match self {
            GrpcEnd::Status(headers) => {
                let pairs: Vec<(&str, String)> = headers
                    .iter()
                    .map(|(k, v)| (k.as_str(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
                    .collect();
                serde_json::json!({ "status": pairs })
            }
            GrpcEnd::Error(message) => serde_json::json!({ "error": message }),
        };
        // JSON escapes control characters, so the value is a valid header value (UTF-8 beyond
        // ASCII is allowed as obs-text).
        http::HeaderValue::from_bytes(json.to_string().as_bytes()).unwrap_or(http::HeaderValue::from_static("{}"))
    }

    /// Reads a [`GRPC_END`] trailer; `None` when it is not one.
    pub fn from_header(value: &http::HeaderValue) -> Option<GrpcEnd> {
        let json: serde_json::Value = serde_json::from_slice(value.as_bytes()).ok()?;
        if let Some(message) = json.get("error").and_then(serde_json::Value::as_str) {
            return Some(GrpcEnd::Error(message.to_string()));
        }
        let mut headers = HeaderMap::new();
        for pair in json.get("status")?.as_array()? {
            let (Some(name), Some(value)) =
                (pair.get(0).and_then(|v| v.as_str()), pair.get(1).and_then(|v| v.as_str()))
            else {
                return None;
            };
            headers.append(
                HeaderName::from_bytes(name.as_bytes()).ok()?,
                http::HeaderValue::from_bytes(value.as_bytes()).ok()?,
            );
        }
        Some(GrpcEnd::Status(headers))
    }
}

/// Marks a handle call whose arguments are pickled Python objects (value `pickle`); only
/// Python replicas' routers set it, and the front doors strip it from clients (unpickling a
/// client's body would run the client's code).
pub const HANDLE_ARGS: HeaderName = HeaderName::from_static("x-photon-handle-args");
/// A handle call that asked for a stream of results (`.options(stream=True)`), value `1`.
pub const HANDLE_STREAM: HeaderName = HeaderName::from_static("x-photon-handle-stream");
/// Every header Photon's processes use among themselves starts so; clients' are removed.
pub const INTERNAL_PREFIX: &str = "x-photon-";

/// Removes every `x-photon-*` header: a client must not choose the method called, the framing,
/// or how the body is decoded.
pub fn strip_internal(headers: &mut HeaderMap) {
    let internal: Vec<HeaderName> =
        headers.keys().filter(|k| k.as_str().starts_with(INTERNAL_PREFIX)).cloned().collect();
    for name in internal {
        headers.remove(name);
    }
}

/// Set by the replica on answers that are not the deployment's own.
pub const OUTCOME: HeaderName = HeaderName::from_static("x-photon-outcome");
/// `OUTCOME` value: the replica did not start the request (full or draining).
pub const OUTCOME_REJECTED: &str = "rejected";
/// `OUTCOME` value: the deployment's code raised; the body holds the message.
pub const OUTCOME_ERROR: &str = "error";
/// `OUTCOME` value: the replica failed the request outside the deployment's code (Ray's
/// replica-side errors that reach the client as a bare 500 with `connection: close`); the body
/// holds the reason.
pub const OUTCOME_FAILED: &str = "failed";

/// Ray's multiplexed model id request header; `-` and `_` are interchangeable in 2.60.
pub const MODEL_ID_HEADERS: [&str; 2] = ["serve_multiplexed_model_id", "serve-multiplexed-model-id"];

/// The request's multiplexed model id ("" when it names none).
pub fn multiplexed_model_id(headers: &HeaderMap) -> &str {
    MODEL_ID_HEADERS
        .iter()
        .find_map(|h| headers.get(*h).and_then(|v| v.to_str().ok()).filter(|v| !v.is_empty()))
        .unwrap_or("")
}

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

/// A deployment's answer; its body streams from the replica.
pub struct Answer {
    /// HTTP status.
    pub status: StatusCode,
    /// Response headers (hop-by-hop ones removed).
    pub headers: HeaderMap,
    /// Body, streamed; holds the request's replica slot until it ends or is dropped, so
    /// `max_ongoing_requests` counts a streaming response for as long as it streams.
    pub body: AnswerBody,
    /// The replica's side of a WebSocket, when it answered an upgrade with 101.
    pub upgrade: Option<hyper::upgrade::OnUpgrade>,
}

/// Whether a request asks to become a WebSocket (`Connection: upgrade`, `Upgrade: websocket`).
pub fn is_websocket(headers: &HeaderMap) -> bool {
    let has = |name: http::header::HeaderName, token: &str| {
        headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    };
    has(http::header::CONNECTION, "upgrade") && has(http::header::UPGRADE, "websocket")
}

/// Puts back the two headers of a WebSocket upgrade that [`strip_hop_by_hop`] removes (the
/// handshake goes on to the replica, which answers it).
pub fn keep_websocket_upgrade(headers: &mut HeaderMap) {
    headers.insert(http::header::CONNECTION, http::HeaderValue::from_static("upgrade"));
    headers.insert(http::header::UPGRADE, http::HeaderValue::from_static("websocket"));
}

/// The body of an [`Answer`]. It holds the request's slot on its replica (the queue's permit,
/// given back when dropped) until the body ends.
pub struct AnswerBody {
    inner: hyper::body::Incoming,
    slot: Option<Box<dyn Send + Sync>>,
}

impl AnswerBody {
    pub(crate) fn new(inner: hyper::body::Incoming) -> Self {
        AnswerBody { inner, slot: None }
    }

    /// Keeps `slot` until the body ends or is dropped.
    pub(crate) fn hold(&mut self, slot: impl Send + Sync + 'static) {
        self.slot = Some(Box::new(slot));
    }

    /// Reads the whole body.
    pub async fn collect(self) -> Result<Bytes, hyper::Error> {
        use http_body_util::BodyExt;
        Ok(BodyExt::collect(self).await?.to_bytes())
    }
}

impl hyper::body::Body for AnswerBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, hyper::Error>>> {
        let polled = std::pin::Pin::new(&mut self.inner).poll_frame(cx);
        if let std::task::Poll::Ready(None) = polled {
            // The stream ended: give the replica slot back now, not when the body is dropped.
            self.slot = None;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

/// Length-prefixed gRPC message framing (compression flag, big-endian length, message).
pub mod grpc_frame {
    use bytes::{BufMut, Bytes, BytesMut};

    /// One message as a gRPC frame.
    pub fn encode(message: &[u8]) -> Bytes {
        let mut out = BytesMut::with_capacity(5 + message.len());
        out.put_u8(0);
        out.put_u32(message.len() as u32);
        out.put_slice(message);
        out.freeze()
    }

    /// The messages of a complete, uncompressed gRPC body; `Err` names what is wrong.
    pub fn decode_all(mut body: Bytes) -> Result<Vec<Bytes>, &'static str> {
        let mut out = Vec::new();
        while !body.is_empty() {
            if body.len() < 5 {
                return Err("truncated gRPC frame header");
            }
            if body[0] != 0 {
                return Err("compressed gRPC messages are not supported");
            }
            let len = u32::from_be_bytes([body[1], body[2], body[3], body[4]]) as usize;
            if body.len() < 5 + len {
                return Err("truncated gRPC message");
            }
            let _ = body.split_to(5);
            out.push(body.split_to(len));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod properties {
    use super::grpc_frame;
    use bytes::Bytes;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 1024, ..ProptestConfig::default() })]

        /// Any body decodes to messages or an error, never a panic; encoded messages come back.
        #[test]
        fn grpc_bodies_decode_without_panic(body in prop::collection::vec(any::<u8>(), 0..64),
                                            messages in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..32), 0..4)) {
            let _ = grpc_frame::decode_all(Bytes::from(body));
            let mut wire = Vec::new();
            for m in &messages {
                wire.extend_from_slice(&grpc_frame::encode(m));
            }
            let decoded = grpc_frame::decode_all(Bytes::from(wire)).unwrap();
            prop_assert_eq!(decoded.iter().map(|b| b.to_vec()).collect::<Vec<_>>(), messages);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_grpc_end_survives_the_trailer() {
        let mut headers = HeaderMap::new();
        headers.insert("grpc-status", "5".parse().unwrap());
        headers.insert("grpc-message", http::HeaderValue::from_bytes("ü \"quoted\"\tand more".as_bytes()).unwrap());
        headers.append("x-photon-grpc-trailer-k", "a".parse().unwrap());
        headers.append("x-photon-grpc-trailer-k", "b".parse().unwrap());
        for end in
            [GrpcEnd::Status(headers), GrpcEnd::Status(HeaderMap::new()), GrpcEnd::Error("line 1\nline 2: ü".into())]
        {
            assert_eq!(GrpcEnd::from_header(&end.to_header()), Some(end));
        }
        assert_eq!(GrpcEnd::from_header(&http::HeaderValue::from_static("not json")), None);
    }
}
