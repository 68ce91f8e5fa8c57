//! The Kubernetes backend: one pod per replica, made from the replica pod template (the worker
//! group's template that the operator hands the head), with requests from `ray_actor_options`,
//! labels naming service, cluster, application, deployment, version and replica, and an owner
//! reference to the head pod so that the cluster's garbage collection removes them.
//!
//! A watch on the cluster's replica pods (keyed by name, relists included) turns a deleted pod,
//! a pod that ended, and a running pod whose Ready condition turned False into
//! [`ReplicaEvent::Exited`]; the controller then starts a replacement. A restarted head finds
//! the live pods by label at start ([`KubernetesOrchestrator::connect`]) and adopts those its
//! checkpoint names instead of creating them again.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{
    Capabilities, Container, EmptyDirVolumeSource, EnvVar, EnvVarSource, ObjectFieldSelector, Pod, PodSecurityContext,
    PodSpec, PodTemplateSpec, ResourceRequirements, SeccompProfile, SecurityContext, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::runtime::watcher;
use kube::Api;
use tokio::sync::{mpsc, Notify};

use crate::{Orchestrator, OrchestratorError, ReplicaEvent, ReplicaSpec, ERROR_FILE_ENV, USER_CONFIG_ENV};

/// Label keys on replica pods. `ray.io/cluster` is KubeRay's, so tools that select a
/// cluster's pods find these too.
pub mod labels {
    /// The PhotonService the pod belongs to.
    pub const SERVICE: &str = "photon.io/service";
    /// The cluster (head and its replicas) the pod belongs to.
    pub const CLUSTER: &str = "ray.io/cluster";
    /// The application (label-safe form; the exact name is in the annotation of that key).
    pub const APPLICATION: &str = "photon.io/application";
    /// The deployment (label-safe form; the exact name is in the annotation of that key).
    pub const DEPLOYMENT: &str = "photon.io/deployment";
    /// The deployment version the replica runs.
    pub const VERSION: &str = "photon.io/version";
    /// The replica id; present only on replica pods.
    pub const REPLICA: &str = "photon.io/replica";
    /// `replica` on replica pods.
    pub const COMPONENT: &str = "app.kubernetes.io/component";
}

/// Where replica pods go and what they are made from.
#[derive(Debug, Clone)]
pub struct KubernetesSettings {
    /// Namespace of the pods.
    pub namespace: String,
    /// Cluster name (`ray.io/cluster`).
    pub cluster: String,
    /// PhotonService name, empty when the head runs without the operator.
    pub service: String,
    /// The replica pod template; its first container runs the replica.
    pub template: PodTemplateSpec,
    /// Owner of the replica pods (the head pod), so deleting the cluster removes them.
    pub owner: Option<OwnerReference>,
}

/// Environment variables a head reads its Kubernetes settings from (the operator sets them
/// on the head pod).
pub mod env {
    /// Namespace (downward API `metadata.namespace`).
    pub const NAMESPACE: &str = "PHOTON_KUBERNETES_NAMESPACE";
    /// Cluster name.
    pub const CLUSTER: &str = "PHOTON_KUBERNETES_CLUSTER";
    /// PhotonService name.
    pub const SERVICE: &str = "PHOTON_KUBERNETES_SERVICE";
    /// The replica pod template as JSON (a `PodTemplateSpec`).
    pub const REPLICA_TEMPLATE: &str = "PHOTON_KUBERNETES_REPLICA_TEMPLATE";
    /// The head pod's name (downward API `metadata.name`): the replica pods' owner.
    pub const OWNER_NAME: &str = "PHOTON_KUBERNETES_OWNER_NAME";
    /// The head pod's uid (downward API `metadata.uid`).
    pub const OWNER_UID: &str = "PHOTON_KUBERNETES_OWNER_UID";
}

impl KubernetesSettings {
    /// Reads the settings from the environment ([`env`]); a missing or bad variable is named.
    pub fn from_env() -> Result<Self, OrchestratorError> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let need = |name: &str| {
            var(name)
                .ok_or_else(|| OrchestratorError::Setup(format!("{name} must be set for --orchestrator kubernetes")))
        };
        let template = serde_json::from_str(&need(env::REPLICA_TEMPLATE)?)
            .map_err(|e| OrchestratorError::Setup(format!("{}: not a PodTemplateSpec: {e}", env::REPLICA_TEMPLATE)))?;
        let owner = match (var(env::OWNER_NAME), var(env::OWNER_UID)) {
            (Some(name), Some(uid)) => Some(pod_owner(name, uid)),
            _ => None,
        };
        Ok(KubernetesSettings {
            namespace: var(env::NAMESPACE).unwrap_or_else(|| "default".into()),
            cluster: need(env::CLUSTER)?,
            service: var(env::SERVICE).unwrap_or_default(),
            template,
            owner,
        })
    }

    /// The label selector of this cluster's replica pods.
    pub fn selector(&self) -> String {
        format!("{}={},{}", labels::CLUSTER, self.cluster, labels::REPLICA)
    }
}

