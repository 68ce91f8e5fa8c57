//! The `PhotonService` custom resource (`photon.io/v1`). Its spec mirrors KubeRay's
//! RayService field for field, so a RayService manifest converts by changing `apiVersion` and
//! `kind` only; fields whose concept has no Photon counterpart (the autoscaler's options, GCS
//! fault tolerance, Ray start parameters) are accepted and kept, and the README says which.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{PodTemplateSpec, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A free-form object in the schema (kept as given; `x-kubernetes-preserve-unknown-fields`).
fn free_form(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({"type": "object", "x-kubernetes-preserve-unknown-fields": true})
}

/// What a `PhotonService` asks for: Ray Serve applications on a Photon cluster.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "photon.io",
    version = "v1",
    kind = "PhotonService",
    plural = "photonservices",
    singular = "photonservice",
    namespaced,
    status = "PhotonServiceStatus",
    category = "all",
    doc = "Ray Serve applications served by Photon: KubeRay's RayService, field for field.",
    printcolumn = r#"{"name": "service status", "type": "string", "jsonPath": ".status.serviceStatus"}"#,
    printcolumn = r#"{"name": "num serve endpoints", "type": "integer", "jsonPath": ".status.numServeEndpoints"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct PhotonServiceSpec {
    /// A Ray Serve multi-application config, as a YAML document in a string.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serve_config_v2: Option<String>,
    /// The cluster: head and worker groups.
    pub ray_cluster_config: ClusterSpec,
    /// What a change of the cluster spec does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upgrade_strategy: Option<UpgradeStrategy>,
    /// Seconds a cluster that is neither active nor pending is kept before deletion (default 60).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub ray_cluster_deletion_delay_seconds: Option<i32>,
    /// Deprecated in KubeRay and ignored, as there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_unhealthy_second_threshold: Option<i32>,
    /// Deprecated in KubeRay and ignored, as there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployment_unhealthy_second_threshold: Option<i32>,
    /// Overrides for the serve Service (name, labels, annotations, type, ports).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serve_service: Option<Service>,
    /// Never route serve traffic to the head pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exclude_head_pod_from_serve_svc: Option<bool>,
    /// Which controller manages this object; another value than Photon's or KubeRay's makes the
    /// operator leave it alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub managed_by: Option<String>,
    /// Deletes every cluster of the service while true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suspend: Option<bool>,
}

/// The cluster spec (KubeRay's `RayClusterSpec`).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterSpec {
    /// Informational (KubeRay picks probe styles by it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ray_version: Option<String>,
    /// The head: controller, REST API and a proxy.
    pub head_group_spec: HeadGroupSpec,
    /// Worker groups: each runs proxy pods; the first one's template also makes replica pods.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub worker_group_specs: Vec<WorkerGroupSpec>,
    /// Accepted; Photon scales replicas by `autoscaling_config`, not nodes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enable_in_tree_autoscaling: Option<bool>,
    /// Accepted and kept; not used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "free_form")]
    pub autoscaler_options: Option<Value>,
    /// Annotations for the cluster's head Service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head_service_annotations: Option<BTreeMap<String, String>>,
    /// Accepted and kept; Photon's head checkpoints to the pod's own volume.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "free_form")]
    pub gcs_fault_tolerance_options: Option<Value>,
    /// Copied only at creation, as KubeRay does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suspend: Option<bool>,
    /// Cluster-level `managedBy`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub managed_by: Option<String>,
    /// Cluster-level pod recreation strategy; excluded from the upgrade hash.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "free_form")]
    pub upgrade_strategy: Option<Value>,
}

/// The head group.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HeadGroupSpec {
    /// `ray start` flags; kept, not used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ray_start_params: Option<BTreeMap<String, String>>,
    /// The head pod's template; its first container runs `photon start`.
    pub template: PodTemplateSpec,
    /// Type of the head and serve Services.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_type: Option<String>,
    /// Overrides for the cluster head Service (its name must stay empty).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head_service: Option<Service>,
    /// Accepted; no Ingress is made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enable_ingress: Option<bool>,
    /// Ray resources override; kept, not used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<BTreeMap<String, String>>,
    /// Ray node labels, also put on the pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
}

