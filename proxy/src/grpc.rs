//! The gRPC front door (HTTP/2, h2c): Ray's built-in `ray.serve.RayServeAPIService`
//! (`ListApplications`, `Healthz`) and every other method of any service, routed to the
//! application named by the `application` metadata (or the only application) without decoding
//! the message: the ingress deployment gets the method name and the raw request message, and
//! its reply (one message, or a stream of them) goes back as is.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use photon_proto::ray::serve as ray;
use photon_router::guard::{busy_while, collect_body, BodyError, ConnectionGuard, ConnectionLimits, HEAD_TIMEOUT};
use photon_router::wire::{self, grpc_frame, Call};
use photon_router::Router;
use prost::Message;
use tokio::net::TcpListener;

use crate::metrics::{self, DoorMetrics, Target};
use crate::respond::{self, grpc_code, Body};

/// Options of the gRPC front door.
#[derive(Debug, Clone)]
pub struct GrpcConfig {
    /// Ray's `grpc_options.request_timeout_s`: DEADLINE_EXCEEDED when no response started in time.
    pub request_timeout: Option<Duration>,
    /// Largest request message.
    pub max_message_bytes: usize,
    /// This node's id (metric labels).
    pub node_id: String,
    /// One access-log line per request.
    pub access_log: bool,
    /// An idle connection (no call in progress) closes after this long.
    pub keep_alive: Duration,
    /// Connections open at once (`--max-connections`); more are closed at once.
    pub max_connections: usize,
}

impl Default for GrpcConfig {
    fn default() -> Self {
        GrpcConfig {
            request_timeout: None,
            max_message_bytes: photon_router::MAX_MESSAGE_BYTES,
            node_id: String::new(),
            access_log: true,
            keep_alive: Duration::from_secs(photon_config::defaults::KEEP_ALIVE_TIMEOUT_S),
            max_connections: photon_router::guard::DEFAULT_MAX_CONNECTIONS,
        }
    }
}

/// gRPC status code names, as Ray's metrics label them (and grpcio's `StatusCode` names them).
pub fn code_name(code: u16) -> &'static str {
    const NAMES: [&str; 17] = [
        "OK",
        "CANCELLED",
        "UNKNOWN",
        "INVALID_ARGUMENT",
        "DEADLINE_EXCEEDED",
        "NOT_FOUND",
        "ALREADY_EXISTS",
        "PERMISSION_DENIED",
        "RESOURCE_EXHAUSTED",
        "FAILED_PRECONDITION",
        "ABORTED",
        "OUT_OF_RANGE",
        "UNIMPLEMENTED",
        "INTERNAL",
        "UNAVAILABLE",
        "DATA_LOSS",
        "UNAUTHENTICATED",
    ];
    NAMES.get(code as usize).copied().unwrap_or("UNKNOWN")
}

struct GrpcProxy {
    router: Router,
    metrics: DoorMetrics,
    config: GrpcConfig,
}

/// Serves gRPC on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, router: Router, config: GrpcConfig) {
    let metrics = DoorMetrics::new(&metrics::GRPC, &config.node_id);
    let proxy = Arc::new(GrpcProxy { router, metrics, config });
    let builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    let guard = ConnectionGuard::new(ConnectionLimits::requests(proxy.config.max_connections, proxy.config.keep_alive));
    photon_router::accept_loop(listener, move |stream| {
        let (proxy, builder, guard) = (proxy.clone(), builder.clone(), guard.clone());
        async move {
            // Beyond the limit the connection is closed: a gRPC client sees it unavailable.
            let Ok((stream, activity)) = guard.admit(stream) else { return };
            let service = busy_while(activity, move |req| {
                let proxy = proxy.clone();
                async move { proxy.handle(req).await }
            });
            if let Err(e) = builder.serve_connection(TokioIo::new(stream), service).await {
                tracing::debug!(error = %e, "gRPC connection ended with an error");
            }
        }
    })
    .await
}

