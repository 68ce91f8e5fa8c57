//! **For tests only.** No Kubernetes API server can run on the machines the tests run on, so
//! this crate stands in for one: a real HTTP server on 127.0.0.1 that speaks the API server's
//! REST dialect for any resource path (core `/api/v1/...` and `/apis/GROUP/VERSION/...`),
//! keeps objects with uids, resource versions and generations, serves lists and watches
//! (newline-delimited events from a resource version), applies merge patches, honours
//! finalizers and `deletionTimestamp`, and garbage-collects dependents through owner references.
//! It also plays two controllers of kube-controller-manager that the tests lean on: the
//! EndpointSlice controller (one slice per Service, from the Ready pods its selector matches).
//!
//! [`kubelet::FakeKubelet`] plays the kubelet: it runs pods as local processes (or marks them
//! Running and Ready) and reports their ends in the pod status.
//!
//! What it does not do: admission, defaulting, validation against schemas (CI validates the
//! generated manifests with a schema validator instead), field selectors, server-side apply
//! semantics (an apply patch is treated as a merge patch), and scheduling.

pub mod kubelet;

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::Notify;

type Body = http_body_util::combinators::BoxBody<Bytes, Infallible>;

/// Where a kind lives: `group/version/plural` (`/v1/pods` for the core group).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Collection(pub String);

impl Collection {
    /// Core-group pods.
    pub fn pods() -> Self {
        Collection("/v1/pods".into())
    }
    /// Core-group services.
    pub fn services() -> Self {
        Collection("/v1/services".into())
    }
    /// A collection by group, version and plural (`""` for the core group).
    pub fn of(group: &str, version: &str, plural: &str) -> Self {
        Collection(format!("{group}/{version}/{plural}"))
    }
    fn plural(&self) -> &str {
        self.0.rsplit('/').next().unwrap_or_default()
    }
    fn api_version(&self) -> String {
        let mut parts = self.0.split('/');
        let group = parts.next().unwrap_or_default();
        let version = parts.next().unwrap_or_default();
        if group.is_empty() {
            version.to_string()
        } else {
            format!("{group}/{version}")
        }
    }
}

#[derive(Debug, Clone)]
struct Event {
    rv: u64,
    collection: Collection,
    namespace: String,
    kind: &'static str,
    object: Value,
}

#[derive(Default)]
struct Store {
    rv: u64,
    /// (collection, namespace, name) -> object.
    objects: BTreeMap<(Collection, String, String), Value>,
    history: Vec<Event>,
    /// Requests served, as `METHOD path` (for tests that count calls).
    requests: Vec<String>,
}

struct Shared {
    store: Mutex<Store>,
    changed: Notify,
}

/// The running fake API server.
pub struct FakeApiServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeApiServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn now_rfc3339() -> String {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

fn status_body(code: u16, reason: &str, message: String) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "message": message, "reason": reason, "code": code})
}

/// RFC 7396 JSON merge patch.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(p) => {
            if !target.is_object() {
                *target = json!({});
            }
            let t = target.as_object_mut().expect("made an object above");
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        other => *target = other.clone(),
    }
}

/// Does `labels` satisfy a label selector string (`k=v`, `k==v`, `k!=v`, `k`, `!k`, comma-joined)?
pub fn selector_matches(selector: &str, labels: &serde_json::Map<String, Value>) -> bool {
    selector.split(',').map(str::trim).filter(|t| !t.is_empty()).all(|term| {
        let get = |k: &str| labels.get(k.trim()).and_then(Value::as_str);
        if let Some((k, v)) = term.split_once("!=") {
            get(k) != Some(v.trim())
        } else if let Some((k, v)) = term.split_once("==").or_else(|| term.split_once('=')) {
            get(k) == Some(v.trim())
        } else if let Some(k) = term.strip_prefix('!') {
            get(k).is_none()
        } else {
            get(term).is_some()
        }
    })
}

fn labels_of(obj: &Value) -> serde_json::Map<String, Value> {
    obj.pointer("/metadata/labels").and_then(Value::as_object).cloned().unwrap_or_default()
}

