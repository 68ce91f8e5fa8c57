//! Learning a Python application's deployments, as Ray's controller does with `build_app`: a
//! short-lived `python -m photon_worker discover` imports the `import_path` (a bound
//! application, or a builder called with the config's `args`) and reports each deployment's
//! name and code options and the ingress; its failure is the application's DEPLOY_FAILED with
//! the Python traceback.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use photon_config::{AppBlueprint, AppCatalog, ApplicationConfig, DeploymentOverride, PackageLookup, ServeConfig};
use photon_replica::Registry;
use serde_json::{json, Map, Value};

use crate::embedded;

/// The environment variable that carries a replica's [`CodeSpec`] (JSON).
pub const CODE_ENV: &str = "PHOTON_PYTHON_APP";
/// The environment variable that carries `grpc_options.grpc_servicer_functions` (a JSON list)
/// to Python replicas, which take the gRPC message types from them.
pub const GRPC_SERVICERS_ENV: &str = "PHOTON_GRPC_SERVICER_FUNCTIONS";

/// `runtime_env` keys a Python application cannot have here, with the reason.
const UNSUPPORTED_RUNTIME_ENV: &[(&str, &str)] = &[
    ("conda", "conda environments are not supported; name the packages in runtime_env.pip"),
    ("container", "containers are not supported; on Kubernetes, use the worker group's image"),
    ("image_uri", "images are honoured on Kubernetes only (there, the replica pods' image)"),
    ("java_jars", "Java deployments are not supported"),
    ("py_executable", "another interpreter per application is not supported; Photon runs PHOTON_PYTHON"),
    ("worker_process_setup_hook", "setup hooks are not supported; run the setup in the deployment's constructor"),
    ("_nsight", "profiling with Nsight is not supported"),
    ("_rocprof_sys", "profiling with rocprof is not supported"),
];

/// `runtime_env` keys Photon applies to Python applications (besides the unsupported ones
/// above, and Ray's internal `_ray_*` / `_inject_current_ray` marks, which mean nothing here).
const APPLIED_RUNTIME_ENV: &[&str] = &["pip", "uv", "working_dir", "py_modules", "excludes", "env_vars", "config"];

/// `runtime_env.config` as Ray reads it: `setup_timeout_seconds` an integer > 0 or -1,
/// `eager_install` a boolean (environments are always made before replicas start, as with
/// Ray's default `true`), `log_files` a list of strings; other keys are ignored, as Ray does.
fn check_runtime_env_config(config: &Value) -> Result<(), String> {
    let Value::Object(o) = config else {
        return Err(format!("runtime_env.config: must be a mapping, got {config}"));
    };
    match o.get("setup_timeout_seconds") {
        None => {}
        Some(Value::Number(n)) if n.as_i64().is_some_and(|t| t > 0 || t == -1) => {}
        Some(other) => {
            return Err(format!(
                "runtime_env.config.setup_timeout_seconds: must be an integer greater than zero, or -1, got {other}"
            ))
        }
    }
    if let Some(v) = o.get("eager_install").filter(|v| !v.is_boolean()) {
        return Err(format!("runtime_env.config.eager_install: must be a boolean, got {v}"));
    }
    if let Some(v) = o.get("log_files").filter(|v| !v.as_array().is_some_and(|a| a.iter().all(Value::is_string))) {
        return Err(format!("runtime_env.config.log_files: must be a list of strings, got {v}"));
    }
    Ok(())
}

/// Where an application's Python code is and how to build it.
#[derive(Debug, Clone, PartialEq)]
pub struct CodeSpec {
    /// `module:attr` or `module.attr`.
    pub import_path: String,
    /// The config's `args`, for an application builder.
    pub args: Map<String, Value>,
    /// `runtime_env.working_dir`: an absolute directory (a `.zip` URL until it is fetched).
    pub working_dir: Option<String>,
    /// `runtime_env.py_modules`: absolute directories (`.zip` and `.whl` URLs until they are
    /// fetched).
    pub py_modules: Vec<String>,
    /// Directories wheels of `py_modules` were installed into, put on the import path as they
    /// are (a module directory's parent goes there instead).
    pub site_dirs: Vec<String>,
    /// `runtime_env.excludes`: gitignore-style patterns of files of local directories that
    /// replicas do not get.
    pub excludes: Vec<String>,
    /// `runtime_env.pip` or `runtime_env.uv`.
    pub packages: Option<crate::env::EnvSpec>,
    /// The interpreter of the application's environment (`pip`'s or `uv`'s), once made; else the default.
    pub python: Option<String>,
}