/// A controller owner reference to a pod (the head pod owns its replica pods).
pub fn pod_owner(name: String, uid: String) -> OwnerReference {
    OwnerReference {
        api_version: "v1".into(),
        kind: "Pod".into(),
        name,
        uid,
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// A label value from any name: at most 63 characters of `[A-Za-z0-9._-]`, starting and
/// ending with an alphanumeric character.
pub fn label_value(name: &str) -> String {
    let cleaned: String =
        name.chars().map(|c| if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') { c } else { '_' }).collect();
    let cut: String = cleaned.chars().take(63).collect();
    cut.trim_matches(|c: char| !c.is_ascii_alphanumeric()).to_string()
}

/// A DNS-1123 label (pod names): lowercase alphanumerics and `-`, at most `max` characters.
pub fn dns_label(name: &str, max: usize) -> String {
    let mut out = String::new();
    for c in name.chars() {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_alphanumeric() {
            out.push(c);
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    let cut: String = out.chars().take(max).collect();
    cut.trim_matches('-').to_string()
}

/// Kubernetes CPU quantity for Ray's `num_cpus` (millicores).
fn cpu_quantity(cpus: f64) -> Quantity {
    Quantity(format!("{}m", (cpus * 1000.0).ceil() as u64))
}

/// Builds the pod for one replica. Pure, so its shape is unit-tested and schema-validated.
pub fn replica_pod(settings: &KubernetesSettings, spec: &ReplicaSpec) -> Pod {
    let template = settings.template.clone();
    let mut meta = template.metadata.unwrap_or_default();
    let name_budget = 63 - spec.replica_id.len().min(20) - 1;
    let prefix = dns_label(&format!("{}-{}", settings.cluster, spec.deployment), name_budget);
    meta.name = Some(format!("{prefix}-{}", dns_label(&spec.replica_id, 20)));
    meta.generate_name = None;
    meta.namespace = Some(settings.namespace.clone());
    let mut pod_labels = meta.labels.take().unwrap_or_default();
    // A replica pod never receives serve traffic directly: proxies route to it.
    pod_labels.remove("ray.io/serve");
    pod_labels.insert(labels::CLUSTER.into(), settings.cluster.clone());
    if !settings.service.is_empty() {
        pod_labels.insert(labels::SERVICE.into(), label_value(&settings.service));
    }
    pod_labels.insert(labels::APPLICATION.into(), label_value(&spec.app));
    pod_labels.insert(labels::DEPLOYMENT.into(), label_value(&spec.deployment));
    pod_labels.insert(labels::VERSION.into(), spec.version.to_string());
    pod_labels.insert(labels::REPLICA.into(), label_value(&spec.replica_id));
    pod_labels.insert(labels::COMPONENT.into(), "replica".into());
    pod_labels.insert("app.kubernetes.io/name".into(), "photon".into());
    meta.labels = Some(pod_labels);
    let mut annotations = meta.annotations.take().unwrap_or_default();
    annotations.insert(labels::APPLICATION.into(), spec.app.clone());
    annotations.insert(labels::DEPLOYMENT.into(), spec.deployment.clone());
    annotations.insert(labels::REPLICA.into(), spec.replica_id.clone());
    meta.annotations = Some(annotations);
    meta.owner_references = settings.owner.clone().map(|o| vec![o]);

    let mut pod_spec = template.spec.unwrap_or_default();
    if pod_spec.containers.is_empty() {
        pod_spec.containers.push(Container { name: "photon".into(), ..Default::default() });
    }
    // Replicas end on purpose (stop, failed start); the controller replaces them, not the kubelet.
    pod_spec.restart_policy = Some("Never".into());
    pod_spec.termination_grace_period_seconds = Some(spec.graceful_shutdown_timeout.as_secs() as i64 + 5);
    let container = &mut pod_spec.containers[0];
    if let Some(image) = &spec.image {
        // `runtime_env.image_uri`: the deployment's own image, with Photon and its code in it.
        container.image = Some(image.clone());
    }
    container.command = Some(vec!["photon".into()]);
    let mut args = spec.replica_args();
    args.extend(["--bind".into(), "0.0.0.0:0".into(), "--advertise-host".into(), "$(PHOTON_POD_IP)".into()]);
    container.args = Some(args);
    container.ports = None;
    container.readiness_probe = None;
    container.liveness_probe = None;
    container.termination_message_policy = Some("FallbackToLogsOnError".into());
    let mut env: Vec<EnvVar> = container
        .env
        .take()
        .unwrap_or_default()
        .into_iter()
        .filter(|e| {
            !spec.env_vars.contains_key(&e.name)
                && !spec.secret_env.0.contains_key(&e.name)
                && e.name != USER_CONFIG_ENV
        })
        .collect();
    env.push(EnvVar {
        name: "PHOTON_POD_IP".into(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector { field_path: "status.podIP".into(), ..Default::default() }),
            ..Default::default()
        }),
        ..Default::default()
    });
    // The kubelet shows what this file holds as the container's termination message.
    env.push(EnvVar { name: ERROR_FILE_ENV.into(), value: Some("/dev/termination-log".into()), ..Default::default() });
    for (k, v) in spec.env_vars.iter().chain(&spec.secret_env.0) {
        env.push(EnvVar { name: k.clone(), value: Some(v.clone()), ..Default::default() });
    }
    if let Some(cfg) = &spec.user_config {
        env.push(EnvVar { name: USER_CONFIG_ENV.into(), value: Some(cfg.to_string()), ..Default::default() });
    }
    container.env = Some(env);
    // A replica pod's size is its `ray_actor_options`, not the template's (which sizes a node
    // in KubeRay): the template's CPU, memory and GPU requests and limits do not carry over.
    let mut resources = container.resources.take().unwrap_or_default();
    for list in [resources.requests.as_mut(), resources.limits.as_mut()].into_iter().flatten() {
        for key in ["cpu", "memory", "nvidia.com/gpu"] {
            list.remove(key);
        }
    }
    let requests = resources.requests.get_or_insert_with(BTreeMap::new);
    requests.insert("cpu".into(), cpu_quantity(spec.resources.cpus));
    if spec.resources.memory_bytes > 0.0 {
        requests.insert("memory".into(), Quantity(format!("{}", spec.resources.memory_bytes.ceil() as u64)));
    }
    if spec.resources.gpus > 0.0 {
        // Kubernetes hands out whole GPUs: a fractional `num_gpus` gets one of its own.
        let gpus = Quantity(format!("{}", spec.resources.gpus.ceil() as u64));
        resources.limits.get_or_insert_with(BTreeMap::new).insert("nvidia.com/gpu".into(), gpus);
    }
    if resources.limits.as_ref().is_some_and(BTreeMap::is_empty) {
        resources.limits = None;
    }
    container.resources = Some(ResourceRequirements { ..resources });
    restrict(&mut pod_spec);
    Pod { metadata: ObjectMeta { ..meta }, spec: Some(PodSpec { ..pod_spec }), status: None }
}

/// The writable scratch directory of a pod with a read-only root filesystem.
const SCRATCH: &str = "/tmp";

/// Kubernetes' restricted security profile for a pod Photon makes, where its template sets no
/// security context of its own: not root, no privilege escalation, no capabilities, the
/// runtime's seccomp profile, a read-only root filesystem with a scratch `emptyDir` at `/tmp`
/// (Photon's sockets and its Python cache, `PHOTON_CACHE_DIR`, go there).
pub fn restrict(pod: &mut PodSpec) {
    if pod.security_context.is_none() {
        pod.security_context = Some(PodSecurityContext {
            run_as_non_root: Some(true),
            seccomp_profile: Some(SeccompProfile { type_: "RuntimeDefault".into(), ..Default::default() }),
            ..Default::default()
        });
    }
    let mut scratch_needed = false;
    for container in &mut pod.containers {
        if container.security_context.is_some() {
            continue;
        }
        container.security_context = Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            capabilities: Some(Capabilities { drop: Some(vec!["ALL".into()]), ..Default::default() }),
            read_only_root_filesystem: Some(true),
            ..Default::default()
        });
        let mounts = container.volume_mounts.get_or_insert_with(Vec::new);
        if !mounts.iter().any(|m| m.mount_path == SCRATCH) {
            mounts.push(VolumeMount {
                name: "photon-scratch".into(),
                mount_path: SCRATCH.into(),
                ..Default::default()
            });
            scratch_needed = true;
        }
        let env = container.env.get_or_insert_with(Vec::new);
        if !env.iter().any(|e| e.name == "PHOTON_CACHE_DIR") {
            env.push(EnvVar {
                name: "PHOTON_CACHE_DIR".into(),
                value: Some(format!("{SCRATCH}/photon-cache")),
                ..Default::default()
            });
        }
    }
    if scratch_needed {
        let volumes = pod.volumes.get_or_insert_with(Vec::new);
        if !volumes.iter().any(|v| v.name == "photon-scratch") {
            volumes.push(Volume {
                name: "photon-scratch".into(),
                empty_dir: Some(EmptyDirVolumeSource::default()),
                ..Default::default()
            });
        }
    }
}

/// How a pod stands, for the watch.
#[derive(Debug, PartialEq)]
enum PodView {
    /// Created or running, Ready not False after having been True.
    Alive { ready: bool },
    /// Ended, or Ready turned False: the replica is gone.
    Gone(String),
}

fn view(pod: &Pod, was_ready: bool) -> PodView {
    let status = pod.status.as_ref();
    let phase = status.and_then(|s| s.phase.as_deref()).unwrap_or("Pending");
    if pod.metadata.deletion_timestamp.is_some() {
        return PodView::Gone("pod is being deleted".into());
    }
    if matches!(phase, "Failed" | "Succeeded") {
        let terminated = status
            .and_then(|s| s.container_statuses.as_ref())
            .and_then(|cs| cs.first())
            .and_then(|c| c.state.as_ref())
            .and_then(|st| st.terminated.as_ref());
        let how = match terminated {
            Some(t) => {
                let mut how = format!("exit status: {}", t.exit_code);
                if let Some(reason) =
                    t.reason.as_deref().filter(|r| !r.is_empty() && *r != "Error" && *r != "Completed")
                {
                    how = format!("{how} ({reason})");
                }
                if let Some(msg) = t.message.as_deref().map(str::trim).filter(|m| !m.is_empty()) {
                    how = format!("{how}: {msg}");
                }
                how
            }
            None => format!("pod {phase}"),
        };
        return PodView::Gone(how);
    }
    let ready_condition = status
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"))
        .map(|c| (c.status == "True", c.reason.clone().unwrap_or_default()));
    match ready_condition {
        Some((true, _)) => PodView::Alive { ready: true },
        Some((false, reason)) if was_ready && phase == "Running" => PodView::Gone(format!(
            "pod not ready{}",
            if reason.is_empty() { String::new() } else { format!(" ({reason})") }
        )),
        _ => PodView::Alive { ready: false },
    }
}

fn replica_id_of(pod: &Pod) -> Option<String> {
    pod.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(labels::REPLICA).cloned())
        .or_else(|| pod.metadata.labels.as_ref().and_then(|l| l.get(labels::REPLICA).cloned()))
}

