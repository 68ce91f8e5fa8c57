//! `runtime_env.pip` and `runtime_env.uv`: one virtual environment per distinct requirement
//! list, installer and base interpreter, made once in the cache (under a file lock, so replicas and deploys that need
//! it at the same time build it once), inheriting every package the base interpreter sees, as
//! Ray's environments do: a requirement the base already satisfies is not downloaded again.

use std::path::{Path, PathBuf};

use serde_json::Value;
use sha2::{Digest, Sha256};

/// Which installer builds an environment.
#[derive(Debug, Clone, PartialEq)]
pub enum Installer {
    /// `runtime_env.pip`: the environment's own pip.
    Pip,
    /// `runtime_env.uv`: uv (from `PATH`, else installed once into the cache from PyPI).
    Uv {
        /// `uv_version`, e.g. `==0.9.0`.
        version: Option<String>,
        /// `uv_pip_install_options`.
        options: Vec<String>,
    },
}

/// What `runtime_env.pip` or `runtime_env.uv` asks for.
#[derive(Debug, Clone, PartialEq)]
pub struct EnvSpec {
    /// Who installs.
    pub installer: Installer,
    /// Requirement specifiers, in order.
    pub packages: Vec<String>,
    /// Check the environment's consistency after installing (`pip_check`, `uv_check`).
    pub check: bool,
}

/// A list of requirements, or a requirements file (relative to `base`).
fn requirements(field: &str, v: &Value, base: &Path) -> Result<Vec<String>, String> {
    match v {
        Value::Array(items) => items
            .iter()
            .enumerate()
            .map(|(i, p)| p.as_str().map(str::to_string).ok_or(format!("runtime_env.{field}[{i}]: must be a string")))
            .collect(),
        Value::String(file) => {
            let text = std::fs::read_to_string(base.join(file))
                .map_err(|e| format!("runtime_env.{field}: cannot read the requirements file {file:?}: {e}"))?;
            Ok(text
                .lines()
                .map(|l| l.split('#').next().unwrap_or("").trim().to_string())
                .filter(|l| !l.is_empty())
                .collect())
        }
        other => {
            Err(format!("runtime_env.{field}: must be a list of requirements or a requirements file, got {other}"))
        }
    }
}

impl EnvSpec {
    /// `runtime_env.pip` as Ray reads it: a list of requirements, a requirements file (relative
    /// to `base`), or `{packages, pip_check, pip_version}`.
    pub fn pip(value: &Value, base: &Path) -> Result<EnvSpec, String> {
        let Value::Object(o) = value else {
            return Ok(EnvSpec {
                installer: Installer::Pip,
                packages: requirements("pip", value, base)?,
                check: false,
            });
        };
        let mut packages = requirements("pip", o.get("packages").unwrap_or(&Value::Null), base)?;
        if let Some(version) = o.get("pip_version").and_then(Value::as_str) {
            // `pip_version: "==23.3"`: installed first, as Ray does.
            packages.insert(0, format!("pip{version}"));
        }
        let check = o.get("pip_check").and_then(Value::as_bool).unwrap_or(false);
        Ok(EnvSpec { installer: Installer::Pip, packages, check })
    }

    /// `runtime_env.uv` as Ray reads it: a list of requirements, a requirements file, or
    /// `{packages, uv_version, uv_check, uv_pip_install_options}`.
    pub fn uv(value: &Value, base: &Path) -> Result<EnvSpec, String> {
        let Value::Object(o) = value else {
            let installer = Installer::Uv { version: None, options: Vec::new() };
            return Ok(EnvSpec { installer, packages: requirements("uv", value, base)?, check: false });
        };
        let packages = requirements("uv", o.get("packages").unwrap_or(&Value::Null), base)?;
        let options = match o.get("uv_pip_install_options") {
            None | Some(Value::Null) => Vec::new(),
            Some(v) => requirements("uv.uv_pip_install_options", v, base)?,
        };
        let version = o.get("uv_version").and_then(Value::as_str).map(str::to_string);
        let check = o.get("uv_check").and_then(Value::as_bool).unwrap_or(false);
        Ok(EnvSpec { installer: Installer::Uv { version, options }, packages, check })
    }
}

impl EnvSpec {
    /// As JSON, for replicas that make the environment themselves (Kubernetes pods).
    pub fn to_json(&self) -> Value {
        let (installer, version, options) = match &self.installer {
            Installer::Pip => ("pip", None, Vec::new()),
            Installer::Uv { version, options } => ("uv", version.clone(), options.clone()),
        };
        serde_json::json!({"installer": installer, "uv_version": version, "options": options,
                           "packages": self.packages, "check": self.check})
    }

