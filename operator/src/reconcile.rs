//! One reconcile pass over a `PhotonService`, in KubeRay's order (`spec/kuberay.md` 3.2):
//! finalizer and deletion, validation, suspend, dangling clusters, the clusters themselves
//! (create the pending one, update in place, keep their pods), the head pods' `ray.io/serve`
//! label, the serve config (PUT only when it changed for that cluster, or the head lost its
//! applications), the Services (switched to the pending cluster once all its applications
//! are RUNNING), and the status (promotion, a new pending cluster when the cluster spec
//! changed, serve endpoints, conditions), written only when it changed. Every pass ends with a
//! requeue after 2 s, as KubeRay's.
//!
//! A cluster is its head Service `<cluster>-head-svc`: it carries the cluster spec it was made
//! from (annotation [`SPEC_ANNOTATION`]), so the cluster keeps its own pods while the
//! PhotonService's spec already names another.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Pod, Secret, Service, ServiceAccount};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event as KubeEvent, EventType, Recorder, Reporter};
use kube::{Api, Resource, ResourceExt};
use photon_orchestrator::kubernetes::delete_ignoring_missing;
use serde_json::json;

use crate::cluster::{self, keys, OperatorSettings, ServiceExt};
use crate::head_client::{Addresses, Applications, HeadClient};
use crate::types::{ClusterServiceStatus, ClusterSpec, ClusterStatus, HeadInfo, PhotonService, PhotonServiceStatus};

/// Annotation on a cluster's head Service holding the cluster spec it runs.
pub const SPEC_ANNOTATION: &str = "photon.io/cluster-spec";
/// Every pass ends with a requeue after this long.
pub const REQUEUE: Duration = Duration::from_secs(2);

/// Why a pass failed (it is retried).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An API server call failed.
    #[error("{what}: {source}")]
    Kube {
        /// What was being done.
        what: String,
        /// The error.
        source: kube::Error,
    },
    /// A cluster's credentials could not be made.
    #[error("cannot make a cluster token: {0}")]
    Token(#[from] photon_router::cluster_auth::ClusterAuthError),
}

fn kube_err(what: impl Into<String>) -> impl FnOnce(kube::Error) -> Error {
    let what = what.into();
    move |source| Error::Kube { what, source }
}

/// What the operator remembers between passes (KubeRay keeps the same in memory): deletion
/// deadlines of dangling clusters, and the serve config last submitted to each cluster.
#[derive(Default)]
struct Memory {
    deadlines: HashMap<String, Instant>,
    submitted: HashMap<String, String>,
}

/// Shared by every pass.
pub struct Context {
    /// The API server.
    pub client: kube::Client,
    /// Image, DNS domain, upgrade default.
    pub settings: OperatorSettings,
    /// Where heads answer.
    pub addresses: Arc<dyn Addresses>,
    head: HeadClient,
    recorder: Recorder,
    memory: Mutex<HashMap<String, Memory>>,
}

impl Context {
    /// A context for [`reconcile`].
    pub fn new(client: kube::Client, settings: OperatorSettings, addresses: Arc<dyn Addresses>) -> Self {
        let reporter = Reporter { controller: "photon-operator".into(), instance: std::env::var("POD_NAME").ok() };
        Context {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            settings,
            addresses,
            head: HeadClient::default(),
            memory: Mutex::default(),
        }
    }

    fn with_memory<T>(&self, key: &str, f: impl FnOnce(&mut Memory) -> T) -> T {
        let mut all = self.memory.lock().unwrap_or_else(|e| e.into_inner());
        f(all.entry(key.to_string()).or_default())
    }

    async fn event(&self, svc: &PhotonService, warning: bool, reason: &str, note: String) {
        let event = KubeEvent {
            type_: if warning { EventType::Warning } else { EventType::Normal },
            reason: reason.into(),
            note: Some(note),
            action: reason.into(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&event, &svc.object_ref(&())).await {
            tracing::debug!(error = %e, reason, "cannot publish event");
        }
    }
}

/// A cluster as observed: its spec (from its head Service) and pods.
#[derive(Debug, Default, Clone)]
struct Observed {
    name: String,
    spec: Option<ClusterSpec>,
    hash: String,
    num_groups: usize,
    head: Option<Pod>,
    workers: Vec<Pod>,
}

/// What to do about the cluster spec (KubeRay's `shouldUpdateCluster` /
/// `shouldPrepareNewCluster`, `spec/kuberay.md` 3.3).
#[derive(Debug, Clone, PartialEq)]
pub enum ClusterPlan {
    /// Nothing changed that needs work (or upgrades are off).
    Nothing,
    /// Only worker groups were appended: update this cluster in place.
    UpdateInPlace(String),
    /// Make a new pending cluster.
    PrepareNew,
}

/// A cluster's identity for [`plan`]: name, spec hash, worker groups it was made with.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterIdentity {
    /// Cluster name.
    pub name: String,
    /// Its spec hash.
    pub hash: String,
    /// Its worker group count.
    pub num_groups: usize,
}

/// The decision table of `spec/kuberay.md` 3.3, pure.
pub fn plan(
    desired: &ClusterSpec,
    active: Option<&ClusterIdentity>,
    pending: Option<&ClusterIdentity>,
    pending_is_serving: bool,
    zero_downtime: bool,
) -> ClusterPlan {
    let Some(target) = pending.or(active) else { return ClusterPlan::PrepareNew };
    if pending.is_some() && pending_is_serving {
        return ClusterPlan::Nothing;
    }
    if cluster::cluster_hash(desired, None) == target.hash {
        return ClusterPlan::Nothing;
    }
    // Only worker groups appended: the target is updated in place. While an upgrade runs the
    // target is the pending cluster, so the active one is never updated in place then.
    let appended = target.num_groups < desired.worker_group_specs.len()
        && cluster::cluster_hash(desired, Some(target.num_groups)) == target.hash;
    if appended {
        return ClusterPlan::UpdateInPlace(target.name.clone());
    }
    if zero_downtime {
        ClusterPlan::PrepareNew
    } else {
        ClusterPlan::Nothing
    }
}

