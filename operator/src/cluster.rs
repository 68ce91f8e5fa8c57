//! The objects of a Photon cluster, built as pure functions of a `PhotonService` so they are
//! unit-tested, rendered by `photon operator render` and schema-validated in CI.
//!
//! A cluster is what KubeRay's RayCluster is, without a resource of its own: a head pod
//! (`photon start`: controller, REST API, a proxy; it creates one pod per replica from the
//! first worker group's template), proxy pods per worker group (`photon proxy`, the "workers"
//! that receive serve traffic), and the cluster's headless head Service. Names, labels,
//! ports and selectors are KubeRay's (`spec/kuberay.md` section 4), so tools and the sample's
//! `curl rayservice-sample-serve-svc:8000/fruit/` keep working.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Container, ContainerPort, EmptyDirVolumeSource, EnvVar, EnvVarSource, HTTPGetAction, ObjectFieldSelector, Pod,
    PodTemplateSpec, Probe, Secret, SecretKeySelector, Service, ServiceAccount, ServicePort, ServiceSpec, Volume,
    VolumeMount,
};
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::Resource;
use photon_orchestrator::kubernetes::env as head_env;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::types::{ClusterSpec, PhotonService};

/// Label and annotation keys (KubeRay's where the concept is the same).
pub mod keys {
    /// The cluster a pod or Service belongs to.
    pub const CLUSTER: &str = "ray.io/cluster";
    /// `head` or `worker`.
    pub const NODE_TYPE: &str = "ray.io/node-type";
    /// `headgroup` or the worker group's name.
    pub const GROUP: &str = "ray.io/group";
    /// `<cluster>-head` / `<cluster>-worker`.
    pub const IDENTIFIER: &str = "ray.io/identifier";
    /// Whether the pod receives serve traffic.
    pub const SERVE: &str = "ray.io/serve";
    /// `yes` on head and proxy pods.
    pub const IS_RAY_NODE: &str = "ray.io/is-ray-node";
    /// The PhotonService that made the object.
    pub const ORIGINATED_NAME: &str = "ray.io/originated-from-cr-name";
    /// `PhotonService`.
    pub const ORIGINATED_CRD: &str = "ray.io/originated-from-crd";
    /// The cluster spec hash, without fields that do not need a new cluster.
    pub const HASH: &str = "ray.io/hash-without-replicas-and-workers-to-delete";
    /// Worker groups when the cluster was made or last updated.
    pub const NUM_WORKER_GROUPS: &str = "ray.io/num-worker-groups";
    /// The operator version that made the cluster.
    pub const OPERATOR_VERSION: &str = "photon.io/operator-version";
    /// Kubernetes' Service name label on EndpointSlices.
    pub const SERVICE_NAME: &str = "kubernetes.io/service-name";
}

/// The finalizer that lets the operator remove clusters before the object goes.
pub const FINALIZER: &str = "photon.io/photonservice-finalizer";
/// `managedBy` values this operator acts on (KubeRay's value too, so manifests convert as they are).
pub const MANAGERS: [&str; 2] = ["photon.io/photon-operator", "ray.io/kuberay-operator"];
/// Where the head checkpoints its state (an emptyDir: it outlives container restarts).
pub const STATE_DIR: &str = "/var/lib/photon";
/// Default seconds before a cluster that is neither active nor pending is deleted.
pub const DEFAULT_DELETION_DELAY_S: i32 = 60;

/// The Photon image of this version, when the operator is given none.
pub const DEFAULT_IMAGE: &str = concat!("photon:", env!("CARGO_PKG_VERSION"));
/// The Photon image with Python (the Dockerfile's `python` target) of this version.
pub const DEFAULT_PYTHON_IMAGE: &str = concat!("photon-python:", env!("CARGO_PKG_VERSION"));

/// What the operator was started with.
#[derive(Debug, Clone)]
pub struct OperatorSettings {
    /// The Photon image for containers that name a Ray image (or none).
    pub image: String,
    /// The image with Python for the head and replica pods of a service with Python
    /// applications, where their containers name a Ray image (or none): the head imports the
    /// code, the replicas run it.
    pub python_image: String,
    /// The import paths Photon serves without Python (its built-in applications); any other
    /// names Python code.
    pub builtin_import_paths: Vec<String>,
    /// The cluster DNS domain (`cluster.local`).
    pub cluster_domain: String,
    /// Zero-downtime upgrades when `upgradeStrategy.type` is unset (`ENABLE_ZERO_DOWNTIME`).
    pub zero_downtime: bool,
}

impl Default for OperatorSettings {
    fn default() -> Self {
        OperatorSettings {
            image: DEFAULT_IMAGE.into(),
            python_image: DEFAULT_PYTHON_IMAGE.into(),
            builtin_import_paths: Vec::new(),
            cluster_domain: "cluster.local".into(),
            zero_downtime: true,
        }
    }
}

/// The head's named ports.
#[derive(Debug, Clone, PartialEq)]
pub struct Ports {
    /// Every named port, sorted by name.
    pub named: Vec<(String, i32)>,
}

impl Ports {
    fn get(&self, name: &str, default: i32) -> i32 {
        self.named.iter().find(|(n, _)| n == name).map_or(default, |(_, p)| *p)
    }
    /// REST API (`dashboard`, 8265).
    pub fn dashboard(&self) -> i32 {
        self.get("dashboard", 8265)
    }
    /// HTTP proxy (`serve`, 8000).
    pub fn serve(&self) -> i32 {
        self.get("serve", 8000)
    }
    /// The controller (`gcs-server`, 6379: it plays the GCS's part).
    pub fn controller(&self) -> i32 {
        self.get("gcs-server", 6379)
    }
    /// The gRPC proxy, when the head declares `serve-grpc`.
    pub fn grpc(&self) -> Option<i32> {
        self.named.iter().find(|(n, _)| n == "serve-grpc").map(|(_, p)| *p)
    }
}

