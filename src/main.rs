//! `photon`: serves Ray Serve configs from one binary.

mod cmd;
mod head;
mod logging;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "photon", version, about = "Ray Serve's data plane in Rust: serve a Ray Serve config from one binary")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve every application of a Ray Serve config (or RayService manifest) in the foreground.
    Run(cmd::run::RunArgs),
    /// Start the head (controller, REST API, proxy) with no applications, in the foreground.
    Start(cmd::run::StartArgs),
    /// Send a config to a running head and wait until its applications are RUNNING.
    Deploy(cmd::deploy::DeployArgs),
    /// Print the status of every application (YAML, as `serve status`).
    Status(cmd::inspect::StatusArgs),
    /// Print the deployed config of every application (YAML, as `serve config`).
    Config(cmd::inspect::ConfigArgs),
    /// Delete every application of a running head.
    Shutdown(cmd::inspect::ShutdownArgs),
    /// A standalone HTTP/gRPC proxy fed by a controller (for heads started without proxies).
    Proxy(cmd::proxy::ProxyArgs),
    /// One replica of one deployment (started by the orchestrator, not by hand).
    Replica(cmd::replica::ReplicaArgs),
    /// The Kubernetes operator for PhotonService resources (`crd` prints its CRD).
    #[cfg(feature = "kubernetes")]
    Operator(cmd::operator::OperatorArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // A Python replica's Rust side only moves bytes between its callers and one single-threaded
    // Python worker: on one thread, a request, its frames to the worker and its handle calls
    // never wake another thread (each cross-thread wake-up costs as much as the work).
    let python_replica =
        matches!(cli.command, Command::Replica(_)) && std::env::var_os(photon_python::CODE_ENV).is_some();
    let mut builder = if python_replica {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    };
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("photon: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Run(args) => cmd::run::run(args).await,
            Command::Start(args) => cmd::run::start(args).await,
            Command::Deploy(args) => cmd::deploy::run(args).await,
            Command::Status(args) => cmd::inspect::status(args).await,
            Command::Config(args) => cmd::inspect::config(args).await,
            Command::Shutdown(args) => cmd::inspect::shutdown(args).await,
            Command::Proxy(args) => cmd::proxy::run(args).await,
            Command::Replica(args) => cmd::replica::run(args).await,
            #[cfg(feature = "kubernetes")]
            Command::Operator(args) => cmd::operator::run(args).await,
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("photon: {e:#}");
            ExitCode::FAILURE
        }
    }
}
