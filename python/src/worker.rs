//! A Python replica: the Rust replica process (data port, admission, metrics, health, drain)
//! starts one Python worker for the user's code and talks to it over a Unix socket in
//! [`frame`](crate::frame)s. Requests go to the worker; its handle calls come back and go
//! through this replica's router like any other call. If the worker dies, so does the replica
//! (the controller replaces it); requests in flight on it fail.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use photon_replica::{
    BuildContext, ChunkStream, Deployment, DeploymentError, Piece, Protocol, Reply, ReplyBody, Request, Upgrade,
};
use photon_router::wire::{self, Call};
use photon_router::Router;
use serde_json::{json, Value};
use tokio::io::{AsyncWriteExt, BufReader, BufWriter};
use tokio::net::UnixListener;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

use crate::frame::{self, Frame};

/// Content type of pickled handle-call results.
pub const PICKLE: &str = "application/x-photon-pickle";

/// What the worker is to run.
#[derive(Debug, Clone)]
pub struct WorkerSpec {
    /// Where the code is ([`crate::CodeSpec`] as JSON).
    pub code: Value,
    /// Application name.
    pub app: String,
    /// Deployment name.
    pub deployment: String,
    /// Replica id.
    pub replica_id: String,
    /// Size of the thread pool for sync methods.
    pub max_ongoing_requests: u32,
    /// `TEXT` or `JSON`.
    pub log_encoding: String,
    /// Python logging level.
    pub log_level: Option<String>,
    /// The controller's address, where packages of code this machine lacks are fetched.
    pub controller: Option<String>,
}

impl WorkerSpec {
    fn to_json(&self) -> Value {
        let mut v = self.code.clone();
        v["app"] = json!(self.app);
        v["deployment"] = json!(self.deployment);
        v["replica_id"] = json!(self.replica_id);
        v["max_ongoing_requests"] = json!(self.max_ongoing_requests);
        v["log_encoding"] = json!(self.log_encoding);
        v["log_level"] = json!(self.log_level);
        v
    }
}

enum Inbound {
    Start {
        status: u16,
        headers: http::HeaderMap,
        body: Bytes,
        end: bool,
    },
    Chunk(Bytes),
    /// The gRPC status a streaming method set (`grpc-status`, `grpc-message`, trailing
    /// metadata), sent just before its `End`.
    GrpcStatus(http::HeaderMap),
    End(Option<String>),
    /// A WebSocket message (text or binary).
    Message {
        data: Bytes,
        text: bool,
    },
    /// The WebSocket's closing code and reason.
    Close(u16, String),
}