/// The head container's named ports (unnamed ones become `<port>-port`), or Photon's
/// defaults (`dashboard` 8265, `gcs-server` 6379, `serve` 8000) when it declares none.
pub fn head_ports(spec: &ClusterSpec) -> Ports {
    let declared: Vec<ContainerPort> = spec
        .head_group_spec
        .template
        .spec
        .as_ref()
        .and_then(|s| s.containers.first())
        .and_then(|c| c.ports.clone())
        .unwrap_or_default();
    let mut named: Vec<(String, i32)> = if declared.is_empty() {
        vec![("dashboard".into(), 8265), ("gcs-server".into(), 6379), ("serve".into(), 8000)]
    } else {
        declared
            .iter()
            .map(|p| (p.name.clone().unwrap_or_else(|| format!("{}-port", p.container_port)), p.container_port))
            .collect()
    };
    named.sort();
    Ports { named }
}

fn canonical(value: &Value) -> Value {
    match value {
        Value::Object(map) => {
            let sorted: BTreeMap<&String, Value> = map.iter().map(|(k, v)| (k, canonical(v))).collect();
            Value::Object(sorted.into_iter().map(|(k, v)| (k.clone(), v)).collect())
        }
        Value::Array(items) => Value::Array(items.iter().map(canonical).collect()),
        other => other.clone(),
    }
}

/// KubeRay's "hash without replicas and workers to delete": a hash of the cluster spec with
/// the fields an autoscaler or Kueue changes (worker counts, pods to delete, tolerations,
/// scheduling gates) and the cluster-level upgrade strategy and suspend blanked.
/// `worker_groups` cuts the worker group list (to tell "groups appended" apart).
pub fn cluster_hash(spec: &ClusterSpec, worker_groups: Option<usize>) -> String {
    let mut spec = spec.clone();
    if let Some(n) = worker_groups {
        spec.worker_group_specs.truncate(n);
    }
    let blank_template = |t: &mut PodTemplateSpec| {
        if let Some(s) = t.spec.as_mut() {
            s.tolerations = None;
            s.scheduling_gates = None;
        }
    };
    blank_template(&mut spec.head_group_spec.template);
    for g in &mut spec.worker_group_specs {
        g.replicas = None;
        g.min_replicas = None;
        g.max_replicas = None;
        if let Some(s) = g.scale_strategy.as_mut() {
            s.workers_to_delete = None;
        }
        blank_template(&mut g.template);
    }
    spec.upgrade_strategy = None;
    spec.suspend = None;
    let value = canonical(&serde_json::to_value(&spec).unwrap_or_default());
    let digest = Sha256::digest(value.to_string().as_bytes());
    digest.iter().take(20).map(|b| format!("{b:02x}")).collect()
}

/// A new cluster name: `<service>-<5 characters>` from Kubernetes' random-string alphabet.
pub fn new_cluster_name(service: &str) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let suffix: String = (0..5).map(|_| ALPHABET[fastrand::usize(..ALPHABET.len())] as char).collect();
    format!("{service}-{suffix}")
}

/// The head pod's name.
pub fn head_pod_name(cluster: &str) -> String {
    // Cluster names are at most 53 characters (a 47-character service name and `-xxxxx`), so
    // the whole name fits; cutting it would let two clusters of one service share pod names.
    format!("{cluster}-head")
}

/// The cluster's own head Service.
pub fn cluster_head_service_name(cluster: &str) -> String {
    format!("{cluster}-head-svc")
}

/// The service-level head Service.
pub fn head_service_name(service: &str) -> String {
    format!("{service}-head-svc")
}

/// The serve Service (or the override's name).
pub fn serve_service_name(svc: &PhotonService) -> String {
    svc.spec
        .serve_service
        .as_ref()
        .and_then(|s| s.metadata.name.clone())
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| format!("{}-serve-svc", svc.name()))
}

/// The service account, role and binding the head pods use to manage replica pods.
pub fn head_account_name(service: &str) -> String {
    format!("{service}-photon-head")
}

/// Accessors used everywhere.
pub trait ServiceExt {
    /// `metadata.name`.
    fn name(&self) -> String;
    /// `metadata.namespace` (default `default`).
    fn ns(&self) -> String;
    /// A controller owner reference to this object.
    fn owner(&self) -> OwnerReference;
}

impl ServiceExt for PhotonService {
    fn name(&self) -> String {
        self.metadata.name.clone().unwrap_or_default()
    }
    fn ns(&self) -> String {
        self.metadata.namespace.clone().unwrap_or_else(|| "default".into())
    }
    fn owner(&self) -> OwnerReference {
        OwnerReference {
            api_version: PhotonService::api_version(&()).into_owned(),
            kind: PhotonService::kind(&()).into_owned(),
            name: self.name(),
            uid: self.metadata.uid.clone().unwrap_or_default(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        }
    }
}

fn originated(svc: &PhotonService) -> BTreeMap<String, String> {
    let mut labels = svc.metadata.labels.clone().unwrap_or_default();
    labels.insert(keys::ORIGINATED_NAME.into(), svc.name());
    labels.insert(keys::ORIGINATED_CRD.into(), "PhotonService".into());
    labels
}

fn node_labels(svc: &PhotonService, cluster: &str, node_type: &str, group: &str) -> BTreeMap<String, String> {
    let mut labels = originated(svc);
    // The label replica pods carry too: one selector for every pod of the service.
    labels.insert(photon_orchestrator::kubernetes::labels::SERVICE.into(), svc.name());
    labels.insert(keys::IS_RAY_NODE.into(), "yes".into());
    labels.insert(keys::CLUSTER.into(), cluster.into());
    labels.insert(keys::NODE_TYPE.into(), node_type.into());
    labels.insert(keys::GROUP.into(), group.into());
    labels
        .insert(keys::IDENTIFIER.into(), format!("{cluster}-{}", if node_type == "head" { "head" } else { "worker" }));
    labels.insert("app.kubernetes.io/name".into(), "photon".into());
    labels.insert("app.kubernetes.io/created-by".into(), "photon-operator".into());
    labels
}

/// The head Service selector of a cluster.
pub fn head_selector(cluster: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (keys::CLUSTER.to_string(), cluster.to_string()),
        (keys::NODE_TYPE.to_string(), "head".to_string()),
        (keys::IDENTIFIER.to_string(), format!("{cluster}-head")),
        ("app.kubernetes.io/name".to_string(), "photon".to_string()),
        ("app.kubernetes.io/created-by".to_string(), "photon-operator".to_string()),
    ])
}

