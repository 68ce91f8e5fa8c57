//! The controller's state as plain data with synchronous methods: target state from applied
//! configs, observed replicas, and `reconcile`, which turns the difference into actions. The
//! actor (`actor.rs`) executes the actions and feeds observations back; this module never
//! performs I/O, so it is tested directly.
//!
//! Reconcile guarantees: each deployment converges to its target count of replicas at its
//! current version; old-version replicas leave only once enough new ones run (updates never
//! drop capacity); a replica leaves the routing table before it is asked to stop.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use photon_config::{
    defaults, resolve_app, AppBlueprint, AppCatalog, ApplicationConfig, ReplicaTarget, ResolvedDeployment, ServeConfig,
};
use photon_orchestrator::{NodeResources, ReplicaSpec, ResourceRequest, Usage};
use photon_router::{AppRoute, DeploymentId, DeploymentTargets, ReplicaEndpoint, RoutingTable};
use serde_json::Value;
use tokio::time::Instant;

use crate::autoscale::Autoscaler;
use crate::status::*;

/// What the actor must do after a state change.
// Actions are built and consumed once per control loop, not stored: size does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Start a replica.
    Start(ReplicaSpec),
    /// Drain and stop a replica (killed after `grace`).
    Stop {
        /// Which replica.
        replica_id: String,
        /// How long it may drain.
        grace: Duration,
    },
    /// Run one health check.
    CheckHealth {
        /// Which replica.
        replica_id: String,
        /// Its address.
        address: String,
        /// A check not answered within this fails.
        timeout: Duration,
    },
    /// Ask a replica how many requests it is executing (autoscaling).
    PollLoad {
        /// Which replica.
        replica_id: String,
        /// Its control address.
        address: String,
    },
    /// Apply a new `user_config` / `max_ongoing_requests` in place.
    Reconfigure {
        /// Which replica.
        replica_id: String,
        /// Its address.
        address: String,
        /// The new user_config.
        user_config: Option<Value>,
        /// The new limit.
        max_ongoing_requests: u32,
    },
}

#[derive(Debug, Clone)]
struct Replica {
    id: String,
    version: u64,
    state: ReplicaState,
    /// Control (gRPC) address, once registered.
    address: Option<String>,
    /// Data (HTTP/1.1) address, once registered.
    data_address: Option<String>,
    pid: Option<u32>,
    start_time_s: f64,
    health_failures: u32,
    next_health_check: Instant,
    health_check_in_flight: bool,
    last_health_error: Option<String>,
    user_config: Option<Value>,
    max_ongoing_requests: u32,
    reconfiguring: bool,
    /// Requests executing, as last reported (autoscaling).
    ongoing: u32,
    load_poll_in_flight: bool,
    /// What it holds of the node until its process ends.
    resources: ResourceRequest,
    /// The GPUs it was given.
    gpu_ids: Vec<u32>,
    /// Why it cannot start yet, as its backend reports (a pod that cannot be scheduled).
    waiting: Option<String>,
    /// Multiplexed model ids it holds or is loading, as it last reported.
    model_ids: Vec<String>,
}

#[derive(Debug, Clone)]
struct Deployment {
    spec: ResolvedDeployment,
    /// Bumped when an option that needs new replicas changes.
    version: u64,
    heavy_key: String,
    replicas: BTreeMap<String, Replica>,
    status: DeploymentStatus,
    trigger: DeploymentStatusTrigger,
    message: String,
    start_failures: u32,
    next_start_at: Instant,
    ever_healthy: bool,
    deleting: bool,
    autoscaler: Option<Autoscaler>,
    /// Set while an autoscaling decision is being carried out.
    autoscaling: Option<DeploymentStatus>,
    /// Why replicas it wants are not started: the node lacks free resources.
    pending: Option<String>,
    next_load_poll: Instant,
}

#[derive(Debug, Clone)]
struct App {
    config: ApplicationConfig,
    ingress: Option<String>,
    /// The ingress's API docs path (FastAPI's `docs_url`).
    docs_path: Option<String>,
    deployments: Vec<String>,
    deploy_error: Option<String>,
    /// What in the config cannot apply here (reported in the status message, not dropped).
    warnings: Vec<String>,
    last_deployed_time_s: f64,
    deleting: bool,
    /// Its code is being imported: DEPLOYING until the catalog knows it.
    importing: bool,
    /// Since when (for the progress in its status message).
    importing_since: Instant,
}

/// Where replicas run, as far as scheduling is concerned.
#[derive(Debug, Clone)]
pub struct Placement {
    /// Controller URL given to replicas.
    pub controller_url: String,
    /// Nodes available (the local orchestrator is one node).
    pub nodes: u32,
    /// What the node offers replicas.
    pub node: NodeResources,
    /// The secrets replicas are started with (and checkpointed).
    pub secrets: crate::checkpoint::ClusterSecrets,
}

impl Placement {
    /// The environment that authenticates a new replica: the cluster token and its own
    /// registration secret.
    fn replica_credentials(&self, replica_id: &str) -> photon_orchestrator::SecretEnv {
        use photon_router::cluster_auth::{registration_secret, REPLICA_SECRET_ENV, TOKEN_ENV};
        photon_orchestrator::SecretEnv(
            [
                (TOKEN_ENV.to_string(), self.secrets.cluster_token.clone()),
                (REPLICA_SECRET_ENV.to_string(), registration_secret(&self.secrets.registration_key, replica_id)),
            ]
            .into(),
        )
    }
}

/// The controller's whole state.
pub struct State {
    placement: Placement,
    /// The last applied config as a serve config document (for checkpoints).
    applied: Option<Value>,
    /// `target_capacity`: a percentage applied to every deployment's replica counts.
    target_capacity: Option<f64>,
    /// Requests waiting in the proxy's router per deployment (autoscaling input).
    proxy_queued: std::collections::HashMap<DeploymentId, usize>,
    apps: Vec<App>,
    deployments: BTreeMap<DeploymentId, Deployment>,
    table: RoutingTable,
}

fn unix_now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

