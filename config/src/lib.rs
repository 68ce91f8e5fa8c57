//! The Ray Serve config: parsing (YAML or JSON, a serve config or a RayService manifest),
//! Ray's defaults, whole-document validation with field paths, and option resolution.

#![warn(missing_docs)]

pub mod defaults;
mod error;
pub mod paths;
mod resolve;
mod schema;
mod validate;
pub mod yaml;

use serde_json::Value;

pub use error::{ConfigError, FieldError};
pub use resolve::{resolve_app, AppBlueprint, AppCatalog, PackageLookup, ReplicaTarget, ResolvedDeployment};
pub use schema::*;

/// A config that passed validation, with what was accepted but ignored.
#[derive(Debug, Clone)]
pub struct Parsed {
    /// The validated config.
    pub config: ServeConfig,
    /// Accepted but ignored (unknown fields Ray ignores, deprecated options), with their paths.
    pub warnings: Vec<FieldError>,
}

/// Parses YAML (JSON is YAML too): a serve config, or a `RayService`/`PhotonService` manifest
/// whose `spec.serveConfigV2` holds one.
pub fn parse_yaml(text: &str) -> Result<Parsed, ConfigError> {
    let doc = yaml::from_str(text).map_err(|e| ConfigError::at("", format!("invalid YAML: {e}")))?;
    from_value(&doc)
}

/// Validates an already parsed document (e.g. a REST request body).
pub fn from_value(doc: &Value) -> Result<Parsed, ConfigError> {
    if let Some(kind) = doc.get("kind").and_then(Value::as_str) {
        if kind == "RayService" || kind == "PhotonService" {
            return from_service_manifest(doc);
        }
    }
    validate_document(doc)
}

fn validate_document(doc: &Value) -> Result<Parsed, ConfigError> {
    let mut report = validate::Report::default();
    let config = validate::serve_config(doc, &mut report);
    match config {
        Some(config) if report.errors.is_empty() => Ok(Parsed { config, warnings: report.warnings }),
        _ => Err(ConfigError { errors: report.errors }),
    }
}

fn from_service_manifest(doc: &Value) -> Result<Parsed, ConfigError> {
    const PATH: &str = "spec.serveConfigV2";
    let inner = doc.get("spec").and_then(|s| s.get("serveConfigV2"));
    let inner: Value = match inner {
        None | Some(Value::Null) => return Err(ConfigError::at(PATH, "field required")),
        Some(Value::String(text)) => {
            yaml::from_str(text).map_err(|e| ConfigError::at(PATH, format!("invalid YAML: {e}")))?
        }
        Some(other) => other.clone(),
    };
    validate_document(&inner).map_err(|mut e| {
        for fe in &mut e.errors {
            fe.path = if fe.path.is_empty() { PATH.to_string() } else { format!("{PATH}: {}", fe.path) };
        }
        e
    })
}

/// Code defaults written in the config's own deployment form (for blueprints): validated with
/// the same rules, so a registry entry cannot carry an option the config could not.
pub fn deployment_defaults(options: &Value) -> Result<DeploymentOverride, ConfigError> {
    let mut report = validate::Report::default();
    let out = validate::deployment(options, String::from("deployment"), &mut report);
    match out {
        Some(d) if report.errors.is_empty() => Ok(d),
        _ => Err(ConfigError { errors: report.errors }),
    }
}

#[cfg(test)]
mod tests;