/// Whether the service's serve config names Python code: an `import_path` that is not one of
/// Photon's built-in applications (`module:attr` and `module.attr` alike).
pub fn has_python_code(svc: &PhotonService, settings: &OperatorSettings) -> bool {
    let Some(text) = &svc.spec.serve_config_v2 else { return false };
    let Ok(config) = photon_config::yaml::from_str(text) else { return false };
    let builtin: Vec<String> = settings.builtin_import_paths.iter().map(|p| p.replace(':', ".")).collect();
    config["applications"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| a["import_path"].as_str())
        .any(|path| !builtin.contains(&path.replace(':', ".")))
}

/// The image for a head or replica container: the Python image for a service with Python code.
fn code_image(current: Option<&str>, svc: &PhotonService, settings: &OperatorSettings) -> String {
    if has_python_code(svc, settings) {
        let python = OperatorSettings { image: settings.python_image.clone(), ..settings.clone() };
        return photon_image(current, &python);
    }
    photon_image(current, settings)
}

/// The Photon image for a container: Ray images (and none) are replaced, others kept.
fn photon_image(current: Option<&str>, settings: &OperatorSettings) -> String {
    match current {
        Some(image)
            if !image.is_empty() && !image.starts_with("rayproject/ray") && !image.starts_with("anyscale/ray") =>
        {
            image.to_string()
        }
        _ => settings.image.clone(),
    }
}

fn field_env(name: &str, path: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector { field_path: path.into(), ..Default::default() }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn plain_env(name: &str, value: String) -> EnvVar {
    EnvVar { name: name.into(), value: Some(value), ..Default::default() }
}

fn http_probe(path: &str, port: i32, initial: i32, timeout: i32, failures: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction { path: Some(path.into()), port: IntOrString::Int(port), ..Default::default() }),
        initial_delay_seconds: Some(initial),
        timeout_seconds: Some(timeout),
        period_seconds: Some(5),
        success_threshold: Some(1),
        failure_threshold: Some(failures),
        ..Default::default()
    }
}

/// The name of a service's NetworkPolicy.
pub fn network_policy_name(service: &str) -> String {
    format!("{service}-photon")
}

/// Who may reach a service's pods (head, proxies, replicas, across its clusters): each other on
/// any port; anyone on the serve ports (HTTP, and gRPC when configured); the operator on the
/// REST API. The REST API, `/metrics` and the internal ports are closed to everything else.
pub fn network_policy(svc: &PhotonService) -> k8s_openapi::api::networking::v1::NetworkPolicy {
    use k8s_openapi::api::networking::v1::{
        NetworkPolicy, NetworkPolicyIngressRule, NetworkPolicyPeer, NetworkPolicyPort, NetworkPolicySpec,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
    let service_pods = LabelSelector {
        match_labels: Some(BTreeMap::from([(photon_orchestrator::kubernetes::labels::SERVICE.into(), svc.name())])),
        ..Default::default()
    };
    let port = |p: i32| NetworkPolicyPort {
        port: Some(IntOrString::Int(p)),
        protocol: Some("TCP".into()),
        ..Default::default()
    };
    let ports = head_ports(&svc.spec.ray_cluster_config);
    let mut serve_ports = vec![port(ports.serve())];
    serve_ports.extend(ports.grpc().map(port));
    let operator = NetworkPolicyPeer {
        namespace_selector: Some(LabelSelector::default()),
        pod_selector: Some(LabelSelector {
            match_labels: Some(BTreeMap::from([("app.kubernetes.io/name".into(), "photon-operator".into())])),
            ..Default::default()
        }),
        ..Default::default()
    };
    NetworkPolicy {
        metadata: ObjectMeta {
            name: Some(network_policy_name(&svc.name())),
            namespace: Some(svc.ns()),
            labels: Some(originated(svc)),
            owner_references: Some(vec![svc.owner()]),
            ..Default::default()
        },
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(service_pods.clone()),
            policy_types: Some(vec!["Ingress".into()]),
            ingress: Some(vec![
                NetworkPolicyIngressRule {
                    from: Some(vec![NetworkPolicyPeer { pod_selector: Some(service_pods), ..Default::default() }]),
                    ports: None,
                },
                NetworkPolicyIngressRule { from: None, ports: Some(serve_ports) },
                NetworkPolicyIngressRule { from: Some(vec![operator]), ports: Some(vec![port(ports.dashboard())]) },
            ]),
            ..Default::default()
        }),
    }
}

/// The key of a cluster Secret holding the REST API token (KubeRay's key for it).
pub const AUTH_TOKEN_KEY: &str = "auth_token";
/// The key of a cluster Secret holding the token Photon's processes present to each other.
pub const CLUSTER_TOKEN_KEY: &str = "cluster_token";

