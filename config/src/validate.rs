//! Whole-document validation: walks the parsed document once, builds the typed config and
//! collects every error with its field path, so a file's problems are reported together.
//!
//! Unknown keys follow Ray 2.60: rejected inside `logging_config`, `tracing_config`,
//! `controller_options` and `backpressure_config`; elsewhere ignored, but reported as warnings
//! so a typo does not go unnoticed.

use serde_json::{Map, Value};

use crate::defaults as d;
use crate::error::FieldError;
use crate::schema::*;

/// Collects errors and warnings during one walk.
#[derive(Default)]
pub(crate) struct Report {
    pub errors: Vec<FieldError>,
    pub warnings: Vec<FieldError>,
}

impl Report {
    fn error(&mut self, path: &str, message: impl Into<String>) {
        self.errors.push(FieldError { path: path.to_string(), message: message.into() });
    }
    fn warn(&mut self, path: &str, message: impl Into<String>) {
        self.warnings.push(FieldError { path: path.to_string(), message: message.into() });
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(n) if n.is_f64() => "a float",
        Value::Number(_) => "an integer",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

/// Unknown keys: what to do with them in one object.
#[derive(Clone, Copy, PartialEq)]
enum Extra {
    Reject,
    Ignore,
}

/// A view of one mapping in the document: typed getters that record errors under the field's
/// path, and an unknown-key check at the end.
struct Obj<'a> {
    path: String,
    map: &'a Map<String, Value>,
    known: Vec<&'static str>,
}

impl<'a> Obj<'a> {
    /// `None` (with an error) when `value` is not a mapping.
    fn new(path: String, value: &'a Value, r: &mut Report) -> Option<Self> {
        match value {
            Value::Object(map) => Some(Obj { path, map, known: Vec::new() }),
            other => {
                r.error(&path, format!("must be a mapping, got {}", type_name(other)));
                None
            }
        }
    }

    fn field(&mut self, key: &'static str) -> Option<(&'a Value, String)> {
        self.known.push(key);
        self.map.get(key).map(|v| (v, join(&self.path, key)))
    }

    /// The value, treating an explicit null as absent.
    fn present(&mut self, key: &'static str) -> Option<(&'a Value, String)> {
        self.field(key).filter(|(v, _)| !v.is_null())
    }

    fn string(&mut self, key: &'static str, r: &mut Report) -> Option<String> {
        let (v, path) = self.present(key)?;
        match v {
            Value::String(s) => Some(s.clone()),
            other => {
                r.error(&path, format!("must be a string, got {}", type_name(other)));
                None
            }
        }
    }

    fn boolean(&mut self, key: &'static str, r: &mut Report) -> Option<bool> {
        let (v, path) = self.present(key)?;
        match v {
            Value::Bool(b) => Some(*b),
            other => {
                r.error(&path, format!("must be a boolean, got {}", type_name(other)));
                None
            }
        }
    }

    /// A float accepting integers; `check` returns the rule's message when it fails.
    fn float(&mut self, key: &'static str, r: &mut Report, check: fn(f64) -> Option<&'static str>) -> Option<f64> {
        let (v, path) = self.present(key)?;
        let Some(x) = v.as_f64().filter(|_| v.is_number()) else {
            r.error(&path, format!("must be a number, got {}", type_name(v)));
            return None;
        };
        match check(x) {
            Some(rule) => {
                r.error(&path, format!("{rule}, got {x}"));
                None
            }
            None => Some(x),
        }
    }

    /// An integer (an integral float is accepted, as pydantic does).
    fn int(&mut self, key: &'static str, r: &mut Report, check: fn(i64) -> Option<&'static str>) -> Option<i64> {
        let (v, path) = self.present(key)?;
        let Some(x) = as_int(v) else {
            r.error(&path, format!("must be an integer, got {}", describe(v)));
            return None;
        };
        match check(x) {
            Some(rule) => {
                r.error(&path, format!("{rule}, got {x}"));
                None
            }
            None => Some(x),
        }
    }

    fn mapping(&mut self, key: &'static str, r: &mut Report) -> Option<Map<String, Value>> {
        let (v, path) = self.present(key)?;
        match v {
            Value::Object(m) => Some(m.clone()),
            other => {
                r.error(&path, format!("must be a mapping, got {}", type_name(other)));
                None
            }
        }
    }