/// Percent-encodes `grpc-message` as the gRPC spec asks.
fn percent_encode(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    for b in message.bytes() {
        if (0x20..=0x7e).contains(&b) && b != b'%' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn status_headers(headers: &mut HeaderMap, code: u16, message: &str) {
    headers.insert("grpc-status", HeaderValue::from(code));
    if !message.is_empty() {
        if let Ok(v) = HeaderValue::from_str(&percent_encode(message)) {
            headers.insert("grpc-message", v);
        }
    }
}

fn grpc_response(body: Body) -> Response<Body> {
    let mut r = Response::new(body);
    r.headers_mut().insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    r
}

/// A trailers-only answer: no message, the status in the headers.
fn error(code: u16, message: &str, request_id: &str) -> Response<Body> {
    let mut r = grpc_response(respond::full(Bytes::new()));
    status_headers(r.headers_mut(), code, message);
    if let Ok(v) = HeaderValue::from_str(request_id) {
        r.headers_mut().insert("request_id", v);
    }
    r
}

/// One message, then OK trailers.
fn unary<M: Message>(message: &M, request_id: &str) -> Response<Body> {
    with_trailers(respond::full(grpc_frame::encode(&message.encode_to_vec())), request_id, Vec::new())
}

/// `body` (already framed messages), then trailers with OK, the request id and the
/// deployment's own trailing metadata.
fn with_trailers(body: Body, request_id: &str, extra: Vec<(HeaderName, HeaderValue)>) -> Response<Body> {
    let trailers = final_trailers(grpc_code::OK, "", request_id, extra);
    grpc_response(body.with_trailers(async move { Some(Ok(trailers)) }).boxed_unsync())
}

/// The trailers that end a call: status, message, request id, the deployment's metadata.
fn final_trailers(code: u16, message: &str, request_id: &str, extra: Vec<(HeaderName, HeaderValue)>) -> HeaderMap {
    let mut trailers = HeaderMap::new();
    status_headers(&mut trailers, code, message);
    if let Ok(v) = HeaderValue::from_str(request_id) {
        trailers.insert("request_id", v);
    }
    trailers.extend(extra);
    trailers
}

fn metadata<'a>(headers: &'a HeaderMap, key: &str) -> Option<&'a str> {
    headers.get(key).and_then(|v| v.to_str().ok()).filter(|v| !v.is_empty())
}

/// The status a deployment set: in a unary answer's headers, or in a stream's end
/// ([`wire::GrpcEnd::Status`]), in the same vocabulary.
struct DeploymentStatus {
    code: Option<u16>,
    details: String,
    trailing_metadata: Vec<(HeaderName, HeaderValue)>,
}

impl DeploymentStatus {
    fn read(headers: &HeaderMap) -> Self {
        let details = headers.get("grpc-message").map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
        DeploymentStatus {
            code: metadata(headers, "grpc-status").and_then(|c| c.parse::<u16>().ok()),
            details: details.unwrap_or_default(),
            trailing_metadata: headers
                .iter()
                .filter_map(|(k, v)| {
                    let key = k.as_str().strip_prefix(wire::GRPC_TRAILER_PREFIX)?;
                    Some((HeaderName::from_bytes(key.as_bytes()).ok()?, v.clone()))
                })
                .collect(),
        }
    }
}

/// A streamed answer on its way to the client: messages pass through, and its end becomes the
/// call's trailers: the status the deployment set while streaming, the error it raised
/// (INTERNAL, as a unary call's), a replica that broke off (INTERNAL), or else OK.
struct StreamedAnswer {
    inner: wire::AnswerBody,
    request_id: String,
    /// Trailing metadata the deployment sent with its answer's head.
    head_metadata: Vec<(HeaderName, HeaderValue)>,
    ended: bool,
}

impl StreamedAnswer {
    fn end(&mut self, code: u16, message: &str, metadata: Vec<(HeaderName, HeaderValue)>) -> hyper::body::Frame<Bytes> {
        self.ended = true;
        let mut extra = std::mem::take(&mut self.head_metadata);
        extra.extend(metadata);
        hyper::body::Frame::trailers(final_trailers(code, message, &self.request_id, extra))
    }