struct Shared {
    out: mpsc::UnboundedSender<Bytes>,
    calls: Mutex<HashMap<u64, mpsc::UnboundedSender<Inbound>>>,
    controls: Mutex<HashMap<u64, oneshot::Sender<Result<(), String>>>>,
    outgoing: Mutex<HashMap<u64, tokio::task::AbortHandle>>,
    next_id: AtomicU64,
    ready: watch::Receiver<Option<Result<(), String>>>,
    stopping: AtomicBool,
    models: watch::Sender<Vec<String>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Shared {
    fn send(&self, kind: u8, id: u64, meta: Option<&Value>, body: &[u8]) {
        let _ = self.out.send(frame::encode(kind, id, meta, body));
    }

    fn id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    async fn ready(&self) -> Result<(), DeploymentError> {
        let mut ready = self.ready.clone();
        let state =
            ready.wait_for(Option::is_some).await.map_err(|_| DeploymentError::from("the Python worker is gone"))?;
        match state.as_ref() {
            Some(Ok(())) => Ok(()),
            Some(Err(e)) => Err(DeploymentError(e.clone())),
            None => unreachable!("waited for Some"),
        }
    }

    async fn control(&self, kind: u8, meta: Option<&Value>) -> Result<(), DeploymentError> {
        self.ready().await?;
        let id = self.id();
        let (tx, rx) = oneshot::channel();
        lock(&self.controls).insert(id, tx);
        self.send(kind, id, meta, b"");
        match rx.await {
            Ok(result) => result.map_err(DeploymentError),
            Err(_) => Err(DeploymentError::from("the Python worker exited")),
        }
    }
}

/// A deployment whose code runs in a Python worker.
pub struct PythonDeployment {
    shared: Arc<Shared>,
}

impl PythonDeployment {
    /// Starts the worker: in the background, makes its code usable here (packages fetched,
    /// its environment found or made), then starts the Python process, which builds the
    /// deployment (calls wait for all of it).
    pub fn start(mut spec: WorkerSpec, ctx: &BuildContext) -> Result<Self, DeploymentError> {
        let root = crate::embedded::install()
            .map_err(|e| DeploymentError(format!("cannot write Photon's Python package: {e}")))?;
        let socket = std::env::temp_dir().join(format!("photon-{}-{:x}.sock", std::process::id(), fastrand::u64(..)));
        let _ = std::fs::remove_file(&socket);
        let listener = UnixListener::bind(&socket)
            .map_err(|e| DeploymentError(format!("cannot listen on {}: {e}", socket.display())))?;
        let (out, out_rx) = mpsc::unbounded_channel();
        let (ready_tx, ready) = watch::channel(None);
        let shared = Arc::new(Shared {
            out,
            calls: Mutex::default(),
            controls: Mutex::default(),
            outgoing: Mutex::default(),
            next_id: AtomicU64::new(1),
            ready,
            stopping: AtomicBool::new(false),
            models: watch::Sender::new(Vec::new()),
        });
        let connection = Connection { shared: shared.clone(), router: ctx.router().clone(), ready: ready_tx };
        tokio::spawn(async move {
            let resolved = crate::package::resolve(&mut spec.code, spec.controller.as_deref()).await;
            let child = resolved.and_then(|()| {
                let interpreter = spec.code.get("python").and_then(Value::as_str).map(str::to_string);
                if let Some(python) = &interpreter {
                    crate::env::mark_used(std::path::Path::new(python));
                }
                crate::embedded::worker_command(&root, interpreter.as_deref())
                    .arg("serve")
                    .arg(&socket)
                    .env(crate::CODE_ENV, spec.to_json().to_string())
                    .stdin(std::process::Stdio::null())
                    .kill_on_drop(true)
                    .spawn()
                    .map_err(|e| {
                        format!(
                            "Python deployments need a Python 3.9 or newer interpreter (PHOTON_PYTHON, else python3 on PATH): cannot run {:?}: {e}",
                            crate::embedded::python()
                        )
                    })
            });
            match child {
                Ok(child) => connection.run(listener, socket, child, out_rx).await,
                Err(e) => {
                    let _ = std::fs::remove_file(&socket);
                    let _ = connection.ready.send(Some(Err(e)));
                }
            }
        });
        Ok(PythonDeployment { shared })
    }
}

struct Connection {
    shared: Arc<Shared>,
    router: Router,
    ready: watch::Sender<Option<Result<(), String>>>,
}

impl Connection {
    async fn run(
        self,
        listener: UnixListener,
        socket: std::path::PathBuf,
        mut child: tokio::process::Child,
        mut out: mpsc::UnboundedReceiver<Bytes>,
    ) {
        let stream = tokio::select! {
            accepted = listener.accept() => accepted.map(|(s, _)| s).map_err(|e| e.to_string()),
            status = child.wait() => Err(match status {
                Ok(s) => format!("the Python worker exited ({s}) before it connected"),
                Err(e) => format!("the Python worker could not be waited for: {e}"),
            }),
        };
        let _ = std::fs::remove_file(&socket);
        let stream = match stream {
            Ok(s) => s,
            Err(e) => {
                let _ = self.ready.send(Some(Err(e)));
                return;
            }
        };
        let (read, write) = stream.into_split();
        let writer = tokio::spawn(async move {
            let mut write = BufWriter::with_capacity(64 * 1024, write);
            while let Some(first) = out.recv().await {
                if write.write_all(&first).await.is_err() {
                    return;
                }
                // Whatever else is queued goes in the same write.
                while let Ok(more) = out.try_recv() {
                    if write.write_all(&more).await.is_err() {
                        return;
                    }
                }
                if write.flush().await.is_err() {
                    return;
                }
            }
        });
        let mut read = BufReader::with_capacity(64 * 1024, read);
        let ended = loop {
            match frame::read(&mut read).await {
                Ok(Some(f)) => self.dispatch(f),
                Ok(None) => break "closed the connection".to_string(),
                Err(e) => break format!("sent a bad frame: {e}"),
            }
        };
        writer.abort();
        let status = child.wait().await.map(|s| s.to_string()).unwrap_or_else(|e| e.to_string());
        for (_, tx) in lock(&self.shared.calls).drain() {
            let _ = tx.send(Inbound::End(Some(format!("the Python worker died ({status})"))));
        }
        lock(&self.shared.controls).clear();
        let was_ready = matches!(*self.ready.borrow(), Some(Ok(())));
        if !was_ready {
            let _ = self.ready.send(Some(Err(format!("the Python worker {ended} ({status}) before it was ready"))));
        } else if !self.shared.stopping.load(Ordering::Acquire) {
            tracing::error!("the Python worker {ended} ({status}); the replica stops");
            std::process::exit(1);
        }
    }