    fn list(&mut self, key: &'static str, r: &mut Report) -> Option<(&'a Vec<Value>, String)> {
        let (v, path) = self.present(key)?;
        match v {
            Value::Array(items) => Some((items, path)),
            other => {
                r.error(&path, format!("must be a list, got {}", type_name(other)));
                None
            }
        }
    }

    fn string_list(&mut self, key: &'static str, r: &mut Report) -> Option<Vec<String>> {
        let (items, path) = self.list(key, r)?;
        let mut out = Vec::new();
        for (i, item) in items.iter().enumerate() {
            match item {
                Value::String(s) => out.push(s.clone()),
                other => r.error(&format!("{path}[{i}]"), format!("must be a string, got {}", type_name(other))),
            }
        }
        Some(out)
    }

    fn finish(self, extra: Extra, r: &mut Report) {
        for key in self.map.keys() {
            if !self.known.contains(&key.as_str()) {
                let path = join(&self.path, key);
                match extra {
                    Extra::Reject => r.error(&path, "unknown field (not permitted here)"),
                    Extra::Ignore => r.warn(&path, "unknown field, ignored"),
                }
            }
        }
    }
}

fn as_int(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => {
            n.as_i64().or_else(|| n.as_f64().filter(|f| f.fract() == 0.0 && f.abs() < 9.0e15).map(|f| f as i64))
        }
        _ => None,
    }
}

fn describe(v: &Value) -> String {
    match v {
        Value::Number(n) => format!("{n}"),
        Value::String(s) => format!("the string {s:?}"),
        other => type_name(other).to_string(),
    }
}

/// The longest duration any `*_s` option may name (about 31 years): a larger one cannot
/// become a timer (`1e20` panicked the controller).
const MAX_SECONDS: f64 = 1e9;
fn positive_seconds(x: f64) -> Option<&'static str> {
    positive(x).or_else(|| at_most_max_seconds(x))
}
fn non_negative_seconds(x: f64) -> Option<&'static str> {
    non_negative(x).or_else(|| at_most_max_seconds(x))
}
fn at_most_max_seconds(x: f64) -> Option<&'static str> {
    (!x.is_finite() || x > MAX_SECONDS).then_some("must be a finite number of seconds up to 1e9")
}
fn positive(x: f64) -> Option<&'static str> {
    (x <= 0.0).then_some("must be > 0")
}
fn non_negative(x: f64) -> Option<&'static str> {
    (x < 0.0).then_some("must be >= 0")
}
/// Ray: a share of one GPU, or a whole number of GPUs.
fn gpu_count(x: f64) -> Option<&'static str> {
    if x < 0.0 {
        Some("must be >= 0")
    } else if x > 1.0 && x.fract() != 0.0 {
        Some("must be a whole number when greater than 1")
    } else {
        None
    }
}
fn positive_int(x: i64) -> Option<&'static str> {
    (x <= 0).then_some("must be > 0")
}
fn non_negative_int(x: i64) -> Option<&'static str> {
    (x < 0).then_some("must be >= 0")
}
fn port(x: i64) -> Option<&'static str> {
    (!(0..=65535).contains(&x)).then_some("must be a port number between 0 and 65535")
}