fn new_replica_id() -> String {
    (0..8).map(|_| fastrand::alphanumeric().to_ascii_lowercase()).collect()
}

/// Options whose change needs new replicas (Ray's HeavyWeight class).
fn heavy_key(d: &ResolvedDeployment) -> String {
    serde_json::json!({
        "import_path": d.import_path,
        "env_vars": d.env_vars,
        "ray_actor_options": d.effective.ray_actor_options,
        "max_replicas_per_node": d.max_replicas_per_node,
        "placement_group_bundles": d.effective.placement_group_bundles,
        "request_router_config": d.effective.request_router_config,
    })
    .to_string()
}

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s.max(0.0))
}

/// What each replica of `d` asks of its node.
fn resource_request(d: &ResolvedDeployment) -> ResourceRequest {
    ResourceRequest { cpus: d.num_cpus, gpus: d.num_gpus, memory_bytes: d.memory }
}

/// The words of the status message about replicas whose pods cannot be scheduled.
const UNSCHEDULED: &str = "cannot be scheduled yet";

fn pending_message(
    id: &DeploymentId,
    count: u32,
    request: &ResourceRequest,
    node: &NodeResources,
    short: &str,
) -> String {
    format!(
        "Deployment '{}' in application '{}' has {count} replica(s) waiting for resources: each needs {} and this \
         node offers {} in all; short of {short}. They start once enough is free (photon run --num-cpus, \
         --num-gpus and --memory set what the node offers).",
        id.name,
        id.app,
        request.describe(),
        node.describe()
    )
}

/// An update that cannot place a new-version replica because old-version ones hold the room
/// stops one old replica (the oldest), when that frees enough: new replicas start first while
/// the node has room, and old ones make way when it has not (Ray's rolling update).
fn make_room(
    d: &mut Deployment,
    usage: &Usage,
    node: &NodeResources,
    request: &ResourceRequest,
    actions: &mut Vec<Action>,
) {
    let old_stopping = d.replicas.values().any(|r| r.version != d.version && r.state == ReplicaState::STOPPING);
    if old_stopping {
        return; // room is on its way
    }
    let Some(old) = d
        .replicas
        .values()
        .filter(|r| r.version != d.version && r.state != ReplicaState::STOPPING)
        .min_by(|a, b| a.start_time_s.total_cmp(&b.start_time_s))
    else {
        return;
    };
    let mut after = usage.clone();
    after.release(&old.resources, &old.gpu_ids);
    if after.place(node, request).is_err() {
        return; // stopping it would not help
    }
    let replica_id = old.id.clone();
    tracing::info!(replica = %replica_id, "stopping an old replica to make room for its replacement");
    stop_replica(d, replica_id, actions);
}

/// Marks a replica STOPPING and asks for its stop: at once if it never started, else with the
/// deployment's grace period.
fn stop_replica(d: &mut Deployment, replica_id: String, actions: &mut Vec<Action>) {
    if let Some(r) = d.replicas.get_mut(&replica_id) {
        let grace =
            if r.state == ReplicaState::STARTING { Duration::ZERO } else { secs(d.spec.graceful_shutdown_timeout_s) };
        r.state = ReplicaState::STOPPING;
        actions.push(Action::Stop { replica_id, grace });
    }
}

impl State {
    /// Empty state.
    pub fn new(placement: Placement) -> Self {
        State {
            placement,
            applied: None,
            target_capacity: None,
            proxy_queued: Default::default(),
            apps: Vec::new(),
            deployments: BTreeMap::new(),
            table: RoutingTable::default(),
        }
    }

    /// Applies a whole config declaratively: apps it does not list are deleted. Applications
    /// whose code cannot be found or whose overrides do not match it become DEPLOY_FAILED; the
    /// others are unaffected. Returns the applications whose code the catalog does not know
    /// yet: they are DEPLOYING (what ran before keeps running) until [`State::code_learned`].
    pub fn apply(&mut self, config: &ServeConfig, catalog: &dyn AppCatalog, now: Instant) -> Vec<ApplicationConfig> {
        let mut doc = serde_json::to_value(config).unwrap_or_default();
        doc["applications"] = Value::Array(config.applications.iter().map(|a| a.submitted.clone()).collect());
        self.applied = Some(doc);
        self.target_capacity = config.target_capacity;
        let wanted: Vec<&str> = config.applications.iter().map(|a| a.name.as_str()).collect();
        for app in &mut self.apps {
            if !wanted.contains(&app.config.name.as_str()) && !app.deleting {
                app.deleting = true;
                for name in &app.deployments {
                    if let Some(d) = self.deployments.get_mut(&DeploymentId::new(&app.config.name, name)) {
                        d.deleting = true;
                    }
                }
            }
        }
        let mut importing = Vec::new();
        for cfg in &config.applications {
            match catalog.blueprint(cfg) {
                Some(blueprint) => self.apply_app(cfg, blueprint, now),
                None => {
                    self.mark_importing(cfg, now);
                    importing.push(cfg.clone());
                }
            }
        }
        // Keep config order for the apps that remain.
        self.apps.sort_by_key(|a| wanted.iter().position(|w| *w == a.config.name).unwrap_or(usize::MAX));
        importing
    }

    /// The catalog has learned the code of `cfg` (or why there is none): the application is
    /// applied if that config is still the one it has.
    pub fn code_learned(&mut self, cfg: &ApplicationConfig, catalog: &dyn AppCatalog, now: Instant) {
        let current = self.apps.iter().any(|a| a.importing && !a.deleting && a.config == *cfg);
        if current {
            if let Some(blueprint) = catalog.blueprint(cfg) {
                self.apply_app(cfg, blueprint, now);
            }
        }
    }