/// One worker group.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkerGroupSpec {
    /// The group's name (`ray.io/group`).
    pub group_name: String,
    /// Proxy pods of this group (default 0), clamped to `[minReplicas, maxReplicas]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i32>,
    /// Lower bound (default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_replicas: Option<i32>,
    /// Upper bound (default 2147483647).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_replicas: Option<i32>,
    /// Pods per replica (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_of_hosts: Option<i32>,
    /// `ray start` flags; kept, not used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ray_start_params: Option<BTreeMap<String, String>>,
    /// The pod template.
    pub template: PodTemplateSpec,
    /// Pods the autoscaler wants removed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_strategy: Option<ScaleStrategy>,
    /// Kept, not used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout_seconds: Option<i32>,
    /// Suspends the group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suspend: Option<bool>,
    /// Ray resources override; kept, not used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<BTreeMap<String, String>>,
    /// Ray node labels, also put on the pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
}

/// `scaleStrategy`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScaleStrategy {
    /// Pod names to delete.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workers_to_delete: Option<Vec<String>>,
}

/// `upgradeStrategy`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UpgradeStrategy {
    /// `NewCluster` (default: zero-downtime upgrade), `NewClusterWithIncrementalUpgrade` (not
    /// supported: rejected by validation) or `None` (a changed cluster spec is not applied).
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub type_: Option<String>,
    /// Options of the incremental upgrade; kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "free_form")]
    pub cluster_upgrade_options: Option<Value>,
}

/// What the operator reports.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PhotonServiceStatus {
    /// `Ready` and `UpgradeInProgress`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// `Running` when Ready is True, else empty (KubeRay's deprecated mirror).
    #[serde(default)]
    pub service_status: String,
    /// The cluster serving traffic.
    #[serde(default)]
    pub active_service_status: ClusterServiceStatus,
    /// The cluster being prepared.
    #[serde(default)]
    pub pending_service_status: ClusterServiceStatus,
    /// Distinct Ready pods behind the serve Service.
    #[serde(default)]
    pub num_serve_endpoints: i32,
    /// `metadata.generation` the status was computed for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// When the operator last wrote a changed status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_update_time: Option<Time>,
}

/// One cluster's part of the status.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterServiceStatus {
    /// The cluster's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ray_cluster_name: Option<String>,
    /// Its pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ray_cluster_status: Option<ClusterStatus>,
    /// Application statuses from the head's REST API.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub application_statuses: BTreeMap<String, AppStatus>,
}

/// A cluster's pods (the parts of KubeRay's `RayClusterStatus` that apply).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterStatus {
    /// `ready` once the head and every proxy pod ran Ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// Proxy pods Running and Ready.
    #[serde(default)]
    pub ready_worker_replicas: i32,
    /// Proxy pods wanted.
    #[serde(default)]
    pub desired_worker_replicas: i32,
    /// The head pod and Service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head: Option<HeadInfo>,
}

/// The head's addresses.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HeadInfo {
    /// Head pod IP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_ip: Option<String>,
    /// Head pod name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_name: Option<String>,
    /// The cluster's head Service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_name: Option<String>,
}

/// One application's status (Ray Serve's values).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AppStatus {
    /// `RUNNING`, `DEPLOYING`, `DEPLOY_FAILED`, ...
    #[serde(default)]
    pub status: String,
    /// Why, when not running.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// Per deployment.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub serve_deployment_statuses: BTreeMap<String, DeploymentStatus>,
}

/// One deployment's status.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeploymentStatus {
    /// `HEALTHY`, `UPDATING`, `UNHEALTHY`, ...
    #[serde(default)]
    pub status: String,
    /// Why.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}