/// Validates a whole document (already parsed from YAML or JSON).
pub(crate) fn serve_config(doc: &Value, r: &mut Report) -> Option<ServeConfig> {
    let mut top = Obj::new(String::new(), doc, r)?;
    let proxy_location = match top.string("proxy_location", r).as_deref() {
        None | Some("EveryNode") => ProxyLocation::EveryNode,
        Some("HeadOnly") => ProxyLocation::HeadOnly,
        Some("Disabled") => ProxyLocation::Disabled,
        Some(other) => {
            r.error("proxy_location", format!("must be one of Disabled, HeadOnly, EveryNode, got {other:?}"));
            ProxyLocation::EveryNode
        }
    };
    let http_options = match top.present("http_options") {
        Some((v, path)) => http_options(v, path, r),
        None => HttpOptions::default(),
    };
    let grpc_options = match top.present("grpc_options") {
        Some((v, path)) => grpc_options(v, path, r),
        None => GrpcOptions::default(),
    };
    let logging = top.present("logging_config").and_then(|(v, path)| logging_config(v, path, r));
    let controller_options = top.present("controller_options").map(|(v, path)| {
        controller_options(v, &path, r);
        v.clone()
    });
    let tracing = top.present("tracing_config").map(|(v, path)| {
        tracing_config(v, path, r);
        v.clone()
    });
    let target_capacity =
        top.float("target_capacity", r, |x| (!(0.0..=100.0).contains(&x)).then_some("must be between 0 and 100"));
    let mut applications = Vec::new();
    match top.field("applications") {
        None => r.error("applications", "field required"),
        Some((Value::Array(items), path)) => {
            for (i, item) in items.iter().enumerate() {
                if let Some(app) = application(item, format!("{path}[{i}]"), r) {
                    applications.push((i, app));
                }
            }
        }
        Some((other, path)) => r.error(&path, format!("must be a list, got {}", type_name(other))),
    }
    top.finish(Extra::Ignore, r);
    check_unique_apps(&applications, r);
    // The global logging_config applies to every application that has none (Ray's rule).
    let applications = applications
        .into_iter()
        .map(|(_, mut app)| {
            if app.logging_config.is_none() {
                app.logging_config = logging.clone();
            }
            app
        })
        .collect();
    Some(ServeConfig {
        proxy_location,
        http_options,
        grpc_options,
        logging_config: logging,
        controller_options,
        tracing_config: tracing,
        target_capacity,
        applications,
    })
}

/// Names and route prefixes must be unique across applications (Ray's messages). Each app comes
/// with its index in the document (an app that failed validation is missing from the list).
fn check_unique_apps(apps: &[(usize, ApplicationConfig)], r: &mut Report) {
    for (i, (index, app)) in apps.iter().enumerate() {
        if apps[..i].iter().any(|(_, a)| a.name == app.name) {
            r.error(
                &format!("applications[{index}].name"),
                format!("Found multiple configs for application \"{}\". Please remove all duplicates.", app.name),
            );
        }
        if let Some(prefix) = &app.route_prefix {
            if apps[..i].iter().any(|(_, a)| a.route_prefix.as_ref() == Some(prefix)) {
                r.error(
                    &format!("applications[{index}].route_prefix"),
                    format!(
                        "Found duplicate applications for route prefix \"{prefix}\". Please ensure each application's route_prefix is unique."
                    ),
                );
            }
        }
    }
}

fn http_options(v: &Value, path: String, r: &mut Report) -> HttpOptions {
    let mut out = HttpOptions::default();
    let Some(mut o) = Obj::new(path, v, r) else { return out };
    if let Some(host) = o.string("host", r) {
        out.host = host;
    }
    if let Some(p) = o.int("port", r, port) {
        out.port = p as u16;
    }
    if let Some(root) = o.string("root_path", r) {
        out.root_path = root;
    }
    out.request_timeout_s = o.float("request_timeout_s", r, positive_seconds);
    if let Some(k) = o.int("keep_alive_timeout_s", r, non_negative_int) {
        out.keep_alive_timeout_s = k as u64;
    }
    out.ssl_keyfile = o.string("ssl_keyfile", r);
    out.ssl_certfile = o.string("ssl_certfile", r);
    out.ssl_keyfile_password = o.string("ssl_keyfile_password", r);
    out.ssl_ca_certs = o.string("ssl_ca_certs", r);
    // Removed options that Ray rejects when they carry a value.
    if let Some((m, p)) = o.present("middlewares") {
        if m.as_array().is_some_and(|a| !a.is_empty()) {
            r.error(&p, "middlewares are not supported");
        }
    }
    if let Some((n, p)) = o.present("num_cpus") {
        if n.as_f64() != Some(0.0) {
            r.error(&p, "num_cpus is not supported in http_options");
        }
    }
    let _ = o.field("location");
    let _ = o.field("root_url");
    o.finish(Extra::Ignore, r);
    out
}