    /// An application waiting for its code: DEPLOYING with the new config, its previous
    /// deployments (if any) untouched.
    fn mark_importing(&mut self, cfg: &ApplicationConfig, now: Instant) {
        match self.apps.iter_mut().find(|a| a.config.name == cfg.name) {
            Some(app) => {
                app.config = cfg.clone();
                app.importing = true;
                app.importing_since = now;
                app.deploy_error = None;
                app.deleting = false;
                app.last_deployed_time_s = unix_now();
            }
            None => self.apps.push(App {
                config: cfg.clone(),
                ingress: None,
                docs_path: None,
                deployments: Vec::new(),
                deploy_error: None,
                warnings: Vec::new(),
                last_deployed_time_s: unix_now(),
                deleting: false,
                importing: true,
                importing_since: now,
            }),
        }
    }

    /// Applies one application whose code is known.
    fn apply_app(&mut self, cfg: &ApplicationConfig, blueprint: Result<AppBlueprint, String>, now: Instant) {
        {
            let applied = blueprint.as_ref().map(|bp| bp.applied_runtime_env.clone()).unwrap_or_default();
            let docs_path = blueprint.as_ref().ok().and_then(|bp| bp.docs_path.clone());
            let resolved = blueprint.and_then(|bp| {
                let deps = resolve_app(cfg, &bp)?;
                Ok((bp.ingress, deps))
            });
            let existing = self.apps.iter().position(|a| a.config.name == cfg.name);
            let previous: Vec<String> = existing.map(|i| self.apps[i].deployments.clone()).unwrap_or_default();
            let mut app = App {
                config: cfg.clone(),
                ingress: None,
                docs_path,
                deployments: Vec::new(),
                deploy_error: None,
                warnings: runtime_env_warnings(cfg, &applied),
                last_deployed_time_s: unix_now(),
                deleting: false,
                importing: false,
                importing_since: now,
            };
            match resolved {
                // As in Ray, a build that fails leaves the deployments of the version before
                // it running (Ray halts reconciliation until a build succeeds).
                Err(e) => {
                    app.deploy_error = Some(e);
                    if let Some(i) = existing {
                        app.ingress.clone_from(&self.apps[i].ingress);
                        app.docs_path.clone_from(&self.apps[i].docs_path);
                        app.deployments.clone_from(&previous);
                    }
                }
                Ok((ingress, deps)) => {
                    app.ingress = Some(ingress);
                    for spec in deps {
                        app.deployments.push(spec.name.clone());
                        self.upsert_deployment(spec, now);
                    }
                }
            }
            // Deployments the new code no longer has go away.
            for old in previous.iter().filter(|n| !app.deployments.contains(n)) {
                if let Some(d) = self.deployments.get_mut(&DeploymentId::new(&cfg.name, old)) {
                    d.deleting = true;
                }
            }
            match existing {
                Some(i) => self.apps[i] = app,
                None => self.apps.push(app),
            }
        }
    }

    fn upsert_deployment(&mut self, spec: ResolvedDeployment, now: Instant) {
        let id = DeploymentId::new(&spec.app, &spec.name);
        let key = heavy_key(&spec);
        match self.deployments.get_mut(&id) {
            Some(d) => {
                if d.heavy_key != key {
                    d.version += 1;
                    d.heavy_key = key;
                }
                d.autoscaler = match (&spec.replicas, d.autoscaler.take()) {
                    (ReplicaTarget::Autoscaling(a), Some(mut kept)) => {
                        kept.target = kept.target.clamp(a.min_replicas, a.max_replicas);
                        Some(kept)
                    }
                    (ReplicaTarget::Autoscaling(a), None) => Some(Autoscaler::new(a)),
                    _ => None,
                };
                d.spec = spec;
                d.deleting = false;
                d.start_failures = 0;
                d.next_start_at = now;
                d.status = DeploymentStatus::UPDATING;
                d.trigger = DeploymentStatusTrigger::CONFIG_UPDATE_STARTED;
                d.message.clear();
            }
            None => {
                let autoscaler = match &spec.replicas {
                    ReplicaTarget::Autoscaling(a) => Some(Autoscaler::new(a)),
                    ReplicaTarget::Fixed(_) => None,
                };
                self.deployments.insert(
                    id,
                    Deployment {
                        autoscaler,
                        autoscaling: None,
                        pending: None,
                        next_load_poll: now,
                        spec,
                        version: 1,
                        heavy_key: key,
                        replicas: BTreeMap::new(),
                        status: DeploymentStatus::UPDATING,
                        trigger: DeploymentStatusTrigger::CONFIG_UPDATE_STARTED,
                        message: String::new(),
                        start_failures: 0,
                        next_start_at: now,
                        ever_healthy: false,
                        deleting: false,
                    },
                );
            }
        }
    }

    /// A replica announced its address: it is built, configured and passed its first health
    /// check, so it becomes RUNNING and routable. `false` when the replica is not wanted.
    pub fn on_registered(
        &mut self,
        replica_id: &str,
        address: &str,
        data_address: &str,
        pid: u32,
        now: Instant,
    ) -> bool {
        for d in self.deployments.values_mut() {
            if let Some(r) = d.replicas.get_mut(replica_id) {
                if r.state != ReplicaState::STARTING {
                    return r.state == ReplicaState::RUNNING;
                }
                r.state = ReplicaState::RUNNING;
                r.address = Some(address.to_string());
                r.data_address = Some(data_address.to_string());
                r.pid = Some(pid);
                r.next_health_check = now + secs(d.spec.health_check_period_s);
                d.start_failures = 0;
                return true;
            }
        }
        false
    }

    /// A replica waits for something outside it (its pod cannot be scheduled), or no longer.
    pub fn on_waiting(&mut self, replica_id: &str, why: Option<String>) {
        if let Some(r) = self.deployments.values_mut().find_map(|d| d.replicas.get_mut(replica_id)) {
            r.waiting = why;
        }
    }

