//! The replica's data port: requests arrive as plain HTTP/1.1 (the wire format of
//! `photon_router::wire`), pass the admission check, run in the deployment, and go back as the
//! HTTP response. A connection that closes mid-request (the caller gave up) drops the handler
//! future, which cancels the deployment's work.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::TokioIo;
use photon_router::guard::{
    busy_while, collect_body, BodyError, ConnectionGuard, ConnectionLimits, DEFAULT_MAX_CONNECTIONS, HEAD_TIMEOUT,
};
use photon_router::wire;
use photon_router::wire::grpc_frame;
use tokio::net::TcpListener;
use tokio_stream::StreamExt;

use crate::deployment::{self, DeploymentError, Piece, Protocol, ReplyBody};
use crate::server::ServingState;

type Body = UnsyncBoxBody<Bytes, DeploymentError>;

fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).map_err(|never| match never {}).boxed_unsync()
}

/// Serves the data port until the task is dropped.
pub async fn serve(listener: TcpListener, state: Arc<ServingState>) {
    // Routers keep idle connections for 60 s (`photon_router::new_pool`): the replica keeps them
    // longer, so that it is never the one closing a connection a router is about to reuse.
    let limits = ConnectionLimits::requests(DEFAULT_MAX_CONNECTIONS, Duration::from_secs(90));
    let guard = ConnectionGuard::new(limits);
    // No larger than the largest body a front door forwards.
    let max_message = photon_router::replica_max_message_bytes();
    photon_router::accept_loop(listener, move |stream| {
        let (state, guard) = (state.clone(), guard.clone());
        async move {
            let Ok((stream, activity)) = guard.admit(stream) else { return };
            let service = busy_while(activity, move |req| {
                let state = state.clone();
                async move { handle(&state, req, max_message).await }
            });
            let connection = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service);
            let _ = connection.with_upgrades().await;
        }
    })
    .await
}

fn outcome(status: StatusCode, kind: &'static str, body: impl Into<Bytes>) -> Response<Body> {
    let mut r = Response::new(full(body));
    *r.status_mut() = status;
    r.headers_mut().insert(wire::OUTCOME, HeaderValue::from_static(kind));
    r
}

/// A streamed reply's pieces as body frames. Over gRPC each chunk is one framed message, and
/// the stream ends with the [`wire::GRPC_END`] trailer: the deployment's status, or the error
/// it raised mid-stream (which a gRPC client must see as a status, not as a broken stream).
/// Over HTTP a raised error breaks the response off, as Ray's proxy does.
fn stream_frames(
    pieces: deployment::ChunkStream,
    grpc: bool,
) -> impl tokio_stream::Stream<Item = Result<Frame<Bytes>, DeploymentError>> {
    let mut ended = false;
    pieces.filter_map(move |piece| {
        if ended {
            return None; // nothing follows the trailers
        }
        let end = match piece {
            Ok(Piece::Chunk(c)) => return Some(Ok(Frame::data(if grpc { grpc_frame::encode(&c) } else { c }))),
            Ok(Piece::GrpcStatus(_)) if !grpc => return None,
            Ok(Piece::GrpcStatus(status)) => wire::GrpcEnd::Status(status),
            Err(e) if !grpc => return Some(Err(e)),
            Err(e) => wire::GrpcEnd::Error(e.0),
        };
        ended = true;
        let mut trailers = http::HeaderMap::new();
        trailers.insert(wire::GRPC_END, end.to_header());
        Some(Ok(Frame::trailers(trailers)))
    })
}

fn header_string(headers: &mut http::HeaderMap, name: &http::HeaderName) -> Option<String> {
    headers.remove(name).and_then(|v| v.to_str().ok().map(str::to_string))
}

