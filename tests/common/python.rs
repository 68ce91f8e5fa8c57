//! The Python the Python-deployment tests run: `target/python-venv` with what the test
//! applications import (`tests/python/requirements.txt`), created on first use.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

fn has_packages(python: &Path) -> bool {
    Command::new(python)
        .args(["-c", "import fastapi, starlette, pydantic, grpc, google.protobuf"])
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// The interpreter, with the test requirements installed.
pub fn interpreter() -> PathBuf {
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    PYTHON
        .get_or_init(|| {
            let root = Path::new(env!("CARGO_MANIFEST_DIR"));
            let venv = root.join("target").join("python-venv");
            let python = venv.join("bin").join("python");
            if !has_packages(&python) {
                let made = Command::new("python3").arg("-m").arg("venv").arg(&venv).status();
                assert!(made.is_ok_and(|s| s.success()), "python3 -m venv {} failed", venv.display());
                let installed = Command::new(&python)
                    .args(["-m", "pip", "install", "-q", "-r"])
                    .arg(root.join("tests/python/requirements.txt"))
                    .status();
                assert!(installed.is_ok_and(|s| s.success()), "pip install of tests/python/requirements.txt failed");
            }
            python
        })
        .clone()
}

/// The directory of the test applications (`apps.*` import from here).
pub fn apps_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests").join("python")
}

/// `photon run CONFIG` (a path relative to `dir`, or absolute) started from `dir`, with every
/// port ephemeral and the test interpreter.
pub fn run_in(dir: &Path, config: &Path) -> super::Photon {
    let mut args: Vec<std::ffi::OsString> = vec!["run".into(), config.into()];
    args.extend(
        ["--http-port", "0", "--dashboard-port", "0", "--grpc-port", "0", "--http-host", "127.0.0.1"].map(Into::into),
    );
    super::Photon::spawn_in(Some(dir), &args, &env(), true, true)
}

/// The environment a Photon serving Python apps needs.
pub fn env() -> Vec<(String, String)> {
    vec![("PHOTON_PYTHON".to_string(), interpreter().to_string_lossy().into_owned())]
}