fn list_kind(collection: &Collection, items: &[Value]) -> String {
    if let Some(kind) = items.first().and_then(|o| o.get("kind")).and_then(Value::as_str) {
        return format!("{kind}List");
    }
    let plural = collection.plural();
    let singular = plural
        .strip_suffix("es")
        .filter(|s| s.ends_with("ss") || s.ends_with("ch"))
        .unwrap_or_else(|| plural.strip_suffix('s').unwrap_or(plural));
    let mut c = singular.chars();
    let kind: String = c.next().map(|f| f.to_ascii_uppercase().to_string() + c.as_str()).unwrap_or_default();
    format!("{kind}List")
}

impl Store {
    fn bump(&mut self) -> u64 {
        self.rv += 1;
        self.rv
    }

    fn record(&mut self, collection: &Collection, namespace: &str, kind: &'static str, object: Value) {
        let rv = self.rv;
        self.history.push(Event { rv, collection: collection.clone(), namespace: namespace.into(), kind, object });
    }

    fn put(&mut self, collection: &Collection, namespace: &str, name: &str, mut object: Value, added: bool) -> Value {
        let rv = self.bump();
        object["metadata"]["resourceVersion"] = json!(rv.to_string());
        self.objects.insert((collection.clone(), namespace.into(), name.into()), object.clone());
        self.record(collection, namespace, if added { "ADDED" } else { "MODIFIED" }, object.clone());
        object
    }

    fn create(&mut self, collection: &Collection, namespace: &str, mut object: Value) -> Result<Value, Value> {
        let meta = object["metadata"].as_object().cloned().unwrap_or_default();
        let name = match meta.get("name").and_then(Value::as_str) {
            Some(n) if !n.is_empty() => n.to_string(),
            _ => match meta.get("generateName").and_then(Value::as_str) {
                Some(prefix) => {
                    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
                    let suffix: String = (0..5).map(|_| ALPHABET[fastrand::usize(..ALPHABET.len())] as char).collect();
                    format!("{prefix}{suffix}")
                }
                None => return Err(status_body(422, "Invalid", "metadata.name: Required value".into())),
            },
        };
        if self.objects.contains_key(&(collection.clone(), namespace.into(), name.clone())) {
            return Err(status_body(
                409,
                "AlreadyExists",
                format!("{} \"{name}\" already exists", collection.plural()),
            ));
        }
        let m = &mut object["metadata"];
        m["name"] = json!(name);
        if !namespace.is_empty() {
            m["namespace"] = json!(namespace);
        }
        m["uid"] = json!(format!("{:016x}-{:016x}", fastrand::u64(..), fastrand::u64(..)));
        m["creationTimestamp"] = json!(now_rfc3339());
        m["generation"] = json!(1);
        if object.get("apiVersion").is_none() {
            object["apiVersion"] = json!(collection.api_version());
        }
        Ok(self.put(collection, namespace, &name, object, true))
    }

