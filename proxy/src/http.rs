//! The HTTP front door (hyper, HTTP/1.1 keep-alive and h2c): built-in endpoints, longest-prefix
//! routing, request ids, body limit, and the hand-off to the ingress deployment's queue.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use http::{header, HeaderName, HeaderValue, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use photon_router::guard::{
    collect_body, BodyError, ConnectionGuard, ConnectionLimits, RequestInProgress, HEAD_TIMEOUT,
};
use photon_router::wire::{self, Answer, Call};
use photon_router::Router;
use tokio::net::TcpListener;

use crate::metrics::{self, DoorMetrics, Target};
use crate::respond::{self, Body};

/// Options of the HTTP front door.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// Ray's `http_options.root_path`: prepended to the path the application sees.
    pub root_path: String,
    /// Larger request bodies are answered with 413.
    pub max_body_bytes: usize,
    /// Ray's `http_options.request_timeout_s`: 408 when no response has started in time.
    pub request_timeout: Option<Duration>,
    /// This node's id (metric labels).
    pub node_id: String,
    /// One access-log line per request (`logging_config.enable_access_log`).
    pub access_log: bool,
    /// Ray's `http_options.keep_alive_timeout_s`: an idle connection closes after it.
    pub keep_alive: Duration,
    /// Connections open at once (`--max-connections`); more are refused with 503.
    pub max_connections: usize,
}

impl HttpConfig {
    fn connection_limits(&self) -> ConnectionLimits {
        ConnectionLimits::requests(self.max_connections, self.keep_alive)
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            root_path: String::new(),
            max_body_bytes: photon_router::DEFAULT_MAX_BODY_BYTES,
            request_timeout: None,
            node_id: String::new(),
            access_log: true,
            keep_alive: Duration::from_secs(photon_config::defaults::KEEP_ALIVE_TIMEOUT_S),
            max_connections: photon_router::guard::DEFAULT_MAX_CONNECTIONS,
        }
    }
}

/// `30.0`, `0.5`: seconds as Python prints a float (Ray's timeout messages).
pub(crate) fn seconds(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s.fract() == 0.0 {
        format!("{s:.1}")
    } else {
        format!("{s}")
    }
}

/// The timeout of one request: `x-request-timeout-seconds` (> 0: that many seconds, <= 0: none,
/// unparsable or too large for a duration, such as `inf`: the default), else the configured one.
fn timeout_for(headers: &http::HeaderMap, default: Option<Duration>) -> Option<Duration> {
    match headers.get("x-request-timeout-seconds").and_then(|v| v.to_str().ok()?.trim().parse::<f64>().ok()) {
        Some(s) if s > 0.0 => Duration::try_from_secs_f64(s).ok().or(default),
        Some(s) if s <= 0.0 => None,
        _ => default,
    }
}

/// Largest request head.
const MAX_HEAD_BYTES: usize = 64 << 10;

struct Proxy {
    router: Router,
    metrics: DoorMetrics,
    config: HttpConfig,
}

/// Serves HTTP on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, router: Router, config: HttpConfig) {
    let guard = ConnectionGuard::new(config.connection_limits());
    serve_guarded(listener, router, config, guard).await
}

/// [`serve`] within `guard`'s limits (shared by the threads serving one port).
async fn serve_guarded(listener: TcpListener, router: Router, config: HttpConfig, guard: ConnectionGuard) {
    let metrics = DoorMetrics::new(&metrics::HTTP, &config.node_id);
    let proxy = Arc::new(Proxy { router, metrics, config });
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    // A request head fits in MAX_HEAD_BYTES (hyper answers 431 above it); how long it and the
    // idle time between requests may take is the guard's to enforce.
    builder.http1().timer(hyper_util::rt::TokioTimer::new()).header_read_timeout(None).max_buf_size(MAX_HEAD_BYTES);
    photon_router::accept_loop(listener, move |stream| {
        let (proxy, builder, guard) = (proxy.clone(), builder.clone(), guard.clone());
        async move {
            let (stream, activity) = match guard.admit(stream) {
                Ok(admitted) => admitted,
                Err(stream) => return photon_router::guard::refuse_http(stream, guard.limits().max_connections).await,
            };
            let service = hyper::service::service_fn(move |req| {
                let (proxy, request) = (proxy.clone(), activity.request());
                async move { Ok::<_, Infallible>(proxy.handle(req, request).await) }
            });
            if let Err(e) = builder.serve_connection_with_upgrades(TokioIo::new(stream), service).await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        }
    })
    .await
}