/// A cluster's credentials Secret, named as KubeRay names a cluster's authentication Secret
/// (`<cluster>`): the REST API token and the internal cluster token, new random values. The
/// head and proxy pods read them from it; the head hands replica pods theirs.
pub fn cluster_secret(svc: &PhotonService, cluster: &str, auth_token: String, cluster_token: String) -> Secret {
    let mut labels = originated(svc);
    labels.insert(keys::CLUSTER.into(), cluster.into());
    Secret {
        metadata: ObjectMeta {
            name: Some(cluster.into()),
            namespace: Some(svc.ns()),
            labels: Some(labels),
            owner_references: Some(vec![svc.owner()]),
            ..Default::default()
        },
        data: Some(BTreeMap::from([
            (AUTH_TOKEN_KEY.into(), k8s_openapi::ByteString(auth_token.into_bytes())),
            (CLUSTER_TOKEN_KEY.into(), k8s_openapi::ByteString(cluster_token.into_bytes())),
        ])),
        type_: Some("Opaque".into()),
        ..Default::default()
    }
}

/// Sets `variable` from `key` of the cluster's Secret, unless the template sets it itself.
fn secret_env(container: &mut Container, cluster: &str, variable: &str, key: &str) {
    let env = container.env.get_or_insert_with(Vec::new);
    if env.iter().any(|e| e.name == variable) {
        return;
    }
    env.push(EnvVar {
        name: variable.into(),
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector { name: cluster.into(), key: key.into(), optional: None }),
            ..Default::default()
        }),
        ..Default::default()
    });
}

fn first_container(template: &mut PodTemplateSpec) -> &mut Container {
    let spec = template.spec.get_or_insert_with(Default::default);
    if spec.containers.is_empty() {
        spec.containers.push(Container { name: "photon".into(), ..Default::default() });
    }
    &mut spec.containers[0]
}

/// The template replica pods are made from: the first worker group's (the head's when there
/// is none), with the Photon image.
pub fn replica_template(svc: &PhotonService, settings: &OperatorSettings) -> PodTemplateSpec {
    let cluster = &svc.spec.ray_cluster_config;
    let mut template = cluster
        .worker_group_specs
        .first()
        .map(|g| g.template.clone())
        .unwrap_or_else(|| cluster.head_group_spec.template.clone());
    let container = first_container(&mut template);
    container.image = Some(code_image(container.image.as_deref(), svc, settings));
    template
}

fn with_annotations(meta: &mut ObjectMeta, extra: BTreeMap<String, String>) {
    let mut annotations = meta.annotations.take().unwrap_or_default();
    annotations.extend(extra);
    meta.annotations = Some(annotations);
}

/// The head pod of `cluster`.
pub fn head_pod(svc: &PhotonService, cluster: &str, settings: &OperatorSettings) -> Pod {
    let spec = &svc.spec.ray_cluster_config;
    let ports = head_ports(spec);
    let ns = svc.ns();
    let mut template = spec.head_group_spec.template.clone();
    let mut meta = template.metadata.take().unwrap_or_default();
    meta.name = Some(head_pod_name(cluster));
    meta.namespace = Some(ns.clone());
    let mut labels = meta.labels.take().unwrap_or_default();
    labels.extend(spec.head_group_spec.labels.clone().unwrap_or_default());
    labels.extend(node_labels(svc, cluster, "head", "headgroup"));
    labels.insert(keys::SERVE.into(), "false".into());
    meta.labels = Some(labels);
    let mut annotations = svc.metadata.annotations.clone().unwrap_or_default();
    annotations.remove("kubectl.kubernetes.io/last-applied-configuration");
    annotations.insert(keys::HASH.into(), cluster_hash(spec, None));
    annotations.insert(keys::NUM_WORKER_GROUPS.into(), spec.worker_group_specs.len().to_string());
    annotations.insert(keys::OPERATOR_VERSION.into(), env!("CARGO_PKG_VERSION").into());
    with_annotations(&mut meta, annotations);
    meta.owner_references = Some(vec![svc.owner()]);

    let replica_template = serde_json::to_string(&replica_template(svc, settings)).unwrap_or_default();
    let advertise = format!("{}.{ns}.svc.{}", cluster_head_service_name(cluster), settings.cluster_domain);
    let pod_spec = template.spec.get_or_insert_with(Default::default);
    if pod_spec.service_account_name.as_deref().unwrap_or_default().is_empty() {
        pod_spec.service_account_name = Some(head_account_name(&svc.name()));
    }
    pod_spec.volumes.get_or_insert_with(Vec::new).push(Volume {
        name: "photon-state".into(),
        empty_dir: Some(EmptyDirVolumeSource::default()),
        ..Default::default()
    });
    let container = first_container(&mut template);
    container.image = Some(code_image(container.image.as_deref(), svc, settings));
    container.command = Some(vec!["photon".into()]);
    let mut args: Vec<String> = vec![
        "start".into(),
        "--orchestrator=kubernetes".into(),
        "--dashboard-host=0.0.0.0".into(),
        format!("--dashboard-port={}", ports.dashboard()),
        "--http-host=0.0.0.0".into(),
        format!("--http-port={}", ports.serve()),
        "--controller-host=0.0.0.0".into(),
        format!("--controller-port={}", ports.controller()),
        format!("--advertise-host={advertise}"),
        format!("--state-store=file:{STATE_DIR}/checkpoint.json"),
    ];
    if let Some(grpc) = ports.grpc() {
        args.push(format!("--grpc-port={grpc}"));
    }
    container.args = Some(args);
    if container.ports.as_ref().is_none_or(Vec::is_empty) {
        container.ports = Some(
            ports
                .named
                .iter()
                .map(|(name, port)| ContainerPort {
                    name: Some(name.clone()),
                    container_port: *port,
                    ..Default::default()
                })
                .collect(),
        );
    }
    let env = container.env.get_or_insert_with(Vec::new);
    env.extend([
        field_env(head_env::NAMESPACE, "metadata.namespace"),
        field_env(head_env::OWNER_NAME, "metadata.name"),
        field_env(head_env::OWNER_UID, "metadata.uid"),
        plain_env(head_env::CLUSTER, cluster.into()),
        plain_env(head_env::SERVICE, svc.name()),
        plain_env(head_env::REPLICA_TEMPLATE, replica_template),
    ]);
    // The head turns the REST API's token authentication on (a token exists, as `ray start
    // --head` does) and presents the cluster token; it hands replica pods their credentials.
    secret_env(container, cluster, "RAY_AUTH_TOKEN", AUTH_TOKEN_KEY);
    secret_env(container, cluster, "PHOTON_CLUSTER_TOKEN", CLUSTER_TOKEN_KEY);
    container.volume_mounts.get_or_insert_with(Vec::new).push(VolumeMount {
        name: "photon-state".into(),
        mount_path: STATE_DIR.into(),
        ..Default::default()
    });
    if container.readiness_probe.is_none() {
        container.readiness_probe = Some(http_probe("/api/gcs_healthz", ports.dashboard(), 1, 5, 10));
    }
    if container.liveness_probe.is_none() {
        container.liveness_probe = Some(http_probe("/api/gcs_healthz", ports.dashboard(), 30, 5, 120));
    }
    if let Some(spec) = template.spec.as_mut() {
        photon_orchestrator::kubernetes::restrict(spec);
    }
    Pod { metadata: meta, spec: template.spec, status: None }
}

