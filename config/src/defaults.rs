//! Ray Serve's defaults (spec/ray-serve.md section 12), in one place.

/// HTTP bind address of the config schema.
pub const HTTP_HOST: &str = "0.0.0.0";
/// HTTP port.
pub const HTTP_PORT: u16 = 8000;
/// gRPC port.
pub const GRPC_PORT: u16 = 9000;
/// REST API (dashboard) port.
pub const DASHBOARD_PORT: u16 = 8265;
/// Idle keep-alive of client connections, seconds.
pub const KEEP_ALIVE_TIMEOUT_S: u64 = 90;
/// Application name when none is given.
pub const APP_NAME: &str = "default";
/// Route prefix when none is given.
pub const ROUTE_PREFIX: &str = "/";
/// Replicas per deployment.
pub const NUM_REPLICAS: u32 = 1;
/// Requests executing in one replica.
pub const MAX_ONGOING_REQUESTS: u32 = 5;
/// Requests waiting for a replica per caller; -1 = no limit.
pub const MAX_QUEUED_REQUESTS: i64 = -1;
/// Drain poll interval, seconds.
pub const GRACEFUL_SHUTDOWN_WAIT_LOOP_S: f64 = 2.0;
/// Force-stop delay, seconds.
pub const GRACEFUL_SHUTDOWN_TIMEOUT_S: f64 = 20.0;
/// Health-check interval, seconds.
pub const HEALTH_CHECK_PERIOD_S: f64 = 10.0;
/// Health-check timeout, seconds.
pub const HEALTH_CHECK_TIMEOUT_S: f64 = 30.0;
/// Consecutive failed checks before a replica is unhealthy.
pub const HEALTH_CHECK_FAILURE_THRESHOLD: u32 = 3;
/// CPUs per replica.
pub const NUM_CPUS: f64 = 1.0;
/// Rolling update batch fraction.
pub const ROLLING_UPDATE_PERCENTAGE: f64 = 0.2;
/// Extra replicas during updates, percent.
pub const MAX_SURGE_PERCENT: u32 = 0;
/// Constructor retries before DEPLOY_FAILED.
pub const MAX_CONSTRUCTOR_RETRY_COUNT: u32 = 20;
/// Per-replica factor of the startup failure budget.
pub const MAX_PER_REPLICA_RETRY_COUNT: u32 = 3;
/// Autoscaling `min_replicas`.
pub const AUTOSCALING_MIN_REPLICAS: u32 = 1;
/// Autoscaling `max_replicas` of an explicit `autoscaling_config`.
pub const AUTOSCALING_MAX_REPLICAS: u32 = 1;
/// Autoscaling `max_replicas` under `num_replicas: auto`.
pub const AUTO_MAX_REPLICAS: u32 = 100;
/// Autoscaling `target_ongoing_requests`.
pub const TARGET_ONGOING_REQUESTS: f64 = 2.0;
/// Autoscaling `metrics_interval_s`.
pub const METRICS_INTERVAL_S: f64 = 10.0;
/// Autoscaling `look_back_period_s`.
pub const LOOK_BACK_PERIOD_S: f64 = 30.0;
/// Autoscaling `downscale_delay_s`.
pub const DOWNSCALE_DELAY_S: f64 = 600.0;
/// Autoscaling `upscale_delay_s`.
pub const UPSCALE_DELAY_S: f64 = 30.0;