async fn handle(state: &Arc<ServingState>, mut req: Request<Incoming>, max_message: usize) -> Response<Body> {
    // Only Photon's processes may call a replica; the deployment never sees the token.
    if !photon_router::cluster_auth::take(req.headers_mut()) {
        return outcome(StatusCode::UNAUTHORIZED, wire::OUTCOME_FAILED, "missing or wrong Photon cluster token");
    }
    let Some(admission) = state.admit() else {
        return outcome(
            StatusCode::SERVICE_UNAVAILABLE,
            wire::OUTCOME_REJECTED,
            "replica is at max_ongoing_requests or draining",
        );
    };
    let upgrade = wire::is_websocket(req.headers()).then(|| hyper::upgrade::on(&mut req));
    let (mut parts, body) = req.into_parts();
    let (body, _held) = match collect_body(body, max_message, HEAD_TIMEOUT).await {
        Ok(collected) => (collected.bytes, collected.reservation),
        // Not started: the router may try another replica.
        Err(e @ BodyError::OverBudget(_)) => {
            return outcome(StatusCode::SERVICE_UNAVAILABLE, wire::OUTCOME_REJECTED, e.to_string())
        }
        Err(e) => {
            return outcome(StatusCode::BAD_REQUEST, wire::OUTCOME_ERROR, format!("could not read the request: {e}"))
        }
    };
    let started = std::time::Instant::now();
    let route = header_string(&mut parts.headers, &wire::ROUTE_PREFIX).unwrap_or_default();
    let request_id = header_string(&mut parts.headers, &wire::REQUEST_ID).unwrap_or_default();
    let protocol = match header_string(&mut parts.headers, &wire::PROTOCOL).as_deref() {
        Some(wire::PROTOCOL_GRPC) => Protocol::Grpc,
        _ => Protocol::Http,
    };
    let method = header_string(&mut parts.headers, &wire::METHOD).unwrap_or_else(|| "__call__".to_string());
    wire::strip_hop_by_hop(&mut parts.headers);
    let request = deployment::Request {
        protocol,
        request_id,
        method,
        http_method: parts.method.as_str().to_string(),
        path: parts.uri.path().to_string(),
        route_prefix: route.clone(),
        query: parts.uri.query().unwrap_or_default().to_string(),
        headers: parts.headers,
        body,
    };
    let request_id = request.request_id.clone();
    let (log_method, log_path) = (request.method.clone(), request.path.clone());
    let (result, admission) = match upgrade {
        // An open WebSocket keeps its request slot, as Ray counts it an ongoing request.
        Some(on_upgrade) => (
            state
                .deployment()
                .websocket(request, deployment::Upgrade::new(on_upgrade, deployment::RequestSlot::new(admission)))
                .await,
            None,
        ),
        None => (state.deployment().call(request).await, Some(admission)),
    };
    state.metrics().record(&route, started.elapsed(), result.as_ref().err().map(|e| e.0.as_str()));
    if state.access_log() {
        let outcome = match &result {
            Ok(reply) => reply.status.to_string(),
            Err(_) => "ERROR".to_string(),
        };
        let ms = started.elapsed().as_secs_f64() * 1000.0;
        // Request tasks run outside the replica's span (entering a span on every poll costs more
        // than naming the replica here), so the line names it itself.
        let [app, deployment, replica] = state.metrics().labels();
        tracing::info!(request_id = %request_id, app = %app, deployment = %deployment, replica = %replica, "{log_method} {log_path} {outcome} {ms:.1}ms");
    }
    match result {
        Ok(reply) => {
            let grpc = protocol == Protocol::Grpc;
            let streamed = matches!(reply.body, ReplyBody::Stream(_));
            let body = match reply.body {
                ReplyBody::Full(b) if grpc => full(grpc_frame::encode(&b)),
                ReplyBody::Full(b) => full(b),
                ReplyBody::Stream(pieces) => {
                    // The admission slot lives as long as the stream.
                    let slot = admission;
                    let frames = stream_frames(pieces, grpc).map(move |f| {
                        let _ = &slot;
                        f
                    });
                    StreamBody::new(frames).boxed_unsync()
                }
            };
            let mut r = Response::new(body);
            *r.status_mut() = StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            *r.headers_mut() = reply.headers;
            if grpc && streamed {
                r.headers_mut().insert(http::header::TRAILER, HeaderValue::from(wire::GRPC_END));
            }
            r
        }
        Err(e) => {
            let [app, deployment, replica] = state.metrics().labels();
            tracing::error!(request_id = %request_id, app = %app, deployment = %deployment, replica = %replica, error = %e, "deployment raised an error");
            outcome(StatusCode::INTERNAL_SERVER_ERROR, wire::OUTCOME_ERROR, e.0)
        }
    }
}
