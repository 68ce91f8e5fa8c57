//! End to end: the gRPC front door (Ray's built-in service and the greeter, through a tonic
//! client generated from Ray's serve.proto), streaming over HTTP and gRPC, request timeouts,
//! and cancellation of in-flight requests by the client.

mod common;

use std::time::{Duration, Instant};

use common::*;
use photon_proto::ray::serve as ray;
use ray::ray_serve_api_service_client::RayServeApiServiceClient;
use ray::user_defined_service_client::UserDefinedServiceClient;
use tonic::transport::Channel;

const CONFIG: &str = "
grpc_options:
  grpc_servicer_functions: [user_defined_protos_pb2_grpc.add_UserDefinedServiceServicer_to_server]
  request_timeout_s: 0.5
http_options:
  request_timeout_s: 0.5
applications:
  - name: greeter
    import_path: photon.examples:greeter
    route_prefix: /greeter
    deployments:
      - name: Greeter
        user_config: {stream_interval_ms: 100}
  - name: stream
    import_path: photon.examples:stream
    route_prefix: /stream
  - name: slow
    import_path: photon.examples:sleep
    route_prefix: /slow
    deployments:
      - name: Sleep
        max_ongoing_requests: 1
        max_queued_requests: 1
        user_config: {sleep_ms: 150}
  - name: slower
    import_path: photon.examples:sleep
    route_prefix: /slower
    deployments:
      - name: Sleep
        user_config: {sleep_ms: 2000}
";

async fn channel(p: &Photon) -> Channel {
    let addr = p.grpc_addr().expect("gRPC proxy started");
    let port = addr.rsplit(':').next().unwrap();
    Channel::from_shared(format!("http://127.0.0.1:{port}")).unwrap().connect().await.unwrap()
}

fn with_app<T>(message: T, app: &str) -> tonic::Request<T> {
    let mut r = tonic::Request::new(message);
    r.metadata_mut().insert("application", app.parse().unwrap());
    r
}

fn greeting() -> ray::UserDefinedMessage {
    ray::UserDefinedMessage { name: "foo".into(), foo: "bar".into(), num: 3 }
}

#[tokio::test]
async fn grpc_front_door_speaks_rays_serve_proto() {
    let p = Photon::run_yaml(CONFIG, &[]);
    p.wait_running(&["greeter", "stream", "slow"]).await;
    let ch = channel(&p).await;

    let mut api = RayServeApiServiceClient::new(ch.clone());
    let apps = api.list_applications(ray::ListApplicationsRequest {}).await.unwrap().into_inner();
    assert_eq!(apps.application_names, ["greeter", "stream", "slow", "slower"]);
    assert_eq!(api.healthz(ray::HealthzRequest {}).await.unwrap().into_inner().message, "success");

    let mut greeter = UserDefinedServiceClient::new(ch.clone());
    let reply = greeter.call(with_app(greeting(), "greeter")).await.unwrap();
    assert!(reply.metadata().get("request_id").is_some());
    let reply = reply.into_inner();
    assert_eq!((reply.greeting.as_str(), reply.num_x2), ("Hello foo from bar", 6));

    // Server streaming: ten messages, 100 ms apart, arriving as they are produced.
    let start = Instant::now();
    let mut stream = greeter.streaming(with_app(greeting(), "greeter")).await.unwrap().into_inner();
    let mut arrivals = Vec::new();
    while let Some(m) = stream.message().await.unwrap() {
        arrivals.push((start.elapsed(), m));
    }
    assert_eq!(arrivals.len(), 10);
    for (i, (_, m)) in arrivals.iter().enumerate() {
        assert_eq!(m.greeting, format!("{i}: Hello foo from bar"));
        assert_eq!(m.num_x2, 6 + i as i64);
    }
    let (first, last) = (arrivals[0].0, arrivals[9].0);
    assert!(last - first >= Duration::from_millis(800), "messages bunched: first {first:?} last {last:?}");

    // Unknown or missing application: NOT_FOUND with Ray's text.
    let err = greeter.call(with_app(greeting(), "nope")).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
    assert!(err.message().starts_with("Application 'nope' not found."), "{}", err.message());
    let err = greeter.call(tonic::Request::new(greeting())).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
    assert!(err.message().starts_with("Application metadata not set."), "{}", err.message());

    // Backpressure: one running, one queued, the rest RESOURCE_EXHAUSTED.
    let calls: Vec<_> = (0..6)
        .map(|_| {
            let mut c = UserDefinedServiceClient::new(ch.clone());
            tokio::spawn(async move { c.call(with_app(greeting(), "slow")).await.map(|_| ()).map_err(|s| s.code()) })
        })
        .collect();
    let mut codes = Vec::new();
    for c in calls {
        codes.push(c.await.unwrap());
    }
    let exhausted = codes.iter().filter(|c| **c == Err(tonic::Code::ResourceExhausted)).count();
    let ok = codes.iter().filter(|c| c.is_ok()).count();
    assert_eq!((ok, exhausted), (2, 4), "{codes:?}");

    // A request running past grpc_options.request_timeout_s: DEADLINE_EXCEEDED.
    let err = greeter.call(with_app(greeting(), "slower")).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::DeadlineExceeded);
    assert_eq!(err.message(), "Request timed out after 0.5s.");
}

