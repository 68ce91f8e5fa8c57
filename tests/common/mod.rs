//! End-to-end test support: starts the real `photon` binary on ephemeral ports, reads the
//! addresses it logs, talks HTTP to it over real sockets, and stops it (and checks that its
//! replicas are gone) when dropped.
#![allow(dead_code)]

pub mod python;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;

pub const PHOTON: &str = env!("CARGO_BIN_EXE_photon");

/// A file in a fresh temporary directory, removed with it.
pub struct TempFile {
    pub path: PathBuf,
}

impl TempFile {
    pub fn new(name: &str, contents: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("photon-test-{}-{}", std::process::id(), fastrand::u64(..)));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, contents).unwrap();
        TempFile { path }
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if let Some(dir) = self.path.parent() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// A running `photon run`.
pub struct Photon {
    child: Option<Child>,
    pub http: String,
    pub rest: String,
    pub log: Arc<Mutex<Vec<String>>>,
    _config: Option<TempFile>,
}

fn address_after(line: &str, marker: &str) -> Option<String> {
    line.split(marker).nth(1).map(|rest| rest.trim().trim_start_matches("http://").to_string())
}

impl Photon {
    /// Starts `photon run` on a config text with every port ephemeral, and waits until the
    /// listeners are up.
    pub fn run_yaml(yaml: &str, extra: &[&str]) -> Photon {
        Photon::run_yaml_with_env(yaml, extra, &[])
    }

    /// [`Photon::run_yaml`] with extra environment variables.
    pub fn run_yaml_with_env(yaml: &str, extra: &[&str], env: &[(&str, &str)]) -> Photon {
        let file = TempFile::new("config.yaml", yaml);
        let mut p = Photon::run_file_with_env(&file.path, extra, env);
        p._config = Some(file);
        p
    }

    pub fn run_file(path: &std::path::Path, extra: &[&str]) -> Photon {
        Photon::run_file_with_env(path, extra, &[])
    }

    fn run_file_with_env(path: &std::path::Path, extra: &[&str], env: &[(&str, &str)]) -> Photon {
        let mut args: Vec<std::ffi::OsString> = vec!["run".into(), path.into()];
        args.extend(["--http-port", "0", "--dashboard-port", "0", "--http-host", "127.0.0.1"].map(Into::into));
        if !extra.contains(&"--grpc-port") {
            args.extend(["--grpc-port", "0"].map(Into::into));
        }
        args.extend(extra.iter().map(Into::into));
        let env: Vec<(String, String)> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Photon::spawn_with_env(&args, &env, true, true)
    }

    /// Starts `photon ARGS...` and waits until it logs its HTTP and REST addresses.
    fn spawn(args: &[std::ffi::OsString]) -> Photon {
        Photon::spawn_waiting(args, true, true)
    }

    /// Starts `photon ARGS...` and waits for the addresses asked for (a head without proxies
    /// logs no HTTP address; a standalone proxy no REST address).
    pub fn spawn_waiting(args: &[std::ffi::OsString], wait_http: bool, wait_rest: bool) -> Photon {
        Photon::spawn_with_env(args, &[], wait_http, wait_rest)
    }

    /// [`Photon::spawn_waiting`] with extra environment variables.
    pub fn spawn_with_env(
        args: &[std::ffi::OsString],
        env: &[(String, String)],
        wait_http: bool,
        wait_rest: bool,
    ) -> Photon {
        Photon::spawn_in(None, args, env, wait_http, wait_rest)
    }

    /// [`Photon::spawn_with_env`] started from directory `dir` (where Python code is found).
    pub fn spawn_in(
        dir: Option<&std::path::Path>,
        args: &[std::ffi::OsString],
        env: &[(String, String)],
        wait_http: bool,
        wait_rest: bool,
    ) -> Photon {
        Photon::spawn_in_within(dir, args, env, wait_http, wait_rest, Duration::from_secs(30))
    }