    fn dispatch(&self, f: Frame) {
        let error = || f.meta.get("error").and_then(Value::as_str).map(str::to_string);
        match f.kind {
            frame::READY => {
                let _ = self.ready.send(Some(error().map_or(Ok(()), Err)));
            }
            frame::REPLY_START => {
                let status = f.meta.get("status").and_then(Value::as_u64).unwrap_or(500) as u16;
                let end = f.meta.get("end").and_then(Value::as_bool).unwrap_or(false);
                let headers = header_map(f.meta.get("headers"));
                let mut calls = lock(&self.shared.calls);
                let tx = if end { calls.remove(&f.id) } else { calls.get(&f.id).cloned() };
                if let Some(tx) = tx {
                    let _ = tx.send(Inbound::Start { status, headers, body: f.body, end });
                }
            }
            frame::REPLY_CHUNK => {
                if let Some(tx) = lock(&self.shared.calls).get(&f.id) {
                    let inbound = match f.meta.get("text").and_then(Value::as_bool) {
                        Some(text) => Inbound::Message { data: f.body, text },
                        None => Inbound::Chunk(f.body),
                    };
                    let _ = tx.send(inbound);
                }
            }
            frame::REPLY_END => {
                if let Some(tx) = lock(&self.shared.calls).remove(&f.id) {
                    let inbound = match f.meta.get("code").and_then(Value::as_u64) {
                        Some(code) => Inbound::Close(
                            u16::try_from(code).unwrap_or(1000),
                            f.meta.get("reason").and_then(Value::as_str).unwrap_or_default().to_string(),
                        ),
                        None => Inbound::End(error()),
                    };
                    if let Some(status) = f.meta.get("grpc_status") {
                        let _ = tx.send(Inbound::GrpcStatus(header_map(Some(status))));
                    }
                    let _ = tx.send(inbound);
                }
            }
            frame::CONTROL_DONE => {
                if let Some(tx) = lock(&self.shared.controls).remove(&f.id) {
                    let _ = tx.send(error().map_or(Ok(()), Err));
                }
            }
            frame::HANDLE_CALL => {
                let task = tokio::spawn(outgoing_call(self.shared.clone(), self.router.clone(), f.id, f.meta, f.body));
                lock(&self.shared.outgoing).insert(f.id, task.abort_handle());
            }
            frame::MODELS => {
                let ids = f.meta.get("model_ids").and_then(Value::as_array).into_iter().flatten();
                let ids: Vec<String> = ids.filter_map(|v| v.as_str().map(str::to_string)).collect();
                self.shared.models.send_replace(ids);
            }
            frame::HANDLE_CANCEL => {
                if let Some(task) = lock(&self.shared.outgoing).remove(&f.id) {
                    task.abort();
                }
            }
            other => tracing::warn!(kind = other, "unexpected frame from the Python worker"),
        }
    }
}

/// Headers from a frame's `[[name, value], ...]`; values beyond ASCII are kept as bytes (a
/// gRPC status message may hold any text).
fn header_map(pairs: Option<&Value>) -> http::HeaderMap {
    let mut headers = http::HeaderMap::new();
    for pair in pairs.and_then(Value::as_array).into_iter().flatten() {
        let (Some(k), Some(v)) = (pair.get(0).and_then(Value::as_str), pair.get(1).and_then(Value::as_str)) else {
            continue;
        };
        if let (Ok(k), Ok(v)) =
            (http::HeaderName::from_bytes(k.as_bytes()), http::HeaderValue::from_bytes(v.as_bytes()))
        {
            headers.append(k, v);
        }
    }
    headers
}

/// A handle call made by the Python code: through this replica's router, the answer streamed
/// back as HANDLE_START / HANDLE_CHUNK / HANDLE_END.
async fn outgoing_call(shared: Arc<Shared>, router: Router, id: u64, meta: Value, body: Bytes) {
    let text = |k: &str| meta.get(k).and_then(Value::as_str).unwrap_or_default().to_string();
    let app = text("app");
    let mut deployment = text("deployment");
    let end = |error: Option<(&str, String)>| {
        let meta = match error {
            Some((kind, message)) => json!({"error": {"kind": kind, "message": message}}),
            None => json!({}),
        };
        shared.send(frame::HANDLE_END, id, Some(&meta), b"");
        lock(&shared.outgoing).remove(&id);
    };
    if deployment.is_empty() {
        match router.table().routes.iter().find(|r| r.app == app) {
            Some(route) => deployment = route.ingress.clone(),
            None => return end(Some(("deployment_unavailable", format!("Application '{app}' does not exist.")))),
        }
    }
    let mut call = Call::handle(&text("method"), body, &text("request_id"));
    call.headers.insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static(PICKLE));
    call.headers.insert(wire::HANDLE_ARGS, http::HeaderValue::from_static("pickle"));
    if let Ok(model) = http::HeaderValue::from_str(&text("model_id")) {
        if !model.is_empty() {
            call.headers.insert(wire::MODEL_ID_HEADERS[0], model);
        }
    }
    if meta.get("stream").and_then(Value::as_bool).unwrap_or(false) {
        call.headers.insert(wire::HANDLE_STREAM, http::HeaderValue::from_static("1"));
    }
    let answer = match router.handle(&app, &deployment).call_raw(call).await {
        Ok(a) => a,
        Err(e) => return end(Some((e.kind(), e.to_string()))),
    };
    let content_type = answer.headers.get(http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let mut start = json!({"status": answer.status.as_u16(), "headers": [["content-type", content_type]]});
    let mut body = answer.body;
    // A whole answer (a length, not a stream) goes back as one frame: fewer wake-ups of the
    // caller's loop for the common unary call.
    if hyper::body::Body::size_hint(&body).exact().is_some() {
        return match body.collect().await {
            Ok(data) => {
                start["end"] = json!(true);
                shared.send(frame::HANDLE_START, id, Some(&start), &data);
                lock(&shared.outgoing).remove(&id);
            }
            Err(e) => end(Some(("replica_failed", format!("the answer broke off: {e}")))),
        };
    }
    shared.send(frame::HANDLE_START, id, Some(&start), b"");
    loop {
        match body.frame().await {
            Some(Ok(f)) => {
                if let Ok(data) = f.into_data() {
                    shared.send(frame::HANDLE_CHUNK, id, None, &data);
                }
            }
            Some(Err(e)) => return end(Some(("replica_failed", format!("the answer broke off: {e}")))),
            None => return end(None),
        }
    }
}

/// Ends a call: if its reply had not ended, tells the worker the caller went away.
struct CallGuard {
    shared: Arc<Shared>,
    id: u64,
    done: bool,
}

impl Drop for CallGuard {
    fn drop(&mut self) {
        if !self.done && lock(&self.shared.calls).remove(&self.id).is_some() {
            self.shared.send(frame::CANCEL, self.id, None, b"");
        }
    }
}

/// The body chunks of a streamed reply.
struct ReplyChunks {
    rx: mpsc::UnboundedReceiver<Inbound>,
    guard: CallGuard,
}

impl tokio_stream::Stream for ReplyChunks {
    type Item = Result<Piece, DeploymentError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.guard.done {
            return Poll::Ready(None);
        }
        match self.rx.poll_recv(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(Inbound::Chunk(b))) => Poll::Ready(Some(Ok(Piece::Chunk(b)))),
            Poll::Ready(Some(Inbound::GrpcStatus(status))) => Poll::Ready(Some(Ok(Piece::GrpcStatus(status)))),
            Poll::Ready(Some(Inbound::End(None))) => {
                self.guard.done = true;
                Poll::Ready(None)
            }
            Poll::Ready(Some(Inbound::End(Some(e)))) => {
                self.guard.done = true;
                Poll::Ready(Some(Err(DeploymentError(e))))
            }
            Poll::Ready(Some(Inbound::Start { .. } | Inbound::Message { .. } | Inbound::Close(..)))
            | Poll::Ready(None) => {
                self.guard.done = true;
                Poll::Ready(Some(Err(DeploymentError::from("the Python worker ended the reply"))))
            }
        }
    }
}