/// A random UUID4, as Ray generates request ids.
pub(crate) fn uuid4() -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut b: [u8; 16] = fastrand::u128(..).to_le_bytes();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let mut out = String::with_capacity(36);
    for (i, byte) in b.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            out.push('-');
        }
        out.push(HEX[usize::from(byte >> 4)] as char);
        out.push(HEX[usize::from(byte & 0x0f)] as char);
    }
    out
}

static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

impl Proxy {
    /// Answers one request; `in_progress` marks the connection busy until the answer is ready
    /// (for a WebSocket, until the joined connections close).
    async fn handle(&self, req: Request<Incoming>, in_progress: RequestInProgress) -> Response<Body> {
        let request_id =
            req.headers().get(&X_REQUEST_ID).and_then(|v| v.to_str().ok()).map(str::to_string).unwrap_or_else(uuid4);
        let in_flight = self.metrics.start();
        let method = req.method().clone();
        let path = req.uri().path().to_string();
        let mut target = Target::default();
        let mut response = self.route(req, &request_id, &mut target, in_progress).await;
        let status = response.status();
        in_flight.finish(&target, metrics::method_label(&method), status.as_str(), status.as_u16() >= 400);
        if self.config.access_log {
            tracing::info!(request_id = %request_id, application = %target.application, "{method} {path} {}", status.as_u16());
        }
        if !respond::is_bare(&response) {
            if let Ok(v) = HeaderValue::from_str(&request_id) {
                response.headers_mut().insert(X_REQUEST_ID.clone(), v);
            }
        }
        response
    }

