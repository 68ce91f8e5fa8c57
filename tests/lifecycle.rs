//! End to end: backpressure, replica death and replacement, shutdown, and config errors.

mod common;

use std::time::{Duration, Instant};

use common::*;

#[tokio::test]
async fn backpressure_admits_max_ongoing_plus_max_queued() {
    let p = Photon::run_yaml(
        "applications:\n  - name: slow\n    import_path: photon.examples:sleep\n    route_prefix: /slow\n    deployments:\n      - name: Sleep\n        max_ongoing_requests: 2\n        max_queued_requests: 4\n        user_config: {sleep_ms: 1000}\n",
        &[],
    );
    p.wait_running(&["slow"]).await;
    let start = Instant::now();
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let addr = p.http.clone();
            tokio::spawn(async move {
                let r = request(&addr, "POST", "/slow", &[], b"").await;
                (r.status, r.text(), start.elapsed())
            })
        })
        .collect();
    let mut ok = 0;
    let mut rejected = Vec::new();
    for t in tasks {
        let (status, body, took) = t.await.unwrap();
        match status {
            200 => ok += 1,
            503 => {
                assert!(
                    body.starts_with(
                        "Request dropped due to backpressure (num_queued_requests=4, max_queued_requests=4)"
                    ),
                    "{body}"
                );
                rejected.push(took);
            }
            other => panic!("unexpected status {other}: {body}"),
        }
    }
    assert_eq!((ok, rejected.len()), (6, 14));
    let slowest = rejected.iter().max().unwrap();
    assert!(*slowest < Duration::from_millis(500), "503s took up to {slowest:?}");
}