/// A replica pod this backend answers for.
#[derive(Debug)]
struct Entry {
    name: String,
    /// It has been Ready (a later Ready=False means it is gone).
    ready: bool,
    /// The relist epoch in which the API server was known to hold it (created, adopted or
    /// seen in the watch); a pod whose creation is still in flight is not "missing" from a
    /// relist that began before it existed.
    confirmed: Option<u64>,
    /// Why it cannot be scheduled, as last reported.
    waiting: Option<String>,
}

/// Why a pending pod cannot be scheduled (its PodScheduled condition is False).
fn unschedulable(pod: &Pod) -> Option<String> {
    let status = pod.status.as_ref()?;
    if status.phase.as_deref().is_some_and(|p| p != "Pending") {
        return None;
    }
    let scheduled = status.conditions.as_ref()?.iter().find(|c| c.type_ == "PodScheduled")?;
    if scheduled.status != "False" {
        return None;
    }
    let reason = scheduled.reason.clone().unwrap_or_else(|| "Unschedulable".into());
    let message = scheduled.message.clone().unwrap_or_default();
    let name = pod.metadata.name.clone().unwrap_or_default();
    Some(if message.is_empty() {
        format!("pod {name} cannot be scheduled ({reason})")
    } else {
        format!("pod {name} cannot be scheduled ({reason}): {message}")
    })
}