    async fn route(
        &self,
        mut req: Request<Incoming>,
        request_id: &str,
        target: &mut Target,
        in_progress: RequestInProgress,
    ) -> Response<Body> {
        // Matched as Ray's proxy matches it: percent-decoded (the replica decodes it for the
        // application too), otherwise as it came.
        let path = photon_router::matcher::decoded_path(req.uri().path()).into_owned();
        match path.as_str() {
            "/-/healthz" => {
                target.route = path;
                return self.healthz();
            }
            "/-/routes" => {
                target.route = path;
                return self.routes();
            }
            _ => {}
        }
        let snapshot = self.router.snapshot();
        let full_path = format!("{}{}", self.config.root_path, path);
        let Some(route) = snapshot.match_path(&path) else {
            return respond::text(
                StatusCode::NOT_FOUND,
                format!("Path '{full_path}' not found. Ping http://.../-/routes for available routes."),
            );
        };
        let timeout = timeout_for(req.headers(), self.config.request_timeout);
        let ingress = route.ingress.clone();
        let route_prefix = route.route_prefix.clone().unwrap_or_default();
        target.application = route.app.clone();
        target.route = route_prefix.clone();
        target.deployment = ingress.id().name.clone();
        drop(snapshot);

        if let Some(len) = req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
        {
            if len > self.config.max_body_bytes as u64 {
                return self.too_large();
            }
        }
        // A WebSocket handshake goes to the replica as it is; once the replica has accepted it,
        // the two upgraded connections are joined byte for byte.
        let client_upgrade = wire::is_websocket(req.headers()).then(|| hyper::upgrade::on(&mut req));
        let (parts, body) = req.into_parts();
        // The body's share of the process's budget is held until the call is done.
        let (body, _held) = match collect_body(body, self.config.max_body_bytes, HEAD_TIMEOUT).await {
            Ok(collected) => (collected.bytes, collected.reservation),
            Err(BodyError::TooLarge(_)) => return self.too_large(),
            Err(e @ BodyError::OverBudget(_)) => return respond::text(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
            Err(e @ BodyError::Stalled(_)) => return respond::text(StatusCode::REQUEST_TIMEOUT, e.to_string()),
            Err(e) => return respond::text(StatusCode::BAD_REQUEST, format!("Could not read the request body: {e}")),
        };
        let (mut parts, body) = (parts, body);
        wire::strip_hop_by_hop(&mut parts.headers);
        wire::strip_internal(&mut parts.headers);
        if client_upgrade.is_some() {
            wire::keep_websocket_upgrade(&mut parts.headers);
        }
        // The replica gets the path as it came (a URI), and decodes it for the application.
        let forwarded = format!("{}{}", self.config.root_path, parts.uri.path());
        let path_and_query = match parts.uri.query() {
            Some(q) => format!("{forwarded}?{q}"),
            None => forwarded,
        };
        let call = Call {
            request_id: request_id.to_string(),
            method: "__call__".to_string(),
            http_method: parts.method,
            path_and_query,
            headers: parts.headers,
            body,
            route_prefix,
        };
        let result = match timeout {
            Some(limit) => match tokio::time::timeout(limit, ingress.call(call)).await {
                Ok(result) => result,
                Err(_) => {
                    tracing::warn!(request_id, deployment = %ingress.id(), "request timed out");
                    return respond::text(
                        StatusCode::REQUEST_TIMEOUT,
                        format!("Request {request_id} timed out after {}s.", seconds(limit)),
                    );
                }
            },
            None => ingress.call(call).await,
        };
        match result {
            Ok(mut reply) => {
                if let (Some(client), Some(replica)) = (client_upgrade, reply.upgrade.take()) {
                    tokio::spawn(async move {
                        join_upgraded(client, replica).await;
                        drop(in_progress);
                    });
                }
                to_response(reply)
            }
            Err(e) => {
                tracing::warn!(request_id, deployment = %ingress.id(), error = %e, "request failed");
                respond::router_error(&e)
            }
        }
    }

    fn too_large(&self) -> Response<Body> {
        respond::text(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("Request body is larger than the limit of {} bytes.", self.config.max_body_bytes),
        )
    }

    fn healthz(&self) -> Response<Body> {
        if self.router.is_ready() {
            respond::text(StatusCode::OK, "success")
        } else {
            respond::text(StatusCode::SERVICE_UNAVAILABLE, "Route table is not populated yet.")
        }
    }

    fn routes(&self) -> Response<Body> {
        if !self.router.is_ready() {
            return respond::text(StatusCode::SERVICE_UNAVAILABLE, "Route table is not populated yet.");
        }
        let snapshot = self.router.snapshot();
        let mut map = serde_json::Map::new();
        for r in &snapshot.apps {
            if let Some(prefix) = &r.route_prefix {
                map.insert(prefix.clone(), serde_json::Value::String(r.app.clone()));
            }
        }
        let mut r = Response::new(respond::full(serde_json::Value::Object(map).to_string()));
        r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        r
    }
}

/// Copies bytes both ways between a client's and a replica's upgraded connections until either
/// side closes.
async fn join_upgraded(client: hyper::upgrade::OnUpgrade, replica: hyper::upgrade::OnUpgrade) {
    let (client, replica) = match tokio::join!(client, replica) {
        (Ok(c), Ok(r)) => (c, r),
        (Err(e), _) | (_, Err(e)) => {
            tracing::debug!(error = %e, "WebSocket upgrade did not complete");
            return;
        }
    };
    let (mut client, mut replica) = (TokioIo::new(client), TokioIo::new(replica));
    if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut replica).await {
        tracing::debug!(error = %e, "WebSocket connection ended with an error");
    }
}

fn to_response(answer: Answer) -> Response<Body> {
    let mut r = Response::new(answer.body.map_err(respond::BoxError::from).boxed_unsync());
    *r.status_mut() = answer.status;
    *r.headers_mut() = answer.headers;
    r
}

/// Serves HTTP on `addr` from `threads` OS threads, each with its own single-threaded runtime
/// and `SO_REUSEPORT` listener (`photon_router::serve_on_threads`). Returns the address bound.
pub fn serve_on_threads(
    addr: std::net::SocketAddr,
    threads: usize,
    router: Router,
    config: HttpConfig,
) -> std::io::Result<std::net::SocketAddr> {
    let guard = ConnectionGuard::new(config.connection_limits());
    photon_router::serve_on_threads(addr, threads, "photon-http", move |listener| {
        serve_guarded(listener, router.clone(), config.clone(), guard.clone())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_timeout_headers_never_panic() {
        let default = Some(Duration::from_secs(5));
        let with = |v: &str| {
            let mut h = http::HeaderMap::new();
            h.insert("x-request-timeout-seconds", v.parse().unwrap());
            timeout_for(&h, default)
        };
        assert_eq!(with("1.5"), Some(Duration::from_millis(1500)));
        assert_eq!(with("0"), None);
        for odd in ["inf", "1e20", "NaN", "-inf", "soon"] {
            let got = with(odd);
            assert!(got == default || got.is_none(), "{odd}: {got:?}");
        }
        assert_eq!(with("inf"), default);
        assert_eq!(with("1e20"), default);
    }
}