impl CodeSpec {
    /// The spec of `app`, with `runtime_env` paths made absolute against `base` (the directory
    /// Photon was started from); a `runtime_env` Photon cannot use is named.
    pub fn of(app: &ApplicationConfig, base: &Path) -> Result<CodeSpec, String> {
        // `wheels`: a `.whl` may be given too (py_modules), as a local file or by URL.
        let local_dir = |field: &str, value: &Value, wheels: bool| -> Result<String, String> {
            let Some(text) = value.as_str() else {
                return Err(format!("runtime_env.{field}: must be a string, got {value}"));
            };
            let wheel = wheels && text.ends_with(".whl");
            // Ray's `local://` names a directory already on the machine (validation has made
            // sure there is a scheme); a `.zip` or wheel by URL is fetched before the import
            // (`look`).
            let Some(local) = text.strip_prefix("local://") else {
                let remote = ["https://", "http://", "file://"].iter().any(|s| text.starts_with(s));
                if remote && (text.ends_with(".zip") || wheel) {
                    return Ok(text.to_string());
                }
                let what =
                    if wheels { "directories, .zip archives and .whl files" } else { "directories and .zip archives" };
                return Err(format!(
                    "runtime_env.{field}: {text:?}: only local:// {what} (archives by https://, http:// or file://) are supported"
                ));
            };
            let path = base.join(local);
            if wheel {
                if !path.is_file() {
                    return Err(format!("runtime_env.{field}: {text:?} is not a file"));
                }
                return Ok(format!("file://{}", path.to_string_lossy()));
            }
            if !path.is_dir() {
                return Err(format!("runtime_env.{field}: {text:?} is not a directory"));
            }
            Ok(path.to_string_lossy().into_owned())
        };
        let working_dir = match app.runtime_env.get("working_dir") {
            None | Some(Value::Null) => None,
            Some(v) => Some(local_dir("working_dir", v, false)?),
        };
        let py_modules = match app.runtime_env.get("py_modules") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(items)) => items
                .iter()
                .enumerate()
                .map(|(i, v)| local_dir(&format!("py_modules[{i}]"), v, true))
                .collect::<Result<_, _>>()?,
            Some(other) => return Err(format!("runtime_env.py_modules: must be a list, got {other}")),
        };
        for (key, value) in app.runtime_env.iter().filter(|(_, v)| !v.is_null()) {
            if let Some((_, why)) = UNSUPPORTED_RUNTIME_ENV.iter().find(|(k, _)| k == key) {
                return Err(format!("runtime_env.{key}: {why}"));
            }
            let internal = key.starts_with("_ray_") || key == "_inject_current_ray";
            if !internal && !APPLIED_RUNTIME_ENV.contains(&key.as_str()) {
                return Err(format!(
                    "runtime_env.{key}: unknown field (Ray's runtime_env plugins are not supported; Photon applies {})",
                    APPLIED_RUNTIME_ENV.join(", ")
                ));
            }
            if key == "config" {
                check_runtime_env_config(value)?;
            }
        }
        let given = |key: &str| app.runtime_env.get(key).filter(|v| !v.is_null());
        let excludes = match given("excludes") {
            None => Vec::new(),
            Some(Value::Array(items)) => items
                .iter()
                .enumerate()
                .map(|(i, v)| {
                    v.as_str()
                        .map(str::to_string)
                        .ok_or(format!("runtime_env.excludes[{i}]: must be a string, got {v}"))
                })
                .collect::<Result<_, _>>()?,
            Some(other) => return Err(format!("runtime_env.excludes: must be a list of patterns, got {other}")),
        };
        let packages = match (given("pip"), given("uv")) {
            (Some(_), Some(_)) => return Err("runtime_env: pip and uv cannot both be given".into()),
            (Some(pip), None) => Some(crate::env::EnvSpec::pip(pip, base)?),
            (None, Some(uv)) => Some(crate::env::EnvSpec::uv(uv, base)?),
            (None, None) => None,
        };
        Ok(CodeSpec {
            import_path: app.import_path.clone(),
            args: app.args.clone(),
            working_dir,
            py_modules,
            site_dirs: Vec::new(),
            excludes,
            packages,
            python: None,
        })
    }

    /// As replicas get it (`CODE_ENV`): directories as [`crate::package`] names them, so that a
    /// replica on another machine can fetch them, and the runtime_env packages as what to
    /// install (a replica finds or makes its environment where it runs).
    pub fn to_replica_json(&self) -> Value {
        let portable = |dirs: &[String]| dirs.iter().map(|d| crate::package::portable(d)).collect::<Vec<_>>();
        json!({
            "import_path": self.import_path,
            "args": self.args,
            "working_dir": self.working_dir.as_deref().map(crate::package::portable),
            "py_modules": portable(&self.py_modules),
            "site_dirs": portable(&self.site_dirs),
            "env": self.packages.as_ref().map(crate::env::EnvSpec::to_json),
        })
    }

    /// As JSON, for the import on this machine (discovery).
    pub fn to_json(&self) -> Value {
        json!({
            "import_path": self.import_path,
            "args": self.args,
            "working_dir": self.working_dir,
            "py_modules": self.py_modules,
            "site_dirs": self.site_dirs,
            "python": self.python,
        })
    }

    /// The `runtime_env` keys this spec applies.
    fn applied(&self) -> Vec<String> {
        let mut keys = Vec::new();
        if self.working_dir.is_some() {
            keys.push("working_dir".to_string());
        }
        if !self.py_modules.is_empty() || !self.site_dirs.is_empty() {
            keys.push("py_modules".to_string());
        }
        if !self.excludes.is_empty() {
            keys.push("excludes".to_string());
        }
        match self.packages.as_ref().map(|p| &p.installer) {
            Some(crate::env::Installer::Pip) => keys.push("pip".to_string()),
            Some(crate::env::Installer::Uv { .. }) => keys.push("uv".to_string()),
            None => {}
        }
        keys
    }
}