#[derive(Debug, Default)]
struct Tracked {
    /// Replica id -> its pod.
    pods: HashMap<String, Entry>,
    /// Incremented when a relist begins.
    epoch: u64,
    /// Pods that ran when the backend connected: replica id -> pod name (adoption candidates).
    found_at_start: HashMap<String, String>,
}

/// Runs replicas as pods.
pub struct KubernetesOrchestrator {
    api: Api<Pod>,
    settings: KubernetesSettings,
    tracked: Arc<Mutex<Tracked>>,
    events: mpsc::UnboundedSender<ReplicaEvent>,
    all_gone: Arc<Notify>,
    watch: tokio::task::JoinHandle<()>,
}

impl Drop for KubernetesOrchestrator {
    fn drop(&mut self) {
        self.watch.abort();
    }
}

impl KubernetesOrchestrator {
    /// Lists the cluster's live replica pods (the adoption candidates), then watches them.
    pub async fn connect(
        client: kube::Client,
        settings: KubernetesSettings,
        events: mpsc::UnboundedSender<ReplicaEvent>,
    ) -> Result<Self, OrchestratorError> {
        let api: Api<Pod> = Api::namespaced(client, &settings.namespace);
        let listed = api.list(&ListParams::default().labels(&settings.selector())).await.map_err(|e| {
            OrchestratorError::Setup(format!(
                "cannot list replica pods in namespace {} (selector {}): {e}",
                settings.namespace,
                settings.selector()
            ))
        })?;
        let mut tracked = Tracked::default();
        for pod in listed.items {
            if let (Some(id), Some(name)) = (replica_id_of(&pod), pod.metadata.name.clone()) {
                if matches!(view(&pod, false), PodView::Alive { .. }) {
                    tracked.found_at_start.insert(id, name);
                }
            }
        }
        tracing::info!(
            namespace = %settings.namespace,
            cluster = %settings.cluster,
            live = tracked.found_at_start.len(),
            "kubernetes backend: replica pods found at start"
        );
        let tracked = Arc::new(Mutex::new(tracked));
        let all_gone = Arc::new(Notify::new());
        let watch = tokio::spawn(watch_pods(
            api.clone(),
            settings.selector(),
            tracked.clone(),
            events.clone(),
            all_gone.clone(),
        ));
        Ok(KubernetesOrchestrator { api, settings, tracked, events, all_gone, watch })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Tracked> {
        self.tracked.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn delete_pod(&self, replica_id: &str, grace: Duration) {
        let Some(name) = self.lock().pods.get(replica_id).map(|e| e.name.clone()) else { return };
        let api = self.api.clone();
        let params = DeleteParams { grace_period_seconds: Some(grace.as_secs() as u32), ..Default::default() };
        tokio::spawn(async move {
            if let Err(e) = delete_ignoring_missing(&api, &name, &params).await {
                tracing::warn!(pod = %name, error = %e, "cannot delete replica pod");
            }
        });
    }
}

/// Reports a tracked replica as gone (once) and forgets it.
fn gone(
    tracked: &Mutex<Tracked>,
    all_gone: &Notify,
    events: &mpsc::UnboundedSender<ReplicaEvent>,
    replica_id: &str,
    how: String,
) {
    let empty = {
        let mut t = tracked.lock().unwrap_or_else(|e| e.into_inner());
        if t.pods.remove(replica_id).is_none() {
            return;
        }
        t.pods.is_empty()
    };
    let _ = events.send(ReplicaEvent::Exited { replica_id: replica_id.to_string(), how });
    if empty {
        all_gone.notify_waiters();
    }
}

async fn watch_pods(
    api: Api<Pod>,
    selector: String,
    tracked: Arc<Mutex<Tracked>>,
    events: mpsc::UnboundedSender<ReplicaEvent>,
    all_gone: Arc<Notify>,
) {
    let stream = watcher(api.clone(), watcher::Config::default().labels(&selector));
    tokio::pin!(stream);
    // Replica ids seen during a relist, and its epoch; tracked pods missing from it were deleted while the
    // watch was down.
    let mut relisted: Option<(Vec<String>, u64)> = None;
    while let Some(event) = stream.next().await {
        let event = match event {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(error = %e, "replica pod watch failed; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let (pod, deleted) = match event {
            watcher::Event::Init => {
                let mut t = tracked.lock().unwrap_or_else(|e| e.into_inner());
                t.epoch += 1;
                relisted = Some((Vec::new(), t.epoch));
                continue;
            }
            watcher::Event::InitDone => {
                if let Some((seen, epoch)) = relisted.take() {
                    let missing: Vec<String> = {
                        let t = tracked.lock().unwrap_or_else(|e| e.into_inner());
                        t.pods
                            .iter()
                            .filter(|(id, e)| e.confirmed.is_some_and(|c| c < epoch) && !seen.contains(id))
                            .map(|(id, _)| id.clone())
                            .collect()
                    };
                    for id in missing {
                        gone(&tracked, &all_gone, &events, &id, "pod deleted".into());
                    }
                }
                continue;
            }
            watcher::Event::InitApply(pod) | watcher::Event::Apply(pod) => (pod, false),
            watcher::Event::Delete(pod) => (pod, true),
        };
        let Some(id) = replica_id_of(&pod) else { continue };
        if let Some((seen, _)) = relisted.as_mut() {
            seen.push(id.clone());
        }
        let was_ready = {
            let mut t = tracked.lock().unwrap_or_else(|e| e.into_inner());
            let epoch = t.epoch;
            t.pods.get_mut(&id).map(|e| {
                e.confirmed.get_or_insert(epoch);
                e.ready
            })
        };
        let pod_view =
            if deleted { PodView::Gone("pod deleted".into()) } else { view(&pod, was_ready.unwrap_or(false)) };
        match (was_ready, pod_view) {
            (Some(_), PodView::Alive { ready }) => {
                let why = unschedulable(&pod);
                let changed = match tracked.lock().unwrap_or_else(|e| e.into_inner()).pods.get_mut(&id) {
                    Some(entry) => {
                        entry.ready |= ready;
                        let changed = entry.waiting != why;
                        entry.waiting = why.clone();
                        changed
                    }
                    None => false,
                };
                if changed {
                    let _ = events.send(ReplicaEvent::Waiting { replica_id: id.clone(), why });
                }
            }
            (Some(_), PodView::Gone(how)) => {
                tracing::info!(replica = %id, pod = ?pod.metadata.name, %how, "replica pod gone");
                gone(&tracked, &all_gone, &events, &id, how);
                if !deleted {
                    delete_ended(&api, &pod).await;
                }
            }
            // Not ours (an earlier head's, not adopted): an ended one is cleaned up.
            (None, PodView::Gone(_)) if !deleted => delete_ended(&api, &pod).await,
            (None, _) => {}
        }
    }
}

async fn delete_ended(api: &Api<Pod>, pod: &Pod) {
    if pod.metadata.deletion_timestamp.is_some() {
        return;
    }
    if let Some(name) = &pod.metadata.name {
        if let Err(e) = delete_ignoring_missing(api, name, &DeleteParams::default()).await {
            tracing::debug!(pod = %name, error = %e, "cannot delete ended replica pod");
        }
    }
}

/// Deletes an object; one that is already gone counts as deleted.
pub async fn delete_ignoring_missing<K>(api: &Api<K>, name: &str, params: &DeleteParams) -> Result<(), kube::Error>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    match api.delete(name, params).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(e),
    }
}

impl Orchestrator for KubernetesOrchestrator {
    fn start(&self, spec: ReplicaSpec) -> Result<(), OrchestratorError> {
        let pod = replica_pod(&self.settings, &spec);
        let name = pod.metadata.name.clone().unwrap_or_default();
        self.lock().pods.insert(
            spec.replica_id.clone(),
            Entry { name: name.clone(), ready: false, confirmed: None, waiting: None },
        );
        let (api, tracked, events, all_gone) =
            (self.api.clone(), self.tracked.clone(), self.events.clone(), self.all_gone.clone());
        tracing::info!(replica = %spec.replica_id, app = %spec.app, deployment = %spec.deployment, pod = %name, "creating replica pod");
        tokio::spawn(async move {
            match api.create(&PostParams::default(), &pod).await {
                Ok(_) => {
                    let mut t = tracked.lock().unwrap_or_else(|e| e.into_inner());
                    let epoch = t.epoch;
                    if let Some(entry) = t.pods.get_mut(&spec.replica_id) {
                        entry.confirmed.get_or_insert(epoch);
                    }
                }
                Err(e) => {
                    gone(&tracked, &all_gone, &events, &spec.replica_id, format!("cannot create pod {name}: {e}"))
                }
            }
        });
        Ok(())
    }

