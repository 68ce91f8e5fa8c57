//! The CLI's side of the REST API: a small HTTP client for `--address` (plain HTTP, as Ray's
//! dashboard serves it) that presents the token of Ray's token authentication when there is one
//! (`photon_controller::auth`: `RAY_AUTH_TOKEN`, `RAY_AUTH_TOKEN_PATH`, `~/.ray/auth_token`).

use anyhow::{bail, Context};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

/// Default REST address, as Ray's CLI uses for its dashboard.
pub const DEFAULT_ADDRESS: &str = "http://127.0.0.1:8265";

/// Talks to one head's REST API.
pub struct RestClient {
    base: String,
    http: Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
    /// `Bearer <token>`, unless `RAY_AUTH_MODE=disabled` or no token is found.
    authorization: Option<String>,
}

impl RestClient {
    pub fn new(address: &str) -> anyhow::Result<Self> {
        let base = address.trim_end_matches('/').to_string();
        if !base.starts_with("http://") {
            bail!("--address must be an http:// URL, got {address:?}");
        }
        use photon_controller::auth;
        let authorization = match auth::mode_from_env().map_err(anyhow::Error::msg)? {
            Some(false) => None,
            enabled => match auth::load_token().map_err(anyhow::Error::msg)? {
                Some(token) => Some(format!("Bearer {token}")),
                None if enabled == Some(true) => bail!(auth::NO_TOKEN),
                None => None,
            },
        };
        Ok(RestClient { base, http: Client::builder(TokioExecutor::new()).build_http(), authorization })
    }

    async fn send(&self, method: http::Method, path: &str, body: Option<Vec<u8>>) -> anyhow::Result<(u16, Bytes)> {
        let url = format!("{}{path}", self.base);
        let mut req = http::Request::builder().method(method.clone()).uri(&url);
        if body.is_some() {
            req = req.header(http::header::CONTENT_TYPE, "application/json");
        }
        if let Some(value) = &self.authorization {
            req = req.header(http::header::AUTHORIZATION, value);
        }
        let req = req.body(Full::new(Bytes::from(body.unwrap_or_default()))).context("bad request")?;
        let resp = self.http.request(req).await.with_context(|| format!("cannot reach Photon at {}", self.base))?;
        let status = resp.status().as_u16();
        let bytes = resp.into_body().collect().await.context("reading the response")?.to_bytes();
        // As Ray's CLI words them.
        let body = String::from_utf8_lossy(&bytes);
        match status {
            401 => bail!(
                "Authentication required: {body}\n\n{}",
                "Token authentication is enabled but no authentication token was found"
            ),
            403 if body.starts_with("Forbidden: Invalid authentication token") => bail!(
                "Authentication failed: {body}\n\n{}",
                "Token authentication is enabled but the authentication token is invalid or incorrect."
            ),
            _ => Ok((status, bytes)),
        }
    }

    /// `GET /api/serve/applications/`.
    pub async fn details(&self) -> anyhow::Result<Value> {
        let (status, body) = self.send(http::Method::GET, "/api/serve/applications/", None).await?;
        if status != 200 {
            bail!("GET /api/serve/applications/ failed with status {status}: {}", String::from_utf8_lossy(&body));
        }
        serde_json::from_slice(&body).context("the REST API answered invalid JSON")
    }

    /// `PUT /api/serve/applications/`.
    pub async fn put_config(&self, config: &Value) -> anyhow::Result<()> {
        let (status, body) =
            self.send(http::Method::PUT, "/api/serve/applications/", Some(config.to_string().into_bytes())).await?;
        if status != 200 {
            bail!("Request failed with status code {status}: {}", String::from_utf8_lossy(&body));
        }
        Ok(())
    }

    /// `DELETE /api/serve/applications/`.
    pub async fn delete_all(&self) -> anyhow::Result<()> {
        let (status, body) = self.send(http::Method::DELETE, "/api/serve/applications/", None).await?;
        if status != 200 {
            bail!("Request failed with status code {status}: {}", String::from_utf8_lossy(&body));
        }
        Ok(())
    }
}
