//! Micro-benchmarks of the router's per-request work: route matching, replica choice, queue
//! admission (acquire + release of a permit) and the handle call's request framing.
//! Run: `cargo bench -p photon-router`.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use photon_router::{AppRoute, DeploymentId, DeploymentTargets, ReplicaEndpoint, Router, RoutingTable};

fn table(apps: usize, replicas: usize) -> RoutingTable {
    let mut t = RoutingTable { version: 1, ..Default::default() };
    for a in 0..apps {
        t.routes.push(AppRoute { app: format!("app{a}"), route_prefix: Some(format!("/app{a}")), ingress: "D".into() });
        t.deployments.insert(
            DeploymentId::new(format!("app{a}"), "D"),
            DeploymentTargets {
                max_ongoing_requests: 1000,
                max_queued_requests: None,
                backpressure_status_code: 503,
                retry_after_s: None,
                replicas: (0..replicas)
                    .map(|r| ReplicaEndpoint {
                        replica_id: format!("r{a}-{r}"),
                        address: format!("127.0.0.1:{}", 20000 + r),
                        model_ids: Vec::new(),
                    })
                    .collect(),
                unavailable: false,
            },
        );
    }
    t
}

fn benches(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let router = runtime.block_on(async {
        let r = Router::new();
        r.apply(table(20, 8));
        r
    });

    c.bench_function("route match among 20 prefixes", |b| {
        b.iter(|| {
            let snapshot = router.snapshot();
            black_box(snapshot.match_path(black_box("/app13/predict")).map(|r| r.app.len()))
        })
    });

    let queue = router.queue(&DeploymentId::new("app3", "D"));
    c.bench_function("queue admission: acquire + release (8 replicas)", |b| {
        b.iter(|| runtime.block_on(async { black_box(queue.acquire().await.unwrap()) }))
    });

    c.bench_function("handle call framing (JSON args)", |b| {
        b.iter(|| {
            let body = serde_json::to_vec(&serde_json::json!([black_box(2.5)])).unwrap();
            black_box(photon_router::wire::Call::handle("check_price", body.into(), "id"))
        })
    });
}

criterion_group!(hot_path, benches);
criterion_main!(hot_path);