#[tokio::test]
async fn http_streams_chunks_as_they_are_produced() {
    let p = Photon::run_yaml(CONFIG, &[]);
    p.wait_running(&["stream"]).await;
    let stream = tokio::net::TcpStream::connect(&p.http).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await.unwrap();
    tokio::spawn(conn);
    let start = Instant::now();
    let req = http::Request::post("/stream").body(http_body_util::Full::new(bytes::Bytes::from("{}"))).unwrap();
    let resp = sender.send_request(req).await.unwrap();
    assert_eq!(resp.headers()["transfer-encoding"], "chunked");
    let mut body = resp.into_body();
    let mut text = String::new();
    let mut first_at = None;
    use http_body_util::BodyExt;
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.unwrap().into_data() {
            first_at.get_or_insert(start.elapsed());
            text.push_str(std::str::from_utf8(&data).unwrap());
        }
    }
    let total = start.elapsed();
    assert_eq!(text, (0..10).map(|i| format!("{i}\n")).collect::<String>());
    let first_at = first_at.unwrap();
    assert!(first_at < Duration::from_millis(400), "first chunk after {first_at:?}");
    assert!(total - first_at >= Duration::from_millis(800), "chunks bunched: first {first_at:?}, end {total:?}");

    // Server-sent events when asked for.
    let r =
        request(&p.http, "POST", "/stream", &[("accept", "text/event-stream")], br#"{"n": 2, "interval_ms": 1}"#).await;
    assert_eq!(r.header("content-type").as_deref(), Some("text/event-stream"));
    assert_eq!(r.text(), "data: 0\n\ndata: 1\n\n");
}

#[tokio::test]
async fn timeouts_answer_408_and_cancelled_requests_free_the_replica() {
    let p = Photon::run_yaml(
        "http_options:\n  request_timeout_s: 0.5\napplications:\n  - name: slower\n    import_path: photon.examples:sleep\n    route_prefix: /slower\n    deployments:\n      - name: Sleep\n        max_ongoing_requests: 50\n        user_config: {sleep_ms: 3000}\n",
        &[],
    );
    p.wait_running(&["slower"]).await;
    let r = request(&p.http, "POST", "/slower", &[("x-request-id", "t-1")], b"").await;
    assert_eq!(r.status, 408);
    assert_eq!(r.text(), "Request t-1 timed out after 0.5s.");

    // 50 slow requests (no timeout: the header turns it off), cancelled by their clients.
    let inflight: Vec<_> = (0..50)
        .map(|_| {
            let addr = p.http.clone();
            tokio::spawn(
                async move { request(&addr, "POST", "/slower", &[("x-request-timeout-seconds", "0")], b"").await },
            )
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    for t in &inflight {
        t.abort();
    }
    for t in inflight {
        let _ = t.await;
    }
    // These take 3 s; if the replica still held the cancelled requests' 50 slots, they would
    // first wait ~2.7 s behind them (or be refused).
    let start = Instant::now();
    let fresh: Vec<_> = (0..50)
        .map(|_| {
            let addr = p.http.clone();
            tokio::spawn(async move {
                request(&addr, "POST", "/slower", &[("x-request-timeout-seconds", "0")], b"").await.status
            })
        })
        .collect();
    for t in fresh {
        assert_eq!(t.await.unwrap(), 200);
    }
    let took = start.elapsed();
    assert!(took < Duration::from_millis(4500), "new requests waited for cancelled ones: {took:?}");
}
