//! End to end, on real processes: failing health checks, replica death under load, and
//! overload far beyond capacity. Figures printed here are collected in RELIABILITY.md.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

fn deployment(details: &Value, app: &str, name: &str) -> Value {
    details["applications"][app]["deployments"][name].clone()
}

fn running_ids(dep: &Value) -> Vec<String> {
    dep["replicas"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["state"] == "RUNNING")
        .map(|r| r["replica_id"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unhealthy_replica_leaves_routing_and_is_replaced() {
    let p = Photon::run_yaml(
        "applications:\n  - name: flaky\n    import_path: photon.examples:flaky\n    route_prefix: /flaky\n    deployments:\n      - name: Flaky\n        num_replicas: 2\n        health_check_period_s: 0.5\n        health_check_timeout_s: 1\n        graceful_shutdown_wait_loop_s: 0.2\n",
        &[],
    );
    p.wait_running(&["flaky"]).await;
    let before = running_ids(&deployment(&p.details().await, "flaky", "Flaky"));
    assert_eq!(before.len(), 2);

    // One replica is told to be unhealthy; requests keep succeeding on the other.
    assert_eq!(post_json(&p.http, "/flaky", r#"{"healthy": false}"#).await.status, 200);
    let flipped_at = Instant::now();
    let load = Load::start(&p.http, "/flaky", "{}", 4);

    let mut saw_unhealthy = false;
    let mut left_routing_after = None;
    loop {
        let dep = deployment(&p.details().await, "flaky", "Flaky");
        if left_routing_after.is_none()
            && dep["replicas"].as_array().unwrap().iter().any(|r| r["last_health_check_error"].is_string())
        {
            left_routing_after = Some(flipped_at.elapsed());
        }
        saw_unhealthy |= dep["status"] == "UNHEALTHY";
        let ids = running_ids(&dep);
        if saw_unhealthy && dep["status"] == "HEALTHY" && ids.len() == 2 && ids != before {
            break;
        }
        assert!(flipped_at.elapsed() < Duration::from_secs(20), "no recovery: {dep}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (results, rate) = load.finish().await;
    let failed: Vec<_> = results.iter().filter(|(s, _)| *s != 200).collect();
    println!("flaky: {} requests at {rate:.0} req/s, {} failed; first failed check (replica out of routing) after {left_routing_after:?}; recovered after {:?}", results.len(), failed.len(), flipped_at.elapsed());
    assert!(failed.is_empty(), "{failed:?}");
    // One health-check period (0.5 s, jittered up to 10 %) plus the check itself.
    assert!(left_routing_after.unwrap() < Duration::from_millis(1500), "{left_routing_after:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_a_replica_under_load_fails_only_its_in_flight_requests() {
    let p = Photon::run_yaml(
        "applications:\n  - name: app\n    import_path: photon.examples:sleep\n    route_prefix: /app\n    deployments:\n      - name: Sleep\n        num_replicas: 2\n        max_ongoing_requests: 5\n        user_config: {sleep_ms: 10}\n",
        &[],
    );
    p.wait_running(&["app"]).await;
    let load = Load::start(&p.http, "/app", "{}", 8);
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let (victim, _) = children_of(p.pid())[0].clone();
    let killed = Instant::now();
    signal(victim, nix::sys::signal::Signal::SIGKILL);
    let recovered_after = loop {
        let dep = deployment(&p.details().await, "app", "Sleep");
        let running_others = dep["replicas"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["state"] == "RUNNING" && r["pid"].as_u64() != Some(u64::from(victim)))
            .count();
        if running_others == 2 {
            break killed.elapsed();
        }
        assert!(killed.elapsed() < Duration::from_secs(5), "no replacement within 5 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let (results, rate) = load.finish().await;
    let failed: Vec<_> = results.iter().filter(|(s, _)| *s != 200).collect();
    println!("kill -9 replica: {} requests at {rate:.0} req/s; {} failed (in flight on the killed replica): {failed:?}; replacement routed after {recovered_after:?}", results.len(), failed.len());
    assert!(rate >= 200.0, "load was {rate:.0} req/s");
    // The proxy had at most max_ongoing_requests (5) requests on the victim.
    assert!(failed.len() <= 5, "{failed:?}");
    assert!(failed.iter().all(|(s, _)| *s == 500));
}

fn rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overload_is_shed_with_503_and_admitted_latency_stays_bounded() {
    // Capacity: 2 concurrent requests of 100 ms = 20 req/s; offered: 400 req/s for 10 s.
    let p = Photon::run_yaml(
        "applications:\n  - name: app\n    import_path: photon.examples:sleep\n    route_prefix: /app\n    deployments:\n      - name: Sleep\n        max_ongoing_requests: 2\n        max_queued_requests: 4\n        user_config: {sleep_ms: 100}\n",
        &[],
    );
    p.wait_running(&["app"]).await;
    let unloaded = {
        let t = Instant::now();
        assert_eq!(post_json(&p.http, "/app", "{}").await.status, 200);
        t.elapsed()
    };
    let start = Instant::now();
    let mut tasks = Vec::new();
    let mut peak_rss = 0;
    while start.elapsed() < Duration::from_secs(10) {
        for _ in 0..10 {
            let addr = p.http.clone();
            tasks.push(tokio::spawn(async move {
                let t = Instant::now();
                let status = post_json(&addr, "/app", "{}").await.status;
                (status, t.elapsed())
            }));
        }
        peak_rss = peak_rss.max(rss_kb(p.pid()));
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let (mut ok, mut shed, mut latencies) = (0, 0, Vec::new());
    for t in tasks {
        let (status, took) = t.await.unwrap();
        match status {
            200 => {
                ok += 1;
                latencies.push(took);
            }
            503 => shed += 1,
            other => panic!("unexpected status {other}"),
        }
    }
    latencies.sort();
    let p99 = latencies[latencies.len() * 99 / 100];
    // Admitted requests wait at most for the queue ahead of them: 4 queued / 2 running x 100 ms.
    let bound = unloaded * 2 + Duration::from_millis(200);
    println!("overload: {ok} x 200, {shed} x 503 in 10 s; unloaded {unloaded:?}, p99 of 200s {p99:?} (bound {bound:?}); head peak RSS {} MB", peak_rss / 1024);
    assert!(ok > 100 && shed > ok, "{ok} ok, {shed} shed");
    assert!(p99 <= bound, "p99 {p99:?} over {bound:?}");
    assert!(peak_rss < 100 * 1024, "head RSS {} MB", peak_rss / 1024);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn autoscaling_follows_the_load_up_and_back_down() {
    let p = Photon::run_yaml(
        "applications:\n  - name: auto\n    import_path: photon.examples:sleep\n    route_prefix: /auto\n    deployments:\n      - name: Sleep\n        max_ongoing_requests: 4\n        graceful_shutdown_wait_loop_s: 0.2\n        user_config: {sleep_ms: 400}\n        autoscaling_config:\n          min_replicas: 1\n          max_replicas: 8\n          target_ongoing_requests: 2\n          metrics_interval_s: 0.2\n          look_back_period_s: 1\n          upscale_delay_s: 0.5\n          downscale_delay_s: 2\n",
        &[],
    );
    p.wait_running(&["auto"]).await;
    let count = |details: Value| running_ids(&deployment(&details, "auto", "Sleep")).len();
    assert_eq!(count(p.details().await), 1);

    let start = Instant::now();
    let load = Load::start(&p.http, "/auto", "{}", 16);
    let mut peak = 1;
    let mut statuses: Vec<String> = Vec::new();
    while start.elapsed() < Duration::from_secs(20) && peak < 8 {
        let details = p.details().await;
        statuses.push(deployment(&details, "auto", "Sleep")["status"].as_str().unwrap_or("").to_string());
        assert_eq!(details["applications"]["auto"]["status"], "RUNNING", "autoscaling keeps the app RUNNING");
        peak = peak.max(count(details));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let up_after = start.elapsed();
    let (results, _) = load.finish().await;
    assert!(results.iter().all(|(s, _)| *s == 200), "failed requests while scaling up");
    assert_eq!(peak, 8, "scaled up to {peak} only");
    eventually(Duration::from_secs(5), "upscale completed", || async {
        deployment(&p.details().await, "auto", "Sleep")["status_trigger"] == "UPSCALE_COMPLETED"
    })
    .await;
    let _ = statuses;

    let idle = Instant::now();
    eventually(Duration::from_secs(20), "back down to 1 replica", || async { count(p.details().await) == 1 }).await;
    let down_after = idle.elapsed();
    println!("autoscaling: 1 -> 8 replicas in {up_after:?} under 16 concurrent requests; 8 -> 1 in {down_after:?} after the load stopped");
    // Not before the configured downscale delay (2 s) has passed; the clock here starts when
    // the last requests (400 ms each) finish, so the decision may have started up to 0.4 s earlier.
    assert!(down_after >= Duration::from_millis(1500), "{down_after:?}");
    eventually(Duration::from_secs(10), "HEALTHY after scaling down", || async {
        deployment(&p.details().await, "auto", "Sleep")["status"] == "HEALTHY"
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_to_zero_and_back_up_on_the_first_request() {
    let p = Photon::run_yaml(
        "applications:\n  - name: zero\n    import_path: photon.examples:noop\n    route_prefix: /zero\n    deployments:\n      - name: Noop\n        graceful_shutdown_wait_loop_s: 0.2\n        autoscaling_config:\n          min_replicas: 0\n          max_replicas: 2\n          metrics_interval_s: 0.2\n          look_back_period_s: 1\n          upscale_delay_s: 0.2\n          downscale_delay_s: 1\n          downscale_to_zero_delay_s: 1\n",
        &[],
    );
    p.wait_running(&["zero"]).await;
    assert!(children_of(p.pid()).is_empty(), "min_replicas 0 starts no replica");
    // The first request waits in the proxy's queue while a replica starts.
    let start = Instant::now();
    let r = request(&p.http, "POST", "/zero", &[], b"").await;
    assert_eq!((r.status, r.text()), (200, "ok".to_string()));
    let cold = start.elapsed();
    assert_eq!(children_of(p.pid()).len(), 1);
    // Idle again: back to zero after the delay.
    eventually(Duration::from_secs(15), "scaled back to zero", || async { children_of(p.pid()).is_empty() }).await;
    println!("scale to zero: first request served after {cold:?} (cold start), back to 0 replicas after idling");
}

fn os(args: &[&str]) -> Vec<std::ffi::OsString> {
    args.iter().map(Into::into).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_controller_can_die_and_come_back_without_dropping_a_request() {
    let store = TempFile::new("state.json", "");
    std::fs::remove_file(&store.path).unwrap();
    controller_restart(&format!("file:{}", store.path.display()), "file store").await;
}

/// A redis-server of this test's own, on a Unix socket in a temporary directory (no port).
struct Redis {
    child: std::process::Child,
    dir: TempFile,
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = &self.dir;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_controller_recovers_from_the_redis_store() {
    // .ci/run installs redis-server; without it this scenario cannot run here.
    if std::process::Command::new("redis-server").arg("--version").output().is_err() {
        eprintln!("SKIPPED: redis-server is not installed (.ci/run installs it)");
        return;
    }
    let dir = TempFile::new("redis.conf", "");
    let socket = dir.path.with_file_name("redis.sock");
    let child = std::process::Command::new("redis-server")
        .args(["--port", "0", "--unixsocket"])
        .arg(&socket)
        .args(["--save", "", "--appendonly", "no", "--dir"])
        .arg(dir.path.parent().unwrap())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let _redis = Redis { child, dir };
    let deadline = Instant::now() + Duration::from_secs(10);
    while !socket.exists() {
        assert!(Instant::now() < deadline, "redis-server did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    controller_restart(&format!("redis+unix://{}", socket.display()), "Redis store").await;
}

async fn controller_restart(store_spec: &str, what: &str) {
    let port = free_port().to_string();
    let head_args = os(&[
        "start",
        "--proxy-location",
        "Disabled",
        "--controller-port",
        &port,
        "--state-store",
        store_spec,
        "--dashboard-port",
        "0",
    ]);
    // A proxy run on its own presents the head's cluster token: both are given the same.
    let token = vec![("PHOTON_CLUSTER_TOKEN".to_string(), format!("reliability-{}", fastrand::u64(..)))];
    let mut head = Photon::spawn_with_env(&head_args, &token, false, true);
    let proxy = Photon::spawn_with_env(
        &os(&[
            "proxy",
            "--controller-address",
            &format!("http://127.0.0.1:{port}"),
            "--http-port",
            "0",
            "--http-host",
            "127.0.0.1",
        ]),
        &token,
        true,
        false,
    );
    let config = serde_json::json!({"applications": [{"name": "app", "import_path": "photon.examples:sleep", "route_prefix": "/app",
        "deployments": [{"name": "Sleep", "num_replicas": 2, "max_ongoing_requests": 10, "user_config": {"sleep_ms": 5}}]}]});
    let put = put_config(&head.rest, &config).await;
    assert_eq!(put.status, 200);
    head.wait_running(&["app"]).await;
    eventually(Duration::from_secs(10), "the proxy routes", || async {
        post_json(&proxy.http, "/app", "{}").await.status == 200
    })
    .await;
    let before = head.details().await;
    let ids = running_ids(&deployment(&before, "app", "Sleep"));
    let pids: Vec<u64> = deployment(&before, "app", "Sleep")["replicas"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["pid"].as_u64().unwrap())
        .collect();

    let load = Load::start(&proxy.http, "/app", "{}", 8);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let down_at = Instant::now();
    signal(head.pid(), nix::sys::signal::Signal::SIGKILL);
    let _ = head.terminate_killed();
    tokio::time::sleep(Duration::from_secs(2)).await;
    for pid in &pids {
        assert!(alive(*pid as u32), "replica {pid} died with the controller");
    }
    // Without the variable this time: the checkpoint gives the restarted head its credentials,
    // which the proxy and the adopted replicas still present.
    let head2 = Photon::spawn_waiting(&head_args, false, true);
    head2.wait_running(&["app"]).await;
    let recovered_after = down_at.elapsed();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (results, rate) = load.finish().await;
    let failed: Vec<_> = results.iter().filter(|(s, _)| *s != 200).collect();
    println!("controller kill -9 ({what}): {} requests at {rate:.0} req/s through the standalone proxy, {} failed; controller back and RUNNING after {recovered_after:?}", results.len(), failed.len());
    assert!(rate >= 200.0, "load was {rate:.0} req/s");
    assert!(failed.is_empty(), "{failed:?}");

    let after = head2.details().await;
    assert_eq!(running_ids(&deployment(&after, "app", "Sleep")), ids, "replicas were replaced");
    let pids_after: Vec<u64> = deployment(&after, "app", "Sleep")["replicas"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["pid"].as_u64().unwrap())
        .collect();
    assert_eq!(pids_after, pids, "replicas were restarted");
    drop(proxy);
    drop(head2);
    for pid in &pids {
        let deadline = Instant::now() + Duration::from_secs(10);
        while alive(*pid as u32) {
            assert!(Instant::now() < deadline, "adopted replica {pid} outlived the head's SIGTERM");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_oversized_and_truncated_clients_do_not_hurt_the_proxy() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let p = Photon::run_yaml(
        "applications:\n  - name: n\n    import_path: photon.examples:noop\n    route_prefix: /n\n",
        &[],
    );
    p.wait_running(&["n"]).await;
    // 200 slowloris connections that never finish their request head.
    let mut slow = Vec::new();
    for _ in 0..200 {
        let mut s = tokio::net::TcpStream::connect(&p.http).await.unwrap();
        s.write_all(b"GET /n HTTP/1.1\r\nHost: x\r\nX-Slow: ").await.unwrap();
        slow.push(s);
    }
    // An oversized request head: refused, not buffered without bound.
    let mut big = tokio::net::TcpStream::connect(&p.http).await.unwrap();
    let head = format!("GET /n HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n", "a".repeat(200 << 10));
    let _ = big.write_all(head.as_bytes()).await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), big.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.is_empty() || answer.starts_with("HTTP/1.1 431"), "{answer}");
    // A truncated body: the client promises 100 bytes, sends 10 and goes away.
    let mut cut = tokio::net::TcpStream::connect(&p.http).await.unwrap();
    cut.write_all(b"POST /n HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n0123456789").await.unwrap();
    drop(cut);
    // Meanwhile normal requests are served at once.
    for _ in 0..20 {
        let t = Instant::now();
        assert_eq!(get(&p.http, "/n").await.text(), "ok");
        assert!(t.elapsed() < Duration::from_millis(500));
    }
    // The slow connections are closed after the head timeout.
    let mut closed = 0;
    for mut s in slow.into_iter().take(5) {
        let mut buf = [0u8; 64];
        if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_secs(15), s.read(&mut buf)).await {
            closed += 1;
        }
    }
    assert_eq!(closed, 5, "slow connections were not closed by the header timeout");
    let m = get(&p.rest, "/metrics").await.text();
    assert!(m.contains("ray_serve_num_http_requests_total"));
}