    fn stop(&self, replica_id: &str, grace: Duration) {
        self.delete_pod(replica_id, grace);
    }

    fn adopt(&self, replica_id: &str, _pid: u32) {
        let found = self.lock().found_at_start.remove(replica_id);
        match found {
            Some(name) => {
                tracing::info!(replica = %replica_id, pod = %name, "adopted replica pod");
                let mut t = self.lock();
                let epoch = t.epoch;
                t.pods
                    .insert(replica_id.to_string(), Entry { name, ready: true, confirmed: Some(epoch), waiting: None });
            }
            None => {
                let _ = self.events.send(ReplicaEvent::Exited {
                    replica_id: replica_id.to_string(),
                    how: "its pod no longer exists".into(),
                });
            }
        }
    }

    fn adoption_done(&self) {
        // Live replica pods no checkpoint named (started after the last checkpoint was written)
        // would run untracked: they go.
        let leftovers: Vec<(String, String)> = self.lock().found_at_start.drain().collect();
        for (replica_id, name) in leftovers {
            tracing::info!(replica = %replica_id, pod = %name, "deleting a replica pod no checkpoint names");
            let api = self.api.clone();
            tokio::spawn(async move {
                if let Err(e) = delete_ignoring_missing(&api, &name, &DeleteParams::default()).await {
                    tracing::warn!(pod = %name, error = %e, "cannot delete an unadopted replica pod");
                }
            });
        }
    }

