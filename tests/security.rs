//! Security: what a client may not do, on real processes. Photon's processes talk among
//! themselves with `x-photon-*` headers; a client's are removed at the front doors, so a client
//! cannot choose the method a request calls, nor have a Python replica unpickle its body.

mod common;

use std::time::Duration;

use common::{put_config, python, request, Photon};
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
        async move { put_config(&rest, &body).await }
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

    // A manifest whose serveConfigV2 is a YAML alias bomb: 1 KB that would expand to 43
    // million nodes. Refused with its field, without the memory (the head stays small).
    let mut bomb = String::from("l0: &l0 [x, x, x, x, x, x, x, x, x]\n");
    for level in 1..=8 {
        bomb.push_str(&format!("l{level}: &l{level} [{}]\n", vec![format!("*l{}", level - 1); 9].join(", ")));
    }
    let manifest =
        serde_json::json!({"apiVersion": "ray.io/v1", "kind": "RayService", "spec": {"serveConfigV2": bomb}});
    let r = put_config(&head.rest, &manifest).await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("spec.serveConfigV2") && r.text().contains("YAML aliases"), "{}", r.text());
    let status = std::fs::read_to_string(format!("/proc/{}/status", head.pid())).unwrap();
    let rss_kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .unwrap()
        .trim()
        .trim_end_matches(" kB")
        .trim()
        .parse()
        .unwrap();
    assert!(rss_kb < 200 * 1024, "the head's peak memory grew to {rss_kb} kB");
}

