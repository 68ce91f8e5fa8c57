//! `photon deploy CONFIG`: validate locally (fast feedback with field paths), send the config to
//! a running head, and follow the applications until they are RUNNING or failed.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use serde_json::Value;

use super::client::{RestClient, DEFAULT_ADDRESS};

#[derive(Args)]
pub struct DeployArgs {
    /// A Ray Serve config (YAML or JSON), or a RayService manifest.
    config: PathBuf,
    /// The head's REST API.
    #[arg(short, long, env = "PHOTON_ADDRESS", default_value = DEFAULT_ADDRESS)]
    address: String,
    /// Return once the head accepted the config, without waiting for RUNNING.
    #[arg(long)]
    no_wait: bool,
    /// Longest wait for the applications, seconds.
    #[arg(long, default_value_t = 300)]
    timeout_s: u64,
}

/// The document to PUT: the serve config itself (a manifest's `spec.serveConfigV2` unwrapped).
fn serve_config_document(text: &str) -> anyhow::Result<Value> {
    let doc = photon_config::yaml::from_str(text).map_err(anyhow::Error::msg).context("invalid YAML")?;
    let kind = doc.get("kind").and_then(Value::as_str);
    if matches!(kind, Some("RayService" | "PhotonService")) {
        return match doc.pointer("/spec/serveConfigV2") {
            Some(Value::String(inner)) => photon_config::yaml::from_str(inner)
                .map_err(anyhow::Error::msg)
                .context("spec.serveConfigV2: invalid YAML"),
            Some(other) => Ok(other.clone()),
            None => anyhow::bail!("spec.serveConfigV2: field required"),
        };
    }
    Ok(doc)
}

pub async fn run(args: DeployArgs) -> anyhow::Result<ExitCode> {
    let text =
        std::fs::read_to_string(&args.config).with_context(|| format!("cannot read {}", args.config.display()))?;
    if let Err(e) = photon_config::parse_yaml(&text) {
        eprintln!("photon: {}: {e}", args.config.display());
        return Ok(ExitCode::from(super::run::EXIT_BAD_CONFIG));
    }
    let doc = serve_config_document(&text)?;
    let names: Vec<String> = doc["applications"]
        .as_array()
        .map(|apps| {
            apps.iter().map(|a| a["name"].as_str().unwrap_or(photon_config::defaults::APP_NAME).to_string()).collect()
        })
        .unwrap_or_default();
    let client = RestClient::new(&args.address)?;
    client.put_config(&doc).await?;
    println!("Sent deploy request successfully.");
    if args.no_wait || names.is_empty() {
        return Ok(ExitCode::SUCCESS);
    }
    follow(&client, &names, Duration::from_secs(args.timeout_s)).await
}

/// Prints progress until every named app is RUNNING (success) or one fails.
async fn follow(client: &RestClient, names: &[String], timeout: Duration) -> anyhow::Result<ExitCode> {
    let tty = std::io::stdout().is_terminal();
    let spinner = ['|', '/', '-', '\\'];
    let deadline = tokio::time::Instant::now() + timeout;
    let mut last_line = String::new();
    for tick in 0usize.. {
        let details = client.details().await?;
        let states: Vec<(String, String, String)> = names
            .iter()
            .map(|n| {
                let app = &details["applications"][n];
                (
                    n.clone(),
                    app["status"].as_str().unwrap_or("NOT_STARTED").to_string(),
                    app["message"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect();
        // A DEPLOYING app's message says what it is doing (an import, a package install) and
        // for how long.
        let line = states
            .iter()
            .map(
                |(n, s, m)| {
                    if s == "DEPLOYING" && !m.is_empty() {
                        format!("{n}: {s} ({m})")
                    } else {
                        format!("{n}: {s}")
                    }
                },
            )
            .collect::<Vec<_>>()
            .join(", ");
        if tty {
            print!("\r{} {line}\x1b[K", spinner[tick % spinner.len()]);
            use std::io::Write;
            let _ = std::io::stdout().flush();
        } else if line != last_line {
            println!("{line}");
        }
        last_line = line;
        if let Some((n, _, message)) = states.iter().find(|(_, s, _)| s == "DEPLOY_FAILED" || s == "UNHEALTHY") {
            if tty {
                println!();
            }
            eprintln!("photon: application {n} failed: {message}");
            return Ok(ExitCode::FAILURE);
        }
        if states.iter().all(|(_, s, _)| s == "RUNNING") {
            if tty {
                println!();
            }
            println!("All applications are RUNNING.");
            return Ok(ExitCode::SUCCESS);
        }
        if tokio::time::Instant::now() > deadline {
            if tty {
                println!();
            }
            eprintln!("photon: timed out waiting for the applications: {last_line}");
            return Ok(ExitCode::FAILURE);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    unreachable!("the loop returns")
}