    /// Replaces an object (or just its status). Keeps identity fields; bumps `generation`
    /// when anything but metadata and status changed.
    fn replace(
        &mut self,
        collection: &Collection,
        namespace: &str,
        name: &str,
        mut object: Value,
        status_only: bool,
    ) -> Result<Value, Value> {
        let key = (collection.clone(), namespace.to_string(), name.to_string());
        let Some(current) = self.objects.get(&key).cloned() else {
            return Err(status_body(404, "NotFound", format!("{} \"{name}\" not found", collection.plural())));
        };
        if let Some(rv) = object.pointer("/metadata/resourceVersion").and_then(Value::as_str) {
            if rv != current["metadata"]["resourceVersion"].as_str().unwrap_or_default() {
                return Err(status_body(
                    409,
                    "Conflict",
                    format!(
                        "Operation cannot be fulfilled on {} \"{name}\": the object has been modified",
                        collection.plural()
                    ),
                ));
            }
        }
        if status_only {
            let mut updated = current.clone();
            updated["status"] = object.get("status").cloned().unwrap_or(Value::Null);
            object = updated;
        } else {
            // The status subresource: a plain update cannot change the status.
            match current.get("status") {
                Some(s) => object["status"] = s.clone(),
                None => {
                    if let Some(o) = object.as_object_mut() {
                        o.remove("status");
                    }
                }
            }
            for field in ["uid", "creationTimestamp", "generation", "deletionTimestamp"] {
                match current["metadata"].get(field) {
                    Some(v) => object["metadata"][field] = v.clone(),
                    None => {
                        if let Some(m) = object["metadata"].as_object_mut() {
                            m.remove(field);
                        }
                    }
                }
            }
            object["metadata"]["name"] = json!(name);
            if !namespace.is_empty() {
                object["metadata"]["namespace"] = json!(namespace);
            }
            let strip = |v: &Value| {
                let mut v = v.clone();
                if let Some(o) = v.as_object_mut() {
                    o.remove("metadata");
                    o.remove("status");
                }
                v
            };
            if strip(&object) != strip(&current) {
                let generation = current["metadata"]["generation"].as_i64().unwrap_or(1) + 1;
                object["metadata"]["generation"] = json!(generation);
            }
        }
        let finalizers_left =
            object.pointer("/metadata/finalizers").and_then(Value::as_array).is_some_and(|f| !f.is_empty());
        if object.pointer("/metadata/deletionTimestamp").is_some() && !finalizers_left {
            return Ok(self.remove(collection, namespace, name).unwrap_or(object));
        }
        Ok(self.put(collection, namespace, name, object, false))
    }

    /// Deletes an object: marks it when finalizers remain, else removes it and its dependents.
    fn delete(&mut self, collection: &Collection, namespace: &str, name: &str) -> Result<Value, Value> {
        let key = (collection.clone(), namespace.to_string(), name.to_string());
        let Some(current) = self.objects.get(&key).cloned() else {
            return Err(status_body(404, "NotFound", format!("{} \"{name}\" not found", collection.plural())));
        };
        let has_finalizers =
            current.pointer("/metadata/finalizers").and_then(Value::as_array).is_some_and(|f| !f.is_empty());
        if has_finalizers {
            if current.pointer("/metadata/deletionTimestamp").is_some() {
                return Ok(current);
            }
            let mut marked = current;
            marked["metadata"]["deletionTimestamp"] = json!(now_rfc3339());
            return Ok(self.put(collection, namespace, name, marked, false));
        }
        Ok(self.remove(collection, namespace, name).unwrap_or(current))
    }

    fn remove(&mut self, collection: &Collection, namespace: &str, name: &str) -> Option<Value> {
        let object = self.objects.remove(&(collection.clone(), namespace.to_string(), name.to_string()))?;
        self.bump();
        self.record(collection, namespace, "DELETED", object.clone());
        // Garbage collection (background propagation): dependents go too.
        let uid = object["metadata"]["uid"].as_str().unwrap_or_default().to_string();
        let dependents: Vec<(Collection, String, String)> = self
            .objects
            .iter()
            .filter(|(_, o)| {
                o.pointer("/metadata/ownerReferences")
                    .and_then(Value::as_array)
                    .is_some_and(|refs| refs.iter().any(|r| r["uid"].as_str() == Some(uid.as_str())))
            })
            .map(|(k, _)| k.clone())
            .collect();
        for (c, ns, n) in dependents {
            let _ = self.delete(&c, &ns, &n);
        }
        Some(object)
    }

    fn list(&self, collection: &Collection, namespace: Option<&str>, selector: &str) -> Vec<Value> {
        self.objects
            .iter()
            .filter(|((c, ns, _), o)| {
                c == collection && namespace.is_none_or(|want| want == ns) && selector_matches(selector, &labels_of(o))
            })
            .map(|(_, o)| o.clone())
            .collect()
    }