/// The environment of a head or CLI with its own home (where `~/.ray/auth_token` lives) and
/// none of the token variables, unless `extra` sets them.
fn auth_env(home: &std::path::Path, extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> =
        [("HOME", home.to_str().unwrap()), ("RAY_AUTH_MODE", ""), ("RAY_AUTH_TOKEN", ""), ("RAY_AUTH_TOKEN_PATH", "")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
    env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    env
}

async fn cli_with(env: &[(String, String)], args: &[&str]) -> (bool, String) {
    let out = tokio::process::Command::new(common::PHOTON)
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .expect("photon runs");
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

/// `photon run` is a new local instance, as Ray's `ray.init()`: token authentication is on by
/// default, a token is generated into `~/.ray/auth_token` (owner-only), the REST API answers
/// Ray's 401 / 403 without the right token, and Photon's CLI and Ray's own present it. The
/// serve port stays open, as Ray's proxy does.
#[tokio::test(flavor = "multi_thread")]
async fn photon_run_turns_token_authentication_on_as_ray_init_does() {
    let home = common::TempFile::new("home", "");
    std::fs::remove_file(&home.path).unwrap();
    std::fs::create_dir_all(&home.path).unwrap();
    let config = common::TempFile::new(
        "config.yaml",
        "applications:\n  - {name: noop, route_prefix: /noop, import_path: photon.examples:noop}\n",
    );
    let args: Vec<std::ffi::OsString> = vec![
        "run".into(),
        config.path.clone().into(),
        "--http-port".into(),
        "0".into(),
        "--dashboard-port".into(),
        "0".into(),
        "--http-host".into(),
        "127.0.0.1".into(),
    ];
    let env = auth_env(&home.path, &[]);
    let photon = Photon::spawn_in(None, &args, &env, true, true);

    let token_file = home.path.join(".ray/auth_token");
    let token = std::fs::read_to_string(&token_file).expect("a generated token");
    assert!(token.len() == 64 && token.chars().all(|c| c.is_ascii_hexdigit()), "{token:?}");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&token_file).unwrap().permissions().mode() & 0o777, 0o600);
    assert!(photon.log_text().contains("Token authentication is enabled"), "{}", photon.log_text());

    let apps = "/api/serve/applications/";
    let r = request(&photon.rest, "GET", apps, &[], b"").await;
    assert_eq!((r.status, r.text()), (401, "Unauthorized: Missing authentication token".to_string()));
    let r = request(&photon.rest, "PUT", apps, &[("authorization", "Bearer not-the-token")], b"{}").await;
    assert_eq!((r.status, r.text()), (403, "Forbidden: Invalid authentication token".to_string()));
    let bearer = format!("Bearer {token}");
    assert_eq!(request(&photon.rest, "GET", apps, &[("authorization", &bearer)], b"").await.status, 200);
    assert_eq!(request(&photon.rest, "GET", apps, &[("x-ray-authorization", &bearer)], b"").await.status, 200);
    let r = request(&photon.rest, "GET", "/api/authentication_mode", &[], b"").await;
    assert_eq!((r.status, r.text()), (200, r#"{"authentication_mode":"token"}"#.to_string()));
    assert_eq!(request(&photon.rest, "GET", "/api/healthz", &[], b"").await.status, 200);
    // A browser logs in as on Ray's dashboard: the token becomes an HttpOnly same-site cookie.
    let r = request(&photon.rest, "POST", "/api/authenticate", &[("authorization", "Bearer guess")], b"").await;
    assert_eq!((r.status, r.text()), (403, "Forbidden: Invalid authentication token".to_string()));
    let r = request(&photon.rest, "POST", "/api/authenticate", &[("authorization", &bearer)], b"").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let cookie = r.header("set-cookie").expect("a session cookie");
    assert!(cookie.starts_with(&format!("ray-authentication-token={token};")), "{cookie}");
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"), "{cookie}");
    let session = format!("ray-authentication-token={token}");
    assert_eq!(request(&photon.rest, "GET", apps, &[("cookie", &session)], b"").await.status, 200);
    // The serve port needs no token.
    common::eventually(Duration::from_secs(30), "the noop app answers", || {
        let http = photon.http.clone();
        async move { request(&http, "GET", "/noop", &[], b"").await.status == 200 }
    })
    .await;

    // Photon's CLI reads the token the same way; without one it says what Ray's says.
    let address = format!("http://{}", photon.rest);
    let (ok, out) = cli_with(&env, &["status", "--address", &address]).await;
    assert!(ok && out.contains("RUNNING"), "{out}");
    let stranger = common::TempFile::new("stranger", "");
    std::fs::remove_file(&stranger.path).unwrap();
    std::fs::create_dir_all(&stranger.path).unwrap();
    let (ok, out) = cli_with(&auth_env(&stranger.path, &[]), &["status", "--address", &address]).await;
    assert!(!ok && out.contains("Authentication required: Unauthorized: Missing authentication token"), "{out}");
    let (ok, out) =
        cli_with(&auth_env(&stranger.path, &[("RAY_AUTH_TOKEN", "wrong")]), &["status", "--address", &address]).await;
    assert!(!ok && out.contains("Authentication failed"), "{out}");

    // Ray's own CLI, given the token as Ray documents it.
    let ray_bin = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/ray-venv/bin");
    if !ray_bin.join("serve").exists() {
        assert!(std::env::var_os("CI").is_none(), "CI must run scripts/ray-venv.sh before the tests");
        eprintln!("SKIPPED the Ray CLI part: no target/ray-venv (scripts/ray-venv.sh makes it)");
        return;
    }
    let ray_env = auth_env(&stranger.path, &[("RAY_AUTH_MODE", "token"), ("RAY_AUTH_TOKEN", &token)]);
    let out = tokio::process::Command::new(ray_bin.join("serve"))
        .args(["status", "--address", &address])
        .envs(ray_env.iter().map(|(k, v)| (k, v)))
        .output()
        .await
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && text.contains("RUNNING"), "{text}");
}

/// `photon start` is `ray start --head`: without a token it runs open and warns; with one it
/// turns authentication on; `RAY_AUTH_MODE=token` with an unreadable `RAY_AUTH_TOKEN_PATH`
/// starts nothing and says why.
#[tokio::test(flavor = "multi_thread")]
async fn photon_start_authenticates_when_a_token_exists() {
    let home = common::TempFile::new("home", "");
    std::fs::remove_file(&home.path).unwrap();
    std::fs::create_dir_all(&home.path).unwrap();
    let args: Vec<std::ffi::OsString> =
        ["start", "--http-port", "0", "--dashboard-port", "0", "--http-host", "127.0.0.1"].map(Into::into).to_vec();
    let apps = "/api/serve/applications/";

    let open = Photon::spawn_in(None, &args, &auth_env(&home.path, &[]), true, true);
    assert!(open.log_text().contains("Token authentication is disabled"), "{}", open.log_text());
    assert_eq!(request(&open.rest, "GET", apps, &[], b"").await.status, 200);
    assert!(!home.path.join(".ray/auth_token").exists(), "photon start generated a token");
    drop(open);

    std::fs::create_dir_all(home.path.join(".ray")).unwrap();
    std::fs::write(home.path.join(".ray/auth_token"), "tok-123\n").unwrap();
    let closed = Photon::spawn_in(None, &args, &auth_env(&home.path, &[]), true, true);
    assert_eq!(request(&closed.rest, "GET", apps, &[], b"").await.status, 401);
    assert_eq!(request(&closed.rest, "GET", apps, &[("authorization", "Bearer tok-123")], b"").await.status, 200);
    drop(closed);

    let missing = home.path.join("no-such-token");
    let out = std::process::Command::new(common::PHOTON)
        .args(&args)
        .envs(auth_env(&home.path, &[("RAY_AUTH_MODE", "token"), ("RAY_AUTH_TOKEN_PATH", missing.to_str().unwrap())]))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("RAY_AUTH_TOKEN_PATH is set but file cannot be opened or is empty"), "{stderr}");
    assert!(!stderr.contains("listening"), "{stderr}");
}

