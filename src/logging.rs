//! Log output: `tracing` to stderr as text or JSON (`logging_config.encoding`), level from
//! `RUST_LOG` when set, else from `logging_config.log_level` (Python level names or numbers),
//! else `info`; colours only on a terminal.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// Python logging level (name or number) as a `tracing` level.
fn level(python: &str) -> &'static str {
    match python.trim().to_ascii_uppercase().as_str() {
        "CRITICAL" | "FATAL" | "ERROR" => "error",
        "WARN" | "WARNING" => "warn",
        "INFO" => "info",
        "DEBUG" => "debug",
        "NOTSET" => "trace",
        n => match n.parse::<i64>() {
            Ok(x) if x >= 40 => "error",
            Ok(x) if x >= 30 => "warn",
            Ok(x) if x >= 20 => "info",
            Ok(x) if x >= 10 => "debug",
            Ok(_) => "trace",
            Err(_) => "info",
        },
    }
}

/// Installs the global subscriber: `json` for `encoding: JSON`, `log_level` as configured.
pub fn init(json: bool, log_level: Option<&str>) {
    let default = format!("{},h2=warn,hyper=warn,tower=warn", log_level.map_or("info", level));
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_target(false);
    let _ =
        if json { builder.json().try_init() } else { builder.with_ansi(std::io::stderr().is_terminal()).try_init() };
}

/// The head's settings from the config's global `logging_config`.
pub fn init_from(config: Option<&photon_config::LoggingConfig>) {
    let json = config.and_then(|c| c.encoding.as_deref()) == Some("JSON");
    let level = config.and_then(|c| c.log_level.as_ref()).map(|v| match v {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    });
    init(json, level.as_deref());
}
