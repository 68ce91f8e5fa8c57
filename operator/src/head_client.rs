//! The operator's calls to a cluster's head: the Ray-compatible REST API (`GET`/`PUT
//! /api/serve/applications/`) and the head proxy's `/-/healthz`. Where those live is
//! [`Addresses`]' business: in a cluster, the head Service's DNS name and the head pod's IP;
//! in the tests, heads on 127.0.0.1.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

use crate::types::{AppStatus, DeploymentStatus};

/// How long one call may take (KubeRay: 2 s).
const TIMEOUT: Duration = Duration::from_secs(2);

/// Where a cluster's head answers.
pub trait Addresses: Send + Sync + 'static {
    /// Base URL of the cluster's REST API (`http://<cluster>-head-svc.<ns>.svc.<domain>:<port>`).
    fn dashboard(&self, namespace: &str, cluster: &str, port: i32) -> String;
    /// Base URL of the proxy in the head pod (`http://<pod IP>:<serve port>`).
    fn head_proxy(&self, namespace: &str, cluster: &str, pod_ip: &str, port: i32) -> String;
}

/// In-cluster addresses.
pub struct ClusterDns {
    /// The cluster DNS domain.
    pub domain: String,
}

impl Addresses for ClusterDns {
    fn dashboard(&self, namespace: &str, cluster: &str, port: i32) -> String {
        format!("http://{}.{namespace}.svc.{}:{port}", crate::cluster::cluster_head_service_name(cluster), self.domain)
    }
    fn head_proxy(&self, _namespace: &str, _cluster: &str, pod_ip: &str, port: i32) -> String {
        format!("http://{pod_ip}:{port}")
    }
}

/// Calls heads over HTTP.
#[derive(Clone)]
pub struct HeadClient {
    client: Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
}

impl Default for HeadClient {
    fn default() -> Self {
        HeadClient { client: Client::builder(TokioExecutor::new()).build_http() }
    }
}

/// Applications as the head reports them, with the fields KubeRay reads.
pub type Applications = BTreeMap<String, AppStatus>;

impl HeadClient {
    async fn call(
        &self,
        method: http::Method,
        url: &str,
        token: Option<&str>,
        body: Option<Vec<u8>>,
    ) -> Result<(u16, Bytes), String> {
        let mut request = http::Request::builder().method(method).uri(url);
        if let Some(token) = token {
            // KubeRay's header for the REST API's token.
            request = request.header("x-ray-authorization", format!("Bearer {token}"));
        }
        if body.is_some() {
            request = request.header("content-type", "application/json");
        }
        let request =
            request.body(Full::new(Bytes::from(body.unwrap_or_default()))).map_err(|e| format!("{url}: {e}"))?;
        let call = async {
            let response = self.client.request(request).await.map_err(|e| format!("{url}: {e}"))?;
            let status = response.status().as_u16();
            let body = response.into_body().collect().await.map_err(|e| format!("{url}: {e}"))?.to_bytes();
            Ok::<_, String>((status, body))
        };
        tokio::time::timeout(TIMEOUT, call).await.map_err(|_| format!("{url}: no answer within {TIMEOUT:?}"))?
    }

    /// `GET /api/serve/applications/?api_type=declarative`: the applications and their
    /// deployments' statuses (an application with an empty name is `default`, as in KubeRay).
    /// `token`: the REST API's token, when the cluster has one.
    pub async fn applications(&self, dashboard: &str, token: Option<&str>) -> Result<Applications, String> {
        let url = format!("{dashboard}/api/serve/applications/?api_type=declarative");
        let (status, body) = self.call(http::Method::GET, &url, token, None).await?;
        if !(200..300).contains(&status) {
            return Err(format!("{url}: HTTP {status}: {}", String::from_utf8_lossy(&body)));
        }
        let value: Value = serde_json::from_slice(&body).map_err(|e| format!("{url}: not JSON: {e}"))?;
        let text = |v: &Value| v.as_str().unwrap_or_default().to_string();
        let mut apps = Applications::new();
        for (name, app) in value["applications"].as_object().into_iter().flatten() {
            let deployments = app["deployments"]
                .as_object()
                .into_iter()
                .flatten()
                .map(|(d, dv)| {
                    (d.clone(), DeploymentStatus { status: text(&dv["status"]), message: text(&dv["message"]) })
                })
                .collect();
            let name = if name.is_empty() { "default".to_string() } else { name.clone() };
            apps.insert(
                name,
                AppStatus {
                    status: text(&app["status"]),
                    message: text(&app["message"]),
                    serve_deployment_statuses: deployments,
                },
            );
        }
        Ok(apps)
    }

    /// `PUT /api/serve/applications/` with the serve config as JSON.
    pub async fn put_applications(&self, dashboard: &str, token: Option<&str>, config: &Value) -> Result<(), String> {
        let url = format!("{dashboard}/api/serve/applications/");
        let (status, body) = self.call(http::Method::PUT, &url, token, Some(config.to_string().into_bytes())).await?;
        if (200..300).contains(&status) {
            Ok(())
        } else {
            Err(format!("{url}: HTTP {status}: {}", String::from_utf8_lossy(&body)))
        }
    }

    /// Whether the proxy answers `/-/healthz` with 200.
    pub async fn proxy_healthy(&self, proxy: &str) -> bool {
        matches!(self.call(http::Method::GET, &format!("{proxy}/-/healthz"), None, None).await, Ok((200, _)))
    }
}
