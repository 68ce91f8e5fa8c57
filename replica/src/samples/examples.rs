//! `photon.examples`: one-deployment applications for tests and benchmarks.
//! `noop` answers `ok`; `echo` returns the body with its content type; `sleep` waits
//! `user_config.sleep_ms` (default 100) and answers `ok`; `stream` streams `0\n` ... `N-1\n`;
//! `greeter` answers Ray's `ray.serve.UserDefinedService` over gRPC; `flaky` fails its health
//! checks once told to.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use photon_proto::ray::serve::{UserDefinedMessage, UserDefinedResponse};
use prost::Message;
use serde_json::{json, Value};

use super::config_get;
use crate::deployment::{ChunkStream, Deployment, DeploymentError, Piece, Protocol, Reply, Request};
use crate::registry::{AppDef, DeploymentDef};

/// `ok` over HTTP; over gRPC an empty message (which decodes as any message type's default).
fn ok(request: &Request) -> Reply {
    match request.protocol {
        Protocol::Grpc => Reply::bytes(Bytes::new(), None),
        Protocol::Http => Reply::text("ok"),
    }
}

struct Noop;

#[async_trait::async_trait]
impl Deployment for Noop {
    async fn call(&self, request: Request) -> Result<Reply, DeploymentError> {
        Ok(ok(&request))
    }
}

struct Echo;

#[async_trait::async_trait]
impl Deployment for Echo {
    async fn call(&self, request: Request) -> Result<Reply, DeploymentError> {
        let content_type = request.header("content-type").cloned();
        Ok(Reply::bytes(request.body, content_type))
    }
}

const DEFAULT_SLEEP_MS: u64 = 100;

struct Sleep {
    sleep_ms: AtomicU64,
}

#[async_trait::async_trait]
impl Deployment for Sleep {
    async fn call(&self, request: Request) -> Result<Reply, DeploymentError> {
        tokio::time::sleep(Duration::from_millis(self.sleep_ms.load(Ordering::Relaxed))).await;
        Ok(ok(&request))
    }

    async fn reconfigure(&self, user_config: Option<&Value>) -> Result<(), DeploymentError> {
        let ms = config_get(user_config, "sleep_ms", json!(DEFAULT_SLEEP_MS))?;
        let ms = ms
            .as_u64()
            .ok_or_else(|| DeploymentError(format!("user_config.sleep_ms must be a non-negative integer, got {ms}")))?;
        self.sleep_ms.store(ms, Ordering::Relaxed);
        Ok(())
    }
}

/// `{"n": N, "interval_ms": T}` (defaults 10 and 100): chunks `0\n` ... `N-1\n`, T ms apart;
/// as server-sent events (`data: i`) when the client accepts `text/event-stream`.
struct Stream;

#[async_trait::async_trait]
impl Deployment for Stream {
    async fn call(&self, request: Request) -> Result<Reply, DeploymentError> {
        let args =
            if request.body.is_empty() || request.protocol == Protocol::Grpc { json!({}) } else { request.json()? };
        let n = args.get("n").map_or(Some(10), Value::as_u64).ok_or("n must be a non-negative integer")?;
        let interval = args
            .get("interval_ms")
            .map_or(Some(100), Value::as_u64)
            .ok_or("interval_ms must be a non-negative integer")?;
        let sse =
            request.header("accept").and_then(|a| a.to_str().ok()).is_some_and(|a| a.contains("text/event-stream"));
        let chunks: ChunkStream =
            Box::pin(tokio_stream::StreamExt::then(tokio_stream::iter(0..n), move |i| async move {
                if i > 0 {
                    tokio::time::sleep(Duration::from_millis(interval)).await;
                }
                Ok(Piece::Chunk(Bytes::from(if sse { format!("data: {i}\n\n") } else { format!("{i}\n") })))
            }));
        Ok(Reply::stream(if sse { "text/event-stream" } else { "text/plain; charset=utf-8" }, chunks))
    }
}