/// As Ray's dashboard: a browser (a `Mozilla` user agent, `Origin`, `Sec-Fetch-*`, ...) may read
/// the REST API but not deploy or delete through it, so a web page cannot drive a local head
/// (DNS rebinding, cross-site requests); other clients are unaffected.
#[tokio::test(flavor = "multi_thread")]
async fn a_browser_cannot_deploy_through_the_rest_api() {
    let head = common::start_head();
    let apps = "/api/serve/applications/";
    let config = br#"{"applications": []}"#;
    let json = ("content-type", "application/json");
    let r = request(&head.rest, "PUT", apps, &[json, ("origin", "http://attacker.example")], config).await;
    assert_eq!((r.status, r.text()), (405, "'PUT' method not allowed for browser traffic.".to_string()));
    let r = request(&head.rest, "DELETE", apps, &[("user-agent", "Mozilla/5.0 (X11; Linux x86_64)")], b"").await;
    assert_eq!(r.status, 405, "{}", r.text());
    assert_eq!(request(&head.rest, "GET", apps, &[("user-agent", "Mozilla/5.0")], b"").await.status, 200);
    assert_eq!(request(&head.rest, "PUT", apps, &[json], config).await.status, 200);
}

/// The address logged after `marker` (`controller listening on ADDR`, `control=ADDR`).
fn logged_address(log: &str, marker: &str) -> String {
    let start = log.find(marker).unwrap_or_else(|| panic!("{marker:?} not in the log:\n{log}")) + marker.len();
    log[start..].split(|c: char| c.is_whitespace() || c == ',').next().unwrap().trim_matches('"').to_string()
}

