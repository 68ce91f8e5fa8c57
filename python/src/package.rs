//! Application code for replicas on other machines (Kubernetes pods). The directories of code
//! a replica needs (a `working_dir` or `py_modules` copy, an unpacked archive, an installed
//! wheel) live in the cache under content-derived names, so the code spec replicas get names
//! them by their place there (`package:snapshots/<hash>/<dir>`): a name is a version. A replica
//! on the head's machine finds them in place; one whose cache lacks them (a pod's starts empty,
//! and keeps what it fetched across container restarts) fetches each from the controller, which
//! packs it as a `.zip` archive once. Packages are made in the replica too: its runtime_env
//! environment is built where it runs, as Ray builds one on each node.

use std::path::{Component, Path, PathBuf};

use serde_json::Value;

use crate::embedded;
use crate::env::{self, EnvSpec};

/// How a code spec names a package.
pub const PREFIX: &str = "package:";

/// The cache's directories that hold packages.
const ROOTS: [&str; 2] = ["snapshots", "archives"];

/// `path` as a code spec names it for replicas: a package name when it lies in the cache's
/// packages, else the path itself.
pub fn portable(path: &str) -> String {
    let root = embedded::cache_root();
    match Path::new(path).strip_prefix(&root) {
        Ok(rel) if checked(&rel.to_string_lossy()).is_ok() => format!("{PREFIX}{}", rel.to_string_lossy()),
        _ => path.to_string(),
    }
}

/// The directory of the cache package `name` stands for, if `name` is one: relative, plain
/// components, under one of [`ROOTS`].
fn checked(name: &str) -> Result<PathBuf, String> {
    let path = Path::new(name);
    let plain = path.components().all(|c| matches!(c, Component::Normal(_)));
    let rooted = path.components().next().is_some_and(|c| ROOTS.iter().any(|r| c.as_os_str() == *r));
    if !plain || !rooted || path.components().count() < 2 {
        return Err(format!("{name:?} is not the name of a package"));
    }
    Ok(embedded::cache_root().join(path))
}

/// The head's side: the `.zip` archive of package `name`, packed once into the cache.
pub async fn packed(name: &str) -> Result<PathBuf, String> {
    let dir = checked(name)?;
    if !dir.is_dir() {
        return Err(format!("no package {name:?} here"));
    }
    let out = embedded::cache_root().join("packed").join(format!("{}.zip", env::key(&[name])));
    if out.is_file() {
        return Ok(out);
    }
    std::fs::create_dir_all(out.parent().unwrap_or(&out))
        .map_err(|e| format!("cannot create the packed cache: {e}"))?;
    embedded::run_tool(&embedded::python(), &["pack", &dir.to_string_lossy(), &out.to_string_lossy()])
        .await
        .map_err(|e| format!("packing {name:?} failed: {e}"))?;
    Ok(out)
}

/// The replica's side: `code` (a code spec as the controller hands it) made usable here:
/// package names replaced by directories of this machine's cache (fetched from `controller`
/// when missing), and the interpreter of its runtime_env packages found or made.
pub async fn resolve(code: &mut Value, controller: Option<&str>) -> Result<(), String> {
    if let Some(name) = code.get("working_dir").and_then(Value::as_str).map(str::to_string) {
        code["working_dir"] = Value::from(local(&name, controller).await?);
    }
    for key in ["py_modules", "site_dirs"] {
        let names: Vec<String> = code
            .get(key)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect();
        let mut dirs = Vec::with_capacity(names.len());
        for name in names {
            dirs.push(Value::from(local(&name, controller).await?));
        }
        code[key] = Value::Array(dirs);
    }
    if let Some(spec) = code.get("env").and_then(EnvSpec::from_json) {
        let python = env::ensure(&embedded::python(), &spec).await?;
        code["python"] = Value::from(python.to_string_lossy().into_owned());
    }
    Ok(())
}

/// The directory for `name` (a package name, or a path used as it is).
async fn local(name: &str, controller: Option<&str>) -> Result<String, String> {
    let Some(package) = name.strip_prefix(PREFIX) else { return Ok(name.to_string()) };
    let dir = checked(package)?;
    if !dir.is_dir() {
        let controller =
            controller.ok_or(format!("the package {package:?} is not here and no controller was named"))?;
        fetch(package, &dir, controller).await.map_err(|e| format!("cannot fetch the package {package:?}: {e}"))?;
        tracing::info!(package, "fetched the package from the controller");
    }
    Ok(dir.to_string_lossy().into_owned())
}

/// Downloads package `name` from the controller and unpacks it as `dir`.
async fn fetch(name: &str, dir: &Path, controller: &str) -> Result<(), String> {
    let mut client = photon_router::cluster_auth::controller_client(controller).await.map_err(|e| e.to_string())?;
    let request = photon_proto::v1::FetchPackageRequest { name: name.to_string() };
    let mut chunks = client.fetch_package(request).await.map_err(|s| s.message().to_string())?.into_inner();
    let parent = dir.parent().ok_or("a package has a parent directory")?;
    std::fs::create_dir_all(parent).map_err(|e| e.to_string())?;
    let unique = format!("{}.{:x}", std::process::id(), fastrand::u64(..));
    let archive = parent.join(format!(".fetch-{unique}.zip"));
    let written = async {
        use std::io::Write;
        let mut file = std::fs::File::create(&archive).map_err(|e| e.to_string())?;
        let mut size = 0u64;
        while let Some(chunk) = chunks.message().await.map_err(|s| s.message().to_string())? {
            size += chunk.data.len() as u64;
            if size > env::package_limit() {
                return Err(format!("larger than the package limit of {} bytes", env::package_limit()));
            }
            file.write_all(&chunk.data).map_err(|e| e.to_string())?;
        }
        file.flush().map_err(|e| e.to_string())
    }
    .await;
    if let Err(e) = written {
        let _ = std::fs::remove_file(&archive);
        return Err(e);
    }
    let unpacked = parent.join(format!(".unpack-{unique}"));
    let made = unpack(&archive, &unpacked).await;
    let _ = std::fs::remove_file(&archive);
    let result = made.and_then(|top| match std::fs::rename(&top, dir) {
        Ok(()) => Ok(()),
        Err(_) if dir.is_dir() => Ok(()), // unpacked meanwhile by another replica
        Err(e) => Err(format!("cannot move the package into place: {e}")),
    });
    let _ = std::fs::remove_dir_all(&unpacked);
    result
}

/// Unpacks `archive` into `dest` with Photon's fetcher; the directory it holds.
async fn unpack(archive: &Path, dest: &Path) -> Result<PathBuf, String> {
    let url = format!("file://{}", archive.display());
    let limit = env::package_limit().to_string();
    let top = embedded::run_tool(&embedded::python(), &["fetch", &url, &dest.to_string_lossy(), &limit]).await?;
    Ok(PathBuf::from(top))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_directories_of_the_cache_packages_have_names() {
        let root = embedded::cache_root();
        let inside = root.join("snapshots/0123/app");
        assert_eq!(portable(&inside.to_string_lossy()), "package:snapshots/0123/app");
        assert_eq!(portable("/srv/app"), "/srv/app");
        assert_eq!(portable(&root.join("envs/x").to_string_lossy()), root.join("envs/x").to_string_lossy());
        for bad in ["../etc", "snapshots/../../etc", "/etc/passwd", "envs/x", "snapshots", ""] {
            assert!(checked(bad).is_err(), "{bad}");
        }
        assert_eq!(checked("archives/ab/cd").unwrap(), root.join("archives/ab/cd"));
    }
}