#[tokio::test]
async fn a_killed_replica_is_replaced_and_queued_requests_go_elsewhere() {
    let p = Photon::run_yaml(
        "applications:\n  - name: slow\n    import_path: photon.examples:sleep\n    route_prefix: /slow\n    deployments:\n      - name: Sleep\n        num_replicas: 2\n        max_ongoing_requests: 1\n        user_config: {sleep_ms: 200}\n",
        &[],
    );
    p.wait_running(&["slow"]).await;
    let replicas = children_of(p.pid());
    assert_eq!(replicas.len(), 2, "{replicas:?}");
    let (victim, _) = replicas[0];

    // Twelve requests: two run, ten wait in the proxy's queue. Then one replica dies.
    let tasks: Vec<_> = (0..12)
        .map(|_| {
            let addr = p.http.clone();
            tokio::spawn(async move { request(&addr, "POST", "/slow", &[], b"").await.status })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let killed_at = Instant::now();
    signal(victim, nix::sys::signal::Signal::SIGKILL);

    let mut statuses = Vec::new();
    for t in tasks {
        statuses.push(t.await.unwrap());
    }
    // At most the one request running on the victim fails (Ray: 500, not retried); every
    // queued request is served by the surviving replica or the replacement.
    let failed = statuses.iter().filter(|s| **s != 200).count();
    assert!(failed <= 1, "statuses: {statuses:?}");
    assert!(statuses.iter().all(|s| *s == 200 || *s == 500), "{statuses:?}");

    // A replacement process appears and the deployment is back to two running replicas.
    let deadline = killed_at + Duration::from_secs(5);
    loop {
        let details = p.details().await;
        let dep = &details["applications"]["slow"]["deployments"]["Sleep"];
        let running = dep["replicas"].as_array().unwrap().iter().filter(|r| r["state"] == "RUNNING").count();
        let alive_children = children_of(p.pid()).len();
        if running == 2 && alive_children == 2 && dep["status"] == "HEALTHY" {
            break;
        }
        assert!(Instant::now() < deadline, "no replacement within 5 s: {dep}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!alive(victim));
    assert_eq!(request(&p.http, "POST", "/slow", &[], b"").await.status, 200);
}

#[tokio::test]
async fn sigterm_leaves_no_photon_process() {
    let mut p = Photon::run_yaml(include_str!("../examples/serve-config.yaml"), &[]);
    p.wait_running(&["fruit_app", "math_app"]).await;
    let head = p.pid();
    let replicas: Vec<u32> = children_of(head).into_iter().map(|(pid, _)| pid).collect();
    assert_eq!(replicas.len(), 7);
    let status = p.terminate();
    assert!(status.success(), "{status:?}");
    assert!(!alive(head));
    for pid in replicas {
        assert!(!alive(pid), "replica {pid} outlived the head");
    }
}

#[tokio::test]
async fn replicas_exit_when_the_head_is_killed() {
    let p = Photon::run_yaml("applications:\n  - name: n\n    import_path: photon.examples:noop\n", &[]);
    p.wait_running(&["n"]).await;
    let replicas: Vec<u32> = children_of(p.pid()).into_iter().map(|(pid, _)| pid).collect();
    assert_eq!(replicas.len(), 1);
    signal(p.pid(), nix::sys::signal::Signal::SIGKILL);
    let deadline = Instant::now() + Duration::from_secs(5);
    while replicas.iter().any(|pid| alive(*pid)) {
        assert!(Instant::now() < deadline, "replica outlived a killed head");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Each invalid config: (what is wrong, the YAML, a text the error must contain).
const INVALID: &[(&str, &str, &str)] = &[
    ("bad YAML", "applications: [\n  - name: a\n", "invalid YAML"),
    ("applications missing", "http_options: {port: 8000}\n", "applications: field required"),
    ("wrong type", "applications:\n  - name: a\n    import_path: photon.examples:noop\n    deployments:\n      - name: Noop\n        max_ongoing_requests: lots\n", "applications[0].deployments[0].max_ongoing_requests: must be an integer"),
    ("missing import_path", "applications:\n  - name: a\n    route_prefix: /a\n", "applications[0].import_path: field required"),
    ("zero max_ongoing_requests", "applications:\n  - name: a\n    import_path: photon.examples:noop\n    deployments:\n      - name: Noop\n        max_ongoing_requests: 0\n", "applications[0].deployments[0].max_ongoing_requests: must be > 0"),
    ("negative num_replicas", "applications:\n  - name: a\n    import_path: photon.examples:noop\n    deployments:\n      - name: Noop\n        num_replicas: -2\n", "applications[0].deployments[0].num_replicas: must be > 0"),
    ("num_replicas with autoscaling_config", "applications:\n  - name: a\n    import_path: photon.examples:noop\n    deployments:\n      - name: Noop\n        num_replicas: 2\n        autoscaling_config: {min_replicas: 1, max_replicas: 4}\n", "applications[0].deployments[0].num_replicas: Manually setting num_replicas is not allowed"),
    ("duplicate app names", "applications:\n  - name: a\n    import_path: photon.examples:noop\n    route_prefix: /a\n  - name: a\n    import_path: photon.examples:echo\n    route_prefix: /b\n", "applications[1].name: Found multiple configs for application \"a\""),
    ("duplicate route prefixes", "applications:\n  - name: a\n    import_path: photon.examples:noop\n    route_prefix: /x\n  - name: b\n    import_path: photon.examples:echo\n    route_prefix: /x\n", "applications[1].route_prefix: Found duplicate applications for route prefix \"/x\""),
    ("route_prefix without /", "applications:\n  - name: a\n    import_path: photon.examples:noop\n    route_prefix: api\n", "applications[0].route_prefix: Invalid route_prefix 'api', must start with a forward slash"),
    ("unknown field", "logging_config:\n  encodng: JSON\napplications:\n  - name: a\n    import_path: photon.examples:noop\n", "logging_config.encodng: unknown field"),
    ("negative max_queued_requests", "applications:\n  - name: a\n    import_path: photon.examples:noop\n    deployments:\n      - name: Noop\n        max_queued_requests: -5\n", "applications[0].deployments[0].max_queued_requests"),
    ("import path that does not import", "applications:\n  - name: a\n    import_path: no_such.module:app\n", "applications[0].import_path: Deploying app 'a' failed with exception:\nTraceback (most recent call last):"),
    ("override of a missing deployment", "applications:\n  - name: a\n    import_path: photon.examples:noop\n    deployments:\n      - name: Nope\n", "Deployment 'Nope' does not exist. Available: ['Noop']"),
];

#[test]
fn invalid_configs_exit_non_zero_naming_the_field() {
    for (what, yaml, expected) in INVALID {
        let file = TempFile::new("bad.yaml", yaml);
        let out = std::process::Command::new(PHOTON)
            .arg("run")
            .arg(&file.path)
            .args(["--http-port", "0", "--dashboard-port", "0"])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{what}: exited successfully");
        assert!(stderr.contains(expected), "{what}: {stderr}");
        assert!(!stderr.contains("listening"), "{what}: started listeners before failing: {stderr}");
    }
}

#[test]
fn all_errors_of_a_file_are_reported_together() {
    let file = TempFile::new(
        "bad.yaml",
        "applications:\n  - name: a\n    import_path: photon.examples:noop\n    route_prefix: nope\n    deployments:\n      - name: Noop\n        max_ongoing_requests: 0\n        health_check_period_s: -1\n",
    );
    let out = std::process::Command::new(PHOTON).arg("run").arg(&file.path).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("3 errors"), "{stderr}");
    for field in ["route_prefix", "max_ongoing_requests", "health_check_period_s"] {
        assert!(stderr.contains(field), "{field} missing: {stderr}");
    }
}
