//! A replica's shared state and its control service (health checks, in-place reconfigure):
//! the authoritative `max_ongoing_requests` admission lives here and is used by the data port
//! (`data.rs`): a request over the limit is refused before anything runs, so the router retries
//! it elsewhere.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use photon_proto::v1 as pb;
use photon_proto::v1::replica_service_server::ReplicaService;
use serde_json::Value;
use tokio::sync::Notify;
use tonic::{Request, Response, Status};

use crate::deployment::Deployment;

/// What one replica process serves with: its deployment, admission counters, metrics and drain
/// state, shared by the data port and the control service. (Not the replica state Ray reports,
/// `photon_controller::status::ReplicaState`.)
pub struct ServingState {
    deployment: Arc<dyn Deployment>,
    metrics: crate::metrics::ReplicaMetrics,
    access_log: bool,
    ongoing: AtomicU32,
    max_ongoing: AtomicU32,
    draining: AtomicBool,
    idle: Notify,
    user_config: tokio::sync::Mutex<Option<Value>>,
}

impl ServingState {
    /// State for a built and configured deployment.
    pub fn new(
        deployment: Arc<dyn Deployment>,
        max_ongoing: u32,
        user_config: Option<Value>,
        metrics: crate::metrics::ReplicaMetrics,
        access_log: bool,
    ) -> Arc<Self> {
        Arc::new(ServingState {
            deployment,
            metrics,
            access_log,
            ongoing: AtomicU32::new(0),
            max_ongoing: AtomicU32::new(max_ongoing),
            draining: AtomicBool::new(false),
            idle: Notify::new(),
            user_config: tokio::sync::Mutex::new(user_config),
        })
    }

    /// Requests executing now.
    pub fn ongoing(&self) -> u32 {
        self.ongoing.load(Ordering::Acquire)
    }

    /// Ray's graceful shutdown: refuse new requests (routers retry them elsewhere), wait one
    /// `wait_loop` so that every router has seen this replica leave the routing table, then
    /// resolve once no request is executing (checked every `wait_loop`, and at once when the
    /// last one ends).
    pub async fn drain(&self, wait_loop: Duration) {
        self.draining.store(true, Ordering::Release);
        tokio::time::sleep(wait_loop).await;
        loop {
            let notified = self.idle.notified();
            if self.ongoing() == 0 {
                return;
            }
            let _ = tokio::time::timeout(wait_loop, notified).await;
        }
    }

    /// The deployment this replica runs.
    pub fn deployment(&self) -> &Arc<dyn Deployment> {
        &self.deployment
    }

    /// This replica's metric series.
    pub fn metrics(&self) -> &crate::metrics::ReplicaMetrics {
        &self.metrics
    }

    /// Whether to log one line per request.
    pub fn access_log(&self) -> bool {
        self.access_log
    }

    /// Takes a request slot, or `None` when at `max_ongoing_requests` or draining.
    pub fn admit(self: &Arc<Self>) -> Option<Admission> {
        if self.draining.load(Ordering::Acquire) {
            return None;
        }
        let max = self.max_ongoing.load(Ordering::Acquire);
        let prev = self.ongoing.fetch_add(1, Ordering::AcqRel);
        let admission = Admission(self.clone());
        self.metrics.processing.inc();
        (prev < max).then_some(admission)
    }
}

/// One admitted request; gives its slot back on drop (also when the call is cancelled).
pub struct Admission(Arc<ServingState>);

impl Drop for Admission {
    fn drop(&mut self) {
        self.0.metrics.processing.dec();
        if self.0.ongoing.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

/// The gRPC service over a replica's state.
pub struct ReplicaServer(pub Arc<ServingState>);

#[tonic::async_trait]
impl ReplicaService for ReplicaServer {
    async fn health(&self, _request: Request<pb::HealthRequest>) -> Result<Response<pb::HealthResponse>, Status> {
        match self.0.deployment.check_health().await {
            Ok(()) => Ok(Response::new(pb::HealthResponse { ongoing_requests: self.0.ongoing() })),
            Err(e) => Err(Status::internal(e.0)),
        }
    }

    async fn load(&self, _request: Request<pb::LoadRequest>) -> Result<Response<pb::LoadResponse>, Status> {
        Ok(Response::new(pb::LoadResponse { ongoing_requests: self.0.ongoing() }))
    }

    async fn metrics(&self, _request: Request<pb::MetricsRequest>) -> Result<Response<pb::MetricsResponse>, Status> {
        Ok(Response::new(pb::MetricsResponse { text: photon_router::metrics::gather_text() }))
    }

    async fn reconfigure(
        &self,
        request: Request<pb::ReconfigureRequest>,
    ) -> Result<Response<pb::ReconfigureResponse>, Status> {
        let r = request.into_inner();
        let user_config: Option<Value> = if r.user_config_json.is_empty() {
            None
        } else {
            Some(
                serde_json::from_str(&r.user_config_json)
                    .map_err(|e| Status::invalid_argument(format!("user_config: {e}")))?,
            )
        };
        let mut current = self.0.user_config.lock().await;
        if *current != user_config {
            self.0.deployment.reconfigure(user_config.as_ref()).await.map_err(|e| Status::internal(e.0))?;
            *current = user_config;
        }
        if r.max_ongoing_requests > 0 {
            self.0.max_ongoing.store(r.max_ongoing_requests, Ordering::Release);
        }
        Ok(Response::new(pb::ReconfigureResponse {}))
    }
}

/// Encodes a `user_config` for a Reconfigure request.
pub fn user_config_json(user_config: Option<&Value>) -> String {
    user_config.map(Value::to_string).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deployment::{DeploymentError, Reply, Request};

    struct Idle;

    #[async_trait::async_trait]
    impl Deployment for Idle {
        async fn call(&self, _request: Request) -> Result<Reply, DeploymentError> {
            Ok(Reply::text("ok"))
        }
    }

    fn serving(max_ongoing: u32) -> Arc<ServingState> {
        ServingState::new(Arc::new(Idle), max_ongoing, None, crate::metrics::ReplicaMetrics::new("a", "d", "r"), false)
    }

    /// Ray's drain on tokio's paused clock: new requests are refused at once; the drain waits one
    /// `wait_loop` even when idle, then for the last request, and ends as soon as it ends.
    #[tokio::test(start_paused = true)]
    async fn a_drain_refuses_new_requests_and_ends_with_the_last_one() {
        let wait_loop = Duration::from_secs(2);
        let idle = serving(2);
        let started = tokio::time::Instant::now();
        idle.drain(wait_loop).await;
        assert_eq!(started.elapsed(), wait_loop, "an idle replica still waits one wait_loop");

        let busy = serving(2);
        let running = busy.admit().expect("a slot");
        let drain = tokio::spawn({
            let busy = busy.clone();
            async move { busy.drain(wait_loop).await }
        });
        tokio::time::sleep(Duration::from_millis(1)).await;
        assert!(busy.admit().is_none(), "a draining replica admits nothing");
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert!(!drain.is_finished(), "the drain waits for the running request");
        let released = tokio::time::Instant::now();
        drop(running);
        drain.await.unwrap();
        assert!(released.elapsed() < wait_loop, "the drain ends when the last request ends, not a wait_loop later");
    }

    #[test]
    fn admission_stops_at_max_ongoing_and_gives_the_slot_back_on_drop() {
        let state = serving(1);
        let first = state.admit().expect("a slot");
        assert!(state.admit().is_none());
        drop(first);
        assert_eq!(state.ongoing(), 0);
        assert!(state.admit().is_some());
    }
}