fn grpc_options(v: &Value, path: String, r: &mut Report) -> GrpcOptions {
    let mut out = GrpcOptions::default();
    let Some(mut o) = Obj::new(path, v, r) else { return out };
    if let Some(p) = o.int("port", r, port) {
        out.port = p as u16;
    }
    if let Some(list) = o.string_list("grpc_servicer_functions", r) {
        out.grpc_servicer_functions = list;
    }
    out.request_timeout_s = o.float("request_timeout_s", r, positive_seconds);
    if let Some(b) = o.boolean("enable_reflection", r) {
        out.enable_reflection = b;
    }
    o.finish(Extra::Ignore, r);
    out
}

const LOG_LEVELS: &[&str] = &["CRITICAL", "FATAL", "ERROR", "WARN", "WARNING", "INFO", "DEBUG", "NOTSET"];
const LOG_RECORD_ATTRS: &[&str] = &[
    "name",
    "msg",
    "args",
    "levelname",
    "levelno",
    "pathname",
    "filename",
    "module",
    "exc_info",
    "exc_text",
    "stack_info",
    "lineno",
    "funcName",
    "created",
    "msecs",
    "relativeCreated",
    "thread",
    "threadName",
    "processName",
    "process",
    "taskName",
];

fn logging_config(v: &Value, path: String, r: &mut Report) -> Option<LoggingConfig> {
    let mut o = Obj::new(path, v, r)?;
    let mut out = LoggingConfig::default();
    if let Some((enc, p)) = o.present("encoding") {
        match enc.as_str() {
            Some(e @ ("TEXT" | "JSON")) => out.encoding = Some(e.to_string()),
            _ => r.error(&p, format!("must be TEXT or JSON, got {}", describe(enc))),
        }
    }
    if let Some((level, p)) = o.present("log_level") {
        let ok = match level {
            Value::String(s) => LOG_LEVELS.contains(&s.as_str()),
            Value::Number(n) => n.is_i64() || n.is_u64(),
            _ => false,
        };
        if ok {
            out.log_level = Some(level.clone());
        } else {
            r.error(
                &p,
                format!("must be a logging level name ({}) or number, got {}", LOG_LEVELS.join(", "), describe(level)),
            );
        }
    }
    out.logs_dir = o.string("logs_dir", r);
    out.enable_access_log = o.boolean("enable_access_log", r);
    if let Some(attrs) = o.string_list("additional_log_standard_attrs", r) {
        for a in &attrs {
            if !LOG_RECORD_ATTRS.contains(&a.as_str()) {
                r.error(&join(&o.path, "additional_log_standard_attrs"), format!("{a:?} is not a LogRecord attribute"));
            }
        }
        out.additional_log_standard_attrs = Some(attrs);
    }
    o.finish(Extra::Reject, r);
    Some(out)
}

fn controller_options(v: &Value, path: &str, r: &mut Report) {
    let Some(mut o) = Obj::new(path.to_string(), v, r) else { return };
    if let Some((env, p)) = o.present("runtime_env") {
        if let Some(mut e) = Obj::new(p, env, r) {
            let _ = e.mapping("env_vars", r);
            e.finish(Extra::Reject, r);
        }
    }
    o.finish(Extra::Reject, r);
}

fn tracing_config(v: &Value, path: String, r: &mut Report) {
    let Some(mut o) = Obj::new(path, v, r) else { return };
    let _ = o.boolean("enabled", r);
    let _ = o.string("exporter_import_path", r);
    let _ = o.float("sampling_ratio", r, |x| (!(0.0..=1.0).contains(&x)).then_some("must be between 0.0 and 1.0"));
    o.finish(Extra::Reject, r);
}

/// `module.sub:attr` (one colon, not first or last) or `module.sub.attr` (a dot, not first or last).
fn import_path_error(p: &str) -> Option<String> {
    let colons = p.matches(':').count();
    let ok = if colons > 0 {
        colons == 1 && !p.starts_with(':') && !p.ends_with(':')
    } else {
        p.contains('.') && !p.starts_with('.') && !p.ends_with('.')
    };
    (!ok).then(|| {
        format!(
            "Got invalid import path \"{p}\". An import path must be of the form \"module.submodule:attribute\" or \"module.submodule.attribute\""
        )
    })
}