/// How many proxy pods a worker group wants.
pub fn desired_workers(group: &crate::types::WorkerGroupSpec) -> i32 {
    if group.suspend == Some(true) {
        return 0;
    }
    let min = group.min_replicas.unwrap_or(0).max(0);
    let max = group.max_replicas.unwrap_or(i32::MAX).max(min);
    group.replicas.unwrap_or(0).clamp(min, max) * group.num_of_hosts.unwrap_or(1).max(1)
}

/// The proxy pods of every worker group of `cluster`.
pub fn worker_pods(svc: &PhotonService, cluster: &str, settings: &OperatorSettings) -> Vec<Pod> {
    let spec = &svc.spec.ray_cluster_config;
    let ports = head_ports(spec);
    let ns = svc.ns();
    let controller = format!(
        "http://{}.{ns}.svc.{}:{}",
        cluster_head_service_name(cluster),
        settings.cluster_domain,
        ports.controller()
    );
    let mut pods = Vec::new();
    for group in &spec.worker_group_specs {
        for index in 0..desired_workers(group) {
            let mut template = group.template.clone();
            let mut meta = template.metadata.take().unwrap_or_default();
            meta.name = Some(format!("{cluster}-{}-worker-{index}", group.group_name));
            meta.namespace = Some(ns.clone());
            let mut labels = meta.labels.take().unwrap_or_default();
            labels.extend(group.labels.clone().unwrap_or_default());
            labels.extend(node_labels(svc, cluster, "worker", &group.group_name));
            labels.insert(keys::SERVE.into(), "true".into());
            labels.insert("ray.io/worker-group-replica-index".into(), index.to_string());
            meta.labels = Some(labels);
            meta.owner_references = Some(vec![svc.owner()]);
            let container = first_container(&mut template);
            container.image = Some(photon_image(container.image.as_deref(), settings));
            container.command = Some(vec!["photon".into()]);
            let mut args = vec![
                "proxy".into(),
                format!("--controller-address={controller}"),
                format!("--http-port={}", ports.serve()),
            ];
            if let Some(grpc) = ports.grpc() {
                args.push(format!("--grpc-port={grpc}"));
            }
            container.args = Some(args);
            secret_env(container, cluster, "PHOTON_CLUSTER_TOKEN", CLUSTER_TOKEN_KEY);
            if container.ports.as_ref().is_none_or(Vec::is_empty) {
                let mut declared = vec![ContainerPort {
                    name: Some("serve".into()),
                    container_port: ports.serve(),
                    ..Default::default()
                }];
                if let Some(grpc) = ports.grpc() {
                    declared.push(ContainerPort {
                        name: Some("serve-grpc".into()),
                        container_port: grpc,
                        ..Default::default()
                    });
                }
                container.ports = Some(declared);
            }
            // A proxy without routes answers 503 here, so it leaves the serve Service at once
            // (KubeRay's RayService worker probe, failureThreshold 1).
            if container.readiness_probe.is_none() {
                container.readiness_probe = Some(http_probe("/-/healthz", ports.serve(), 1, 2, 1));
            }
            if let Some(spec) = template.spec.as_mut() {
                photon_orchestrator::kubernetes::restrict(spec);
            }
            pods.push(Pod { metadata: meta, spec: template.spec, status: None });
        }
    }
    pods
}

fn service_ports(ports: &Ports) -> Vec<ServicePort> {
    ports
        .named
        .iter()
        .map(|(name, port)| ServicePort {
            name: Some(name.clone()),
            port: *port,
            target_port: Some(IntOrString::Int(*port)),
            app_protocol: Some("tcp".into()),
            protocol: Some("TCP".into()),
            ..Default::default()
        })
        .collect()
}

fn head_service_spec(svc: &PhotonService, cluster: &str) -> ServiceSpec {
    let spec = &svc.spec.ray_cluster_config;
    let service_type = spec.head_group_spec.service_type.clone().unwrap_or_else(|| "ClusterIP".into());
    let headless = service_type == "ClusterIP";
    ServiceSpec {
        selector: Some(head_selector(cluster)),
        ports: Some(service_ports(&head_ports(spec))),
        type_: Some(service_type),
        cluster_ip: headless.then(|| "None".into()),
        publish_not_ready_addresses: headless.then_some(true),
        ..Default::default()
    }
}

/// The cluster's own head Service (headless for ClusterIP, as KubeRay ≥ 1.2).
pub fn cluster_head_service(svc: &PhotonService, cluster: &str) -> Service {
    let mut labels = originated(svc);
    labels.extend(head_selector(cluster));
    let annotations = svc.spec.ray_cluster_config.head_service_annotations.clone();
    Service {
        metadata: ObjectMeta {
            name: Some(cluster_head_service_name(cluster)),
            namespace: Some(svc.ns()),
            labels: Some(labels),
            annotations,
            owner_references: Some(vec![svc.owner()]),
            ..Default::default()
        },
        spec: Some(head_service_spec(svc, cluster)),
        status: None,
    }
}

