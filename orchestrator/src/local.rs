//! The local backend: each replica is a child process (`photon replica ...`) in its own process
//! group, so a terminal's Ctrl-C reaches only the head, which then stops replicas gracefully:
//! SIGTERM, then SIGKILL after the grace period. Replicas also exit by themselves if the head
//! dies (they watch their parent), so no replica outlives the head.

use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::process::Command;
use tokio::sync::{mpsc, Notify};

use crate::{Orchestrator, OrchestratorError, ReplicaEvent, ReplicaSpec};

/// Environment variable carrying the replica's initial `user_config` as JSON.
pub const USER_CONFIG_ENV: &str = "PHOTON_REPLICA_USER_CONFIG";

/// Environment variable naming the file where a replica that cannot start writes why; the
/// reason then joins the replica's exit in the deployment's status message.
pub const ERROR_FILE_ENV: &str = "PHOTON_REPLICA_ERROR_FILE";

fn error_file(replica_id: &str) -> PathBuf {
    std::env::temp_dir().join("photon").join(format!("replica-{replica_id}.error"))
}

/// Runs replicas as child processes of this process.
pub struct LocalOrchestrator {
    binary: PathBuf,
    /// Replicas exit when the head goes away (no state store to come back to).
    tie_to_head: bool,
    children: Arc<Mutex<HashMap<String, u32>>>,
    events: mpsc::UnboundedSender<ReplicaEvent>,
    all_exited: Arc<Notify>,
}

impl LocalOrchestrator {
    /// Replicas run `binary replica ...`; their ends are sent to `events`.
    /// `tie_to_head`: replicas exit when this process dies (set when no state store lets a
    /// restarted head adopt them).
    pub fn new(binary: PathBuf, events: mpsc::UnboundedSender<ReplicaEvent>, tie_to_head: bool) -> Self {
        LocalOrchestrator { binary, tie_to_head, children: Arc::default(), events, all_exited: Arc::new(Notify::new()) }
    }

    fn ended(
        children: &Mutex<HashMap<String, u32>>,
        all_exited: &Notify,
        events: &mpsc::UnboundedSender<ReplicaEvent>,
        replica_id: String,
        how: String,
    ) {
        let empty = {
            let mut map = children.lock().unwrap_or_else(|e| e.into_inner());
            map.remove(&replica_id);
            map.is_empty()
        };
        let _ = events.send(ReplicaEvent::Exited { replica_id, how });
        if empty {
            all_exited.notify_waiters();
        }
    }

    fn signal(&self, replica_id: &str, signal: Signal) -> bool {
        let pid = self.children.lock().unwrap_or_else(|e| e.into_inner()).get(replica_id).copied();
        match pid {
            Some(pid) => signal_process(pid, Some(signal)),
            None => false,
        }
    }
}

/// Sends `signal` (`None`: only probes) to process `pid`; `false` when it is gone. A process
/// id comes from a registration or a checkpoint, so only an ordinary one is signalled: as an
/// `i32`, 0 and -1 (`u32::MAX`) would name a process group or every process, 1 is init.
fn signal_process(pid: u32, signal: Option<Signal>) -> bool {
    match i32::try_from(pid) {
        Ok(pid) if pid > 1 => kill(Pid::from_raw(pid), signal).is_ok(),
        _ => {
            tracing::warn!(pid, "not signalling a process id that names no single process");
            false
        }
    }
}

/// `DIR/replica_<app>_<deployment>_<id>.log`, as Ray names replica log files.
fn log_file(dir: &str, spec: &ReplicaSpec) -> std::io::Result<std::fs::File> {
    std::fs::create_dir_all(dir)?;
    let path =
        std::path::Path::new(dir).join(format!("replica_{}_{}_{}.log", spec.app, spec.deployment, spec.replica_id));
    std::fs::OpenOptions::new().create(true).append(true).open(path)
}

