//! **For tests only.** The kubelet's part: every pod that appears in the fake API server is
//! handed to a policy that either starts a local process for it or lets it run with none; the
//! pod then turns Running and Ready with IP 127.0.0.1. A process that ends makes its pod
//! `Failed` or `Succeeded` with the container's exit code and termination message (the file
//! the pod's `PHOTON_REPLICA_ERROR_FILE` names, as the kubelet reads `/dev/termination-log`).
//! A pod that is deleted gets its process stopped: SIGTERM, then SIGKILL after its grace.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::{Collection, FakeApiServer};

/// A pod's running program, as the kubelet sees it.
pub trait PodProcess: Send {
    /// `Some((exit code, termination message))` once it has ended.
    fn exited(&mut self) -> Option<(i32, String)>;
    /// Asks it to stop (SIGTERM).
    fn terminate(&mut self);
    /// Stops it now (SIGKILL).
    fn kill(&mut self);
}

/// What the kubelet does with a new pod.
pub enum PodOutcome {
    /// Runs this process for the pod.
    Process(Box<dyn PodProcess>),
    /// Marks the pod Running and Ready with no process behind it.
    NoProcess,
    /// Leaves the pod Pending, unschedulable for the reason given (the scheduler's message).
    Unschedulable(String),
}

/// A child process started from a pod's container.
pub struct ChildProcess {
    child: std::process::Child,
    message_file: PathBuf,
}