/// Ray's `runtime_env.config.setup_timeout_seconds` (default 600).
fn setup_timeout(app: &ApplicationConfig) -> std::time::Duration {
    let seconds = app
        .runtime_env
        .get("config")
        .and_then(|c| c.get("setup_timeout_seconds"))
        .and_then(Value::as_f64)
        // -1 turns the limit off, as in Ray.
        .map(|s| if s == -1.0 { 1e6 } else { s })
        .filter(|s| *s > 0.0 && *s <= 1e6)
        .unwrap_or(600.0);
    std::time::Duration::from_secs_f64(seconds)
}

/// The `runtime_env` a deployment's replicas run in, merged as Ray merges it: the application's,
/// each key the deployment gives (`ray_actor_options.runtime_env`, the config's options over
/// the code's) replacing the application's; `env_vars` are merged with the replica's
/// environment elsewhere. `None` when the deployment gives no key but `env_vars`.
fn deployment_runtime_env(app: &ApplicationConfig, code: &DeploymentOverride) -> Option<Map<String, Value>> {
    let configured = app.deployments.iter().find(|d| d.name == code.name).and_then(|d| d.ray_actor_options.as_ref());
    let own = configured.or(code.ray_actor_options.as_ref())?.runtime_env.as_ref()?;
    if own.keys().all(|k| k == "env_vars") {
        return None;
    }
    let mut merged = app.runtime_env.clone();
    for (k, v) in own.iter().filter(|(k, _)| *k != "env_vars") {
        merged.insert(k.clone(), v.clone());
    }
    Some(merged)
}