    /// [`Photon::spawn_in`], allowing `limit` for the listeners to come up (`photon run`
    /// installs runtime_env packages before it listens).
    pub fn spawn_in_within(
        dir: Option<&std::path::Path>,
        args: &[std::ffi::OsString],
        env: &[(String, String)],
        wait_http: bool,
        wait_rest: bool,
        limit: Duration,
    ) -> Photon {
        let mut command = Command::new(PHOTON);
        if let Some(dir) = dir {
            command.current_dir(dir);
        }
        let mut child = command
            .args(args)
            // The REST API's token authentication has its own tests (tests/security.rs); the
            // others drive a head without it (and leave the user's ~/.ray/auth_token alone).
            .env("RAY_AUTH_MODE", "disabled")
            .envs(env.iter().map(|(k, v)| (k, v)))
            .env("RUST_LOG", "info")
            // Many test configs run more 1-CPU replicas than a CI machine has cores; the
            // resource tests pass --num-cpus / --num-gpus themselves (flags beat the variable).
            .env("PHOTON_NUM_CPUS", "64")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("photon binary starts");
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let sink = log.clone();
        std::thread::spawn(move || {
            let (mut http, mut rest) = (None, None);
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(a) = address_after(&line, "HTTP proxy listening on ") {
                    http = Some(a);
                }
                if let Some(a) = address_after(&line, "REST API listening on ") {
                    rest = Some(a);
                }
                let ready = (http.is_some() || !wait_http) && (rest.is_some() || !wait_rest);
                if ready {
                    let _ = tx.send((http.clone().unwrap_or_default(), rest.clone().unwrap_or_default()));
                }
                sink.lock().unwrap().push(line);
            }
        });
        let (http, rest) = match rx.recv_timeout(limit) {
            Ok(addrs) => addrs,
            Err(_) => {
                let _ = child.kill();
                panic!("photon did not report its listeners; log:\n{}", log.lock().unwrap().join("\n"));
            }
        };
        Photon { child: Some(child), http, rest, log, _config: None }
    }

    /// The exit code (128 + signal when killed), once the process has ended.
    pub fn exit_code(&mut self) -> Option<i32> {
        use std::os::unix::process::ExitStatusExt;
        let status = self.child.as_mut()?.try_wait().ok()??;
        Some(status.code().unwrap_or_else(|| 128 + status.signal().unwrap_or(0)))
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// Waits until every application reports RUNNING.
    pub async fn wait_running(&self, apps: &[&str]) {
        self.wait_running_for(apps, Duration::from_secs(30)).await
    }

    /// [`Photon::wait_running`] with a longer limit (many Python replicas on a small machine).
    pub async fn wait_running_for(&self, apps: &[&str], limit: Duration) {
        let deadline = Instant::now() + limit;
        loop {
            let r = get(&self.rest, "/api/serve/applications/").await;
            let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap_or_default();
            let ready = apps.iter().all(|a| v["applications"][a]["status"] == "RUNNING");
            if ready {
                return;
            }
            assert!(Instant::now() < deadline, "apps {apps:?} not RUNNING in time: {v}\nlog:\n{}", self.log_text());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The REST API's view of the instance.
    pub async fn details(&self) -> serde_json::Value {
        serde_json::from_slice(&get(&self.rest, "/api/serve/applications/").await.body).unwrap()
    }

    /// Waits for a process that was killed by signal, so drop does nothing more.
    pub fn terminate_killed(&mut self) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        child.wait().ok()
    }

    /// Sends SIGTERM and waits for the exit.
    pub fn terminate(&mut self) -> ExitStatus {
        let mut child = self.child.take().unwrap();
        signal(child.id(), nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("photon did not exit after SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Photon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            signal(child.id(), nix::sys::signal::Signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(10);
            while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

pub fn signal(pid: u32, sig: nix::sys::signal::Signal) {
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), sig);
}

/// Processes (pid, command line) whose parent is `parent`.
pub fn children_of(parent: u32) -> Vec<(u32, String)> {
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else { return out };
    for entry in dir.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
        // Fields after the command name (which may hold spaces): state, ppid, ...
        let after = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or("");
        let ppid: u32 = after.split_whitespace().nth(1).and_then(|p| p.parse().ok()).unwrap_or(0);
        let state = after.split_whitespace().next().unwrap_or("");
        if ppid == parent && state != "Z" {
            let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            out.push((pid, cmd));
        }
    }
    out
}

/// Whether a process exists (and is not a zombie).
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat.rsplit_once(')').map(|(_, r)| r.split_whitespace().next() != Some("Z")).unwrap_or(false),
        Err(_) => false,
    }
}