/// Ray's route prefix rules.
pub(crate) fn route_prefix_error(p: &str) -> Option<String> {
    if !p.starts_with('/') {
        Some(format!("Invalid route_prefix '{p}', must start with a forward slash ('/')."))
    } else if p != "/" && p.ends_with('/') {
        Some(format!("Invalid route_prefix '{p}', may not end with a trailing '/'."))
    } else if p.contains('{') || p.contains('}') {
        Some(format!("Invalid route_prefix '{p}', may not contain wildcards."))
    } else {
        None
    }
}

fn runtime_env(o: &mut Obj<'_>, r: &mut Report) -> Option<Map<String, Value>> {
    let env = o.mapping("runtime_env", r)?;
    let path = join(&o.path, "runtime_env");
    if let Some(wd) = env.get("working_dir") {
        check_uri(wd, &join(&path, "working_dir"), r);
    }
    if let Some(Value::Array(mods)) = env.get("py_modules") {
        for (i, m) in mods.iter().enumerate() {
            check_uri(m, &format!("{path}.py_modules[{i}]"), r);
        }
    }
    if let Some(vars) = env.get("env_vars") {
        match vars {
            Value::Object(m) => {
                for (k, v) in m {
                    if !v.is_string() {
                        r.error(&format!("{path}.env_vars.{k}"), format!("must be a string, got {}", type_name(v)));
                    }
                    if let Some(why) = env_var_refusal(k) {
                        r.error(&format!("{path}.env_vars.{k}"), why.to_string());
                    }
                }
            }
            other => r.error(&join(&path, "env_vars"), format!("must be a mapping, got {}", type_name(other))),
        }
    }
    Some(env)
}

/// Why `runtime_env.env_vars` may not set `name`, if it may not: variables that make the
/// dynamic loader or the interpreter run code other than the application's, and those Photon
/// sets itself for a replica.
pub fn env_var_refusal(name: &str) -> Option<&'static str> {
    if name.starts_with("LD_") || name.starts_with("DYLD_") {
        Some("the dynamic loader's variables cannot be set for replicas (they would load other code into Photon's processes)")
    } else if name == "PYTHONHOME" {
        Some("PYTHONHOME cannot be set for replicas (it swaps the interpreter's standard library); choose the interpreter with PHOTON_PYTHON or runtime_env instead")
    } else if name == "CUDA_VISIBLE_DEVICES" {
        Some("Photon assigns CUDA_VISIBLE_DEVICES from ray_actor_options.num_gpus, as Ray does")
    } else if name.starts_with("PHOTON_") {
        Some("PHOTON_* variables are Photon's own (credentials, the replica's code and settings)")
    } else {
        None
    }
}

fn check_uri(v: &Value, path: &str, r: &mut Report) {
    match v.as_str() {
        Some(s) if s.contains("://") => {}
        Some(s) => r.error(path, format!("must be a remote URI or a local:// URI, got {s:?}")),
        None => r.error(path, format!("must be a string, got {}", type_name(v))),
    }
}