    /// A replica's process ended.
    pub fn on_exited(&mut self, replica_id: &str, how: &str, now: Instant) {
        for (id, d) in self.deployments.iter_mut() {
            let Some(r) = d.replicas.remove(replica_id) else { continue };
            match r.state {
                ReplicaState::STARTING => {
                    d.start_failures += 1;
                    let backoff = Duration::from_millis(100 * 2u64.pow(d.start_failures.min(6)));
                    d.next_start_at = now + backoff.min(Duration::from_secs(5));
                    d.message = format!("replica {replica_id} of {id} exited while starting ({how})");
                    tracing::warn!(replica = replica_id, deployment = %id, %how, "replica exited while starting");
                }
                ReplicaState::STOPPING => {}
                _ => {
                    tracing::error!(replica = replica_id, deployment = %id, %how, "replica died; starting a replacement");
                    d.message = format!("replica {replica_id} died ({how}); a replacement is starting");
                    if d.status == DeploymentStatus::HEALTHY {
                        d.status = DeploymentStatus::UNHEALTHY;
                        d.trigger = DeploymentStatusTrigger::HEALTH_CHECK_FAILED;
                    }
                }
            }
            return;
        }
    }

    /// A health check finished.
    pub fn on_health(&mut self, replica_id: &str, result: Result<(), String>, now: Instant) -> Option<Action> {
        for (id, d) in self.deployments.iter_mut() {
            let Some(r) = d.replicas.get_mut(replica_id) else { continue };
            r.health_check_in_flight = false;
            let period = d.spec.health_check_period_s * (0.9 + 0.2 * fastrand::f64());
            r.next_health_check = now + secs(period);
            match result {
                Ok(()) => {
                    r.health_failures = 0;
                    return None;
                }
                Err(e) => {
                    r.health_failures += 1;
                    tracing::warn!(replica = replica_id, deployment = %id, error = %e, failures = r.health_failures, "health check failed");
                    r.last_health_error = Some(e.clone());
                    if r.health_failures >= defaults::HEALTH_CHECK_FAILURE_THRESHOLD && r.state == ReplicaState::RUNNING
                    {
                        r.state = ReplicaState::STOPPING;
                        d.message =
                            format!("replica {replica_id} failed {} health checks in a row: {e}", r.health_failures);
                        if d.status == DeploymentStatus::HEALTHY {
                            d.status = DeploymentStatus::UNHEALTHY;
                            d.trigger = DeploymentStatusTrigger::HEALTH_CHECK_FAILED;
                        }
                        return Some(Action::Stop {
                            replica_id: replica_id.to_string(),
                            grace: secs(d.spec.graceful_shutdown_timeout_s),
                        });
                    }
                    return None;
                }
            }
        }
        None
    }

    /// An in-place reconfigure finished.
    pub fn on_reconfigured(
        &mut self,
        replica_id: &str,
        result: Result<(Option<Value>, u32), String>,
    ) -> Option<Action> {
        for d in self.deployments.values_mut() {
            let Some(r) = d.replicas.get_mut(replica_id) else { continue };
            r.reconfiguring = false;
            match result {
                Ok((user_config, max_ongoing)) => {
                    r.user_config = user_config;
                    r.max_ongoing_requests = max_ongoing;
                    if r.state == ReplicaState::UPDATING {
                        r.state = ReplicaState::RUNNING;
                    }
                    return None;
                }
                Err(e) => {
                    // Ray treats a failing reconfigure like a failing replica: replace it.
                    r.state = ReplicaState::STOPPING;
                    d.message = format!("replica {replica_id} failed to apply the new user_config: {e}");
                    return Some(Action::Stop {
                        replica_id: replica_id.to_string(),
                        grace: secs(d.spec.graceful_shutdown_timeout_s),
                    });
                }
            }
        }
        None
    }

    /// The control addresses of the replicas it knows that registered one.
    pub fn control_addresses(&self) -> std::collections::HashSet<&str> {
        self.deployments.values().flat_map(|d| d.replicas.values()).filter_map(|r| r.address.as_deref()).collect()
    }

    /// What a restarted controller needs: the applied config and the registered replicas.
    pub fn checkpoint(&self) -> crate::checkpoint::Checkpoint {
        let mut replicas = Vec::new();
        for (id, d) in &self.deployments {
            for r in d.replicas.values() {
                let (Some(address), Some(data_address), Some(pid)) = (&r.address, &r.data_address, r.pid) else {
                    continue;
                };
                if !matches!(r.state, ReplicaState::RUNNING | ReplicaState::UPDATING) || r.version != d.version {
                    continue;
                }
                replicas.push(crate::checkpoint::ReplicaRecord {
                    replica_id: r.id.clone(),
                    app: id.app.clone(),
                    deployment: id.name.clone(),
                    heavy_key: d.heavy_key.clone(),
                    address: address.clone(),
                    data_address: data_address.clone(),
                    pid,
                    start_time_s: r.start_time_s,
                    user_config: r.user_config.clone(),
                    max_ongoing_requests: r.max_ongoing_requests,
                    gpu_ids: r.gpu_ids.clone(),
                });
            }
        }
        crate::checkpoint::Checkpoint {
            config: self.applied.clone(),
            replicas,
            secrets: Some(self.placement.secrets.clone()),
        }
    }

    /// Takes back replicas from a checkpoint (after `apply` of its config): they are RUNNING at
    /// once if their deployment still wants them as they are, and are health-checked right away.
    /// Returns the adopted (replica id, pid) pairs.
    pub fn adopt(&mut self, records: &[crate::checkpoint::ReplicaRecord], now: Instant) -> Vec<(String, u32)> {
        let mut adopted = Vec::new();
        for rec in records {
            let Some(d) = self.deployments.get_mut(&DeploymentId::new(&rec.app, &rec.deployment)) else { continue };
            let version = if rec.heavy_key == d.heavy_key { d.version } else { 0 };
            d.replicas.insert(
                rec.replica_id.clone(),
                Replica {
                    id: rec.replica_id.clone(),
                    version,
                    state: ReplicaState::RUNNING,
                    address: Some(rec.address.clone()),
                    data_address: Some(rec.data_address.clone()),
                    pid: Some(rec.pid),
                    start_time_s: rec.start_time_s,
                    health_failures: 0,
                    next_health_check: now,
                    health_check_in_flight: false,
                    last_health_error: None,
                    user_config: rec.user_config.clone(),
                    max_ongoing_requests: rec.max_ongoing_requests,
                    reconfiguring: false,
                    ongoing: 0,
                    load_poll_in_flight: false,
                    resources: resource_request(&d.spec),
                    gpu_ids: rec.gpu_ids.clone(),
                    waiting: None,
                    model_ids: Vec::new(),
                },
            );
            d.ever_healthy = true;
            adopted.push((rec.replica_id.clone(), rec.pid));
        }
        adopted
    }