/// Ray's test service `ray.serve.UserDefinedService`: `__call__` greets, `Streaming` sends ten
/// greetings (`user_config.stream_interval_ms` apart, default 0).
struct Greeter {
    interval_ms: AtomicU64,
}

fn greeting_input(request: &Request) -> Result<UserDefinedMessage, DeploymentError> {
    UserDefinedMessage::decode(request.body.clone())
        .map_err(|e| DeploymentError(format!("bad UserDefinedMessage: {e}")))
}

#[async_trait::async_trait]
impl Deployment for Greeter {
    async fn call(&self, request: Request) -> Result<Reply, DeploymentError> {
        let input = greeting_input(&request)?;
        let greeting = format!("Hello {} from {}", input.name, input.foo);
        match request.method.as_str() {
            "__call__" | "Method1" => {
                let out = UserDefinedResponse { greeting, num_x2: input.num * 2 };
                Ok(Reply::bytes(Bytes::from(out.encode_to_vec()), None))
            }
            "Streaming" => {
                let interval = self.interval_ms.load(Ordering::Relaxed);
                let chunks: ChunkStream =
                    Box::pin(tokio_stream::StreamExt::then(tokio_stream::iter(0..10i64), move |i| {
                        let greeting = format!("{i}: {greeting}");
                        async move {
                            if i > 0 && interval > 0 {
                                tokio::time::sleep(Duration::from_millis(interval)).await;
                            }
                            Ok(Piece::Chunk(Bytes::from(
                                UserDefinedResponse { greeting, num_x2: input.num * 2 + i }.encode_to_vec(),
                            )))
                        }
                    }));
                Ok(Reply::stream("application/grpc", chunks))
            }
            other => Err(DeploymentError(format!("Greeter has no method {other:?}"))),
        }
    }

    async fn reconfigure(&self, user_config: Option<&Value>) -> Result<(), DeploymentError> {
        let ms = config_get(user_config, "stream_interval_ms", json!(0))?;
        let ms = ms.as_u64().ok_or("user_config.stream_interval_ms must be a non-negative integer")?;
        self.interval_ms.store(ms, Ordering::Relaxed);
        Ok(())
    }
}

/// Answers `ok`; a request with the JSON body `{"healthy": false}` makes this replica fail
/// every health check from then on.
struct Flaky {
    healthy: std::sync::atomic::AtomicBool,
}

#[async_trait::async_trait]
impl Deployment for Flaky {
    async fn call(&self, request: Request) -> Result<Reply, DeploymentError> {
        if let Ok(body) = serde_json::from_slice::<Value>(&request.body) {
            if body.get("healthy") == Some(&Value::Bool(false)) {
                self.healthy.store(false, Ordering::Relaxed);
            }
        }
        Ok(ok(&request))
    }

    async fn check_health(&self) -> Result<(), DeploymentError> {
        if self.healthy.load(Ordering::Relaxed) {
            Ok(())
        } else {
            Err("RuntimeError: this replica was told to be unhealthy".into())
        }
    }
}

fn single(import_path: &'static str, name: &'static str, build: crate::registry::Constructor) -> AppDef {
    AppDef {
        import_path,
        ingress: name,
        deployments: vec![DeploymentDef { name, defaults: json!({ "name": name }), build }],
    }
}

pub(super) fn apps() -> Vec<AppDef> {
    vec![
        single("photon.examples:noop", "Noop", |_| Ok(Arc::new(Noop))),
        single("photon.examples:echo", "Echo", |_| Ok(Arc::new(Echo))),
        single("photon.examples:sleep", "Sleep", |_| {
            Ok(Arc::new(Sleep { sleep_ms: AtomicU64::new(DEFAULT_SLEEP_MS) }))
        }),
        single("photon.examples:stream", "Stream", |_| Ok(Arc::new(Stream))),
        single("photon.examples:flaky", "Flaky", |_| Ok(Arc::new(Flaky { healthy: true.into() }))),
        single("photon.examples:greeter", "Greeter", |_| Ok(Arc::new(Greeter { interval_ms: AtomicU64::new(0) }))),
    ]
}
