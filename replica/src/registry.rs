//! The registry of applications a replica binary can build, keyed by `import_path`. The
//! controller reads blueprints from it (code-level options of each deployment); a replica
//! process builds one deployment from it.

use std::sync::Arc;

use photon_config::{AppBlueprint, AppCatalog, ApplicationConfig};
use serde_json::Value;

use crate::deployment::{BuildContext, Deployment, DeploymentError};

/// Builds one replica's deployment.
pub type Constructor = fn(&BuildContext) -> Result<Arc<dyn Deployment>, DeploymentError>;

/// One deployment of an application: its name, its code-level options (the
/// `@serve.deployment(...)` arguments, in the config's own form) and its constructor.
pub struct DeploymentDef {
    /// Deployment name (what config overrides refer to).
    pub name: &'static str,
    /// Code-level options as a JSON object in the config's deployment schema.
    pub defaults: Value,
    /// Builds an instance.
    pub build: Constructor,
}

/// One application graph.
pub struct AppDef {
    /// Import path, e.g. `fruit.deployment_graph` (`module:attr` and `module.attr` are the same).
    pub import_path: &'static str,
    /// The deployment that receives the application's traffic.
    pub ingress: &'static str,
    /// All its deployments.
    pub deployments: Vec<DeploymentDef>,
}

/// Builds deployments of applications the registry does not hold (Python code): `None` when
/// it does not know the import path either.
pub type FallbackBuilder =
    Box<dyn Fn(&str, &BuildContext) -> Option<Result<Arc<dyn Deployment>, DeploymentError>> + Send + Sync>;

/// All applications known to this binary.
#[derive(Default)]
pub struct Registry {
    apps: Vec<AppDef>,
    fallback: Option<FallbackBuilder>,
}

/// `module:attr` and `module.attr` name the same thing.
fn normalise(import_path: &str) -> String {
    import_path.replace(':', ".")
}

impl Registry {
    /// Adds an application (for binaries that bring their own deployments).
    pub fn register(&mut self, app: AppDef) {
        self.apps.push(app);
    }

    /// Builds replicas of import paths the registry does not hold.
    pub fn set_fallback(&mut self, fallback: FallbackBuilder) {
        self.fallback = Some(fallback);
    }

    /// The application at `import_path`.
    pub fn find(&self, import_path: &str) -> Option<&AppDef> {
        let wanted = normalise(import_path);
        self.apps.iter().find(|a| normalise(a.import_path) == wanted)
    }

    /// Every import path, for error messages.
    pub fn import_paths(&self) -> Vec<&'static str> {
        self.apps.iter().map(|a| a.import_path).collect()
    }

    /// Builds deployment `name` of the application at `import_path`.
    pub fn build(
        &self,
        import_path: &str,
        name: &str,
        ctx: &BuildContext,
    ) -> Result<Arc<dyn Deployment>, DeploymentError> {
        let Some(app) = self.find(import_path) else {
            return match self.fallback.as_ref().and_then(|build| build(import_path, ctx)) {
                Some(built) => built,
                None => Err(DeploymentError(self.unknown(import_path))),
            };
        };
        let def = app
            .deployments
            .iter()
            .find(|d| d.name == name)
            .ok_or_else(|| DeploymentError(format!("application {import_path} has no deployment {name:?}")))?;
        (def.build)(ctx)
    }

    fn unknown(&self, import_path: &str) -> String {
        format!("unknown import path {import_path:?}; this binary serves: {}", self.import_paths().join(", "))
    }
}

impl AppCatalog for Registry {
    fn blueprint(&self, config: &ApplicationConfig) -> Option<Result<AppBlueprint, String>> {
        Some(self.builtin_blueprint(config))
    }
}

impl Registry {
    /// The blueprint of a built-in application.
    pub fn builtin_blueprint(&self, config: &ApplicationConfig) -> Result<AppBlueprint, String> {
        let app = self.find(&config.import_path).ok_or_else(|| self.unknown(&config.import_path))?;
        let mut deployments = Vec::new();
        for d in &app.deployments {
            let mut defaults = photon_config::deployment_defaults(&d.defaults)
                .map_err(|e| format!("code defaults of {}: {e}", d.name))?;
            defaults.name = d.name.to_string();
            deployments.push(defaults);
        }
        Ok(AppBlueprint { ingress: app.ingress.to_string(), deployments, ..Default::default() })
    }
}
