//! The one place where routing failures become front-door answers: an HTTP status and body
//! (Ray's texts, spec/ray-serve.md section 5.4) and a gRPC status code (section 6.4). Every
//! HTTP response the proxy makes itself carries a stable `x-photon-error` kind next to Ray's body.

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use photon_router::RouterError;

/// Errors of streamed bodies.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A response body: whole, or streamed from a replica.
pub type Body = UnsyncBoxBody<Bytes, BoxError>;

/// A whole body.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).map_err(|never| match never {}).boxed_unsync()
}

/// gRPC status codes used by the front doors.
#[allow(missing_docs)]
pub mod grpc_code {
    pub const OK: u16 = 0;
    pub const CANCELLED: u16 = 1;
    pub const INVALID_ARGUMENT: u16 = 3;
    pub const DEADLINE_EXCEEDED: u16 = 4;
    pub const NOT_FOUND: u16 = 5;
    pub const RESOURCE_EXHAUSTED: u16 = 8;
    pub const UNIMPLEMENTED: u16 = 12;
    pub const INTERNAL: u16 = 13;
    pub const UNAVAILABLE: u16 = 14;
}

/// The gRPC code and details of a routing failure.
pub fn grpc_status(e: &RouterError) -> (u16, String) {
    match e {
        RouterError::BackPressure { .. } => (grpc_code::RESOURCE_EXHAUSTED, e.to_string()),
        RouterError::Unavailable { .. } | RouterError::RetriesExhausted { .. } => {
            (grpc_code::UNAVAILABLE, e.to_string())
        }
        RouterError::Deployment(message) => {
            // Ray sends the exception text, truncated to 4096 characters.
            (grpc_code::INTERNAL, message.chars().take(4096).collect())
        }
        RouterError::ReplicaFailed { .. } | RouterError::BadResponse(_) => (grpc_code::INTERNAL, e.to_string()),
    }
}

const TEXT: &str = "text/plain; charset=utf-8";

/// A plain-text response.
pub fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    let mut r = Response::new(full(body));
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
            let mut r = Response::new(full(Bytes::from_static(b"Internal Server Error")));
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A failure; its HTTP status, kind, body, whether the connection closes and its
    /// `Retry-After`; its gRPC code and details.
    type Expected = (RouterError, u16, &'static str, &'static str, bool, Option<&'static str>, u16, String);

    /// Every routing failure, what each front door answers for it: HTTP status, kind, body,
    /// whether the connection closes, `Retry-After`; gRPC code and details (spec/ray-serve.md
    /// sections 5.4 and 6.4).
    #[tokio::test]
    async fn each_routing_failure_has_one_answer_per_front_door() {
        let backpressure = |status_code, retry_after_s| RouterError::BackPressure {
            num_queued: 4,
            max_queued: 4,
            status_code,
            retry_after_s,
        };
        let queued = "Request dropped due to backpressure (num_queued_requests=4, max_queued_requests=4).";
        let unavailable = "Deployment(name='D', app='a') is unavailable because it failed to deploy.";
        let long = "x".repeat(5000);
        #[rustfmt::skip]
        let table: Vec<Expected> = vec![
            (backpressure(503, None), 503, "backpressure", queued, false, None, grpc_code::RESOURCE_EXHAUSTED, queued.into()),
            (backpressure(429, Some(1.2)), 429, "backpressure", queued, false, Some("2"), grpc_code::RESOURCE_EXHAUSTED, queued.into()),
            (RouterError::Unavailable { app: "a".into(), deployment: "D".into() },
             503, "deployment_unavailable", unavailable, false, None, grpc_code::UNAVAILABLE, unavailable.into()),
            (RouterError::RetriesExhausted { deployment: "a#D".into(), attempts: 3 },
             503, "retries_exhausted", "no replica of a#D accepted the request after 3 attempts", false, None,
             grpc_code::UNAVAILABLE, "no replica of a#D accepted the request after 3 attempts".into()),
            (RouterError::Deployment(long.clone()),
             500, "deployment_error", "Internal Server Error", false, None, grpc_code::INTERNAL, "x".repeat(4096)),
            (RouterError::BadResponse("not pickle".into()),
             500, "bad_response", "Internal Server Error", false, None, grpc_code::INTERNAL, "bad response from deployment: not pickle".into()),
            (RouterError::ReplicaFailed { replica_id: "r1".into(), reason: "reset".into() },
             500, "replica_failed", "Internal Server Error", true, None,
             grpc_code::INTERNAL, "replica r1 failed while handling the request: reset".into()),
        ];
        for (error, status, kind, body, closes, retry_after, code, details) in table {
            let r = router_error(&error);
            assert_eq!(r.status().as_u16(), status, "{error:?}");
            assert_eq!(r.headers()["x-photon-error"], kind, "{error:?}");
            assert_eq!(is_bare(&r), closes, "{error:?}");
            assert_eq!(r.headers().get(header::RETRY_AFTER).map(|v| v.to_str().unwrap()), retry_after, "{error:?}");
            let text = r.into_body().collect().await.unwrap().to_bytes();
            assert_eq!(text, body.as_bytes(), "{error:?}");
            assert_eq!(grpc_status(&error), (code, details), "{error:?}");
        }
    }
}