fn zero_downtime(svc: &PhotonService, settings: &OperatorSettings) -> bool {
    match svc.spec.upgrade_strategy.as_ref().and_then(|u| u.type_.as_deref()) {
        Some("None") => false,
        Some(_) => true,
        None => settings.zero_downtime,
    }
}

fn pod_ready(pod: &Pod) -> bool {
    let status = pod.status.as_ref();
    status.and_then(|s| s.phase.as_deref()) == Some("Running")
        && pod.metadata.deletion_timestamp.is_none()
        && status
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn pod_ended(pod: &Pod) -> bool {
    matches!(pod.status.as_ref().and_then(|s| s.phase.as_deref()), Some("Failed" | "Succeeded"))
}

fn now() -> Time {
    Time(k8s_openapi::jiff::Timestamp::now())
}

/// Sets a condition, keeping its transition time when its status did not change.
fn set_condition(
    conditions: &mut Vec<Condition>,
    type_: &str,
    status: &str,
    reason: &str,
    message: &str,
    generation: i64,
) {
    let transition = conditions
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or_else(now);
    conditions.retain(|c| c.type_ != type_);
    conditions.push(Condition {
        type_: type_.into(),
        status: status.into(),
        reason: reason.into(),
        message: message.into(),
        observed_generation: Some(generation),
        last_transition_time: transition,
    });
    conditions.sort_by(|a, b| a.type_.cmp(&b.type_));
}

/// Ready and UpgradeInProgress start over as `Initializing`, with a fresh transition time
/// (the initializing timeout counts from it).
fn restart_conditions(status: &mut PhotonServiceStatus, generation: i64) {
    status.conditions.retain(|c| c.type_ != "Ready" && c.type_ != "UpgradeInProgress");
    set_condition(&mut status.conditions, "Ready", "False", "Initializing", "", generation);
    set_condition(&mut status.conditions, "UpgradeInProgress", "False", "Initializing", "", generation);
}

fn condition<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// Conditions `Ready` and `UpgradeInProgress` and `serviceStatus` (`spec/kuberay.md` 1.5).
pub fn compute_conditions(status: &mut PhotonServiceStatus, generation: i64) {
    let conditions = &mut status.conditions;
    if condition(conditions, "Ready").is_none() {
        set_condition(conditions, "Ready", "False", "Initializing", "", generation);
        set_condition(conditions, "UpgradeInProgress", "False", "Initializing", "", generation);
    }
    let was_ready = condition(conditions, "Ready").is_some_and(|c| c.status == "True");
    if status.num_serve_endpoints > 0 {
        set_condition(conditions, "Ready", "True", "NonZeroServeEndpoints", "", generation);
    } else if was_ready {
        set_condition(
            conditions,
            "Ready",
            "False",
            "ZeroServeEndpoints",
            "no Ready pod is behind the serve Service",
            generation,
        );
    } else if let Some(c) = condition(conditions, "Ready").cloned() {
        set_condition(conditions, "Ready", &c.status, &c.reason, &c.message, generation);
    }
    let (active, pending) = (
        status.active_service_status.ray_cluster_name.is_some(),
        status.pending_service_status.ray_cluster_name.is_some(),
    );
    let initializing = condition(conditions, "Ready").is_some_and(|c| c.reason == "Initializing");
    match (active, pending) {
        (true, true) => {
            set_condition(conditions, "UpgradeInProgress", "True", "BothActivePendingClustersExist", "", generation)
        }
        (true, false) => set_condition(conditions, "UpgradeInProgress", "False", "NoPendingCluster", "", generation),
        (false, _) if initializing => {
            set_condition(conditions, "UpgradeInProgress", "False", "Initializing", "", generation)
        }
        (false, _) => set_condition(conditions, "UpgradeInProgress", "Unknown", "NoActiveCluster", "", generation),
    }
    status.service_status = if condition(conditions, "Ready").is_some_and(|c| c.status == "True") {
        "Running".into()
    } else {
        String::new()
    };
}

struct Apis {
    services: Api<PhotonService>,
    pods: Api<Pod>,
    svcs: Api<Service>,
    slices: Api<EndpointSlice>,
    secrets: Api<Secret>,
    policies: Api<NetworkPolicy>,
}

fn originated_selector(svc: &PhotonService) -> String {
    format!("{}={},{}=PhotonService", keys::ORIGINATED_NAME, svc.name(), keys::ORIGINATED_CRD)
}

async fn observe(apis: &Apis, svc: &PhotonService) -> Result<BTreeMap<String, Observed>, Error> {
    let selector = originated_selector(svc);
    let mut clusters: BTreeMap<String, Observed> = BTreeMap::new();
    let services = apis.svcs.list(&ListParams::default().labels(&selector)).await.map_err(kube_err("list services"))?;
    for s in services.items {
        let Some(cluster) = s.labels().get(keys::CLUSTER).cloned() else { continue };
        if s.name_any() != cluster::cluster_head_service_name(&cluster) {
            continue;
        }
        let annotations = s.annotations();
        let spec: Option<ClusterSpec> = annotations.get(SPEC_ANNOTATION).and_then(|t| serde_json::from_str(t).ok());
        let o = clusters.entry(cluster.clone()).or_default();
        o.name = cluster;
        o.hash = annotations.get(keys::HASH).cloned().unwrap_or_default();
        o.num_groups = annotations.get(keys::NUM_WORKER_GROUPS).and_then(|n| n.parse().ok()).unwrap_or(0);
        o.spec = spec;
    }
    let pods = apis.pods.list(&ListParams::default().labels(&selector)).await.map_err(kube_err("list pods"))?;
    for p in pods.items {
        let Some(cluster) = p.labels().get(keys::CLUSTER).cloned() else { continue };
        let o = clusters.entry(cluster.clone()).or_default();
        o.name = cluster;
        if p.labels().get(keys::NODE_TYPE).map(String::as_str) == Some("head") {
            o.head = Some(p);
        } else {
            o.workers.push(p);
        }
    }
    Ok(clusters)
}

fn identity(o: Option<&Observed>) -> Option<ClusterIdentity> {
    o.filter(|o| o.spec.is_some()).map(|o| ClusterIdentity {
        name: o.name.clone(),
        hash: o.hash.clone(),
        num_groups: o.num_groups,
    })
}

/// A copy of the PhotonService with another cluster spec, to build a cluster's own objects.
fn with_cluster_spec(svc: &PhotonService, spec: &ClusterSpec) -> PhotonService {
    let mut copy = svc.clone();
    copy.spec.ray_cluster_config = spec.clone();
    copy
}

async fn create_ignoring_conflict<K>(api: &Api<K>, object: &K) -> Result<bool, kube::Error>
where
    K: Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    match api.create(&PostParams::default(), object).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
        Err(e) => Err(e),
    }
}

