//! Typed form of Ray's `ServeDeploySchema`. Optional fields are `None` when the document did not
//! set them: the controller needs to know what the user set (code defaults apply otherwise), and
//! the REST API echoes exactly the submitted fields.

use serde::Serialize;
use serde_json::{Map, Value};

/// The whole serve config document.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ServeConfig {
    /// `Disabled`, `HeadOnly` or `EveryNode`.
    pub proxy_location: ProxyLocation,
    /// Options of the HTTP front door.
    pub http_options: HttpOptions,
    /// Options of the gRPC front door.
    pub grpc_options: GrpcOptions,
    /// Global logging defaults.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub logging_config: Option<LoggingConfig>,
    /// Experimental controller options (`runtime_env.env_vars` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub controller_options: Option<Value>,
    /// Tracing options.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tracing_config: Option<Value>,
    /// Scales every deployment's replica counts by this percentage.
    pub target_capacity: Option<f64>,
    /// The applications, in document order.
    pub applications: Vec<ApplicationConfig>,
}

/// Where proxies run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
pub enum ProxyLocation {
    /// No proxies: handle-only use.
    Disabled,
    /// A proxy on the head node only.
    HeadOnly,
    /// A proxy on the head node and every node with a replica.
    #[default]
    EveryNode,
}

/// `http_options` (HTTPOptionsSchema).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HttpOptions {
    /// Bind address.
    pub host: String,
    /// Port; 0 picks a free one.
    pub port: u16,
    /// ASGI root path (prefix removed by a reverse proxy in front).
    pub root_path: String,
    /// End-to-end timeout per request.
    pub request_timeout_s: Option<f64>,
    /// Idle keep-alive of client connections.
    pub keep_alive_timeout_s: u64,
    /// TLS key file.
    pub ssl_keyfile: Option<String>,
    /// TLS certificate file.
    pub ssl_certfile: Option<String>,
    /// Password of the key file.
    pub ssl_keyfile_password: Option<String>,
    /// CA certificates.
    pub ssl_ca_certs: Option<String>,
}

impl Default for HttpOptions {
    fn default() -> Self {
        HttpOptions {
            host: crate::defaults::HTTP_HOST.to_string(),
            port: crate::defaults::HTTP_PORT,
            root_path: String::new(),
            request_timeout_s: None,
            keep_alive_timeout_s: crate::defaults::KEEP_ALIVE_TIMEOUT_S,
            ssl_keyfile: None,
            ssl_certfile: None,
            ssl_keyfile_password: None,
            ssl_ca_certs: None,
        }
    }
}

/// `grpc_options` (gRPCOptionsSchema).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GrpcOptions {
    /// Port; 0 picks a free one.
    pub port: u16,
    /// Import paths of generated servicer functions.
    pub grpc_servicer_functions: Vec<String>,
    /// End-to-end timeout per request.
    pub request_timeout_s: Option<f64>,
    /// Serve the reflection service.
    pub enable_reflection: bool,
}

impl Default for GrpcOptions {
    fn default() -> Self {
        GrpcOptions {
            port: crate::defaults::GRPC_PORT,
            grpc_servicer_functions: Vec::new(),
            request_timeout_s: None,
            enable_reflection: true,
        }
    }
}

/// `logging_config` (LoggingConfig); unset fields are `None` so levels can be layered.
#[derive(Debug, Clone, PartialEq, Serialize, Default)]
pub struct LoggingConfig {
    /// `TEXT` or `JSON`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub encoding: Option<String>,
    /// A Python logging level name or number.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_level: Option<Value>,
    /// Directory for log files.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub logs_dir: Option<String>,
    /// One access-log line per request.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enable_access_log: Option<bool>,
    /// Extra LogRecord attributes in each line.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub additional_log_standard_attrs: Option<Vec<String>>,
}

/// One application (ServeApplicationSchema).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ApplicationConfig {
    /// Unique, non-empty.
    pub name: String,
    /// HTTP prefix of the ingress; `None` = reachable through handles only.
    pub route_prefix: Option<String>,
    /// Names the application graph in the replica registry.
    pub import_path: String,
    /// Inherited by every deployment.
    pub runtime_env: Map<String, Value>,
    /// Passed to an application builder.
    pub args: Map<String, Value>,
    /// Per-deployment overrides.
    pub deployments: Vec<DeploymentOverride>,
    /// App-level logging defaults.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub logging_config: Option<LoggingConfig>,
    /// Replica counts set by an external scaler.
    pub external_scaler_enabled: bool,
    /// The application exactly as submitted (for `deployed_app_config`).
    #[serde(skip)]
    pub submitted: Value,
}