/// `<service>-head-svc`, pointing at `cluster`'s head.
pub fn head_service(svc: &PhotonService, cluster: &str) -> Service {
    let mut labels = originated(svc);
    labels.insert(keys::NODE_TYPE.into(), "head".into());
    labels.insert(keys::IDENTIFIER.into(), format!("{}-head", svc.name()));
    Service {
        metadata: ObjectMeta {
            name: Some(head_service_name(&svc.name())),
            namespace: Some(svc.ns()),
            labels: Some(labels),
            owner_references: Some(vec![svc.owner()]),
            ..Default::default()
        },
        spec: Some(head_service_spec(svc, cluster)),
        status: None,
    }
}

/// `<service>-serve-svc`, selecting `cluster`'s pods that take serve traffic. Fails when no
/// port is named `serve` or `serve-*` and the override lists none.
pub fn serve_service(svc: &PhotonService, cluster: &str) -> Result<Service, String> {
    let spec = &svc.spec.ray_cluster_config;
    let auto: Vec<ServicePort> = service_ports(&head_ports(spec))
        .into_iter()
        .filter(|p| p.name.as_deref().is_some_and(|n| n == "serve" || n.starts_with("serve-")))
        .collect();
    let overrides = svc.spec.serve_service.clone().unwrap_or_default();
    let user_ports = overrides.spec.as_ref().and_then(|s| s.ports.clone()).unwrap_or_default();
    let ports: Vec<ServicePort> = if auto.is_empty() {
        user_ports
    } else {
        auto.into_iter().map(|p| user_ports.iter().find(|u| u.name == p.name).cloned().unwrap_or(p)).collect()
    };
    if ports.is_empty() {
        return Err(
            "the head container declares no port named serve or serve-*, and serveService lists no ports".into()
        );
    }
    let mut labels = overrides.metadata.labels.clone().unwrap_or_default();
    labels.extend(originated(svc));
    labels.insert(keys::SERVE.into(), format!("{}-serve", svc.name()));
    let service_type = overrides
        .spec
        .as_ref()
        .and_then(|s| s.type_.clone())
        .or_else(|| spec.head_group_spec.service_type.clone())
        .unwrap_or_else(|| "ClusterIP".into());
    Ok(Service {
        metadata: ObjectMeta {
            name: Some(serve_service_name(svc)),
            namespace: Some(svc.ns()),
            labels: Some(labels),
            annotations: overrides.metadata.annotations.clone(),
            owner_references: Some(vec![svc.owner()]),
            ..Default::default()
        },
        spec: Some(ServiceSpec {
            selector: Some(BTreeMap::from([
                (keys::CLUSTER.to_string(), cluster.to_string()),
                (keys::SERVE.to_string(), "true".to_string()),
            ])),
            ports: Some(ports),
            type_: Some(service_type),
            ..Default::default()
        }),
        status: None,
    })
}

/// The service account, role and binding that let head pods manage replica pods (and nothing
/// else) in their namespace.
pub fn head_rbac(svc: &PhotonService) -> (ServiceAccount, Role, RoleBinding) {
    let name = head_account_name(&svc.name());
    let meta = ObjectMeta {
        name: Some(name.clone()),
        namespace: Some(svc.ns()),
        labels: Some(originated(svc)),
        owner_references: Some(vec![svc.owner()]),
        ..Default::default()
    };
    let account = ServiceAccount { metadata: meta.clone(), ..Default::default() };
    let rule = |resource: &str, verbs: &[&str]| PolicyRule {
        api_groups: Some(vec![String::new()]),
        resources: Some(vec![resource.into()]),
        verbs: verbs.iter().map(|v| v.to_string()).collect(),
        ..Default::default()
    };
    let role = Role {
        metadata: meta.clone(),
        rules: Some(vec![
            rule("pods", &["get", "list", "watch", "create", "delete"]),
            // Replica pods name the head pod as owner with blockOwnerDeletion, which clusters
            // that enforce owner-reference permissions check against this.
            rule("pods/finalizers", &["update"]),
        ]),
    };
    let subject =
        |name: String| Subject { kind: "ServiceAccount".into(), name, namespace: Some(svc.ns()), ..Default::default() };
    let mut subjects = vec![subject(name.clone())];
    // A head template with a service account of its own gets the same rights.
    let own =
        svc.spec.ray_cluster_config.head_group_spec.template.spec.as_ref().and_then(|s| s.service_account_name.clone());
    if let Some(own) = own.filter(|own| !own.is_empty() && *own != name) {
        subjects.push(subject(own));
    }
    let binding = RoleBinding {
        metadata: meta,
        role_ref: RoleRef { api_group: "rbac.authorization.k8s.io".into(), kind: "Role".into(), name },
        subjects: Some(subjects),
    };
    (account, role, binding)
}

/// The annotation that bounds how long a service may stay initializing.
pub const INITIALIZING_TIMEOUT: &str = "ray.io/initializing-timeout";

/// A Go duration (`30m`, `1h30m`, `90s`, `500ms`) or a number of seconds, in seconds.
pub fn parse_duration(text: &str) -> Option<f64> {
    let text = text.trim();
    if let Ok(secs) = text.parse::<f64>() {
        return Some(secs);
    }
    let mut total = 0.0;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
        let number: f64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let (factor, len) = [("ms", 1e-3), ("h", 3600.0), ("m", 60.0), ("s", 1.0)]
            .iter()
            .find(|(unit, _)| rest.starts_with(unit))
            .map(|(unit, f)| (*f, unit.len()))?;
        total += number * factor;
        rest = &rest[len..];
    }
    (!text.is_empty()).then_some(total)
}