    /// The EndpointSlice controller: one slice per Service with a selector, listing the
    /// matching pods that have an IP, with their readiness.
    fn sync_endpoint_slices(&mut self) {
        let slices = Collection::of("discovery.k8s.io", "v1", "endpointslices");
        let services: Vec<Value> = self.list(&Collection::services(), None, "");
        for svc in services {
            let ns = svc["metadata"]["namespace"].as_str().unwrap_or_default().to_string();
            let svc_name = svc["metadata"]["name"].as_str().unwrap_or_default().to_string();
            let Some(selector) = svc.pointer("/spec/selector").and_then(Value::as_object) else { continue };
            if selector.is_empty() {
                continue;
            }
            let selector: String = selector
                .iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                .collect::<Vec<_>>()
                .join(",");
            let mut endpoints: Vec<Value> = self
                .list(&Collection::pods(), Some(&ns), &selector)
                .into_iter()
                .filter_map(|pod| {
                    let ip = pod.pointer("/status/podIP").and_then(Value::as_str)?.to_string();
                    let ready = pod.pointer("/metadata/deletionTimestamp").is_none()
                        && pod
                            .pointer("/status/conditions")
                            .and_then(Value::as_array)
                            .is_some_and(|cs| cs.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"));
                    Some(json!({
                        "addresses": [ip],
                        "conditions": {"ready": ready, "serving": ready, "terminating": false},
                        "targetRef": {"kind": "Pod", "namespace": ns, "name": pod["metadata"]["name"], "uid": pod["metadata"]["uid"]}
                    }))
                })
                .collect();
            endpoints.sort_by(|a, b| a["targetRef"]["name"].as_str().cmp(&b["targetRef"]["name"].as_str()));
            let slice_name = format!("{svc_name}-fake");
            let key = (slices.clone(), ns.clone(), slice_name.clone());
            let current = self.objects.get(&key).cloned();
            if current.as_ref().is_some_and(|c| c["endpoints"] == json!(endpoints)) {
                continue;
            }
            let mut slice = json!({
                "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                "metadata": {"name": slice_name, "namespace": ns,
                    "labels": {"kubernetes.io/service-name": svc_name, "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io"},
                    "ownerReferences": [{"apiVersion": "v1", "kind": "Service", "name": svc_name, "uid": svc["metadata"]["uid"], "controller": true, "blockOwnerDeletion": true}]},
                "addressType": "IPv4",
                "ports": svc.pointer("/spec/ports").cloned().unwrap_or(json!([])).as_array().cloned().unwrap_or_default()
                    .iter().map(|p| json!({"name": p["name"], "port": p.get("targetPort").filter(|t| t.is_number()).unwrap_or(&p["port"]), "protocol": "TCP"})).collect::<Vec<_>>(),
                "endpoints": endpoints,
            });
            match current {
                Some(c) => {
                    slice["metadata"] = c["metadata"].clone();
                    let _ = self.put(&slices, &ns, &slice_name, slice, false);
                }
                None => {
                    let _ = self.create(&slices, &ns, slice);
                }
            }
        }
        // Slices whose Service is gone.
        let orphans: Vec<(Collection, String, String)> = self
            .objects
            .iter()
            .filter(|((c, ns, _), o)| {
                c == &slices && {
                    let svc = o
                        .pointer("/metadata/labels/kubernetes.io~1service-name")
                        .and_then(Value::as_str)
                        .unwrap_or_default();
                    !self.objects.contains_key(&(Collection::services(), ns.clone(), svc.to_string()))
                }
            })
            .map(|(k, _)| k.clone())
            .collect();
        for (c, ns, n) in orphans {
            let _ = self.remove(&c, &ns, &n);
        }
    }
}

/// A parsed request path.
struct Target {
    collection: Collection,
    namespace: Option<String>,
    name: Option<String>,
    status: bool,
}

fn parse_path(path: &str) -> Option<Target> {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, version, rest) = match parts.as_slice() {
        ["api", version, rest @ ..] => ("", *version, rest),
        ["apis", group, version, rest @ ..] => (*group, *version, rest),
        _ => return None,
    };
    let (namespace, rest) = match rest {
        ["namespaces", ns, rest @ ..] if !rest.is_empty() => (Some(ns.to_string()), rest),
        rest => (None, rest),
    };
    let (plural, name, status) = match rest {
        [plural] => (*plural, None, false),
        [plural, name] => (*plural, Some(name.to_string()), false),
        [plural, name, "status"] => (*plural, Some(name.to_string()), true),
        _ => return None,
    };
    Some(Target { collection: Collection::of(group, version, plural), namespace, name, status })
}

