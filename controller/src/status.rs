//! Status names exactly as Ray Serve spells them (spec/ray-serve.md section 3), and the
//! instance snapshot the REST API and CLI render.

use serde::Serialize;

/// Ray's ApplicationStatus.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[allow(missing_docs, non_camel_case_types, clippy::upper_case_acronyms)]
pub enum ApplicationStatus {
    NOT_STARTED,
    DEPLOYING,
    DEPLOY_FAILED,
    RUNNING,
    UNHEALTHY,
    DELETING,
}

/// Ray's DeploymentStatus.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[allow(missing_docs, non_camel_case_types, clippy::upper_case_acronyms)]
pub enum DeploymentStatus {
    UPDATING,
    HEALTHY,
    UNHEALTHY,
    DEPLOY_FAILED,
    UPSCALING,
    DOWNSCALING,
}

/// Ray's DeploymentStatusTrigger.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[allow(missing_docs, non_camel_case_types, clippy::upper_case_acronyms)]
pub enum DeploymentStatusTrigger {
    UNSPECIFIED,
    CONFIG_UPDATE_STARTED,
    CONFIG_UPDATE_COMPLETED,
    UPSCALE_COMPLETED,
    DOWNSCALE_COMPLETED,
    AUTOSCALING,
    REPLICA_STARTUP_FAILED,
    HEALTH_CHECK_FAILED,
    INTERNAL_ERROR,
    DELETING,
}

/// Ray's ReplicaState.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[allow(missing_docs, non_camel_case_types, clippy::upper_case_acronyms)]
pub enum ReplicaState {
    STARTING,
    UPDATING,
    RECOVERING,
    RUNNING,
    STOPPING,
    STOPPED,
}

/// One replica in a status snapshot.
#[derive(Debug, Clone, Serialize)]
pub struct ReplicaStatus {
    /// Replica id.
    pub replica_id: String,
    /// Lifecycle state.
    pub state: ReplicaState,
    /// Process id, once registered.
    pub pid: Option<u32>,
    /// Unix time the replica was started.
    pub start_time_s: f64,
    /// `host:port` of its ReplicaService, once registered.
    pub address: Option<String>,
    /// Last failed health check, if any.
    pub last_health_check_error: Option<String>,
}

/// One deployment in a status snapshot.
#[derive(Debug, Clone, Serialize)]
pub struct DeploymentStatusInfo {
    /// Deployment name.
    pub name: String,
    /// Status.
    pub status: DeploymentStatus,
    /// Why the status last changed.
    pub status_trigger: DeploymentStatusTrigger,
    /// Human-readable detail.
    pub message: String,
    /// Replicas wanted on this instance.
    pub target_num_replicas: u32,
    /// Replicas.
    pub replicas: Vec<ReplicaStatus>,
    /// Effective options, every field filled (Ray's `deployment_config`).
    pub deployment_config: serde_json::Value,
    /// Resources one replica needs (`{"CPU": 1.0}`).
    pub required_resources: serde_json::Value,
}

/// One application in a status snapshot.
#[derive(Debug, Clone, Serialize)]
pub struct ApplicationStatusInfo {
    /// Application name.
    pub name: String,
    /// Route prefix.
    pub route_prefix: Option<String>,
    /// Status.
    pub status: ApplicationStatus,
    /// Human-readable detail.
    pub message: String,
    /// Unix time of the last deploy.
    pub last_deployed_time_s: f64,
    /// Deployments in blueprint order.
    pub deployments: Vec<DeploymentStatusInfo>,
    /// The application exactly as submitted.
    pub deployed_app_config: serde_json::Value,
    /// The ingress deployment, once the application's code was found.
    pub ingress: Option<String>,
    /// Where the ingress serves its API docs (FastAPI's `docs_url`).
    pub docs_path: Option<String>,
}

/// The whole instance.
#[derive(Debug, Clone, Serialize, Default)]
pub struct InstanceStatus {
    /// Applications in config order.
    pub applications: Vec<ApplicationStatusInfo>,
}