/// The `ray.io/initializing-timeout` annotation, when set.
pub fn initializing_timeout(svc: &PhotonService) -> Result<Option<f64>, String> {
    let Some(text) = svc.metadata.annotations.as_ref().and_then(|a| a.get(INITIALIZING_TIMEOUT)) else {
        return Ok(None);
    };
    match parse_duration(text) {
        Some(secs) if secs > 0.0 => Ok(Some(secs)),
        _ => Err(format!(
            "metadata.annotations[{INITIALIZING_TIMEOUT}]: {text:?} must be a positive duration (30m, 1h) or number of seconds"
        )),
    }
}

/// Checks what KubeRay checks (section 1.7 of the spec), naming the field.
pub fn validate(svc: &PhotonService) -> Result<(), String> {
    let name = svc.name();
    let dns1035 = !name.is_empty()
        && name.len() <= 47
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.ends_with('-');
    if !dns1035 {
        return Err(format!(
            "metadata.name: {name:?} must be a DNS-1035 label of at most 47 characters (cluster names add 6, Service names -serve-svc)"
        ));
    }
    initializing_timeout(svc)?;
    let spec = &svc.spec;
    let cluster = &spec.ray_cluster_config;
    let no_containers = |t: &PodTemplateSpec| t.spec.as_ref().is_none_or(|s| s.containers.is_empty());
    if no_containers(&cluster.head_group_spec.template) {
        return Err(
            "spec.rayClusterConfig.headGroupSpec.template.spec.containers: at least one container is required".into()
        );
    }
    if cluster
        .head_group_spec
        .head_service
        .as_ref()
        .and_then(|s| s.metadata.name.as_ref())
        .is_some_and(|n| !n.is_empty())
    {
        return Err("spec.rayClusterConfig.headGroupSpec.headService.metadata.name: must be empty (the old and new cluster would share it during an upgrade)".into());
    }
    for (i, g) in cluster.worker_group_specs.iter().enumerate() {
        let path = format!("spec.rayClusterConfig.workerGroupSpecs[{i}]");
        if no_containers(&g.template) {
            return Err(format!("{path}.template.spec.containers: at least one container is required"));
        }
        let dns1123 = !g.group_name.is_empty()
            && g.group_name.len() <= 40
            && g.group_name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            && !g.group_name.starts_with('-')
            && !g.group_name.ends_with('-');
        if !dns1123 {
            return Err(format!(
                "{path}.groupName: {:?} must be a DNS-1123 label of at most 40 characters (it names the group's pods)",
                g.group_name
            ));
        }
        if cluster.worker_group_specs[..i].iter().any(|other| other.group_name == g.group_name) {
            return Err(format!("{path}.groupName: {:?} is used by an earlier worker group", g.group_name));
        }
        let (min, max) = (g.min_replicas.unwrap_or(0), g.max_replicas.unwrap_or(i32::MAX));
        if min < 0 || max < 0 || g.replicas.is_some_and(|r| r < 0) {
            return Err(format!("{path}: replicas, minReplicas and maxReplicas must be ≥ 0"));
        }
        if min > max {
            return Err(format!("{path}: minReplicas ({min}) must be ≤ maxReplicas ({max})"));
        }
    }
    if let Some(t) = spec.upgrade_strategy.as_ref().and_then(|u| u.type_.as_deref()) {
        match t {
            "NewCluster" | "None" => {}
            "NewClusterWithIncrementalUpgrade" => {
                return Err("spec.upgradeStrategy.type: NewClusterWithIncrementalUpgrade is not supported by Photon (it needs the Gateway API); use NewCluster or None".into())
            }
            other => {
                return Err(format!("spec.upgradeStrategy.type: must be NewCluster, NewClusterWithIncrementalUpgrade or None, got {other:?}"))
            }
        }
    }
    if spec.ray_cluster_deletion_delay_seconds.is_some_and(|d| d < 0) {
        return Err("spec.rayClusterDeletionDelaySeconds: must be ≥ 0".into());
    }
    if let Some(text) = &spec.serve_config_v2 {
        if let Err(e) = photon_config::yaml::from_str(text) {
            return Err(format!("spec.serveConfigV2: not YAML: {e}"));
        }
    }
    Ok(())
}