    /// Reads [`EnvSpec::to_json`]'s form.
    pub fn from_json(v: &Value) -> Option<EnvSpec> {
        let strings = |key: &str| -> Option<Vec<String>> {
            v.get(key)?.as_array()?.iter().map(|s| s.as_str().map(str::to_string)).collect()
        };
        let installer = match v.get("installer")?.as_str()? {
            "pip" => Installer::Pip,
            "uv" => Installer::Uv {
                version: v.get("uv_version").and_then(Value::as_str).map(str::to_string),
                options: strings("options")?,
            },
            _ => return None,
        };
        Some(EnvSpec { installer, packages: strings("packages")?, check: v.get("check")?.as_bool()? })
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

/// Runs `make` into directory `dir` of the cache once: under a file lock, skipped when a
/// previous run finished (`.ready`), removed when it fails.
async fn once<F: std::future::Future<Output = Result<(), String>>>(dir: &Path, make: F) -> Result<(), String> {
    let ready = dir.join(".ready");
    if ready.exists() {
        return Ok(());
    }
    let parent = dir.parent().unwrap_or(dir).to_path_buf();
    std::fs::create_dir_all(&parent).map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
    let lock_path = dir.with_extension("lock");
    let lock = tokio::task::spawn_blocking(move || -> std::io::Result<std::fs::File> {
        let file = std::fs::File::create(lock_path)?;
        file.lock()?;
        Ok(file)
    })
    .await
    .map_err(|e| e.to_string())?
    .map_err(|e| format!("cannot lock {}: {e}", dir.display()))?;
    let made = async {
        if ready.exists() {
            return Ok(());
        }
        let _ = std::fs::remove_dir_all(dir);
        make.await?;
        std::fs::write(&ready, b"").map_err(|e| e.to_string())
    }
    .await;
    if made.is_err() {
        let _ = std::fs::remove_dir_all(dir);
    }
    drop(lock);
    made
}

/// A short hash of `parts`, for names in the cache.
pub(crate) fn key(parts: &[&str]) -> String {
    let mut hash = Sha256::new();
    for p in parts {
        hash.update(p.as_bytes());
        hash.update([0]);
    }
    hash.finalize().iter().take(8).map(|b| format!("{b:02x}")).collect()
}

/// The interpreter of the environment for `spec` on top of `base_python`, made if needed.
pub async fn ensure(base_python: &str, spec: &EnvSpec) -> Result<PathBuf, String> {
    let check = spec.check.to_string();
    let (field, options) = match &spec.installer {
        Installer::Pip => ("pip", Vec::new()),
        Installer::Uv { options, .. } => ("uv", options.clone()),
    };
    let mut parts = vec![base_python, field, check.as_str()];
    parts.extend(options.iter().map(String::as_str));
    parts.push("--");
    parts.extend(spec.packages.iter().map(String::as_str));
    let dir = envs_root().join(key(&parts));
    let python = dir.join("bin").join("python");
    mark_used(&python);
    if dir.join(".ready").exists() {
        return Ok(python); // made before: no install, and the cache did not grow
    }
    let made = once(&dir, async {
        let dir_text = dir.to_string_lossy().into_owned();
        run(Path::new(base_python), &["-m", "venv", &dir_text]).await?;
        inherit(base_python, &dir).await?;
        match &spec.installer {
            Installer::Pip => {
                let mut args = vec!["-m", "pip", "install", "--disable-pip-version-check", "--no-input", "-q"];
                args.extend(spec.packages.iter().map(String::as_str));
                run(&python, &args).await?;
                if spec.check {
                    run(&python, &["-m", "pip", "check", "--disable-pip-version-check"]).await?;
                }
            }
            Installer::Uv { version, options } => {
                let uv = uv_binary(base_python, version.as_deref()).await?;
                let target = python.to_string_lossy().into_owned();
                let mut args = vec!["pip", "install", "--python", target.as_str()];
                args.extend(options.iter().map(String::as_str));
                args.extend(spec.packages.iter().map(String::as_str));
                run(&uv, &args).await?;
                if spec.check {
                    run(&uv, &["pip", "check", "--python", target.as_str()]).await?;
                }
            }
        }
        Ok(())
    })
    .await;
    made.map_err(|e| format!("runtime_env.{field}: installing {} failed:\n{e}", spec.packages.join(" ")))?;
    evict(&envs_root(), cache_bound(), &dir);
    Ok(python)
}

/// The environments' bound in bytes: `PHOTON_ENV_CACHE_BYTES`, default 10 GiB.
pub fn cache_bound() -> u64 {
    std::env::var("PHOTON_ENV_CACHE_BYTES").ok().and_then(|v| v.parse().ok()).unwrap_or(10 << 30)
}

/// Records that the environment of interpreter `python` is in use (its `.ready` file's time is
/// the environment's last use); replicas call it when they start.
pub fn mark_used(python: &Path) {
    if let Some(ready) = python.parent().and_then(Path::parent).map(|env| env.join(".ready")) {
        if ready.exists() {
            let touched = std::fs::File::options().append(true).open(&ready);
            let _ = touched.and_then(|f| f.set_modified(std::time::SystemTime::now()));
        }
    }
}

/// Environments not used for this long may be removed when the cache is over its bound.
const EVICTABLE_AFTER: std::time::Duration = std::time::Duration::from_secs(3600);

/// Removes the least recently used environments until the cache fits in `bound` bytes, never
/// `keep` nor one used within the last hour (a replica may still start from it).
fn evict(root: &Path, bound: u64, keep: &Path) {
    let Ok(entries) = std::fs::read_dir(root) else { return };
    let mut envs: Vec<(std::time::SystemTime, u64, PathBuf)> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .filter_map(|p| {
            let used = std::fs::metadata(p.join(".ready")).and_then(|m| m.modified()).ok()?;
            Some((used, dir_size(&p), p))
        })
        .collect();
    let mut total: u64 = envs.iter().map(|e| e.1).sum();
    envs.sort_by_key(|e| e.0);
    for (used, size, path) in envs {
        if total <= bound {
            break;
        }
        if path == keep || used.elapsed().unwrap_or_default() < EVICTABLE_AFTER {
            continue;
        }
        tracing::info!(environment = %path.display(), bytes = size, "removing the least recently used environment");
        if std::fs::remove_dir_all(&path).is_ok() {
            total = total.saturating_sub(size);
        }
    }
}

fn dir_size(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_size(&e.path()),
            Ok(t) if t.is_file() => e.metadata().map(|m| m.len()).unwrap_or(0),
            _ => 0,
        })
        .sum()
}

