//! Open-loop (fixed-rate) HTTP latency: requests are scheduled at a constant rate whatever the
//! answers do. A request that had to wait for its connection's previous answer is timed from its
//! scheduled time, not from when it could be sent, so queueing shows up instead of being hidden
//! by a closed loop waiting on slow answers (coordinated omission); one sent on time is timed from
//! its sending. Prints the achieved rate, p50, p99, p99.9 and errors.
//!
//! `cargo bench --bench open_loop -- URL RATE [SECONDS] [CONNECTIONS]`
//! (URL as `http://127.0.0.1:8000/`; used by benches/http_load.sh).

use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use tokio::sync::mpsc;

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| a != "--bench").collect();
    let url: http::Uri = args.first().map_or("http://127.0.0.1:8000/", String::as_str).parse().expect("a URL");
    let rate: f64 = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(1000.0);
    let seconds: f64 = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(10.0);
    let connections: usize = args.get(3).and_then(|a| a.parse().ok()).unwrap_or(64);
    let addr = format!("{}:{}", url.host().expect("a host"), url.port_u16().unwrap_or(80));

    // Each connection takes scheduled send times from its own queue; the scheduler deals
    // requests round-robin, so a connection whose answers are slow accumulates a backlog whose
    // waiting time is counted.
    let interval = Duration::from_secs_f64(1.0 / rate);
    let total = (rate * seconds) as usize;
    let start = Instant::now() + Duration::from_millis(50);
    let mut queues = Vec::new();
    let mut workers = Vec::new();
    for _ in 0..connections {
        let (tx, mut rx) = mpsc::unbounded_channel::<Instant>();
        queues.push(tx);
        let (addr, url) = (addr.clone(), url.clone());
        workers.push(tokio::spawn(async move {
            let mut sender = connect(&addr).await;
            let (mut latencies, mut errors) = (Vec::new(), 0u64);
            let mut free_at = Instant::now();
            while let Some(scheduled) = rx.recv().await {
                tokio::time::sleep_until(scheduled.into()).await;
                // Waiting behind a slow answer counts (the server's queueing); the timer's own
                // lateness (about a millisecond) when the connection was free does not.
                let from = if free_at > scheduled { scheduled } else { Instant::now() };
                // A server may close a keep-alive connection after some requests (nginx: 1,000);
                // like wrk, open a new one and send again.
                for attempt in 0..2 {
                    if sender.ready().await.is_err() {
                        sender = connect(&addr).await;
                    }
                    let req =
                        http::Request::get(url.clone()).header("host", &addr).body(Empty::<Bytes>::new()).unwrap();
                    match sender.send_request(req).await {
                        Ok(resp) if resp.status().is_success() => {
                            let _ = resp.into_body().collect().await;
                            latencies.push(from.elapsed());
                            break;
                        }
                        Ok(_) => {
                            errors += 1;
                            break;
                        }
                        Err(_) if attempt == 0 => sender = connect(&addr).await,
                        Err(_) => errors += 1,
                    }
                }
                free_at = Instant::now();
            }
            (latencies, errors)
        }));
    }
    for i in 0..total {
        queues[i % connections].send(start + interval * i as u32).expect("worker alive");
    }
    drop(queues);
    let (mut latencies, mut errors) = (Vec::new(), 0u64);
    for w in workers {
        let (l, e) = w.await.unwrap();
        latencies.extend(l);
        errors += e;
    }
    let elapsed = start.elapsed().as_secs_f64();
    latencies.sort();
    let pct = |p: f64| {
        latencies
            .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
            .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    };
    println!(
        "{:.0} {:.3}ms {:.3}ms {:.3}ms {}",
        latencies.len() as f64 / elapsed,
        pct(0.50),
        pct(0.99),
        pct(0.999),
        errors
    );
}

async fn connect(addr: &str) -> hyper::client::conn::http1::SendRequest<Empty<Bytes>> {
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream.set_nodelay(true).ok();
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.expect("handshake");
    tokio::spawn(conn);
    sender
}