/// Runs discovery for `spec` and turns its answer into a blueprint.
pub async fn discover(app_name: &str, spec: &CodeSpec) -> Result<AppBlueprint, String> {
    let root = embedded::install().map_err(|e| format!("cannot write Photon's Python package: {e}"))?;
    let output = embedded::worker_command(&root, spec.python.as_deref())
        .arg("discover")
        .env(CODE_ENV, spec.to_json().to_string())
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| {
            format!(
                "Python deployments need a Python 3.9 or newer interpreter (PHOTON_PYTHON, else python3 on PATH): cannot run {:?}: {e}",
                embedded::python()
            )
        })?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let Some(answer) = stdout.lines().rev().find_map(|l| serde_json::from_str::<Value>(l).ok()) else {
        return Err(format!(
            "Deploying app '{app_name}' failed: the Python import process ended ({}) without an answer:\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim_end()
        ));
    };
    blueprint_from(app_name, spec, &answer)
}

fn blueprint_from(app_name: &str, spec: &CodeSpec, answer: &Value) -> Result<AppBlueprint, String> {
    if let Some(traceback) = answer.get("error").and_then(Value::as_str) {
        return Err(format!("Deploying app '{app_name}' failed with exception:\n{}", traceback.trim_end()));
    }
    let ingress = answer.get("ingress").and_then(Value::as_str).unwrap_or_default().to_string();
    let mut deployments = Vec::new();
    for d in answer.get("deployments").and_then(Value::as_array).into_iter().flatten() {
        let name = d.get("name").and_then(Value::as_str).unwrap_or_default();
        let mut options = d.get("options").cloned().unwrap_or_else(|| json!({}));
        options["name"] = json!(name);
        let mut parsed = photon_config::deployment_defaults(&options).map_err(|e| {
            format!("Deploying app '{app_name}' failed: the options of deployment '{name}' in code: {e}")
        })?;
        parsed.name = name.to_string();
        deployments.push(parsed);
    }
    let docs_path = answer
        .get("deployments")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .find(|d| d.get("name").and_then(Value::as_str) == Some(ingress.as_str()))
        .and_then(|d| d.get("docs_path").and_then(Value::as_str))
        .map(str::to_string);
    let replica_env = BTreeMap::from([(CODE_ENV.to_string(), spec.to_replica_json().to_string())]);
    Ok(AppBlueprint {
        ingress,
        deployments,
        replica_env,
        deployment_env: BTreeMap::new(),
        applied_runtime_env: spec.applied(),
        docs_path,
    })
}

/// The built-in applications, and Python code for every other import path. Blueprints of
/// Python applications are kept per (name, import path, args, runtime_env), as Ray rebuilds an
/// application only when one of those changes; failures are not kept, so a later deploy tries
/// again.
pub struct PythonCatalog {
    builtin: Arc<Registry>,
    base: std::path::PathBuf,
    known: Mutex<HashMap<String, Result<AppBlueprint, String>>>,
    /// The instance's `grpc_servicer_functions` (from the first config that names any, as Ray
    /// keeps the gRPC options Serve started with).
    grpc_servicers: Mutex<Vec<String>>,
    /// Whether `runtime_env.image_uri` can be honoured (replicas are Kubernetes pods, which run
    /// it as their image).
    images: bool,
}

impl PythonCatalog {
    /// A catalog over `builtin`, finding Python code relative to the current directory.
    pub fn new(builtin: Arc<Registry>) -> Self {
        let base = std::env::current_dir().unwrap_or_default();
        PythonCatalog {
            builtin,
            base,
            known: Mutex::new(HashMap::new()),
            grpc_servicers: Mutex::default(),
            images: false,
        }
    }

    /// The same catalog, for replicas that run `runtime_env.image_uri` as their image.
    pub fn honouring_images(mut self) -> Self {
        self.images = true;
        self
    }

    fn key(app: &ApplicationConfig) -> String {
        let own_envs: Vec<_> = app
            .deployments
            .iter()
            .map(|d| (&d.name, d.ray_actor_options.as_ref().and_then(|o| o.runtime_env.as_ref())))
            .collect();
        json!([app.name, app.import_path, app.args, app.runtime_env, own_envs]).to_string()
    }