/// The largest package a `working_dir` or `py_modules` may be: Ray's limit, its gRPC message
/// size (`RAY_max_grpc_message_size`, default 512 MiB), read as Ray reads it.
pub fn package_limit() -> u64 {
    std::env::var("RAY_max_grpc_message_size").ok().and_then(|v| v.parse().ok()).unwrap_or(512 << 20)
}

/// A remote `.zip` archive (`https://`, `http://`, `file://`) unpacked once into the cache;
/// the directory to use (its single top-level directory if it has one, as Ray does). A `.whl`
/// (a `py_modules` wheel, by URL or a local file) is installed once into a directory of the
/// cache with pip, as Ray installs one (`pip install --target`, dependencies included); a
/// local wheel is known by its contents, so a rebuilt one is installed again.
pub async fn fetch_archive(base_python: &str, url: &str) -> Result<PathBuf, String> {
    let identity = match url.strip_prefix("file://").filter(|_| url.ends_with(".whl")) {
        Some(path) => {
            let bytes = std::fs::read(path).map_err(|e| format!("cannot read {path}: {e}"))?;
            format!("{url}\0{:x}", Sha256::digest(&bytes))
        }
        None => url.to_string(),
    };
    let dir = crate::embedded::cache_root().join("archives").join(key(&[&identity]));
    let root_file = dir.join(".root");
    once(&dir, async {
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let limit = package_limit().to_string();
        let top = crate::embedded::run_tool(base_python, &["fetch", url, &dir.to_string_lossy(), &limit]).await?;
        std::fs::write(&root_file, top).map_err(|e| e.to_string())
    })
    .await
    .map_err(|e| format!("cannot fetch {url}: {e}"))?;
    std::fs::read_to_string(&root_file).map(PathBuf::from).map_err(|e| format!("{}: {e}", root_file.display()))
}

/// A local `working_dir` or `py_modules` directory as Ray uploads it: copied into the cache
/// without what `excludes` or its `.gitignore` / `.rayignore` files exclude, at most
/// [`package_limit`], named by what it holds (so an unchanged directory is copied once);
/// the copy's path, with the directory's own name. Replicas run from the copy, as Ray's run from
/// the package uploaded at deploy time.
pub async fn snapshot(base_python: &str, dir: &str, excludes: &[String]) -> Result<PathBuf, String> {
    let snapshots = crate::embedded::cache_root().join("snapshots");
    let excludes = serde_json::to_string(excludes).unwrap_or_else(|_| "[]".into());
    let limit = package_limit().to_string();
    let args = ["snapshot", dir, &snapshots.to_string_lossy(), &excludes, &limit];
    let copy = PathBuf::from(crate::embedded::run_tool(base_python, &args).await?);
    if let Some(made) = copy.parent() {
        evict(&snapshots, cache_bound(), made);
    }
    Ok(copy)
}

