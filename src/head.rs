//! The head process: controller (with its internal gRPC service), the orchestrator (local
//! processes, or pods with `--orchestrator kubernetes`), and the HTTP proxy fed in-process by the controller's routing table. Ports are bound before
//! anything starts, and each listener's address is logged once.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use photon_config::AppCatalog;
use photon_controller::{ControllerGrpc, ControllerHandle, Placement};
use photon_orchestrator::{LocalOrchestrator, Orchestrator};
use photon_proto::v1::controller_service_server::ControllerServiceServer;
use photon_proxy::HttpConfig;
use photon_router::Router;
use tokio::net::TcpListener;
use tokio::sync::mpsc;

/// Where the head listens.
pub struct HeadOptions {
    /// HTTP proxy address; `None`: no proxies in this process (`proxy_location: Disabled`).
    pub http: Option<SocketAddr>,
    /// Where the controller checkpoints its state (none: replicas are tied to this process).
    pub state_store: Option<photon_controller::checkpoint::StateStore>,
    /// Internal controller gRPC address.
    pub controller: SocketAddr,
    /// REST API (dashboard) address.
    pub dashboard: SocketAddr,
    /// The config whose top-level options the instance starts with.
    pub startup_config: photon_config::ServeConfig,
    /// HTTP front door options.
    pub http_config: HttpConfig,
    /// Threads serving HTTP, each with its own runtime (0: the main runtime).
    pub proxy_threads: usize,
    /// gRPC proxy address, when the gRPC front door runs.
    pub grpc: Option<SocketAddr>,
    /// gRPC front door options.
    pub grpc_config: photon_proxy::GrpcConfig,
    /// What this node offers replicas.
    pub node: photon_orchestrator::NodeResources,
    /// Where replicas run.
    pub backend: Backend,
    /// Who may call the REST API.
    pub rest_auth: photon_controller::auth::RestAuth,
    /// Bytes of request bodies the process may hold at once.
    pub body_budget: usize,
}

/// Where replicas run.
pub enum Backend {
    /// Child processes of the head.
    Local,
    /// Pods, made from the settings in the environment (the operator sets them).
    #[cfg(feature = "kubernetes")]
    Kubernetes {
        /// Host replicas reach the controller at (the head Service's name).
        advertise_host: String,
    },
}

/// A running head.
pub struct Head {
    /// The controller.
    pub controller: ControllerHandle,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

async fn bind(addr: SocketAddr, what: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr).await.with_context(|| format!("cannot listen for {what} on {addr}"))
}