/// Only Photon's own processes can call the controller, a replica's control service and its
/// data port (they present the cluster token); a registration needs the replica's own secret.
/// A caller who learns a STARTING replica's id can no longer take its traffic.
#[tokio::test(flavor = "multi_thread")]
async fn only_photons_processes_reach_the_internal_ports() {
    use photon_proto::v1 as pb;
    use photon_proto::v1::controller_service_client::ControllerServiceClient;
    use photon_proto::v1::replica_service_client::ReplicaServiceClient;

    let token = format!("security-test-{}", fastrand::u64(..));
    let args = common::head_args(&["--controller-port", "0"]);
    // Small front-door limits: the replica's data port takes nothing larger than they do.
    let env = [
        ("PHOTON_CLUSTER_TOKEN".to_string(), token.clone()),
        ("PHOTON_MAX_REQUEST_BODY_BYTES".to_string(), "4096".to_string()),
        ("RAY_SERVE_GRPC_MAX_MESSAGE_SIZE".to_string(), "2048".to_string()),
    ];
    let head = Photon::spawn_with_env(&args, &env, true, true);
    let config = serde_json::json!({"applications": [{"name": "a", "route_prefix": "/a", "import_path": "photon.examples:noop"}]});
    let put = put_config(&head.rest, &config).await;
    assert_eq!(put.status, 200, "{}", put.text());
    head.wait_running(&["a"]).await;
    let log = head.log_text();
    let controller = format!("http://{}", logged_address(&log, "controller listening on "));
    let control = format!("http://{}", logged_address(&log, "control="));
    let data = logged_address(&log, "data=");
    let details: Value =
        serde_json::from_slice(&request(&head.rest, "GET", "/api/serve/applications/", &[], b"").await.body).unwrap();
    let replica = &details["applications"]["a"]["deployments"]["Noop"]["replicas"][0];
    let (replica_id, pid) = (replica["replica_id"].as_str().unwrap().to_string(), replica["pid"].as_u64().unwrap());

    fn with<T>(message: T, token: Option<&str>, secret: Option<&str>) -> tonic::Request<T> {
        let mut r = tonic::Request::new(message);
        if let Some(t) = token {
            r.metadata_mut().insert("x-photon-cluster-token", t.parse().unwrap());
        }
        if let Some(s) = secret {
            r.metadata_mut().insert("x-photon-replica-secret", s.parse().unwrap());
        }
        r
    }
    let mut client = ControllerServiceClient::connect(controller.clone()).await.unwrap();
    let hijack = pb::RegisterReplicaRequest {
        replica_id: replica_id.clone(),
        app: "a".into(),
        deployment: "Noop".into(),
        address: "127.0.0.1:9".into(),
        pid: std::process::id(),
        data_address: "127.0.0.1:9".into(),
    };
    // No token, a wrong one, then the right token without the replica's own secret.
    let e = client.register_replica(with(hijack.clone(), None, None)).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unauthenticated, "{e}");
    let e = client.register_replica(with(hijack.clone(), Some("guess"), None)).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unauthenticated, "{e}");
    let e = client.register_replica(with(hijack.clone(), Some(&token), Some("guess"))).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e}");
    let watch = pb::WatchRoutingTableRequest { subscriber: "outsider".into() };
    let e = client.watch_routing_table(with(watch.clone(), None, None)).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unauthenticated, "{e}");
    // With the token, the table names the replica at its own data port, not the attacker's.
    let mut tables = client.watch_routing_table(with(watch, Some(&token), None)).await.unwrap().into_inner();
    let table = tables.message().await.unwrap().unwrap();
    let endpoints: Vec<&pb::ReplicaEndpoint> = table.deployments.iter().flat_map(|d| &d.replicas).collect();
    assert_eq!(endpoints.len(), 1, "{endpoints:?}");
    assert_eq!((endpoints[0].replica_id.as_str(), endpoints[0].address.as_str()), (replica_id.as_str(), data.as_str()));

    // The replica's control service and data port.
    let mut replica_control = ReplicaServiceClient::connect(control).await.unwrap();
    let e = replica_control.health(with(pb::HealthRequest {}, None, None)).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unauthenticated, "{e}");
    assert!(replica_control.health(with(pb::HealthRequest {}, Some(&token), None)).await.is_ok());
    let r = request(&data, "GET", "/", &[], b"").await;
    assert_eq!(r.status, 401, "{}", r.text());
    let r = request(&data, "GET", "/", &[("x-photon-cluster-token", "guess")], b"").await;
    assert_eq!(r.status, 401, "{}", r.text());
    let r = request(&data, "GET", "/", &[("x-photon-cluster-token", &token)], b"").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = request(&data, "POST", "/", &[("x-photon-cluster-token", &token)], &[b'x'; 10_000]).await;
    assert!(r.status == 400 && r.text().contains("larger than the limit of 4096 bytes"), "{} {}", r.status, r.text());

    // The application still answers through the proxy, from the same replica.
    let r = request(&head.http, "GET", "/a", &[], b"").await;
    assert_eq!(r.status, 200, "{}", r.text());
    // The credentials never appear on a command line (`ps` shows those to every user).
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    assert!(!String::from_utf8_lossy(&cmdline).contains(&token));
    let environ = String::from_utf8_lossy(&std::fs::read(format!("/proc/{pid}/environ")).unwrap()).into_owned();
    assert!(environ.contains("PHOTON_REPLICA_SECRET="), "the replica got its secret in its environment");
}

/// DNS rebinding: a page whose name resolves to 127.0.0.1 sends its own name as the host; a
/// REST API on a loopback address answers loopback hosts only, so the page reads nothing.
#[tokio::test(flavor = "multi_thread")]
async fn a_rebound_host_cannot_read_a_local_rest_api() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let head = common::start_head();
    let raw = |host: String| {
        let rest = head.rest.clone();
        async move {
            let mut stream = tokio::net::TcpStream::connect(&rest).await.unwrap();
            let head = format!("GET /api/serve/applications/ HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
            stream.write_all(head.as_bytes()).await.unwrap();
            let mut answer = String::new();
            stream.read_to_string(&mut answer).await.unwrap();
            answer
        }
    };
    let port = head.rest.rsplit(':').next().unwrap().to_string();
    let refused = raw(format!("attacker.example:{port}")).await;
    assert!(refused.starts_with("HTTP/1.1 403"), "{refused}");
    assert!(refused.contains("attacker.example"), "the refusal names the host: {refused}");
    for host in [format!("localhost:{port}"), format!("127.0.0.1:{port}")] {
        let answer = raw(host.clone()).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{host}: {answer}");
    }
}