    fn end_with(&mut self, end: Option<wire::GrpcEnd>) -> hyper::body::Frame<Bytes> {
        match end {
            Some(wire::GrpcEnd::Status(headers)) => {
                let status = DeploymentStatus::read(&headers);
                self.end(status.code.unwrap_or(grpc_code::OK), &status.details, status.trailing_metadata)
            }
            Some(wire::GrpcEnd::Error(message)) => {
                let (code, message) = respond::grpc_status(&photon_router::RouterError::Deployment(message));
                self.end(code, &message, Vec::new())
            }
            None => self.end(grpc_code::OK, "", Vec::new()),
        }
    }
}

impl hyper::body::Body for StreamedAnswer {
    type Data = Bytes;
    type Error = respond::BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
        use std::task::Poll;
        if self.ended {
            return Poll::Ready(None);
        }
        let frame = match std::pin::Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Some(Ok(frame))) => match frame.into_trailers() {
                Ok(trailers) => {
                    let end = trailers.get(wire::GRPC_END).and_then(wire::GrpcEnd::from_header);
                    self.end_with(end)
                }
                Err(data) => return Poll::Ready(Some(Ok(data))),
            },
            Poll::Ready(None) => self.end_with(None),
            Poll::Ready(Some(Err(e))) => self.end(
                grpc_code::INTERNAL,
                &format!("The replica failed while streaming the response: {e}"),
                Vec::new(),
            ),
        };
        Poll::Ready(Some(Ok(frame)))
    }
}

impl GrpcProxy {
    async fn handle(&self, req: Request<Incoming>) -> Response<Body> {
        let request_id = metadata(req.headers(), "request_id").map(str::to_string).unwrap_or_else(crate::http::uuid4);
        let in_flight = self.metrics.start();
        let path = req.uri().path().to_string();
        let mut target = Target::default();
        let response = self.dispatch(req, &path, &request_id, &mut target).await;
        let label = crate::metrics::grpc_method_label(&path, !target.application.is_empty());
        target.route.clone_from(&label);
        // A trailers-only answer carries its status in the headers; others end with OK.
        let code = response
            .headers()
            .get("grpc-status")
            .and_then(|v| v.to_str().ok()?.parse::<u16>().ok())
            .unwrap_or(grpc_code::OK);
        in_flight.finish(&target, &label, code_name(code), code != grpc_code::OK);
        if self.config.access_log {
            tracing::info!(request_id = %request_id, application = %target.application, "gRPC {path} {}", code_name(code));
        }
        response
    }

    async fn dispatch(
        &self,
        req: Request<Incoming>,
        path: &str,
        request_id: &str,
        target: &mut Target,
    ) -> Response<Body> {
        let request_id = request_id.to_string();
        match path {
            "/ray.serve.RayServeAPIService/Healthz" => {
                if !self.router.is_ready() {
                    return error(grpc_code::UNAVAILABLE, "Route table is not populated yet.", &request_id);
                }
                unary(&ray::HealthzResponse { message: "success".into() }, &request_id)
            }
            "/ray.serve.RayServeAPIService/ListApplications" => {
                if !self.router.is_ready() {
                    return error(grpc_code::UNAVAILABLE, "Route table is not populated yet.", &request_id);
                }
                let names = self.router.snapshot().apps.iter().map(|a| a.app.clone()).collect();
                unary(&ray::ListApplicationsResponse { application_names: names }, &request_id)
            }
            _ => self.route(req, path, &request_id, target).await,
        }
    }

