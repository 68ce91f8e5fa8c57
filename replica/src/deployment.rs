//! The `Deployment` trait (what a deployment's code implements) and the request and reply types
//! it sees. A reply is built the way Ray converts a handler's return value: `str` as
//! `text/plain; charset=utf-8`, anything else as compact JSON.

use bytes::Bytes;
use photon_router::{DeploymentHandle, Router};
use serde_json::Value;

use crate::pyvalue;

/// The deployment's code failed (Ray: the user code raised). The front door answers 500.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct DeploymentError(pub String);

impl From<String> for DeploymentError {
    fn from(s: String) -> Self {
        DeploymentError(s)
    }
}

impl From<&str> for DeploymentError {
    fn from(s: &str) -> Self {
        DeploymentError(s.to_string())
    }
}

/// Which front door a request came through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Protocol {
    /// HTTP (or a handle call).
    #[default]
    Http,
    /// gRPC: the body is one protobuf message; reply bodies (and stream chunks) are messages.
    Grpc,
}

/// One request as a deployment sees it.
#[derive(Debug, Clone, Default)]
pub struct Request {
    /// The front door it came through.
    pub protocol: Protocol,
    /// `x-request-id` of the request that caused this call.
    pub request_id: String,
    /// `__call__` for front-door requests; the method name for handle calls.
    pub method: String,
    /// HTTP method (empty for handle calls).
    pub http_method: String,
    /// Full request path.
    pub path: String,
    /// The route prefix the front door matched (empty for handle calls).
    pub route_prefix: String,
    /// Query string without `?`.
    pub query: String,
    /// Request headers (hop-by-hop ones removed).
    pub headers: http::HeaderMap,
    /// Body bytes (for handle calls: the JSON-encoded argument list).
    pub body: Bytes,
}

impl Request {
    /// The body parsed as JSON (Starlette's `await request.json()`).
    pub fn json(&self) -> Result<Value, DeploymentError> {
        serde_json::from_slice(&self.body).map_err(|e| DeploymentError(format!("JSONDecodeError: {e}")))
    }

    /// The first header named `name`.
    pub fn header(&self, name: &str) -> Option<&http::HeaderValue> {
        self.headers.get(name)
    }

    /// Positional argument `i` of a handle call.
    pub fn arg(&self, i: usize) -> Result<Value, DeploymentError> {
        let args = self.json()?;
        args.get(i)
            .cloned()
            .ok_or_else(|| DeploymentError(format!("TypeError: {} missing positional argument {i}", self.method)))
    }
}

/// Pieces of a streamed reply, produced as the deployment goes.
pub type ChunkStream = std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Result<Piece, DeploymentError>> + Send>>;

/// One piece of a streamed reply.
#[derive(Debug, Clone, PartialEq)]
pub enum Piece {
    /// Body bytes (over gRPC, one message).
    Chunk(Bytes),
    /// The gRPC status the deployment set while streaming, known only after its last message:
    /// `grpc-status`, `grpc-message` and trailing metadata, named as a unary reply's headers
    /// name them (`photon_router::wire::GRPC_TRAILER_PREFIX`). The stream's last piece; ignored
    /// over HTTP.
    GrpcStatus(http::HeaderMap),
}

/// A reply's body: whole, or streamed chunk by chunk (chunked over HTTP, one message per chunk
/// over gRPC).
pub enum ReplyBody {
    /// The whole body.
    Full(Bytes),
    /// Chunks as they are produced.
    Stream(ChunkStream),
}

/// What a deployment answers.
pub struct Reply {
    /// HTTP status.
    pub status: u16,
    /// Response headers.
    pub headers: http::HeaderMap,
    /// Response body.
    pub body: ReplyBody,
}

impl std::fmt::Debug for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let body = match &self.body {
            ReplyBody::Full(b) => format!("{} bytes", b.len()),
            ReplyBody::Stream(_) => "stream".to_string(),
        };
        f.debug_struct("Reply")
            .field("status", &self.status)
            .field("headers", &self.headers)
            .field("body", &body)
            .finish()
    }
}

impl Reply {
    /// A `str` result: `text/plain; charset=utf-8`.
    pub fn text(s: impl Into<String>) -> Self {
        Reply::with_type(Bytes::from(s.into()), "text/plain; charset=utf-8")
    }

    /// Any other result: compact JSON with Python's number formatting, `application/json`.
    pub fn json(v: &Value) -> Result<Self, DeploymentError> {
        Ok(Reply::with_type(Bytes::from(pyvalue::json_dumps(v)?), "application/json"))
    }

    /// Raw bytes with the given content type (none when `content_type` is `None`).
    pub fn bytes(body: Bytes, content_type: Option<http::HeaderValue>) -> Self {
        let mut headers = http::HeaderMap::new();
        if let Some(t) = content_type {
            headers.insert(http::header::CONTENT_TYPE, t);
        }
        Reply { status: 200, headers, body: ReplyBody::Full(body) }
    }

