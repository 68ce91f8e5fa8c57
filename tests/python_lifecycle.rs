//! Python deployments through their lifecycle, on real processes: import errors and raising
//! constructors as DEPLOY_FAILED with the Python traceback (others keep serving), in-place
//! reconfigure, a worker that dies and a replica that turns unhealthy being replaced, logs with
//! the request id, and `__del__` at graceful shutdown. Apps: `tests/python/lifecycle/`.

mod common;

use std::time::Duration;

use common::{eventually, get, put_config, python, request, Photon};
use serde_json::{json, Value};

fn lifecycle_dir() -> std::path::PathBuf {
    python::apps_dir().join("lifecycle")
}

/// `photon start` from the lifecycle apps' directory, with `env`.
fn head_with(env: &[(String, String)]) -> Photon {
    let args: Vec<std::ffi::OsString> =
        ["start", "--http-port", "0", "--dashboard-port", "0", "--http-host", "127.0.0.1"].map(Into::into).to_vec();
    Photon::spawn_in(Some(&lifecycle_dir()), &args, env, true, true)
}

fn start_head() -> Photon {
    head_with(&python::env())
}

async fn deploy(photon: &Photon, config: Value) {
    let r = put_config(&photon.rest, &config).await;
    assert_eq!(r.status, 200, "deploy refused: {}", r.text());
}

/// A head like [`start_head`]'s whose cache (environments, Photon's Python package) is `cache`.
fn start_head_with_cache(cache: &std::path::Path) -> Photon {
    let mut env = python::env();
    env.push(("PHOTON_CACHE_DIR".to_string(), cache.to_string_lossy().into_owned()));
    head_with(&env)
}

/// A head started from the lifecycle apps' directory, serving one application.
async fn serve_one(name: &str, route_prefix: &str, import_path: &str) -> Photon {
    let photon = start_head();
    deploy(
        &photon,
        json!({"applications": [{"name": name, "route_prefix": route_prefix, "import_path": import_path}]}),
    )
    .await;
    photon.wait_running_for(&[name], Duration::from_secs(60)).await;
    photon
}

async fn app_status(photon: &Photon, app: &str) -> (String, String) {
    let details = photon.details().await;
    let a = &details["applications"][app];
    (a["status"].as_str().unwrap_or("").to_string(), a["message"].as_str().unwrap_or("").to_string())
}

async fn pid_of(photon: &Photon, path: &str) -> Option<u64> {
    let r = get(&photon.http, path).await;
    (r.status == 200).then(|| serde_json::from_slice::<Value>(&r.body).ok()?["pid"].as_u64()).flatten()
}

/// A module with a syntax error, written at run time (a file in the repository would be Python
/// that does not compile): its directory, for `runtime_env.working_dir`.
fn broken_syntax_dir() -> common::TempFile {
    common::TempFile::new("broken_syntax.py", "# Not valid Python.\nfrom ray import serve\n\ndef oops(:\n    pass\n")
}