/// A response, fully read.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers.get(name).map(|v| v.to_str().unwrap().to_string())
    }
}

/// One HTTP/1.1 request on a fresh connection.
pub async fn request(addr: &str, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Reply {
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.expect("handshake");
    tokio::spawn(conn);
    let mut req = http::Request::builder().method(method).uri(path).header("host", addr);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(Full::new(Bytes::copy_from_slice(body))).unwrap();
    let resp = sender.send_request(req).await.expect("response");
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    Reply { status: parts.status.as_u16(), headers: parts.headers, body }
}

/// `PUT /api/serve/applications/` with `config` as JSON (a head without token authentication).
pub async fn put_config(rest: &str, config: &serde_json::Value) -> Reply {
    let body = config.to_string();
    request(rest, "PUT", "/api/serve/applications/", &[("content-type", "application/json")], body.as_bytes()).await
}

pub async fn get(addr: &str, path: &str) -> Reply {
    request(addr, "GET", path, &[], b"").await
}

pub async fn post_json(addr: &str, path: &str, body: &str) -> Reply {
    request(addr, "POST", path, &[("content-type", "application/json")], body.as_bytes()).await
}

/// Steady load: `workers` loops posting `body` to `path` until stopped; counts every answer.
pub struct Load {
    stop: Arc<std::sync::atomic::AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<Vec<(u16, String)>>>,
    started: Instant,
}

impl Load {
    pub fn start(addr: &str, path: &'static str, body: &'static str, workers: usize) -> Load {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let tasks = (0..workers)
            .map(|_| {
                let (addr, stop) = (addr.to_string(), stop.clone());
                tokio::spawn(async move {
                    let mut seen = Vec::new();
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        let r = post_json(&addr, path, body).await;
                        seen.push((r.status, r.text()));
                    }
                    seen
                })
            })
            .collect();
        Load { stop, tasks, started: Instant::now() }
    }

    /// Stops the load; returns every (status, body) and the request rate.
    pub async fn finish(self) -> (Vec<(u16, String)>, f64) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let mut all = Vec::new();
        for t in self.tasks {
            all.extend(t.await.unwrap());
        }
        let rate = all.len() as f64 / self.started.elapsed().as_secs_f64();
        (all, rate)
    }
}

/// Polls `check` every 50 ms until it returns true or `limit` passes.
pub async fn eventually<F, Fut>(limit: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A running `photon start` (no applications).
pub fn start_head() -> Photon {
    Photon::spawn(&head_args(&[]))
}

/// `photon start` on ephemeral ports on 127.0.0.1, then `extra`.
pub fn head_args(extra: &[&str]) -> Vec<std::ffi::OsString> {
    let mut args: Vec<std::ffi::OsString> =
        ["start", "--http-port", "0", "--dashboard-port", "0", "--http-host", "127.0.0.1"].map(Into::into).to_vec();
    args.extend(extra.iter().map(Into::into));
    args
}

/// Runs a `photon` CLI command without blocking the test's runtime (load tasks keep running);
/// returns (success, stdout, stderr).
pub async fn cli(args: &[&str]) -> (bool, String, String) {
    let out = tokio::process::Command::new(PHOTON).args(args).stdin(Stdio::null()).output().await.expect("photon runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

impl Photon {
    /// The gRPC proxy's address, when one was started.
    pub fn grpc_addr(&self) -> Option<String> {
        self.log.lock().unwrap().iter().find_map(|l| address_after(l, "gRPC proxy listening on "))
    }
}

/// A port that was free a moment ago: a restarted controller must come back at the same address,
/// so tests of restarts cannot let the kernel pick a new one each time.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}
