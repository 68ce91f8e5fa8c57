//! `DeploymentHandle`: how one deployment calls another (Ray's `handle.method.remote(...)`),
//! through the same queue, limits and retries as the proxy's requests.

use std::sync::Arc;

use photon_proto::v1 as pb;
use serde_json::Value;

use crate::error::RouterError;
use crate::queue::DeploymentQueue;

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
        let request = pb::CallRequest {
            request_id: request_id.to_string(),
            method: method.to_string(),
            body: body.into(),
            ..Default::default()
        };
        let response = self.queue.call(request).await?;
        if response.status != 200 {
            return Err(RouterError::Deployment(format!("{method} answered status {}", response.status)));
        }
        serde_json::from_slice(&response.body).map_err(|e| RouterError::BadResponse(e.to_string()))
    }

    /// Sends a raw request (front doors use this for the ingress).
    pub async fn call_raw(&self, request: pb::CallRequest) -> Result<pb::CallResponse, RouterError> {
        self.queue.call(request).await
    }
}
