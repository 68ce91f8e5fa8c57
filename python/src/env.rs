//! `runtime_env.pip`: one virtual environment per distinct requirement list and base
//! interpreter, made once in the cache (under a file lock, so replicas and deploys that need
//! it at the same time build it once), inheriting every package the base interpreter sees, as
//! Ray's environments do: a requirement the base already satisfies is not downloaded again.

use std::path::{Path, PathBuf};

use serde_json::Value;
use sha2::{Digest, Sha256};

/// What `runtime_env.pip` asks for.
#[derive(Debug, Clone, PartialEq)]
pub struct PipSpec {
    /// Requirement specifiers, in order.
    pub packages: Vec<String>,
    /// Run `pip check` after installing.
    pub pip_check: bool,
}

impl PipSpec {
    /// `runtime_env.pip` as Ray reads it: a list of requirements, a requirements file (relative
    /// to `base`), or `{packages, pip_check, pip_version}`.
    pub fn of(value: &Value, base: &Path) -> Result<PipSpec, String> {
        let packages = |v: &Value| -> Result<Vec<String>, String> {
            match v {
                Value::Array(items) => items
                    .iter()
                    .enumerate()
                    .map(|(i, p)| {
                        p.as_str().map(str::to_string).ok_or(format!("runtime_env.pip[{i}]: must be a string"))
                    })
                    .collect(),
                Value::String(file) => {
                    let text = std::fs::read_to_string(base.join(file))
                        .map_err(|e| format!("runtime_env.pip: cannot read the requirements file {file:?}: {e}"))?;
                    Ok(text
                        .lines()
                        .map(|l| l.split('#').next().unwrap_or("").trim().to_string())
                        .filter(|l| !l.is_empty())
                        .collect())
                }
                other => {
                    Err(format!("runtime_env.pip: must be a list of requirements or a requirements file, got {other}"))
                }
            }
        };
        match value {
            Value::Object(o) => {
                let list = packages(o.get("packages").unwrap_or(&Value::Null))?;
                let pip_check = o.get("pip_check").and_then(Value::as_bool).unwrap_or(false);
                let mut spec = PipSpec { packages: list, pip_check };
                if let Some(version) = o.get("pip_version").and_then(Value::as_str) {
                    // `pip_version: "==23.3"`: installed first, as Ray does.
                    spec.packages.insert(0, format!("pip{version}"));
                }
                Ok(spec)
            }
            other => Ok(PipSpec { packages: packages(other)?, pip_check: false }),
        }
    }
}

/// Where the environments live.
fn envs_root() -> PathBuf {
    crate::embedded::cache_root().join("envs")
}

async fn run(program: &Path, args: &[&str]) -> Result<(), String> {
    let out = tokio::process::Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| format!("cannot run {}: {e}", program.display()))?;
    if out.status.success() {
        return Ok(());
    }
    // The installer's own last lines say what went wrong.
    let text = String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    Err(lines[lines.len().saturating_sub(15)..].join("\n"))
}

/// The interpreter of the environment for `spec` on top of `base_python`, made if needed.
pub async fn ensure(base_python: &str, spec: &PipSpec) -> Result<PathBuf, String> {
    let mut hash = Sha256::new();
    hash.update(base_python.as_bytes());
    for p in &spec.packages {
        hash.update([0]);
        hash.update(p.as_bytes());
    }
    hash.update([u8::from(spec.pip_check)]);
    let key: String = hash.finalize().iter().take(8).map(|b| format!("{b:02x}")).collect();
    let root = envs_root();
    let dir = root.join(&key);
    let python = dir.join("bin").join("python");
    let ready = dir.join(".ready");
    if ready.exists() {
        return Ok(python);
    }
    std::fs::create_dir_all(&root).map_err(|e| format!("cannot create {}: {e}", root.display()))?;
    let lock_path = root.join(format!("{key}.lock"));
    let lock = tokio::task::spawn_blocking(move || -> std::io::Result<std::fs::File> {
        let file = std::fs::File::create(lock_path)?;
        file.lock()?;
        Ok(file)
    })
    .await
    .map_err(|e| e.to_string())?
    .map_err(|e| format!("cannot lock the environment {key}: {e}"))?;
    let built = async {
        if ready.exists() {
            return Ok(());
        }
        let _ = std::fs::remove_dir_all(&dir);
        let dir_text = dir.to_string_lossy().into_owned();
        run(Path::new(base_python), &["-m", "venv", &dir_text]).await?;
        inherit(base_python, &dir).await?;
        let mut args = vec!["-m", "pip", "install", "--disable-pip-version-check", "--no-input", "-q"];
        args.extend(spec.packages.iter().map(String::as_str));
        run(&python, &args).await?;
        if spec.pip_check {
            run(&python, &["-m", "pip", "check", "--disable-pip-version-check"]).await?;
        }
        std::fs::write(&ready, spec.packages.join("\n")).map_err(|e| e.to_string())
    }
    .await;
    if built.is_err() {
        let _ = std::fs::remove_dir_all(&dir);
    }
    drop(lock);
    built.map(|()| python).map_err(|e| format!("runtime_env.pip: installing {} failed:\n{e}", spec.packages.join(" ")))
}

/// Makes the base interpreter's packages visible in the environment (after its own), also when
/// the base is itself a virtual environment, which `venv --system-site-packages` would skip.
async fn inherit(base_python: &str, dir: &Path) -> Result<(), String> {
    let out = tokio::process::Command::new(base_python)
        .args(["-c", "import json, site, sys; print(json.dumps([p for p in sys.path if p.endswith('-packages')]))"])
        .output()
        .await
        .map_err(|e| format!("cannot run {base_python}: {e}"))?;
    let paths: Vec<String> =
        serde_json::from_slice(&out.stdout).map_err(|e| format!("{base_python}'s sys.path: {e}"))?;
    let lib = dir.join("lib");
    let site = std::fs::read_dir(&lib)
        .map_err(|e| format!("{}: {e}", lib.display()))?
        .flatten()
        .map(|e| e.path().join("site-packages"))
        .find(|p| p.is_dir())
        .ok_or_else(|| format!("no site-packages under {}", lib.display()))?;
    std::fs::write(site.join("_photon_inherited.pth"), paths.join("\n") + "\n").map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pip_is_read_as_ray_reads_it() {
        let base = std::env::temp_dir();
        let list = PipSpec::of(&serde_json::json!(["six==1.17.0", "tomli"]), &base).unwrap();
        assert_eq!(list, PipSpec { packages: vec!["six==1.17.0".into(), "tomli".into()], pip_check: false });
        let dict =
            PipSpec::of(&serde_json::json!({"packages": ["six"], "pip_check": true, "pip_version": "==24.0"}), &base)
                .unwrap();
        assert_eq!(dict, PipSpec { packages: vec!["pip==24.0".into(), "six".into()], pip_check: true });
        let file = base.join(format!("photon-reqs-{}.txt", std::process::id()));
        std::fs::write(&file, "# comment\nsix==1.17.0  # pinned\n\ntomli\n").unwrap();
        let from_file = PipSpec::of(&serde_json::json!(file.to_string_lossy()), &base).unwrap();
        assert_eq!(from_file.packages, ["six==1.17.0", "tomli"]);
        let _ = std::fs::remove_file(file);
        assert!(PipSpec::of(&serde_json::json!(5), &base).unwrap_err().contains("runtime_env.pip"));
    }
}
