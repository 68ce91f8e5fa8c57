//! `photon replica`: one replica process. Its command line names the application and the
//! deployment, so `ps` shows which replica is which.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use photon_replica::ReplicaOptions;
use tracing::Instrument;

#[derive(Args)]
pub struct ReplicaArgs {
    /// Application name.
    #[arg(long)]
    app: String,
    /// Deployment name.
    #[arg(long)]
    deployment: String,
    /// Replica id.
    #[arg(long)]
    replica_id: String,
    /// Import path of the application.
    #[arg(long)]
    import_path: String,
    /// Controller URL.
    #[arg(long)]
    controller: String,
    /// Admission limit.
    #[arg(long, default_value_t = photon_config::defaults::MAX_ONGOING_REQUESTS)]
    max_ongoing_requests: u32,
    /// Longest drain when stopping, seconds.
    #[arg(long, default_value_t = photon_config::defaults::GRACEFUL_SHUTDOWN_TIMEOUT_S)]
    graceful_shutdown_timeout_s: f64,
    /// Drain poll interval, seconds.
    #[arg(long, default_value_t = photon_config::defaults::GRACEFUL_SHUTDOWN_WAIT_LOOP_S)]
    graceful_shutdown_wait_loop_s: f64,
    /// Address for the replica's service.
    #[arg(long, default_value = "127.0.0.1:0")]
    bind: String,
    /// Host other processes reach this replica at (the pod IP on Kubernetes), when `--bind` is
    /// a wildcard address.
    #[arg(long)]
    advertise_host: Option<String>,
    /// Log encoding: TEXT or JSON.
    #[arg(long, default_value = "TEXT")]
    log_encoding: String,
    /// Log level (a Python logging level name or number).
    #[arg(long)]
    log_level: Option<String>,
    /// No access-log line per request.
    #[arg(long)]
    no_access_log: bool,
    /// Exit when the parent process (the head) goes away.
    #[arg(long)]
    exit_with_parent: bool,
    /// Initial user_config as JSON.
    #[arg(long, env = photon_orchestrator::USER_CONFIG_ENV, hide_env_values = true)]
    user_config: Option<String>,
}

pub async fn run(args: ReplicaArgs) -> anyhow::Result<ExitCode> {
    crate::logging::init(args.log_encoding == "JSON", args.log_level.as_deref());
    let user_config = match &args.user_config {
        Some(text) => Some(serde_json::from_str(text).context("user_config is not valid JSON")?),
        None => None,
    };
    // Its credentials come in the environment, never on the command line (`ps` shows that).
    photon_router::cluster_auth::install_from_env()?;
    let registration_secret = std::env::var(photon_router::cluster_auth::REPLICA_SECRET_ENV).with_context(|| {
        format!("{} is not set: the head hands each replica its own", photon_router::cluster_auth::REPLICA_SECRET_ENV)
    })?;
    let mut registry = super::registry();
    registry.set_fallback(python_builder(&args));
    let opts = ReplicaOptions {
        replica_id: args.replica_id.clone(),
        app: args.app.clone(),
        deployment: args.deployment.clone(),
        import_path: args.import_path,
        controller: args.controller,
        max_ongoing_requests: args.max_ongoing_requests,
        user_config,
        graceful_shutdown_timeout: Duration::from_secs_f64(args.graceful_shutdown_timeout_s.max(0.0)),
        graceful_shutdown_wait_loop: Duration::from_secs_f64(args.graceful_shutdown_wait_loop_s.max(0.0)),
        bind: args.bind,
        advertise_host: args.advertise_host,
        access_log: !args.no_access_log,
        registration_secret,
    };
    let span = tracing::info_span!("replica", app = %args.app, deployment = %args.deployment, id = %args.replica_id);
    let shutdown = shutdown_signal(args.exit_with_parent);
    match photon_replica::run(Arc::new(registry), opts, shutdown).instrument(span).await {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(e) => {
            tracing::error!(replica = %args.replica_id, "{e}");
            // The head names the reason in the deployment's status (see ERROR_FILE_ENV).
            if let Some(path) = std::env::var_os(photon_orchestrator::ERROR_FILE_ENV) {
                let _ = std::fs::write(path, e.to_string());
            }
            Ok(ExitCode::FAILURE)
        }
    }
}

/// Builds Python deployments: the controller hands a Python application's replicas where its
/// code is (`photon_python::CODE_ENV`); other import paths are unknown.
fn python_builder(args: &ReplicaArgs) -> photon_replica::FallbackBuilder {
    let (max_ongoing_requests, log_encoding, log_level, controller) =
        (args.max_ongoing_requests, args.log_encoding.clone(), args.log_level.clone(), args.controller.clone());
    Box::new(move |_import_path, ctx| {
        let code = std::env::var(photon_python::CODE_ENV).ok()?;
        let spec = serde_json::from_str(&code)
            .map_err(|e| photon_replica::DeploymentError(format!("{}: {e}", photon_python::CODE_ENV)))
            .map(|code| photon_python::WorkerSpec {
                code,
                app: ctx.app.clone(),
                deployment: ctx.deployment.clone(),
                replica_id: ctx.replica_id.clone(),
                max_ongoing_requests,
                log_encoding: log_encoding.clone(),
                log_level: log_level.clone(),
                controller: Some(controller.clone()),
            });
        Some(spec.and_then(|spec| {
            photon_python::PythonDeployment::start(spec, ctx)
                .map(|d| Arc::new(d) as Arc<dyn photon_replica::Deployment>)
        }))
    })
}

/// SIGTERM, SIGINT, or (with `watch_parent`) the head going away.
async fn shutdown_signal(watch_parent: bool) {
    let parent = std::os::unix::process::parent_id();
    let orphaned = async move {
        if !watch_parent {
            return std::future::pending().await;
        }
        loop {
            tokio::time::sleep(Duration::from_millis(250)).await;
            if std::os::unix::process::parent_id() != parent {
                tracing::warn!("the head process is gone; stopping");
                return;
            }
        }
    };
    tokio::select! {
        _ = crate::head::terminate_signal() => {}
        _ = orphaned => {}
    }
}