    /// A replica reported the multiplexed models it holds or is loading (routers prefer it for
    /// those from the next routing table on).
    pub fn on_models(&mut self, replica_id: &str, model_ids: Vec<String>) {
        for d in self.deployments.values_mut() {
            if let Some(r) = d.replicas.get_mut(replica_id) {
                r.model_ids = model_ids;
                return;
            }
        }
    }

    /// A replica reported how many requests it executes.
    pub fn on_load(&mut self, replica_id: &str, ongoing: Option<u32>) {
        for d in self.deployments.values_mut() {
            if let Some(r) = d.replicas.get_mut(replica_id) {
                r.load_poll_in_flight = false;
                if let Some(n) = ongoing {
                    r.ongoing = n;
                }
                return;
            }
        }
    }

    /// Requests waiting in the proxy's router, per deployment (autoscaling input).
    pub fn set_proxy_queued(&mut self, queued: std::collections::HashMap<DeploymentId, usize>) {
        self.proxy_queued = queued;
    }

    /// Feeds autoscalers their load and polls replicas for the next sample.
    fn autoscale(&mut self, now: Instant, actions: &mut Vec<Action>) {
        for (id, d) in self.deployments.iter_mut() {
            let ReplicaTarget::Autoscaling(config) = &d.spec.replicas else { continue };
            let Some(autoscaler) = d.autoscaler.as_mut() else { continue };
            if d.deleting || now < d.next_load_poll {
                continue;
            }
            d.next_load_poll = now + secs(config.metrics_interval_s.min(config.look_back_period_s * 0.2).max(0.05));
            let running: Vec<&Replica> = d.replicas.values().filter(|r| r.state == ReplicaState::RUNNING).collect();
            let total = running.iter().map(|r| f64::from(r.ongoing)).sum::<f64>()
                + self.proxy_queued.get(id).copied().unwrap_or(0) as f64;
            autoscaler.record(now, total, config);
            let before = autoscaler.target;
            let after = autoscaler.decide(now, running.len() as u32, config);
            if after != before {
                tracing::info!(deployment = %id, from = before, to = after, load = total, "autoscaling");
                d.autoscaling =
                    Some(if after > before { DeploymentStatus::UPSCALING } else { DeploymentStatus::DOWNSCALING });
            }
            for r in d.replicas.values_mut() {
                if let (ReplicaState::RUNNING, Some(address), false) = (r.state, &r.address, r.load_poll_in_flight) {
                    r.load_poll_in_flight = true;
                    actions.push(Action::PollLoad { replica_id: r.id.clone(), address: address.clone() });
                }
            }
        }
    }

    /// Every replica should stop (shutdown).
    pub fn delete_all(&mut self) {
        for app in &mut self.apps {
            app.deleting = true;
        }
        for d in self.deployments.values_mut() {
            d.deleting = true;
        }
    }

    /// Replicas one node may hold for this deployment, and the count this instance aims for.
    fn placeable(&self, d: &Deployment) -> (u32, u32) {
        let wanted = match (&d.autoscaler, d.deleting) {
            (_, true) => 0,
            (Some(a), false) => a.target,
            (None, false) => capacity_adjusted(d.spec.replicas.initial(), self.target_capacity),
        };
        let cap =
            d.spec.max_replicas_per_node.map_or(u32::MAX, |per_node| per_node.saturating_mul(self.placement.nodes));
        (wanted, wanted.min(cap))
    }