    fn keep_grpc_servicers(&self, servicers: &[String]) {
        let mut kept = self.grpc_servicers.lock().unwrap_or_else(|p| p.into_inner());
        if kept.is_empty() && !servicers.is_empty() {
            *kept = servicers.to_vec();
        }
    }

    fn is_python(&self, app: &ApplicationConfig) -> bool {
        self.builtin.find(&app.import_path).is_none()
    }

    /// The code spec of `app` with its `runtime_env` made real: archives and wheels fetched,
    /// packages installed.
    async fn prepare(&self, app: &ApplicationConfig) -> Result<CodeSpec, String> {
        let mut spec = match app.runtime_env.get("image_uri").filter(|v| !v.is_null()) {
            // The replicas run the image (its orchestrator honours it); the head imports the code
            // from its own environment. As in Ray, an image goes with `config` and `env_vars` only.
            Some(image) if self.images => {
                if !image.is_string() {
                    return Err(format!("runtime_env.image_uri: must be a string, got {image}"));
                }
                let others: Vec<&str> = app
                    .runtime_env
                    .iter()
                    .filter(|(k, v)| !v.is_null() && !["image_uri", "config", "env_vars"].contains(&k.as_str()))
                    .map(|(k, _)| k.as_str())
                    .collect();
                if !others.is_empty() {
                    return Err(format!(
                        "runtime_env.image_uri cannot be used together with other fields of runtime_env (as in Ray): {}",
                        others.join(", ")
                    ));
                }
                let mut rest = app.clone();
                rest.runtime_env.remove("image_uri");
                CodeSpec::of(&rest, &self.base)?
            }
            _ => CodeSpec::of(app, &self.base)?,
        };
        let python = embedded::python();
        // Archives and wheels by URL are fetched; local directories are copied as Ray uploads
        // them (`excludes`, ignore files, the size limit).
        let excludes = spec.excludes.clone();
        let fetch = |uri: String| {
            let (python, excludes) = (python.clone(), excludes.clone());
            async move {
                let path = if uri.contains("://") {
                    crate::env::fetch_archive(&python, &uri).await?
                } else {
                    crate::env::snapshot(&python, &uri, &excludes).await?
                };
                Ok::<_, String>(path.to_string_lossy().into_owned())
            }
        };
        if let Some(dir) = spec.working_dir.take() {
            spec.working_dir = Some(fetch(dir).await?);
        }
        for module in std::mem::take(&mut spec.py_modules) {
            let wheel = module.ends_with(".whl");
            let dir = fetch(module).await?;
            if wheel { &mut spec.site_dirs } else { &mut spec.py_modules }.push(dir);
        }
        if let Some(packages) = &spec.packages {
            tracing::info!(application = %app.name, packages = %packages.packages.join(" "), "preparing runtime_env packages");
            let timeout = setup_timeout(app);
            let python = tokio::time::timeout(timeout, crate::env::ensure(&embedded::python(), packages))
                .await
                .map_err(|_| {
                    format!(
                        "runtime_env setup timed out after {}s (runtime_env.config.setup_timeout_seconds)",
                        timeout.as_secs()
                    )
                })??;
            spec.python = Some(python.to_string_lossy().into_owned());
        }
        Ok(spec)
    }

    async fn look(&self, app: &ApplicationConfig) -> Result<AppBlueprint, String> {
        let failed = |e: String| format!("Deploying app '{}' failed: {e}", app.name);
        let spec = self.prepare(app).await.map_err(failed)?;
        let mut blueprint = discover(&app.name, &spec).await?;
        for key in ["config", "image_uri"] {
            let honoured = key != "image_uri" || self.images;
            if honoured && app.runtime_env.get(key).is_some_and(|v| !v.is_null()) {
                blueprint.applied_runtime_env.push(key.to_string());
            }
        }
        // Deployments with a runtime_env of their own run in it (packages, code), as in Ray.
        for code in blueprint.deployments.clone() {
            let Some(runtime_env) = deployment_runtime_env(app, &code) else { continue };
            let own = ApplicationConfig { runtime_env, ..app.clone() };
            let own_spec = self.prepare(&own).await.map_err(|e| failed(format!("deployment '{}': {e}", code.name)))?;
            for key in own_spec.applied() {
                if !blueprint.applied_runtime_env.contains(&key) {
                    blueprint.applied_runtime_env.push(key);
                }
            }
            let env = BTreeMap::from([(CODE_ENV.to_string(), own_spec.to_replica_json().to_string())]);
            blueprint.deployment_env.insert(code.name.clone(), env);
        }
        Ok(blueprint)
    }
}