/// The serve config as the JSON body of `PUT /api/serve/applications/`.
pub fn serve_config_json(text: &str) -> Result<Value, String> {
    photon_config::yaml::from_str(text).map_err(|e| format!("spec.serveConfigV2: {e}"))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn sample() -> PhotonService {
        let yaml = include_str!("../../deploy/kubernetes/samples/photon-service.sample.yaml");
        let mut svc: PhotonService = serde_yaml_ng::from_str(yaml).expect("the sample parses");
        svc.metadata.namespace = Some("ns".into());
        svc.metadata.uid = Some("uid-1".into());
        svc
    }

    #[test]
    fn hash_ignores_worker_counts_and_tolerations_but_not_images() {
        let svc = sample();
        let spec = svc.spec.ray_cluster_config.clone();
        let mut scaled = spec.clone();
        scaled.worker_group_specs[0].replicas = Some(4);
        scaled.worker_group_specs[0].max_replicas = Some(9);
        assert_eq!(cluster_hash(&spec, None), cluster_hash(&scaled, None));
        let mut changed = spec.clone();
        changed.head_group_spec.template.spec.as_mut().unwrap().containers[0].image = Some("other:1".into());
        assert_ne!(cluster_hash(&spec, None), cluster_hash(&changed, None));
        let mut appended = spec.clone();
        appended.worker_group_specs.push(appended.worker_group_specs[0].clone());
        assert_ne!(cluster_hash(&spec, None), cluster_hash(&appended, None));
        assert_eq!(cluster_hash(&spec, None), cluster_hash(&appended, Some(1)));
    }

    /// Settings that know the sample's applications as built in, as the operator's do.
    pub(crate) fn settings() -> OperatorSettings {
        let builtin_import_paths = vec!["fruit.deployment_graph".into(), "conditional_dag.serve_dag".into()];
        OperatorSettings { builtin_import_paths, ..Default::default() }
    }

    #[test]
    fn a_service_with_python_code_runs_its_head_and_replicas_on_the_python_image() {
        let settings = settings();
        let builtin = sample();
        let head_image = |svc: &PhotonService| {
            head_pod(svc, "c", &settings).spec.unwrap().containers[0].image.clone().unwrap_or_default()
        };
        let replica_image = |svc: &PhotonService| {
            replica_template(svc, &settings).spec.unwrap().containers[0].image.clone().unwrap_or_default()
        };
        assert_eq!((head_image(&builtin), replica_image(&builtin)), (settings.image.clone(), settings.image.clone()));
        let mut python = sample();
        let config =
            python.spec.serve_config_v2.clone().unwrap().replace("fruit.deployment_graph", "serve_app:deployment");
        python.spec.serve_config_v2 = Some(config);
        assert_eq!(
            (head_image(&python), replica_image(&python)),
            (settings.python_image.clone(), settings.python_image.clone())
        );
        // An image of the user's own is kept.
        python.spec.ray_cluster_config.head_group_spec.template.spec.as_mut().unwrap().containers[0].image =
            Some("my-app:1".into());
        assert_eq!(head_image(&python), "my-app:1");
    }

    #[test]
    fn objects_carry_kuberay_names_labels_ports_and_selectors() {
        let svc = sample();
        let settings = settings();
        let cluster = "rayservice-sample-x7k2p";
        let head = head_pod(&svc, cluster, &settings);
        assert_eq!(head.metadata.name.as_deref(), Some("rayservice-sample-x7k2p-head"));
        let labels = head.metadata.labels.clone().unwrap();
        assert_eq!(labels[keys::SERVE], "false");
        assert_eq!(labels[keys::NODE_TYPE], "head");
        assert_eq!(labels[keys::GROUP], "headgroup");
        let c = &head.spec.as_ref().unwrap().containers[0];
        assert_eq!(c.image.as_deref(), Some(settings.image.as_str()), "the Ray image is replaced");
        assert!(c.args.as_ref().unwrap().contains(&"--orchestrator=kubernetes".to_string()));
        let workers = worker_pods(&svc, cluster, &settings);
        assert_eq!(workers.len(), 1);
        assert_eq!(workers[0].metadata.name.as_deref(), Some("rayservice-sample-x7k2p-small-group-worker-0"));
        assert_eq!(workers[0].metadata.labels.as_ref().unwrap()[keys::SERVE], "true");
        let serve = serve_service(&svc, cluster).unwrap();
        assert_eq!(serve.metadata.name.as_deref(), Some("rayservice-sample-serve-svc"));
        let serve_spec = serve.spec.unwrap();
        assert_eq!(serve_spec.ports.as_ref().unwrap().iter().map(|p| p.port).collect::<Vec<_>>(), vec![8000]);
        assert_eq!(serve_spec.selector.unwrap()[keys::CLUSTER], cluster);
        let head_svc = cluster_head_service(&svc, cluster);
        assert_eq!(head_svc.metadata.name.as_deref(), Some("rayservice-sample-x7k2p-head-svc"));
        assert_eq!(head_svc.spec.as_ref().unwrap().cluster_ip.as_deref(), Some("None"));
        let names: Vec<_> = head_svc.spec.unwrap().ports.unwrap().into_iter().filter_map(|p| p.name).collect();
        assert_eq!(names, ["dashboard", "gcs-server", "serve"]);
    }

    #[test]
    fn validation_names_the_field() {
        let mut svc = sample();
        svc.metadata.name = Some("x".repeat(48));
        assert!(validate(&svc).unwrap_err().starts_with("metadata.name"));
        let mut svc = sample();
        svc.spec.upgrade_strategy =
            Some(crate::types::UpgradeStrategy { type_: Some("Sometimes".into()), ..Default::default() });
        assert!(validate(&svc).unwrap_err().starts_with("spec.upgradeStrategy.type"));
        let mut svc = sample();
        svc.spec.ray_cluster_config.worker_group_specs[0].min_replicas = Some(7);
        assert!(validate(&svc).unwrap_err().contains("workerGroupSpecs[0]"));
        let mut svc = sample();
        svc.spec.ray_cluster_config.worker_group_specs[0].group_name = "Small_Group".into();
        assert!(validate(&svc).unwrap_err().starts_with("spec.rayClusterConfig.workerGroupSpecs[0].groupName"));
        let mut svc = sample();
        let twin = svc.spec.ray_cluster_config.worker_group_specs[0].clone();
        svc.spec.ray_cluster_config.worker_group_specs.push(twin);
        assert!(validate(&svc).unwrap_err().contains("used by an earlier worker group"));
        assert!(validate(&sample()).is_ok());
    }

    #[test]
    fn durations_are_go_durations_or_seconds() {
        assert_eq!(parse_duration("30m"), Some(1800.0));
        assert_eq!(parse_duration("1h30m"), Some(5400.0));
        assert_eq!(parse_duration("90"), Some(90.0));
        assert_eq!(parse_duration("500ms"), Some(0.5));
        assert_eq!(parse_duration("soon"), None);
        let mut svc = sample();
        svc.metadata.annotations = Some([(INITIALIZING_TIMEOUT.to_string(), "-5".to_string())].into());
        assert!(validate(&svc).unwrap_err().starts_with("metadata.annotations[ray.io/initializing-timeout]"));
    }

    #[test]
    fn serve_config_converts_to_json() {
        let v = serve_config_json(
            "applications:\n- name: a\n  import_path: x.y\n  deployments:\n  - name: D\n    num_replicas: 2\n",
        )
        .unwrap();
        assert_eq!(v["applications"][0]["deployments"][0]["num_replicas"], 2);
    }
}
