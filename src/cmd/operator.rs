//! `photon operator`: runs the PhotonService operator, or prints what it makes (`crd`: the
//! CustomResourceDefinition; `render FILE`: every object for a PhotonService manifest).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Args, Subcommand};
use photon_operator::{ClusterDns, OperatorSettings, PhotonService};

#[derive(Args)]
pub struct OperatorArgs {
    #[command(subcommand)]
    command: Option<OperatorCommand>,
    /// Watch only this namespace (default: all).
    #[arg(long, env = "WATCH_NAMESPACE")]
    namespace: Option<String>,
    /// Image for containers that name a Ray image (rayproject/ray...) or none.
    #[arg(long, env = "PHOTON_IMAGE", default_value = photon_operator::cluster::DEFAULT_IMAGE)]
    image: String,
    /// Image for the head and replica pods of a service with Python applications, where they
    /// name a Ray image or none (the Dockerfile's `python` target).
    #[arg(long, env = "PHOTON_PYTHON_IMAGE", default_value = photon_operator::cluster::DEFAULT_PYTHON_IMAGE)]
    python_image: String,
    /// Cluster DNS domain.
    #[arg(long, env = "CLUSTER_DOMAIN", default_value = "cluster.local")]
    cluster_domain: String,
    /// Zero-downtime upgrades when a PhotonService sets no upgradeStrategy.type (KubeRay's
    /// ENABLE_ZERO_DOWNTIME).
    #[arg(long, env = "ENABLE_ZERO_DOWNTIME", default_value_t = true, action = clap::ArgAction::Set)]
    zero_downtime: bool,
}

#[derive(Subcommand)]
enum OperatorCommand {
    /// Print the PhotonService CustomResourceDefinition (YAML).
    Crd,
    /// Print every object the operator makes for a PhotonService manifest (a YAML stream of
    /// JSON documents: label values such as `yes` stay strings for every YAML reader).
    Render {
        /// A PhotonService manifest.
        manifest: PathBuf,
        /// Cluster name to use (default `<name>-xxxxx`).
        #[arg(long)]
        cluster: Option<String>,
    },
}

pub async fn run(args: OperatorArgs) -> anyhow::Result<ExitCode> {
    let settings = OperatorSettings {
        image: args.image,
        python_image: args.python_image,
        builtin_import_paths: photon_replica::builtin_registry().import_paths().into_iter().map(Into::into).collect(),
        cluster_domain: args.cluster_domain,
        zero_downtime: args.zero_downtime,
    };
    match args.command {
        Some(OperatorCommand::Crd) => {
            print!("{}", serde_yaml_ng::to_string(&photon_operator::crd())?);
            Ok(ExitCode::SUCCESS)
        }
        Some(OperatorCommand::Render { manifest, cluster }) => {
            let text =
                std::fs::read_to_string(&manifest).with_context(|| format!("cannot read {}", manifest.display()))?;
            let svc: PhotonService = serde_yaml_ng::from_str(&text)
                .with_context(|| format!("{}: not a PhotonService manifest", manifest.display()))?;
            if let Err(e) = photon_operator::cluster::validate(&svc) {
                anyhow::bail!("{}: {e}", manifest.display());
            }
            let name = svc.metadata.name.clone().unwrap_or_default();
            let cluster = cluster.unwrap_or_else(|| format!("{name}-xxxxx"));
            for object in photon_operator::render(&svc, &cluster, &settings).map_err(anyhow::Error::msg)? {
                println!("---\n{}", serde_json::to_string_pretty(&object)?);
            }
            Ok(ExitCode::SUCCESS)
        }
        None => {
            crate::logging::init_from(None);
            let client = kube::Client::try_default()
                .await
                .context("cannot reach the Kubernetes API server (in-cluster config or KUBECONFIG)")?;
            let addresses = Arc::new(ClusterDns { domain: settings.cluster_domain.clone() });
            photon_operator::run(client, settings, addresses, args.namespace).await;
            Ok(ExitCode::SUCCESS)
        }
    }
}
