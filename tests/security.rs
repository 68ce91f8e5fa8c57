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

/// Metric labels come from the config, not from clients: an invented HTTP method is `other`,
/// and so is the method path of a gRPC call to no application.
#[tokio::test(flavor = "multi_thread")]
async fn clients_cannot_add_metric_series() {
    let p = Photon::run_yaml(
        "applications:\n  - {name: noop, route_prefix: /noop, import_path: photon.examples:noop}\n  - {name: echo, route_prefix: /echo, import_path: photon.examples:echo}\n",
        &["--grpc-port", "0"],
    );
    p.wait_running(&["noop", "echo"]).await;
    for i in 0..20 {
        let r = request(&p.http, &format!("ATTACK{i}"), "/noop", &[], b"").await;
        assert!(r.status < 500, "{}", r.status);
    }
    let grpc = p.grpc_addr().expect("gRPC proxy");
    let port = grpc.rsplit(':').next().unwrap();
    let stream = tokio::net::TcpStream::connect(format!("127.0.0.1:{port}")).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    for i in 0..20 {
        let req = http::Request::post(format!("http://127.0.0.1/attack.Service{i}/Method{i}"))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .header("application", "no-such-app")
            .body(http_body_util::Full::new(bytes::Bytes::from_static(&[0, 0, 0, 0, 0])))
            .unwrap();
        let _ = sender.send_request(req).await.unwrap();
    }
    let metrics = common::get(&p.rest, "/metrics").await.text();
    assert!(!metrics.contains("ATTACK"), "an invented HTTP method became a label");
    assert!(!metrics.contains("attack.Service"), "a gRPC path to no application became a label");
    assert!(metrics.contains("method=\"other\""), "{metrics}");
}

/// A completion asking for `u64::MAX` tokens is a 400 naming the limit (it wrapped the context
/// check and panicked the model thread), and the next request is served.
#[tokio::test(flavor = "multi_thread")]
async fn a_huge_max_tokens_is_refused_and_the_model_goes_on() {
    let dir = std::env::temp_dir().join(format!("photon-security-llama-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let model = dir.join("tiny.gguf");
    photon_models::tiny::write_llama_gguf(&model).unwrap();
    let p = Photon::run_yaml(
        &format!(
            "applications:\n  - name: gen\n    route_prefix: /v1/completions\n    import_path: photon.models:TextGeneration\n    deployments:\n      - name: TextGeneration\n        user_config: {{model_path: {}}}\n",
            model.display()
        ),
        &[],
    );
    p.wait_running(&["gen"]).await;
    let huge = format!(r#"{{"prompt": "the tea", "max_tokens": {}}}"#, u64::MAX);
    let r = common::post_json(&p.http, "/v1/completions", &huge).await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("exceeds the model's context"), "{}", r.text());
    let r = common::post_json(&p.http, "/v1/completions", r#"{"prompt": "the tea", "max_tokens": 4}"#).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let _ = std::fs::remove_dir_all(&dir);
}

/// The REST API reads at most a few MiB of config (a 150 MiB PUT used to be read whole).
#[tokio::test(flavor = "multi_thread")]
async fn an_oversized_config_is_refused() {
    let head = common::start_head();
    let huge = vec![b' '; 5 << 20];
    let r =
        request(&head.rest, "PUT", "/api/serve/applications/", &[("content-type", "application/json")], &huge).await;
    assert_eq!(r.status, 413, "{}", r.text());
    assert!(r.text().contains("larger than the limit of 4194304 bytes"), "{}", r.text());
}
