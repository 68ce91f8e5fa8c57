//! The `user_config` keys of the model deployments, checked with errors that name the key.

use std::path::PathBuf;
use std::time::Duration;

use photon_replica::batch::BatchOptions;
use photon_replica::DeploymentError;
use serde_json::{Map, Value};

/// Where a model runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceKind {
    /// The CPU (candle's CPU backend, using every core the process may use).
    Cpu,
    /// The first GPU this process sees (`CUDA_VISIBLE_DEVICES` picks which one).
    Cuda,
}

impl DeviceKind {
    /// The candle device, or why it cannot be had.
    pub fn open(self) -> Result<candle_core::Device, DeploymentError> {
        match self {
            DeviceKind::Cpu => Ok(candle_core::Device::Cpu),
            DeviceKind::Cuda if !candle_core::utils::cuda_is_available() => Err(DeploymentError(
                "user_config.device is \"cuda\" but this photon binary was built without the `cuda` feature \
                 (build it with scripts/build-cuda.sh)"
                    .into(),
            )),
            DeviceKind::Cuda => candle_core::Device::new_cuda(0).map_err(|e| {
                DeploymentError(format!("user_config.device is \"cuda\" but no GPU could be opened: {e}"))
            }),
        }
    }
}

/// The options every model deployment takes.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelOptions {
    /// `model_dir` (embeddings) or `model_path` (GGUF text generation).
    pub location: PathBuf,
    /// `device`: `cpu` (default) or `cuda`.
    pub device: DeviceKind,
    /// `model_name`: what answers report as `model` (default: the file or folder name).
    pub model_name: String,
    /// `max_batch_size`, `batch_wait_timeout_s`, `max_concurrent_batches` (embeddings only).
    pub batch: BatchOptions,
}

impl ModelOptions {
    /// Whether the loaded model can stay when going from `self` to `next`.
    pub fn same_model(&self, next: &ModelOptions) -> bool {
        self.location == next.location && self.device == next.device
    }
}

/// Which deployment's keys to accept.
#[derive(Debug, Clone, Copy)]
pub struct Keys {
    /// The key naming the model's location.
    pub location: &'static str,
    /// What the location must hold, for the error when it is missing.
    pub location_help: &'static str,
    /// Whether the batching keys apply.
    pub batching: bool,
}

const BATCH_KEYS: [&str; 3] = ["max_batch_size", "batch_wait_timeout_s", "max_concurrent_batches"];

