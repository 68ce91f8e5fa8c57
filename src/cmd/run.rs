//! `photon run CONFIG` (validate, start the head, deploy, serve until SIGINT/SIGTERM) and
//! `photon start` (the head with no applications). A config error exits non-zero with every
//! field-path message and starts nothing.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use photon_config::{resolve_app, AppCatalog, ConfigError, FieldError, ServeConfig};
use photon_proxy::HttpConfig;

use crate::head::{Head, HeadOptions};

/// Exit status for a config that does not validate (sysexits' EX_DATAERR).
pub const EXIT_BAD_CONFIG: u8 = 65;

/// Where the head listens; shared by `run` and `start`.
#[derive(Args)]
pub struct HeadArgs {
    /// HTTP port (overrides `http_options.port`; 0 picks a free port).
    #[arg(long, env = "PHOTON_HTTP_PORT")]
    http_port: Option<u16>,
    /// HTTP bind address (overrides `http_options.host`).
    #[arg(long, env = "PHOTON_HTTP_HOST")]
    http_host: Option<IpAddr>,
    /// gRPC port (overrides `grpc_options.port`; also starts the gRPC proxy when the config
    /// lists no `grpc_servicer_functions`).
    #[arg(long, env = "PHOTON_GRPC_PORT")]
    grpc_port: Option<u16>,
    /// REST API (dashboard) port.
    #[arg(long, env = "PHOTON_DASHBOARD_PORT", default_value_t = photon_config::defaults::DASHBOARD_PORT)]
    dashboard_port: u16,
    /// REST API (dashboard) bind address.
    #[arg(long, env = "PHOTON_DASHBOARD_HOST", default_value = "127.0.0.1")]
    dashboard_host: IpAddr,
    /// Internal controller port (0 picks a free port).
    #[arg(long, env = "PHOTON_CONTROLLER_PORT", default_value_t = 0)]
    controller_port: u16,
    /// Internal controller bind address (replicas and proxies on other machines need a
    /// reachable one, e.g. 0.0.0.0 in a pod).
    #[arg(long, env = "PHOTON_CONTROLLER_HOST", default_value = "127.0.0.1")]
    controller_host: IpAddr,
    /// Where replicas run: `local` (child processes) or `kubernetes` (one pod per replica;
    /// settings from the PHOTON_KUBERNETES_* variables the operator sets on the head pod).
    #[arg(long, env = "PHOTON_ORCHESTRATOR", default_value = "local")]
    orchestrator: String,
    /// Host name replica pods reach the controller at (with `--orchestrator kubernetes`; the
    /// operator passes the cluster's head Service).
    #[arg(long, env = "PHOTON_ADVERTISE_HOST")]
    advertise_host: Option<String>,
    /// Where the controller checkpoints its state: `file:PATH`. Default: a file named after
    /// `--controller-port` when that port is fixed (in this user's private directory under the
    /// temporary directory), else none. With a
    /// store, replicas outlive a controller that dies and a restarted one adopts them.
    #[arg(long, env = "PHOTON_STATE_STORE")]
    state_store: Option<String>,
    /// `EveryNode` / `HeadOnly` run the proxies in this process; `Disabled` runs none (use
    /// `photon proxy`). Default: the config's `proxy_location`.
    #[arg(long, env = "PHOTON_PROXY_LOCATION")]
    proxy_location: Option<String>,
    /// Threads serving HTTP, each a single-threaded runtime with its own SO_REUSEPORT listener
    /// (default: one per CPU; 0 serves HTTP from the main runtime).
    #[arg(long, env = "PHOTON_PROXY_THREADS")]
    proxy_threads: Option<usize>,
    /// Largest accepted request body in bytes (413 above it).
    #[arg(long, env = photon_router::MAX_BODY_ENV, default_value_t = photon_router::DEFAULT_MAX_BODY_BYTES)]
    max_request_body_bytes: usize,
    /// Bytes of request bodies the head may hold at once (read, queued, in flight); more are
    /// refused with 503 until some are done.
    #[arg(long, env = "PHOTON_MAX_BUFFERED_BODY_BYTES", default_value_t = photon_router::guard::DEFAULT_BODY_BUDGET_BYTES)]
    max_buffered_body_bytes: usize,
    /// Connections each front door (HTTP, gRPC) keeps open at once; more are refused.
    #[arg(long, env = "PHOTON_MAX_CONNECTIONS", default_value_t = photon_router::guard::DEFAULT_MAX_CONNECTIONS)]
    max_connections: usize,
    /// CPUs replicas may ask for in all (`ray start --num-cpus`; default: this machine's).
    #[arg(long, env = "PHOTON_NUM_CPUS")]
    num_cpus: Option<f64>,
    /// GPUs replicas may use (`ray start --num-gpus`; default: those `nvidia-smi` lists,
    /// narrowed by CUDA_VISIBLE_DEVICES).
    #[arg(long, env = "PHOTON_NUM_GPUS")]
    num_gpus: Option<u32>,
    /// Memory replicas may ask for in all, bytes (`ray start --memory`; default: the available
    /// memory at start).
    #[arg(long, env = "PHOTON_MEMORY")]
    memory: Option<f64>,
}

