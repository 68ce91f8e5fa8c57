//! Effective deployment options: code defaults from the application's blueprint, replaced field
//! by field by the config's overrides (Ray's rule: an option given in the config replaces the
//! code's value as a whole), then Ray's defaults. Nothing downstream sees an unset option.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;

use serde_json::{Map, Value};

use crate::defaults as d;
use crate::schema::*;

/// What an application's code defines: its deployments with their code-level options.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct AppBlueprint {
    /// The deployment that receives the application's HTTP/gRPC traffic.
    pub ingress: String,
    /// Each deployment's code defaults (the `@serve.deployment(...)` options).
    pub deployments: Vec<DeploymentOverride>,
    /// Environment every replica of the application gets besides `runtime_env.env_vars` (how
    /// a Python replica finds its code).
    pub replica_env: BTreeMap<String, String>,
    /// Per deployment, what replaces entries of `replica_env` for its replicas (a deployment
    /// whose own `runtime_env` gives it other code or packages).
    pub deployment_env: BTreeMap<String, BTreeMap<String, String>>,
    /// `runtime_env` keys the application's loader applies (besides `env_vars`).
    pub applied_runtime_env: Vec<String>,
    /// Where the ingress serves its API docs (FastAPI's `docs_url`), if it does.
    pub docs_path: Option<String>,
}

/// What [`AppCatalog::package`] answers, when it has looked: the archive, or why there is none.
pub type PackageLookup<'a> = Pin<Box<dyn Future<Output = Option<Result<std::path::PathBuf, String>>> + Send + 'a>>;

/// Looks applications up by `import_path` (the replica registry implements it).
pub trait AppCatalog: Send + Sync {
    /// The blueprint of the application's code, or why there is none; `None` while the code
    /// is not known yet (Python code is imported first, by [`AppCatalog::learn`]).
    fn blueprint(&self, app: &ApplicationConfig) -> Option<Result<AppBlueprint, String>>;

    /// The `.zip` archive of package `name` (a directory of code that replicas' code specs
    /// name) for a replica on another machine, or why there is none; `None` when this catalog
    /// has no packages.
    fn package<'a>(&'a self, _name: &'a str) -> PackageLookup<'a> {
        Box::pin(async { None })
    }

    /// Learns the code of `app` (a Python import), after which `blueprint` answers for it. The
    /// controller runs this off its actor, which must not wait on a slow import.
    fn learn<'a>(&'a self, _app: &'a ApplicationConfig) -> Pin<Box<dyn Future<Output = ()> + Send + 'a>> {
        Box::pin(std::future::ready(()))
    }

    /// Sees a config about to be applied (its instance-wide options, such as the gRPC
    /// servicer functions Python replicas take message types from).
    fn observe(&self, _config: &ServeConfig) {}
}

/// How many replicas a deployment wants.
// A control-plane value held once per deployment: boxing the larger variant buys nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum ReplicaTarget {
    /// A fixed count.
    Fixed(u32),
    /// Autoscaled between the config's bounds.
    Autoscaling(AutoscalingConfig),
}

impl ReplicaTarget {
    /// The count to start with.
    pub fn initial(&self) -> u32 {
        match self {
            ReplicaTarget::Fixed(n) => *n,
            ReplicaTarget::Autoscaling(a) => a.initial_replicas.unwrap_or(a.min_replicas),
        }
    }
}

/// One deployment with every option resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct ResolvedDeployment {
    /// Application name.
    pub app: String,
    /// Deployment name.
    pub name: String,
    /// Import path of the application (the replica builds the deployment from it).
    pub import_path: String,
    /// Replica count or autoscaling bounds.
    pub replicas: ReplicaTarget,
    /// Requests executing in one replica.
    pub max_ongoing_requests: u32,
    /// Requests waiting per caller; `None`: no limit (Ray's -1).
    pub max_queued_requests: Option<u64>,
    /// Status code and Retry-After of backpressure rejections.
    pub backpressure: BackpressureConfig,
    /// Passed to the deployment's `reconfigure`.
    pub user_config: Option<Value>,
    /// Drain poll interval.
    pub graceful_shutdown_wait_loop_s: f64,
    /// Force-stop delay.
    pub graceful_shutdown_timeout_s: f64,
    /// Health-check interval.
    pub health_check_period_s: f64,
    /// Health-check timeout.
    pub health_check_timeout_s: f64,
    /// CPUs per replica.
    pub num_cpus: f64,
    /// GPUs per replica.
    pub num_gpus: f64,
    /// Memory per replica, bytes (`ray_actor_options.memory`; 0 when not asked for).
    pub memory: f64,
    /// Environment of the replica process (`runtime_env.env_vars`, app merged with deployment).
    pub env_vars: BTreeMap<String, String>,
    /// `runtime_env.image_uri` (the deployment's over the application's): the image its
    /// replicas run in, where the orchestrator can honour one (Kubernetes).
    pub image: Option<String>,
    /// At most this many replicas per node.
    pub max_replicas_per_node: Option<u32>,
    /// One access-log line per request (`logging_config.enable_access_log`, deployment over
    /// application over global; default on).
    pub access_log: bool,
    /// `TEXT` or `JSON`.
    pub log_encoding: String,
    /// Python logging level, if configured.
    pub log_level: Option<String>,
    /// Directory for the replica's log file (otherwise its output joins the head's).
    pub logs_dir: Option<String>,
    /// The effective options in the config's own form (REST `deployment_config`).
    pub effective: DeploymentOverride,
}

