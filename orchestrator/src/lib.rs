//! Starts and stops replicas. The controller asks for replicas by spec and learns about their
//! end through events; how a replica runs (a local process, or a Kubernetes pod with the
//! `kubernetes` feature) is the backend's business.

#![warn(missing_docs)]

#[cfg(feature = "kubernetes")]
pub mod kubernetes;
mod local;
pub mod resources;

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use serde_json::Value;

pub use local::{LocalOrchestrator, ERROR_FILE_ENV, USER_CONFIG_ENV};
pub use resources::{NodeResources, ResourceRequest, Usage};

/// This user's private directory for Photon's files on this machine (checkpoints of a fixed
/// controller port, replicas' error files): `photon-<uid>` in the temporary directory, made
/// with mode 0700. An existing one is used only if it is a directory (not a link) that this
/// user owns and nobody else can enter; otherwise the error says why.
pub fn private_dir() -> std::io::Result<std::path::PathBuf> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt};
    let uid = std::fs::metadata("/proc/self").map(|m| m.uid()).unwrap_or(u32::MAX);
    let dir = std::env::temp_dir().join(format!("photon-{uid}"));
    match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    let meta = std::fs::symlink_metadata(&dir)?;
    let refuse = |why: String| Err(std::io::Error::other(format!("refusing to use {}: {why}", dir.display())));
    if !meta.file_type().is_dir() {
        return refuse("it is not a directory".into());
    }
    if meta.uid() != uid {
        return refuse(format!("it belongs to user {}, not to this user ({uid})", meta.uid()));
    }
    if meta.mode() & 0o077 != 0 {
        return refuse(format!("others may enter it (mode {:o})", meta.mode() & 0o777));
    }
    Ok(dir)
}

/// Everything needed to start one replica.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplicaSpec {
    /// Unique replica id.
    pub replica_id: String,
    /// Application name.
    pub app: String,
    /// Deployment name.
    pub deployment: String,
    /// The application's import path.
    pub import_path: String,
    /// Controller URL the replica registers with.
    pub controller: String,
    /// Admission limit.
    pub max_ongoing_requests: u32,
    /// Initial `user_config`.
    pub user_config: Option<Value>,
    /// Environment of the replica (`runtime_env.env_vars`).
    pub env_vars: BTreeMap<String, String>,
    /// The image to run the replica in (`runtime_env.image_uri`; Kubernetes only).
    pub image: Option<String>,
    /// Environment entries that authenticate the replica to the other processes (the cluster
    /// token, its registration secret): set after `env_vars`, never from the config.
    pub secret_env: SecretEnv,
    /// Longest drain when stopping.
    pub graceful_shutdown_timeout: Duration,
    /// Drain poll interval (`graceful_shutdown_wait_loop_s`).
    pub graceful_shutdown_wait_loop: Duration,
    /// One log line per request.
    pub access_log: bool,
    /// `TEXT` or `JSON`.
    pub log_encoding: String,
    /// Python logging level, if configured.
    pub log_level: Option<String>,
    /// Write the replica's output to a file in this directory instead of the head's stderr.
    pub logs_dir: Option<String>,
    /// GPUs given to the replica (its `CUDA_VISIBLE_DEVICES`); empty when it asked for none.
    pub gpu_ids: Vec<u32>,
    /// What the replica asked for (`ray_actor_options`).
    pub resources: ResourceRequest,
    /// The deployment's version: replicas of one version share their code-level options.
    pub version: u64,
}

impl ReplicaSpec {
    /// The `photon replica ...` arguments (after the binary) that start this replica; the
    /// backend adds where it listens and where its output goes.
    pub fn replica_args(&self) -> Vec<String> {
        let mut args: Vec<String> = vec![
            "replica".into(),
            "--app".into(),
            self.app.clone(),
            "--deployment".into(),
            self.deployment.clone(),
            "--replica-id".into(),
            self.replica_id.clone(),
            "--import-path".into(),
            self.import_path.clone(),
            "--controller".into(),
            self.controller.clone(),
            "--max-ongoing-requests".into(),
            self.max_ongoing_requests.to_string(),
            "--graceful-shutdown-timeout-s".into(),
            self.graceful_shutdown_timeout.as_secs_f64().to_string(),
            "--graceful-shutdown-wait-loop-s".into(),
            self.graceful_shutdown_wait_loop.as_secs_f64().to_string(),
            "--log-encoding".into(),
            self.log_encoding.clone(),
        ];
        if !self.access_log {
            args.push("--no-access-log".into());
        }
        if let Some(level) = &self.log_level {
            args.extend(["--log-level".into(), level.clone()]);
        }
        args
    }
}

/// Environment entries holding secrets; `Debug` shows their names only.
#[derive(Clone, PartialEq, Default)]
pub struct SecretEnv(pub BTreeMap<String, String>);

impl std::fmt::Debug for SecretEnv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.0.keys()).finish()
    }
}

/// Something that happened to a replica the orchestrator started.
#[derive(Debug, Clone, PartialEq)]
pub enum ReplicaEvent {
    /// The replica's process (or pod) ended.
    Exited {
        /// Which replica.
        replica_id: String,
        /// How it ended, for status messages (e.g. `exit status: 1`, `signal: 9 (SIGKILL)`).
        how: String,
    },
    /// The replica cannot start yet for a reason outside it (its pod cannot be scheduled), or
    /// no longer waits for one (`why: None`).
    Waiting {
        /// Which replica.
        replica_id: String,
        /// Why it waits.
        why: Option<String>,
    },
}

/// Why a replica could not be started.
#[derive(Debug, thiserror::Error)]
pub enum OrchestratorError {
    /// The replica process could not be spawned.
    #[error("could not start replica {replica_id}: {source}")]
    Spawn {
        /// Which replica.
        replica_id: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The backend cannot be set up (Kubernetes settings, API server).
    #[error("{0}")]
    Setup(String),
}

/// Asks each running replica (`running`, read once the wait is armed, so no end is missed) to
/// stop with `stop`, then waits up to `wait` for `all_ended`, which the backend notifies when
/// its last replica is gone; false when some were left.
pub(crate) async fn stop_all_and_wait(
    all_ended: &tokio::sync::Notify,
    running: impl FnOnce() -> Vec<String>,
    stop: impl Fn(&str),
    wait: Duration,
) -> bool {
    let notified = all_ended.notified();
    tokio::pin!(notified);
    notified.as_mut().enable();
    let ids = running();
    if ids.is_empty() {
        return true;
    }
    for id in &ids {
        stop(id);
    }
    tokio::time::timeout(wait, notified).await.is_ok()
}

/// A backend that runs replicas.
pub trait Orchestrator: Send + Sync + 'static {
    /// Starts a replica; its end is reported as a [`ReplicaEvent`].
    fn start(&self, spec: ReplicaSpec) -> Result<(), OrchestratorError>;

    /// Asks a replica to stop: it drains for up to `grace`, then is killed.
    fn stop(&self, replica_id: &str, grace: Duration);

    /// Takes over a replica started by an earlier head (known by its process id locally, by its
    /// pod's labels on Kubernetes); its end is reported like any other's.
    fn adopt(&self, replica_id: &str, pid: u32);

    /// Called once recovery has adopted what it knew of: replicas the backend found that nobody
    /// adopted may go (the local backend finds none).
    fn adoption_done(&self) {}

    /// Ids of the replicas that run now.
    fn running(&self) -> Vec<String>;

    /// Stops every replica (grace, then kill) and resolves when all have ended.
    fn shutdown(&self, grace: Duration) -> Pin<Box<dyn Future<Output = ()> + Send + '_>>;
}