/// Makes a cluster: its head Service, carrying the spec; [`keep_pods`] makes its pods.
async fn create_cluster(ctx: &Context, apis: &Apis, svc: &PhotonService, name: &str) -> Result<(), Error> {
    let spec = &svc.spec.ray_cluster_config;
    let mut head_svc = cluster::cluster_head_service(svc, name);
    let annotations = head_svc.metadata.annotations.get_or_insert_with(BTreeMap::new);
    annotations.insert(SPEC_ANNOTATION.into(), serde_json::to_string(spec).unwrap_or_default());
    annotations.insert(keys::HASH.into(), cluster::cluster_hash(spec, None));
    annotations.insert(keys::NUM_WORKER_GROUPS.into(), spec.worker_group_specs.len().to_string());
    create_ignoring_conflict(&apis.svcs, &head_svc)
        .await
        .map_err(kube_err(format!("create Service {name}-head-svc")))?;
    ctx.event(svc, false, "CreatedRayCluster", format!("Created cluster {name}")).await;
    Ok(())
}

/// Makes the cluster's credentials Secret unless it exists (its pods read it).
async fn ensure_cluster_secret(apis: &Apis, svc: &PhotonService, cluster: &str) -> Result<(), Error> {
    if apis.secrets.get_opt(cluster).await.map_err(kube_err("get a cluster Secret"))?.is_some() {
        return Ok(());
    }
    let random = photon_router::cluster_auth::random_token;
    let secret = cluster::cluster_secret(svc, cluster, random()?, random()?);
    create_ignoring_conflict(&apis.secrets, &secret).await.map_err(kube_err(format!("create Secret {cluster}")))?;
    Ok(())
}

/// Makes the service's NetworkPolicy, or brings it up to date (its ports follow the spec).
async fn keep_network_policy(apis: &Apis, svc: &PhotonService) -> Result<(), Error> {
    let wanted = cluster::network_policy(svc);
    let name = cluster::network_policy_name(&svc.name());
    match apis.policies.get_opt(&name).await.map_err(kube_err("get the service's NetworkPolicy"))? {
        None => {
            create_ignoring_conflict(&apis.policies, &wanted)
                .await
                .map_err(kube_err("create the service's NetworkPolicy"))?;
        }
        Some(current) if current.spec != wanted.spec => {
            let mut updated = current;
            updated.spec = wanted.spec;
            apis.policies
                .replace(&name, &PostParams::default(), &updated)
                .await
                .map_err(kube_err("update the service's NetworkPolicy"))?;
        }
        Some(_) => {}
    }
    Ok(())
}

/// The REST API token of a cluster, from its Secret (none before the Secret exists).
async fn rest_token(apis: &Apis, cluster: &str) -> Option<String> {
    let secret = apis.secrets.get_opt(cluster).await.ok()??;
    let bytes = secret.data?.remove(cluster::AUTH_TOKEN_KEY)?;
    String::from_utf8(bytes.0).ok()
}

async fn ensure_head_account(ctx: &Context, svc: &PhotonService) -> Result<(), Error> {
    let ns = svc.ns();
    let (account, role, binding) = cluster::head_rbac(svc);
    create_ignoring_conflict(&Api::<ServiceAccount>::namespaced(ctx.client.clone(), &ns), &account)
        .await
        .map_err(kube_err("create the head ServiceAccount"))?;
    create_ignoring_conflict(&Api::<Role>::namespaced(ctx.client.clone(), &ns), &role)
        .await
        .map_err(kube_err("create the head Role"))?;
    create_ignoring_conflict(&Api::<RoleBinding>::namespaced(ctx.client.clone(), &ns), &binding)
        .await
        .map_err(kube_err("create the head RoleBinding"))?;
    Ok(())
}

