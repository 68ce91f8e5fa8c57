//! The Ray dashboard's serve REST API (spec/ray-serve.md section 4), so Ray's CLI and KubeRay
//! can drive Photon: `GET/PUT/DELETE /api/serve/applications/` and `GET /api/ray/version`,
//! behind Ray's token authentication when it is on (`auth`).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{json, Map, Value};
use tokio::net::TcpListener;

use photon_router::guard::{collect_body, BodyError, ConnectionGuard, ConnectionLimits, HEAD_TIMEOUT};

use crate::actor::ControllerHandle;
use crate::auth::RestAuth;
use crate::status::InstanceStatus;

/// The Ray version Photon answers as (the REST contract it follows).
pub const RAY_VERSION: &str = "2.60.0";

/// Facts about this instance that the GET response reports.
#[derive(Debug, Clone)]
pub struct InstanceInfo {
    /// Stable id of this node (hex).
    pub node_id: String,
    /// Its IP.
    pub node_ip: String,
    /// `proxy_location` the instance started with.
    pub proxy_location: String,
    /// `http_options` the instance started with (full dump).
    pub http_options: Value,
    /// `grpc_options` the instance started with (full dump).
    pub grpc_options: Value,
}

struct Rest {
    controller: ControllerHandle,
    info: InstanceInfo,
    auth: RestAuth,
    /// It listens on a loopback address: only loopback hosts are answered (`auth::host_check`).
    loopback_only: bool,
}

type Body = Full<Bytes>;

/// Connections the REST API keeps open at once (its callers are operators and their tools).
const MAX_CONNECTIONS: usize = 256;

/// The largest serve config a PUT may send (a config is a few kilobytes; the limit keeps one
/// request from holding the head's memory).
pub const MAX_CONFIG_BYTES: usize = 4 << 20;

fn respond(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Response<Body> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    respond(status, "text/plain; charset=utf-8", body)
}

fn json_response(v: &Value) -> Response<Body> {
    respond(StatusCode::OK, "application/json", v.to_string())
}

/// Serves the REST API on `listener` until the task is dropped; `auth` says who may call it.
pub async fn serve(listener: TcpListener, controller: ControllerHandle, info: InstanceInfo, auth: RestAuth) {
    let loopback_only = listener.local_addr().is_ok_and(|a| a.ip().is_loopback());
    let rest = Arc::new(Rest { controller, info, auth, loopback_only });
    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    let limits =
        ConnectionLimits::requests(MAX_CONNECTIONS, Duration::from_secs(photon_config::defaults::KEEP_ALIVE_TIMEOUT_S));
    let guard = ConnectionGuard::new(limits);
    photon_router::accept_loop(listener, move |stream| {
        let (rest, builder, guard) = (rest.clone(), builder.clone(), guard.clone());
        async move {
            let (stream, activity) = match guard.admit(stream) {
                Ok(admitted) => admitted,
                Err(stream) => return photon_router::guard::refuse_http(stream, MAX_CONNECTIONS).await,
            };
            let service = photon_router::guard::busy_while(activity, move |req| {
                let rest = rest.clone();
                async move { rest.handle(req).await }
            });
            let _ = builder.serve_connection(TokioIo::new(stream), service).await;
        }
    })
    .await
}

