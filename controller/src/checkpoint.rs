//! Controller checkpoints: the applied config and the replica registry, written after every
//! change so a restarted controller recovers its target state and re-adopts live replicas
//! instead of restarting them (Ray keeps the same in the GCS, on Redis for fault tolerance).
//!
//! Guarantees: the file store replaces the file atomically (write a temporary file, fsync,
//! rename), so a crash mid-write leaves the previous checkpoint intact. Saves are coalesced:
//! only the newest checkpoint is written.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Where checkpoints live.
#[derive(Debug, Clone, PartialEq)]
pub enum StateStore {
    /// A JSON file, replaced atomically.
    File(PathBuf),
    /// A key in Redis (`redis://HOST:PORT[/DB]`, `redis+unix:///PATH`), as Ray keeps GCS state
    /// for fault tolerance; one SET replaces the checkpoint atomically.
    Redis(String),
}

/// The Redis key holding the checkpoint.
pub const REDIS_KEY: &str = "photon:controller:checkpoint";

/// Why the store could not be used.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// The `--state-store` value is not understood.
    #[error("--state-store: {0}")]
    BadSpec(String),
    /// Reading or writing failed.
    #[error("state store {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The stored checkpoint does not parse.
    #[error("state store {path}: not a Photon checkpoint: {reason}")]
    Corrupt {
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
    },
}

/// One replica as the controller knew it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReplicaRecord {
    /// Replica id.
    pub replica_id: String,
    /// Application name.
    pub app: String,
    /// Deployment name.
    pub deployment: String,
    /// The options that needed new replicas when they changed (matches the deployment's).
    pub heavy_key: String,
    /// Control address.
    pub address: String,
    /// Data address.
    pub data_address: String,
    /// Process id.
    pub pid: u32,
    /// Unix start time.
    pub start_time_s: f64,
    /// The user_config it runs with.
    pub user_config: Option<Value>,
    /// Its admission limit.
    pub max_ongoing_requests: u32,
    /// The GPUs it was given.
    #[serde(default)]
    pub gpu_ids: Vec<u32>,
}

/// The instance's secrets among its own processes (`photon_router::cluster_auth`): a restarted
/// controller needs them to talk to the replicas it adopts and to check a registration.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterSecrets {
    /// Every Photon process of the instance presents it on the internal ports.
    pub cluster_token: String,
    /// The head's key for each replica's registration secret.
    pub registration_key: String,
}

impl std::fmt::Debug for ClusterSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClusterSecrets { .. }")
    }
}

impl ClusterSecrets {
    /// The instance's secrets: the cluster token from `PHOTON_CLUSTER_TOKEN` when set (a
    /// standalone proxy is given the same), else the checkpoint's (replicas adopted after a
    /// restart hold it), else a new one; the registration key from the checkpoint, else new.
    pub fn resolve(stored: Option<&ClusterSecrets>) -> Result<Self, photon_router::cluster_auth::ClusterAuthError> {
        use photon_router::cluster_auth::{random_token, token_from_env};
        let cluster_token = match (token_from_env(), stored) {
            (Some(token), _) => token,
            (None, Some(s)) => s.cluster_token.clone(),
            (None, None) => random_token()?,
        };
        let registration_key = match stored {
            Some(s) => s.registration_key.clone(),
            None => random_token()?,
        };
        Ok(ClusterSecrets { cluster_token, registration_key })
    }
}

/// Everything a restarted controller needs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Checkpoint {
    /// The last applied config, as a serve config document.
    pub config: Option<Value>,
    /// Running replicas.
    pub replicas: Vec<ReplicaRecord>,
    /// The instance's internal secrets (absent in checkpoints written before they existed).
    #[serde(default)]
    pub secrets: Option<ClusterSecrets>,
}

impl StateStore {
    /// Parses `file:PATH`, `redis://...` / `redis+unix://...`, or a bare path.
    pub fn parse(spec: &str) -> Result<Self, CheckpointError> {
        if let Some(path) = spec.strip_prefix("file:") {
            return Ok(StateStore::File(PathBuf::from(path)));
        }
        if spec.starts_with("redis://") || spec.starts_with("redis+unix://") || spec.starts_with("unix://") {
            redis::Client::open(spec).map_err(|e| CheckpointError::BadSpec(format!("{spec}: {e}")))?;
            return Ok(StateStore::Redis(spec.to_string()));
        }
        if spec.contains("://") {
            return Err(CheckpointError::BadSpec(format!(
                "unsupported store {spec:?}; use file:PATH or redis://HOST:PORT"
            )));
        }
        Ok(StateStore::File(PathBuf::from(spec)))
    }

