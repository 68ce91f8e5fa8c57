//! Replies shared by the model deployments: OpenAI-style JSON bodies and errors.

use bytes::Bytes;
use photon_replica::{DeploymentError, Reply};
use serde::Serialize;

/// A JSON body (`application/json`), serialised straight from `body` (floats as the shortest
/// text that reads back to the same `f32`).
pub fn json_reply(body: &impl Serialize) -> Result<Reply, DeploymentError> {
    let bytes = serde_json::to_vec(body).map_err(|e| DeploymentError(format!("could not encode the answer: {e}")))?;
    Ok(Reply::bytes(Bytes::from(bytes), Some(http::HeaderValue::from_static("application/json"))))
}

/// 400 with OpenAI's error shape: `{"error": {"message": ..., "type": "invalid_request_error"}}`.
pub fn bad_request(message: &str) -> Reply {
    let body = serde_json::json!({"error": {"message": message, "type": "invalid_request_error"}});
    let mut reply =
        Reply::bytes(Bytes::from(body.to_string()), Some(http::HeaderValue::from_static("application/json")));
    reply.status = 400;
    reply
}
