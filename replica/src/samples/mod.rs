//! Built-in applications: KubeRay's sample graphs (`fruit.deployment_graph`,
//! `conditional_dag.serve_dag`) and the `photon.examples` deployments used by tests and
//! benchmarks.

mod calc;
mod examples;
mod fruit;

use crate::registry::Registry;

/// A registry of the built-in applications: the KubeRay samples and `photon.examples`.
pub fn builtin_registry() -> Registry {
    let mut registry = Registry::default();
    for app in [fruit::app(), calc::app()].into_iter().chain(examples::apps()) {
        registry.register(app);
    }
    registry
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

#[cfg(test)]
mod tests {
    use photon_config::ApplicationConfig;

    use super::*;

    fn app(import_path: &str) -> ApplicationConfig {
        let doc = serde_json::json!({ "applications": [{ "import_path": import_path }] });
        photon_config::from_value(&doc).unwrap().config.applications.remove(0)
    }

    #[test]
    fn every_builtin_blueprint_is_valid() {
        let r = builtin_registry();
        for path in r.import_paths() {
            let bp = r.builtin_blueprint(&app(path)).unwrap();
            assert!(bp.deployments.iter().any(|d| d.name == bp.ingress), "{path}: ingress missing");
        }
        assert!(r.find("photon.examples.noop").is_some());
        assert!(r.builtin_blueprint(&app("nope.app")).unwrap_err().contains("unknown import path"));
    }
}