/// `runtime_env.env_vars` cannot load other code into Photon's processes (`LD_PRELOAD`) nor
/// set Photon's own variables (its credentials); the refusal names the field, and what runs
/// stays as it was.
#[tokio::test(flavor = "multi_thread")]
async fn env_vars_cannot_inject_a_loader_or_photons_credentials() {
    let head = common::start_head();
    let put = |env: serde_json::Value| {
        let rest = head.rest.clone();
        async move {
            let config = serde_json::json!({"applications": [{"name": "a", "route_prefix": "/a",
                "import_path": "photon.examples:noop", "runtime_env": {"env_vars": env}}]});
            put_config(&rest, &config).await
        }
    };
    assert_eq!(put(serde_json::json!({"GREETING": "hi"})).await.status, 200);
    head.wait_running(&["a"]).await;
    for name in ["LD_PRELOAD", "PHOTON_CLUSTER_TOKEN"] {
        let r = put(serde_json::json!({ name: "/tmp/x" })).await;
        assert_eq!(r.status, 400, "{}", r.text());
        assert!(r.text().contains(&format!("applications[0].runtime_env.env_vars.{name}")), "{}", r.text());
    }
    assert_eq!(request(&head.http, "GET", "/a", &[], b"").await.status, 200, "the running app is untouched");
}

/// The gRPC front door takes messages up to Ray's `RAY_SERVE_GRPC_MAX_MESSAGE_SIZE`; a larger
/// one is refused with RESOURCE_EXHAUSTED (as Ray's gRPC server refuses it) before routing.
#[tokio::test(flavor = "multi_thread")]
async fn the_grpc_message_limit_is_rays_variable() {
    use photon_proto::ray::serve as ray;
    let photon = Photon::run_yaml_with_env(
        "grpc_options:\n  grpc_servicer_functions: [user_defined_protos_pb2_grpc.add_UserDefinedServiceServicer_to_server]\napplications:\n  - {name: greeter, import_path: photon.examples:greeter, route_prefix: /greeter}\n",
        &[],
        &[("RAY_SERVE_GRPC_MAX_MESSAGE_SIZE", "1024")],
    );
    photon.wait_running(&["greeter"]).await;
    let port = photon.grpc_addr().unwrap().rsplit(':').next().unwrap().to_string();
    let channel =
        tonic::transport::Channel::from_shared(format!("http://127.0.0.1:{port}")).unwrap().connect().await.unwrap();
    let mut greeter = ray::user_defined_service_client::UserDefinedServiceClient::new(channel);
    let call = |name: String| {
        let mut r = tonic::Request::new(ray::UserDefinedMessage { name, foo: "bar".into(), num: 1 });
        r.metadata_mut().insert("application", "greeter".parse().unwrap());
        r
    };
    assert!(greeter.call(call("x".repeat(100))).await.is_ok());
    let e = greeter.call(call("x".repeat(4000))).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::ResourceExhausted, "{e}");
    assert!(greeter.call(call("y".repeat(100))).await.is_ok(), "the front door goes on");
}

/// Whether the server closes `stream` within `limit` (reads until EOF or an error).
async fn closed_within(mut stream: tokio::net::TcpStream, limit: Duration) -> Option<Duration> {
    use tokio::io::AsyncReadExt;
    let started = std::time::Instant::now();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout_at((started + limit).into(), stream.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some(started.elapsed()),
            Ok(Ok(_)) => {}
        }
    }
}