/// One accepted WebSocket: client messages go to the worker as WS_RECEIVE frames, the
/// app's messages and close come back through `rx`, until either side closes.
async fn websocket_session(upgraded: Upgrade, mut rx: mpsc::UnboundedReceiver<Inbound>, mut guard: CallGuard) {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::protocol::{frame::coding::CloseCode, CloseFrame, Role};
    use tokio_tungstenite::tungstenite::Message;

    // The request's slot is held for as long as the WebSocket is open.
    let Ok((io, _slot)) = upgraded.connect().await else { return };
    let socket = tokio_tungstenite::WebSocketStream::from_raw_socket(TokioIo::new(io), Role::Server, None).await;
    let (mut sink, mut stream) = socket.split();
    let (shared, id) = (guard.shared.clone(), guard.id);
    let disconnect = |code: u16| shared.send(frame::WS_DISCONNECT, id, Some(&json!({ "code": code })), b"");
    loop {
        tokio::select! {
            message = stream.next() => match message {
                Some(Ok(Message::Text(t))) => shared.send(frame::WS_RECEIVE, id, Some(&json!({"text": true})), t.as_bytes()),
                Some(Ok(Message::Binary(b))) => shared.send(frame::WS_RECEIVE, id, Some(&json!({"text": false})), &b),
                Some(Ok(Message::Close(close))) => {
                    disconnect(close.map_or(1005, |c| u16::from(c.code)));
                    break;
                }
                Some(Ok(_)) => {} // ping and pong: answered by the codec
                Some(Err(_)) | None => {
                    disconnect(1006);
                    break;
                }
            },
            inbound = rx.recv() => match inbound {
                Some(Inbound::Message { data, text }) => {
                    let message = if text {
                        Message::text(String::from_utf8_lossy(&data).into_owned())
                    } else {
                        Message::binary(data)
                    };
                    if sink.send(message).await.is_err() {
                        disconnect(1006);
                        break;
                    }
                }
                Some(Inbound::Close(code, reason)) => {
                    guard.done = true;
                    let frame = CloseFrame { code: CloseCode::from(code), reason: reason.into() };
                    let _ = sink.send(Message::Close(Some(frame))).await;
                    break;
                }
                Some(Inbound::End(error)) => {
                    // The app raised: Ray closes with 1011 (internal error).
                    guard.done = true;
                    tracing::error!(error = error.as_deref().unwrap_or(""), "WebSocket handler failed");
                    let frame = CloseFrame { code: CloseCode::Error, reason: "".into() };
                    let _ = sink.send(Message::Close(Some(frame))).await;
                    break;
                }
                Some(Inbound::Start { .. } | Inbound::Chunk(_) | Inbound::GrpcStatus(_)) => {}
                None => break,
            }
        }
    }
    // The client is gone: give the app a moment to end on its own before it is cancelled.
    if !guard.done {
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), async {
            while let Some(inbound) = rx.recv().await {
                if matches!(inbound, Inbound::Close(..) | Inbound::End(_)) {
                    guard.done = true;
                    return;
                }
            }
        })
        .await;
    }
}