fn json_response(code: StatusCode, value: &Value) -> Response<Body> {
    Response::builder()
        .status(code)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(value.to_string())).boxed())
        .expect("static response parts")
}

fn error_response(err: Value) -> Response<Body> {
    let code =
        err["code"].as_u64().and_then(|c| StatusCode::from_u16(c as u16).ok()).unwrap_or(StatusCode::BAD_REQUEST);
    json_response(code, &err)
}

fn query_params(uri: &http::Uri) -> BTreeMap<String, String> {
    uri.query()
        .unwrap_or_default()
        .split('&')
        .filter_map(|kv| kv.split_once('=').or(Some((kv, ""))))
        .filter(|(k, _)| !k.is_empty())
        .map(|(k, v)| (k.to_string(), percent_decode(v)))
        .collect()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                match u8::from_str_radix(std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("zz"), 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 3;
                        continue;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl FakeApiServer {
    /// Starts the server on an ephemeral port of 127.0.0.1.
    pub async fn start() -> FakeApiServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the fake API server");
        let addr = listener.local_addr().expect("bound address");
        let shared = Arc::new(Shared { store: Mutex::new(Store::default()), changed: Notify::new() });
        let serving = shared.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let shared = serving.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        let shared = shared.clone();
                        async move { Ok::<_, Infallible>(handle(shared, req).await) }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new())
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        FakeApiServer { addr, shared, task }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A kube client for this server (default namespace `default`).
    pub fn client(&self) -> kube::Client {
        let config = kube::Config::new(self.url().parse().expect("a valid URL"));
        kube::Client::try_from(config).expect("a client for the fake API server")
    }

    /// Writes a kubeconfig file pointing at this server, for processes (`KUBECONFIG`).
    pub fn write_kubeconfig(&self, path: &std::path::Path) {
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: {}\ncontexts:\n- name: fake\n  context:\n    cluster: fake\n    user: fake\n    namespace: default\ncurrent-context: fake\nusers:\n- name: fake\n  user: {{}}\n",
            self.url()
        );
        std::fs::write(path, text).expect("write the kubeconfig");
    }

    /// Objects of a collection in a namespace (`None`: all), matching a label selector.
    pub fn objects(&self, collection: &Collection, namespace: Option<&str>, selector: &str) -> Vec<Value> {
        self.shared.store.lock().unwrap_or_else(|e| e.into_inner()).list(collection, namespace, selector)
    }

    /// One object.
    pub fn object(&self, collection: &Collection, namespace: &str, name: &str) -> Option<Value> {
        let store = self.shared.store.lock().unwrap_or_else(|e| e.into_inner());
        store.objects.get(&(collection.clone(), namespace.to_string(), name.to_string())).cloned()
    }

    /// Changes the store as a client or a controller of the cluster would, then runs the
    /// EndpointSlice controller and wakes the watches.
    fn write<T>(&self, change: impl FnOnce(&mut Store) -> T) -> T {
        let mut store = self.shared.store.lock().unwrap_or_else(|e| e.into_inner());
        let result = change(&mut store);
        store.sync_endpoint_slices();
        drop(store);
        self.shared.changed.notify_waiters();
        result
    }

    /// Changes an object in place, as a controller of the cluster would (the kubelet writing
    /// a pod's status); returns false when it does not exist.
    pub fn update(
        &self,
        collection: &Collection,
        namespace: &str,
        name: &str,
        change: impl FnOnce(&mut Value),
    ) -> bool {
        self.write(|store| {
            let key = (collection.clone(), namespace.to_string(), name.to_string());
            let Some(mut object) = store.objects.get(&key).cloned() else { return false };
            change(&mut object);
            store.put(collection, namespace, name, object, false);
            true
        })
    }

    /// Creates an object as a client would.
    pub fn create(&self, collection: &Collection, namespace: &str, object: Value) -> Result<Value, Value> {
        self.write(|store| store.create(collection, namespace, object))
    }

    /// Deletes an object as a client would (finalizers and garbage collection apply).
    pub fn delete(&self, collection: &Collection, namespace: &str, name: &str) -> Result<Value, Value> {
        self.write(|store| store.delete(collection, namespace, name))
    }

    /// Every request served so far, as `METHOD /path` (no query).
    pub fn requests(&self) -> Vec<String> {
        self.shared.store.lock().unwrap_or_else(|e| e.into_inner()).requests.clone()
    }
}