/// Idle and slow clients cannot hold connections on any listener, and connections beyond the
/// limit are refused with a reason: no bytes at all, an h2c preface and then nothing, a head
/// or a body trickling in, an idle keep-alive connection (`keep_alive_timeout_s`), on the
/// HTTP, gRPC and REST ports and a replica's data port. Normal requests go on meanwhile.
#[tokio::test(flavor = "multi_thread")]
async fn idle_and_slow_clients_are_disconnected() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;
    let photon = Photon::run_yaml(
        "http_options: {keep_alive_timeout_s: 2}\ngrpc_options:\n  grpc_servicer_functions: [user_defined_protos_pb2_grpc.add_UserDefinedServiceServicer_to_server]\napplications:\n  - {name: a, route_prefix: /a, import_path: photon.examples:noop}\n",
        &["--max-connections", "8", "--proxy-threads", "1"],
    );
    photon.wait_running(&["a"]).await;
    let grpc = photon.grpc_addr().unwrap();
    let data = logged_address(&photon.log_text(), "data=");

    // The limit: 8 connections open, the 9th is refused at once with a 503 that says why.
    let held: Vec<TcpStream> = futures_util::future::join_all((0..8).map(|_| TcpStream::connect(&photon.http)))
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut refused = TcpStream::connect(&photon.http).await.unwrap();
    let mut answer = String::new();
    refused.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 503") && answer.contains("Too many connections"), "{answer}");
    drop(held);
    tokio::time::sleep(Duration::from_millis(200)).await;

    let started = std::time::Instant::now();
    let connect = |addr: String, bytes: &'static [u8]| async move {
        let mut s = TcpStream::connect(&addr).await.unwrap();
        s.write_all(bytes).await.unwrap();
        s
    };
    // A body at a byte per 700 ms: each piece in time, the whole far too slow.
    let slow_body = connect(photon.http.clone(), b"POST /a HTTP/1.1\r\nhost: x\r\ncontent-length: 1000\r\n\r\n").await;
    let trickle = tokio::spawn(async move {
        let (mut reader, mut writer) = slow_body.into_split();
        let writing = tokio::spawn(async move {
            while writer.write_all(b"x").await.is_ok() {
                tokio::time::sleep(Duration::from_millis(700)).await;
            }
        });
        let mut answer = String::new();
        let _ = tokio::time::timeout(Duration::from_secs(15), reader.read_to_string(&mut answer)).await;
        writing.abort();
        answer
    });
    let mut keep_alive = connect(photon.http.clone(), b"GET /a HTTP/1.1\r\nhost: x\r\n\r\n").await;
    let mut first = [0u8; 12];
    keep_alive.read_exact(&mut first).await.unwrap();
    assert_eq!(&first, b"HTTP/1.1 200");
    let kept = tokio::spawn(closed_within(keep_alive, Duration::from_secs(8)));
    let probes = [
        ("HTTP, no bytes", connect(photon.http.clone(), b"").await),
        ("HTTP, h2c preface only", connect(photon.http.clone(), b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await),
        ("HTTP, a partial head", connect(photon.http.clone(), b"GET /a HTTP/1.1\r\nhost:").await),
        ("gRPC, no bytes", connect(grpc.clone(), b"").await),
        ("REST, a partial head", connect(photon.rest.clone(), b"GET /api/serve/applications/ HTTP/1.1\r\n").await),
        ("data port, no bytes", connect(data.clone(), b"").await),
    ];
    let waits = probes.map(|(what, s)| (what, tokio::spawn(closed_within(s, Duration::from_secs(15)))));
    // Meanwhile the proxy serves as usual.
    for _ in 0..5 {
        assert_eq!(request(&photon.http, "GET", "/a", &[], b"").await.status, 200);
    }
    let idle = kept.await.unwrap().expect("an idle keep-alive connection is closed");
    assert!(
        idle >= Duration::from_millis(1500) && idle < Duration::from_secs(5),
        "keep_alive_timeout_s: 2, closed after {idle:?}"
    );
    for (what, wait) in waits {
        let after = wait.await.unwrap().unwrap_or_else(|| panic!("{what}: still open after 15 s"));
        assert!(after < Duration::from_secs(12), "{what}: closed after {after:?}");
    }
    let answer = trickle.await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 408"), "a trickling body: {answer:?}");
    assert!(started.elapsed() < Duration::from_secs(20));
}