/// Keeps a cluster's pods: a missing or ended head or proxy pod is (re)made, surplus proxy
/// pods and the autoscaler's `workersToDelete` go.
async fn keep_pods(ctx: &Context, apis: &Apis, svc: &PhotonService, o: &Observed) -> Result<(), Error> {
    let Some(spec) = &o.spec else { return Ok(()) };
    let own = with_cluster_spec(svc, spec);
    match &o.head {
        Some(head) if pod_ended(head) => {
            delete_ignoring_missing(&apis.pods, &head.name_any(), &DeleteParams::background())
                .await
                .map_err(kube_err("delete an ended head pod"))?;
        }
        Some(_) => {}
        None => {
            // The head's rights and credentials first (a PhotonService recreated under the same
            // name may have found the old account on its way out).
            ensure_head_account(ctx, svc).await?;
            ensure_cluster_secret(apis, svc, &o.name).await?;
            keep_network_policy(apis, svc).await?;
            let pod = cluster::head_pod(&own, &o.name, &ctx.settings);
            create_ignoring_conflict(&apis.pods, &pod)
                .await
                .map_err(kube_err(format!("create pod {}", pod.name_any())))?;
        }
    }
    // Proxy pod names are fixed per index, so KubeRay's `workersToDelete` (autoscaler-chosen
    // pods) has nothing to pick among: the count alone decides.
    let desired = cluster::worker_pods(&own, &o.name, &ctx.settings);
    let desired_names: HashSet<String> = desired.iter().map(|p| p.name_any()).collect();
    for pod in &o.workers {
        let name = pod.name_any();
        if pod_ended(pod) || !desired_names.contains(&name) {
            delete_ignoring_missing(&apis.pods, &name, &DeleteParams::background())
                .await
                .map_err(kube_err(format!("delete pod {name}")))?;
        }
    }
    let present: HashSet<String> = o.workers.iter().map(|p| p.name_any()).collect();
    let missing: Vec<&Pod> = desired.iter().filter(|p| !present.contains(&p.name_any())).collect();
    if !missing.is_empty() {
        ensure_cluster_secret(apis, svc, &o.name).await?;
    }
    for pod in missing {
        create_ignoring_conflict(&apis.pods, pod).await.map_err(kube_err(format!("create pod {}", pod.name_any())))?;
    }
    Ok(())
}

async fn delete_cluster(ctx: &Context, apis: &Apis, svc: &PhotonService, o: &Observed) -> Result<(), Error> {
    if let Some(head) = &o.head {
        delete_ignoring_missing(&apis.pods, &head.name_any(), &DeleteParams::background())
            .await
            .map_err(kube_err("delete a head pod"))?;
    }
    for w in &o.workers {
        delete_ignoring_missing(&apis.pods, &w.name_any(), &DeleteParams::background())
            .await
            .map_err(kube_err("delete a proxy pod"))?;
    }
    delete_ignoring_missing(&apis.svcs, &cluster::cluster_head_service_name(&o.name), &DeleteParams::background())
        .await
        .map_err(kube_err("delete a cluster head Service"))?;
    delete_ignoring_missing(&apis.secrets, &o.name, &DeleteParams::background())
        .await
        .map_err(kube_err("delete a cluster Secret"))?;
    ctx.event(svc, false, "DeletedRayCluster", format!("Deleted cluster {}", o.name)).await;
    Ok(())
}