fn application(v: &Value, path: String, r: &mut Report) -> Option<ApplicationConfig> {
    let mut o = Obj::new(path.clone(), v, r)?;
    let name = o.string("name", r).unwrap_or_else(|| d::APP_NAME.to_string());
    if name.is_empty() {
        r.error(&join(&path, "name"), "Application names must be nonempty.");
    }
    let route_prefix = match o.field("route_prefix") {
        None => Some(d::ROUTE_PREFIX.to_string()),
        Some((Value::Null, _)) => None,
        Some((Value::String(s), p)) => {
            if let Some(msg) = route_prefix_error(s) {
                r.error(&p, msg);
            }
            Some(s.clone())
        }
        Some((other, p)) => {
            r.error(&p, format!("must be a string or null, got {}", type_name(other)));
            None
        }
    };
    let import_path = match o.string("import_path", r) {
        Some(ip) => {
            if let Some(msg) = import_path_error(&ip) {
                r.error(&join(&path, "import_path"), msg);
            }
            ip
        }
        None => {
            if !o.map.contains_key("import_path") || o.map["import_path"].is_null() {
                r.error(&join(&path, "import_path"), "field required");
            }
            String::new()
        }
    };
    let runtime_env = runtime_env(&mut o, r).unwrap_or_default();
    let args = o.mapping("args", r).unwrap_or_default();
    let logging = o.present("logging_config").and_then(|(v, p)| logging_config(v, p, r));
    let external_scaler_enabled = o.boolean("external_scaler_enabled", r).unwrap_or(false);
    let _ = o.mapping("autoscaling_policy", r);
    for legacy in ["host", "port"] {
        let key: &'static str = legacy;
        if let Some((value, p)) = o.present(key) {
            r.error(
                &p,
                format!(
                    "{} \"{}\" is set in the config for application `{name}`. Please remove it and set {key} in the top level deploy config only.",
                    if key == "host" { "Host" } else { "Port" },
                    value.as_str().map(str::to_string).unwrap_or_else(|| value.to_string())
                ),
            );
        }
    }
    let mut deployments = Vec::new();
    if let Some((items, dpath)) = o.list("deployments", r) {
        for (i, item) in items.iter().enumerate() {
            let ipath = format!("{dpath}[{i}]");
            if let Some(dep) = deployment(item, ipath.clone(), r) {
                if deployments.iter().any(|x: &DeploymentOverride| x.name == dep.name) {
                    r.error(&join(&ipath, "name"), format!("deployment {:?} is listed more than once", dep.name));
                }
                if external_scaler_enabled
                    && (dep.autoscaling_config.is_some() || dep.num_replicas == Some(NumReplicas::Auto))
                {
                    r.error(&ipath, "autoscaling cannot be configured when external_scaler_enabled is true");
                }
                deployments.push(dep);
            }
        }
    }
    o.finish(Extra::Ignore, r);
    Some(ApplicationConfig {
        name,
        route_prefix,
        import_path,
        runtime_env,
        args,
        deployments,
        logging_config: logging,
        external_scaler_enabled,
        submitted: v.clone(),
    })
}