impl Orchestrator for LocalOrchestrator {
    fn start(&self, spec: ReplicaSpec) -> Result<(), OrchestratorError> {
        let mut cmd = Command::new(&self.binary);
        cmd.args(spec.replica_args())
            .args(if self.tie_to_head { &["--exit-with-parent"][..] } else { &[][..] })
            .envs(&spec.env_vars)
            .envs(&spec.secret_env.0)
            .env_remove(USER_CONFIG_ENV)
            .process_group(0)
            .kill_on_drop(true);
        if let Some(cfg) = &spec.user_config {
            cmd.env(USER_CONFIG_ENV, cfg.to_string());
        }
        let error_file = error_file(&spec.replica_id);
        if let Some(dir) = error_file.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        cmd.env(ERROR_FILE_ENV, &error_file);
        if !spec.gpu_ids.is_empty() {
            let ids: Vec<String> = spec.gpu_ids.iter().map(u32::to_string).collect();
            cmd.env("CUDA_VISIBLE_DEVICES", ids.join(","));
        }
        if let Some(dir) = &spec.logs_dir {
            let file = log_file(dir, &spec)
                .map_err(|source| OrchestratorError::Spawn { replica_id: spec.replica_id.clone(), source })?;
            cmd.stderr(
                file.try_clone()
                    .map_err(|source| OrchestratorError::Spawn { replica_id: spec.replica_id.clone(), source })?,
            );
            cmd.stdout(file);
        }
        let mut child =
            cmd.spawn().map_err(|source| OrchestratorError::Spawn { replica_id: spec.replica_id.clone(), source })?;
        let pid = child.id().unwrap_or_default();
        self.children.lock().unwrap_or_else(|e| e.into_inner()).insert(spec.replica_id.clone(), pid);
        tracing::info!(replica = %spec.replica_id, app = %spec.app, deployment = %spec.deployment, pid, "replica process started");
        let children = self.children.clone();
        let events = self.events.clone();
        let all_exited = self.all_exited.clone();
        let replica_id = spec.replica_id;
        tokio::spawn(async move {
            let mut how = match child.wait().await {
                Ok(status) => status.to_string(),
                Err(e) => format!("wait failed: {e}"),
            };
            if let Ok(why) = std::fs::read_to_string(&error_file) {
                let _ = std::fs::remove_file(&error_file);
                if !why.trim().is_empty() {
                    how = format!("{how}: {}", why.trim());
                }
            }
            Self::ended(&children, &all_exited, &events, replica_id, how);
        });
        Ok(())
    }

    fn adopt(&self, replica_id: &str, pid: u32) {
        self.children.lock().unwrap_or_else(|e| e.into_inner()).insert(replica_id.to_string(), pid);
        let (children, events, all_exited) = (self.children.clone(), self.events.clone(), self.all_exited.clone());
        let replica_id = replica_id.to_string();
        // Not our child: watch the process id (signal 0 probes it) instead of waiting on it.
        tokio::spawn(async move {
            while signal_process(pid, None) {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Self::ended(&children, &all_exited, &events, replica_id, "adopted process ended".to_string());
        });
    }

    fn stop(&self, replica_id: &str, grace: Duration) {
        if !self.signal(replica_id, Signal::SIGTERM) {
            return;
        }
        let children = self.children.clone();
        let replica_id = replica_id.to_string();
        tokio::spawn(async move {
            tokio::time::sleep(grace).await;
            let pid = children.lock().unwrap_or_else(|e| e.into_inner()).get(&replica_id).copied();
            if let Some(pid) = pid {
                tracing::warn!(replica = %replica_id, "replica did not stop within its grace period; killing it");
                signal_process(pid, Some(Signal::SIGKILL));
            }
        });
    }

    fn running(&self) -> Vec<String> {
        self.children.lock().unwrap_or_else(|e| e.into_inner()).keys().cloned().collect()
    }

    fn shutdown(&self, grace: Duration) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(async move {
            let term = |id: &str| {
                self.signal(id, Signal::SIGTERM);
            };
            if crate::stop_all_and_wait(&self.all_exited, || self.running(), term, grace).await {
                return;
            }
            let kill = |id: &str| {
                tracing::warn!(replica = %id, "replica did not stop within its grace period; killing it");
                self.signal(id, Signal::SIGKILL);
            };
            crate::stop_all_and_wait(&self.all_exited, || self.running(), kill, Duration::from_secs(5)).await;
        })
    }
}

#[cfg(test)]
mod signal_tests {
    use super::*;

    #[test]
    fn only_ordinary_process_ids_are_signalled() {
        for pid in [0, 1, u32::MAX, i32::MAX as u32 + 1] {
            assert!(!signal_process(pid, None), "{pid}");
        }
        assert!(signal_process(std::process::id(), None));
    }
}