/// Merges code defaults and config overrides for every deployment of `app`.
pub fn resolve_app(app: &ApplicationConfig, blueprint: &AppBlueprint) -> Result<Vec<ResolvedDeployment>, String> {
    let available: Vec<&str> = blueprint.deployments.iter().map(|d| d.name.as_str()).collect();
    for o in &app.deployments {
        if !available.contains(&o.name.as_str()) {
            let list = available.iter().map(|n| format!("'{n}'")).collect::<Vec<_>>().join(", ");
            return Err(format!("Deployment '{}' does not exist. Available: [{list}]", o.name));
        }
    }
    blueprint
        .deployments
        .iter()
        .map(|code| {
            let cfg = app.deployments.iter().find(|o| o.name == code.name);
            let mut resolved = resolve_one(app, code, cfg);
            // The config was validated; the code's own options (`ray_actor_options` in
            // `@serve.deployment`) are checked here.
            if let Some((name, why)) =
                resolved.env_vars.keys().find_map(|k| crate::validate::env_var_refusal(k).map(|why| (k, why)))
            {
                return Err(format!("deployment '{}': runtime_env.env_vars.{name}: {why}", code.name));
            }
            let own = blueprint.deployment_env.get(&code.name);
            for (k, v) in blueprint.replica_env.iter().chain(own.into_iter().flatten()) {
                resolved.env_vars.insert(k.clone(), v.clone());
            }
            Ok(resolved)
        })
        .collect()
}

fn merge(code: &DeploymentOverride, cfg: Option<&DeploymentOverride>) -> DeploymentOverride {
    let Some(c) = cfg else { return code.clone() };
    // Replica count and autoscaling are one choice: the config's, if it makes one.
    let (num_replicas, autoscaling_config) = if c.num_replicas.is_some() || c.autoscaling_config.is_some() {
        (c.num_replicas, c.autoscaling_config.clone())
    } else {
        (code.num_replicas, code.autoscaling_config.clone())
    };
    macro_rules! pick {
        ($f:ident) => {
            c.$f.clone().or_else(|| code.$f.clone())
        };
    }
    DeploymentOverride {
        name: code.name.clone(),
        num_replicas,
        autoscaling_config,
        max_ongoing_requests: pick!(max_ongoing_requests),
        max_queued_requests: pick!(max_queued_requests),
        backpressure_config: pick!(backpressure_config),
        user_config: pick!(user_config),
        graceful_shutdown_wait_loop_s: pick!(graceful_shutdown_wait_loop_s),
        graceful_shutdown_timeout_s: pick!(graceful_shutdown_timeout_s),
        health_check_period_s: pick!(health_check_period_s),
        health_check_timeout_s: pick!(health_check_timeout_s),
        ray_actor_options: pick!(ray_actor_options),
        placement_group_bundles: pick!(placement_group_bundles),
        placement_group_strategy: pick!(placement_group_strategy),
        placement_group_bundle_label_selector: pick!(placement_group_bundle_label_selector),
        max_replicas_per_node: pick!(max_replicas_per_node),
        request_router_config: pick!(request_router_config),
        logging_config: pick!(logging_config),
        gang_scheduling_config: pick!(gang_scheduling_config),
        deployment_actors: pick!(deployment_actors),
        rolling_update_percentage: pick!(rolling_update_percentage),
        max_surge_percent: pick!(max_surge_percent),
    }
}