/// `num_replicas`: a count or `"auto"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum NumReplicas {
    /// A fixed count (> 0).
    Fixed(u32),
    /// Autoscaling with Ray's `auto` defaults.
    #[serde(serialize_with = "serialize_auto")]
    Auto,
}

fn serialize_auto<S: serde::Serializer>(s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str("auto")
}

/// `backpressure_config`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct BackpressureConfig {
    /// 503 or 429.
    pub status_code: u16,
    /// Sent as `Retry-After` (rounded up) when set.
    pub retry_after_s: Option<f64>,
}

impl Default for BackpressureConfig {
    fn default() -> Self {
        BackpressureConfig { status_code: 503, retry_after_s: None }
    }
}

/// `autoscaling_config` (AutoscalingConfig), with Ray's defaults filled in.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AutoscalingConfig {
    /// Lower bound (0 allows scale to zero).
    pub min_replicas: u32,
    /// Start count; `None` = min.
    pub initial_replicas: Option<u32>,
    /// Upper bound.
    pub max_replicas: u32,
    /// Desired ongoing + queued requests per replica.
    pub target_ongoing_requests: f64,
    /// Metrics push interval.
    pub metrics_interval_s: f64,
    /// Averaging window.
    pub look_back_period_s: f64,
    /// Deprecated fallback for both factors.
    pub smoothing_factor: f64,
    /// Multiplier on upward changes.
    pub upscaling_factor: Option<f64>,
    /// Multiplier on downward changes.
    pub downscaling_factor: Option<f64>,
    /// How long a scale-down decision must persist.
    pub downscale_delay_s: f64,
    /// Delay for 1 -> 0.
    pub downscale_to_zero_delay_s: Option<f64>,
    /// How long a scale-up decision must persist.
    pub upscale_delay_s: f64,
    /// `mean`, `max` or `min`.
    pub aggregation_function: String,
    /// Custom policy (`policy_function`, `policy_kwargs`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy: Option<Value>,
}

/// `ray_actor_options` (RayActorOptionsSchema).
#[derive(Debug, Clone, PartialEq, Serialize, Default)]
pub struct RayActorOptions {
    /// CPUs per replica (`None` -> 1).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub num_cpus: Option<f64>,
    /// GPUs per replica (fractions allowed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub num_gpus: Option<f64>,
    /// Memory in bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory: Option<f64>,
    /// Custom resources.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resources: Option<Map<String, Value>>,
    /// Accelerator type.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accelerator_type: Option<String>,
    /// Per-deployment runtime environment (merged over the app's).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub runtime_env: Option<Map<String, Value>>,
    /// Scheduling label selector.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub label_selector: Option<Value>,
    /// Scheduling fallback strategy.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fallback_strategy: Option<Value>,
}

/// One deployment's options as written: in a config (overrides) or in code (defaults).
/// `None` = not set at this level.
#[derive(Debug, Clone, PartialEq, Serialize, Default)]
pub struct DeploymentOverride {
    /// Names a deployment of the application.
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[allow(missing_docs)]
    pub num_replicas: Option<NumReplicas>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[allow(missing_docs)]
    pub max_ongoing_requests: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[allow(missing_docs)]
    pub max_queued_requests: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[allow(missing_docs)]
    pub backpressure_config: Option<BackpressureConfig>,
    /// `Some(Value::Null)` = explicitly null.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_config: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[allow(missing_docs)]
    pub autoscaling_config: Option<AutoscalingConfig>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[allow(missing_docs)]
    pub graceful_shutdown_wait_loop_s: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[allow(missing_docs)]
    pub graceful_shutdown_timeout_s: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[allow(missing_docs)]
    pub health_check_period_s: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[allow(missing_docs)]
    pub health_check_timeout_s: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[allow(missing_docs)]
    pub ray_actor_options: Option<RayActorOptions>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[allow(missing_docs)]
    pub placement_group_bundles: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[allow(missing_docs)]
    pub placement_group_strategy: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[allow(missing_docs)]
    pub placement_group_bundle_label_selector: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[allow(missing_docs)]
    pub max_replicas_per_node: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[allow(missing_docs)]
    pub request_router_config: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[allow(missing_docs)]
    pub logging_config: Option<LoggingConfig>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[allow(missing_docs)]
    pub gang_scheduling_config: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[allow(missing_docs)]
    pub deployment_actors: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[allow(missing_docs)]
    pub rolling_update_percentage: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[allow(missing_docs)]
    pub max_surge_percent: Option<u32>,
}
