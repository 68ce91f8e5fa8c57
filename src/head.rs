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
    tasks: CriticalTasks,
}

/// The tasks a head cannot serve without (the controller, its services, the proxies it runs in
/// its runtime): one that ends, or panics, is the head failing, never a half-alive process.
#[derive(Default)]
struct CriticalTasks {
    tasks: tokio::task::JoinSet<()>,
    names: std::collections::HashMap<tokio::task::Id, &'static str>,
}

impl CriticalTasks {
    fn spawn(&mut self, name: &'static str, task: impl std::future::Future<Output = ()> + Send + 'static) {
        let id = self.tasks.spawn(task).id();
        self.names.insert(id, name);
    }

    /// Watches a task spawned elsewhere; its panic is reported as its own.
    fn watch(&mut self, name: &'static str, handle: tokio::task::JoinHandle<()>) {
        self.spawn(name, async move {
            if let Err(e) = handle.await {
                if e.is_panic() {
                    std::panic::resume_unwind(e.into_panic());
                }
            }
        });
    }

    /// Resolves when a task ends, with what happened to it.
    async fn failure(&mut self) -> String {
        let (id, how) = match self.tasks.join_next_with_id().await {
            Some(Ok((id, ()))) => (id, "stopped".to_string()),
            Some(Err(e)) if e.is_panic() => {
                let id = e.id();
                let payload = e.into_panic();
                let message = payload
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| payload.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "(no message)".into());
                (id, format!("panicked: {message}"))
            }
            Some(Err(e)) => (e.id(), "was cancelled".to_string()),
            None => return std::future::pending().await,
        };
        format!("the head's {} {how}", self.names.get(&id).copied().unwrap_or("task"))
    }
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
        // Read once: the controller recovers from it, and the internal credentials outlive a
        // restart with a state store (adopted replicas hold them).
        let store = match &opts.state_store {
            Some(store) => Some((store.clone(), store.load()?)),
            None => None,
        };
        let stored = store.as_ref().and_then(|(_, checkpoint)| checkpoint.as_ref()?.secrets.as_ref());
        let secrets = photon_controller::checkpoint::ClusterSecrets::resolve(stored)?;
        photon_router::cluster_auth::install(&secrets.cluster_token)?;
        let registration_key = secrets.registration_key.clone();
        let placement = Placement { controller_url, nodes: 1, node, secrets };
        let router = Router::new();
        let proxy_router = http_listener.as_ref().map(|_| router.clone());
        let mut tasks = CriticalTasks::default();
        let (controller, actor) =
            photon_controller::spawn(placement, catalog.clone(), orchestrator, events_rx, proxy_router, store);
        tasks.watch("controller", actor);

        let grpc = ControllerServiceServer::with_interceptor(
            ControllerGrpc::new(controller.clone(), registration_key, catalog.clone()),
            photon_router::cluster_auth::require_token,
        );
        tasks.spawn("controller service", async move {
            let incoming = photon_router::incoming_guarded(controller_listener, photon_router::internal_guard());
            if let Err(e) = photon_router::internal_server().add_service(grpc).serve_with_incoming(incoming).await {
                tracing::error!(error = %e, "controller service stopped");
            }
        });

        let mut table = controller.routing_table();
        let feed = router.clone();
        tasks.spawn("routing table feed", async move {
            loop {
                let current = table.borrow_and_update().clone();
                if current.version > 0 {
                    feed.apply((*current).clone());
                }
                if table.changed().await.is_err() {
                    return;
                }
            }
        });
        let http_addr = match &http_listener {
            Some(l) => Some(l.local_addr()?),
            None => None,
        };
        let info = instance_info(&opts.startup_config, http_addr, &opts.http_config.node_id);
        if let (Some(listener), true) = (grpc_listener, http_listener.is_some()) {
            let addr = listener.local_addr()?;
            tasks.spawn("gRPC proxy", photon_proxy::serve_grpc(listener, router.clone(), opts.grpc_config));
            tracing::info!("gRPC proxy listening on {addr}");
        }
        if let Some(listener) = http_listener {
            if opts.proxy_threads > 0 {
                let threads = opts.proxy_threads;
                let addr = listener.local_addr()?;
                drop(listener);
                photon_proxy::serve_on_threads(addr, threads, router, opts.http_config)?;
            } else {
                tasks.spawn("HTTP proxy", photon_proxy::serve(listener, router, opts.http_config));
            }
        }
        tasks.spawn(
            "REST API",
            photon_controller::rest::serve(dashboard_listener, controller.clone(), info, opts.rest_auth.clone()),
        );

        tracing::info!("controller listening on {controller_addr}");
        tracing::info!("REST API listening on http://{dashboard_addr}");
        match http_addr {
            Some(addr) => tracing::info!("HTTP proxy listening on http://{addr}"),
            None => tracing::info!("no proxy in this process (proxy_location: Disabled)"),
        }
        Ok(Head { controller, tasks })
    }

    /// Runs until a termination signal (`Ok`) or until one of the head's own tasks fails
    /// (`Err` with what failed), then stops every replica and the head's tasks.
    pub async fn serve_until_stopped(mut self) -> anyhow::Result<()> {
        let failure = tokio::select! {
            _ = terminate_signal() => None,
            why = self.tasks.failure() => Some(why),
        };
        if let Some(why) = &failure {
            tracing::error!("{why}; stopping");
        }
        self.shutdown().await;
        match failure {
            Some(why) => Err(anyhow::anyhow!(why)),
            None => Ok(()),
        }
    }

    /// Stops every replica, then the head's own tasks.
    pub async fn shutdown(mut self) {
        tracing::info!("shutting down: stopping replicas");
        if let Err(e) = self.controller.shutdown().await {
            tracing::warn!(error = %e, "controller shutdown");
        }
        self.tasks.tasks.abort_all();
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

#[cfg(test)]
mod critical_tasks {
    use super::CriticalTasks;

    #[tokio::test]
    async fn a_task_that_ends_or_panics_is_named_in_the_failure() {
        let mut tasks = CriticalTasks::default();
        tasks.spawn("forever", std::future::pending());
        tasks.spawn("short-lived", async {});
        assert_eq!(tasks.failure().await, "the head's short-lived stopped");

        let mut tasks = CriticalTasks::default();
        tasks.spawn("forever", std::future::pending());
        tasks.watch("controller", tokio::spawn(async { panic!("state went wrong") }));
        assert_eq!(tasks.failure().await, "the head's controller panicked: state went wrong");
    }
}
