//! Kubernetes scenarios. No Kubernetes API server can be installed where these tests run, so
//! they use `photon-kube-fake`: an in-process stand-in for the API server (real HTTP on
//! 127.0.0.1: objects, resource versions, watches, finalizers, garbage collection,
//! EndpointSlices) and a fake kubelet that runs pods as local processes. Everything else is
//! real: `photon` heads and replicas, the operator's reconcile loop, kube-rs clients.

mod common;

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::Api;
use photon_kube_fake::kubelet::{run_container, FakeKubelet, PodOutcome, PodProcess};
use photon_kube_fake::{Collection, FakeApiServer};
use photon_operator::{Addresses, OperatorSettings, PhotonService};
use serde_json::{json, Value};

const NS: &str = "default";

fn photon_programs() -> HashMap<String, std::path::PathBuf> {
    HashMap::from([("photon".to_string(), std::path::PathBuf::from(PHOTON))])
}

fn names(objects: &[Value]) -> BTreeSet<String> {
    objects.iter().map(|o| o["metadata"]["name"].as_str().unwrap_or_default().to_string()).collect()
}

fn uids(objects: &[Value]) -> BTreeSet<String> {
    objects.iter().map(|o| o["metadata"]["uid"].as_str().unwrap_or_default().to_string()).collect()
}

const FRUIT: &str = r#"{"applications": [{"name": "fruit_app", "import_path": "fruit.deployment_graph", "route_prefix": "/fruit",
  "deployments": [
    {"name": "MangoStand", "num_replicas": 2, "user_config": {"price": 3}, "ray_actor_options": {"num_cpus": 0.1, "memory": 100000000}},
    {"name": "OrangeStand", "user_config": {"price": 2}, "ray_actor_options": {"num_cpus": 0.1}},
    {"name": "PearStand", "user_config": {"price": 1}, "ray_actor_options": {"num_cpus": 0.1}},
    {"name": "FruitMarket", "num_replicas": 1, "ray_actor_options": {"num_cpus": 0.1}}]}]}"#;

/// A head with `--orchestrator kubernetes` against the fake API server.
fn kubernetes_head(server: &FakeApiServer, dir: &TempFile, controller_port: u16, owner: &Value) -> Photon {
    let template = json!({"metadata": {"labels": {"team": "ml"}}, "spec": {"containers": [{"name": "replica", "image": "photon:test"}]}});
    kubernetes_head_with(server, dir, controller_port, owner, &template, None, &[])
}

/// A Kubernetes head whose replica pods use `template`, started from `cwd` with `extra_env`.
fn kubernetes_head_with(
    server: &FakeApiServer,
    dir: &TempFile,
    controller_port: u16,
    owner: &Value,
    template: &Value,
    cwd: Option<&std::path::Path>,
    extra_env: &[(String, String)],
) -> Photon {
    let kubeconfig = dir.path.with_file_name("kubeconfig");
    server.write_kubeconfig(&kubeconfig);
    let mut env: Vec<(String, String)> = [
        ("KUBECONFIG", kubeconfig.display().to_string()),
        ("PHOTON_KUBERNETES_NAMESPACE", NS.to_string()),
        ("PHOTON_KUBERNETES_CLUSTER", "svc-abcde".to_string()),
        ("PHOTON_KUBERNETES_SERVICE", "svc".to_string()),
        ("PHOTON_KUBERNETES_REPLICA_TEMPLATE", template.to_string()),
        ("PHOTON_KUBERNETES_OWNER_NAME", owner["metadata"]["name"].as_str().unwrap().to_string()),
        ("PHOTON_KUBERNETES_OWNER_UID", owner["metadata"]["uid"].as_str().unwrap().to_string()),
    ]
    .map(|(k, v)| (k.to_string(), v))
    .to_vec();
    env.extend_from_slice(extra_env);
    let store = format!("file:{}", dir.path.display());
    let args = head_args(&[
        "--orchestrator",
        "kubernetes",
        "--controller-port",
        &controller_port.to_string(),
        "--state-store",
        &store,
    ]);
    Photon::spawn_in(cwd, &args, &env, true, true)
}

fn replica_pods(server: &FakeApiServer) -> Vec<Value> {
    server.objects(&Collection::pods(), Some(NS), "photon.io/replica")
}

async fn put_config(rest: &str, config: &str) {
    let reply =
        request(rest, "PUT", "/api/serve/applications/", &[("content-type", "application/json")], config.as_bytes())
            .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
}

/// The head pod that owns the replica pods (the operator makes it; here, by hand).
fn owner_head_pod(server: &FakeApiServer) -> Value {
    let pod = json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "svc-abcde-head", "labels": {"ray.io/node-type": "head"}},
        "spec": {"containers": [{"name": "head", "image": "photon:test"}]}});
    server.create(&Collection::pods(), NS, pod).unwrap()
}