impl PodProcess for ChildProcess {
    fn exited(&mut self) -> Option<(i32, String)> {
        use std::os::unix::process::ExitStatusExt;
        let status = self.child.try_wait().ok()??;
        let code = status.code().unwrap_or_else(|| 128 + status.signal().unwrap_or(0));
        let message = std::fs::read_to_string(&self.message_file).unwrap_or_default();
        let _ = std::fs::remove_file(&self.message_file);
        Some((code, message))
    }
    fn terminate(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
    }
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The value of a container env var: its `value`, or the downward-API fields a pod can name.
fn env_value(pod: &Value, var: &Value) -> String {
    if let Some(v) = var["value"].as_str() {
        return v.to_string();
    }
    match var.pointer("/valueFrom/fieldRef/fieldPath").and_then(Value::as_str) {
        Some("status.podIP") | Some("status.hostIP") => "127.0.0.1".into(),
        Some("metadata.name") => pod["metadata"]["name"].as_str().unwrap_or_default().into(),
        Some("metadata.namespace") => pod["metadata"]["namespace"].as_str().unwrap_or_default().into(),
        Some("metadata.uid") => pod["metadata"]["uid"].as_str().unwrap_or_default().into(),
        Some(path) => {
            let label = path.strip_prefix("metadata.labels['").and_then(|p| p.strip_suffix("']"));
            label.and_then(|l| pod["metadata"]["labels"][l].as_str()).unwrap_or_default().into()
        }
        None => String::new(),
    }
}

/// Kubernetes' `$(VAR)` expansion in command and args.
fn expand(text: &str, env: &HashMap<String, String>) -> String {
    let mut out = text.to_string();
    for (k, v) in env {
        out = out.replace(&format!("$({k})"), v);
    }
    out
}

/// Starts the pod's first container as a local process; `programs` maps the container's
/// `command[0]` (e.g. `photon`) to a local binary. The child's stdout and stderr go to
/// `log`, when given.
pub fn run_container(
    pod: &Value,
    programs: &HashMap<String, PathBuf>,
    log: Option<std::fs::File>,
) -> std::io::Result<ChildProcess> {
    let container = &pod["spec"]["containers"][0];
    let mut env: HashMap<String, String> = HashMap::new();
    for var in container["env"].as_array().cloned().unwrap_or_default() {
        if let Some(name) = var["name"].as_str() {
            env.insert(name.to_string(), env_value(pod, &var));
        }
    }
    let words: Vec<String> = container["command"]
        .as_array()
        .into_iter()
        .flatten()
        .chain(container["args"].as_array().into_iter().flatten())
        .filter_map(Value::as_str)
        .map(|w| expand(w, &env))
        .collect();
    let Some((program, args)) = words.split_first() else {
        return Err(std::io::Error::other("the container has no command"));
    };
    let program = programs.get(program).cloned().unwrap_or_else(|| PathBuf::from(program));
    let message_file = std::env::temp_dir().join(format!(
        "fake-kubelet-{}-{}.termination",
        std::process::id(),
        pod["metadata"]["uid"].as_str().unwrap_or("pod")
    ));
    // The kubelet's termination-log file, here a temporary file.
    env.insert("PHOTON_REPLICA_ERROR_FILE".into(), message_file.display().to_string());
    let mut cmd = Command::new(program);
    cmd.args(args).envs(&env);
    // The image's working directory, as the container's `workingDir` overrides it.
    if let Some(dir) = container["workingDir"].as_str() {
        cmd.current_dir(dir);
    }
    match log {
        Some(file) => {
            cmd.stderr(file.try_clone()?);
            cmd.stdout(file);
        }
        None => {
            cmd.stdout(std::process::Stdio::null());
        }
    }
    Ok(ChildProcess { child: cmd.spawn()?, message_file })
}

struct RunningPod {
    namespace: String,
    name: String,
    process: Option<Box<dyn PodProcess>>,
    /// When SIGTERM was sent, and the grace before SIGKILL.
    stopping: Option<(Instant, Duration)>,
}

/// The fake kubelet; it stops every process it started when dropped.
pub struct FakeKubelet {
    stop: Arc<Mutex<bool>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for FakeKubelet {
    fn drop(&mut self) {
        *self.stop.lock().unwrap_or_else(|e| e.into_inner()) = true;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn set_running(server: &FakeApiServer, ns: &str, name: &str) {
    server.update(&Collection::pods(), ns, name, |pod| {
        let containers: Vec<Value> = pod["spec"]["containers"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|c| json!({"name": c["name"], "image": c["image"].as_str().unwrap_or_default(), "imageID": "", "ready": true, "restartCount": 0, "started": true, "state": {"running": {"startedAt": crate::now_rfc3339()}}}))
            .collect();
        pod["status"] = json!({
            "phase": "Running", "podIP": "127.0.0.1", "podIPs": [{"ip": "127.0.0.1"}], "hostIP": "127.0.0.1",
            "startTime": crate::now_rfc3339(),
            "conditions": [{"type": "PodScheduled", "status": "True"}, {"type": "Ready", "status": "True"}, {"type": "ContainersReady", "status": "True"}],
            "containerStatuses": containers,
        });
    });
}

fn set_unschedulable(server: &FakeApiServer, ns: &str, name: &str, message: &str) {
    server.update(&Collection::pods(), ns, name, |pod| {
        pod["status"] = json!({"phase": "Pending", "conditions": [{"type": "PodScheduled",
            "status": "False", "reason": "Unschedulable", "message": message}]});
    });
}

fn set_ended(server: &FakeApiServer, ns: &str, name: &str, code: i32, message: &str) {
    server.update(&Collection::pods(), ns, name, |pod| {
        pod["status"]["phase"] = json!(if code == 0 { "Succeeded" } else { "Failed" });
        pod["status"]["conditions"] = json!([{"type": "PodScheduled", "status": "True"}, {"type": "Ready", "status": "False", "reason": "PodCompleted"}]);
        if let Some(cs) = pod["status"]["containerStatuses"].as_array_mut() {
            if let Some(c) = cs.first_mut() {
                c["ready"] = json!(false);
                c["state"] = json!({"terminated": {"exitCode": code, "reason": if code == 0 { "Completed" } else { "Error" }, "message": message}});
            }
        }
    });
}

impl FakeKubelet {
    /// Watches `server` for pods (every 50 ms) and handles each new one with `policy`.
    pub fn start(server: Arc<FakeApiServer>, policy: impl Fn(&Value) -> PodOutcome + Send + 'static) -> FakeKubelet {
        let stop = Arc::new(Mutex::new(false));
        let stopped = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut pods: HashMap<String, RunningPod> = HashMap::new();
            loop {
                if *stopped.lock().unwrap_or_else(|e| e.into_inner()) {
                    for (_, mut p) in pods.drain() {
                        if let Some(proc_) = p.process.as_mut() {
                            proc_.kill();
                        }
                    }
                    return;
                }
                let live = server.objects(&Collection::pods(), None, "");
                let mut seen = std::collections::HashSet::new();
                for pod in &live {
                    let uid = pod["metadata"]["uid"].as_str().unwrap_or_default().to_string();
                    seen.insert(uid.clone());
                    let ns = pod["metadata"]["namespace"].as_str().unwrap_or_default().to_string();
                    let name = pod["metadata"]["name"].as_str().unwrap_or_default().to_string();
                    let deleting = pod["metadata"]["deletionTimestamp"].is_string();
                    if !pods.contains_key(&uid) {
                        if deleting {
                            continue;
                        }
                        let process = match policy(pod) {
                            PodOutcome::Process(p) => {
                                set_running(&server, &ns, &name);
                                Some(p)
                            }
                            PodOutcome::NoProcess => {
                                set_running(&server, &ns, &name);
                                None
                            }
                            PodOutcome::Unschedulable(message) => {
                                set_unschedulable(&server, &ns, &name, &message);
                                None
                            }
                        };
                        pods.insert(
                            uid.clone(),
                            RunningPod { namespace: ns.clone(), name: name.clone(), process, stopping: None },
                        );
                    }
                    let p = pods.get_mut(&uid).expect("inserted above");
                    if deleting && p.stopping.is_none() {
                        let grace = pod["spec"]["terminationGracePeriodSeconds"].as_u64().unwrap_or(30);
                        if let Some(proc_) = p.process.as_mut() {
                            proc_.terminate();
                        }
                        p.stopping = Some((Instant::now(), Duration::from_secs(grace)));
                    }
                }
                // Pods that are gone (deleted at once): their processes stop.
                for (uid, p) in pods.iter_mut() {
                    if !seen.contains(uid) && p.stopping.is_none() {
                        if let Some(proc_) = p.process.as_mut() {
                            proc_.terminate();
                        }
                        p.stopping = Some((Instant::now(), Duration::from_secs(30)));
                    }
                }
                let mut finished = Vec::new();
                for (uid, p) in pods.iter_mut() {
                    let Some(proc_) = p.process.as_mut() else {
                        if !seen.contains(uid) {
                            finished.push(uid.clone());
                        }
                        continue;
                    };
                    if let Some((code, message)) = proc_.exited() {
                        if seen.contains(uid) {
                            set_ended(&server, &p.namespace, &p.name, code, message.trim());
                        }
                        p.process = None;
                        if !seen.contains(uid) {
                            finished.push(uid.clone());
                        }
                        continue;
                    }
                    if let Some((since, grace)) = p.stopping {
                        if since.elapsed() > grace {
                            proc_.kill();
                        }
                    }
                }
                for uid in finished {
                    pods.remove(&uid);
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        FakeKubelet { stop, thread: Some(thread) }
    }
}
