//! The replica runtime: the `Deployment` trait, the registry of applications, the built-in
//! samples, and `run`, which turns a process into one replica of one deployment (build,
//! configure, serve, register with the controller, drain on shutdown).

#![warn(missing_docs)]

pub mod batch;
mod data;
mod deployment;
pub mod metrics;
pub mod pyvalue;
mod registry;
mod samples;
mod server;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use photon_proto::v1 as pb;
use photon_proto::v1::replica_service_server::ReplicaServiceServer;
use photon_router::{follow_controller, Router};
use serde_json::Value;
use tokio::net::TcpListener;

pub use deployment::{
    call_handle, BuildContext, ChunkStream, Deployment, DeploymentError, Piece, Protocol, Reply, ReplyBody, Request,
    RequestSlot, Upgrade,
};
pub use registry::{AppDef, Constructor, DeploymentDef, FallbackBuilder, Registry};
pub use samples::builtin_registry;
pub use server::{user_config_json, Admission, ReplicaServer, ServingState};

/// Why a replica could not start or serve.
#[derive(Debug, thiserror::Error)]
pub enum ReplicaError {
    /// The deployment could not be built, configured, or failed its first health check.
    #[error("deployment {deployment} failed to start: {source}")]
    Startup {
        /// Which deployment.
        deployment: String,
        /// What its code said.
        source: DeploymentError,
    },
    /// The listener could not be bound or served.
    #[error("replica server: {0}")]
    Io(#[from] std::io::Error),
    /// The controller could not be reached to register.
    #[error("could not register with the controller at {controller}: {reason}")]
    Register {
        /// Controller URL.
        controller: String,
        /// Last error.
        reason: String,
    },
    /// The gRPC server failed.
    #[error("replica server: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// What one replica process runs.
#[derive(Debug, Clone)]
pub struct ReplicaOptions {
    /// Unique replica id.
    pub replica_id: String,
    /// Application name.
    pub app: String,
    /// Deployment name.
    pub deployment: String,
    /// The application's import path in the registry.
    pub import_path: String,
    /// Controller URL, e.g. `http://127.0.0.1:4567`.
    pub controller: String,
    /// Admission limit.
    pub max_ongoing_requests: u32,
    /// Initial `user_config`.
    pub user_config: Option<Value>,
    /// Longest wait for in-flight requests when stopping.
    pub graceful_shutdown_timeout: Duration,
    /// Poll interval of the drain, and how long routers get to drop this replica.
    pub graceful_shutdown_wait_loop: Duration,
    /// Address to listen on (port 0 picks one).
    pub bind: String,
    /// Host others reach this replica at (a pod's IP), when it listens on a wildcard address.
    pub advertise_host: Option<String>,
    /// One log line per request.
    pub access_log: bool,
    /// This replica's registration secret (`photon_router::cluster_auth`).
    pub registration_secret: String,
}

/// Runs one replica until `shutdown` resolves, then drains and returns.
pub async fn run(
    registry: Arc<Registry>,
    opts: ReplicaOptions,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ReplicaError> {
    let router = Router::for_caller(&opts.replica_id);
    let follow = tokio::spawn(follow_controller(router.clone(), opts.controller.clone(), opts.replica_id.clone()));
    let startup = |source| ReplicaError::Startup { deployment: opts.deployment.clone(), source };

    let ctx = BuildContext::new(&opts.app, &opts.deployment, &opts.replica_id, router);
    let built = registry.build(&opts.import_path, &opts.deployment, &ctx).map_err(startup)?;
    built.reconfigure(opts.user_config.as_ref()).await.map_err(startup)?;
    built.check_health().await.map_err(startup)?;

    let metrics = metrics::ReplicaMetrics::new(&opts.app, &opts.deployment, &opts.replica_id);
    let state = ServingState::new(built, opts.max_ongoing_requests, opts.user_config.clone(), metrics, opts.access_log);
    let listener = TcpListener::bind(&opts.bind).await?;
    let address = listener.local_addr()?;
    let data_listener = TcpListener::bind(&opts.bind).await?;
    let data_address = data_listener.local_addr()?;
    let data = tokio::spawn(data::serve(data_listener, state.clone()));
    let service = ReplicaServiceServer::with_interceptor(
        ReplicaServer(state.clone()),
        photon_router::cluster_auth::require_token,
    );
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(photon_router::internal_server().add_service(service).serve_with_incoming_shutdown(
        photon_router::incoming_guarded(listener, photon_router::internal_guard()),
        async {
            let _ = stop_rx.await;
        },
    ));

    let reachable = |addr: std::net::SocketAddr| match &opts.advertise_host {
        Some(host) => format!("{host}:{}", addr.port()),
        None => addr.to_string(),
    };
    let (address, data_address) = (reachable(address), reachable(data_address));
    register(&opts, &address, &data_address).await?;
    tracing::info!(replica = %opts.replica_id, control = %address, data = %data_address, "replica ready");
    let models = state.deployment().model_ids().map(|ids| tokio::spawn(report_models(opts.clone(), ids)));

    shutdown.await;
    tracing::info!(replica = %opts.replica_id, "draining");
    if tokio::time::timeout(opts.graceful_shutdown_timeout, state.drain(opts.graceful_shutdown_wait_loop))
        .await
        .is_err()
    {
        tracing::warn!(replica = %opts.replica_id, ongoing = state.ongoing(), "graceful shutdown timed out");
    }
    // Ray's `__del__` may not hold the replica up past its graceful-shutdown budget either.
    if tokio::time::timeout(opts.graceful_shutdown_timeout, state.deployment().shutdown()).await.is_err() {
        tracing::warn!(replica = %opts.replica_id, "the deployment's shutdown did not finish in time");
    }
    let _ = stop_tx.send(());
    follow.abort();
    if let Some(task) = models {
        task.abort();
    }
    data.abort();
    match tokio::time::timeout(Duration::from_secs(2), server).await {
        Ok(Ok(result)) => result?,
        _ => tracing::debug!("replica server did not stop in time"),
    }
    Ok(())
}

/// Tells the controller the multiplexed models this replica holds, whenever they change.
async fn report_models(opts: ReplicaOptions, mut ids: tokio::sync::watch::Receiver<Vec<String>>) {
    while ids.changed().await.is_ok() {
        let request =
            pb::ReportModelsRequest { replica_id: opts.replica_id.clone(), model_ids: ids.borrow_and_update().clone() };
        let sent = match photon_router::cluster_auth::controller_client(&opts.controller).await {
            Ok(mut client) => {
                client.report_models(with_secret(&opts, request)).await.map(|_| ()).map_err(|e| e.to_string())
            }
            Err(e) => Err(e.to_string()),
        };
        if let Err(e) = sent {
            tracing::warn!(replica = %opts.replica_id, error = %e, "could not report multiplexed models");
        }
    }
}

/// A request that speaks for this replica: it carries the replica's registration secret.
fn with_secret<T>(opts: &ReplicaOptions, message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Ok(secret) = opts.registration_secret.parse() {
        request.metadata_mut().insert(photon_router::cluster_auth::REPLICA_SECRET_HEADER, secret);
    }
    request
}

async fn register(opts: &ReplicaOptions, address: &str, data_address: &str) -> Result<(), ReplicaError> {
    let request = pb::RegisterReplicaRequest {
        replica_id: opts.replica_id.clone(),
        app: opts.app.clone(),
        deployment: opts.deployment.clone(),
        address: address.to_string(),
        pid: std::process::id(),
        data_address: data_address.to_string(),
    };
    let mut last = String::new();
    for attempt in 0..20u32 {
        match photon_router::cluster_auth::controller_client(&opts.controller).await {
            Ok(mut client) => match client.register_replica(with_secret(opts, request.clone())).await {
                Ok(_) => return Ok(()),
                Err(status) => last = status.to_string(),
            },
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(50 * u64::from(attempt + 1))).await;
    }
    Err(ReplicaError::Register { controller: opts.controller.clone(), reason: last })
}
