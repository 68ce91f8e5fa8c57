//! Python deployments against Ray Serve's own answers: every application of
//! `tests/python/serve.yaml` runs on `photon run` in a real Python (the test venv), each
//! request of `tests/python/cases.json` is sent over real HTTP, and the answer must equal the
//! one Ray Serve 2.60 gave for the same app and request (`tests/fixtures/python/ray-2.60.json`,
//! recorded by `scripts/record-ray-python.py`).

mod common;

use std::time::Duration;

use common::{python, request, Photon};
use serde_json::Value;

/// Headers whose values must match Ray's (others, like `date` or `server`, may differ).
const COMPARED_HEADERS: [&str; 3] = ["content-type", "x-app", "location"];

fn start_all_apps() -> Photon {
    python::run_in(&python::apps_dir(), std::path::Path::new("serve.yaml"))
}

fn app_names() -> Vec<String> {
    let text = std::fs::read_to_string(python::apps_dir().join("serve.yaml")).unwrap();
    let doc: Value = serde_yaml_ng::from_str(&text).unwrap();
    doc["applications"].as_array().unwrap().iter().map(|a| a["name"].as_str().unwrap().to_string()).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn python_apps_answer_as_ray_serve_does() {
    let photon = start_all_apps();
    let names = app_names();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    photon.wait_running_for(&names, Duration::from_secs(120)).await;

    let cases: Value =
        serde_json::from_str(&std::fs::read_to_string(python::apps_dir().join("cases.json")).unwrap()).unwrap();
    let fixture: Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/python/ray-2.60.json")).unwrap(),
    )
    .unwrap();
    let mut differences = Vec::new();
    for case in cases.as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let headers: Vec<(String, String)> = case["headers"]
            .as_object()
            .map(|h| h.iter().map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string())).collect())
            .unwrap_or_default();
        let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let body = case["body"].as_str().unwrap_or("").as_bytes();
        let reply =
            request(&photon.http, case["method"].as_str().unwrap(), case["path"].as_str().unwrap(), &headers, body)
                .await;
        let ray = &fixture["answers"][name];
        let mut got = serde_json::json!({ "status": reply.status, "body": reply.text() });
        let mut want = serde_json::json!({ "status": ray["status"], "body": ray["body"] });
        for h in COMPARED_HEADERS {
            got[h] = reply.header(h).map_or(Value::Null, Value::String);
            want[h] = ray["headers"].get(h).cloned().unwrap_or(Value::Null);
        }
        if got != want {
            differences.push(format!("{name}:\n  Ray:    {want}\n  Photon: {got}"));
        }
    }
    assert!(
        differences.is_empty(),
        "{} of {} answers differ from Ray Serve's:\n{}\nlog:\n{}",
        differences.len(),
        cases.as_array().unwrap().len(),
        differences.join("\n"),
        photon.log_text()
    );

    // The REST API's docs_path (FastAPI's docs_url for a FastAPI ingress), as Ray reports it.
    let details = photon.details().await;
    for (app, ray_docs_path) in fixture["docs_paths"].as_object().unwrap() {
        assert_eq!(&details["applications"][app]["docs_path"], ray_docs_path, "docs_path of {app}");
    }

    // Concurrent callers share @serve.batch batches (Ray's sizes depend on timing, so this is
    // checked here rather than against the recording).
    let calls: Vec<_> = (0..8)
        .map(|v| {
            let http = photon.http.clone();
            tokio::spawn(async move { common::get(&http, &format!("/batch?v={v}")).await })
        })
        .collect();
    let mut sizes = Vec::new();
    for call in calls {
        let reply = call.await.unwrap();
        assert_eq!(reply.status, 200, "{}", reply.text());
        sizes.push(serde_json::from_slice::<Value>(&reply.body).unwrap()["batch_size"].as_u64().unwrap());
    }
    assert!(sizes.iter().any(|s| *s > 1), "no two of 8 concurrent calls shared a batch: {sizes:?}");
    assert!(sizes.iter().all(|s| *s <= 8), "a batch exceeded max_batch_size: {sizes:?}");
}

/// The README's example (`examples/python/`), run from the repository root as the README does.
#[tokio::test(flavor = "multi_thread")]
async fn the_readme_python_example_answers() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let photon = python::run_in(root, std::path::Path::new("examples/python/config.yaml"));
    photon.wait_running_for(&["fruit_stand"], Duration::from_secs(60)).await;
    let r = request(
        &photon.http,
        "POST",
        "/stand/order",
        &[("content-type", "application/json")],
        br#"{"fruit": "mango", "amount": 2}"#,
    )
    .await;
    assert_eq!((r.status, r.text()), (200, r#"{"fruit":"mango","amount":2,"total":6.0}"#.to_string()));
    assert_eq!(common::get(&photon.http, "/stand/").await.text(), r#""Welcome to the fruit stand""#);
}
