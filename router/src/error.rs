//! Why a request routed to a deployment did not get an answer. No HTTP or gRPC rendering here:
//! each front door maps these once (`proxy::respond`).

/// A routing failure; `kind()` is the stable name used in logs, headers and metrics.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RouterError {
    /// The caller's queue for the deployment already holds `max_queued_requests`.
    #[error(
        "Request dropped due to backpressure (num_queued_requests={num_queued}, max_queued_requests={max_queued})."
    )]
    BackPressure {
        /// Requests waiting when this one arrived.
        num_queued: usize,
        /// The deployment's limit.
        max_queued: u64,
        /// HTTP status to answer with (503, or 429 by `backpressure_config`).
        status_code: u16,
        /// `Retry-After` seconds, if configured.
        retry_after_s: Option<f64>,
    },
    /// The deployment failed to deploy and has no running replica, or was deleted.
    #[error("Deployment(name='{deployment}', app='{app}') is unavailable because it failed to deploy.")]
    Unavailable {
        /// Application name.
        app: String,
        /// Deployment name.
        deployment: String,
    },
    /// The replica failed (died, or its connection broke) after it had accepted the request.
    #[error("replica {replica_id} failed while handling the request: {reason}")]
    ReplicaFailed {
        /// Which replica.
        replica_id: String,
        /// What the transport said.
        reason: String,
    },
    /// The deployment's code raised an error.
    #[error("deployment error: {0}")]
    Deployment(String),
    /// The request could not be sent to any replica within the retry budget.
    #[error("no replica of {deployment} accepted the request after {attempts} attempts")]
    RetriesExhausted {
        /// `app#deployment`.
        deployment: String,
        /// Attempts made.
        attempts: u32,
    },
    /// The response could not be decoded (handle calls).
    #[error("bad response from deployment: {0}")]
    BadResponse(String),
}

impl RouterError {
    /// Stable name of the failure class.
    pub fn kind(&self) -> &'static str {
        match self {
            RouterError::BackPressure { .. } => "backpressure",
            RouterError::Unavailable { .. } => "deployment_unavailable",
            RouterError::ReplicaFailed { .. } => "replica_failed",
            RouterError::Deployment(_) => "deployment_error",
            RouterError::RetriesExhausted { .. } => "retries_exhausted",
            RouterError::BadResponse(_) => "bad_response",
        }
    }
}
