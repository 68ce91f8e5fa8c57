//! `photon status`, `photon config` and `photon shutdown`: what Ray's `serve status`,
//! `serve config` and `serve shutdown` print and do, against a head's REST API.

use std::io::{BufRead, IsTerminal, Write};
use std::process::ExitCode;

use clap::Args;
use serde_json::{json, Map, Value};

use super::client::{RestClient, DEFAULT_ADDRESS};

#[derive(Args)]
pub struct StatusArgs {
    /// The head's REST API.
    #[arg(short, long, env = "PHOTON_ADDRESS", default_value = DEFAULT_ADDRESS)]
    address: String,
    /// Only this application.
    #[arg(short, long)]
    name: Option<String>,
    /// Also list every replica: state, process id, node, start time, last health-check error.
    #[arg(long)]
    replicas: bool,
}

#[derive(Args)]
pub struct ConfigArgs {
    /// The head's REST API.
    #[arg(short, long, env = "PHOTON_ADDRESS", default_value = DEFAULT_ADDRESS)]
    address: String,
    /// Only this application.
    #[arg(short, long)]
    name: Option<String>,
}

#[derive(Args)]
pub struct ShutdownArgs {
    /// The head's REST API.
    #[arg(short, long, env = "PHOTON_ADDRESS", default_value = DEFAULT_ADDRESS)]
    address: String,
    /// Do not ask for confirmation.
    #[arg(short, long)]
    yes: bool,
}

/// The `serve status` document, computed from the REST response as Ray's CLI does.
pub fn status_document(details: &Value, only: Option<&str>, with_replicas: bool) -> Value {
    let mut proxies = Map::new();
    if let Some(map) = details["proxies"].as_object() {
        for (node, p) in map {
            proxies.insert(node.clone(), p["status"].clone());
        }
    }
    let mut applications = Map::new();
    if let Some(apps) = details["applications"].as_object() {
        for (name, app) in apps.iter().filter(|(n, _)| only.is_none_or(|o| o == n.as_str())) {
            let mut deployments = Map::new();
            if let Some(deps) = app["deployments"].as_object() {
                for (dname, d) in deps {
                    let mut states = Map::new();
                    for r in d["replicas"].as_array().into_iter().flatten() {
                        let state = r["state"].as_str().unwrap_or("UNKNOWN").to_string();
                        let n = states.get(&state).and_then(Value::as_u64).unwrap_or(0);
                        states.insert(state, json!(n + 1));
                    }
                    let mut entry = json!({"status": d["status"], "status_trigger": d["status_trigger"], "replica_states": states, "message": d["message"]});
                    if with_replicas {
                        let replicas: Vec<Value> = d["replicas"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .map(|r| {
                                json!({"replica_id": r["replica_id"], "state": r["state"], "pid": r["pid"], "node_id": r["node_id"],
                                       "start_time_s": r["start_time_s"], "last_health_check_error": r["last_health_check_error"]})
                            })
                            .collect();
                        entry["replicas"] = json!(replicas);
                    }
                    deployments.insert(dname.clone(), entry);
                }
            }
            applications.insert(
                name.clone(),
                json!({"status": app["status"], "message": app["message"], "last_deployed_time_s": app["last_deployed_time_s"], "deployments": deployments}),
            );
        }
    }
    json!({"proxies": proxies, "applications": applications, "target_capacity": details["target_capacity"]})
}

pub async fn status(args: StatusArgs) -> anyhow::Result<ExitCode> {
    let client = RestClient::new(&args.address)?;
    let details = client.details().await?;
    if let Some(n) = &args.name {
        if details["applications"].get(n).is_none() {
            eprintln!("photon: no application named {n:?}");
            return Ok(ExitCode::FAILURE);
        }
    }
    print!("{}", serde_yaml_ng::to_string(&status_document(&details, args.name.as_deref(), args.replicas))?);
    Ok(ExitCode::SUCCESS)
}

pub async fn config(args: ConfigArgs) -> anyhow::Result<ExitCode> {
    let client = RestClient::new(&args.address)?;
    let details = client.details().await?;
    let configs: Vec<&Value> = details["applications"]
        .as_object()
        .map(|apps| {
            apps.iter()
                .filter(|(n, _)| args.name.as_deref().is_none_or(|o| o == n.as_str()))
                .map(|(_, a)| &a["deployed_app_config"])
                .filter(|c| !c.is_null())
                .collect()
        })
        .unwrap_or_default();
    if configs.is_empty() {
        println!("No configuration was found.");
        return Ok(ExitCode::SUCCESS);
    }
    let docs: Vec<String> = configs.iter().map(serde_yaml_ng::to_string).collect::<Result<_, _>>()?;
    print!("{}", docs.join("---\n"));
    Ok(ExitCode::SUCCESS)
}

pub async fn shutdown(args: ShutdownArgs) -> anyhow::Result<ExitCode> {
    let client = RestClient::new(&args.address)?;
    if !args.yes {
        if !std::io::stdin().is_terminal() {
            eprintln!("photon: refusing to shut down without confirmation; pass -y");
            return Ok(ExitCode::FAILURE);
        }
        print!("This will shut down every application on {}. Continue? [y/N] ", args.address);
        std::io::stdout().flush()?;
        let mut answer = String::new();
        std::io::stdin().lock().read_line(&mut answer)?;
        if !matches!(answer.trim(), "y" | "Y" | "yes") {
            println!("Aborted.");
            return Ok(ExitCode::FAILURE);
        }
    }
    client.delete_all().await?;
    println!("Sent shutdown request; applications will be deleted asynchronously.");
    Ok(ExitCode::SUCCESS)
}