impl AppCatalog for PythonCatalog {
    fn blueprint(&self, app: &ApplicationConfig) -> Option<Result<AppBlueprint, String>> {
        if !self.is_python(app) {
            return Some(self.builtin.builtin_blueprint(app));
        }
        let key = Self::key(app);
        let mut known = self.known.lock().unwrap_or_else(|p| p.into_inner());
        match known.get(&key)? {
            Ok(bp) => {
                let mut bp = bp.clone();
                let servicers = self.grpc_servicers.lock().unwrap_or_else(|p| p.into_inner());
                if !servicers.is_empty() {
                    bp.replica_env.insert(GRPC_SERVICERS_ENV.to_string(), json!(*servicers).to_string());
                }
                Some(Ok(bp))
            }
            // Told once: the next deploy of the same config imports again.
            Err(_) => known.remove(&key),
        }
    }

    fn learn<'a>(&'a self, app: &'a ApplicationConfig) -> Pin<Box<dyn Future<Output = ()> + Send + 'a>> {
        Box::pin(async move {
            if !self.is_python(app) {
                return;
            }
            let key = Self::key(app);
            let cached = matches!(self.known.lock().unwrap_or_else(|p| p.into_inner()).get(&key), Some(Ok(_)));
            if !cached {
                let result = self.look(app).await;
                self.known.lock().unwrap_or_else(|p| p.into_inner()).insert(key, result);
            }
        })
    }

    fn observe(&self, config: &ServeConfig) {
        self.keep_grpc_servicers(&config.grpc_options.grpc_servicer_functions);
    }

    fn package<'a>(&'a self, name: &'a str) -> PackageLookup<'a> {
        Box::pin(async move { Some(crate::package::packed(name).await) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> CodeSpec {
        CodeSpec {
            import_path: "app:app".into(),
            args: Map::new(),
            working_dir: None,
            py_modules: Vec::new(),
            site_dirs: Vec::new(),
            excludes: Vec::new(),
            packages: None,
            python: None,
        }
    }

    #[test]
    fn a_discovery_answer_becomes_a_blueprint() {
        let answer = json!({"ingress": "Front", "deployments": [
            {"name": "Back", "options": {"num_replicas": 2, "user_config": {"k": 1}}},
            {"name": "Front", "options": {"ray_actor_options": {"num_cpus": 0.5}}}
        ]});
        let bp = blueprint_from("a", &spec(), &answer).unwrap();
        assert_eq!(bp.ingress, "Front");
        assert_eq!(bp.deployments[0].name, "Back");
        assert_eq!(bp.deployments[0].user_config, Some(json!({"k": 1})));
        assert!(bp.replica_env[CODE_ENV].contains("app:app"));
    }

    #[test]
    fn a_traceback_is_the_deploy_error() {
        let err = blueprint_from("a", &spec(), &json!({"error": "Traceback ...\nImportError: x\n"})).unwrap_err();
        assert_eq!(err, "Deploying app 'a' failed with exception:\nTraceback ...\nImportError: x");
    }

    #[test]
    fn code_options_are_validated_like_the_config() {
        let answer = json!({"ingress": "D", "deployments": [{"name": "D", "options": {"max_ongoing_requests": 0}}]});
        let err = blueprint_from("a", &spec(), &answer).unwrap_err();
        assert!(err.contains("max_ongoing_requests"), "{err}");
    }
}
