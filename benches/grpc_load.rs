//! Closed-loop gRPC load generator for the noop app: `connections` HTTP/2 connections,
//! `concurrency` callers spread over them, each calling `ray.serve.UserDefinedService/__call__`
//! back to back for `duration`; prints req/s, p50 and p99 and errors.
//!
//! `cargo bench --bench grpc_load -- ADDR [CONCURRENCY] [SECONDS] [APP]`
//! (ADDR as `127.0.0.1:9000`; used by benches/http_load.sh).

use std::time::{Duration, Instant};

use photon_proto::ray::serve::user_defined_service_client::UserDefinedServiceClient;
use photon_proto::ray::serve::UserDefinedMessage;
use tonic::transport::Channel;

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| a != "--bench").collect();
    let addr = args.first().cloned().unwrap_or_else(|| "127.0.0.1:9000".into());
    let concurrency: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(64);
    let seconds: u64 = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(10);
    let app = args.get(3).cloned().unwrap_or_else(|| "noop".into());
    // One connection per 16 callers: one HTTP/2 connection's task caps throughput.
    let connections = concurrency.div_ceil(16).max(1);
    let mut channels = Vec::new();
    for _ in 0..connections {
        channels
            .push(Channel::from_shared(format!("http://{addr}")).unwrap().tcp_nodelay(true).connect().await.unwrap());
    }
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let tasks: Vec<_> = (0..concurrency)
        .map(|i| {
            let mut client = UserDefinedServiceClient::new(channels[i % connections].clone());
            let app = app.clone();
            tokio::spawn(async move {
                let (mut latencies, mut errors) = (Vec::new(), 0u64);
                while Instant::now() < deadline {
                    let mut request = tonic::Request::new(UserDefinedMessage::default());
                    request.metadata_mut().insert("application", app.parse().unwrap());
                    let start = Instant::now();
                    match client.call(request).await {
                        Ok(_) => latencies.push(start.elapsed()),
                        Err(_) => errors += 1,
                    }
                }
                (latencies, errors)
            })
        })
        .collect();
    let (mut all, mut errors) = (Vec::new(), 0);
    for t in tasks {
        let (l, e) = t.await.unwrap();
        all.extend(l);
        errors += e;
    }
    all.sort();
    let pct = |p: f64| {
        all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1))).copied().unwrap_or_default()
    };
    println!(
        "{:.2} {:.3}ms {:.3}ms {}",
        all.len() as f64 / seconds as f64,
        pct(0.50).as_secs_f64() * 1e3,
        pct(0.99).as_secs_f64() * 1e3,
        errors
    );
}