impl Rest {
    async fn handle(&self, req: Request<Incoming>) -> Response<Body> {
        let path = req.uri().path().to_string();
        if let Err(refused) = crate::auth::host_check(self.loopback_only, req.uri(), req.headers()) {
            return text(StatusCode::FORBIDDEN, refused);
        }
        if let Err(refused) = self.auth.check(&path, req.headers()) {
            return text(StatusCode::from_u16(refused.status).unwrap_or(StatusCode::FORBIDDEN), refused.body);
        }
        if let Err(refused) = crate::auth::browser_check(req.method(), &path, req.headers()) {
            return text(StatusCode::METHOD_NOT_ALLOWED, refused);
        }
        match (req.method().clone(), path.as_str()) {
            (Method::GET, "/api/authentication_mode") => {
                json_response(&json!({ "authentication_mode": self.auth.mode_name() }))
            }
            (Method::GET, "/api/ray/version") => json_response(&json!({
                "version": "4",
                "ray_version": RAY_VERSION,
                "ray_commit": concat!("photon-", env!("CARGO_PKG_VERSION")),
                "session_name": "photon",
            })),
            (Method::GET, "/api/gcs_healthz") | (Method::GET, "/api/healthz") => text(StatusCode::OK, "success"),
            (Method::POST, "/api/authenticate") => self.authenticate(req.headers()),
            (Method::GET, "/metrics") => match self.controller.metrics_text().await {
                Ok(metrics) => respond(StatusCode::OK, "text/plain; version=0.0.4; charset=utf-8", metrics),
                Err(e) => text(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
            },
            (Method::GET, "/api/serve/applications/") => self.get(req.uri().query()).await,
            (Method::PUT, "/api/serve/applications/") => self.put(req).await,
            (Method::DELETE, "/api/serve/applications/") => self.delete().await,
            (_, "/api/serve/applications/") => text(StatusCode::METHOD_NOT_ALLOWED, "Method not allowed"),
            _ => text(StatusCode::NOT_FOUND, format!("Not found: {path}")),
        }
    }

    /// Ray's login for a browser: a valid token in `Authorization` becomes an HttpOnly,
    /// same-site cookie that the browser's later requests carry.
    fn authenticate(&self, headers: &http::HeaderMap) -> Response<Body> {
        match self.auth.authenticate(headers) {
            Ok(token) => {
                let mut r = json_response(&json!({"status": "authenticated", "message": "Token is valid"}));
                let cookie = format!(
                    "{}={token}; HttpOnly; Max-Age={}; Path=/; SameSite=Strict",
                    crate::auth::COOKIE,
                    crate::auth::COOKIE_MAX_AGE_S
                );
                if let Ok(v) = HeaderValue::from_str(&cookie) {
                    r.headers_mut().insert(header::SET_COOKIE, v);
                }
                r
            }
            Err(refused) => text(StatusCode::from_u16(refused.status).unwrap_or(StatusCode::FORBIDDEN), refused.body),
        }
    }

    async fn get(&self, query: Option<&str>) -> Response<Body> {
        let api_type = query.and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("api_type=")));
        if let Some(t) = api_type {
            if t != "declarative" && t != "imperative" {
                return text(
                    StatusCode::BAD_REQUEST,
                    format!("Invalid 'api_type' value: '{t}'. Must be one of: imperative, declarative"),
                );
            }
        }
        match self.controller.status().await {
            // Every application Photon runs came from a config: none is imperative.
            Ok(status) => json_response(&self.details(&status, api_type != Some("imperative"))),
            Err(e) => text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("Failed to get a response from the controller. The GCS may be down, please retry later: {e}"),
            ),
        }
    }

    async fn put(&self, req: Request<Incoming>) -> Response<Body> {
        let body = match collect_body(req.into_body(), MAX_CONFIG_BYTES, HEAD_TIMEOUT).await {
            Ok(collected) => collected.bytes,
            Err(BodyError::TooLarge(_)) => {
                return text(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("the config is larger than the limit of {MAX_CONFIG_BYTES} bytes"),
                )
            }
            Err(e @ BodyError::Stalled(_)) => return text(StatusCode::REQUEST_TIMEOUT, e.to_string()),
            Err(e @ BodyError::OverBudget(_)) => return text(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
            Err(e) => return text(StatusCode::BAD_REQUEST, e.to_string()),
        };
        let doc: Value = match serde_json::from_slice(&body) {
            Ok(v) => v,
            Err(e) => return text(StatusCode::BAD_REQUEST, format!("request body is not valid JSON: {e}")),
        };
        let roots = photon_config::paths::PathRoots::from_env();
        let parsed = match photon_config::from_value(&doc)
            .and_then(|p| photon_config::paths::check_config_paths(&p.config, &roots).map(|()| p))
        {
            Ok(p) => p,
            Err(e) => return text(StatusCode::BAD_REQUEST, e.to_string()),
        };
        for w in &parsed.warnings {
            tracing::warn!("PUT /api/serve/applications/: {w}");
        }
        match self.controller.apply(parsed.config).await {
            Ok(()) => respond(StatusCode::OK, "text/plain; charset=utf-8", Bytes::new()),
            Err(e) => text(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
        }
    }

    async fn delete(&self) -> Response<Body> {
        let empty = match photon_config::from_value(&json!({ "applications": [] })) {
            Ok(p) => p.config,
            Err(e) => return text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        };
        match self.controller.apply(empty).await {
            Ok(()) => respond(StatusCode::OK, "text/plain; charset=utf-8", Bytes::new()),
            Err(e) => text(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
        }
    }

    /// `ServeInstanceDetails`, with only the fields Ray's client models accept.
    fn details(&self, status: &InstanceStatus, include_apps: bool) -> Value {
        let info = &self.info;
        let actor = |name: String| {
            json!({
                "node_id": info.node_id, "node_ip": info.node_ip, "node_instance_id": "",
                "actor_id": "", "actor_name": name, "worker_id": "", "log_file_path": "",
            })
        };
        let mut proxy = actor(format!("SERVE_PROXY_ACTOR-{}", info.node_id));
        proxy["status"] = json!("HEALTHY");
        let mut applications = Map::new();
        for app in status.applications.iter().filter(|_| include_apps) {
            let mut deployments = Map::new();
            for d in &app.deployments {
                let replicas: Vec<Value> = d
                    .replicas
                    .iter()
                    .map(|r| {
                        let mut v = actor(format!("SERVE_REPLICA::{}#{}#{}", app.name, d.name, r.replica_id));
                        v["replica_id"] = json!(r.replica_id);
                        v["state"] = json!(r.state);
                        v["pid"] = json!(r.pid);
                        v["start_time_s"] = json!(r.start_time_s);
                        // Photon's addition (Ray's client models ignore unknown replica fields).
                        v["last_health_check_error"] = json!(r.last_health_check_error);
                        v
                    })
                    .collect();
                deployments.insert(
                    d.name.clone(),
                    json!({
                        "name": d.name, "status": d.status, "status_trigger": d.status_trigger,
                        "message": d.message, "deployment_config": d.deployment_config,
                        "target_num_replicas": d.target_num_replicas,
                        "required_resources": d.required_resources,
                        "replicas": replicas, "recent_dead_replicas": [],
                    }),
                );
            }
            let topology = app.ingress.as_ref().map(|ingress| {
                let nodes: Map<String, Value> = app
                    .deployments
                    .iter()
                    .map(|d| {
                        let outbound: Vec<Value> = if &d.name == ingress {
                            app.deployments.iter().filter(|o| &o.name != ingress).map(|o| json!({"name": o.name, "app_name": app.name})).collect()
                        } else {
                            Vec::new()
                        };
                        (d.name.clone(), json!({"name": d.name, "app_name": app.name, "outbound_deployments": outbound, "is_ingress": &d.name == ingress}))
                    })
                    .collect();
                json!({"app_name": app.name, "nodes": nodes, "ingress_deployment": ingress})
            });
            applications.insert(
                app.name.clone(),
                json!({
                    "name": app.name, "route_prefix": app.route_prefix, "docs_path": app.docs_path,
                    "status": app.status, "message": app.message,
                    "last_deployed_time_s": app.last_deployed_time_s,
                    "deployed_app_config": app.deployed_app_config, "source": "declarative",
                    "deployments": deployments, "external_scaler_enabled": false,
                    "deployment_topology": topology,
                }),
            );
        }
        let mut proxies = Map::new();
        proxies.insert(info.node_id.clone(), proxy);
        json!({
            "controller_info": actor("SERVE_CONTROLLER_ACTOR".into()),
            "proxy_location": info.proxy_location,
            "http_options": info.http_options,
            "grpc_options": info.grpc_options,
            "proxies": proxies,
            "applications": applications,
            "target_capacity": null,
            "target_groups": [],
            "restores_unset_config_options": true,
        })
    }
}