    async fn route(&self, req: Request<Incoming>, path: &str, request_id: &str, target: &mut Target) -> Response<Body> {
        let Some(method) = path.rsplit('/').next().filter(|m| !m.is_empty()) else {
            return error(
                grpc_code::UNIMPLEMENTED,
                &format!("Method path {path:?} is not /package.Service/Method"),
                request_id,
            );
        };
        // Apps without a route prefix are not reachable over gRPC, as in Ray.
        let snapshot = self.router.snapshot();
        let exposed: Vec<&photon_router::Route> = snapshot.apps.iter().filter(|a| a.route_prefix.is_some()).collect();
        let wanted = metadata(req.headers(), "application");
        let route = match (exposed.as_slice(), wanted) {
            ([only], _) => *only,
            (_, None) => {
                return error(
                    grpc_code::NOT_FOUND,
                    "Application metadata not set. Ping /ray.serve.RayServeAPIService/ListApplications for available applications.",
                    request_id,
                )
            }
            (apps, Some(name)) => match apps.iter().find(|a| a.app == name) {
                Some(r) => *r,
                None => {
                    return error(
                        grpc_code::NOT_FOUND,
                        &format!("Application '{name}' not found. Ping /ray.serve.RayServeAPIService/ListApplications for available applications."),
                        request_id,
                    )
                }
            },
        };
        let ingress = route.ingress.clone();
        target.application = route.app.clone();
        target.deployment = ingress.id().name.clone();
        drop(snapshot);

        let (parts, body) = req.into_parts();
        // The message's share of the process's budget is held until the call is done.
        let (body, _held) =
            match collect_body(body, self.config.max_message_bytes.saturating_add(5), HEAD_TIMEOUT).await {
                Ok(collected) => (collected.bytes, collected.reservation),
                Err(e) => {
                    let code = match e {
                        BodyError::Stalled(_) => grpc_code::DEADLINE_EXCEEDED,
                        _ => grpc_code::RESOURCE_EXHAUSTED,
                    };
                    return error(code, &format!("request too large or unreadable: {e}"), request_id);
                }
            };
        let message = match grpc_frame::decode_all(body) {
            Ok(messages) if messages.len() == 1 => messages.into_iter().next().unwrap_or_default(),
            Ok(messages) => {
                return error(
                    grpc_code::UNIMPLEMENTED,
                    &format!(
                        "expected one request message, got {} (client streaming is not supported)",
                        messages.len()
                    ),
                    request_id,
                )
            }
            Err(what) => return error(grpc_code::INVALID_ARGUMENT, what, request_id),
        };
        let mut headers = parts.headers;
        wire::strip_hop_by_hop(&mut headers);
        wire::strip_internal(&mut headers);
        // The replica sends a stream's status as an HTTP/1.1 trailer, which it may only do when
        // asked so.
        headers.insert(http::header::TE, HeaderValue::from_static("trailers"));
        headers.insert(wire::PROTOCOL, HeaderValue::from_static(wire::PROTOCOL_GRPC));
        let call = Call {
            request_id: request_id.to_string(),
            method: method.to_string(),
            http_method: http::Method::POST,
            path_and_query: path.to_string(),
            headers,
            body: message,
            route_prefix: String::new(),
        };
        let result = match self.config.request_timeout {
            Some(limit) => match tokio::time::timeout(limit, ingress.call(call)).await {
                Ok(result) => result,
                Err(_) => {
                    let text = format!("Request timed out after {}s.", crate::http::seconds(limit));
                    return error(grpc_code::DEADLINE_EXCEEDED, &text, request_id);
                }
            },
            None => ingress.call(call).await,
        };
        match result {
            Ok(answer) => {
                let status = DeploymentStatus::read(&answer.headers);
                match status.code {
                    // The deployment set a failing status: a trailers-only answer.
                    Some(code) if code != grpc_code::OK => {
                        let mut r = error(code, &status.details, request_id);
                        r.headers_mut().extend(status.trailing_metadata);
                        r
                    }
                    _ => grpc_response(
                        StreamedAnswer {
                            inner: answer.body,
                            request_id: request_id.to_string(),
                            head_metadata: status.trailing_metadata,
                            ended: false,
                        }
                        .boxed_unsync(),
                    ),
                }
            }
            Err(e) => {
                tracing::warn!(request_id, deployment = %ingress.id(), error = %e, "gRPC request failed");
                let (code, message) = respond::grpc_status(&e);
                error(code, &message, request_id)
            }
        }
    }
}