/// State on disk: a fixed controller port checkpoints into this user's private directory (0700,
/// the file 0600) and refuses a directory others can enter or a link planted in its place; a
/// process id from a checkpoint is signalled only if that process is the replica it names; a
/// PUT is acknowledged once the state store holds it, and answers 503 when it cannot.
#[tokio::test(flavor = "multi_thread")]
async fn state_files_are_private_and_process_ids_are_checked() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let uid = std::fs::metadata("/proc/self").unwrap().uid();
    let start = |tmp: &std::path::Path, port: u16| {
        let args = common::head_args(&["--controller-port", &port.to_string()]);
        (args, vec![("TMPDIR".to_string(), tmp.display().to_string())])
    };
    let put = |rest: String, config: serde_json::Value| async move { put_config(&rest, &config).await };
    let noop = serde_json::json!({"applications": [{"name": "a", "route_prefix": "/a", "import_path": "photon.examples:noop"}]});

    // A directory others may enter, or a link where the directory should be: refused, named.
    for plant in ["open directory", "link"] {
        let tmp = std::env::temp_dir().join(format!("photon-state-test-{}", fastrand::u64(..)));
        std::fs::create_dir_all(&tmp).unwrap();
        let private = tmp.join(format!("photon-{uid}"));
        if plant == "link" {
            std::os::unix::fs::symlink(&tmp, &private).unwrap();
        } else {
            std::fs::create_dir(&private).unwrap();
            std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let (args, env) = start(&tmp, common::free_port());
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_photon"))
            .args(&args)
            .envs(env)
            .env("RAY_AUTH_MODE", "disabled")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{plant}: started anyway");
        assert!(stderr.contains("refusing to use") && stderr.contains(&format!("photon-{uid}")), "{plant}: {stderr}");
        std::fs::remove_dir_all(&tmp).unwrap();
    }

    // A fresh one: made private, the checkpoint its owner's alone, written before the PUT answers.
    let tmp = std::env::temp_dir().join(format!("photon-state-test-{}", fastrand::u64(..)));
    std::fs::create_dir_all(&tmp).unwrap();
    let port = common::free_port();
    let (args, env) = start(&tmp, port);
    let head = Photon::spawn_with_env(&args, &env, true, true);
    assert_eq!(put(head.rest.clone(), noop.clone()).await.status, 200);
    let private = tmp.join(format!("photon-{uid}"));
    let checkpoint = private.join(format!("state-{port}.json"));
    assert!(std::fs::read_to_string(&checkpoint).unwrap().contains("photon.examples:noop"), "saved before the answer");
    assert_eq!(std::fs::metadata(&private).unwrap().permissions().mode() & 0o777, 0o700);
    assert_eq!(std::fs::metadata(&checkpoint).unwrap().permissions().mode() & 0o777, 0o600);
    head.wait_running(&["a"]).await;
    let mut doc = Value::Null;
    common::eventually(Duration::from_secs(10), "the replica checkpointed", || {
        doc = serde_json::from_str(&std::fs::read_to_string(&checkpoint).unwrap()).unwrap();
        let saved = doc["replicas"].as_array().is_some_and(|r| !r.is_empty());
        async move { saved }
    })
    .await;
    drop(head);

    // A checkpoint naming a process that is no replica (here a `sleep`): never adopted nor
    // signalled; the deployment gets a replica of its own.
    let mut bystander = std::process::Command::new("sleep").arg("60").spawn().unwrap();
    doc["replicas"] = serde_json::json!([{"replica_id": "notareplica", "app": "a", "deployment": "Noop",
        "heavy_key": doc["replicas"][0]["heavy_key"].clone(), "address": "127.0.0.1:9", "data_address": "127.0.0.1:9",
        "pid": bystander.id(), "start_time_s": 0.0, "user_config": null, "max_ongoing_requests": 5}]);
    std::fs::write(&checkpoint, doc.to_string()).unwrap();
    let head = Photon::spawn_with_env(&args, &env, true, true);
    head.wait_running(&["a"]).await;
    let details: Value =
        serde_json::from_slice(&request(&head.rest, "GET", "/api/serve/applications/", &[], b"").await.body).unwrap();
    let replicas = details["applications"]["a"]["deployments"]["Noop"]["replicas"].as_array().unwrap().clone();
    assert!(replicas.iter().all(|r| r["replica_id"] != "notareplica" && r["pid"] != bystander.id()), "{replicas:?}");

    // A store that can no longer be written: the PUT says so (503), nothing is claimed.
    std::fs::remove_file(&checkpoint).unwrap();
    std::fs::remove_dir(&private).unwrap();
    std::fs::write(&private, b"not a directory").unwrap();
    let r = put(head.rest.clone(), serde_json::json!({"applications": []})).await;
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(r.text().contains("could not be saved to the state store"), "{}", r.text());
    drop(head);
    assert!(bystander.try_wait().unwrap().is_none(), "the bystander process was signalled");
    bystander.kill().unwrap();
    let _ = bystander.wait();
    std::fs::remove_dir_all(&tmp).unwrap();
}

