//! Photon's Python package (the `ray.serve` shim and `photon_worker`), compiled into the binary
//! and written out once per content hash to a cache directory, from where `python3` runs it.

use std::io::Write;
use std::path::PathBuf;

use sha2::{Digest, Sha256};

include!(concat!(env!("OUT_DIR"), "/files.rs"));

/// Where Photon keeps what it writes out at run time: `PHOTON_CACHE_DIR`, else the user's cache
/// directory (`XDG_CACHE_HOME` or `~/.cache`) under `photon`, else the temp directory.
pub fn cache_root() -> PathBuf {
    if let Some(dir) = std::env::var_os("PHOTON_CACHE_DIR") {
        return PathBuf::from(dir);
    }
    if let Some(dir) = std::env::var_os("XDG_CACHE_HOME") {
        return PathBuf::from(dir).join("photon");
    }
    if let Some(home) = std::env::var_os("HOME") {
        return PathBuf::from(home).join(".cache").join("photon");
    }
    std::env::temp_dir().join("photon-cache")
}

/// Writes the package out (once: the directory is named by the content hash) and returns the
/// directory to put on `PYTHONPATH`.
pub fn install() -> std::io::Result<PathBuf> {
    let mut hash = Sha256::new();
    for (path, text) in FILES {
        hash.update(path.as_bytes());
        hash.update([0]);
        hash.update(text.as_bytes());
    }
    let digest: String = hash.finalize().iter().take(8).map(|b| format!("{b:02x}")).collect();
    let dir = cache_root().join(format!("python-{digest}"));
    if dir.join(".complete").exists() {
        return Ok(dir);
    }
    // Written beside, then renamed: a concurrent writer (another process, or another import in
    // this one) never sees half a package, nor shares the staging directory.
    let staging = cache_root().join(format!(".python-{digest}.{}.{:x}", std::process::id(), fastrand::u64(..)));
    let _ = std::fs::remove_dir_all(&staging);
    for (path, text) in FILES {
        let target = staging.join(path);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::File::create(&target)?.write_all(text.as_bytes())?;
    }
    std::fs::File::create(staging.join(".complete"))?;
    match std::fs::rename(&staging, &dir) {
        Ok(()) => Ok(dir),
        Err(_) if dir.join(".complete").exists() => {
            let _ = std::fs::remove_dir_all(&staging);
            Ok(dir)
        }
        Err(e) => Err(e),
    }
}

/// The interpreter for Python deployments: `PHOTON_PYTHON`, else `python3` from `PATH`.
pub fn python() -> String {
    std::env::var("PHOTON_PYTHON").ok().filter(|p| !p.is_empty()).unwrap_or_else(|| "python3".to_string())
}

/// A `python -m photon_worker ...` command with the package on its import path, run by
/// `interpreter` (an application's environment) or else the default one.
pub fn worker_command(root: &std::path::Path, interpreter: Option<&str>) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(interpreter.map_or_else(python, str::to_string));
    let mut path = std::ffi::OsString::from(root);
    if let Some(existing) = std::env::var_os("PYTHONPATH").filter(|p| !p.is_empty()) {
        path.push(":");
        path.push(existing);
    }
    cmd.env("PYTHONPATH", path).env("PYTHONUNBUFFERED", "1").arg("-m").arg("photon_worker");
    // The user's code does not need Photon's internal credentials: it calls through its replica.
    for secret in [photon_router::cluster_auth::TOKEN_ENV, photon_router::cluster_auth::REPLICA_SECRET_ENV] {
        cmd.env_remove(secret);
    }
    cmd
}

/// Runs one of Photon's Python tools (`python -m photon_worker ARGS`: fetch, snapshot, pack)
/// with the interpreter `python`: the last line it printed, or the last line of its error.
pub async fn run_tool(python: &str, args: &[&str]) -> Result<String, String> {
    let root = install().map_err(|e| format!("cannot write Photon's Python package: {e}"))?;
    let out = worker_command(&root, Some(python))
        .args(args)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| format!("cannot run {python}: {e}"))?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).lines().last().unwrap_or_default().to_string());
    }
    Ok(String::from_utf8_lossy(&out.stdout).lines().last().unwrap_or_default().trim().to_string())
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_package_is_embedded() {
        let paths: Vec<&str> = super::FILES.iter().map(|(p, _)| *p).collect();
        for wanted in ["photon_worker/__main__.py", "shim/ray/serve/__init__.py", "shim/ray/__init__.py"] {
            assert!(paths.contains(&wanted), "{wanted} missing from {paths:?}");
        }
    }
}