#[derive(Args)]
pub struct RunArgs {
    /// A Ray Serve config (YAML or JSON), or a RayService manifest.
    config: PathBuf,
    #[command(flatten)]
    head: HeadArgs,
}

#[derive(Args)]
pub struct StartArgs {
    #[command(flatten)]
    head: HeadArgs,
}

/// Checks what only the application's code can tell: that each import path names an
/// application (built in, or Python code that imports) and that each override names one of its
/// deployments.
fn check_against_code(config: &ServeConfig, catalog: &dyn AppCatalog) -> Result<(), ConfigError> {
    let mut errors = Vec::new();
    for (i, app) in config.applications.iter().enumerate() {
        match catalog.blueprint(app).unwrap_or_else(|| Err("the application's code could not be looked at".into())) {
            Err(e) => errors.push(FieldError { path: format!("applications[{i}].import_path"), message: e }),
            Ok(bp) => {
                if let Err(e) = resolve_app(app, &bp) {
                    errors.push(FieldError { path: format!("applications[{i}].deployments"), message: e });
                }
            }
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ConfigError { errors })
    }
}

/// How the REST API authenticates, decided as Ray decides it: `RAY_AUTH_MODE` when set;
/// unset, a new local instance (`photon run`, as `ray.init()`) turns token mode on and
/// generates a token when none exists, and `photon start` (as `ray start --head`) turns it on
/// only when a token exists. Ray's warnings say which.
fn rest_auth(new_local_instance: bool) -> anyhow::Result<photon_controller::auth::RestAuth> {
    use photon_controller::auth::{self, RestAuth};
    let explicit = auth::mode_from_env().map_err(anyhow::Error::msg)?;
    let token = auth::load_token().map_err(anyhow::Error::msg)?;
    let enabled = match explicit {
        Some(on) => on,
        None if new_local_instance || token.is_some() => {
            tracing::warn!(
                "Token authentication is enabled for this Photon instance's REST API. Set {}=disabled to opt out.",
                auth::MODE_ENV
            );
            true
        }
        None => {
            tracing::warn!(
                "Token authentication is disabled for this Photon instance: anyone who can reach its REST API \
                 can deploy applications, that is, run code. To enable it, create a token at {} or set {}=token.",
                auth::default_token_path().display(),
                auth::MODE_ENV
            );
            false
        }
    };
    if !enabled {
        return Ok(RestAuth::Disabled);
    }
    match token {
        Some(token) => Ok(RestAuth::Token(token)),
        None if new_local_instance => {
            let (token, path) = auth::generate_and_save().map_err(anyhow::Error::msg)?;
            tracing::info!("Generated new authentication token and saved to {}", path.display());
            Ok(RestAuth::Token(token))
        }
        None => anyhow::bail!(auth::NO_TOKEN),
    }
}

fn head_options(args: &HeadArgs, config: &ServeConfig, new_local_instance: bool) -> anyhow::Result<HeadOptions> {
    let host: IpAddr = match args.http_host {
        Some(h) => h,
        None => config
            .http_options
            .host
            .parse()
            .with_context(|| format!("http_options.host: not an IP address: {:?}", config.http_options.host))?,
    };
    // As in Ray, the gRPC front door runs when servicer functions are configured (their import
    // paths need no importing here: every method is routed), or when a port is asked for.
    let grpc_port = args
        .grpc_port
        .or((!config.grpc_options.grpc_servicer_functions.is_empty()).then_some(config.grpc_options.port));
    let timeout = |s: Option<f64>| s.map(Duration::from_secs_f64);
    let state_store = match (&args.state_store, args.controller_port) {
        (Some(spec), _) => Some(photon_controller::checkpoint::StateStore::parse(spec)?),
        (None, 0) => None,
        (None, port) => Some(photon_controller::checkpoint::StateStore::File(
            photon_orchestrator::private_dir()
                .context("the default state store (a fixed --controller-port)")?
                .join(format!("state-{port}.json")),
        )),
    };
    let proxies = match args.proxy_location.as_deref() {
        Some("Disabled") => false,
        Some("EveryNode" | "HeadOnly") => true,
        Some(other) => anyhow::bail!("--proxy-location: must be EveryNode, HeadOnly or Disabled, got {other:?}"),
        None => config.proxy_location != photon_config::ProxyLocation::Disabled,
    };
    let node_id: String = (0..28).map(|_| format!("{:02x}", fastrand::u8(..))).collect();
    let access_log = config.logging_config.as_ref().and_then(|l| l.enable_access_log).unwrap_or(true);
    let keep_alive = Duration::from_secs(config.http_options.keep_alive_timeout_s);
    Ok(HeadOptions {
        grpc: grpc_port.map(|port| SocketAddr::new(host, port)),
        grpc_config: photon_proxy::GrpcConfig {
            request_timeout: timeout(config.grpc_options.request_timeout_s),
            node_id: node_id.clone(),
            access_log,
            max_message_bytes: photon_router::max_message_bytes_from_env().map_err(anyhow::Error::msg)?,
            keep_alive,
            max_connections: args.max_connections,
        },
        http: proxies.then(|| SocketAddr::new(host, args.http_port.unwrap_or(config.http_options.port))),
        state_store,
        proxy_threads: args
            .proxy_threads
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from)),
        controller: SocketAddr::new(args.controller_host, args.controller_port),
        dashboard: SocketAddr::new(args.dashboard_host, args.dashboard_port),
        http_config: HttpConfig {
            root_path: config.http_options.root_path.clone(),
            max_body_bytes: args.max_request_body_bytes,
            request_timeout: timeout(config.http_options.request_timeout_s),
            node_id,
            access_log,
            keep_alive,
            max_connections: args.max_connections,
        },
        startup_config: config.clone(),
        node: photon_orchestrator::NodeResources::detect(args.num_cpus, args.num_gpus, args.memory),
        backend: backend(args)?,
        rest_auth: rest_auth(new_local_instance)?,
        body_budget: args.max_buffered_body_bytes,
    })
}

