//! `photon proxy`: a standalone HTTP (and gRPC) proxy fed by a controller's routing table. It
//! keeps serving with the last table while the controller is away, and follows a restarted
//! controller at the same address.

use std::net::{IpAddr, SocketAddr};
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use photon_proxy::{GrpcConfig, HttpConfig};
use photon_router::Router;
use tokio::net::TcpListener;

#[derive(Args)]
pub struct ProxyArgs {
    /// The controller's internal address (`photon start --controller-port N`). The proxy
    /// presents the head's cluster token, which `PHOTON_CLUSTER_TOKEN` must hold (give
    /// `photon start` the same).
    #[arg(long, env = "PHOTON_CONTROLLER_ADDRESS")]
    controller_address: String,
    /// HTTP port (0 picks a free port).
    #[arg(long, env = "PHOTON_HTTP_PORT", default_value_t = photon_config::defaults::HTTP_PORT)]
    http_port: u16,
    /// HTTP bind address.
    #[arg(long, env = "PHOTON_HTTP_HOST", default_value = "0.0.0.0")]
    http_host: IpAddr,
    /// gRPC port; no gRPC front door without it.
    #[arg(long, env = "PHOTON_GRPC_PORT")]
    grpc_port: Option<u16>,
    /// Threads serving HTTP, each a single-threaded runtime (default: one per CPU).
    #[arg(long, env = "PHOTON_PROXY_THREADS")]
    proxy_threads: Option<usize>,
    /// `http_options.request_timeout_s` for this proxy.
    #[arg(long)]
    request_timeout_s: Option<f64>,
    /// `http_options.keep_alive_timeout_s` for this proxy (Ray's default 90).
    #[arg(long, default_value_t = photon_config::defaults::KEEP_ALIVE_TIMEOUT_S)]
    keep_alive_timeout_s: u64,
    /// Bytes of request bodies this proxy may hold at once; more are refused with 503.
    #[arg(long, env = "PHOTON_MAX_BUFFERED_BODY_BYTES", default_value_t = photon_router::guard::DEFAULT_BODY_BUDGET_BYTES)]
    max_buffered_body_bytes: usize,
    /// Connections each front door keeps open at once; more are refused.
    #[arg(long, env = "PHOTON_MAX_CONNECTIONS", default_value_t = photon_router::guard::DEFAULT_MAX_CONNECTIONS)]
    max_connections: usize,
}

pub async fn run(args: ProxyArgs) -> anyhow::Result<ExitCode> {
    crate::logging::init_from(None);
    photon_router::cluster_auth::install_from_env()?;
    photon_router::guard::set_body_budget(args.max_buffered_body_bytes);
    let http = TcpListener::bind(SocketAddr::new(args.http_host, args.http_port))
        .await
        .with_context(|| format!("cannot listen for HTTP on port {}", args.http_port))?;
    let grpc = match args.grpc_port {
        Some(port) => Some(
            TcpListener::bind(SocketAddr::new(args.http_host, port))
                .await
                .with_context(|| format!("cannot listen for gRPC on port {port}"))?,
        ),
        None => None,
    };
    let router = Router::new();
    let follow =
        tokio::spawn(photon_router::follow_controller(router.clone(), args.controller_address.clone(), "proxy".into()));
    let node_id: String = (0..28).map(|_| format!("{:02x}", fastrand::u8(..))).collect();
    let timeout = args.request_timeout_s.map(std::time::Duration::from_secs_f64);
    let mut tasks = vec![follow];
    if let Some(listener) = grpc {
        tracing::info!("gRPC proxy listening on {}", listener.local_addr()?);
        let config = GrpcConfig {
            request_timeout: timeout,
            node_id: node_id.clone(),
            max_message_bytes: photon_router::max_message_bytes_from_env().map_err(anyhow::Error::msg)?,
            keep_alive: std::time::Duration::from_secs(args.keep_alive_timeout_s),
            max_connections: args.max_connections,
            ..Default::default()
        };
        tasks.push(tokio::spawn(photon_proxy::serve_grpc(listener, router.clone(), config)));
    }
    let config = HttpConfig {
        request_timeout: timeout,
        node_id,
        keep_alive: std::time::Duration::from_secs(args.keep_alive_timeout_s),
        max_connections: args.max_connections,
        ..Default::default()
    };
    let threads = args.proxy_threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from));
    let addr = http.local_addr()?;
    drop(http);
    let addr = photon_proxy::serve_on_threads(addr, threads.max(1), router, config)?;
    tracing::info!("HTTP proxy listening on http://{addr}");
    crate::head::terminate_signal().await;
    for t in tasks {
        t.abort();
    }
    Ok(ExitCode::SUCCESS)
}
