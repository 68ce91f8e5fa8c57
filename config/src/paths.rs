//! Where a config may make Photon read or write files: under the path roots only. A config
//! names directories Photon writes into (`logging_config.logs_dir`) and files built-in
//! deployments read (`user_config.model_dir` / `model_path`); each is resolved (links followed,
//! `..` applied) and must lie under a root, so a config cannot have logs written into, or a
//! model read from, anywhere else on the machine.
//!
//! The roots: `PHOTON_PATH_ROOTS` (paths separated by `:`) when set; otherwise the working
//! directory (where `photon run` was started, where applications' code is found too) and the
//! temporary directory.

use std::path::{Component, Path, PathBuf};

use crate::{ConfigError, FieldError, ServeConfig};

/// The variable that sets the roots.
pub const ROOTS_ENV: &str = "PHOTON_PATH_ROOTS";

/// The directories a config's paths must lie under.
#[derive(Debug, Clone)]
pub struct PathRoots(Vec<PathBuf>);

impl PathRoots {
    /// The roots of this process (`PHOTON_PATH_ROOTS`, else the working and temporary
    /// directories), resolved.
    pub fn from_env() -> Self {
        let roots: Vec<PathBuf> = match std::env::var_os(ROOTS_ENV).filter(|v| !v.is_empty()) {
            Some(v) => std::env::split_paths(&v).collect(),
            None => [std::env::current_dir().ok(), Some(std::env::temp_dir())].into_iter().flatten().collect(),
        };
        PathRoots(roots.iter().map(|r| resolve(r)).collect())
    }

    /// `path` (relative ones against the working directory) resolved, if it lies under a root;
    /// otherwise why not. The message names no content of any file.
    pub fn confine(&self, path: &Path) -> Result<PathBuf, String> {
        let absolute = if path.is_absolute() {
            path.to_path_buf()
        } else {
            std::env::current_dir().map_err(|e| format!("cannot resolve {}: {e}", path.display()))?.join(path)
        };
        let resolved = resolve(&absolute);
        if self.0.iter().any(|root| resolved.starts_with(root)) {
            return Ok(resolved);
        }
        let roots: Vec<String> = self.0.iter().map(|r| r.display().to_string()).collect();
        Err(format!(
            "{} is outside the directories Photon may use ({}; set {ROOTS_ENV} to allow others)",
            path.display(),
            roots.join(", ")
        ))
    }
}

/// `path` with links followed as far as it exists; the part that does not exist yet is applied
/// as written (`.` and `..` included: nothing there exists, so no link can redirect it).
fn resolve(path: &Path) -> PathBuf {
    let mut existing = path.to_path_buf();
    let mut missing = Vec::new();
    let base = loop {
        if let Ok(real) = existing.canonicalize() {
            break real;
        }
        let Some(last) = existing.components().next_back() else { break PathBuf::from("/") };
        missing.push(last.as_os_str().to_os_string());
        if !existing.pop() {
            break PathBuf::from("/");
        }
    };
    let mut out = base;
    for part in missing.iter().rev() {
        match Path::new(part).components().next() {
            Some(Component::ParentDir) => {
                out.pop();
            }
            Some(Component::CurDir) | None => {}
            Some(_) => out.push(part),
        }
    }
    out
}

/// Every directory `config` would have Photon write into, checked against `roots`: errors with
/// their field paths.
pub fn check_config_paths(config: &ServeConfig, roots: &PathRoots) -> Result<(), ConfigError> {
    let mut errors = Vec::new();
    let mut check = |path: String, dir: Option<&String>| {
        if let Some(dir) = dir {
            if let Err(message) = roots.confine(Path::new(dir)) {
                errors.push(FieldError { path, message });
            }
        }
    };
    check("logging_config.logs_dir".into(), config.logging_config.as_ref().and_then(|l| l.logs_dir.as_ref()));
    for (i, app) in config.applications.iter().enumerate() {
        let logs = app.logging_config.as_ref().and_then(|l| l.logs_dir.as_ref());
        check(format!("applications[{i}].logging_config.logs_dir"), logs);
        for (j, d) in app.deployments.iter().enumerate() {
            let logs = d.logging_config.as_ref().and_then(|l| l.logs_dir.as_ref());
            check(format!("applications[{i}].deployments[{j}].logging_config.logs_dir"), logs);
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ConfigError { errors })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_must_resolve_under_a_root() {
        let root = std::env::temp_dir().join(format!("photon-roots-{}", fastrand_suffix()));
        std::fs::create_dir_all(root.join("models")).unwrap();
        let roots = PathRoots(vec![resolve(&root)]);
        assert!(roots.confine(&root.join("models/minilm")).is_ok(), "a path that does not exist yet");
        assert!(roots.confine(&root.join("models/../models/x")).is_ok());
        let escape = roots.confine(&root.join("models/../../etc/passwd")).unwrap_err();
        assert!(escape.contains("outside the directories Photon may use") && escape.contains(ROOTS_ENV), "{escape}");
        assert!(roots.confine(Path::new("/etc")).is_err());
        // A link inside a root that points outside it does not get out.
        std::os::unix::fs::symlink("/etc", root.join("models/etc")).unwrap();
        assert!(roots.confine(&root.join("models/etc/passwd")).is_err());
        std::fs::remove_dir_all(&root).unwrap();
    }

    fn fastrand_suffix() -> u64 {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
            ^ u64::from(std::process::id())
    }
}