async fn handle(shared: Arc<Shared>, req: Request<Incoming>) -> Response<Body> {
    let (parts, body) = req.into_parts();
    let Some(target) = parse_path(parts.uri.path()) else {
        return error_response(status_body(404, "NotFound", format!("the server could not find {}", parts.uri.path())));
    };
    let params = query_params(&parts.uri);
    let body = match body.collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => return error_response(status_body(400, "BadRequest", e.to_string())),
    };
    let parsed: Option<Value> = if body.is_empty() { None } else { serde_json::from_slice(&body).ok() };
    let ns = target.namespace.clone().unwrap_or_default();
    let content_type = parts.headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();

    if parts.method == Method::GET
        && target.name.is_none()
        && params.get("watch").is_some_and(|w| w == "true" || w == "1")
    {
        return watch(shared, target, params);
    }
    let mut store = shared.store.lock().unwrap_or_else(|e| e.into_inner());
    store.requests.push(format!("{} {}", parts.method, parts.uri.path()));
    let result: Result<(StatusCode, Value), Value> = match (&parts.method, &target.name) {
        (&Method::GET, None) => {
            let selector = params.get("labelSelector").cloned().unwrap_or_default();
            let items = store.list(&target.collection, target.namespace.as_deref(), &selector);
            Ok((
                StatusCode::OK,
                json!({"apiVersion": target.collection.api_version(), "kind": list_kind(&target.collection, &items),
                       "metadata": {"resourceVersion": store.rv.to_string()}, "items": items}),
            ))
        }
        (&Method::GET, Some(name)) => store
            .objects
            .get(&(target.collection.clone(), ns.clone(), name.clone()))
            .cloned()
            .map(|o| (StatusCode::OK, o))
            .ok_or_else(|| {
                status_body(404, "NotFound", format!("{} \"{name}\" not found", target.collection.plural()))
            }),
        (&Method::POST, None) => match parsed {
            Some(object) => store.create(&target.collection, &ns, object).map(|o| (StatusCode::CREATED, o)),
            None => Err(status_body(400, "BadRequest", "the request body is not JSON".into())),
        },
        (&Method::PUT, Some(name)) => match parsed {
            Some(object) => {
                store.replace(&target.collection, &ns, name, object, target.status).map(|o| (StatusCode::OK, o))
            }
            None => Err(status_body(400, "BadRequest", "the request body is not JSON".into())),
        },
        (&Method::PATCH, Some(name)) => match (parsed, content_type.contains("json-patch")) {
            (_, true) => {
                Err(status_body(415, "UnsupportedMediaType", "the fake API server takes merge patches only".into()))
            }
            (Some(patch), false) => {
                match store.objects.get(&(target.collection.clone(), ns.clone(), name.clone())).cloned() {
                    None => Err(status_body(
                        404,
                        "NotFound",
                        format!("{} \"{name}\" not found", target.collection.plural()),
                    )),
                    Some(mut object) => {
                        if let Some(m) = object["metadata"].as_object_mut() {
                            m.remove("resourceVersion");
                        }
                        merge_patch(&mut object, &patch);
                        store.replace(&target.collection, &ns, name, object, target.status).map(|o| (StatusCode::OK, o))
                    }
                }
            }
            (None, false) => Err(status_body(400, "BadRequest", "the patch is not JSON".into())),
        },
        (&Method::DELETE, Some(name)) => store.delete(&target.collection, &ns, name).map(|o| (StatusCode::OK, o)),
        _ => Err(status_body(405, "MethodNotAllowed", format!("{} is not supported here", parts.method))),
    };
    if parts.method != Method::GET {
        store.sync_endpoint_slices();
    }
    drop(store);
    shared.changed.notify_waiters();
    match result {
        Ok((code, value)) => json_response(code, &value),
        Err(err) => error_response(err),
    }
}

