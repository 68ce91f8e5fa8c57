//! End to end: `photon run` serves the KubeRay sample config (and the same config inside a
//! RayService manifest) exactly as Ray Serve answers it, plus the proxy's own endpoints.

mod common;

use common::*;

const SAMPLE: &str = include_str!("../examples/serve-config.yaml");

/// Spec kuberay.md section 6.6: request body, path, status, content type, body.
const TABLE: &[(&str, &str, u16, Option<&str>, &str)] = &[
    ("/fruit/", r#"["MANGO", 2]"#, 200, Some("application/json"), "6"),
    ("/fruit/", r#"["ORANGE", 2]"#, 200, Some("application/json"), "4"),
    ("/fruit/", r#"["PEAR", 2]"#, 200, Some("application/json"), "2"),
    ("/fruit/", r#"["PEAR", 12]"#, 200, Some("application/json"), "12"),
    ("/fruit/", r#"["MANGO", 1.5]"#, 200, Some("application/json"), "4.5"),
    ("/fruit/", r#"["MANGO", 2.0]"#, 200, Some("application/json"), "6.0"),
    ("/fruit/", r#"["APPLE", 2]"#, 200, Some("application/json"), "-1"),
    ("/fruit/", r#"["mango", 2]"#, 200, Some("application/json"), "-1"),
    ("/fruit", r#"["MANGO", 2]"#, 200, Some("application/json"), "6"),
    ("/calc/", r#"["MUL", 3]"#, 200, Some("text/plain; charset=utf-8"), "15 pizzas please!"),
    ("/calc/", r#"["ADD", 3]"#, 200, Some("text/plain; charset=utf-8"), "6 pizzas please!"),
    ("/calc/", r#"["MUL", 2.5]"#, 200, Some("text/plain; charset=utf-8"), "12.5 pizzas please!"),
    ("/calc/", r#"["SUB", 3]"#, 500, None, "Internal Server Error"),
    ("/calc/", "[]", 500, None, "Internal Server Error"),
    ("/calc/", "{}", 500, None, "Internal Server Error"),
    ("/calc/", "not json", 500, None, "Internal Server Error"),
    ("/fruit/", r#"{"fruit": "MANGO"}"#, 500, None, "Internal Server Error"),
];

async fn check_table(p: &Photon) {
    for (path, body, status, content_type, expected) in TABLE {
        let r = post_json(&p.http, path, body).await;
        assert_eq!(r.status, *status, "{path} {body}: {}", r.text());
        assert_eq!(r.header("content-type").as_deref(), *content_type, "{path} {body}");
        assert_eq!(r.text(), *expected, "{path} {body}");
        if *status == 500 {
            assert_eq!(r.header("content-length").as_deref(), Some("21"));
        }
    }
    let r = get(&p.http, "/nonexistent").await;
    assert_eq!(r.status, 404);
    assert_eq!(r.header("content-type").as_deref(), Some("text/plain; charset=utf-8"));
    assert_eq!(r.text(), "Path '/nonexistent' not found. Ping http://.../-/routes for available routes.");
    // A GET with no body reaches the app and fails in its JSON parsing, as in Ray.
    assert_eq!(get(&p.http, "/calc/").await.status, 500);
}

#[tokio::test]
async fn sample_config_answers_like_ray_serve() {
    let p = Photon::run_yaml(SAMPLE, &[]);
    p.wait_running(&["fruit_app", "math_app"]).await;
    check_table(&p).await;

    let routes = get(&p.http, "/-/routes").await;
    assert_eq!(routes.header("content-type").as_deref(), Some("application/json"));
    assert_eq!(routes.text(), r#"{"/fruit":"fruit_app","/calc":"math_app"}"#);
    let health = get(&p.http, "/-/healthz").await;
    assert_eq!((health.status, health.text()), (200, "success".to_string()));
}

#[tokio::test]
async fn rayservice_manifest_serves_the_same() {
    let manifest = TempFile::new("rayservice.yaml", include_str!("../examples/rayservice-sample.yaml"));
    let p = Photon::run_file(&manifest.path, &[]);
    p.wait_running(&["fruit_app", "math_app"]).await;
    check_table(&p).await;
}

#[tokio::test]
async fn max_replicas_per_node_caps_local_replicas_and_says_why() {
    let p = Photon::run_yaml(SAMPLE, &[]);
    p.wait_running(&["fruit_app"]).await;
    let details = p.details().await;
    let mango = &details["applications"]["fruit_app"]["deployments"]["MangoStand"];
    assert_eq!(mango["status"], "HEALTHY");
    assert_eq!(mango["replicas"].as_array().unwrap().len(), 1);
    let message = mango["message"].as_str().unwrap();
    assert!(message.contains("max_replicas_per_node"), "{message}");
    assert_eq!(mango["deployment_config"]["num_replicas"], 2);
    let replica_processes =
        children_of(p.pid()).into_iter().filter(|(_, cmd)| cmd.contains("--deployment MangoStand")).count();
    assert_eq!(replica_processes, 1);
}

#[tokio::test]
async fn request_ids_keep_alive_h2c_and_body_limit() {
    let p = Photon::run_yaml(
        "applications:\n  - name: echo\n    import_path: photon.examples:echo\n    route_prefix: /echo\n",
        &["--max-request-body-bytes", "1024"],
    );
    p.wait_running(&["echo"]).await;

    // The client's id is echoed; otherwise a UUID4 is generated.
    let r =
        request(&p.http, "POST", "/echo", &[("x-request-id", "abc-123"), ("content-type", "text/csv")], b"a,b").await;
    assert_eq!((r.status, r.text()), (200, "a,b".to_string()));
    assert_eq!(r.header("content-type").as_deref(), Some("text/csv"));
    assert_eq!(r.header("x-request-id").as_deref(), Some("abc-123"));
    let generated = get(&p.http, "/nowhere").await.header("x-request-id").unwrap();
    assert_eq!(generated.len(), 36);
    assert_eq!(&generated[14..15], "4");

    // 413 above the limit.
    let r = request(&p.http, "POST", "/echo", &[], &[b'x'; 2048]).await;
    assert_eq!(r.status, 413);

    // Several requests on one HTTP/1.1 connection.
    let stream = tokio::net::TcpStream::connect(&p.http).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await.unwrap();
    tokio::spawn(conn);
    for i in 0..3 {
        let req =
            http::Request::post("/echo").body(http_body_util::Full::new(bytes::Bytes::from(format!("n{i}")))).unwrap();
        let resp = sender.send_request(req).await.unwrap();
        use http_body_util::BodyExt;
        assert_eq!(resp.into_body().collect().await.unwrap().to_bytes(), format!("n{i}"));
    }

    // HTTP/2 with prior knowledge (h2c).
    let stream = tokio::net::TcpStream::connect(&p.http).await.unwrap();
    let (mut h2, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let req = http::Request::post(format!("http://{}/echo", p.http))
        .body(http_body_util::Full::new(bytes::Bytes::from("over h2")))
        .unwrap();
    let resp = h2.send_request(req).await.unwrap();
    assert_eq!(resp.version(), http::Version::HTTP_2);
    use http_body_util::BodyExt;
    assert_eq!(resp.into_body().collect().await.unwrap().to_bytes(), "over h2");
}
