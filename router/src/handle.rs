//! `DeploymentHandle`: how one deployment calls another (Ray's `handle.method.remote(...)`),
//! through the same queue, limits and retries as the proxy's requests.

use std::sync::Arc;

use bytes::Bytes;
use serde_json::Value;

use crate::error::RouterError;
use crate::queue::DeploymentQueue;
use crate::wire::{Answer, Call};

/// Calls one deployment; cheap to clone.
#[derive(Clone)]
pub struct DeploymentHandle {
    queue: Arc<DeploymentQueue>,
}

impl DeploymentHandle {
    pub(crate) fn new(queue: Arc<DeploymentQueue>) -> Self {
        DeploymentHandle { queue }
    }

    /// Calls `method` with JSON-encoded positional `args`; returns the method's JSON result.
    /// `request_id` ties the call to the request that caused it.
    pub async fn call(&self, method: &str, args: Value, request_id: &str) -> Result<Value, RouterError> {
        let body = serde_json::to_vec(&args).map_err(|e| RouterError::BadResponse(e.to_string()))?;
        let answer = self.queue.call(Call::handle(method, Bytes::from(body), request_id)).await?;
        if answer.status != http::StatusCode::OK {
            return Err(RouterError::Deployment(format!("{method} answered status {}", answer.status)));
        }
        let body = answer.body.collect().await.map_err(|e| RouterError::ReplicaFailed {
            replica_id: String::new(),
            reason: format!("response body: {e}"),
        })?;
        serde_json::from_slice(&body).map_err(|e| RouterError::BadResponse(e.to_string()))
    }

    /// Sends a raw call (front doors use this for the ingress).
    pub async fn call_raw(&self, call: Call) -> Result<Answer, RouterError> {
        self.queue.call(call).await
    }
}