impl Head {
    /// Binds every listener, then starts the controller, its gRPC service and the proxy.
    pub async fn start(opts: HeadOptions, catalog: Arc<dyn AppCatalog>) -> anyhow::Result<Head> {
        photon_router::guard::set_body_budget(opts.body_budget);
        let controller_listener = bind(opts.controller, "the controller").await?;
        let http_listener = match opts.http {
            Some(addr) => Some(bind(addr, "HTTP").await?),
            None => None,
        };
        let dashboard_listener = bind(opts.dashboard, "the REST API").await?;
        let grpc_listener = match opts.grpc {
            Some(addr) => Some(bind(addr, "gRPC").await?),
            None => None,
        };
        let controller_addr = controller_listener.local_addr()?;
        let dashboard_addr = dashboard_listener.local_addr()?;

        let (events_tx, events_rx) = mpsc::unbounded_channel();
        let (orchestrator, controller_url, node): (Arc<dyn Orchestrator>, String, _) = match &opts.backend {
            Backend::Local => {
                let binary: PathBuf = std::env::current_exe().context("cannot find the photon binary for replicas")?;
                tracing::info!(resources = %opts.node.describe(), gpus = ?opts.node.gpus, "node resources for replicas");
                let local = LocalOrchestrator::new(binary, events_tx, opts.state_store.is_none());
                (Arc::new(local), format!("http://{controller_addr}"), opts.node.clone())
            }
            #[cfg(feature = "kubernetes")]
            Backend::Kubernetes { advertise_host } => {
                use photon_orchestrator::kubernetes::{KubernetesOrchestrator, KubernetesSettings};
                let settings = KubernetesSettings::from_env()?;
                let client = kube::Client::try_default()
                    .await
                    .context("cannot reach the Kubernetes API server (in-cluster config or KUBECONFIG)")?;
                let backend = KubernetesOrchestrator::connect(client, settings, events_tx).await?;
                let url = format!("http://{advertise_host}:{}", controller_addr.port());
                (Arc::new(backend), url, photon_orchestrator::NodeResources::cluster())
            }
        };
        // The internal credentials outlive a restart with a state store: adopted replicas hold them.
        let stored = match &opts.state_store {
            Some(store) => store.load()?.and_then(|c| c.secrets),
            None => None,
        };
        let secrets = photon_controller::checkpoint::ClusterSecrets::resolve(stored.as_ref())?;
        photon_router::cluster_auth::install(&secrets.cluster_token)?;
        let registration_key = secrets.registration_key.clone();
        let placement = Placement { controller_url, nodes: 1, node, secrets };
        let router = Router::new();
        let proxy_router = http_listener.as_ref().map(|_| router.clone());
        let controller = photon_controller::spawn(
            placement,
            catalog,
            orchestrator,
            events_rx,
            proxy_router,
            opts.state_store.clone(),
        )?;

        let mut tasks = Vec::new();
        let grpc = ControllerServiceServer::with_interceptor(
            ControllerGrpc::new(controller.clone(), registration_key),
            photon_router::cluster_auth::require_token,
        );
        tasks.push(tokio::spawn(async move {
            let incoming = photon_router::incoming_guarded(controller_listener, photon_router::internal_guard());
            if let Err(e) = photon_router::internal_server().add_service(grpc).serve_with_incoming(incoming).await {
                tracing::error!(error = %e, "controller service stopped");
            }
        }));

        let mut table = controller.routing_table();
        let feed = router.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                let current = table.borrow_and_update().clone();
                if current.version > 0 {
                    feed.apply((*current).clone());
                }
                if table.changed().await.is_err() {
                    return;
                }
            }
        }));
        let http_addr = match &http_listener {
            Some(l) => Some(l.local_addr()?),
            None => None,
        };
        let info = instance_info(&opts.startup_config, http_addr, &opts.http_config.node_id);
        if let (Some(listener), true) = (grpc_listener, http_listener.is_some()) {
            let addr = listener.local_addr()?;
            tasks.push(tokio::spawn(photon_proxy::serve_grpc(listener, router.clone(), opts.grpc_config)));
            tracing::info!("gRPC proxy listening on {addr}");
        }
        if let Some(listener) = http_listener {
            if opts.proxy_threads > 0 {
                let threads = opts.proxy_threads;
                let addr = listener.local_addr()?;
                drop(listener);
                photon_proxy::serve_on_threads(addr, threads, router, opts.http_config)?;
            } else {
                tasks.push(tokio::spawn(photon_proxy::serve(listener, router, opts.http_config)));
            }
        }
        tasks.push(tokio::spawn(photon_controller::rest::serve(
            dashboard_listener,
            controller.clone(),
            info,
            opts.rest_auth.clone(),
        )));

        tracing::info!("controller listening on {controller_addr}");
        tracing::info!("REST API listening on http://{dashboard_addr}");
        match http_addr {
            Some(addr) => tracing::info!("HTTP proxy listening on http://{addr}"),
            None => tracing::info!("no proxy in this process (proxy_location: Disabled)"),
        }
        Ok(Head { controller, tasks })
    }

    /// Stops every replica, then the head's own tasks.
    pub async fn shutdown(self) {
        tracing::info!("shutting down: stopping replicas");
        if let Err(e) = self.controller.shutdown().await {
            tracing::warn!(error = %e, "controller shutdown");
        }
        for t in self.tasks {
            t.abort();
        }
        tracing::info!("shutdown complete");
    }
}

fn instance_info(
    config: &photon_config::ServeConfig,
    http_addr: Option<SocketAddr>,
    node_id: &str,
) -> photon_controller::rest::InstanceInfo {
    let node_id = node_id.to_string();
    let mut http_options = serde_json::to_value(&config.http_options).unwrap_or_default();
    if let Some(addr) = http_addr {
        http_options["port"] = serde_json::json!(addr.port());
    }
    photon_controller::rest::InstanceInfo {
        node_id,
        node_ip: "127.0.0.1".to_string(),
        proxy_location: serde_json::to_value(config.proxy_location)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default(),
        http_options,
        grpc_options: serde_json::to_value(&config.grpc_options).unwrap_or_default(),
    }
}

/// Resolves on SIGINT or SIGTERM.
pub async fn terminate_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