/// Parses `user_config` for a deployment that takes `keys`.
pub fn parse(user_config: Option<&Value>, keys: Keys) -> Result<ModelOptions, DeploymentError> {
    let empty = Map::new();
    let cfg = match user_config {
        None => &empty,
        Some(Value::Object(m)) => m,
        Some(other) => return Err(DeploymentError(format!("user_config must be a mapping, got {other}"))),
    };
    for key in cfg.keys() {
        let known = key == keys.location
            || key == "device"
            || key == "model_name"
            || (keys.batching && BATCH_KEYS.contains(&key.as_str()));
        if !known {
            let why = if BATCH_KEYS.contains(&key.as_str()) {
                "this deployment runs one sequence at a time and does not batch".to_string()
            } else {
                let mut accepted = vec![keys.location, "device", "model_name"];
                if keys.batching {
                    accepted.extend(BATCH_KEYS);
                }
                format!("accepted keys: {}", accepted.join(", "))
            };
            return Err(DeploymentError(format!("user_config.{key} is not a known option ({why})")));
        }
    }
    let configured = match cfg.get(keys.location) {
        Some(Value::String(s)) if !s.is_empty() => PathBuf::from(s),
        Some(other) => {
            return Err(DeploymentError(format!("user_config.{} must be a path string, got {other}", keys.location)))
        }
        None => {
            return Err(DeploymentError(format!("user_config.{} is required: {}", keys.location, keys.location_help)))
        }
    };
    let device = match cfg.get("device") {
        None => DeviceKind::Cpu,
        Some(Value::String(s)) if s == "cpu" => DeviceKind::Cpu,
        Some(Value::String(s)) if s == "cuda" => DeviceKind::Cuda,
        Some(other) => {
            return Err(DeploymentError(format!("user_config.device must be \"cpu\" or \"cuda\", got {other}")))
        }
    };
    // Only under the path roots: a config cannot have any file on the machine read.
    let location = photon_config::paths::PathRoots::from_env()
        .confine(&configured)
        .map_err(|why| DeploymentError(format!("user_config.{}: {why}", keys.location)))?;
    let model_name = match cfg.get("model_name") {
        None => configured.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => return Err(DeploymentError(format!("user_config.model_name must be a string, got {other}"))),
    };
    let defaults = BatchOptions::default();
    let batch = BatchOptions {
        max_batch_size: positive_int(cfg, "max_batch_size")?.unwrap_or(defaults.max_batch_size),
        batch_wait_timeout: match cfg.get("batch_wait_timeout_s") {
            None => defaults.batch_wait_timeout,
            Some(v) => match v.as_f64() {
                Some(s) if s >= 0.0 && s.is_finite() => Duration::from_secs_f64(s),
                _ => {
                    return Err(DeploymentError(format!(
                        "user_config.batch_wait_timeout_s must be a non-negative number of seconds, got {v}"
                    )))
                }
            },
        },
        max_concurrent_batches: positive_int(cfg, "max_concurrent_batches")?.unwrap_or(defaults.max_concurrent_batches),
    };
    batch.validate("user_config")?;
    Ok(ModelOptions { location, device, model_name, batch })
}

fn positive_int(cfg: &Map<String, Value>, key: &str) -> Result<Option<usize>, DeploymentError> {
    match cfg.get(key) {
        None => Ok(None),
        Some(v) => match v.as_u64() {
            Some(n) if n >= 1 => Ok(Some(n as usize)),
            _ => Err(DeploymentError(format!("user_config.{key} must be a positive integer, got {v}"))),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const EMBED: Keys = Keys { location: "model_dir", location_help: "a folder", batching: true };
    const GENERATE: Keys = Keys { location: "model_path", location_help: "a GGUF file", batching: false };

    #[test]
    fn defaults_and_overrides() {
        let o = parse(Some(&json!({"model_dir": "models/minilm"})), EMBED).unwrap();
        assert_eq!(o.device, DeviceKind::Cpu);
        assert_eq!(o.model_name, "minilm");
        assert_eq!(o.batch, BatchOptions::default());
        let o = parse(
            Some(&json!({"model_dir": "m", "device": "cuda", "max_batch_size": 32, "batch_wait_timeout_s": 0.05})),
            EMBED,
        )
        .unwrap();
        assert_eq!((o.device, o.batch.max_batch_size), (DeviceKind::Cuda, 32));
        assert_eq!(o.batch.batch_wait_timeout, Duration::from_millis(50));
    }

    #[test]
    fn errors_name_the_key() {
        let err = |cfg: Value, keys| parse(Some(&cfg), keys).unwrap_err().0;
        assert!(err(json!({}), EMBED).contains("user_config.model_dir is required"));
        assert!(err(json!({"model_dir": "m", "device": "tpu"}), EMBED).contains("user_config.device"));
        assert!(err(json!({"model_dir": "m", "max_batch_size": 0}), EMBED).contains("user_config.max_batch_size"));
        assert!(err(json!({"model_dir": "m", "batch_wait_timeout_s": -1}), EMBED).contains("batch_wait_timeout_s"));
        assert!(err(json!({"model_dir": "m", "modle": 1}), EMBED).contains("user_config.modle is not a known option"));
        assert!(err(json!({"model_path": "m.gguf", "max_batch_size": 8}), GENERATE).contains("does not batch"));
        assert!(parse(Some(&json!([1])), EMBED).unwrap_err().0.contains("must be a mapping"));
    }
}