fn request_meta(request: &Request) -> Value {
    let header = |name: &str| request.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default();
    // Set by a Python replica's router only: the front doors strip x-photon-* from clients.
    let is_pickle = header(wire::HANDLE_ARGS.as_str()) == "pickle";
    let kind = match request.protocol {
        Protocol::Grpc => "grpc",
        Protocol::Http if is_pickle => "pickle",
        Protocol::Http => "http",
    };
    let model_id = wire::multiplexed_model_id(&request.headers);
    let headers: Vec<[String; 2]> = request
        .headers
        .iter()
        .map(|(k, v)| [k.as_str().to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned()])
        .collect();
    json!({
        "kind": kind,
        "method": request.method,
        "http_method": request.http_method,
        "path": request.path,
        "query": request.query,
        "headers": headers,
        "route_prefix": request.route_prefix,
        "request_id": request.request_id,
        "model_id": model_id,
        "stream": header(wire::HANDLE_STREAM.as_str()) == "1",
    })
}

impl PythonDeployment {
    /// Sends a request to the worker: its replies arrive on the receiver; the guard cancels it
    /// if dropped before the reply ended.
    fn open(&self, meta: &Value, body: &[u8]) -> (mpsc::UnboundedReceiver<Inbound>, CallGuard) {
        let id = self.shared.id();
        let (tx, rx) = mpsc::unbounded_channel();
        lock(&self.shared.calls).insert(id, tx);
        self.shared.send(frame::REQUEST, id, Some(meta), body);
        (rx, CallGuard { shared: self.shared.clone(), id, done: false })
    }
}

