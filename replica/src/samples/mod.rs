//! Built-in applications: KubeRay's sample graphs (`fruit.deployment_graph`,
//! `conditional_dag.serve_dag`) and the `photon.examples` deployments used by tests and
//! benchmarks.

mod calc;
mod examples;
mod fruit;

use crate::registry::AppDef;

pub(crate) fn all() -> Vec<AppDef> {
    let mut apps = vec![fruit::app(), calc::app()];
    apps.extend(examples::apps());
    apps
}

/// `cfg.get(key, default)` on a user_config that must be a dict (Python raises otherwise).
pub(crate) fn config_get(
    user_config: Option<&serde_json::Value>,
    key: &str,
    default: serde_json::Value,
) -> Result<serde_json::Value, crate::DeploymentError> {
    match user_config {
        None => Ok(default),
        Some(serde_json::Value::Object(m)) => Ok(m.get(key).cloned().unwrap_or(default)),
        Some(other) => {
            Err(crate::DeploymentError(format!("AttributeError: user_config {other} has no attribute 'get'")))
        }
    }
}
