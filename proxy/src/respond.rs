//! The one place where routing failures become HTTP responses (Ray's status codes and texts,
//! spec/ray-serve.md section 5.4). Every response the proxy makes itself carries a stable
//! `x-photon-error` kind next to Ray's body.

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use http_body_util::Full;
use photon_router::RouterError;

/// A response body.
pub type Body = Full<Bytes>;

const TEXT: &str = "text/plain; charset=utf-8";

/// A plain-text response.
pub fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(TEXT));
    r
}

fn with_kind(mut r: Response<Body>, kind: &'static str) -> Response<Body> {
    r.headers_mut().insert("x-photon-error", HeaderValue::from_static(kind));
    r
}

/// Whether the response must go out without `x-request-id` (Ray's bare 500 from the server
/// layer when a replica died mid-request).
pub fn is_bare(r: &Response<Body>) -> bool {
    r.headers().get(header::CONNECTION).is_some_and(|v| v == "close")
}

/// Renders a routing failure.
pub fn router_error(e: &RouterError) -> Response<Body> {
    let kind = e.kind();
    match e {
        RouterError::BackPressure { status_code, retry_after_s, .. } => {
            let status = StatusCode::from_u16(*status_code).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
            let mut r = text(status, e.to_string());
            if let Some(after) = retry_after_s {
                if let Ok(v) = HeaderValue::from_str(&(after.ceil() as u64).to_string()) {
                    r.headers_mut().insert(header::RETRY_AFTER, v);
                }
            }
            with_kind(r, kind)
        }
        RouterError::Unavailable { .. } | RouterError::RetriesExhausted { .. } => {
            with_kind(text(StatusCode::SERVICE_UNAVAILABLE, e.to_string()), kind)
        }
        RouterError::Deployment(_) | RouterError::BadResponse(_) => {
            // Ray answers a raising handler with a bare 21-byte body and no content type.
            let mut r = Response::new(Full::new(Bytes::from_static(b"Internal Server Error")));
            *r.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
            with_kind(r, kind)
        }
        RouterError::ReplicaFailed { .. } => {
            let mut r = text(StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error");
            r.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
            with_kind(r, kind)
        }
    }
}