    /// Compares target and observed state and returns what to do now.
    pub fn reconcile(&mut self, now: Instant) -> Vec<Action> {
        let mut actions = Vec::new();
        self.autoscale(now, &mut actions);
        let ids: Vec<DeploymentId> = self.deployments.keys().cloned().collect();
        // Replicas hold their resources until their process ends, STOPPING ones included.
        let mut usage = Usage::default();
        for r in self.deployments.values().flat_map(|d| d.replicas.values()) {
            usage.hold(&r.resources, &r.gpu_ids);
        }
        for id in ids {
            let (wanted, target) = self.placeable(&self.deployments[&id]);
            let controller_url = self.placement.controller_url.clone();
            let d = self.deployments.get_mut(&id).expect("listed above");
            let budget =
                defaults::MAX_CONSTRUCTOR_RETRY_COUNT.min(defaults::MAX_PER_REPLICA_RETRY_COUNT * target.max(1));
            let current: Vec<&Replica> =
                d.replicas.values().filter(|r| r.version == d.version && r.state != ReplicaState::STOPPING).collect();
            let running_current =
                current.iter().filter(|r| matches!(r.state, ReplicaState::RUNNING | ReplicaState::UPDATING)).count()
                    as u32;
            let exhausted = d.start_failures >= budget && running_current == 0 && !d.deleting;

            // Start what is missing.
            let missing = target.saturating_sub(current.len() as u32);
            let request = resource_request(&d.spec);
            d.pending = None;
            if missing > 0 && !exhausted && now >= d.next_start_at {
                for placed in 0..missing {
                    let gpu_ids = match usage.place(&self.placement.node, &request) {
                        Ok(ids) => ids,
                        Err(short) => {
                            d.pending =
                                Some(pending_message(&id, missing - placed, &request, &self.placement.node, &short));
                            make_room(d, &usage, &self.placement.node, &request, &mut actions);
                            break;
                        }
                    };
                    let replica_id = new_replica_id();
                    let spec = ReplicaSpec {
                        replica_id: replica_id.clone(),
                        app: id.app.clone(),
                        deployment: id.name.clone(),
                        import_path: d.spec.import_path.clone(),
                        controller: controller_url.clone(),
                        max_ongoing_requests: d.spec.max_ongoing_requests,
                        user_config: d.spec.user_config.clone(),
                        env_vars: d.spec.env_vars.clone(),
                        image: d.spec.image.clone(),
                        secret_env: self.placement.replica_credentials(&replica_id),
                        graceful_shutdown_timeout: secs(d.spec.graceful_shutdown_timeout_s),
                        graceful_shutdown_wait_loop: secs(d.spec.graceful_shutdown_wait_loop_s),
                        access_log: d.spec.access_log,
                        log_encoding: d.spec.log_encoding.clone(),
                        log_level: d.spec.log_level.clone(),
                        logs_dir: d.spec.logs_dir.clone(),
                        gpu_ids: gpu_ids.clone(),
                        resources: request,
                        version: d.version,
                    };
                    d.replicas.insert(
                        replica_id.clone(),
                        Replica {
                            id: replica_id,
                            version: d.version,
                            state: ReplicaState::STARTING,
                            address: None,
                            data_address: None,
                            pid: None,
                            start_time_s: unix_now(),
                            health_failures: 0,
                            next_health_check: now,
                            health_check_in_flight: false,
                            last_health_error: None,
                            user_config: d.spec.user_config.clone(),
                            max_ongoing_requests: d.spec.max_ongoing_requests,
                            reconfiguring: false,
                            ongoing: 0,
                            load_poll_in_flight: false,
                            resources: request,
                            gpu_ids,
                            waiting: None,
                            model_ids: Vec::new(),
                        },
                    );
                    actions.push(Action::Start(spec));
                }
            }

            // Stop surplus current-version replicas: not yet running first, then the newest.
            let mut current: Vec<&Replica> =
                d.replicas.values().filter(|r| r.version == d.version && r.state != ReplicaState::STOPPING).collect();
            let surplus = current.len().saturating_sub(target as usize);
            current.sort_by(|a, b| {
                (a.state == ReplicaState::STARTING)
                    .cmp(&(b.state == ReplicaState::STARTING))
                    .reverse()
                    .then(b.start_time_s.total_cmp(&a.start_time_s))
            });
            let mut to_stop: Vec<String> = current.iter().take(surplus).map(|r| r.id.clone()).collect();
            // Old-version replicas leave once the new version carries the full target.
            if running_current >= target {
                to_stop.extend(
                    d.replicas
                        .values()
                        .filter(|r| r.version != d.version && r.state != ReplicaState::STOPPING)
                        .map(|r| r.id.clone()),
                );
            }
            for replica_id in to_stop {
                stop_replica(d, replica_id, &mut actions);
            }

            // Health checks and in-place reconfiguration of running replicas.
            for r in d.replicas.values_mut() {
                let Some(address) = r.address.clone() else { continue };
                if r.state == ReplicaState::RUNNING && !r.health_check_in_flight && now >= r.next_health_check {
                    r.health_check_in_flight = true;
                    actions.push(Action::CheckHealth {
                        replica_id: r.id.clone(),
                        address: address.clone(),
                        timeout: secs(d.spec.health_check_timeout_s),
                    });
                }
                let stale =
                    r.user_config != d.spec.user_config || r.max_ongoing_requests != d.spec.max_ongoing_requests;
                if r.version == d.version && stale && !r.reconfiguring && r.state == ReplicaState::RUNNING {
                    r.reconfiguring = true;
                    r.state = ReplicaState::UPDATING;
                    actions.push(Action::Reconfigure {
                        replica_id: r.id.clone(),
                        address,
                        user_config: d.spec.user_config.clone(),
                        max_ongoing_requests: d.spec.max_ongoing_requests,
                    });
                }
            }

            Self::update_status(&id, d, wanted, target, exhausted, budget);
        }
        // Deleted deployments with no replicas left are forgotten, and so are their apps.
        self.deployments.retain(|_, d| !(d.deleting && d.replicas.is_empty()));
        let deployments = &self.deployments;
        self.apps.retain(|a| {
            !(a.deleting
                && a.deployments.iter().all(|n| !deployments.contains_key(&DeploymentId::new(&a.config.name, n))))
        });
        actions
    }

    fn update_status(id: &DeploymentId, d: &mut Deployment, wanted: u32, target: u32, exhausted: bool, budget: u32) {
        if d.deleting {
            d.status = DeploymentStatus::UPDATING;
            d.trigger = DeploymentStatusTrigger::DELETING;
            return;
        }
        let settled = d.replicas.values().all(|r| r.version == d.version && r.state == ReplicaState::RUNNING);
        let running = d.replicas.values().filter(|r| r.state == ReplicaState::RUNNING).count() as u32;
        if exhausted {
            d.status = if d.ever_healthy { DeploymentStatus::UNHEALTHY } else { DeploymentStatus::DEPLOY_FAILED };
            d.trigger = DeploymentStatusTrigger::REPLICA_STARTUP_FAILED;
            d.message = format!(
                "The deployment failed to start {budget} times in a row. This may be due to a problem with its constructor or initial health check failing. Last failure: {}",
                d.message.rsplit("Last failure: ").next().unwrap_or_default()
            );
        } else if settled && running == target {
            if d.status != DeploymentStatus::HEALTHY {
                tracing::info!(deployment = %id, replicas = running, "deployment is HEALTHY");
                d.trigger = match d.autoscaling.take() {
                    Some(DeploymentStatus::UPSCALING) => DeploymentStatusTrigger::UPSCALE_COMPLETED,
                    Some(_) => DeploymentStatusTrigger::DOWNSCALE_COMPLETED,
                    None => DeploymentStatusTrigger::CONFIG_UPDATE_COMPLETED,
                };
            }
            d.autoscaling = None;
            d.status = DeploymentStatus::HEALTHY;
            d.ever_healthy = true;
            d.message = if target < wanted {
                format!(
                    "Running {target} of {wanted} replicas: max_replicas_per_node is {} and this instance has {} node(s).",
                    d.spec.max_replicas_per_node.unwrap_or(0),
                    target / d.spec.max_replicas_per_node.unwrap_or(1).max(1)
                )
            } else {
                String::new()
            };
        } else if let (Some(direction), true) = (d.autoscaling, d.ever_healthy) {
            // Autoscaling keeps the application RUNNING (Ray: trigger AUTOSCALING).
            if d.status == DeploymentStatus::HEALTHY
                || d.status == DeploymentStatus::UPSCALING
                || d.status == DeploymentStatus::DOWNSCALING
            {
                d.status = direction;
                d.trigger = DeploymentStatusTrigger::AUTOSCALING;
            }
        } else if d.status == DeploymentStatus::HEALTHY {
            d.status = DeploymentStatus::UPDATING;
            d.trigger = DeploymentStatusTrigger::CONFIG_UPDATE_STARTED;
        }
        if let Some(pending) = &d.pending {
            d.message = pending.clone();
        } else if !settled {
            let waiting: Vec<&String> = d
                .replicas
                .values()
                .filter(|r| r.state == ReplicaState::STARTING)
                .filter_map(|r| r.waiting.as_ref())
                .collect();
            if let Some(why) = waiting.first() {
                d.message = format!(
                    "Deployment '{}' in application '{}' has {} replica(s) that {UNSCHEDULED}: {why}",
                    id.name,
                    id.app,
                    waiting.len()
                );
            } else if d.message.contains(UNSCHEDULED) {
                d.message.clear();
            }
        }
    }