#[test]
fn photon_run_exits_with_the_traceback_of_an_app_that_does_not_import() {
    let broken = broken_syntax_dir();
    let working_dir = broken.path.parent().unwrap().display().to_string();
    for (module, expected) in [
        ("broken_syntax:app", "SyntaxError"),
        ("not_bound:app", "Did you forget to call `.bind()`?"),
        ("no_such_module:app", "ModuleNotFoundError: No module named 'no_such_module'"),
        ("not_bound:missing", "AttributeError"),
    ] {
        // The other modules come from the directory photon starts from.
        let config = common::TempFile::new(
            "config.yaml",
            &format!(
                "applications:\n  - name: a\n    import_path: {module}\n    runtime_env: {{working_dir: \"local://{working_dir}\"}}\n"
            ),
        );
        let out = std::process::Command::new(common::PHOTON)
            .current_dir(lifecycle_dir())
            .args(["run"])
            .arg(&config.path)
            .args(["--http-port", "0", "--dashboard-port", "0"])
            .envs(python::env())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(65), "{module}: {stderr}");
        assert!(stderr.contains("applications[0].import_path"), "{module}: {stderr}");
        assert!(stderr.contains("Traceback (most recent call last)"), "{module}: {stderr}");
        assert!(stderr.contains(expected), "{module}: wanted {expected:?} in {stderr}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn failing_python_apps_leave_the_others_serving_and_updates_reconfigure_in_place() {
    let broken = broken_syntax_dir();
    let working_dir = format!("local://{}", broken.path.parent().unwrap().display());
    let photon = start_head();
    let good = json!({"name": "life", "route_prefix": "/life", "import_path": "lifecycle:app",
                      "deployments": [{"name": "Lifecycle", "user_config": {"v": 1}}]});
    deploy(&photon, json!({"applications": [good]})).await;
    photon.wait_running_for(&["life"], Duration::from_secs(60)).await;
    let pid = pid_of(&photon, "/life").await.expect("the app answers");

    let config = json!({"applications": [
        good,
        {"name": "syntax", "route_prefix": "/syntax", "import_path": "broken_syntax:app",
         "runtime_env": {"working_dir": working_dir}},
        {"name": "raising", "route_prefix": "/raising", "import_path": "raising_init:app"},
        {"name": "conda", "route_prefix": "/conda", "import_path": "lifecycle:app", "runtime_env": {"conda": "env.yaml"}},
        {"name": "plugin", "route_prefix": "/plugin", "import_path": "lifecycle:app", "runtime_env": {"my_plugin": {"x": 1}}},
        {"name": "timeout", "route_prefix": "/timeout", "import_path": "lifecycle:app",
         "runtime_env": {"config": {"setup_timeout_seconds": 0}}},
    ]});
    deploy(&photon, config).await;
    eventually(Duration::from_secs(60), "both broken apps DEPLOY_FAILED", || async {
        app_status(&photon, "syntax").await.0 == "DEPLOY_FAILED"
            && app_status(&photon, "raising").await.0 == "DEPLOY_FAILED"
    })
    .await;
    eventually(Duration::from_secs(30), "the conda app to fail", || async {
        app_status(&photon, "conda").await.0 == "DEPLOY_FAILED"
    })
    .await;
    let (_, message) = app_status(&photon, "conda").await;
    assert!(message.contains("runtime_env.conda: conda environments are not supported"), "{message}");
    for (app, reason) in [
        ("plugin", "runtime_env.my_plugin: unknown field (Ray's runtime_env plugins are not supported"),
        ("timeout", "runtime_env.config.setup_timeout_seconds: must be an integer greater than zero, or -1, got 0"),
    ] {
        eventually(Duration::from_secs(30), "the app to fail", || async {
            app_status(&photon, app).await.0 == "DEPLOY_FAILED"
        })
        .await;
        let (_, message) = app_status(&photon, app).await;
        assert!(message.contains(reason), "{app}: {message}");
    }
    let (_, message) = app_status(&photon, "syntax").await;
    assert!(message.contains("Traceback (most recent call last)") && message.contains("SyntaxError"), "{message}");
    let details = photon.details().await;
    let message = details["applications"]["raising"]["deployments"]["Fails"]["message"].as_str().unwrap_or("");
    assert!(message.contains("RuntimeError: cannot start: the model file is missing"), "{message}");
    assert_eq!(pid_of(&photon, "/life").await, Some(pid), "the running app was disturbed");

    // A user_config-only change reconfigures the same replica.
    let updated = json!({"applications": [{"name": "life", "route_prefix": "/life", "import_path": "lifecycle:app",
                                           "deployments": [{"name": "Lifecycle", "user_config": {"v": 2}}]}]});
    deploy(&photon, updated).await;
    eventually(Duration::from_secs(30), "the new user_config is applied", || async {
        let r = get(&photon.http, "/life").await;
        serde_json::from_slice::<Value>(&r.body).map(|v| v["config"] == json!({"v": 2})).unwrap_or(false)
    })
    .await;
    assert_eq!(pid_of(&photon, "/life").await, Some(pid), "reconfigure restarted the replica");
    eventually(Duration::from_secs(30), "the broken apps are deleted", || async {
        let d = photon.details().await;
        ["syntax", "raising", "conda", "plugin", "timeout"].iter().all(|a| d["applications"].get(*a).is_none())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn dead_and_unhealthy_python_replicas_are_replaced() {
    let photon = serve_one("life", "/life", "lifecycle:app").await;
    let first = pid_of(&photon, "/life").await.unwrap();

    let crashed = get(&photon.http, "/life?action=crash").await;
    assert_eq!(crashed.status, 500, "{}", crashed.text());
    eventually(Duration::from_secs(60), "a new worker answers after the crash", || async {
        pid_of(&photon, "/life").await.is_some_and(|p| p != first)
    })
    .await;
    let second = pid_of(&photon, "/life").await;

    assert_eq!(get(&photon.http, "/life?action=unhealthy").await.status, 200);
    eventually(Duration::from_secs(60), "the unhealthy replica is replaced", || async {
        pid_of(&photon, "/life").await.is_some_and(|p| Some(p) != second && p != first)
    })
    .await;
    assert!(photon.log_text().contains("told to be unhealthy"), "{}", photon.log_text());
}

#[tokio::test(flavor = "multi_thread")]
async fn python_logs_carry_the_request_id_and_shutdown_runs_del() {
    let goodbye = common::TempFile::new("goodbye", "");
    std::fs::remove_file(&goodbye.path).unwrap();
    let mut photon = start_head();
    let config = json!({"applications": [{"name": "life", "route_prefix": "/life", "import_path": "lifecycle:app",
        "deployments": [{"name": "Lifecycle", "user_config": {"goodbye_file": goodbye.path}}]}]});
    deploy(&photon, config).await;
    photon.wait_running_for(&["life"], Duration::from_secs(60)).await;
    let r = request(&photon.http, "GET", "/life?action=log", &[("x-request-id", "req-python-42")], b"").await;
    assert_eq!(r.status, 200);
    eventually(Duration::from_secs(10), "the Python log lines", || async {
        let log = photon.log_text();
        ["logged from the request", "printed from the request"]
            .iter()
            .all(|m| log.lines().any(|l| l.contains(m) && l.contains("req-python-42") && l.contains("life_Lifecycle")))
    })
    .await;
    assert!(photon.terminate().success());
    assert_eq!(std::fs::read_to_string(&goodbye.path).unwrap_or_default(), "goodbye");
}

/// With Ray installed in the app's environment, `ray.serve` is still Photon's and the rest of
/// `ray` is Ray's own. Uses `target/ray-venv` (`scripts/ray-venv.sh`, which `.ci/run` runs
/// first); outside CI, without it, the test says so and checks nothing else.
#[tokio::test(flavor = "multi_thread")]
async fn with_ray_installed_ray_serve_is_photons_and_the_rest_is_rays() {
    let ray_python = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/ray-venv/bin/python");
    if !ray_python.exists() {
        assert!(std::env::var_os("CI").is_none(), "CI must run scripts/ray-venv.sh before the tests");
        eprintln!("SKIPPED: no target/ray-venv (scripts/ray-venv.sh makes it)");
        return;
    }
    let photon = head_with(&[("PHOTON_PYTHON".to_string(), ray_python.to_string_lossy().into_owned())]);
    deploy(
        &photon,
        json!({"applications": [{"name": "which", "route_prefix": "/which", "import_path": "uses_real_ray:app"}]}),
    )
    .await;
    photon.wait_running_for(&["which"], Duration::from_secs(90)).await;
    let r = get(&photon.http, "/which").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v, json!({"ray_version": "2.60.0", "ray_from": true, "serve_is_photon": true}));
}

/// What a gRPC call answered, in the shape `scripts/record-ray-grpc.py` records Ray's answers.
fn grpc_answer(
    messages: Vec<(String, i64)>,
    status: Option<&tonic::Status>,
    metadata: &tonic::metadata::MetadataMap,
) -> Value {
    let code = status.map_or(0, |s| s.code() as u16);
    let trailing: serde_json::Map<String, Value> = metadata
        .iter()
        .filter_map(|entry| match entry {
            tonic::metadata::KeyAndValueRef::Ascii(k, v) => {
                Some((k.as_str().to_string(), v.to_str().ok()?.to_string()))
            }
            tonic::metadata::KeyAndValueRef::Binary(..) => None,
        })
        .filter(|(k, _)| k.starts_with("x-"))
        .map(|(k, v)| (k, json!(v)))
        .collect();
    json!({
        "messages": messages.into_iter().map(|(g, n)| json!([g, n])).collect::<Vec<_>>(),
        "code": photon_proxy::grpc_code_name(code),
        "details": status.map_or("", |s| s.message()),
        "trailing_metadata": trailing,
    })
}

/// A Python deployment behind `grpc_servicer_functions`, through a client generated from the
/// proto: unary and server-streaming methods, the client's metadata in, and the status,
/// details and trailing metadata the method sets (also while streaming, also after its last
/// message) or the error it raises out, each as Ray Serve 2.60 answered the same call
/// (`tests/fixtures/python/ray-2.60-grpc.json`, recorded by `scripts/record-ray-grpc.py`).
#[tokio::test(flavor = "multi_thread")]
async fn python_deployments_serve_grpc_as_ray_does() {
    use photon_proto::ray::serve as ray;
    use ray::user_defined_service_client::UserDefinedServiceClient;

    let recorded: Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/python/ray-2.60-grpc.json"))
            .unwrap(),
    )
    .unwrap();
    let cases: Vec<Value> = serde_json::from_str(
        &std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/grpc_cases.json")).unwrap(),
    )
    .unwrap();
    let config =
        "grpc_options:\n  grpc_servicer_functions: [serve_pb2_grpc.add_UserDefinedServiceServicer_to_server]\n\
                  applications:\n  - {name: grpc_app, route_prefix: /grpc, import_path: apps.grpc_app:app}\n";
    let file = common::TempFile::new("config.yaml", config);
    let photon = python::run_in(&python::apps_dir(), &file.path);
    photon.wait_running_for(&["grpc_app"], Duration::from_secs(60)).await;
    let port = photon.grpc_addr().expect("gRPC proxy").rsplit(':').next().unwrap().to_string();
    let channel =
        tonic::transport::Channel::from_shared(format!("http://127.0.0.1:{port}")).unwrap().connect().await.unwrap();
    let mut client = UserDefinedServiceClient::new(channel);
    for case in &cases {
        let name = case["name"].as_str().unwrap();
        let fields = &case["request"];
        let mut request = tonic::Request::new(ray::UserDefinedMessage {
            name: fields["name"].as_str().unwrap_or_default().into(),
            foo: fields["foo"].as_str().unwrap_or_default().into(),
            num: fields["num"].as_i64().unwrap_or_default(),
        });
        request.metadata_mut().insert("application", "grpc_app".parse().unwrap());
        for (k, v) in case["metadata"].as_object().into_iter().flatten() {
            let key: tonic::metadata::MetadataKey<tonic::metadata::Ascii> = k.parse().unwrap();
            request.metadata_mut().insert(key, v.as_str().unwrap().parse().unwrap());
        }
        let answer = match case["method"].as_str().unwrap() {
            "Streaming" => {
                let mut stream = client.streaming(request).await.unwrap().into_inner();
                let mut messages = Vec::new();
                loop {
                    match stream.message().await {
                        Ok(Some(m)) => messages.push((m.greeting, m.num_x2)),
                        Ok(None) => {
                            let trailers = stream.trailers().await.unwrap().unwrap_or_default();
                            break grpc_answer(messages, None, &trailers);
                        }
                        Err(status) => break grpc_answer(messages, Some(&status), status.metadata()),
                    }
                }
            }
            method => {
                let result = match method {
                    "__call__" => client.call(request).await,
                    "Method1" => client.method1(request).await,
                    other => panic!("no such method in the cases: {other}"),
                };
                match result {
                    Ok(reply) => {
                        let metadata = reply.metadata().clone();
                        let m = reply.into_inner();
                        grpc_answer(vec![(m.greeting, m.num_x2)], None, &metadata)
                    }
                    Err(status) => grpc_answer(Vec::new(), Some(&status), status.metadata()),
                }
            }
        };
        let mut expected = recorded["answers"][name].clone();
        // An exception's details are its traceback, whose frames are Ray's own: the exception
        // line, last (all the recording keeps), must be the same.
        if expected["code"] == "INTERNAL" {
            let last_line = |v: &Value| v.as_str().unwrap_or_default().lines().last().unwrap_or_default().to_string();
            assert_eq!(last_line(&answer["details"]), last_line(&expected["details"]), "{name}: {answer}");
            expected["details"] = answer["details"].clone();
        }
        assert_eq!(answer, expected, "{name}: Photon answered differently from Ray");
    }
}

/// Requests for a multiplexed model go to the replica that holds it, once that replica has
/// reported it (Ray's router does the same with the ids replicas publish).
#[tokio::test(flavor = "multi_thread")]
async fn multiplexed_requests_go_to_the_replica_holding_the_model() {
    let photon = serve_one("mx", "/mx", "multiplexed:app").await;
    let pid_for = |model: &'static str| {
        let http = photon.http.clone();
        async move {
            let r = request(&http, "GET", "/mx", &[("serve_multiplexed_model_id", model)], b"").await;
            assert_eq!(r.status, 200, "{}", r.text());
            serde_json::from_slice::<Value>(&r.body).unwrap()["pid"].as_u64().unwrap()
        }
    };
    for model in ["a", "b"] {
        let holder = pid_for(model).await;
        tokio::time::sleep(Duration::from_millis(500)).await; // the report reaches the proxy
        for _ in 0..10 {
            assert_eq!(pid_for(model).await, holder, "a request for {model} went to a replica without it");
        }
    }
}

/// A FastAPI WebSocket route through the proxy: the handshake reaches the app, text and binary
/// messages go both ways, and the app's close (code and reason) reaches the client.
#[tokio::test(flavor = "multi_thread")]
async fn python_websockets_carry_messages_both_ways() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;

    let photon = start_head();
    let config = json!({"applications": [{"name": "ws", "route_prefix": "/chat", "import_path": "websocket_app:app",
        "deployments": [{"name": "Echo", "max_ongoing_requests": 1}]}]});
    deploy(&photon, config).await;
    photon.wait_running_for(&["ws"], Duration::from_secs(60)).await;
    assert_eq!(get(&photon.http, "/chat/").await.text(), r#""plain HTTP too""#);

    let stream = tokio::net::TcpStream::connect(&photon.http).await.unwrap();
    let (mut socket, response) =
        tokio_tungstenite::client_async(format!("ws://{}/chat/ws", photon.http), stream).await.expect("handshake");
    assert_eq!(response.status(), 101);
    socket.send(Message::text("hello")).await.unwrap();
    assert_eq!(socket.next().await.unwrap().unwrap(), Message::text("echo: hello"));
    socket.send(Message::binary(vec![1u8, 2, 3])).await.unwrap();
    assert_eq!(socket.next().await.unwrap().unwrap(), Message::binary(vec![3u8, 2, 1]));
    // The open WebSocket holds the replica's only request slot (max_ongoing_requests: 1).
    let busy = get(&photon.http, "/chat/").await;
    assert_eq!(busy.status, 503, "{}", busy.text());
    socket.send(Message::text("bye")).await.unwrap();
    match socket.next().await.unwrap().unwrap() {
        Message::Close(Some(frame)) => assert_eq!((u16::from(frame.code), frame.reason.as_str()), (4000, "done")),
        other => panic!("expected the app's close, got {other:?}"),
    }
    eventually(Duration::from_secs(10), "the slot to come back", || async {
        get(&photon.http, "/chat/").await.status == 200
    })
    .await;
}

/// A module written as Ray's examples are, calling `serve.run` at its top level, imports and
/// serves what its `import_path` names.
#[tokio::test(flavor = "multi_thread")]
async fn a_module_that_calls_serve_run_serves() {
    let photon = serve_one("script", "/script", "script_style:app").await;
    assert_eq!(get(&photon.http, "/script").await.text(), "hello from a script");
}

/// A PUT returns once the controller has the config, as Ray's does: an application whose code
/// is still being imported is DEPLOYING meanwhile, and the others keep serving.
#[tokio::test(flavor = "multi_thread")]
async fn a_deploy_returns_while_the_code_is_imported() {
    let photon = serve_one("life", "/life", "lifecycle:app").await;
    let config = json!({"applications": [
        {"name": "life", "route_prefix": "/life", "import_path": "lifecycle:app"},
        {"name": "slow", "route_prefix": "/slow", "import_path": "slow_import:app"},
    ]});
    deploy(&photon, config).await;
    assert_eq!(app_status(&photon, "slow").await.0, "DEPLOYING");
    assert_eq!(get(&photon.http, "/life").await.status, 200);
    photon.wait_running_for(&["slow"], Duration::from_secs(60)).await;
    assert_eq!(get(&photon.http, "/slow").await.text(), "imported at last");
}

/// Without Ray installed, a remote function runs in a process of its own (a pool of them), and
/// an actor is an object of the replica's worker.
#[tokio::test(flavor = "multi_thread")]
async fn ray_tasks_run_in_other_processes() {
    let photon = serve_one("tasks", "/tasks", "ray_tasks:app").await;
    let r = get(&photon.http, "/tasks").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v: Value = serde_json::from_slice(&r.body).unwrap();
    assert_ne!(v["task"], v["worker"], "{v}");
    assert_eq!(v["actor"], v["worker"], "{v}");
}

/// `runtime_env.pip`: the packages are installed once into an environment of their own that
/// still sees the base interpreter's packages; a second deploy of the same list installs
/// nothing; a package that does not exist fails the application with pip's own words, and the
/// others keep serving.
#[tokio::test(flavor = "multi_thread")]
async fn runtime_env_pip_installs_once_and_names_what_failed() {
    let cache = std::env::temp_dir().join(format!("photon-pip-cache-{}", std::process::id()));
    let photon = start_head_with_cache(&cache);
    let six = json!({"name": "six", "route_prefix": "/six", "import_path": "uses_six:app",
                     "runtime_env": {"pip": ["six==1.17.0"]}});
    deploy(&photon, json!({"applications": [six.clone()]})).await;
    photon.wait_running_for(&["six"], Duration::from_secs(180)).await;
    let r = get(&photon.http, "/six").await;
    assert_eq!(r.text(), r#"{"six":"1.17.0","fastapi_from_base":"fastapi"}"#);
    let envs: Vec<_> = std::fs::read_dir(cache.join("envs")).unwrap().flatten().filter(|e| e.path().is_dir()).collect();
    assert_eq!(envs.len(), 1, "one environment for one requirement list");
    // Written when the environment is made, and only then (its `.ready` records each use).
    let created = envs[0].path().join("pyvenv.cfg");
    let made = std::fs::metadata(&created).unwrap().modified().unwrap();

    let broken = json!({"name": "broken", "route_prefix": "/broken", "import_path": "uses_six:app",
                        "runtime_env": {"pip": ["photon-no-such-package-xyz==1.0"]}});
    let renamed = json!({"name": "six2", "route_prefix": "/six2", "import_path": "uses_six:app",
                         "runtime_env": {"pip": ["six==1.17.0"]}});
    deploy(&photon, json!({"applications": [six, renamed, broken]})).await;
    photon.wait_running_for(&["six2"], Duration::from_secs(60)).await;
    assert_eq!(std::fs::metadata(&created).unwrap().modified().unwrap(), made, "the environment was made again");
    eventually(Duration::from_secs(180), "the broken app to fail", || async {
        app_status(&photon, "broken").await.0 == "DEPLOY_FAILED"
    })
    .await;
    let (_, message) = app_status(&photon, "broken").await;
    assert!(message.contains("runtime_env.pip: installing photon-no-such-package-xyz==1.0 failed"), "{message}");
    assert!(message.contains("No matching distribution found"), "{message}");
    assert_eq!(get(&photon.http, "/six").await.status, 200);
    drop(photon);
    let _ = std::fs::remove_dir_all(&cache);
}

/// Setup failures as Ray reports them: requirements that conflict (the installer's own words)
/// and a setup longer than `config.setup_timeout_seconds` make their application DEPLOY_FAILED;
/// the same application deployed again with a fixed config runs, without a restart.
#[tokio::test(flavor = "multi_thread")]
async fn runtime_env_setup_failures_and_a_fixed_config_recovering() {
    let cache = std::env::temp_dir().join(format!("photon-setup-fail-{}", std::process::id()));
    let photon = start_head_with_cache(&cache);
    let app = |name: &str, runtime_env: Value| json!({"name": name, "route_prefix": format!("/{name}"), "import_path": "uses_six:app", "runtime_env": runtime_env});
    let conflict = app("conflict", json!({"pip": ["six==1.17.0", "six==1.16.0"]}));
    let slow = app("slow", json!({"pip": ["six==1.16.0"], "config": {"setup_timeout_seconds": 1}}));
    deploy(&photon, json!({"applications": [conflict, slow]})).await;
    eventually(Duration::from_secs(180), "both apps to fail", || async {
        app_status(&photon, "conflict").await.0 == "DEPLOY_FAILED"
            && app_status(&photon, "slow").await.0 == "DEPLOY_FAILED"
    })
    .await;
    let (_, message) = app_status(&photon, "conflict").await;
    assert!(message.contains("runtime_env.pip: installing six==1.17.0 six==1.16.0 failed"), "{message}");
    assert!(message.contains("conflicting dependencies"), "{message}");
    let (_, message) = app_status(&photon, "slow").await;
    assert!(message.contains("runtime_env setup timed out after 1s"), "{message}");

    let fixed = app("conflict", json!({"pip": ["six==1.17.0"]}));
    let slow = app("slow", json!({"pip": ["six==1.16.0"], "config": {"setup_timeout_seconds": 600}}));
    deploy(&photon, json!({"applications": [fixed, slow]})).await;
    photon.wait_running_for(&["conflict", "slow"], Duration::from_secs(180)).await;
    assert_eq!(get(&photon.http, "/conflict").await.text(), r#"{"six":"1.17.0","fastapi_from_base":"fastapi"}"#);
    assert_eq!(get(&photon.http, "/slow").await.text(), r#"{"six":"1.16.0","fastapi_from_base":"fastapi"}"#);
    drop(photon);
    let _ = std::fs::remove_dir_all(&cache);
}

/// `runtime_env.uv`: the same environment, installed by uv (from `PATH`, else installed once
/// into the cache from PyPI).
#[tokio::test(flavor = "multi_thread")]
async fn runtime_env_uv_installs_with_uv() {
    let cache = std::env::temp_dir().join(format!("photon-uv-cache-{}", std::process::id()));
    let photon = start_head_with_cache(&cache);
    let app = json!({"name": "six", "route_prefix": "/six", "import_path": "uses_six:app",
                     "runtime_env": {"uv": {"packages": ["six==1.17.0"], "uv_check": true}}});
    deploy(&photon, json!({"applications": [app]})).await;
    photon.wait_running_for(&["six"], Duration::from_secs(180)).await;
    assert_eq!(get(&photon.http, "/six").await.text(), r#"{"six":"1.17.0","fastapi_from_base":"fastapi"}"#);
    drop(photon);
    let _ = std::fs::remove_dir_all(&cache);
}

/// Two applications that need the same packages at once get one environment, built once (the
/// environment's lock), and say what they are doing while it is built.
#[tokio::test(flavor = "multi_thread")]
async fn one_environment_is_built_once_for_concurrent_deploys() {
    let cache = std::env::temp_dir().join(format!("photon-lock-cache-{}", std::process::id()));
    let photon = start_head_with_cache(&cache);
    let app = |name: &str| {
        json!({"name": name, "route_prefix": format!("/{name}"), "import_path": "uses_six:app",
               "runtime_env": {"pip": ["six==1.17.0"]}})
    };
    deploy(&photon, json!({"applications": [app("first"), app("second")]})).await;
    let (status, message) = app_status(&photon, "first").await;
    assert_eq!(status, "DEPLOYING");
    assert!(message.starts_with("Installing its runtime_env.pip packages and importing its code ("), "{message}");
    photon.wait_running_for(&["first", "second"], Duration::from_secs(180)).await;
    let envs = std::fs::read_dir(cache.join("envs")).unwrap().flatten().filter(|e| e.path().is_dir()).count();
    assert_eq!(envs, 1, "the same packages built twice");
    drop(photon);
    let _ = std::fs::remove_dir_all(&cache);
}

/// Writes a pure-Python wheel of `photon_wheel_mod` (`VALUE = value`) into `dir`.
fn make_wheel(dir: &std::path::Path, value: &str) -> std::path::PathBuf {
    let wheel = dir.join("photon_wheel_mod-1.0-py3-none-any.whl");
    let script = format!(
        "import base64, hashlib, zipfile\n\
         files = {{'photon_wheel_mod/__init__.py': 'VALUE = {value:?}\\n',\n\
         \x20   'photon_wheel_mod-1.0.dist-info/METADATA': 'Metadata-Version: 2.1\\nName: photon-wheel-mod\\nVersion: 1.0\\n',\n\
         \x20   'photon_wheel_mod-1.0.dist-info/WHEEL': 'Wheel-Version: 1.0\\nGenerator: test\\nRoot-Is-Purelib: true\\nTag: py3-none-any\\n'}}\n\
         record = ''.join(f'{{n}},sha256={{base64.urlsafe_b64encode(hashlib.sha256(c.encode()).digest()).rstrip(b\"=\").decode()}},{{len(c)}}\\n' for n, c in files.items())\n\
         with zipfile.ZipFile({wheel:?}, 'w') as z:\n\
         \x20   [z.writestr(n, c) for n, c in files.items()]\n\
         \x20   z.writestr('photon_wheel_mod-1.0.dist-info/RECORD', record + 'photon_wheel_mod-1.0.dist-info/RECORD,,\\n')\n"
    );
    let made = std::process::Command::new(python::interpreter()).args(["-c", &script]).status().unwrap();
    assert!(made.success());
    wheel
}

/// A deployment's own `runtime_env` (`ray_actor_options.runtime_env` in the config: `pip`
/// packages and a wheel in `py_modules`) applies to its replicas only, merged with the
/// application's as Ray merges them; a wrong wheel fails the application naming the deployment.
#[tokio::test(flavor = "multi_thread")]
async fn a_deployment_runs_in_its_own_runtime_env() {
    let dir = std::env::temp_dir().join(format!("photon-own-env-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let wheel = make_wheel(&dir, "from a wheel");
    let photon = start_head_with_cache(&dir.join("cache"));
    let app = |py_module: String| {
        json!({"name": "own", "route_prefix": "/own", "import_path": "own_env:app",
               "deployments": [{"name": "Packaged", "ray_actor_options": {"num_cpus": 0.1, "runtime_env": {
                   "pip": ["six==1.17.0"], "py_modules": [py_module], "env_vars": {"X": "1"}}}}]})
    };
    deploy(&photon, json!({"applications": [app(format!("local://{}", wheel.display()))]})).await;
    photon.wait_running_for(&["own"], Duration::from_secs(180)).await;
    let r = get(&photon.http, "/own").await;
    assert_eq!(r.text(), r#"{"front_has_six":false,"packaged":{"six":"1.17.0","wheel":"from a wheel"}}"#);
    let (_, message) = app_status(&photon, "own").await;
    assert!(!message.contains("ignored"), "{message}");

    let missing = dir.join("nothing-1.0-py3-none-any.whl");
    deploy(&photon, json!({"applications": [app(format!("local://{}", missing.display()))]})).await;
    eventually(Duration::from_secs(60), "the app to fail", || async {
        app_status(&photon, "own").await.1.contains("deployment 'Packaged': runtime_env.py_modules[0]")
    })
    .await;
    // The running version keeps serving.
    assert_eq!(get(&photon.http, "/own").await.status, 200);
    drop(photon);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A local `working_dir` (and a `py_modules` directory) reaches replicas as Ray uploads it:
/// without what `excludes` and the `.gitignore` / `.rayignore` files (each for its own
/// directory) exclude, as it was at deploy time; one over the package limit (Ray's `RAY_max_grpc_message_size`, small here) fails its
/// application with what to do, while the other keeps serving.
#[tokio::test(flavor = "multi_thread")]
async fn a_working_dir_is_copied_without_what_it_excludes() {
    let dir = std::env::temp_dir().join(format!("photon-excludes-{}", std::process::id()));
    let files: &[(&str, &str)] = &[
        (
            "listed.py",
            "import os\nimport helper_pkg\nfrom ray import serve\n\n@serve.deployment\ndef listed(request):\n    files = sorted(os.path.relpath(os.path.join(d, f)) for d, ds, fs in os.walk('.') if '__pycache__' not in d for f in fs)\n    return {'files': files, 'helper': helper_pkg.VALUE, 'helper_files': sorted(f for f in os.listdir(helper_pkg.__path__[0]) if f != '__pycache__')}\n\napp = listed.bind()\n",
        ),
        ("secret.txt", "not for replicas"),
        ("data/rows.csv", "1,2"),
        (".rayignore", "*.tmp\n"),
        ("scratch.tmp", "x"),
        ("sub/.gitignore", "local.cfg\n"),
        ("sub/local.cfg", "x"),
        ("sub/kept.txt", "x"),
        ("big/blob.bin", &"x".repeat(8192)),
        ("../mods/helper_pkg/__init__.py", "VALUE = 'from py_modules'\n"),
        ("../mods/helper_pkg/secret.txt", "not for replicas"),
    ];
    for (name, content) in files {
        let path = dir.join("app").join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
    }
    let mut env = python::env();
    env.push(("PHOTON_CACHE_DIR".to_string(), dir.join("cache").to_string_lossy().into_owned()));
    env.push(("RAY_max_grpc_message_size".to_string(), "4096".to_string()));
    let photon = head_with(&env);
    let app = |name: &str, excludes: Value| {
        json!({"name": name, "route_prefix": format!("/{name}"), "import_path": "listed:app",
               "runtime_env": {"working_dir": format!("local://{}", dir.join("app").display()), "excludes": excludes,
                               "py_modules": [format!("local://{}", dir.join("mods/helper_pkg").display())]}})
    };
    deploy(&photon, json!({"applications": [app("listed", json!(["secret.txt", "data/", "/big"]))]})).await;
    photon.wait_running_for(&["listed"], Duration::from_secs(60)).await;
    let expected = r#"{"files":[".rayignore","listed.py","sub/.gitignore","sub/kept.txt"],"helper":"from py_modules","helper_files":["__init__.py"]}"#;
    assert_eq!(get(&photon.http, "/listed").await.text(), expected);
    let (_, message) = app_status(&photon, "listed").await;
    assert!(!message.contains("ignored"), "{message}");

    deploy(
        &photon,
        json!({"applications": [app("listed", json!(["secret.txt", "data/", "/big"])), app("whole", json!([]))]}),
    )
    .await;
    eventually(Duration::from_secs(60), "the oversized app to fail", || async {
        app_status(&photon, "whole").await.0 == "DEPLOY_FAILED"
    })
    .await;
    let (_, message) = app_status(&photon, "whole").await;
    assert!(message.contains("over the package limit of 4096 bytes"), "{message}");
    assert!(message.contains("runtime_env.excludes"), "{message}");
    assert_eq!(get(&photon.http, "/listed").await.text(), expected);
    drop(photon);
    let _ = std::fs::remove_dir_all(&dir);
}

/// `working_dir` and `py_modules` as `.zip` archives by URL (here `file://`): fetched once,
/// unpacked (a single top-level directory is the one used, as in Ray), and imported from.
#[tokio::test(flavor = "multi_thread")]
async fn zip_archives_by_url_are_working_dir_and_py_modules() {
    let dir = std::env::temp_dir().join(format!("photon-zips-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let make_zips = format!(
        "import zipfile\n\
         with zipfile.ZipFile('{d}/bundle.zip', 'w') as z:\n\
         \x20   z.writestr('bundle/zipped.py', 'from ray import serve\\nimport helper_mod\\n\\n@serve.deployment\\ndef zipped(request):\\n    return helper_mod.GREETING + \" from a zip\"\\n\\napp = zipped.bind()\\n')\n\
         with zipfile.ZipFile('{d}/mods.zip', 'w') as z:\n\
         \x20   z.writestr('helper_mod/__init__.py', 'GREETING = \"hi\"\\n')\n",
        d = dir.display()
    );
    let made = std::process::Command::new(python::interpreter()).args(["-c", &make_zips]).status().unwrap();
    assert!(made.success());
    let photon = start_head_with_cache(&dir.join("cache"));
    let app = json!({"name": "zipped", "route_prefix": "/zipped", "import_path": "zipped:app", "runtime_env": {
        "working_dir": format!("file://{}/bundle.zip", dir.display()),
        "py_modules": [format!("file://{}/mods.zip", dir.display())],
    }});
    deploy(&photon, json!({"applications": [app]})).await;
    photon.wait_running_for(&["zipped"], Duration::from_secs(60)).await;
    assert_eq!(get(&photon.http, "/zipped").await.text(), "hi from a zip");
    drop(photon);
    let _ = std::fs::remove_dir_all(&dir);
}
