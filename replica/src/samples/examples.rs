//! `photon.examples`: one-deployment applications for tests and benchmarks.
//! `noop` answers `ok`; `echo` returns the body with its content type; `sleep` waits
//! `user_config.sleep_ms` (default 100) and answers `ok`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use super::config_get;
use crate::deployment::{Deployment, DeploymentError, Reply, Request};
use crate::registry::{AppDef, DeploymentDef};

struct Noop;

#[async_trait::async_trait]
impl Deployment for Noop {
    async fn call(&self, _request: Request) -> Result<Reply, DeploymentError> {
        Ok(Reply::text("ok"))
    }
}

struct Echo;

#[async_trait::async_trait]
impl Deployment for Echo {
    async fn call(&self, request: Request) -> Result<Reply, DeploymentError> {
        let content_type = request.header("content-type").cloned();
        Ok(Reply::bytes(request.body, content_type))
    }
}

const DEFAULT_SLEEP_MS: u64 = 100;

struct Sleep {
    sleep_ms: AtomicU64,
}

#[async_trait::async_trait]
impl Deployment for Sleep {
    async fn call(&self, _request: Request) -> Result<Reply, DeploymentError> {
        tokio::time::sleep(Duration::from_millis(self.sleep_ms.load(Ordering::Relaxed))).await;
        Ok(Reply::text("ok"))
    }

    async fn reconfigure(&self, user_config: Option<&Value>) -> Result<(), DeploymentError> {
        let ms = config_get(user_config, "sleep_ms", json!(DEFAULT_SLEEP_MS))?;
        let ms = ms
            .as_u64()
            .ok_or_else(|| DeploymentError(format!("user_config.sleep_ms must be a non-negative integer, got {ms}")))?;
        self.sleep_ms.store(ms, Ordering::Relaxed);
        Ok(())
    }
}

fn single(import_path: &'static str, name: &'static str, build: crate::registry::Constructor) -> AppDef {
    AppDef {
        import_path,
        ingress: name,
        deployments: vec![DeploymentDef { name, defaults: json!({ "name": name }), build }],
    }
}

pub(super) fn apps() -> Vec<AppDef> {
    vec![
        single("photon.examples:noop", "Noop", |_| Ok(Arc::new(Noop))),
        single("photon.examples:echo", "Echo", |_| Ok(Arc::new(Echo))),
        single("photon.examples:sleep", "Sleep", |_| {
            Ok(Arc::new(Sleep { sleep_ms: AtomicU64::new(DEFAULT_SLEEP_MS) }))
        }),
    ]
}