/// Updates a cluster in place for appended worker groups: its recorded spec changes, and the
/// next [`keep_pods`] adds the new groups' pods.
async fn update_in_place(ctx: &Context, apis: &Apis, svc: &PhotonService, name: &str) -> Result<(), Error> {
    let spec = &svc.spec.ray_cluster_config;
    let patch = json!({"metadata": {"annotations": {
        SPEC_ANNOTATION: serde_json::to_string(spec).unwrap_or_default(),
        keys::HASH: cluster::cluster_hash(spec, None),
        keys::NUM_WORKER_GROUPS: spec.worker_group_specs.len().to_string(),
    }}});
    apis.svcs
        .patch(&cluster::cluster_head_service_name(name), &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(kube_err("update a cluster in place"))?;
    ctx.event(svc, false, "UpdatedRayCluster", format!("Updated cluster {name} in place (worker groups appended)"))
        .await;
    Ok(())
}

/// The head pod's `ray.io/serve` label follows its proxy's health (`spec/kuberay.md` 3.7).
async fn head_serve_label(ctx: &Context, apis: &Apis, svc: &PhotonService, o: &Observed) {
    let (Some(head), Some(spec)) = (&o.head, &o.spec) else { return };
    let Some(ip) = head.status.as_ref().and_then(|s| s.pod_ip.clone()) else { return };
    let healthy = if svc.spec.exclude_head_pod_from_serve_svc == Some(true) || !pod_ready(head) {
        false
    } else {
        let url = ctx.addresses.head_proxy(&svc.ns(), &o.name, &ip, cluster::head_ports(spec).serve());
        ctx.head.proxy_healthy(&url).await
    };
    let want = if healthy { "true" } else { "false" };
    if head.labels().get(keys::SERVE).map(String::as_str) == Some(want) {
        return;
    }
    let patch = json!({"metadata": {"labels": {keys::SERVE: want}}});
    match apis.pods.patch(&head.name_any(), &PatchParams::default(), &Patch::Merge(&patch)).await {
        Ok(_) => {
            ctx.event(svc, false, "UpdatedHeadPodServeLabel", format!("{}: {}={want}", head.name_any(), keys::SERVE))
                .await
        }
        Err(e) => {
            ctx.event(svc, true, "FailedToUpdateHeadPodServeLabel", format!("{}: {e}", head.name_any())).await;
        }
    }
}

/// Fetches a cluster's applications and submits the serve config when needed; returns
/// whether the cluster is ready for traffic and its applications (`None` when the head did
/// not answer: the last known ones stay in the status).
async fn reconcile_serve(
    ctx: &Context,
    apis: &Apis,
    svc: &PhotonService,
    key: &str,
    o: &Observed,
) -> (bool, Option<Applications>) {
    let (Some(head), Some(spec)) = (&o.head, &o.spec) else { return (false, Some(Applications::new())) };
    if !pod_ready(head) {
        return (false, Some(Applications::new()));
    }
    let dashboard = ctx.addresses.dashboard(&svc.ns(), &o.name, cluster::head_ports(spec).dashboard());
    let token = rest_token(apis, &o.name).await;
    let token = token.as_deref();
    let apps = match ctx.head.applications(&dashboard, token).await {
        Ok(apps) => apps,
        Err(e) => {
            tracing::info!(cluster = %o.name, error = %e, "cannot read the head's applications yet");
            return (false, None);
        }
    };
    let ready = !apps.is_empty() && apps.values().all(|a| a.status == "RUNNING");
    if let Some(text) = &svc.spec.serve_config_v2 {
        let submitted = ctx.with_memory(key, |m| m.submitted.get(&o.name).cloned());
        if submitted.as_deref() != Some(text.as_str()) || apps.is_empty() {
            let result = match cluster::serve_config_json(text) {
                Ok(body) => ctx.head.put_applications(&dashboard, token, &body).await,
                Err(e) => Err(e),
            };
            match result {
                Ok(()) => {
                    ctx.with_memory(key, |m| m.submitted.insert(o.name.clone(), text.clone()));
                    let generation = svc.metadata.generation.unwrap_or(0);
                    let note = format!("Submitted the serve config of generation {generation} to cluster {}", o.name);
                    ctx.event(svc, false, "UpdatedServeApplications", note).await;
                }
                Err(e) => {
                    ctx.event(svc, true, "FailedToUpdateServeApplications", format!("cluster {}: {e}", o.name)).await;
                }
            }
        }
    }
    (ready, Some(apps))
}

/// Points a Service at `cluster`: creates it, or replaces its spec (keeping its cluster IP)
/// when its selector names another cluster. Returns the cluster it points at.
async fn point_service(
    ctx: &Context,
    apis: &Apis,
    svc: &PhotonService,
    desired: Service,
    cluster: &str,
) -> Result<(), Error> {
    let name = desired.name_any();
    match apis.svcs.get_opt(&name).await.map_err(kube_err(format!("get Service {name}")))? {
        None => {
            apis.svcs
                .create(&PostParams::default(), &desired)
                .await
                .map_err(kube_err(format!("create Service {name}")))?;
            ctx.event(svc, false, "CreatedService", format!("Created Service {name} for cluster {cluster}")).await;
        }
        Some(existing) => {
            let current = existing.spec.as_ref().and_then(|s| s.selector.as_ref()).and_then(|s| s.get(keys::CLUSTER));
            if current.map(String::as_str) == Some(cluster) {
                return Ok(());
            }
            let shape = |s: Option<&k8s_openapi::api::core::v1::ServiceSpec>| {
                s.map(|s| {
                    (s.type_.clone().unwrap_or_else(|| "ClusterIP".into()), s.cluster_ip.as_deref() == Some("None"))
                })
            };
            if shape(existing.spec.as_ref()) != shape(desired.spec.as_ref()) {
                // A Service's cluster IP cannot change (headless <-> not, or a new type that
                // needs one): replaced by a new object.
                delete_ignoring_missing(&apis.svcs, &name, &DeleteParams::background())
                    .await
                    .map_err(kube_err(format!("delete Service {name}")))?;
                apis.svcs
                    .create(&PostParams::default(), &desired)
                    .await
                    .map_err(kube_err(format!("create Service {name}")))?;
                ctx.event(svc, false, "UpdatedService", format!("Service {name} made again for cluster {cluster}"))
                    .await;
                return Ok(());
            }
            let mut replaced = desired;
            replaced.metadata.resource_version = existing.metadata.resource_version.clone();
            if let (Some(spec), Some(old)) = (replaced.spec.as_mut(), existing.spec.as_ref()) {
                if old.cluster_ip.is_some() {
                    spec.cluster_ip = old.cluster_ip.clone();
                    spec.cluster_ips = old.cluster_ips.clone();
                }
            }
            apis.svcs
                .replace(&name, &PostParams::default(), &replaced)
                .await
                .map_err(kube_err(format!("update Service {name}")))?;
            ctx.event(svc, false, "UpdatedService", format!("Service {name} now points at cluster {cluster}")).await;
        }
    }
    Ok(())
}

fn cluster_status(o: &Observed) -> ClusterStatus {
    let desired: i32 = o.spec.as_ref().map_or(0, |s| s.worker_group_specs.iter().map(cluster::desired_workers).sum());
    let ready_workers = o.workers.iter().filter(|p| pod_ready(p)).count() as i32;
    let head_ready = o.head.as_ref().is_some_and(pod_ready);
    ClusterStatus {
        state: (head_ready && ready_workers >= desired).then(|| "ready".to_string()),
        ready_worker_replicas: ready_workers,
        desired_worker_replicas: desired,
        head: Some(HeadInfo {
            pod_ip: o.head.as_ref().and_then(|h| h.status.as_ref()).and_then(|s| s.pod_ip.clone()),
            pod_name: o.head.as_ref().map(|h| h.name_any()),
            service_name: Some(cluster::cluster_head_service_name(&o.name)),
        }),
    }
}

async fn count_endpoints(apis: &Apis, svc: &PhotonService) -> Result<i32, Error> {
    let selector = format!("{}={}", keys::SERVICE_NAME, cluster::serve_service_name(svc));
    let slices =
        apis.slices.list(&ListParams::default().labels(&selector)).await.map_err(kube_err("list EndpointSlices"))?;
    let ready: HashSet<String> = slices
        .items
        .iter()
        .flat_map(|s| s.endpoints.iter())
        .filter(|e| e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(false))
        .filter_map(|e| e.target_ref.as_ref().and_then(|t| t.uid.clone()))
        .collect();
    Ok(ready.len() as i32)
}

async fn write_status(apis: &Apis, svc: &PhotonService, mut status: PhotonServiceStatus) -> Result<(), Error> {
    // As KubeRay's: the embedded cluster status alone does not make a write.
    let comparable = |s: &PhotonServiceStatus| {
        let mut s = s.clone();
        s.last_update_time = None;
        s.active_service_status.ray_cluster_status = None;
        s.pending_service_status.ray_cluster_status = None;
        s
    };
    let old = svc.status.clone().unwrap_or_default();
    if comparable(&status) == comparable(&old) {
        return Ok(());
    }
    status.last_update_time = Some(now());
    let mut updated = svc.clone();
    updated.status = Some(status);
    apis.services
        .replace_status(&svc.name(), &PostParams::default(), &updated)
        .await
        .map_err(kube_err("write the status"))?;
    Ok(())
}

/// Deletes every cluster of the service; returns how many objects were still there.
async fn delete_everything(ctx: &Context, apis: &Apis, svc: &PhotonService) -> Result<usize, Error> {
    let clusters = observe(apis, svc).await?;
    let mut left = 0;
    for o in clusters.values() {
        left += o.workers.len() + usize::from(o.head.is_some()) + usize::from(o.spec.is_some());
        delete_cluster(ctx, apis, svc, o).await?;
    }
    for name in [cluster::head_service_name(&svc.name()), cluster::serve_service_name(svc)] {
        if apis.svcs.get_opt(&name).await.map_err(kube_err("get a Service"))?.is_some() {
            left += 1;
            delete_ignoring_missing(&apis.svcs, &name, &DeleteParams::background())
                .await
                .map_err(kube_err("delete a Service"))?;
        }
    }
    let policy = cluster::network_policy_name(&svc.name());
    if apis.policies.get_opt(&policy).await.map_err(kube_err("get the service's NetworkPolicy"))?.is_some() {
        left += 1;
        delete_ignoring_missing(&apis.policies, &policy, &DeleteParams::background())
            .await
            .map_err(kube_err("delete the service's NetworkPolicy"))?;
    }
    Ok(left)
}

/// One pass.
pub async fn reconcile(svc: Arc<PhotonService>, ctx: Arc<Context>) -> Result<Action, Error> {
    let ns = svc.ns();
    let name = svc.name();
    let key = format!("{ns}/{name}");
    let apis = Apis {
        services: Api::namespaced(ctx.client.clone(), &ns),
        pods: Api::namespaced(ctx.client.clone(), &ns),
        svcs: Api::namespaced(ctx.client.clone(), &ns),
        slices: Api::namespaced(ctx.client.clone(), &ns),
        secrets: Api::namespaced(ctx.client.clone(), &ns),
        policies: Api::namespaced(ctx.client.clone(), &ns),
    };
    if let Some(manager) = &svc.spec.managed_by {
        if !cluster::MANAGERS.contains(&manager.as_str()) {
            return Ok(Action::await_change());
        }
    }
    let finalizers = svc.finalizers().to_vec();
    if svc.metadata.deletion_timestamp.is_some() {
        let left = delete_everything(&ctx, &apis, &svc).await?;
        if left == 0 && finalizers.iter().any(|f| f == cluster::FINALIZER) {
            let rest: Vec<&String> = finalizers.iter().filter(|f| *f != cluster::FINALIZER).collect();
            let patch = json!({"metadata": {"finalizers": rest}});
            apis.services
                .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .map_err(kube_err("remove the finalizer"))?;
            ctx.memory.lock().unwrap_or_else(|e| e.into_inner()).remove(&key);
            return Ok(Action::await_change());
        }
        return Ok(Action::requeue(Duration::from_millis(500)));
    }
    if !finalizers.iter().any(|f| f == cluster::FINALIZER) {
        let mut all = finalizers.clone();
        all.push(cluster::FINALIZER.into());
        let patch = json!({"metadata": {"finalizers": all}});
        apis.services
            .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(kube_err("add the finalizer"))?;
        return Ok(Action::requeue(Duration::from_millis(100)));
    }
    let generation = svc.metadata.generation.unwrap_or(0);
    let mut status = svc.status.clone().unwrap_or_default();
    status.observed_generation = Some(generation);
    let mut active = status.active_service_status.ray_cluster_name.clone();
    let mut pending = status.pending_service_status.ray_cluster_name.clone();
    let mut clusters = observe(&apis, &svc).await?;

    // Dangling clusters (neither active nor pending) go after the deletion delay, whatever
    // else this pass finds.
    let delay = Duration::from_secs(
        svc.spec.ray_cluster_deletion_delay_seconds.unwrap_or(cluster::DEFAULT_DELETION_DELAY_S).max(0) as u64,
    );
    let now_instant = Instant::now();
    for o in clusters.values() {
        if Some(&o.name) == active.as_ref() || Some(&o.name) == pending.as_ref() {
            ctx.with_memory(&key, |m| m.deadlines.remove(&o.name));
            continue;
        }
        let deadline = ctx.with_memory(&key, |m| *m.deadlines.entry(o.name.clone()).or_insert(now_instant + delay));
        if now_instant >= deadline {
            delete_cluster(&ctx, &apis, &svc, o).await?;
            ctx.with_memory(&key, |m| {
                m.deadlines.remove(&o.name);
                m.submitted.remove(&o.name);
            });
        }
    }

    // Terminal: the service never became ready in time; spec changes do not retry it.
    if condition(&status.conditions, "Ready").is_some_and(|c| c.reason == "InitializingTimeout") {
        write_status(&apis, &svc, status).await?;
        return Ok(if clusters.is_empty() { Action::await_change() } else { Action::requeue(REQUEUE) });
    }

    if let Err(message) = cluster::validate(&svc) {
        let already = condition(&status.conditions, "Ready")
            .is_some_and(|c| c.reason == "ValidationFailed" && c.message == message);
        set_condition(&mut status.conditions, "Ready", "False", "ValidationFailed", &message, generation);
        status.service_status = String::new();
        if !already {
            ctx.event(&svc, true, "InvalidRayServiceSpec", message).await;
        }
        write_status(&apis, &svc, status).await?;
        return Ok(if clusters.is_empty() { Action::await_change() } else { Action::requeue(REQUEUE) });
    }
    if condition(&status.conditions, "Ready").is_some_and(|c| c.reason == "ValidationFailed") {
        // The spec was fixed: start over as a new service does.
        restart_conditions(&mut status, generation);
    }

    // Suspend: once requested it runs to completion (KubeRay's state machine), then the
    // object waits; clearing the flag afterwards resumes with a new cluster.
    let suspending = condition(&status.conditions, "Suspending").is_some_and(|c| c.status == "True");
    if svc.spec.suspend == Some(true) || suspending {
        let left = delete_everything(&ctx, &apis, &svc).await?;
        status.active_service_status = ClusterServiceStatus::default();
        status.pending_service_status = ClusterServiceStatus::default();
        status.num_serve_endpoints = 0;
        status.service_status = String::new();
        ctx.with_memory(&key, |m| *m = Memory::default());
        if left > 0 {
            let reason = if suspending { "SuspendInProgress" } else { "SuspendRequested" };
            set_condition(&mut status.conditions, "Suspending", "True", reason, "", generation);
            set_condition(&mut status.conditions, "Ready", "False", "SuspendInProgress", "", generation);
        } else {
            set_condition(&mut status.conditions, "Suspending", "False", "SuspendComplete", "", generation);
            set_condition(&mut status.conditions, "Suspended", "True", "SuspendComplete", "", generation);
            set_condition(&mut status.conditions, "Ready", "False", "SuspendComplete", "", generation);
        }
        write_status(&apis, &svc, status).await?;
        return Ok(Action::requeue(REQUEUE));
    }
    if condition(&status.conditions, "Suspended").is_some_and(|c| c.status == "True") {
        set_condition(&mut status.conditions, "Suspended", "False", "RayServiceResumed", "", generation);
        status.conditions.retain(|c| c.type_ != "Suspending");
        restart_conditions(&mut status, generation);
    }

    // The clusters: create the pending one, update in place, keep pods.
    let serve_name = cluster::serve_service_name(&svc);
    let serving_before = apis
        .svcs
        .get_opt(&serve_name)
        .await
        .map_err(kube_err("get the serve Service"))?
        .and_then(|s| s.spec.and_then(|s| s.selector).and_then(|s| s.get(keys::CLUSTER).cloned()));
    let zero_downtime = zero_downtime(&svc, &ctx.settings);
    let current_plan = plan(
        &svc.spec.ray_cluster_config,
        identity(active.as_ref().and_then(|a| clusters.get(a))).as_ref(),
        identity(pending.as_ref().and_then(|p| clusters.get(p))).as_ref(),
        pending.is_some() && serving_before == pending,
        zero_downtime,
    );
    if let Some(p) = &pending {
        if clusters.get(p).is_none_or(|o| o.spec.is_none()) {
            create_cluster(&ctx, &apis, &svc, p).await?;
            clusters = observe(&apis, &svc).await?;
        }
    }
    if let ClusterPlan::UpdateInPlace(target) = &current_plan {
        update_in_place(&ctx, &apis, &svc, target).await?;
        clusters = observe(&apis, &svc).await?;
    }
    for c in [&active, &pending].into_iter().flatten() {
        if let Some(o) = clusters.get(c) {
            // One cluster's pod the API server refuses (a quota, say) must not stop the rest
            // of the pass for the other: it is reported and tried again next pass.
            if let Err(e) = keep_pods(&ctx, &apis, &svc, o).await {
                tracing::warn!(cluster = %o.name, error = %e, "cannot keep the cluster's pods");
                ctx.event(&svc, true, "FailedToUpdateRayCluster", format!("cluster {}: {e}", o.name)).await;
            }
        }
    }

    // Serve: head labels, then the config (never the new config to the old cluster while a
    // new cluster is about to be prepared).
    for c in [&active, &pending].into_iter().flatten() {
        if let Some(o) = clusters.get(c) {
            head_serve_label(&ctx, &apis, &svc, o).await;
        }
    }
    let mut pending_ready = false;
    let mut active_ready = false;
    if let Some(o) = pending.as_ref().and_then(|p| clusters.get(p)) {
        // During an upgrade only the pending cluster is asked (KubeRay empties the active one's).
        status.active_service_status.application_statuses.clear();
        let (ready, apps) = reconcile_serve(&ctx, &apis, &svc, &key, o).await;
        pending_ready = ready;
        if let Some(apps) = apps {
            status.pending_service_status.application_statuses = apps;
        }
    } else if current_plan != ClusterPlan::PrepareNew {
        if let Some(o) = active.as_ref().and_then(|a| clusters.get(a)) {
            let (ready, apps) = reconcile_serve(&ctx, &apis, &svc, &key, o).await;
            active_ready = ready;
            if let Some(apps) = apps {
                status.active_service_status.application_statuses = apps;
            }
        }
    }

    // Services: the pending cluster once ready, else the active one once ready.
    let target = if pending_ready {
        pending.clone()
    } else if active_ready {
        active.clone()
    } else {
        None
    };
    let mut serving = serving_before;
    if let Some(t) = &target {
        // Both Services follow the spec the target cluster runs, not the newest one.
        let own =
            clusters.get(t).and_then(|o| o.spec.clone()).map(|s| with_cluster_spec(&svc, &s)).unwrap_or((*svc).clone());
        let desired_serve = match cluster::serve_service(&own, t) {
            Ok(s) => s,
            Err(e) => {
                ctx.event(&svc, true, "FailedToCreateService", format!("spec.serveService: {e}")).await;
                return Ok(Action::requeue(REQUEUE));
            }
        };
        point_service(&ctx, &apis, &svc, cluster::head_service(&own, t), t).await?;
        point_service(&ctx, &apis, &svc, desired_serve, t).await?;
        serving = Some(t.clone());
    }

    // Status: promotion, then maybe a new pending cluster.
    if let Some(o) = active.as_ref().and_then(|a| clusters.get(a)) {
        status.active_service_status.ray_cluster_status = Some(cluster_status(o));
    }
    if let Some(o) = pending.as_ref().and_then(|p| clusters.get(p)) {
        status.pending_service_status.ray_cluster_status = Some(cluster_status(o));
    }
    if pending.is_some() && serving == pending {
        status.active_service_status = std::mem::take(&mut status.pending_service_status);
        active = pending.take();
        ctx.event(
            &svc,
            false,
            "PromotedRayCluster",
            format!("Cluster {} now serves", active.clone().unwrap_or_default()),
        )
        .await;
    }
    // A cluster spec that differs from the (new) target's asks for a new pending cluster; it
    // is made next pass. (The pending cluster named in the status exists by now: it was made
    // above.)
    let next = plan(
        &svc.spec.ray_cluster_config,
        identity(active.as_ref().and_then(|a| clusters.get(a))).as_ref(),
        identity(pending.as_ref().and_then(|p| clusters.get(p))).as_ref(),
        false,
        zero_downtime,
    );
    if next == ClusterPlan::PrepareNew {
        let new_name = cluster::new_cluster_name(&name);
        status.pending_service_status = ClusterServiceStatus { ray_cluster_name: Some(new_name), ..Default::default() };
    }
    status.num_serve_endpoints = count_endpoints(&apis, &svc).await?;
    compute_conditions(&mut status, generation);
    if initializing_too_long(&status, cluster::initializing_timeout(&svc).ok().flatten()) {
        let message = "the service did not become ready within its ray.io/initializing-timeout; delete and recreate it";
        set_condition(&mut status.conditions, "Ready", "False", "InitializingTimeout", message, generation);
        status.active_service_status = ClusterServiceStatus::default();
        status.pending_service_status = ClusterServiceStatus::default();
        ctx.event(&svc, true, "RayServiceInitializingTimeout", message.into()).await;
    }
    write_status(&apis, &svc, status).await?;
    Ok(Action::requeue(REQUEUE))
}

/// Whether Ready has been False/`Initializing` for longer than `timeout` seconds.
fn initializing_too_long(status: &PhotonServiceStatus, timeout: Option<f64>) -> bool {
    let (Some(timeout), Some(ready)) = (timeout, condition(&status.conditions, "Ready")) else { return false };
    let since = now().0.as_second() - ready.last_transition_time.0.as_second();
    ready.reason == "Initializing" && since as f64 > timeout
}

/// A failed pass is retried after a short wait.
pub fn error_policy(svc: Arc<PhotonService>, error: &Error, _ctx: Arc<Context>) -> Action {
    tracing::warn!(service = %svc.name(), namespace = %svc.ns(), %error, "reconcile failed; retrying");
    Action::requeue(Duration::from_secs(2))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> ClusterSpec {
        crate::cluster::tests::sample().spec.ray_cluster_config
    }

    fn id(name: &str, spec: &ClusterSpec) -> ClusterIdentity {
        ClusterIdentity {
            name: name.into(),
            hash: cluster::cluster_hash(spec, None),
            num_groups: spec.worker_group_specs.len(),
        }
    }

    #[test]
    fn the_decision_table_of_kuberay() {
        let s = spec();
        assert_eq!(plan(&s, None, None, false, true), ClusterPlan::PrepareNew, "nothing yet");
        let a = id("a", &s);
        assert_eq!(plan(&s, Some(&a), None, false, true), ClusterPlan::Nothing, "unchanged");
        let mut scaled = s.clone();
        scaled.worker_group_specs[0].replicas = Some(3);
        assert_eq!(
            plan(&scaled, Some(&a), None, false, true),
            ClusterPlan::Nothing,
            "worker counts are not an upgrade"
        );
        let mut appended = s.clone();
        appended.worker_group_specs.push(appended.worker_group_specs[0].clone());
        assert_eq!(plan(&appended, Some(&a), None, false, true), ClusterPlan::UpdateInPlace("a".into()));
        let mut changed = s.clone();
        changed.head_group_spec.template.spec.as_mut().unwrap().containers[0].image = Some("x:2".into());
        assert_eq!(plan(&changed, Some(&a), None, false, true), ClusterPlan::PrepareNew);
        assert_eq!(plan(&changed, Some(&a), None, false, false), ClusterPlan::Nothing, "upgradeStrategy None");
        let p = id("p", &changed);
        assert_eq!(plan(&changed, Some(&a), Some(&p), false, true), ClusterPlan::Nothing, "the pending one is it");
        let mut third = changed.clone();
        third.head_group_spec.template.spec.as_mut().unwrap().containers[0].image = Some("x:3".into());
        assert_eq!(
            plan(&third, Some(&a), Some(&p), false, true),
            ClusterPlan::PrepareNew,
            "a third spec replaces the pending one"
        );
        assert_eq!(
            plan(&third, Some(&a), Some(&p), true, true),
            ClusterPlan::Nothing,
            "the pending one already serves"
        );
    }

    #[test]
    fn conditions_follow_serve_endpoints() {
        let mut status = PhotonServiceStatus::default();
        compute_conditions(&mut status, 1);
        assert_eq!(condition(&status.conditions, "Ready").unwrap().reason, "Initializing");
        assert_eq!(condition(&status.conditions, "UpgradeInProgress").unwrap().reason, "Initializing");
        assert_eq!(status.service_status, "");
        status.active_service_status.ray_cluster_name = Some("a".into());
        status.num_serve_endpoints = 2;
        compute_conditions(&mut status, 1);
        assert_eq!(condition(&status.conditions, "Ready").unwrap().reason, "NonZeroServeEndpoints");
        assert_eq!(condition(&status.conditions, "UpgradeInProgress").unwrap().reason, "NoPendingCluster");
        assert_eq!(status.service_status, "Running");
        status.pending_service_status.ray_cluster_name = Some("b".into());
        status.num_serve_endpoints = 0;
        compute_conditions(&mut status, 2);
        let ready = condition(&status.conditions, "Ready").unwrap();
        assert_eq!((ready.status.as_str(), ready.reason.as_str()), ("False", "ZeroServeEndpoints"));
        assert_eq!(ready.observed_generation, Some(2));
        assert_eq!(condition(&status.conditions, "UpgradeInProgress").unwrap().status, "True");
    }
}
