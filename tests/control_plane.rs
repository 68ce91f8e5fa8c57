//! End to end: `photon start` + `photon deploy/status/config/shutdown`, the REST API, and live
//! updates under steady load (in-place `user_config`, replica replacement, app removal, bad
//! configs) without a failed request.

mod common;

use std::time::Duration;

use common::*;
use serde_json::Value;

const SAMPLE: &str = include_str!("../examples/serve-config.yaml");

fn replica_ids(details: &Value, app: &str, deployment: &str) -> Vec<String> {
    let mut ids: Vec<String> = details["applications"][app]["deployments"][deployment]["replicas"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["replica_id"].as_str().unwrap().to_string())
        .collect();
    ids.sort();
    ids
}

fn assert_all_ok(results: &[(u16, String)], rate: f64, what: &str) {
    let failed: Vec<_> = results.iter().filter(|(s, _)| *s != 200).collect();
    assert!(
        failed.is_empty(),
        "{what}: {} of {} requests failed, e.g. {:?}",
        failed.len(),
        results.len(),
        failed.first()
    );
    assert!(rate >= 200.0, "{what}: load was only {rate:.0} req/s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_status_config_and_live_updates_under_load() {
    let head = start_head();
    let address = format!("http://{}", head.rest);
    let config = TempFile::new("serve.yaml", SAMPLE);
    let config_path = config.path.to_str().unwrap();

    // Deploy and wait for RUNNING.
    let (ok, out, err) = cli(&["deploy", config_path, "--address", &address]).await;
    assert!(ok, "deploy failed: {out}\n{err}");
    assert!(out.contains("All applications are RUNNING."), "{out}");
    assert_eq!(post_json(&head.http, "/fruit/", r#"["MANGO", 2]"#).await.text(), "6");

    // Status and config, as serve status / serve config print them.
    let (ok, status, _) = cli(&["status", "--address", &address]).await;
    assert!(ok);
    let status: Value = serde_yaml_ng::from_str(&status).unwrap();
    assert_eq!(status["applications"]["fruit_app"]["status"], "RUNNING");
    assert_eq!(status["applications"]["math_app"]["deployments"]["Router"]["replica_states"]["RUNNING"], 1);
    let (ok, printed, _) = cli(&["config", "--address", &address, "--name", "fruit_app"]).await;
    assert!(ok);
    let printed: Value = serde_yaml_ng::from_str(&printed).unwrap();
    assert_eq!(printed["import_path"], "fruit.deployment_graph");
    let details = head.details().await;
    assert_eq!(details["applications"]["math_app"]["deployments"]["Adder"]["replicas"].as_array().unwrap().len(), 1);

    // 1. user_config only: MANGO's price 3 -> 4 in place, same replica ids, no failed request.
    let before = replica_ids(&details, "fruit_app", "MangoStand");
    let load = Load::start(&head.http, "/fruit/", r#"["PEAR", 2]"#, 8);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let cheaper = TempFile::new("serve.yaml", &SAMPLE.replacen("price: 3", "price: 4", 1));
    let (ok, out, err) = cli(&["deploy", cheaper.path.to_str().unwrap(), "--address", &address]).await;
    assert!(ok, "{out}\n{err}");
    eventually(Duration::from_secs(10), "MANGO at the new price", || async {
        post_json(&head.http, "/fruit/", r#"["MANGO", 2]"#).await.text() == "8"
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (results, rate) = load.finish().await;
    assert_all_ok(&results, rate, "user_config update");
    assert_eq!(replica_ids(&head.details().await, "fruit_app", "MangoStand"), before, "replicas were restarted");

    // 2. An option that needs new replicas (ray_actor_options): rolling replacement, no failure.
    let old_pear = replica_ids(&head.details().await, "fruit_app", "PearStand");
    let load = Load::start(&head.http, "/fruit/", r#"["PEAR", 2]"#, 8);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let heavier = SAMPLE.replacen("price: 3", "price: 4", 1).replacen(
        "      - name: PearStand\n        num_replicas: 1\n        user_config:\n          price: 1\n        ray_actor_options:\n          num_cpus: 0.1",
        "      - name: PearStand\n        num_replicas: 1\n        graceful_shutdown_wait_loop_s: 0.5\n        user_config:\n          price: 1\n        ray_actor_options:\n          num_cpus: 0.2",
        1,
    );
    assert_ne!(heavier, SAMPLE.replacen("price: 3", "price: 4", 1));
    let heavier_file = TempFile::new("serve.yaml", &heavier);
    let (ok, out, err) = cli(&["deploy", heavier_file.path.to_str().unwrap(), "--address", &address]).await;
    assert!(ok, "{out}\n{err}");
    eventually(Duration::from_secs(15), "old PearStand replica gone", || async {
        let ids = replica_ids(&head.details().await, "fruit_app", "PearStand");
        ids.len() == 1 && ids != old_pear
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (results, rate) = load.finish().await;
    assert_all_ok(&results, rate, "replica replacement");
    assert!(results.iter().all(|(_, body)| body == "2"));
    let pears = children_of(head.pid()).into_iter().filter(|(_, c)| c.contains("--deployment PearStand")).count();
    assert_eq!(pears, 1, "the old replica process is gone");

    // 3. Invalid configs: local validation in `photon deploy`, 400 from a raw PUT; nothing changes.
    let bad = TempFile::new(
        "bad.yaml",
        "applications:\n  - name: x\n    import_path: photon.examples:noop\n    route_prefix: nope\n",
    );
    let (ok, _, err) = cli(&["deploy", bad.path.to_str().unwrap(), "--address", &address]).await;
    assert!(!ok);
    assert!(err.contains("applications[0].route_prefix"), "{err}");
    let put = request(
        &head.rest,
        "PUT",
        "/api/serve/applications/",
        &[("content-type", "application/json")],
        br#"{"applications": [{"name": "x", "import_path": "photon.examples:noop", "deployments": [{"name": "Noop", "max_ongoing_requests": 0}]}]}"#,
    )
    .await;
    assert_eq!(put.status, 400);
    assert!(put.text().contains("applications[0].deployments[0].max_ongoing_requests: must be > 0"), "{}", put.text());
    let details = head.details().await;
    assert_eq!(details["applications"]["fruit_app"]["status"], "RUNNING");
    assert_eq!(details["applications"]["math_app"]["status"], "RUNNING");

    // 4. A config without math_app removes it; /fruit/ is untouched.
    let fruit_ids = replica_ids(&details, "fruit_app", "FruitMarket");
    let only_fruit: String = heavier.split("  - name: math_app").next().unwrap().to_string();
    let only_fruit = TempFile::new("serve.yaml", &only_fruit);
    let (ok, out, err) = cli(&["deploy", only_fruit.path.to_str().unwrap(), "--address", &address]).await;
    assert!(ok, "{out}\n{err}");
    eventually(Duration::from_secs(5), "/calc/ gone", || async {
        post_json(&head.http, "/calc/", r#"["MUL", 3]"#).await.status == 404
    })
    .await;
    assert_eq!(post_json(&head.http, "/fruit/", r#"["MANGO", 2]"#).await.text(), "8");
    eventually(Duration::from_secs(10), "math_app deleted", || async {
        head.details().await["applications"].get("math_app").is_none()
    })
    .await;
    assert_eq!(replica_ids(&head.details().await, "fruit_app", "FruitMarket"), fruit_ids);

    // 5. Shutdown deletes every application.
    let (ok, out, _) = cli(&["shutdown", "-y", "--address", &address]).await;
    assert!(ok, "{out}");
    eventually(Duration::from_secs(15), "all apps deleted", || async {
        head.details().await["applications"].as_object().is_some_and(|a| a.is_empty())
    })
    .await;
    assert_eq!(post_json(&head.http, "/fruit/", r#"["MANGO", 2]"#).await.status, 404);
}

#[tokio::test]
async fn rest_api_speaks_rays_dashboard_contract() {
    let head = start_head();
    let version: Value = serde_json::from_slice(&get(&head.rest, "/api/ray/version").await.body).unwrap();
    assert_eq!(version["version"], "4");
    assert!(version["ray_version"].as_str().unwrap().starts_with("2."));
    let empty = head.details().await;
    assert!(empty["applications"].as_object().unwrap().is_empty());
    assert!(empty["controller_info"]["node_id"].is_string());
    assert_eq!(get(&head.rest, "/api/serve/applications/?api_type=bogus").await.status, 400);

    // PUT accepts the config and returns; an import path that does not import fails the app.
    let body = serde_json::json!({"applications": [
        {"name": "ok", "import_path": "photon.examples:noop", "route_prefix": "/ok"},
        {"name": "broken", "import_path": "no.such:app", "route_prefix": "/broken"}
    ]});
    let put = put_config(&head.rest, &body).await;
    assert_eq!(put.status, 200, "{}", put.text());
    head.wait_running(&["ok"]).await;
    // The broken app's code is imported after the PUT returned: DEPLOYING, then DEPLOY_FAILED.
    eventually(Duration::from_secs(30), "the broken app to fail", || async {
        head.details().await["applications"]["broken"]["status"] == "DEPLOY_FAILED"
    })
    .await;
    let details = head.details().await;
    let message = details["applications"]["broken"]["message"].as_str().unwrap();
    assert!(message.contains("ModuleNotFoundError: No module named 'no'"), "{message}");
    let noop = &details["applications"]["ok"];
    assert_eq!(noop["deployed_app_config"], body["applications"][0]);
    let dep = &noop["deployments"]["Noop"];
    assert_eq!(dep["deployment_config"]["max_ongoing_requests"], 5);
    assert_eq!(dep["deployment_config"]["ray_actor_options"]["num_cpus"], 1.0);
    assert_eq!(dep["required_resources"]["CPU"], 1.0);
    let replica = &dep["replicas"][0];
    assert_eq!(replica["state"], "RUNNING");
    assert!(replica["pid"].as_u64().is_some());
    assert!(replica["actor_name"].as_str().unwrap().starts_with("SERVE_REPLICA::ok#Noop#"));
    assert_eq!(get(&head.http, "/ok").await.text(), "ok");

    let delete = request(&head.rest, "DELETE", "/api/serve/applications/", &[], b"").await;
    assert_eq!(delete.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deployment_that_cannot_start_is_deploy_failed_and_deploy_says_so() {
    let head = start_head();
    let address = format!("http://{}", head.rest);
    // Sleep's reconfigure rejects a non-integer sleep_ms, so every replica fails at startup.
    let bad = TempFile::new(
        "serve.yaml",
        "applications:\n  - name: broken\n    import_path: photon.examples:sleep\n    route_prefix: /b\n    deployments:\n      - name: Sleep\n        user_config: {sleep_ms: soon}\n  - name: fine\n    import_path: photon.examples:noop\n    route_prefix: /f\n",
    );
    let (ok, out, err) = cli(&["deploy", bad.path.to_str().unwrap(), "--address", &address]).await;
    assert!(!ok, "deploy succeeded: {out}");
    assert!(err.contains("application broken failed"), "{err}");
    let details = head.details().await;
    let app = &details["applications"]["broken"];
    assert_eq!(app["status"], "DEPLOY_FAILED");
    assert_eq!(app["message"], "Failed to update the deployments ['Sleep'].");
    let dep = &app["deployments"]["Sleep"];
    assert_eq!(dep["status"], "DEPLOY_FAILED");
    assert_eq!(dep["status_trigger"], "REPLICA_STARTUP_FAILED");
    assert!(dep["message"].as_str().unwrap().contains("failed to start 3 times in a row"), "{dep}");
    // The replica's own reason reaches the status message.
    assert!(dep["message"].as_str().unwrap().contains("user_config.sleep_ms must be a non-negative integer"), "{dep}");
    // Ray answers requests for a deployment that failed to deploy with 503.
    let r = get(&head.http, "/b").await;
    assert_eq!(r.status, 503);
    assert_eq!(r.text(), "Deployment(name='Sleep', app='broken') is unavailable because it failed to deploy.");
    // The other application is unaffected.
    head.wait_running(&["fine"]).await;
    assert_eq!(get(&head.http, "/f").await.text(), "ok");
}
