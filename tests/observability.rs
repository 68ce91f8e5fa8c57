//! End to end: `/metrics` with Ray's names agrees exactly with the traffic sent, gauges move
//! under load and return to 0, and one request id appears in the proxy's and the replica's logs.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::*;

/// `name{labels} value` lines of a scrape, keyed by the full series text.
fn series(scrape: &str) -> HashMap<String, f64> {
    scrape
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect()
}

/// The value of the series of `name` whose labels include every `labels` pair.
fn value(all: &HashMap<String, f64>, name: &str, labels: &[(&str, &str)]) -> f64 {
    all.iter()
        .filter(|(k, _)| k.starts_with(&format!("{name}{{")))
        .filter(|(k, _)| labels.iter().all(|(l, v)| k.contains(&format!("{l}=\"{v}\""))))
        .map(|(_, v)| v)
        .sum()
}

async fn scrape(p: &Photon) -> HashMap<String, f64> {
    let r = get(&p.rest, "/metrics").await;
    assert_eq!(r.status, 200);
    assert!(r.header("content-type").unwrap().starts_with("text/plain; version=0.0.4"));
    series(&r.text())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_agree_with_the_traffic_sent() {
    let p = Photon::run_yaml(include_str!("../examples/serve-config.yaml"), &[]);
    p.wait_running(&["fruit_app", "math_app"]).await;
    let fruits = ["MANGO", "MANGO", "ORANGE", "PEAR", "APPLE"];
    let workers: Vec<_> = (0..8)
        .map(|w| {
            let addr = p.http.clone();
            tokio::spawn(async move {
                for i in 0..125 {
                    let fruit = fruits[(w * 125 + i) % fruits.len()];
                    let r = post_json(&addr, "/fruit/", &format!("[\"{fruit}\", 2]")).await;
                    assert_eq!(r.status, 200);
                }
            })
        })
        .collect();
    for w in workers {
        w.await.unwrap();
    }
    for _ in 0..10 {
        assert_eq!(get(&p.http, "/no/such/route").await.status, 404);
    }
    let m = scrape(&p).await;
    let fruit = [("application", "fruit_app"), ("route", "/fruit"), ("method", "POST"), ("status_code", "200")];
    assert_eq!(value(&m, "ray_serve_num_http_requests_total", &fruit), 1000.0);
    assert_eq!(value(&m, "ray_serve_http_request_latency_ms_count", &fruit), 1000.0);
    assert_eq!(value(&m, "ray_serve_http_request_latency_ms_bucket", &[("route", "/fruit"), ("le", "+Inf")]), 1000.0);
    for le in [
        "1", "2", "5", "10", "20", "50", "100", "200", "300", "400", "500", "1000", "2000", "5000", "10000", "60000",
        "120000", "300000", "600000",
    ] {
        assert!(
            m.keys()
                .any(|k| k.starts_with("ray_serve_http_request_latency_ms_bucket")
                    && k.contains(&format!("le=\"{le}\""))),
            "bucket {le}"
        );
    }
    let missing = [("application", ""), ("status_code", "404")];
    assert_eq!(value(&m, "ray_serve_num_http_requests_total", &missing), 10.0);
    assert_eq!(value(&m, "ray_serve_num_http_error_requests_total", &[("error_code", "404"), ("route", "")]), 10.0);
    let per_deployment = |d: &str| {
        value(&m, "ray_serve_deployment_request_counter_total", &[("application", "fruit_app"), ("deployment", d)])
    };
    assert_eq!(per_deployment("FruitMarket"), 1000.0);
    assert_eq!(per_deployment("MangoStand"), 400.0);
    assert_eq!(per_deployment("OrangeStand"), 200.0);
    assert_eq!(per_deployment("PearStand"), 200.0);
    assert_eq!(
        value(&m, "ray_serve_num_router_requests_total", &[("deployment", "FruitMarket"), ("actor_id", "proxy")]),
        1000.0
    );
    assert_eq!(value(&m, "ray_serve_num_router_requests_total", &[("deployment", "MangoStand")]), 400.0);
    assert_eq!(value(&m, "ray_serve_deployment_status", &[("deployment", "MangoStand")]), 6.0);
    assert_eq!(value(&m, "ray_serve_application_status", &[("application", "math_app")]), 6.0);
    assert_eq!(value(&m, "ray_serve_deployment_replica_healthy", &[("deployment", "Adder")]), 1.0);
    assert_eq!(value(&m, "ray_serve_deployment_replica_starts_total", &[("deployment", "PearStand")]), 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gauges_move_under_load_and_return_to_zero() {
    let p = Photon::run_yaml(
        "applications:\n  - name: slow\n    import_path: photon.examples:sleep\n    route_prefix: /slow\n    deployments:\n      - name: Sleep\n        max_ongoing_requests: 2\n        user_config: {sleep_ms: 1500}\n",
        &[],
    );
    p.wait_running(&["slow"]).await;
    let load: Vec<_> = (0..6)
        .map(|_| {
            let addr = p.http.clone();
            tokio::spawn(async move { request(&addr, "POST", "/slow", &[], b"").await.status })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let m = scrape(&p).await;
    let slow = [("application", "slow"), ("deployment", "Sleep")];
    assert_eq!(value(&m, "ray_serve_replica_processing_queries", &slow), 2.0);
    assert_eq!(
        value(&m, "ray_serve_deployment_queued_queries", &[("deployment", "Sleep"), ("actor_id", "proxy")]),
        4.0
    );
    assert_eq!(
        value(&m, "ray_serve_num_ongoing_requests_at_replicas", &[("deployment", "Sleep"), ("actor_id", "proxy")]),
        2.0
    );
    assert_eq!(value(&m, "ray_serve_num_ongoing_http_requests", &[]), 6.0);
    for t in load {
        assert_eq!(t.await.unwrap(), 200);
    }
    let m = scrape(&p).await;
    assert_eq!(value(&m, "ray_serve_replica_processing_queries", &slow), 0.0);
    assert_eq!(value(&m, "ray_serve_deployment_queued_queries", &[("deployment", "Sleep")]), 0.0);
    assert_eq!(value(&m, "ray_serve_num_ongoing_requests_at_replicas", &[("deployment", "Sleep")]), 0.0);
    assert_eq!(value(&m, "ray_serve_num_ongoing_http_requests", &[]), 0.0);
}

#[tokio::test]
async fn one_request_id_in_proxy_and_replica_logs() {
    let p = Photon::run_yaml(include_str!("../examples/serve-config.yaml"), &[]);
    p.wait_running(&["fruit_app"]).await;
    let r = request(&p.http, "POST", "/fruit/", &[("x-request-id", "trace-me-4711")], br#"["MANGO", 2]"#).await;
    assert_eq!(r.text(), "6");
    eventually(Duration::from_secs(5), "log lines with the request id", || async {
        let log = p.log_text();
        let lines: Vec<&str> = log.lines().filter(|l| l.contains("trace-me-4711")).collect();
        let proxy = lines.iter().any(|l| l.contains("POST /fruit/ 200") && !l.contains("replica{"));
        let ingress = lines.iter().any(|l| l.contains("deployment=FruitMarket") && l.contains("__call__ /fruit/ 200"));
        let stand = lines.iter().any(|l| l.contains("deployment=MangoStand") && l.contains("check_price"));
        proxy && ingress && stand
    })
    .await;
}