/// One memory budget for the request bodies a process holds (read, queued, in flight): bodies
/// that wait in a queue beyond it are refused with 503 and a reason, and once they are done
/// the budget is free again.
#[tokio::test(flavor = "multi_thread")]
async fn buffered_bodies_share_one_memory_budget() {
    let photon = Photon::run_yaml(
        "applications:\n  - name: slow\n    route_prefix: /slow\n    import_path: photon.examples:sleep\n    deployments:\n      - {name: Sleep, max_ongoing_requests: 1, user_config: {sleep_ms: 1500}}\n",
        &["--max-buffered-body-bytes", "1000000"],
    );
    photon.wait_running(&["slow"]).await;
    let body = vec![b'x'; 400_000];
    let sends: Vec<_> = (0..4)
        .map(|i| {
            let (http, body) = (photon.http.clone(), body.clone());
            async move {
                tokio::time::sleep(Duration::from_millis(100 * i)).await;
                request(&http, "POST", "/slow", &[], &body).await
            }
        })
        .collect();
    let replies = futures_util::future::join_all(sends).await;
    let statuses: Vec<u16> = replies.iter().map(|r| r.status).collect();
    assert_eq!(statuses.iter().filter(|s| **s == 200).count(), 2, "{statuses:?}");
    let refused: Vec<_> = replies.iter().filter(|r| r.status == 503).collect();
    assert_eq!(refused.len(), 2, "{statuses:?}");
    assert!(refused[0].text().contains("memory budget"), "{}", refused[0].text());
    // Done, so free again.
    assert_eq!(request(&photon.http, "POST", "/slow", &[], &body).await.status, 200);
}

/// Paths in a config stay under the path roots (the working and temporary directories, or
/// `PHOTON_PATH_ROOTS`): a `logs_dir` elsewhere is refused with its field path; a model path
/// elsewhere fails its deployment saying so. A file inside them that is no model is named as
/// such, with none of its bytes and no Rust backtrace in the status.
#[tokio::test(flavor = "multi_thread")]
async fn config_paths_stay_under_the_roots_and_errors_quote_no_file() {
    let dir = std::env::temp_dir().join(format!("photon-roots-test-{}", fastrand::u64(..)));
    std::fs::create_dir_all(&dir).unwrap();
    let secret = dir.join("not-a-model");
    std::fs::write(&secret, "root:x:0:0:secret-content\n").unwrap();
    let roots = format!("{}:{}", std::env::current_dir().unwrap().display(), dir.display());
    let args: Vec<std::ffi::OsString> =
        ["start", "--http-port", "0", "--dashboard-port", "0", "--http-host", "127.0.0.1"].map(Into::into).to_vec();
    let head = Photon::spawn_with_env(&args, &[("PHOTON_PATH_ROOTS".into(), roots)], true, true);

    let r = put_config(
        &head.rest,
        &serde_json::json!({"logging_config": {"logs_dir": "/etc/photon-logs"},
        "applications": [{"name": "a", "route_prefix": "/a", "import_path": "photon.examples:noop"}]}),
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("logging_config.logs_dir") && r.text().contains("PHOTON_PATH_ROOTS"), "{}", r.text());

    let model = |path: &str| {
        serde_json::json!({"name": path.replace('/', "_"), "route_prefix": format!("/{}", path.len()),
            "import_path": "photon.models:TextGeneration",
            "deployments": [{"name": "TextGeneration", "user_config": {"model_path": path}, "ray_actor_options": {"num_cpus": 0.1}}]})
    };
    let outside = "/etc/passwd".to_string();
    let inside = secret.display().to_string();
    let config = serde_json::json!({"applications": [model(&outside), model(&inside)]});
    assert_eq!(put_config(&head.rest, &config).await.status, 200);
    let message = |details: &Value, path: &str| {
        details["applications"][path.replace('/', "_")]["deployments"]["TextGeneration"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let details = loop {
        let details: Value =
            serde_json::from_slice(&request(&head.rest, "GET", "/api/serve/applications/", &[], b"").await.body)
                .unwrap_or(Value::Null);
        if message(&details, &outside).contains("exited") && message(&details, &inside).contains("exited") {
            break details;
        }
        assert!(std::time::Instant::now() < deadline, "the model deployments did not fail: {details:#}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let (outside_message, inside_message) = (message(&details, &outside), message(&details, &inside));
    assert!(outside_message.contains("outside the directories Photon may use"), "{outside_message}");
    assert!(inside_message.contains("not a GGUF file"), "{inside_message}");
    for text in [&outside_message, &inside_message] {
        assert!(!text.contains("root:x") && !text.contains("secret") && !text.contains("0x746f6f72"), "{text}");
        assert!(!text.contains("   0: ") && !text.contains(".rs:"), "a backtrace: {text}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