/// Streams the events of a collection after `resourceVersion`, then new ones as they come,
/// until `timeoutSeconds` (default 5 minutes).
fn watch(shared: Arc<Shared>, target: Target, params: BTreeMap<String, String>) -> Response<Body> {
    let from: u64 = params.get("resourceVersion").and_then(|v| v.parse().ok()).unwrap_or(0);
    let selector = params.get("labelSelector").cloned().unwrap_or_default();
    let timeout = params.get("timeoutSeconds").and_then(|v| v.parse().ok()).unwrap_or(300u64);
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, Infallible>>(64);
    tokio::spawn(async move {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(timeout);
        let mut next = 0usize;
        loop {
            let notified = shared.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let batch: Vec<Value> = {
                let store = shared.store.lock().unwrap_or_else(|e| e.into_inner());
                let events = &store.history[next.min(store.history.len())..];
                next = store.history.len();
                events
                    .iter()
                    .filter(|e| {
                        e.rv > from
                            && e.collection == target.collection
                            && target.namespace.as_deref().is_none_or(|ns| ns == e.namespace)
                            && selector_matches(&selector, &labels_of(&e.object))
                    })
                    .map(|e| json!({"type": e.kind, "object": e.object}))
                    .collect()
            };
            for event in batch {
                if tx.send(Ok(Frame::data(Bytes::from(format!("{event}\n"))))).await.is_err() {
                    return;
                }
            }
            tokio::select! {
                _ = &mut notified => {}
                _ = tokio::time::sleep_until(deadline) => return,
                _ = tx.closed() => return,
            }
        }
    });
    let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "application/json")
        .body(BodyExt::boxed(StreamBody::new(stream)))
        .expect("static response parts")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_patch_follows_rfc_7396() {
        let mut v = json!({"a": {"b": 1, "c": 2}, "d": [1]});
        merge_patch(&mut v, &json!({"a": {"b": null, "e": 3}, "d": [2, 3]}));
        assert_eq!(v, json!({"a": {"c": 2, "e": 3}, "d": [2, 3]}));
    }

    #[test]
    fn selectors_match_equality_and_existence() {
        let labels = json!({"a": "1", "b": "2"}).as_object().cloned().unwrap();
        assert!(selector_matches("a=1,b", &labels));
        assert!(selector_matches("a==1,!c,b!=3", &labels));
        assert!(!selector_matches("a=2", &labels));
        assert!(!selector_matches("c", &labels));
    }

    #[test]
    fn paths_name_collection_namespace_and_object() {
        let t = parse_path("/apis/photon.io/v1/namespaces/ns/photonservices/x/status").unwrap();
        assert_eq!(t.collection, Collection::of("photon.io", "v1", "photonservices"));
        assert_eq!((t.namespace.as_deref(), t.name.as_deref(), t.status), (Some("ns"), Some("x"), true));
        let t = parse_path("/api/v1/pods").unwrap();
        assert_eq!((t.collection, t.namespace, t.name), (Collection::pods(), None, None));
    }

    #[test]
    fn deleting_an_owner_removes_its_dependents_and_finalizers_hold_deletion() {
        let mut s = Store::default();
        let owner = s.create(&Collection::pods(), "ns", json!({"metadata": {"name": "head"}})).unwrap();
        let uid = owner["metadata"]["uid"].clone();
        s.create(&Collection::pods(), "ns", json!({"metadata": {"name": "r1", "ownerReferences": [{"uid": uid}]}}))
            .unwrap();
        s.create(&Collection::pods(), "ns", json!({"metadata": {"name": "keep", "finalizers": ["x"]}})).unwrap();
        s.delete(&Collection::pods(), "ns", "head").unwrap();
        assert_eq!(s.list(&Collection::pods(), Some("ns"), "").len(), 1);
        let marked = s.delete(&Collection::pods(), "ns", "keep").unwrap();
        assert!(marked["metadata"]["deletionTimestamp"].is_string());
        let mut cleared = marked.clone();
        cleared["metadata"]["finalizers"] = json!([]);
        s.replace(&Collection::pods(), "ns", "keep", cleared, false).unwrap();
        assert!(s.list(&Collection::pods(), Some("ns"), "").is_empty());
    }
}
