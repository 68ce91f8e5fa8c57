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

fn error_file(replica_id: &str) -> std::io::Result<PathBuf> {
    Ok(crate::private_dir()?.join(format!("replica-{replica_id}.error")))
}

/// Runs replicas as child processes of this process.
pub struct LocalOrchestrator {
    binary: PathBuf,
    /// Replicas exit when the head goes away (no state store to come back to).
    tie_to_head: bool,
    children: Arc<Mutex<HashMap<String, ProcessIdentity>>>,
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
        children: &Mutex<HashMap<String, ProcessIdentity>>,
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
        let process = self.children.lock().unwrap_or_else(|e| e.into_inner()).get(replica_id).copied();
        match process {
            Some(process) => process.signal(Some(signal)),
            None => false,
        }
    }
}

/// A process this backend may signal: its id and when it started (clock ticks since boot, from
/// `/proc/PID/stat`), so that an id the kernel has given to another process since is never
/// signalled. Where `/proc` cannot tell (another OS), the id alone.
#[derive(Debug, Clone, Copy, PartialEq)]
struct ProcessIdentity {
    pid: u32,
    started: Option<u64>,
}

impl ProcessIdentity {
    /// The process `pid` as it is now.
    fn of(pid: u32) -> Self {
        ProcessIdentity { pid, started: process_start(pid) }
    }

    /// The process `pid` if it is replica `replica_id` (its command line says so): a process id
    /// from a checkpoint may name anything by the time it is read.
    fn replica(pid: u32, replica_id: &str) -> Option<Self> {
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        let named = args.windows(2).any(|w| w[0] == b"--replica-id" && w[1] == replica_id.as_bytes());
        (named && args.iter().any(|a| *a == b"replica")).then(|| ProcessIdentity::of(pid))
    }

    /// Sends `signal` (`None`: only probes) if the process is still the one identified.
    fn signal(&self, signal: Option<Signal>) -> bool {
        if self.started.is_some() && process_start(self.pid) != self.started {
            return false;
        }
        signal_process(self.pid, signal)
    }
}

/// When process `pid` started, in clock ticks since boot (field 22 of `/proc/PID/stat`).
fn process_start(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces: count after it.
    stat.rsplit_once(')')?.1.split_whitespace().nth(19)?.parse().ok()
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
        let error_file = error_file(&spec.replica_id)
            .map_err(|source| OrchestratorError::Spawn { replica_id: spec.replica_id.clone(), source })?;
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
        self.children
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(spec.replica_id.clone(), ProcessIdentity::of(pid));
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
        let (children, events, all_exited) = (self.children.clone(), self.events.clone(), self.all_exited.clone());
        let Some(process) = ProcessIdentity::replica(pid, replica_id) else {
            tracing::warn!(replica = %replica_id, pid, "process {pid} is not replica {replica_id}; not adopting it");
            let how = format!("process {pid} is no longer replica {replica_id}");
            return Self::ended(&children, &all_exited, &events, replica_id.to_string(), how);
        };
        children.lock().unwrap_or_else(|e| e.into_inner()).insert(replica_id.to_string(), process);
        let replica_id = replica_id.to_string();
        // Not our child: watch the process (signal 0 probes it) instead of waiting on it.
        tokio::spawn(async move {
            while process.signal(None) {
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
            let process = children.lock().unwrap_or_else(|e| e.into_inner()).get(&replica_id).copied();
            if let Some(process) = process {
                tracing::warn!(replica = %replica_id, "replica did not stop within its grace period; killing it");
                process.signal(Some(Signal::SIGKILL));
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

    #[test]
    fn a_process_is_signalled_only_while_it_is_the_one_identified() {
        let me = ProcessIdentity::of(std::process::id());
        assert!(me.started.is_some(), "/proc tells when this process started");
        assert!(me.signal(None));
        let reused = ProcessIdentity { started: me.started.map(|t| t + 1), ..me };
        assert!(!reused.signal(None), "an id now naming a process started at another time");
        assert_eq!(ProcessIdentity::replica(std::process::id(), "abc"), None, "the test binary is no replica");
    }
}