    /// The routing table this state implies; its version increases whenever its content changes.
    pub fn routing_table(&mut self) -> &RoutingTable {
        let mut table = RoutingTable { version: self.table.version, ..Default::default() };
        for app in self.apps.iter().filter(|a| !a.deleting) {
            let Some(ingress) = &app.ingress else { continue };
            table.routes.push(AppRoute {
                app: app.config.name.clone(),
                route_prefix: app.config.route_prefix.clone(),
                ingress: ingress.clone(),
            });
        }
        for (id, d) in &self.deployments {
            let replicas: Vec<ReplicaEndpoint> = d
                .replicas
                .values()
                .filter(|r| matches!(r.state, ReplicaState::RUNNING | ReplicaState::UPDATING))
                // A replica whose last health check failed gets no traffic until one passes.
                .filter(|r| r.health_failures == 0)
                .filter_map(|r| {
                    r.data_address.as_ref().map(|a| ReplicaEndpoint {
                        replica_id: r.id.clone(),
                        address: a.clone(),
                        model_ids: r.model_ids.clone(),
                    })
                })
                .collect();
            let unavailable = replicas.is_empty() && (d.status == DeploymentStatus::DEPLOY_FAILED || d.deleting);
            table.deployments.insert(
                id.clone(),
                DeploymentTargets {
                    max_ongoing_requests: d.spec.max_ongoing_requests,
                    max_queued_requests: d.spec.max_queued_requests,
                    backpressure_status_code: d.spec.backpressure.status_code,
                    retry_after_s: d.spec.backpressure.retry_after_s,
                    replicas,
                    unavailable,
                },
            );
        }
        if table.routes != self.table.routes || table.deployments != self.table.deployments {
            table.version += 1;
            self.table = table;
        }
        &self.table
    }

    /// A snapshot for status output.
    pub fn status(&self) -> InstanceStatus {
        let applications = self
            .apps
            .iter()
            .map(|app| {
                let deployments: Vec<DeploymentStatusInfo> = app
                    .deployments
                    .iter()
                    .filter_map(|name| {
                        let d = self.deployments.get(&DeploymentId::new(&app.config.name, name))?;
                        Some(DeploymentStatusInfo {
                            name: name.clone(),
                            status: d.status,
                            status_trigger: d.trigger,
                            message: d.message.clone(),
                            target_num_replicas: self.placeable(d).1,
                            replicas: d
                                .replicas
                                .values()
                                .map(|r| ReplicaStatus {
                                    replica_id: r.id.clone(),
                                    state: r.state,
                                    pid: r.pid,
                                    start_time_s: r.start_time_s,
                                    address: r.address.clone(),
                                    last_health_check_error: r.last_health_error.clone(),
                                })
                                .collect(),
                            deployment_config: deployment_config(&d.spec),
                            required_resources: required_resources(&d.spec),
                        })
                    })
                    .collect();
                let (status, message) = app_status(app, &deployments);
                ApplicationStatusInfo {
                    name: app.config.name.clone(),
                    route_prefix: app.config.route_prefix.clone(),
                    status,
                    message,
                    last_deployed_time_s: app.last_deployed_time_s,
                    deployments,
                    deployed_app_config: app.config.submitted.clone(),
                    ingress: app.ingress.clone(),
                    docs_path: app.docs_path.clone(),
                }
            })
            .collect();
        InstanceStatus { applications }
    }

    /// Whether any replica is still around (shutdown waits for none).
    pub fn has_replicas(&self) -> bool {
        self.deployments.values().any(|d| !d.replicas.is_empty())
    }

    /// The deployment specs by id (tests and status).
    pub fn spec(&self, id: &DeploymentId) -> Option<&ResolvedDeployment> {
        self.deployments.get(id).map(|d| &d.spec)
    }

    /// Which replica target a deployment has (tests).
    pub fn replica_target(&self, id: &DeploymentId) -> Option<ReplicaTarget> {
        self.deployments.get(id).map(|d| d.spec.replicas.clone())
    }
}

