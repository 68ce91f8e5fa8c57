//! `photon operator`: reconciles `PhotonService` objects (`photon.io/v1`, a RayService with
//! another `apiVersion` and `kind`) into Photon clusters, the way KubeRay's RayService
//! controller does for Ray: the head (controller, REST API, a proxy) and proxy pods, the
//! `<name>-head-svc` and `<name>-serve-svc` Services, in-place serve config updates through
//! the head's REST API, and zero-downtime upgrades through a pending cluster. The behaviour
//! it follows is `spec/kuberay.md`'s.

#![warn(missing_docs)]

pub mod cluster;
pub mod head_client;
pub mod reconcile;
pub mod types;

use std::sync::Arc;

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::runtime::{watcher, Controller};
use kube::{Api, CustomResourceExt};

pub use cluster::OperatorSettings;
pub use head_client::{Addresses, ClusterDns};
pub use types::{PhotonService, PhotonServiceSpec, PhotonServiceStatus};

/// The CustomResourceDefinition, generated from the Rust types.
pub fn crd() -> k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition {
    PhotonService::crd()
}

/// Runs the operator until the process is asked to stop; `namespace` limits it to one.
pub async fn run(
    client: kube::Client,
    settings: OperatorSettings,
    addresses: Arc<dyn Addresses>,
    namespace: Option<String>,
) {
    let (services, pods, svcs): (Api<PhotonService>, Api<Pod>, Api<Service>) = match &namespace {
        Some(ns) => (
            Api::namespaced(client.clone(), ns),
            Api::namespaced(client.clone(), ns),
            Api::namespaced(client.clone(), ns),
        ),
        None => (Api::all(client.clone()), Api::all(client.clone()), Api::all(client.clone())),
    };
    let owned = watcher::Config::default().labels(&format!("{}=PhotonService", cluster::keys::ORIGINATED_CRD));
    let context = Arc::new(reconcile::Context::new(client, settings, addresses));
    tracing::info!(namespace = namespace.as_deref().unwrap_or("(all)"), "photon operator running");
    Controller::new(services, watcher::Config::default())
        .owns(pods, owned.clone())
        .owns(svcs, owned)
        .shutdown_on_signal()
        .run(reconcile::reconcile, reconcile::error_policy, context)
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(error = %e, "reconcile");
            }
        })
        .await;
}

/// Every object the operator makes for `svc` (with cluster name `cluster`), plus one replica
/// pod as the head would make it: for `photon operator render` and for schema validation.
pub fn render(
    svc: &PhotonService,
    cluster: &str,
    settings: &OperatorSettings,
) -> Result<Vec<serde_json::Value>, String> {
    use photon_orchestrator::kubernetes::{pod_owner, replica_pod, KubernetesSettings};
    use serde_json::to_value;
    let mut objects = Vec::new();
    let typed = |mut v: serde_json::Value, api_version: &str, kind: &str| {
        v["apiVersion"] = api_version.into();
        v["kind"] = kind.into();
        v
    };
    let (account, role, binding) = cluster::head_rbac(svc);
    objects.push(typed(to_value(account).map_err(|e| e.to_string())?, "v1", "ServiceAccount"));
    objects.push(typed(to_value(role).map_err(|e| e.to_string())?, "rbac.authorization.k8s.io/v1", "Role"));
    objects.push(typed(to_value(binding).map_err(|e| e.to_string())?, "rbac.authorization.k8s.io/v1", "RoleBinding"));
    objects.push(typed(
        to_value(cluster::cluster_head_service(svc, cluster)).map_err(|e| e.to_string())?,
        "v1",
        "Service",
    ));
    objects.push(typed(to_value(cluster::head_service(svc, cluster)).map_err(|e| e.to_string())?, "v1", "Service"));
    objects.push(typed(to_value(cluster::serve_service(svc, cluster)?).map_err(|e| e.to_string())?, "v1", "Service"));
    objects.push(typed(
        to_value(cluster::network_policy(svc)).map_err(|e| e.to_string())?,
        "networking.k8s.io/v1",
        "NetworkPolicy",
    ));
    let head = cluster::head_pod(svc, cluster, settings);
    objects.push(typed(to_value(&head).map_err(|e| e.to_string())?, "v1", "Pod"));
    for pod in cluster::worker_pods(svc, cluster, settings) {
        objects.push(typed(to_value(pod).map_err(|e| e.to_string())?, "v1", "Pod"));
    }
    let replica_settings = KubernetesSettings {
        namespace: svc.metadata.namespace.clone().unwrap_or_else(|| "default".into()),
        cluster: cluster.into(),
        service: svc.metadata.name.clone().unwrap_or_default(),
        template: cluster::replica_template(svc, settings),
        owner: Some(pod_owner(
            head.metadata.name.clone().unwrap_or_default(),
            "00000000-0000-0000-0000-000000000000".into(),
        )),
    };
    let example = photon_orchestrator::ReplicaSpec {
        replica_id: "x7k2pq9m".into(),
        app: "fruit_app".into(),
        deployment: "MangoStand".into(),
        import_path: "fruit.deployment_graph".into(),
        controller: format!("http://{}:6379", cluster::cluster_head_service_name(cluster)),
        max_ongoing_requests: 5,
        user_config: Some(serde_json::json!({"price": 3})),
        env_vars: Default::default(),
        image: None,
        secret_env: Default::default(),
        graceful_shutdown_timeout: std::time::Duration::from_secs(20),
        graceful_shutdown_wait_loop: std::time::Duration::from_secs(2),
        access_log: true,
        log_encoding: "TEXT".into(),
        log_level: None,
        logs_dir: None,
        gpu_ids: vec![],
        resources: photon_orchestrator::ResourceRequest { cpus: 0.1, gpus: 1.0, memory_bytes: 2e9 },
        version: 1,
    };
    objects.push(typed(to_value(replica_pod(&replica_settings, &example)).map_err(|e| e.to_string())?, "v1", "Pod"));
    Ok(objects)
}
