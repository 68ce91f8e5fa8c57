//! Security: what a client may not do, on real processes. Photon's processes talk among
//! themselves with `x-photon-*` headers; a client's are removed at the front doors, so a client
//! cannot choose the method a request calls, nor have a Python replica unpickle its body.

mod common;

use std::time::Duration;

use common::{python, request, Photon};
use serde_json::Value;

#[tokio::test(flavor = "multi_thread")]
async fn clients_cannot_use_photons_internal_headers() {
    let config = common::TempFile::new(
        "config.yaml",
        "applications:\n  - {name: life, route_prefix: /life, import_path: lifecycle:app}\n",
    );
    let photon: Photon = python::run_in(&python::apps_dir().join("lifecycle"), &config.path);
    photon.wait_running_for(&["life"], Duration::from_secs(60)).await;

    // Not the method the client names: __call__ answers (with the replica's pid).
    let r = request(&photon.http, "GET", "/life", &[("x-photon-method", "reconfigure")], b"").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(serde_json::from_slice::<Value>(&r.body).unwrap()["pid"].is_u64(), "{}", r.text());

    // A pickle that would create a file if the worker unpickled it.
    let marker = std::env::temp_dir().join(format!("photon-unpickled-{}", std::process::id()));
    let payload = format!("cos\nsystem\n(S'touch {}'\ntR.", marker.display());
    let headers = [
        ("content-type", "application/x-photon-pickle"),
        ("x-photon-handle-args", "pickle"),
        ("x-photon-handle-stream", "1"),
    ];
    let r = request(&photon.http, "POST", "/life", &headers, payload.as_bytes()).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(serde_json::from_slice::<Value>(&r.body).unwrap()["pid"].is_u64(), "{}", r.text());
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!marker.exists(), "the worker unpickled a client's body");
}

/// A duration no timer can hold is refused with its field path, and the controller goes on
/// (`graceful_shutdown_timeout_s: 1e20` used to pass validation and panic the controller).
#[tokio::test(flavor = "multi_thread")]
async fn an_unbounded_duration_is_refused_and_the_controller_goes_on() {
    let head = common::start_head();
    let put = |body: serde_json::Value| {
        let rest = head.rest.clone();
        async move {
            let body = body.to_string();
            request(&rest, "PUT", "/api/serve/applications/", &[("content-type", "application/json")], body.as_bytes())
                .await
        }
    };
    let bad = serde_json::json!({"applications": [{"name": "a", "import_path": "photon.examples:noop",
        "deployments": [{"name": "Noop", "graceful_shutdown_timeout_s": 1e20}]}]});
    let r = put(bad).await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("graceful_shutdown_timeout_s"), "{}", r.text());
    let good = serde_json::json!({"applications": [{"name": "a", "import_path": "photon.examples:noop", "route_prefix": "/a"}]});
    assert_eq!(put(good).await.status, 200);
    head.wait_running(&["a"]).await;
    assert_eq!(common::get(&head.http, "/a").await.text(), "ok");
}
