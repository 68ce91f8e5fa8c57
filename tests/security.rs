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