/// One deployment's options (config overrides, or code defaults written in the same form).
pub(crate) fn deployment(v: &Value, path: String, r: &mut Report) -> Option<DeploymentOverride> {
    let mut o = Obj::new(path.clone(), v, r)?;
    let mut out = DeploymentOverride::default();
    match o.string("name", r) {
        Some(n) if !n.is_empty() => out.name = n,
        Some(_) => r.error(&join(&path, "name"), "must be nonempty"),
        None => r.error(&join(&path, "name"), "field required"),
    }
    if let Some((n, p)) = o.present("num_replicas") {
        match n {
            Value::String(s) if s == "auto" => out.num_replicas = Some(NumReplicas::Auto),
            Value::Number(_) => match as_int(n) {
                Some(x) if x > 0 && x <= u32::MAX as i64 => out.num_replicas = Some(NumReplicas::Fixed(x as u32)),
                Some(x) => r.error(&p, format!("must be > 0, got {x}")),
                None => r.error(&p, format!("`num_replicas` must be an int or \"auto\", but got: {n}")),
            },
            other => r.error(&p, format!("`num_replicas` must be an int or \"auto\", but got: {}", describe(other))),
        }
    }
    out.max_ongoing_requests = o.int("max_ongoing_requests", r, positive_int).map(|x| x as u32);
    if let Some((q, p)) = o.present("max_queued_requests") {
        match q.as_i64() {
            Some(x) if x == -1 || x >= 1 => out.max_queued_requests = Some(x),
            _ => r.error(
                &p,
                format!("max_queued_requests must be -1 (no limit) or a positive integer, got {}", describe(q)),
            ),
        }
    }
    if let Some((b, p)) = o.present("backpressure_config") {
        out.backpressure_config = backpressure(b, p, r);
    }
    if let Some((u, _)) = o.field("user_config") {
        out.user_config = Some(u.clone());
    }
    if let Some((a, p)) = o.present("autoscaling_config") {
        out.autoscaling_config = autoscaling(a, p, r, out.num_replicas == Some(NumReplicas::Auto));
        if matches!(out.num_replicas, Some(NumReplicas::Fixed(_))) {
            r.error(
                &join(&path, "num_replicas"),
                "Manually setting num_replicas is not allowed when autoscaling_config is provided.",
            );
        }
    }
    out.graceful_shutdown_wait_loop_s = o.float("graceful_shutdown_wait_loop_s", r, non_negative_seconds);
    out.graceful_shutdown_timeout_s = o.float("graceful_shutdown_timeout_s", r, non_negative_seconds);
    out.health_check_period_s = o.float("health_check_period_s", r, positive_seconds);
    out.health_check_timeout_s = o.float("health_check_timeout_s", r, positive_seconds);
    if let Some((a, p)) = o.present("ray_actor_options") {
        out.ray_actor_options = actor_options(a, p, r);
    }
    if let Some((b, p)) = o.present("placement_group_bundles") {
        match b.as_array() {
            Some(bundles) if !bundles.is_empty() => {
                for (i, bundle) in bundles.iter().enumerate() {
                    let ok =
                        bundle.as_object().is_some_and(|m| m.values().all(|x| x.as_f64().is_some_and(|f| f >= 0.0)));
                    if !ok {
                        r.error(&format!("{p}[{i}]"), "must be a mapping of resource name to a number >= 0");
                    }
                }
                out.placement_group_bundles = Some(b.clone());
            }
            _ => r.error(&p, "must be a non-empty list of resource mappings"),
        }
    }
    if let Some(s) = o.string("placement_group_strategy", r) {
        if !["PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"].contains(&s.as_str()) {
            r.error(
                &join(&path, "placement_group_strategy"),
                format!("must be one of PACK, SPREAD, STRICT_PACK, STRICT_SPREAD, got {s:?}"),
            );
        } else if out.placement_group_bundles.is_none() {
            r.error(&join(&path, "placement_group_strategy"), "requires placement_group_bundles");
        }
        out.placement_group_strategy = Some(s);
    }
    if let Some((sel, p)) = o.present("placement_group_bundle_label_selector") {
        if out.placement_group_bundles.is_none() {
            r.error(&p, "requires placement_group_bundles");
        }
        out.placement_group_bundle_label_selector = Some(sel.clone());
    }
    out.max_replicas_per_node = o
        .int("max_replicas_per_node", r, |x| (!(1..=100).contains(&x)).then_some("must be between 1 and 100"))
        .map(|x| x as u32);
    if out.max_replicas_per_node.is_some() && out.placement_group_bundles.is_some() {
        r.error(&join(&path, "max_replicas_per_node"), "cannot be set together with placement_group_bundles");
    }
    if let Some(cfg) = o.mapping("request_router_config", r) {
        out.request_router_config = Some(Value::Object(cfg));
    }
    out.logging_config = o.present("logging_config").and_then(|(v, p)| logging_config(v, p, r));
    if let Some(g) = o.mapping("gang_scheduling_config", r) {
        out.gang_scheduling_config = Some(Value::Object(g));
    }
    if let Some((a, _)) = o.list("deployment_actors", r) {
        out.deployment_actors = Some(Value::Array(a.clone()));
    }
    out.rolling_update_percentage =
        o.float("rolling_update_percentage", r, |x| (!(x > 0.0 && x <= 1.0)).then_some("must be in (0, 1]"));
    out.max_surge_percent = o
        .int("max_surge_percent", r, |x| (!(0..=100).contains(&x)).then_some("must be between 0 and 100"))
        .map(|x| x as u32);
    if o.field("max_concurrent_queries").is_some() {
        r.warn(&join(&path, "max_concurrent_queries"), "removed in Ray 2.10 and ignored; use max_ongoing_requests");
    }
    o.finish(Extra::Ignore, r);
    Some(out)
}

fn backpressure(v: &Value, path: String, r: &mut Report) -> Option<BackpressureConfig> {
    let mut o = Obj::new(path.clone(), v, r)?;
    let mut out = BackpressureConfig::default();
    if let Some(code) = o.int("status_code", r, |x| (x != 503 && x != 429).then_some("must be 503 or 429")) {
        out.status_code = code as u16;
    }
    out.retry_after_s = o.float("retry_after_s", r, non_negative_seconds);
    o.finish(Extra::Reject, r);
    Some(out)
}