    fn running(&self) -> Vec<String> {
        self.lock().pods.keys().cloned().collect()
    }

    fn shutdown(&self, grace: Duration) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(async move {
            let delete = |id: &str| self.delete_pod(id, grace);
            let wait = grace + Duration::from_secs(5);
            if !crate::stop_all_and_wait(&self.all_gone, || self.running(), delete, wait).await {
                tracing::warn!(left = self.running().len(), "replica pods still present after shutdown");
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ResourceRequest;

    fn spec() -> ReplicaSpec {
        ReplicaSpec {
            replica_id: "abc123".into(),
            app: "fruit_app".into(),
            deployment: "MangoStand".into(),
            import_path: "fruit.deployment_graph".into(),
            controller: "http://svc-head-svc.ns.svc:6379".into(),
            max_ongoing_requests: 5,
            user_config: Some(serde_json::json!({"price": 3})),
            env_vars: [("A".to_string(), "1".to_string())].into(),
            image: None,
            secret_env: Default::default(),
            graceful_shutdown_timeout: Duration::from_secs(20),
            graceful_shutdown_wait_loop: Duration::from_secs(2),
            access_log: true,
            log_encoding: "TEXT".into(),
            log_level: None,
            logs_dir: None,
            gpu_ids: vec![],
            resources: ResourceRequest { cpus: 0.1, gpus: 0.5, memory_bytes: 1e9 },
            version: 3,
        }
    }

    #[test]
    fn pods_get_the_restricted_profile_unless_their_template_has_its_own() {
        let mut plain =
            PodSpec { containers: vec![Container { name: "c".into(), ..Default::default() }], ..Default::default() };
        restrict(&mut plain);
        let pod = plain.security_context.as_ref().unwrap();
        assert_eq!(pod.run_as_non_root, Some(true));
        assert_eq!(pod.seccomp_profile.as_ref().unwrap().type_, "RuntimeDefault");
        let c = plain.containers[0].security_context.as_ref().unwrap();
        assert_eq!((c.allow_privilege_escalation, c.read_only_root_filesystem), (Some(false), Some(true)));
        assert_eq!(c.capabilities.as_ref().unwrap().drop.as_deref(), Some(&["ALL".to_string()][..]));
        assert!(plain.containers[0].volume_mounts.as_ref().unwrap().iter().any(|m| m.mount_path == "/tmp"));
        assert!(plain.volumes.as_ref().unwrap().iter().any(|v| v.name == "photon-scratch"));

        let own = SecurityContext { run_as_user: Some(0), ..Default::default() };
        let mut custom = PodSpec {
            security_context: Some(PodSecurityContext { run_as_user: Some(0), ..Default::default() }),
            containers: vec![Container { name: "c".into(), security_context: Some(own.clone()), ..Default::default() }],
            ..Default::default()
        };
        restrict(&mut custom);
        assert_eq!(custom.security_context.unwrap().run_as_user, Some(0));
        assert_eq!(custom.containers[0].security_context, Some(own));
        assert!(custom.volumes.is_none(), "a template with its own context is left as it is");
    }

    #[test]
    fn replica_pod_carries_labels_resources_owner_and_command() {
        let settings = KubernetesSettings {
            namespace: "ns".into(),
            cluster: "svc-x7k2p".into(),
            service: "svc".into(),
            template: serde_json::from_value(serde_json::json!({
                "metadata": {"labels": {"team": "ml", "ray.io/serve": "true"}},
                "spec": {"containers": [{"name": "worker", "image": "photon:1", "env": [{"name": "A", "value": "0"}]}]}
            }))
            .unwrap(),
            owner: Some(pod_owner("svc-x7k2p-head".into(), "u1".into())),
        };
        let pod = replica_pod(&settings, &spec());
        let labels = pod.metadata.labels.clone().unwrap();
        assert_eq!(pod.metadata.name.as_deref(), Some("svc-x7k2p-mangostand-abc123"));
        assert_eq!(labels["team"], "ml");
        assert!(!labels.contains_key("ray.io/serve"));
        assert_eq!(labels[labels::CLUSTER], "svc-x7k2p");
        assert_eq!(labels[labels::SERVICE], "svc");
        assert_eq!(labels[labels::APPLICATION], "fruit_app");
        assert_eq!(labels[labels::DEPLOYMENT], "MangoStand");
        assert_eq!(labels[labels::VERSION], "3");
        assert_eq!(labels[labels::REPLICA], "abc123");
        assert_eq!(pod.metadata.owner_references.as_ref().unwrap()[0].uid, "u1");
        let spec_ = pod.spec.unwrap();
        assert_eq!(spec_.restart_policy.as_deref(), Some("Never"));
        let c = &spec_.containers[0];
        assert_eq!(c.image.as_deref(), Some("photon:1"));
        let args = c.args.clone().unwrap();
        assert_eq!(&args[..3], &["replica", "--app", "fruit_app"]);
        assert!(args.windows(2).any(|w| w == ["--advertise-host", "$(PHOTON_POD_IP)"]));
        let res = c.resources.clone().unwrap();
        assert_eq!(res.requests.as_ref().unwrap()["cpu"].0, "100m");
        assert_eq!(res.requests.as_ref().unwrap()["memory"].0, "1000000000");
        assert_eq!(res.limits.as_ref().unwrap()["nvidia.com/gpu"].0, "1");
        let env = c.env.clone().unwrap();
        let a: Vec<_> = env.iter().filter(|e| e.name == "A").collect();
        assert_eq!(a.len(), 1, "the deployment's env var replaces the template's");
        assert_eq!(a[0].value.as_deref(), Some("1"));
        assert!(env.iter().any(|e| e.name == USER_CONFIG_ENV && e.value.as_deref() == Some(r#"{"price":3}"#)));
    }

    #[test]
    fn a_runtime_env_image_uri_is_the_replica_pods_image() {
        let settings = KubernetesSettings {
            namespace: "ns".into(),
            cluster: "svc-x7k2p".into(),
            service: "svc".into(),
            template: serde_json::from_value(serde_json::json!({
                "spec": {"containers": [{"name": "worker", "image": "photon:1"}]}
            }))
            .unwrap(),
            owner: None,
        };
        let pod = replica_pod(&settings, &ReplicaSpec { image: Some("team/model:7".into()), ..spec() });
        assert_eq!(pod.spec.unwrap().containers[0].image.as_deref(), Some("team/model:7"));
        let pod = replica_pod(&settings, &spec());
        assert_eq!(pod.spec.unwrap().containers[0].image.as_deref(), Some("photon:1"));
    }

    #[test]
    fn replica_resources_replace_the_templates() {
        let settings = KubernetesSettings {
            namespace: "ns".into(),
            cluster: "c".into(),
            service: String::new(),
            template: serde_json::from_value(serde_json::json!({"spec": {"containers": [{"name": "w",
                "resources": {"requests": {"cpu": "500m", "memory": "2Gi", "ephemeral-storage": "1Gi"},
                              "limits": {"cpu": "1", "memory": "2Gi", "nvidia.com/gpu": "2"}}}]}}))
            .unwrap(),
            owner: None,
        };
        let mut cpu_only = spec();
        cpu_only.resources.gpus = 0.0;
        let pod = replica_pod(&settings, &cpu_only);
        let resources = pod.spec.unwrap().containers[0].resources.clone().unwrap();
        let requests = resources.requests.unwrap();
        assert_eq!(requests["cpu"].0, "100m");
        assert_eq!(requests["memory"].0, "1000000000");
        assert_eq!(requests["ephemeral-storage"].0, "1Gi", "other resources are kept");
        assert!(resources.limits.is_none(), "no template CPU, memory or GPU limit carries over");
    }

    #[test]
    fn names_and_label_values_are_made_valid() {
        assert_eq!(dns_label("Fruit_App--X", 63), "fruit-app-x");
        assert_eq!(label_value("my app/v1!"), "my_app_v1");
        assert_eq!(label_value(&"a".repeat(80)).len(), 63);
    }

    #[test]
    fn unschedulable_pods_say_why() {
        let pod: Pod =
            serde_json::from_value(serde_json::json!({"metadata": {"name": "p"}, "status": {"phase": "Pending",
            "conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                            "message": "0/3 nodes are available: 3 Insufficient nvidia.com/gpu."}]}}))
            .unwrap();
        assert_eq!(
            unschedulable(&pod).as_deref(),
            Some("pod p cannot be scheduled (Unschedulable): 0/3 nodes are available: 3 Insufficient nvidia.com/gpu.")
        );
        let running: Pod = serde_json::from_value(serde_json::json!({"status": {"phase": "Running"}})).unwrap();
        assert_eq!(unschedulable(&running), None);
    }

    #[test]
    fn pod_views_follow_phase_and_readiness() {
        let pod = |v: serde_json::Value| -> Pod { serde_json::from_value(v).unwrap() };
        let running_ready = pod(
            serde_json::json!({"status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}}),
        );
        assert_eq!(view(&running_ready, false), PodView::Alive { ready: true });
        let unready = pod(
            serde_json::json!({"status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "False", "reason": "NodeLost"}]}}),
        );
        assert_eq!(view(&unready, false), PodView::Alive { ready: false }, "not yet ready is not gone");
        assert_eq!(view(&unready, true), PodView::Gone("pod not ready (NodeLost)".into()));
        let failed = pod(serde_json::json!({"status": {"phase": "Failed", "containerStatuses": [{
            "name": "c", "image": "i", "imageID": "", "ready": false, "restartCount": 0,
            "state": {"terminated": {"exitCode": 1, "reason": "Error", "message": "deployment X failed to start"}}}]}}));
        assert_eq!(view(&failed, true), PodView::Gone("exit status: 1: deployment X failed to start".into()));
    }
}