/// uv itself: from `PATH` when no version is asked for, else installed once from PyPI into a
/// virtual environment of the cache.
async fn uv_binary(base_python: &str, version: Option<&str>) -> Result<PathBuf, String> {
    if version.is_none() {
        let on_path = std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).map(|d| d.join("uv")).find(|f| f.is_file()))
            .unwrap_or_default();
        if let Some(uv) = on_path {
            return Ok(uv);
        }
    }
    let requirement = format!("uv{}", version.unwrap_or(""));
    let dir = crate::embedded::cache_root().join("tools").join(key(&[base_python, &requirement]));
    let python = dir.join("bin").join("python");
    once(&dir, async {
        run(Path::new(base_python), &["-m", "venv", &dir.to_string_lossy()]).await?;
        run(&python, &["-m", "pip", "install", "--disable-pip-version-check", "--no-input", "-q", &requirement]).await
    })
    .await?;
    Ok(dir.join("bin").join("uv"))
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
    fn pip_and_uv_are_read_as_ray_reads_them() {
        let base = std::env::temp_dir();
        let list = EnvSpec::pip(&serde_json::json!(["six==1.17.0", "tomli"]), &base).unwrap();
        assert_eq!(list.packages, ["six==1.17.0", "tomli"]);
        assert_eq!((list.installer, list.check), (Installer::Pip, false));
        let dict =
            EnvSpec::pip(&serde_json::json!({"packages": ["six"], "pip_check": true, "pip_version": "==24.0"}), &base)
                .unwrap();
        assert_eq!((dict.packages, dict.check), (vec!["pip==24.0".to_string(), "six".into()], true));
        let uv = EnvSpec::uv(
            &serde_json::json!({"packages": ["six"], "uv_version": "==0.9.0", "uv_pip_install_options": ["--no-cache"]}),
            &base,
        )
        .unwrap();
        assert_eq!(uv.installer, Installer::Uv { version: Some("==0.9.0".into()), options: vec!["--no-cache".into()] });
        let file = base.join(format!("photon-reqs-{}.txt", std::process::id()));
        std::fs::write(&file, "# comment\nsix==1.17.0  # pinned\n\ntomli\n").unwrap();
        let from_file = EnvSpec::pip(&serde_json::json!(file.to_string_lossy()), &base).unwrap();
        assert_eq!(from_file.packages, ["six==1.17.0", "tomli"]);
        let _ = std::fs::remove_file(file);
        assert!(EnvSpec::pip(&serde_json::json!(5), &base).unwrap_err().contains("runtime_env.pip"));
    }

    #[test]
    fn an_env_spec_survives_json() {
        let base = std::env::temp_dir();
        let pip = EnvSpec::pip(&serde_json::json!({"packages": ["six"], "pip_check": true}), &base).unwrap();
        let uv = EnvSpec::uv(&serde_json::json!({"packages": ["six"], "uv_version": "==0.9.0"}), &base).unwrap();
        for spec in [pip, uv] {
            assert_eq!(EnvSpec::from_json(&spec.to_json()), Some(spec));
        }
        assert_eq!(EnvSpec::from_json(&serde_json::json!({"installer": "conda"})), None);
    }

    #[test]
    fn the_least_recently_used_environments_go_first() {
        let root = std::env::temp_dir().join(format!("photon-evict-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let day_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(86_400);
        let make = |name: &str, used: std::time::SystemTime| {
            let dir = root.join(name);
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("payload"), vec![0u8; 1000]).unwrap();
            std::fs::write(dir.join(".ready"), b"").unwrap();
            std::fs::File::options().append(true).open(dir.join(".ready")).unwrap().set_modified(used).unwrap();
            dir
        };
        let oldest = make("oldest", day_ago - std::time::Duration::from_secs(60));
        let old = make("old", day_ago);
        let recent = make("recent", std::time::SystemTime::now());
        let kept = make("kept", day_ago - std::time::Duration::from_secs(120));
        evict(&root, 2500, &kept);
        assert!(!oldest.exists() && !old.exists(), "the least recently used go");
        assert!(recent.exists() && kept.exists(), "recent and kept stay");
        let _ = std::fs::remove_dir_all(&root);
    }
}