/// A kubelet that runs replica pods as `photon` processes and other pods with no process.
fn replica_kubelet(server: &Arc<FakeApiServer>) -> FakeKubelet {
    FakeKubelet::start(server.clone(), |pod| {
        if pod["metadata"]["labels"]["photon.io/replica"].is_string() {
            PodOutcome::Process(Box::new(run_container(pod, &photon_programs(), None).expect("replica process starts")))
        } else {
            PodOutcome::NoProcess
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_run_as_pods_are_replaced_when_deleted_and_adopted_after_a_head_restart() {
    let server = Arc::new(FakeApiServer::start().await);
    let owner = owner_head_pod(&server);
    let _kubelet = replica_kubelet(&server);
    let state = TempFile::new("state.json", "");
    std::fs::remove_file(&state.path).unwrap();
    let controller_port = free_port();
    let mut head = kubernetes_head(&server, &state, controller_port, &owner);
    put_config(&head.rest, FRUIT).await;
    head.wait_running(&["fruit_app"]).await;

    // One pod per replica, with labels, requests and the head as owner. (Under load a slow
    // replica can be replaced while the test looks, so the count is awaited.)
    eventually(Duration::from_secs(30), "one pod per replica", || {
        let n = replica_pods(&server).len();
        async move { n == 5 }
    })
    .await;
    let pods = replica_pods(&server);
    let mango: Vec<&Value> =
        pods.iter().filter(|p| p["metadata"]["labels"]["photon.io/deployment"] == "MangoStand").collect();
    assert_eq!(mango.len(), 2);
    let labels = &mango[0]["metadata"]["labels"];
    assert_eq!(labels["photon.io/service"], "svc");
    assert_eq!(labels["ray.io/cluster"], "svc-abcde");
    assert_eq!(labels["photon.io/application"], "fruit_app");
    assert_eq!(labels["photon.io/version"], "1");
    assert_eq!(labels["team"], "ml", "the template's labels are kept");
    assert_eq!(mango[0]["metadata"]["ownerReferences"][0]["uid"], owner["metadata"]["uid"]);
    let resources = &mango[0]["spec"]["containers"][0]["resources"]["requests"];
    assert_eq!(resources["cpu"], "100m");
    assert_eq!(resources["memory"], "100000000");
    assert_eq!(mango[0]["spec"]["restartPolicy"], "Never");
    let reply = post_json(&head.http, "/fruit", r#"["MANGO", 2]"#).await;
    assert_eq!((reply.status, reply.text()), (200, "6".to_string()));

    // A deleted replica pod is replaced by a new one.
    let victim = mango[0]["metadata"]["name"].as_str().unwrap().to_string();
    server.delete(&Collection::pods(), NS, &victim).unwrap();
    eventually(Duration::from_secs(30), "a replacement replica pod", || {
        let pods = replica_pods(&server);
        let ok = pods.len() == 5 && !names(&pods).contains(&victim);
        async move { ok }
    })
    .await;
    head.wait_running(&["fruit_app"]).await;
    eventually(Duration::from_secs(20), "traffic through the replacement", || {
        let http = head.http.clone();
        async move {
            let reply = post_json(&http, "/fruit", r#"["MANGO", 2]"#).await;
            reply.status == 200 && reply.text() == "6"
        }
    })
    .await;

    // A restarted head adopts the live pods: none is deleted or created. (Checkpoints are
    // written asynchronously; the head dies once its checkpoint names every live replica.)
    let before = uids(&replica_pods(&server));
    eventually(Duration::from_secs(20), "a checkpoint naming every replica", || {
        let checkpoint = std::fs::read_to_string(&state.path).unwrap_or_default();
        let ids: Vec<String> = replica_pods(&server)
            .iter()
            .map(|p| p["metadata"]["annotations"]["photon.io/replica"].as_str().unwrap_or_default().to_string())
            .collect();
        let all = ids.iter().all(|id| checkpoint.contains(id.as_str()));
        async move { all }
    })
    .await;
    signal(head.pid(), nix::sys::signal::Signal::SIGKILL);
    head.terminate_killed();
    let head = kubernetes_head(&server, &state, controller_port, &owner);
    head.wait_running(&["fruit_app"]).await;
    let reply = post_json(&head.http, "/fruit", r#"["ORANGE", 2]"#).await;
    assert_eq!((reply.status, reply.text()), (200, "4".to_string()));
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(uids(&replica_pods(&server)), before, "pods were recreated after the restart");
    assert!(head.log_text().contains("adopted replica pod"), "{}", head.log_text());

    // Deleting the head pod garbage-collects every replica pod.
    drop(head);
    server.delete(&Collection::pods(), NS, "svc-abcde-head").unwrap();
    assert!(replica_pods(&server).is_empty());
}

/// A Python application on Kubernetes: the head imports it from its image (here, its working
/// directory), and its replica pods run the worker group's template: an image with Python and
/// the app's code, whose working directory and `PHOTON_PYTHON` are what such an image sets
/// (the fake kubelet honours `workingDir`), or the image a deployment's `runtime_env.image_uri`
/// names. Handle calls go from pod to pod.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_applications_run_in_replica_pods_of_the_template_image() {
    let server = Arc::new(FakeApiServer::start().await);
    let owner = owner_head_pod(&server);
    let _kubelet = replica_kubelet(&server);
    let state = TempFile::new("state.json", "");
    std::fs::remove_file(&state.path).unwrap();
    let cache = TempFile::new("python-cache", "");
    std::fs::remove_file(&cache.path).unwrap();
    let apps = python::apps_dir();
    let python = python::interpreter();
    let template = json!({"spec": {"containers": [{
        "name": "replica",
        "image": "my-serve-app:1",
        "workingDir": apps.display().to_string(),
        "env": [
            {"name": "PHOTON_PYTHON", "value": python.display().to_string()},
            {"name": "PHOTON_CACHE_DIR", "value": cache.path.display().to_string()}
        ]
    }]}});
    let head = kubernetes_head_with(&server, &state, free_port(), &owner, &template, Some(&apps), &python::env());
    let config = json!({"applications": [{"name": "composition", "route_prefix": "/compose",
        "import_path": "apps.composition:app",
        "deployments": [{"name": "Ingress", "ray_actor_options": {"num_cpus": 0.1}},
                        {"name": "Adder", "ray_actor_options": {"num_cpus": 0.1, "runtime_env": {"image_uri": "team/adder:2"}}},
                        {"name": "Multiplier", "ray_actor_options": {"num_cpus": 0.1}}]}]});
    put_config(&head.rest, &config.to_string()).await;
    head.wait_running(&["composition"]).await;

    let pods = replica_pods(&server);
    assert_eq!(names(&pods).len(), 3, "one pod per deployment");
    for pod in &pods {
        let container = &pod["spec"]["containers"][0];
        // A deployment's `runtime_env.image_uri` is its pods' image; the others run the template's.
        let expected = if pod["metadata"]["labels"]["photon.io/deployment"] == "Adder" {
            "team/adder:2"
        } else {
            "my-serve-app:1"
        };
        assert_eq!(container["image"], expected);
        assert_eq!(container["workingDir"], apps.display().to_string());
        let env = container["env"].as_array().unwrap();
        let value = |name: &str| env.iter().find(|e| e["name"] == name).map(|e| e["value"].clone());
        assert_eq!(value("PHOTON_PYTHON"), Some(json!(python.display().to_string())));
        let code: Value = serde_json::from_str(value(photon_python::CODE_ENV).unwrap().as_str().unwrap()).unwrap();
        assert_eq!(code["import_path"], "apps.composition:app", "{code}");
    }
    // Ray's answer (tests/fixtures/python/ray-2.60.json, case "compose").
    let reply = get(&head.http, "/compose?x=4").await;
    assert_eq!((reply.status, reply.text()), (200, r#"{"label":"(x+1)*3","result":15}"#.to_string()));
}

/// A Python application whose code and packages the config names (`runtime_env.working_dir`,
/// `pip`), not the image: replica pods fetch the working_dir from the head (content-named, into
/// their own cache, as Ray's workers fetch packages from the head) and build the pip
/// environment themselves; their image holds neither.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replica_pods_fetch_the_working_dir_and_build_the_environment() {
    let server = Arc::new(FakeApiServer::start().await);
    let owner = owner_head_pod(&server);
    let _kubelet = replica_kubelet(&server);
    let state = TempFile::new("state.json", "");
    std::fs::remove_file(&state.path).unwrap();
    let [head_cache, pod_cache, pod_dir] = ["head-cache", "pod-cache", "pod-dir"].map(|name| {
        let file = TempFile::new(name, "");
        std::fs::remove_file(&file.path).unwrap();
        file
    });
    std::fs::create_dir_all(&pod_dir.path).unwrap();
    let python = python::interpreter();
    let template = json!({"spec": {"containers": [{
        "name": "replica",
        "image": "photon-python:test",
        "workingDir": pod_dir.path.display().to_string(),
        "env": [
            {"name": "PHOTON_PYTHON", "value": python.display().to_string()},
            {"name": "PHOTON_CACHE_DIR", "value": pod_cache.path.display().to_string()}
        ]
    }]}});
    let mut env = python::env();
    env.push(("PHOTON_CACHE_DIR".to_string(), head_cache.path.display().to_string()));
    let code = python::apps_dir().join("lifecycle");
    let head = kubernetes_head_with(&server, &state, free_port(), &owner, &template, None, &env);
    let config = json!({"applications": [{"name": "six", "route_prefix": "/six", "import_path": "uses_six:app",
        "runtime_env": {"working_dir": format!("local://{}", code.display()), "pip": ["six==1.17.0"]},
        "deployments": [{"name": "versions", "ray_actor_options": {"num_cpus": 0.1}}]}]});
    put_config(&head.rest, &config.to_string()).await;
    eventually(Duration::from_secs(300), "the application RUNNING", || {
        let rest = head.rest.clone();
        async move {
            let v: Value =
                serde_json::from_slice(&get(&rest, "/api/serve/applications/").await.body).unwrap_or_default();
            v["applications"]["six"]["status"] == "RUNNING"
        }
    })
    .await;
    let reply = get(&head.http, "/six").await;
    assert_eq!((reply.status, reply.text()), (200, r#"{"six":"1.17.0","fastapi_from_base":"fastapi"}"#.to_string()));

    // The pod's spec names the code as a package; the pod's own cache got it, and an
    // environment of its own.
    let pods = replica_pods(&server);
    let env_of = |pod: &Value, name: &str| {
        pod["spec"]["containers"][0]["env"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == name)
            .map(|e| e["value"].clone())
    };
    let spec: Value =
        serde_json::from_str(env_of(&pods[0], photon_python::CODE_ENV).unwrap().as_str().unwrap()).unwrap();
    let working_dir = spec["working_dir"].as_str().unwrap();
    assert!(working_dir.starts_with("package:snapshots/") && working_dir.ends_with("/lifecycle"), "{spec}");
    let fetched = pod_cache.path.join(working_dir.trim_start_matches("package:"));
    assert!(fetched.join("uses_six.py").is_file(), "{} was not fetched", fetched.display());
    let envs = std::fs::read_dir(pod_cache.path.join("envs")).unwrap().flatten().filter(|e| e.path().is_dir()).count();
    assert_eq!(envs, 1, "the pod made its environment");
    let _ = [head_cache, pod_cache, pod_dir].map(|f| std::fs::remove_dir_all(&f.path));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_pod_that_cannot_be_scheduled_says_why_in_the_status() {
    let server = Arc::new(FakeApiServer::start().await);
    let owner = owner_head_pod(&server);
    // No node has a GPU: pods that ask for one stay Pending, as the scheduler leaves them.
    let _kubelet = FakeKubelet::start(server.clone(), |pod| {
        if !pod["metadata"]["labels"]["photon.io/replica"].is_string() {
            PodOutcome::NoProcess
        } else if pod["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"].is_string() {
            PodOutcome::Unschedulable("0/3 nodes are available: 3 Insufficient nvidia.com/gpu.".into())
        } else {
            PodOutcome::Process(Box::new(run_container(pod, &photon_programs(), None).expect("replica process starts")))
        }
    });
    let state = TempFile::new("state.json", "");
    std::fs::remove_file(&state.path).unwrap();
    let head = kubernetes_head(&server, &state, free_port(), &owner);
    let config = FRUIT.replace(
        r#"{"name": "PearStand", "user_config": {"price": 1}, "ray_actor_options": {"num_cpus": 0.1}}"#,
        r#"{"name": "PearStand", "user_config": {"price": 1}, "ray_actor_options": {"num_cpus": 0.1, "num_gpus": 1}}"#,
    );
    assert_ne!(config, FRUIT);
    put_config(&head.rest, &config).await;
    eventually(Duration::from_secs(30), "PearStand's status naming the scheduler's reason", || {
        let rest = head.rest.clone();
        async move {
            let v: Value =
                serde_json::from_slice(&get(&rest, "/api/serve/applications/").await.body).unwrap_or_default();
            let pear = &v["applications"]["fruit_app"]["deployments"]["PearStand"];
            let message = pear["message"].as_str().unwrap_or_default();
            pear["status"] == "UPDATING"
                && message.contains("1 replica(s) that cannot be scheduled yet")
                && message.contains("Insufficient nvidia.com/gpu")
        }
    })
    .await;
    eventually(Duration::from_secs(30), "the other deployments HEALTHY, the application still DEPLOYING", || {
        let rest = head.rest.clone();
        async move {
            let v: Value =
                serde_json::from_slice(&get(&rest, "/api/serve/applications/").await.body).unwrap_or_default();
            let app = &v["applications"]["fruit_app"];
            app["status"] == "DEPLOYING"
                && ["MangoStand", "OrangeStand", "FruitMarket"]
                    .iter()
                    .all(|d| app["deployments"][d]["status"] == "HEALTHY")
        }
    })
    .await;
}

/// Heads on 127.0.0.1, one per cluster, registered by the fake kubelet as it starts them.
#[derive(Default, Clone)]
struct LocalHeads(Arc<Mutex<HashMap<String, (String, String)>>>);

impl LocalHeads {
    fn get(&self, cluster: &str) -> Option<(String, String)> {
        self.0.lock().unwrap().get(cluster).cloned()
    }
}

impl Addresses for LocalHeads {
    fn dashboard(&self, _ns: &str, cluster: &str, _port: i32) -> String {
        format!("http://{}", self.get(cluster).map(|a| a.0).unwrap_or_else(|| "127.0.0.1:1".into()))
    }
    fn head_proxy(&self, _ns: &str, cluster: &str, _ip: &str, _port: i32) -> String {
        format!("http://{}", self.get(cluster).map(|a| a.1).unwrap_or_else(|| "127.0.0.1:1".into()))
    }
}

/// A `photon start` standing in for a head pod's container.
struct HeadProcess(Photon);

impl PodProcess for HeadProcess {
    fn exited(&mut self) -> Option<(i32, String)> {
        self.0.exit_code().map(|code| (code, String::new()))
    }
    fn terminate(&mut self) {
        signal(self.0.pid(), nix::sys::signal::Signal::SIGTERM);
    }
    fn kill(&mut self) {
        signal(self.0.pid(), nix::sys::signal::Signal::SIGKILL);
    }
}

const MATH: &str = r#"applications:
  - name: math_app
    import_path: conditional_dag.serve_dag
    route_prefix: /calc
    deployments:
      - name: Adder
        user_config: {increment: 3}
        ray_actor_options: {num_cpus: 0.1}
      - name: Multiplier
        user_config: {factor: 5}
        ray_actor_options: {num_cpus: 0.1}
      - name: Router
"#;

fn photon_service(name: &str) -> Value {
    let sample = include_str!("../deploy/kubernetes/samples/photon-service.sample.yaml");
    let mut svc: Value = serde_yaml_ng::from_str(sample).unwrap();
    svc["metadata"]["name"] = json!(name);
    svc["spec"]["serveConfigV2"] = json!(MATH);
    svc["spec"]["rayClusterDeletionDelaySeconds"] = json!(2);
    svc
}

async fn status(api: &Api<PhotonService>, name: &str) -> Value {
    api.get_opt(name).await.unwrap().map(|s| serde_json::to_value(s.status).unwrap()).unwrap_or(Value::Null)
}

fn condition(status: &Value, type_: &str) -> (String, String) {
    let c =
        status["conditions"].as_array().into_iter().flatten().find(|c| c["type"] == type_).cloned().unwrap_or_default();
    (c["status"].as_str().unwrap_or_default().into(), c["reason"].as_str().unwrap_or_default().into())
}

/// How many times an event with this reason was reported (a repeated event is one object
/// whose `series.count` grows).
fn events(server: &FakeApiServer, reason: &str) -> u64 {
    server
        .objects(&Collection::of("events.k8s.io", "v1", "events"), Some(NS), "")
        .iter()
        .filter(|e| e["reason"] == reason)
        .map(|e| e["series"]["count"].as_u64().unwrap_or(1))
        .sum()
}

fn selector_cluster(server: &FakeApiServer, service: &str) -> Option<String> {
    server.object(&Collection::services(), NS, service)?["spec"]["selector"]["ray.io/cluster"]
        .as_str()
        .map(str::to_string)
}

async fn wait_status(api: &Api<PhotonService>, name: &str, what: &str, check: impl Fn(&Value) -> bool) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let s = status(api, name).await;
        if check(&s) {
            return s;
        }
        assert!(std::time::Instant::now() < deadline, "timed out waiting for {what}; status: {s:#}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_creates_updates_upgrades_and_deletes_a_photon_service() {
    let server = Arc::new(FakeApiServer::start().await);
    let heads = LocalHeads::default();
    let registry = heads.clone();
    let secrets = server.clone();
    let _kubelet = FakeKubelet::start(server.clone(), move |pod| {
        let labels = &pod["metadata"]["labels"];
        if labels["ray.io/node-type"] != "head" {
            return PodOutcome::NoProcess;
        }
        let cluster = labels["ray.io/cluster"].as_str().unwrap().to_string();
        // The head container's environment from the cluster's Secret, as the kubelet resolves
        // `secretKeyRef`; with the REST token there, `photon start` authenticates its REST API.
        let mut env = vec![("RAY_AUTH_MODE".to_string(), String::new())];
        for var in pod["spec"]["containers"][0]["env"].as_array().unwrap() {
            let Some(key) = var["valueFrom"]["secretKeyRef"].as_object() else { continue };
            // The operator makes the Secret before the pod; the test checks it below, and a
            // kubelet thread that panicked here would only hide what went wrong.
            let Some(secret) = secrets.object(&Collection::of("", "v1", "secrets"), NS, key["name"].as_str().unwrap())
            else {
                continue;
            };
            let secret: k8s_openapi::api::core::v1::Secret = serde_json::from_value(secret).unwrap();
            let value = secret.data.unwrap_or_default().remove(key["key"].as_str().unwrap()).unwrap_or_default();
            env.push((var["name"].as_str().unwrap().to_string(), String::from_utf8(value.0).unwrap()));
        }
        let head = Photon::spawn_with_env(
            &["start", "--http-port", "0", "--dashboard-port", "0", "--http-host", "127.0.0.1"].map(Into::into),
            &env,
            true,
            true,
        );
        registry.0.lock().unwrap().insert(cluster, (head.rest.clone(), head.http.clone()));
        PodOutcome::Process(Box::new(HeadProcess(head)))
    });
    let client = server.client();
    let operator = tokio::spawn(photon_operator::run(
        client.clone(),
        OperatorSettings {
            image: "photon:test".into(),
            builtin_import_paths: photon_replica::builtin_registry()
                .import_paths()
                .into_iter()
                .map(Into::into)
                .collect(),
            ..Default::default()
        },
        Arc::new(heads.clone()),
        Some(NS.into()),
    ));
    let api: Api<PhotonService> = Api::namespaced(client.clone(), NS);

    // Bad input: the status names the field, and nothing is made.
    let mut bad = photon_service("bad");
    bad["spec"]["upgradeStrategy"] = json!({"type": "Sometimes"});
    api.create(&PostParams::default(), &serde_json::from_value(bad).unwrap()).await.unwrap();
    let s = wait_status(&api, "bad", "ValidationFailed", |s| condition(s, "Ready").1 == "ValidationFailed").await;
    let message = s["conditions"].as_array().unwrap().iter().find(|c| c["type"] == "Ready").unwrap()["message"].clone();
    assert!(message.as_str().unwrap().starts_with("spec.upgradeStrategy.type"), "{message}");
    api.delete("bad", &DeleteParams::default()).await.unwrap();

    // Create: a cluster, Services, status Running.
    api.create(&PostParams::default(), &serde_json::from_value(photon_service("fruit")).unwrap()).await.unwrap();
    let s = wait_status(&api, "fruit", "Running", |s| s["serviceStatus"] == "Running").await;
    let first = s["activeServiceStatus"]["rayClusterName"].as_str().unwrap().to_string();
    assert!(first.starts_with("fruit-") && first.len() == "fruit-".len() + 5, "{first}");
    assert_eq!(s["activeServiceStatus"]["applicationStatuses"]["math_app"]["status"], "RUNNING", "{s:#}");
    assert_eq!(condition(&s, "Ready"), ("True".into(), "NonZeroServeEndpoints".into()));
    assert_eq!(condition(&s, "UpgradeInProgress"), ("False".into(), "NoPendingCluster".into()));
    assert!(s["numServeEndpoints"].as_i64().unwrap() >= 1);
    assert_eq!(s["observedGeneration"], 1);
    assert!(s["pendingServiceStatus"]["rayClusterName"].is_null());
    let pods = server.objects(&Collection::pods(), Some(NS), &format!("ray.io/cluster={first}"));
    assert_eq!(names(&pods), BTreeSet::from([format!("{first}-head"), format!("{first}-small-group-worker-0")]));
    assert_eq!(selector_cluster(&server, "fruit-serve-svc").as_deref(), Some(first.as_str()));
    assert_eq!(selector_cluster(&server, "fruit-head-svc").as_deref(), Some(first.as_str()));
    let serve = server.object(&Collection::services(), NS, "fruit-serve-svc").unwrap();
    assert_eq!(serve["spec"]["ports"][0]["port"], 8000);
    assert_eq!(serve["spec"]["selector"]["ray.io/serve"], "true");
    assert!(server.object(&Collection::services(), NS, &format!("{first}-head-svc")).is_some());
    assert_eq!(events(&server, "UpdatedServeApplications"), 1);
    let head_http = heads.get(&first).unwrap().1;
    let reply = post_json(&head_http, "/calc", r#"["MUL", 3]"#).await;
    assert_eq!(reply.text(), "15 pizzas please!");
    // The cluster's credentials: a Secret named as KubeRay's, read by the head and the proxies;
    // the head's REST API takes its token only (the operator presented it to deploy).
    let secret = server.object(&Collection::of("", "v1", "secrets"), NS, &first).expect("the cluster's Secret");
    let keys: BTreeSet<&str> = secret["data"].as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(keys, BTreeSet::from(["auth_token", "cluster_token"]));
    let secret_refs = |pod: &str| -> BTreeSet<String> {
        let pod = server.object(&Collection::pods(), NS, pod).unwrap();
        pod["spec"]["containers"][0]["env"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["valueFrom"]["secretKeyRef"]["name"] == first.as_str())
            .map(|e| e["name"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(
        secret_refs(&format!("{first}-head")),
        BTreeSet::from(["PHOTON_CLUSTER_TOKEN".into(), "RAY_AUTH_TOKEN".into()])
    );
    assert_eq!(secret_refs(&format!("{first}-small-group-worker-0")), BTreeSet::from(["PHOTON_CLUSTER_TOKEN".into()]));
    // Who may reach the service's pods: each other, anyone on the serve port, the operator on
    // the REST API; every pod of the service (head, proxies, replicas) carries the selector.
    let policy = server
        .object(&Collection::of("networking.k8s.io", "v1", "networkpolicies"), NS, "fruit-photon")
        .expect("the service's NetworkPolicy");
    assert_eq!(policy["spec"]["podSelector"]["matchLabels"], json!({"photon.io/service": "fruit"}));
    let rules = policy["spec"]["ingress"].as_array().unwrap();
    assert_eq!(rules[0]["from"][0]["podSelector"]["matchLabels"], json!({"photon.io/service": "fruit"}));
    assert_eq!(rules[1]["ports"], json!([{"port": 8000, "protocol": "TCP"}]));
    assert!(rules[1].get("from").is_none(), "the serve port is open to all");
    assert_eq!(rules[2]["ports"], json!([{"port": 8265, "protocol": "TCP"}]));
    for pod in [format!("{first}-head"), format!("{first}-small-group-worker-0")] {
        let labels = &server.object(&Collection::pods(), NS, &pod).unwrap()["metadata"]["labels"];
        assert_eq!(labels["photon.io/service"], "fruit", "{pod}");
    }
    let unauthenticated = request(&heads.get(&first).unwrap().0, "GET", "/api/serve/applications/", &[], b"").await;
    assert_eq!(unauthenticated.status, 401, "{}", unauthenticated.text());
    // The head's proxy is healthy, so it takes serve traffic.
    eventually(Duration::from_secs(10), "head pod labelled ray.io/serve=true", || {
        let serving = server.object(&Collection::pods(), NS, &format!("{first}-head")).unwrap()["metadata"]["labels"]
            ["ray.io/serve"]
            == "true";
        async move { serving }
    })
    .await;

    // serveConfigV2 change: one PUT to the running cluster, no new pods.
    let pods_before = uids(&server.objects(&Collection::pods(), Some(NS), ""));
    let patch = json!({"spec": {"serveConfigV2": MATH.replace("factor: 5", "factor: 7")}});
    api.patch("fruit", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    eventually(Duration::from_secs(30), "the new factor served", || {
        let http = head_http.clone();
        async move { post_json(&http, "/calc", r#"["MUL", 3]"#).await.text() == "21 pizzas please!" }
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(events(&server, "UpdatedServeApplications"), 2, "one PUT for the change");
    assert_eq!(uids(&server.objects(&Collection::pods(), Some(NS), "")), pods_before, "no pod was made or removed");
    let s = status(&api, "fruit").await;
    assert_eq!(s["activeServiceStatus"]["rayClusterName"], first.as_str());
    assert_eq!(s["observedGeneration"], 2);

    // Cluster change: a pending cluster, the switch, then the old cluster goes.
    let patch = json!({"spec": {"rayClusterConfig": {"headGroupSpec": {"template": {"metadata": {"labels": {"tier": "v2"}}}}}}});
    api.patch("fruit", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    let s =
        wait_status(&api, "fruit", "a pending cluster", |s| s["pendingServiceStatus"]["rayClusterName"].is_string())
            .await;
    let second = s["pendingServiceStatus"]["rayClusterName"].as_str().unwrap().to_string();
    assert_ne!(second, first);
    // Traffic stays on the first cluster until the second is ready. Under load the second can
    // become ready between the status read above and the selector read here: then the switch
    // must be the promotion (the operator points the Service first, then makes the cluster
    // active, checked next), never traffic sent to a cluster left pending.
    let selected = selector_cluster(&server, "fruit-serve-svc");
    assert!([first.as_str(), second.as_str()].contains(&selected.as_deref().unwrap_or_default()), "{selected:?}");
    let s = wait_status(&api, "fruit", "the new cluster promoted", |s| {
        s["activeServiceStatus"]["rayClusterName"] == second.as_str()
    })
    .await;
    assert!(s["pendingServiceStatus"]["rayClusterName"].is_null(), "{s:#}");
    assert_eq!(selector_cluster(&server, "fruit-serve-svc").as_deref(), Some(second.as_str()));
    assert_eq!(selector_cluster(&server, "fruit-head-svc").as_deref(), Some(second.as_str()));
    let new_head = server.object(&Collection::pods(), NS, &format!("{second}-head")).unwrap();
    assert_eq!(new_head["metadata"]["labels"]["tier"], "v2");
    eventually(Duration::from_secs(30), "the old cluster deleted after the delay", || {
        let gone = server.objects(&Collection::pods(), Some(NS), &format!("ray.io/cluster={first}")).is_empty()
            && server.object(&Collection::services(), NS, &format!("{first}-head-svc")).is_none();
        async move { gone }
    })
    .await;
    let s = wait_status(&api, "fruit", "Running on the new cluster", |s| s["serviceStatus"] == "Running").await;
    assert_eq!(condition(&s, "UpgradeInProgress"), ("False".into(), "NoPendingCluster".into()));
    let reply = post_json(&heads.get(&second).unwrap().1, "/calc", r#"["MUL", 3]"#).await;
    assert_eq!(reply.text(), "21 pizzas please!");

    // A lost head pod (its node went away, say) is made again and gets the serve config again.
    let puts = events(&server, "UpdatedServeApplications");
    let old_head =
        server.object(&Collection::pods(), NS, &format!("{second}-head")).unwrap()["metadata"]["uid"].clone();
    server.delete(&Collection::pods(), NS, &format!("{second}-head")).unwrap();
    eventually(Duration::from_secs(30), "a new head pod with the applications again", || {
        let head = server.object(&Collection::pods(), NS, &format!("{second}-head"));
        let remade = head.is_some_and(|h| h["metadata"]["uid"] != old_head);
        let resubmitted = events(&server, "UpdatedServeApplications") > puts;
        async move { remade && resubmitted }
    })
    .await;
    eventually(Duration::from_secs(30), "the new head serving", || {
        let http = heads.get(&second).unwrap().1;
        async move { post_json(&http, "/calc", r#"["MUL", 3]"#).await.text() == "21 pizzas please!" }
    })
    .await;

    // Deletion: everything the service made goes, then the object.
    api.delete("fruit", &DeleteParams::default()).await.unwrap();
    eventually(Duration::from_secs(30), "everything cleaned up", || {
        let left = server.object(&Collection::of("photon.io", "v1", "photonservices"), NS, "fruit").is_some()
            || !server.objects(&Collection::pods(), Some(NS), "").is_empty()
            || !server.objects(&Collection::services(), Some(NS), "").is_empty()
            || !server.objects(&Collection::of("", "v1", "serviceaccounts"), Some(NS), "").is_empty()
            || !server.objects(&Collection::of("", "v1", "secrets"), Some(NS), "").is_empty()
            || !server.objects(&Collection::of("networking.k8s.io", "v1", "networkpolicies"), Some(NS), "").is_empty();
        async move { !left }
    })
    .await;
    operator.abort();
}

/// An operator against a fake API server whose kubelet runs no processes: heads never
/// answer, so services stay initializing.
async fn operator_without_heads() -> (Arc<FakeApiServer>, FakeKubelet, tokio::task::JoinHandle<()>, Api<PhotonService>)
{
    let server = Arc::new(FakeApiServer::start().await);
    let kubelet = FakeKubelet::start(server.clone(), |_| PodOutcome::NoProcess);
    let client = server.client();
    let operator = tokio::spawn(photon_operator::run(
        client.clone(),
        OperatorSettings::default(),
        Arc::new(LocalHeads::default()),
        Some(NS.into()),
    ));
    (server, kubelet, operator, Api::namespaced(client, NS))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_head_pod_is_made_again() {
    let (server, _kubelet, operator, api) = operator_without_heads().await;
    let client = server.client();
    // Invalid first: nothing is made; once fixed, the service starts as a new one.
    let mut lone = photon_service("lone");
    lone["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]["minReplicas"] = json!(9);
    api.create(&PostParams::default(), &serde_json::from_value(lone).unwrap()).await.unwrap();
    let s = wait_status(&api, "lone", "ValidationFailed", |s| condition(s, "Ready").1 == "ValidationFailed").await;
    assert!(
        s.to_string().contains("spec.rayClusterConfig.workerGroupSpecs[0]: minReplicas (9) must be ≤ maxReplicas (5)"),
        "{s:#}"
    );
    assert!(server.objects(&Collection::pods(), Some(NS), "").is_empty());
    let fix = json!({"spec": {"rayClusterConfig": {"workerGroupSpecs": [{"groupName": "small-group", "replicas": 1, "minReplicas": 1, "maxReplicas": 5,
        "rayStartParams": {}, "template": {"spec": {"containers": [{"name": "ray-worker", "image": "rayproject/ray:2.52.0"}]}}}]}}});
    api.patch("lone", &PatchParams::default(), &Patch::Merge(&fix)).await.unwrap();
    let s = wait_status(&api, "lone", "a pending cluster", |s| s["pendingServiceStatus"]["rayClusterName"].is_string())
        .await;
    let cluster = s["pendingServiceStatus"]["rayClusterName"].as_str().unwrap().to_string();
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    let head = format!("{cluster}-head");
    eventually(Duration::from_secs(20), "the head pod", || {
        let pods = pods.clone();
        let head = head.clone();
        async move { pods.get_opt(&head).await.unwrap().is_some() }
    })
    .await;
    let uid = pods.get(&head).await.unwrap().metadata.uid;
    pods.delete(&head, &DeleteParams::default()).await.unwrap();
    eventually(Duration::from_secs(20), "a new head pod", || {
        let pods = pods.clone();
        let head = head.clone();
        let uid = uid.clone();
        async move { pods.get_opt(&head).await.unwrap().is_some_and(|p| p.metadata.uid != uid) }
    })
    .await;
    // The head never answers here (no process), so the service stays initializing...
    let s = status(&api, "lone").await;
    assert_eq!(condition(&s, "Ready"), ("False".into(), "Initializing".into()));
    // ...until its ray.io/initializing-timeout: then it fails for good and its cluster goes.
    let patch = json!({"metadata": {"annotations": {"ray.io/initializing-timeout": "1s"}}});
    api.patch("lone", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    let s =
        wait_status(&api, "lone", "InitializingTimeout", |s| condition(s, "Ready").1 == "InitializingTimeout").await;
    assert!(
        s["pendingServiceStatus"]["rayClusterName"].is_null() && s["activeServiceStatus"]["rayClusterName"].is_null(),
        "{s:#}"
    );
    assert_eq!(events(&server, "RayServiceInitializingTimeout"), 1);
    eventually(Duration::from_secs(20), "the cluster deleted after the delay", || {
        let gone = server.objects(&Collection::pods(), Some(NS), &format!("ray.io/cluster={cluster}")).is_empty();
        async move { gone }
    })
    .await;
    operator.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suspend_deletes_every_cluster_and_resume_starts_a_new_one() {
    let (server, _kubelet, operator, api) = operator_without_heads().await;
    api.create(&PostParams::default(), &serde_json::from_value(photon_service("nap")).unwrap()).await.unwrap();
    let s = wait_status(&api, "nap", "a pending cluster", |s| s["pendingServiceStatus"]["rayClusterName"].is_string())
        .await;
    let first = s["pendingServiceStatus"]["rayClusterName"].as_str().unwrap().to_string();
    eventually(Duration::from_secs(20), "the cluster's pods", || {
        let n = server.objects(&Collection::pods(), Some(NS), &format!("ray.io/cluster={first}")).len();
        async move { n == 2 }
    })
    .await;

    let patch = json!({"spec": {"suspend": true}});
    api.patch("nap", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    let s = wait_status(&api, "nap", "suspended", |s| {
        condition(s, "Suspended") == ("True".into(), "SuspendComplete".into())
    })
    .await;
    assert_eq!(condition(&s, "Suspending"), ("False".into(), "SuspendComplete".into()));
    assert_eq!(condition(&s, "Ready").0, "False");
    assert!(s["pendingServiceStatus"]["rayClusterName"].is_null());
    assert!(server.objects(&Collection::pods(), Some(NS), "").is_empty(), "every pod goes");

    let patch = json!({"spec": {"suspend": false}});
    api.patch("nap", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    let s = wait_status(&api, "nap", "resumed with a new cluster", |s| {
        s["pendingServiceStatus"]["rayClusterName"].as_str().is_some_and(|c| c != first)
    })
    .await;
    assert_eq!(condition(&s, "Suspended"), ("False".into(), "RayServiceResumed".into()));
    assert_eq!(condition(&s, "Ready"), ("False".into(), "Initializing".into()));
    operator.abort();
}