    fn redis(url: &str) -> Result<redis::Connection, CheckpointError> {
        let io = |e: redis::RedisError| CheckpointError::Io {
            path: url.to_string(),
            source: std::io::Error::other(e.to_string()),
        };
        redis::Client::open(url).map_err(io)?.get_connection_with_timeout(std::time::Duration::from_secs(2)).map_err(io)
    }

    /// Reads the checkpoint, if there is one.
    pub fn load(&self) -> Result<Option<Checkpoint>, CheckpointError> {
        match self {
            StateStore::File(path) => {
                let name = path.display().to_string();
                match std::fs::read(path) {
                    Ok(bytes) => serde_json::from_slice(&bytes)
                        .map(Some)
                        .map_err(|e| CheckpointError::Corrupt { path: name, reason: e.to_string() }),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                    Err(source) => Err(CheckpointError::Io { path: name, source }),
                }
            }
            StateStore::Redis(url) => {
                let mut conn = Self::redis(url)?;
                let value: Option<Vec<u8>> = redis::cmd("GET").arg(REDIS_KEY).query(&mut conn).map_err(|e| {
                    CheckpointError::Io { path: url.clone(), source: std::io::Error::other(e.to_string()) }
                })?;
                value
                    .map(|bytes| {
                        serde_json::from_slice(&bytes)
                            .map_err(|e| CheckpointError::Corrupt { path: url.clone(), reason: e.to_string() })
                    })
                    .transpose()
            }
        }
    }

    /// Writes a checkpoint atomically.
    pub fn save(&self, checkpoint: &Checkpoint) -> Result<(), CheckpointError> {
        match self {
            StateStore::File(path) => {
                write_atomically(path, &serde_json::to_vec_pretty(checkpoint).unwrap_or_default())
                    .map_err(|source| CheckpointError::Io { path: path.display().to_string(), source })
            }
            StateStore::Redis(url) => {
                let mut conn = Self::redis(url)?;
                redis::cmd("SET")
                    .arg(REDIS_KEY)
                    .arg(serde_json::to_vec(checkpoint).unwrap_or_default())
                    .query::<()>(&mut conn)
                    .map_err(|e| CheckpointError::Io {
                        path: url.clone(),
                        source: std::io::Error::other(e.to_string()),
                    })
            }
        }
    }
}

fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    // A new file of a name nobody can guess, readable by this user only (a checkpoint holds
    // `runtime_env` values and the instance's internal secrets); `create_new` never follows a
    // link planted in its place.
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("photon-state");
    let tmp = dir.join(format!(".{name}.{:016x}.tmp", fastrand::u64(..)));
    {
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)?;
        let written = f.write_all(bytes).and_then(|()| f.sync_all());
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
    }
    std::fs::rename(&tmp, path)?;
    // Make the rename itself durable.
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_store_round_trips_and_replaces_atomically() {
        let dir = std::env::temp_dir().join(format!("photon-ckpt-{}", fastrand::u64(..)));
        let store = StateStore::parse(&format!("file:{}", dir.join("state.json").display())).unwrap();
        assert_eq!(store.load().unwrap(), None);
        let mut c = Checkpoint {
            config: Some(serde_json::json!({"applications": []})),
            replicas: Vec::new(),
            secrets: Some(ClusterSecrets { cluster_token: "t".into(), registration_key: "k".into() }),
        };
        store.save(&c).unwrap();
        assert_eq!(store.load().unwrap(), Some(c.clone()));
        c.config = None;
        store.save(&c).unwrap();
        assert_eq!(store.load().unwrap(), Some(c));
        // No temporary file is left behind, and the checkpoint is its owner's alone.
        let names: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names.len(), 1, "{names:?}");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.join("state.json")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{mode:o}");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_corrupt_checkpoint_is_reported() {
        let dir = std::env::temp_dir().join(format!("photon-ckpt-{}", fastrand::u64(..)));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("state.json");
        std::fs::write(&path, b"{half").unwrap();
        let err = StateStore::File(path).load().unwrap_err();
        assert!(err.to_string().contains("not a Photon checkpoint"), "{err}");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