fn autoscaling(v: &Value, path: String, r: &mut Report, auto: bool) -> Option<AutoscalingConfig> {
    let mut o = Obj::new(path.clone(), v, r)?;
    let min_replicas =
        o.int("min_replicas", r, non_negative_int).map(|x| x as u32).unwrap_or(d::AUTOSCALING_MIN_REPLICAS);
    let initial_replicas = o.int("initial_replicas", r, non_negative_int).map(|x| x as u32);
    let default_max = if auto { d::AUTO_MAX_REPLICAS } else { d::AUTOSCALING_MAX_REPLICAS };
    let max_replicas =
        o.int("max_replicas", r, positive_int).map(|x| x as u32).unwrap_or(default_max.max(min_replicas));
    let target = o.float("target_ongoing_requests", r, positive).unwrap_or(d::TARGET_ONGOING_REQUESTS);
    let metrics_interval_s = o.float("metrics_interval_s", r, positive_seconds).unwrap_or(d::METRICS_INTERVAL_S);
    let look_back_period_s = o.float("look_back_period_s", r, positive_seconds).unwrap_or(d::LOOK_BACK_PERIOD_S);
    let smoothing_factor = o.float("smoothing_factor", r, positive).unwrap_or(1.0);
    let up_old = o.float("upscale_smoothing_factor", r, positive);
    let down_old = o.float("downscale_smoothing_factor", r, positive);
    let upscaling_factor = o.float("upscaling_factor", r, positive).or(up_old);
    let downscaling_factor = o.float("downscaling_factor", r, positive).or(down_old);
    let downscale_delay_s = o.float("downscale_delay_s", r, non_negative_seconds).unwrap_or(d::DOWNSCALE_DELAY_S);
    let downscale_to_zero_delay_s = o.float("downscale_to_zero_delay_s", r, non_negative_seconds);
    let upscale_delay_s = o.float("upscale_delay_s", r, non_negative_seconds).unwrap_or(d::UPSCALE_DELAY_S);
    let aggregation_function = match o.string("aggregation_function", r) {
        None => "mean".to_string(),
        Some(f) if ["mean", "max", "min"].contains(&f.to_lowercase().as_str()) => f.to_lowercase(),
        Some(f) => {
            r.error(&join(&path, "aggregation_function"), format!("must be one of mean, max, min, got {f:?}"));
            "mean".to_string()
        }
    };
    let policy = o.mapping("policy", r).map(Value::Object);
    // Ray checks these when the config is applied; reporting them with the rest is clearer.
    if max_replicas < min_replicas {
        r.error(
            &join(&path, "max_replicas"),
            format!("max_replicas ({max_replicas}) must be greater than or equal to min_replicas ({min_replicas})!"),
        );
    }
    if let Some(init) = initial_replicas {
        if init < min_replicas || init > max_replicas {
            r.error(
                &join(&path, "initial_replicas"),
                format!("must be between min_replicas ({min_replicas}) and max_replicas ({max_replicas}), got {init}"),
            );
        }
    }
    o.finish(Extra::Ignore, r);
    Some(AutoscalingConfig {
        min_replicas,
        initial_replicas,
        max_replicas,
        target_ongoing_requests: target,
        metrics_interval_s,
        look_back_period_s,
        smoothing_factor,
        upscaling_factor,
        downscaling_factor,
        downscale_delay_s,
        downscale_to_zero_delay_s,
        upscale_delay_s,
        aggregation_function,
        policy,
    })
}

fn actor_options(v: &Value, path: String, r: &mut Report) -> Option<RayActorOptions> {
    let mut o = Obj::new(path, v, r)?;
    let out = RayActorOptions {
        num_cpus: o.float("num_cpus", r, non_negative),
        num_gpus: o.float("num_gpus", r, gpu_count),
        memory: o.float("memory", r, non_negative),
        resources: o.mapping("resources", r),
        accelerator_type: o.string("accelerator_type", r),
        runtime_env: runtime_env(&mut o, r),
        label_selector: o.present("label_selector").map(|(v, _)| v.clone()),
        fallback_strategy: o.present("fallback_strategy").map(|(v, _)| v.clone()),
    };
    o.finish(Extra::Ignore, r);
    Some(out)
}