/// Ray's full dump of a deployment's effective options.
fn deployment_config(d: &ResolvedDeployment) -> Value {
    let e = &d.effective;
    let mut actor = serde_json::to_value(e.ray_actor_options.clone().unwrap_or_default()).unwrap_or_default();
    if let Value::Object(m) = &mut actor {
        m.entry("num_cpus").or_insert(serde_json::json!(d.num_cpus));
    }
    let mut out = serde_json::json!({ "name": d.name });
    let m = out.as_object_mut().expect("object literal");
    match &d.replicas {
        ReplicaTarget::Fixed(n) => {
            m.insert("num_replicas".into(), serde_json::json!(n));
        }
        ReplicaTarget::Autoscaling(a) => {
            m.insert("autoscaling_config".into(), serde_json::to_value(a).unwrap_or_default());
        }
    }
    m.insert("max_ongoing_requests".into(), serde_json::json!(d.max_ongoing_requests));
    // Ray's form: -1 is no limit.
    m.insert("max_queued_requests".into(), serde_json::json!(d.max_queued_requests.map_or(-1, |q| q as i64)));
    m.insert("backpressure_config".into(), serde_json::to_value(d.backpressure).unwrap_or_default());
    m.insert("user_config".into(), d.user_config.clone().unwrap_or(Value::Null));
    m.insert("graceful_shutdown_wait_loop_s".into(), serde_json::json!(d.graceful_shutdown_wait_loop_s));
    m.insert("graceful_shutdown_timeout_s".into(), serde_json::json!(d.graceful_shutdown_timeout_s));
    m.insert("health_check_period_s".into(), serde_json::json!(d.health_check_period_s));
    m.insert("health_check_timeout_s".into(), serde_json::json!(d.health_check_timeout_s));
    m.insert("ray_actor_options".into(), actor);
    m.insert(
        "request_router_config".into(),
        e.request_router_config.clone().unwrap_or_else(|| {
            serde_json::json!({
                "request_router_class": "ray.serve._private.request_router:PowerOfTwoChoicesRequestRouter",
                "request_router_kwargs": {}, "request_routing_stats_period_s": 10.0,
                "request_routing_stats_timeout_s": 30.0, "initial_backoff_s": 0.025,
                "backoff_multiplier": 2.0, "max_backoff_s": 0.5
            })
        }),
    );
    m.insert(
        "rolling_update_percentage".into(),
        serde_json::json!(e.rolling_update_percentage.unwrap_or(defaults::ROLLING_UPDATE_PERCENTAGE)),
    );
    m.insert("max_surge_percent".into(), serde_json::json!(e.max_surge_percent.unwrap_or(defaults::MAX_SURGE_PERCENT)));
    if let Some(n) = d.max_replicas_per_node {
        m.insert("max_replicas_per_node".into(), serde_json::json!(n));
    }
    out
}

fn required_resources(d: &ResolvedDeployment) -> Value {
    let mut m = serde_json::Map::new();
    m.insert("CPU".into(), serde_json::json!(d.num_cpus));
    if d.num_gpus > 0.0 {
        m.insert("GPU".into(), serde_json::json!(d.num_gpus));
    }
    Value::Object(m)
}

/// Ray's `capacity_adjusted`: `n` scaled by `target_capacity` percent, at least 1 unless the
/// capacity or `n` is 0 (spec/ray-serve.md section 2.5; applied to fixed replica counts).
fn capacity_adjusted(n: u32, capacity: Option<f64>) -> u32 {
    match capacity {
        None => n,
        Some(c) if c >= 100.0 => n,
        Some(c) if c <= 0.0 || n == 0 => 0,
        Some(c) => ((f64::from(n) * c / 100.0 + 0.5).floor() as u32).max(1),
    }
}

/// `runtime_env` keys Photon cannot apply: `env_vars` always apply, and the keys the
/// application's loader applies (`applied`: `working_dir` and `py_modules` for Python code);
/// the others (Python packages, containers) do not.
fn runtime_env_warnings(app: &ApplicationConfig, applied: &[String]) -> Vec<String> {
    let ignored = |k: &&String| *k != "env_vars" && !applied.contains(k);
    let mut keys: Vec<String> = app.runtime_env.keys().filter(ignored).map(|k| format!("runtime_env.{k}")).collect();
    for d in &app.deployments {
        if let Some(env) = d.ray_actor_options.as_ref().and_then(|o| o.runtime_env.as_ref()) {
            keys.extend(
                env.keys().filter(ignored).map(|k| format!("deployments.{}.ray_actor_options.runtime_env.{k}", d.name)),
            );
        }
    }
    keys.into_iter().map(|k| format!("{k} is ignored: Photon cannot apply it yet")).collect()
}

fn app_status(app: &App, deployments: &[DeploymentStatusInfo]) -> (ApplicationStatus, String) {
    if app.deleting {
        return (ApplicationStatus::DELETING, String::new());
    }
    if let Some(e) = &app.deploy_error {
        return (ApplicationStatus::DEPLOY_FAILED, e.clone());
    }
    if app.importing {
        // Progress: an import can take minutes when runtime_env packages are installed first.
        let packages = ["pip", "uv"].into_iter().find(|k| app.config.runtime_env.get(*k).is_some_and(|v| !v.is_null()));
        let step = match packages {
            Some(installer) => format!("Installing its runtime_env.{installer} packages and importing its code"),
            None => "Importing its code".to_string(),
        };
        return (
            ApplicationStatus::DEPLOYING,
            format!("{step} ({} s so far).", app.importing_since.elapsed().as_secs()),
        );
    }
    let names = |s: DeploymentStatus| -> Vec<String> {
        deployments.iter().filter(|d| d.status == s).map(|d| format!("'{}'", d.name)).collect()
    };
    let failed = names(DeploymentStatus::DEPLOY_FAILED);
    if !failed.is_empty() {
        return (
            ApplicationStatus::DEPLOY_FAILED,
            format!("Failed to update the deployments [{}].", failed.join(", ")),
        );
    }
    let unhealthy = names(DeploymentStatus::UNHEALTHY);
    if !unhealthy.is_empty() {
        return (ApplicationStatus::UNHEALTHY, format!("The deployments [{}] are UNHEALTHY.", unhealthy.join(", ")));
    }
    let serving = |d: &DeploymentStatusInfo| {
        d.status == DeploymentStatus::HEALTHY
            || (matches!(d.status, DeploymentStatus::UPSCALING | DeploymentStatus::DOWNSCALING)
                && d.status_trigger == DeploymentStatusTrigger::AUTOSCALING)
    };
    if deployments.iter().all(serving) {
        (ApplicationStatus::RUNNING, app.warnings.join(" "))
    } else {
        (ApplicationStatus::DEPLOYING, String::new())
    }
}

#[cfg(test)]
mod tests;