fn env_vars_of(env: Option<&Map<String, Value>>, into: &mut BTreeMap<String, String>) {
    if let Some(Value::Object(vars)) = env.and_then(|e| e.get("env_vars")) {
        for (k, v) in vars {
            if let Some(s) = v.as_str() {
                into.insert(k.clone(), s.to_string());
            }
        }
    }
}

fn resolve_one(
    app: &ApplicationConfig,
    code: &DeploymentOverride,
    cfg: Option<&DeploymentOverride>,
) -> ResolvedDeployment {
    let eff = merge(code, cfg);
    let replicas = match (eff.num_replicas, &eff.autoscaling_config) {
        (_, Some(a)) => ReplicaTarget::Autoscaling(a.clone()),
        (Some(NumReplicas::Auto), None) => ReplicaTarget::Autoscaling(AutoscalingConfig {
            min_replicas: d::AUTOSCALING_MIN_REPLICAS,
            initial_replicas: None,
            max_replicas: d::AUTO_MAX_REPLICAS,
            target_ongoing_requests: d::TARGET_ONGOING_REQUESTS,
            metrics_interval_s: d::METRICS_INTERVAL_S,
            look_back_period_s: d::LOOK_BACK_PERIOD_S,
            smoothing_factor: 1.0,
            upscaling_factor: None,
            downscaling_factor: None,
            downscale_delay_s: d::DOWNSCALE_DELAY_S,
            downscale_to_zero_delay_s: None,
            upscale_delay_s: d::UPSCALE_DELAY_S,
            aggregation_function: "mean".to_string(),
            policy: None,
        }),
        (Some(NumReplicas::Fixed(n)), None) => ReplicaTarget::Fixed(n),
        (None, None) => ReplicaTarget::Fixed(d::NUM_REPLICAS),
    };
    let actor = eff.ray_actor_options.clone().unwrap_or_default();
    // Deployment over application (which already carries the global config when it has none).
    let logging = |pick: fn(&crate::LoggingConfig) -> Option<String>| {
        eff.logging_config.as_ref().and_then(pick).or_else(|| app.logging_config.as_ref().and_then(pick))
    };
    let log_level = logging(|l| {
        l.log_level.as_ref().map(|v| match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        })
    });
    let mut env_vars = BTreeMap::new();
    env_vars_of(Some(&app.runtime_env), &mut env_vars);
    env_vars_of(actor.runtime_env.as_ref(), &mut env_vars);
    let image_of = |env: Option<&Map<String, Value>>| env?.get("image_uri")?.as_str().map(str::to_string);
    let image = image_of(actor.runtime_env.as_ref()).or_else(|| image_of(Some(&app.runtime_env)));
    ResolvedDeployment {
        app: app.name.clone(),
        name: code.name.clone(),
        import_path: app.import_path.clone(),
        replicas,
        max_ongoing_requests: eff.max_ongoing_requests.unwrap_or(d::MAX_ONGOING_REQUESTS),
        max_queued_requests: u64::try_from(eff.max_queued_requests.unwrap_or(d::MAX_QUEUED_REQUESTS)).ok(),
        backpressure: eff.backpressure_config.unwrap_or_default(),
        user_config: eff.user_config.clone().filter(|v| !v.is_null()),
        graceful_shutdown_wait_loop_s: eff.graceful_shutdown_wait_loop_s.unwrap_or(d::GRACEFUL_SHUTDOWN_WAIT_LOOP_S),
        graceful_shutdown_timeout_s: eff.graceful_shutdown_timeout_s.unwrap_or(d::GRACEFUL_SHUTDOWN_TIMEOUT_S),
        health_check_period_s: eff.health_check_period_s.unwrap_or(d::HEALTH_CHECK_PERIOD_S),
        health_check_timeout_s: eff.health_check_timeout_s.unwrap_or(d::HEALTH_CHECK_TIMEOUT_S),
        num_cpus: actor.num_cpus.unwrap_or(d::NUM_CPUS),
        num_gpus: actor.num_gpus.unwrap_or(0.0),
        memory: actor.memory.unwrap_or(0.0),
        env_vars,
        image,
        max_replicas_per_node: eff.max_replicas_per_node,
        access_log: eff
            .logging_config
            .as_ref()
            .and_then(|l| l.enable_access_log)
            .or_else(|| app.logging_config.as_ref().and_then(|l| l.enable_access_log))
            .unwrap_or(true),
        log_encoding: logging(|l| l.encoding.clone()).unwrap_or_else(|| "TEXT".to_string()),
        log_level,
        logs_dir: logging(|l| l.logs_dir.clone()),
        effective: eff,
    }
}