/// The error of a reply that ended, or broke off, before it started.
fn not_started(first: Option<Inbound>, guard: &mut CallGuard) -> DeploymentError {
    guard.done = true;
    match first {
        Some(Inbound::End(error)) => {
            DeploymentError(error.unwrap_or_else(|| "the deployment sent no response".to_string()))
        }
        _ => DeploymentError::from("the Python worker died while handling the request"),
    }
}

#[async_trait::async_trait]
impl Deployment for PythonDeployment {
    async fn call(&self, request: Request) -> Result<Reply, DeploymentError> {
        self.shared.ready().await?;
        let (mut rx, mut guard) = self.open(&request_meta(&request), &request.body);
        match rx.recv().await {
            Some(Inbound::Start { status, headers, body, end }) => {
                let body = if end {
                    guard.done = true;
                    ReplyBody::Full(body)
                } else {
                    let rest = ReplyChunks { rx, guard };
                    // An empty first piece is no chunk (over gRPC every chunk is a message).
                    let chunks: ChunkStream = if body.is_empty() {
                        Box::pin(rest)
                    } else {
                        Box::pin(tokio_stream::StreamExt::chain(tokio_stream::once(Ok(Piece::Chunk(body))), rest))
                    };
                    ReplyBody::Stream(chunks)
                };
                Ok(Reply { status, headers, body })
            }
            other => Err(not_started(other, &mut guard)),
        }
    }

    async fn websocket(&self, request: Request, upgraded: Upgrade) -> Result<Reply, DeploymentError> {
        self.shared.ready().await?;
        let key = request.headers.get(http::header::SEC_WEBSOCKET_KEY).cloned();
        let mut meta = request_meta(&request);
        meta["kind"] = json!("websocket");
        let (mut rx, mut guard) = self.open(&meta, b"");
        match rx.recv().await {
            Some(Inbound::Start { status: 101, mut headers, .. }) => {
                let Some(key) = key else {
                    return Err(DeploymentError::from("a WebSocket handshake without Sec-WebSocket-Key"));
                };
                let accept = derive_accept_key(key.as_bytes());
                headers.insert(http::header::CONNECTION, http::HeaderValue::from_static("upgrade"));
                headers.insert(http::header::UPGRADE, http::HeaderValue::from_static("websocket"));
                if let Ok(v) = http::HeaderValue::from_str(&accept) {
                    headers.insert(http::header::SEC_WEBSOCKET_ACCEPT, v);
                }
                tokio::spawn(websocket_session(upgraded, rx, guard));
                Ok(Reply { status: 101, headers, body: ReplyBody::Full(Bytes::new()) })
            }
            Some(Inbound::Start { status, headers, body, end }) => {
                // Refused before accepting (403) or answered over HTTP: a plain reply.
                guard.done = end;
                Ok(Reply { status, headers, body: ReplyBody::Full(body) })
            }
            other => Err(not_started(other, &mut guard)),
        }
    }

    async fn reconfigure(&self, user_config: Option<&Value>) -> Result<(), DeploymentError> {
        self.shared.control(frame::RECONFIGURE, Some(&json!({ "user_config": user_config }))).await
    }

    async fn check_health(&self) -> Result<(), DeploymentError> {
        self.shared.control(frame::HEALTH, None).await
    }

    fn model_ids(&self) -> Option<watch::Receiver<Vec<String>>> {
        Some(self.shared.models.subscribe())
    }

    async fn shutdown(&self) {
        self.shared.stopping.store(true, Ordering::Release);
        if let Err(e) = self.shared.control(frame::SHUTDOWN, None).await {
            tracing::warn!(error = %e, "the Python worker did not shut down cleanly");
        }
    }
}