fn backend(args: &HeadArgs) -> anyhow::Result<crate::head::Backend> {
    match args.orchestrator.as_str() {
        "local" => Ok(crate::head::Backend::Local),
        #[cfg(feature = "kubernetes")]
        "kubernetes" => {
            let advertise_host = match &args.advertise_host {
                Some(host) => host.clone(),
                None if !args.controller_host.is_unspecified() => args.controller_host.to_string(),
                None => anyhow::bail!(
                    "--advertise-host: needed with --orchestrator kubernetes when --controller-host is a wildcard address"
                ),
            };
            Ok(crate::head::Backend::Kubernetes { advertise_host })
        }
        #[cfg(not(feature = "kubernetes"))]
        "kubernetes" => {
            anyhow::bail!("--orchestrator kubernetes: this photon was built without the kubernetes feature")
        }
        other => anyhow::bail!("--orchestrator: must be local or kubernetes, got {other:?}"),
    }
}

pub async fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let text =
        std::fs::read_to_string(&args.config).with_context(|| format!("cannot read {}", args.config.display()))?;
    let catalog = super::catalog(args.head.orchestrator == "kubernetes");
    let roots = photon_config::paths::PathRoots::from_env();
    let parsed = photon_config::parse_yaml(&text)
        .and_then(|p| photon_config::paths::check_config_paths(&p.config, &roots).map(|()| p));
    let checked = match parsed {
        Ok(parsed) => {
            catalog.observe(&parsed.config);
            for app in &parsed.config.applications {
                let installing = ["pip", "uv"].iter().any(|k| app.runtime_env.get(*k).is_some_and(|v| !v.is_null()));
                let step = if installing {
                    "installing its runtime_env packages and importing its code"
                } else {
                    "importing its code"
                };
                let started = std::time::Instant::now();
                let learned = catalog.learn(app);
                tokio::pin!(learned);
                // What it is doing, and for how long, every 10 s while it takes long (installs
                // can take minutes).
                let mut ticks = tokio::time::interval_at(
                    tokio::time::Instant::now() + std::time::Duration::from_secs(10),
                    std::time::Duration::from_secs(10),
                );
                if installing {
                    eprintln!("photon: {}: application {}: {step}", args.config.display(), app.name);
                }
                loop {
                    tokio::select! {
                        () = &mut learned => break,
                        _ = ticks.tick() => eprintln!(
                            "photon: {}: application {}: {step} ({} s so far)",
                            args.config.display(),
                            app.name,
                            started.elapsed().as_secs()
                        ),
                    }
                }
            }
            check_against_code(&parsed.config, catalog.as_ref()).map(|()| parsed)
        }
        Err(e) => Err(e),
    };
    let parsed = match checked {
        Ok(p) => p,
        Err(e) => {
            eprintln!("photon: {}: {e}", args.config.display());
            return Ok(ExitCode::from(EXIT_BAD_CONFIG));
        }
    };
    crate::logging::init_from(parsed.config.logging_config.as_ref());
    for w in &parsed.warnings {
        tracing::warn!("{}: {w}", args.config.display());
    }
    let head = Head::start(head_options(&args.head, &parsed.config, true)?, catalog).await?;
    head.controller.apply(parsed.config).await?;
    head.serve_until_stopped().await?;
    Ok(ExitCode::SUCCESS)
}

pub async fn start(args: StartArgs) -> anyhow::Result<ExitCode> {
    crate::logging::init_from(None);
    let empty = photon_config::from_value(&serde_json::json!({ "applications": [] }))?.config;
    let catalog = super::catalog(args.head.orchestrator == "kubernetes");
    let head = Head::start(head_options(&args.head, &empty, false)?, catalog).await?;
    head.serve_until_stopped().await?;
    Ok(ExitCode::SUCCESS)
}