    /// A streamed reply with the given content type.
    pub fn stream(content_type: &'static str, chunks: ChunkStream) -> Self {
        let mut headers = http::HeaderMap::new();
        headers.insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static(content_type));
        Reply { status: 200, headers, body: ReplyBody::Stream(chunks) }
    }

    fn with_type(body: Bytes, content_type: &'static str) -> Self {
        let mut headers = http::HeaderMap::new();
        headers.insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static(content_type));
        Reply { status: 200, headers, body: ReplyBody::Full(body) }
    }
}

/// A request's place among the replica's `max_ongoing_requests`, given back when dropped.
pub struct RequestSlot {
    // Only held: its drop gives the place back.
    _held: Box<dyn Send + Sync>,
}

impl RequestSlot {
    /// A slot whose `held` value gives the place back when it is dropped.
    pub(crate) fn new(held: impl Send + Sync + 'static) -> Self {
        RequestSlot { _held: Box::new(held) }
    }
}

/// The connection of a WebSocket handshake the deployment answers with 101, and the request's
/// slot among `max_ongoing_requests`, which the WebSocket holds until it ends.
pub struct Upgrade {
    on_upgrade: hyper::upgrade::OnUpgrade,
    slot: RequestSlot,
}

impl Upgrade {
    pub(crate) fn new(on_upgrade: hyper::upgrade::OnUpgrade, slot: RequestSlot) -> Self {
        Upgrade { on_upgrade, slot }
    }

    /// The upgraded connection (once the 101 has gone out), with the slot to keep while it is
    /// open.
    pub async fn connect(self) -> Result<(hyper::upgrade::Upgraded, RequestSlot), hyper::Error> {
        Ok((self.on_upgrade.await?, self.slot))
    }
}

/// What a deployment's constructor gets: where it runs and handles to its siblings.
#[derive(Clone)]
pub struct BuildContext {
    /// Application name.
    pub app: String,
    /// Deployment name.
    pub deployment: String,
    /// Replica id.
    pub replica_id: String,
    pub(crate) router: Router,
}

impl BuildContext {
    /// A context whose handles route through `router`.
    pub fn new(app: &str, deployment: &str, replica_id: &str, router: Router) -> Self {
        BuildContext { app: app.into(), deployment: deployment.into(), replica_id: replica_id.into(), router }
    }

    /// A handle to another deployment of the same application.
    pub fn handle(&self, deployment: &str) -> DeploymentHandle {
        self.router.handle(&self.app, deployment)
    }

    /// The replica's router (handles to any application's deployments).
    pub fn router(&self) -> &Router {
        &self.router
    }
}

/// A deployment's code: Ray's deployment class.
///
/// Lifecycle: built once per replica, then `reconfigure` with the `user_config` (before the
/// first request and again on every in-place update), `check_health` periodically, `call` for
/// every request, concurrently up to `max_ongoing_requests`.
#[async_trait::async_trait]
pub trait Deployment: Send + Sync + 'static {
    /// Handles one request (Ray's `__call__`, or a method called through a handle).
    async fn call(&self, request: Request) -> Result<Reply, DeploymentError>;

    /// Applies a new `user_config`. The default accepts none: as in Ray, setting a
    /// `user_config` on a deployment without `reconfigure` fails the replica's start.
    async fn reconfigure(&self, user_config: Option<&Value>) -> Result<(), DeploymentError> {
        match user_config {
            None => Ok(()),
            Some(_) => Err(DeploymentError("user_config is set but the deployment has no reconfigure method".into())),
        }
    }

    /// Reports health; an error counts as a failed health check.
    async fn check_health(&self) -> Result<(), DeploymentError> {
        Ok(())
    }

    /// A WebSocket handshake (an HTTP upgrade request): the reply answers it (101 accepts it,
    /// and the deployment then owns the connection `upgraded` yields). By default a deployment
    /// takes no WebSockets.
    async fn websocket(&self, request: Request, upgraded: Upgrade) -> Result<Reply, DeploymentError> {
        drop(upgraded);
        let mut reply = Reply::text(format!("{} does not accept WebSocket connections", request.path));
        reply.status = 400;
        Ok(reply)
    }

    /// Runs once the replica has drained, before the process ends (Ray calls `__del__`).
    async fn shutdown(&self) {}

    /// The multiplexed model ids the deployment holds or is loading, as they change; the
    /// replica reports them to the controller, whose routers then prefer this replica for them.
    fn model_ids(&self) -> Option<tokio::sync::watch::Receiver<Vec<String>>> {
        None
    }
}

/// Helper for handle calls that return a JSON value.
pub async fn call_handle(
    handle: &DeploymentHandle,
    method: &str,
    args: Value,
    request_id: &str,
) -> Result<Value, DeploymentError> {
    handle.call(method, args, request_id).await.map_err(|e| DeploymentError(e.to_string()))
}
