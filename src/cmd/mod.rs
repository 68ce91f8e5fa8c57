//! Subcommands.

pub mod client;
pub mod deploy;
pub mod inspect;
#[cfg(feature = "kubernetes")]
pub mod operator;
pub mod proxy;
pub mod replica;
pub mod run;

use std::sync::Arc;

use photon_python::PythonCatalog;
use photon_replica::Registry;

/// Every application this binary serves: the built-in samples and the model deployments.
pub fn registry() -> Registry {
    let mut registry = photon_replica::builtin_registry();
    for app in photon_models::apps() {
        registry.register(app);
    }
    registry
}

/// What the controller builds applications from: the built-in ones, and Python code for every
/// other import path; `runtime_env.image_uri` is honoured when replicas are Kubernetes pods.
pub fn catalog(pods: bool) -> Arc<PythonCatalog> {
    let catalog = PythonCatalog::new(Arc::new(registry()));
    Arc::new(if pods { catalog.honouring_images() } else { catalog })
}
