//! What a connection may cost a server, on every listener Photon has (front doors, REST API,
//! internal ports): how many connections are open at once, how long one may sit without
//! sending a request, how long a request head and each piece of a body may take to arrive.
//! Nothing here reads the protocol: [`Tracked`] wraps the socket and watches when bytes move,
//! and servers that see requests tell it when one starts and ends ([`Activity`]).
//!
//! The rules, checked whenever the server waits to read:
//! - a new connection must have started a request within `first_request` (no bytes at all, or
//!   an h2c preface and then nothing);
//! - between requests, an HTTP/1.1 connection that has begun to send a head must finish it
//!   within `head` (slowloris);
//! - a connection with no request in progress closes after `keep_alive` without one (Ray's
//!   `http_options.keep_alive_timeout_s`); a response streaming out counts as activity;
//! - while a request body is read, each piece must arrive within `head`, and the whole at 1
//!   KiB/s on average after that grace ([`collect_body`]).
//!
//! A connection beyond `max_connections` is refused at once ([`ConnectionGuard::admit`]), and
//! the bodies a process holds at once are bounded by one budget ([`set_body_budget`]).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};
use tonic::transport::server::Connected;

/// Limits of one listener.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// Connections open at once; more are refused.
    pub max_connections: usize,
    /// Longest wait for a new connection's first request.
    pub first_request: Duration,
    /// Longest wait for a request head once it began, and for each piece of a body.
    pub head: Duration,
    /// Longest idle time between requests.
    pub keep_alive: Duration,
    /// Whether the server reports its requests ([`Activity::request`]); without, any byte in
    /// either direction counts as activity (internal gRPC ports, whose servers ping).
    pub tracks_requests: bool,
}

/// Connections a front door keeps open at once by default.
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
/// Longest wait for a request head (and for each piece of a request body).
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(10);

impl ConnectionLimits {
    /// A server that reports its requests, idle for at most `keep_alive`.
    pub fn requests(max_connections: usize, keep_alive: Duration) -> Self {
        ConnectionLimits {
            max_connections,
            first_request: HEAD_TIMEOUT,
            head: HEAD_TIMEOUT,
            keep_alive,
            tracks_requests: true,
        }
    }

    /// An internal gRPC server (it pings its peers; any byte is activity).
    pub fn internal(max_connections: usize, keep_alive: Duration) -> Self {
        ConnectionLimits { tracks_requests: false, ..ConnectionLimits::requests(max_connections, keep_alive) }
    }
}

/// Admits connections to one listener within its limits (cheap to clone; share it between the
/// threads serving one port).
#[derive(Clone)]
pub struct ConnectionGuard {
    limits: ConnectionLimits,
    open: Arc<Semaphore>,
    last_warning: Arc<AtomicU64>,
    started: Instant,
}

impl ConnectionGuard {
    /// A guard with these limits.
    pub fn new(limits: ConnectionLimits) -> Self {
        ConnectionGuard {
            limits,
            open: Arc::new(Semaphore::new(limits.max_connections.clamp(1, Semaphore::MAX_PERMITS))),
            last_warning: Arc::default(),
            started: Instant::now(),
        }
    }

    /// The limits it applies.
    pub fn limits(&self) -> ConnectionLimits {
        self.limits
    }

    /// Takes `stream` in if there is room, with its activity handle; otherwise gives it back
    /// (the caller refuses it: [`refuse_http`], or a close).
    pub fn admit<T>(&self, stream: T) -> Result<(Tracked<T>, Activity), T> {
        let Ok(permit) = self.open.clone().try_acquire_owned() else {
            // Once a second at most: a flood must not flood the log too.
            let now = self.started.elapsed().as_secs();
            if self.last_warning.swap(now, Ordering::Relaxed) != now {
                tracing::warn!(limit = self.limits.max_connections, "connection limit reached; refusing connections");
            }
            return Err(stream);
        };
        let shared = Arc::new(Shared {
            born: Instant::now(),
            last_read_ms: AtomicU64::new(NEVER),
            last_write_ms: AtomicU64::new(NEVER),
            last_end_ms: AtomicU64::new(0),
            head_started_ms: AtomicU64::new(NEVER),
            busy: AtomicU32::new(0),
            served: AtomicU64::new(0),
            http2: AtomicBool::new(false),
            reader: std::sync::Mutex::new(None),
        });
        let tracked = Tracked {
            io: stream,
            shared: shared.clone(),
            limits: self.limits,
            timer: Box::pin(tokio::time::sleep(Duration::ZERO)),
            first_read: true,
            _permit: permit,
        };
        Ok((tracked, Activity(shared)))
    }
}

/// Refuses an HTTP connection beyond the limit with a 503 that says why, then closes it.
pub async fn refuse_http(mut stream: tokio::net::TcpStream, limit: usize) {
    use tokio::io::AsyncWriteExt;
    let body = format!("Too many connections: this server keeps at most {limit} open.\n");
    let head = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(body.as_bytes()).await?;
        stream.shutdown().await
    })
    .await;
}

const NEVER: u64 = u64::MAX;
/// The HTTP/2 connection preface's first bytes (h2c and gRPC).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0";

struct Shared {
    born: Instant,
    last_read_ms: AtomicU64,
    last_write_ms: AtomicU64,
    last_end_ms: AtomicU64,
    /// First byte read since the last request ended (a head arriving), or NEVER.
    head_started_ms: AtomicU64,
    busy: AtomicU32,
    served: AtomicU64,
    http2: AtomicBool,
    /// The read that waits while a request is in progress, to wake when it ends.
    reader: std::sync::Mutex<Option<std::task::Waker>>,
}

impl Shared {
    fn now_ms(&self) -> u64 {
        self.born.elapsed().as_millis() as u64
    }

    /// Notes a write that moved bytes, and hands its result on.
    fn wrote(&self, result: Poll<std::io::Result<usize>>) -> Poll<std::io::Result<usize>> {
        if let Poll::Ready(Ok(n)) = &result {
            if *n > 0 {
                self.last_write_ms.store(self.now_ms(), Ordering::Relaxed);
            }
        }
        result
    }

    /// When the connection has waited too long, as milliseconds since it was accepted; `None`
    /// while a request is in progress.
    fn deadline_ms(&self, limits: &ConnectionLimits) -> Option<u64> {
        let ms = |d: Duration| d.as_millis() as u64;
        let (read, write) = (self.last_read_ms.load(Ordering::Relaxed), self.last_write_ms.load(Ordering::Relaxed));
        if !limits.tracks_requests {
            let last = [read, write].into_iter().filter(|t| *t != NEVER).max();
            return Some(match (read, last) {
                (NEVER, _) | (_, None) => ms(limits.first_request),
                (_, Some(last)) => last + ms(limits.keep_alive),
            });
        }
        if self.busy.load(Ordering::Acquire) > 0 {
            return None;
        }
        if self.served.load(Ordering::Acquire) == 0 {
            return Some(ms(limits.first_request));
        }
        let head = self.head_started_ms.load(Ordering::Relaxed);
        if head != NEVER && !self.http2.load(Ordering::Relaxed) {
            return Some(head + ms(limits.head));
        }
        let end = self.last_end_ms.load(Ordering::Relaxed);
        // A response still streaming out keeps the connection active.
        let last = if write == NEVER { end } else { end.max(write) };
        Some(last + ms(limits.keep_alive))
    }
}

/// What a server tells the guard about one connection's requests.
#[derive(Clone)]
pub struct Activity(Arc<Shared>);

impl Activity {
    /// A request's head has arrived; the connection is busy until the returned value drops
    /// (when the service has answered).
    pub fn request(&self) -> RequestInProgress {
        self.0.busy.fetch_add(1, Ordering::AcqRel);
        self.0.head_started_ms.store(NEVER, Ordering::Relaxed);
        RequestInProgress(self.0.clone())
    }
}

/// A hyper service that answers with `handler` and marks the connection busy meanwhile.
pub fn busy_while<F, Fut, B>(
    activity: Activity,
    handler: F,
) -> impl hyper::service::Service<
    http::Request<hyper::body::Incoming>,
    Response = http::Response<B>,
    Error = std::convert::Infallible,
    Future = impl Future<Output = Result<http::Response<B>, std::convert::Infallible>> + Send,
> + Clone
where
    F: Fn(http::Request<hyper::body::Incoming>) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = http::Response<B>> + Send,
    B: hyper::body::Body,
{
    hyper::service::service_fn(move |req| {
        let (handler, in_progress) = (handler.clone(), activity.request());
        async move {
            let response = handler(req).await;
            drop(in_progress);
            Ok(response)
        }
    })
}

/// A request in progress on a connection ([`Activity::request`]).
pub struct RequestInProgress(Arc<Shared>);

impl Drop for RequestInProgress {
    fn drop(&mut self) {
        self.0.last_end_ms.store(self.0.now_ms(), Ordering::Relaxed);
        self.0.served.fetch_add(1, Ordering::AcqRel);
        if self.0.busy.fetch_sub(1, Ordering::AcqRel) == 1 {
            // The server may be waiting to read already, with no timer: let it re-check.
            if let Some(reader) = self.0.reader.lock().unwrap_or_else(|e| e.into_inner()).take() {
                reader.wake();
            }
        }
    }
}

/// A socket under a [`ConnectionGuard`]: its reads fail with `TimedOut` once the connection
/// broke a rule, so the server drops it. Holds the connection's place under the limit.
pub struct Tracked<T> {
    io: T,
    shared: Arc<Shared>,
    limits: ConnectionLimits,
    timer: Pin<Box<Sleep>>,
    first_read: bool,
    _permit: OwnedSemaphorePermit,
}

impl<T> Tracked<T> {
    /// The socket inside.
    pub fn get_ref(&self) -> &T {
        &self.io
    }
}

impl<T: Connected> Connected for Tracked<T> {
    type ConnectInfo = T::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.io.connect_info()
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Tracked<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        let before = buf.filled().len();
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let read = &buf.filled()[before..];
                if !read.is_empty() {
                    let now = this.shared.now_ms();
                    this.shared.last_read_ms.store(now, Ordering::Relaxed);
                    if this.first_read {
                        this.first_read = false;
                        let prefix = read.len().min(H2_PREFACE.len());
                        this.shared.http2.store(read[..prefix] == H2_PREFACE[..prefix], Ordering::Relaxed);
                    }
                    if this.shared.busy.load(Ordering::Acquire) == 0 {
                        let _ = this.shared.head_started_ms.compare_exchange(
                            NEVER,
                            now,
                            Ordering::Relaxed,
                            Ordering::Relaxed,
                        );
                    }
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => loop {
                let Some(deadline_ms) = this.shared.deadline_ms(&this.limits) else {
                    // Re-checked when the request ends (`RequestInProgress::drop` wakes us).
                    {
                        let mut reader = this.shared.reader.lock().unwrap_or_else(|e| e.into_inner());
                        if !reader.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                            *reader = Some(cx.waker().clone());
                        }
                    }
                    if this.shared.busy.load(Ordering::Acquire) > 0 {
                        return Poll::Pending;
                    }
                    continue;
                };
                let deadline = this.shared.born + Duration::from_millis(deadline_ms);
                if Instant::now() >= deadline {
                    return Poll::Ready(Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "connection idle, or a request arriving too slowly",
                    )));
                }
                // Deadlines mostly move later (each request pushes the idle one out): the timer is
                // moved only when it must fire sooner, or has fired; firing early just re-checks.
                if deadline < this.timer.deadline() || this.timer.is_elapsed() {
                    this.timer.as_mut().reset(deadline);
                }
                if std::future::Future::poll(this.timer.as_mut(), cx).is_pending() {
                    return Poll::Pending;
                }
            },
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Tracked<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        let result = Pin::new(&mut self.io).poll_write(cx, buf);
        self.shared.wrote(result)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let result = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        self.shared.wrote(result)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// Bytes of request bodies one process may hold at once (read, waiting in a queue, or on
/// their way to a replica), so that no mix of large bodies and long queues exhausts its
/// memory: beyond it a request is refused (503 / RESOURCE_EXHAUSTED) as for a full queue.
pub const DEFAULT_BODY_BUDGET_BYTES: usize = 1 << 30;

static BODY_BUDGET_LIMIT: AtomicU64 = AtomicU64::new(DEFAULT_BODY_BUDGET_BYTES as u64);
static BODY_BUDGET_USED: AtomicU64 = AtomicU64::new(0);

/// Sets this process's budget for request bodies (`--max-buffered-body-bytes`).
pub fn set_body_budget(bytes: usize) {
    BODY_BUDGET_LIMIT.store(bytes as u64, Ordering::Relaxed);
}

/// Bytes of the body budget a request holds; given back when dropped.
#[derive(Debug, Default)]
pub struct BodyReservation(u64);

impl BodyReservation {
    /// Takes `more` bytes of the budget, or refuses when that would exceed it.
    fn grow(&mut self, more: u64) -> Result<(), BodyError> {
        let limit = BODY_BUDGET_LIMIT.load(Ordering::Relaxed);
        let before = BODY_BUDGET_USED.fetch_add(more, Ordering::AcqRel);
        if before.saturating_add(more) > limit {
            BODY_BUDGET_USED.fetch_sub(more, Ordering::AcqRel);
            return Err(BodyError::OverBudget(limit));
        }
        self.0 += more;
        Ok(())
    }
}

impl Drop for BodyReservation {
    fn drop(&mut self) {
        if self.0 > 0 {
            BODY_BUDGET_USED.fetch_sub(self.0, Ordering::AcqRel);
        }
    }
}

/// A request body read whole, and the part of the process's body budget it holds: keep it
/// until the request is done with the body.
#[derive(Debug)]
pub struct Collected {
    /// The body.
    pub bytes: Bytes,
    /// Its share of the budget.
    pub reservation: BodyReservation,
}

/// Why a request body could not be read.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// Larger than the limit.
    #[error("request body larger than the limit of {0} bytes")]
    TooLarge(usize),
    /// A piece did not arrive in time, or the body arrives too slowly on average.
    #[error("request body arriving too slowly (waited {0:?} for more)")]
    Stalled(Duration),
    /// The connection failed.
    #[error("could not read the request body: {0}")]
    Read(String),
    /// The process holds as many bodies as its budget allows.
    #[error("this server holds as many request bodies as its memory budget allows ({0} bytes); try again later")]
    OverBudget(u64),
}

/// After the first `progress`, a body must have arrived at this average rate at least (as
/// Kestrel's minimum request body data rate): a client trickling bytes cannot hold a request.
pub const MIN_BODY_BYTES_PER_S: u64 = 1024;

/// Reads a whole body of at most `limit` bytes, each piece within `progress` of the last and
/// the whole at [`MIN_BODY_BYTES_PER_S`] on average after a grace of `progress`.
pub async fn collect_body<B>(mut body: B, limit: usize, progress: Duration) -> Result<Collected, BodyError>
where
    B: hyper::body::Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    let mut first: Option<Bytes> = None;
    let mut rest: Option<BytesMut> = None;
    let started = Instant::now();
    let mut received: u64 = 0;
    let mut reservation = BodyReservation::default();
    loop {
        let rate_deadline =
            started + progress + Duration::from_millis(received.saturating_mul(1000) / MIN_BODY_BYTES_PER_S);
        let wait = progress.min(rate_deadline.saturating_duration_since(Instant::now()));
        let frame = match tokio::time::timeout(wait, body.frame()).await {
            Err(_) => return Err(BodyError::Stalled(wait)),
            Ok(None) => break,
            Ok(Some(Err(e))) => return Err(BodyError::Read(e.to_string())),
            Ok(Some(Ok(frame))) => frame,
        };
        let Ok(data) = frame.into_data() else { continue };
        received += data.len() as u64;
        let so_far = first.as_ref().map_or(0, Bytes::len) + rest.as_ref().map_or(0, BytesMut::len);
        if so_far + data.len() > limit {
            return Err(BodyError::TooLarge(limit));
        }
        reservation.grow(data.len() as u64)?;
        // One piece (the usual case) is kept as it came, without a copy.
        match (&mut first, &mut rest) {
            (None, _) => first = Some(data),
            (Some(f), None) => {
                let mut joined = BytesMut::with_capacity(f.len() + data.len());
                joined.extend_from_slice(f);
                joined.extend_from_slice(&data);
                rest = Some(joined);
            }
            (Some(_), Some(joined)) => joined.extend_from_slice(&data),
        }
    }
    let bytes = match rest {
        Some(joined) => joined.freeze(),
        None => first.unwrap_or_default(),
    };
    Ok(Collected { bytes, reservation })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn limits() -> ConnectionLimits {
        ConnectionLimits {
            max_connections: 2,
            first_request: Duration::from_millis(300),
            head: Duration::from_millis(300),
            keep_alive: Duration::from_millis(600),
            tracks_requests: true,
        }
    }

    #[tokio::test]
    async fn a_connection_that_sends_nothing_is_closed_after_first_request() {
        let guard = ConnectionGuard::new(limits());
        let (server, _client) = tokio::io::duplex(64);
        let (mut tracked, _activity) = guard.admit(server).ok().unwrap();
        let started = Instant::now();
        let mut buf = [0u8; 8];
        let error = tracked.read(&mut buf).await.unwrap_err();
        assert_eq!(error.kind(), std::io::ErrorKind::TimedOut);
        assert!(started.elapsed() >= Duration::from_millis(300));
    }

    #[tokio::test]
    async fn between_requests_a_started_head_must_finish_and_idleness_is_bounded() {
        let guard = ConnectionGuard::new(limits());
        let (server, mut client) = tokio::io::duplex(64);
        let (mut tracked, activity) = guard.admit(server).ok().unwrap();
        let mut buf = [0u8; 64];
        client.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        let n = tracked.read(&mut buf).await.unwrap();
        assert!(n > 0);
        // A request in progress is never timed out by the guard.
        let request = activity.request();
        assert!(tokio::time::timeout(Duration::from_millis(900), tracked.read(&mut buf)).await.is_err());
        drop(request);
        // Idle: closed after keep_alive.
        let started = Instant::now();
        assert_eq!(tracked.read(&mut buf).await.unwrap_err().kind(), std::io::ErrorKind::TimedOut);
        assert!(started.elapsed() >= Duration::from_millis(500), "{:?}", started.elapsed());

        // A head begun after a request: closed after `head`, sooner than keep_alive.
        let (server, mut client) = tokio::io::duplex(64);
        let (mut tracked, activity) = guard.admit(server).ok().unwrap();
        client.write_all(b"GET").await.unwrap();
        let _ = tracked.read(&mut buf).await.unwrap();
        drop(activity.request());
        client.write_all(b"GET / HT").await.unwrap();
        let _ = tracked.read(&mut buf).await.unwrap();
        let started = Instant::now();
        assert_eq!(tracked.read(&mut buf).await.unwrap_err().kind(), std::io::ErrorKind::TimedOut);
        assert!(started.elapsed() < Duration::from_millis(500), "{:?}", started.elapsed());
    }

    #[tokio::test]
    async fn connections_beyond_the_limit_are_refused_until_one_closes() {
        let guard = ConnectionGuard::new(limits());
        let a = guard.admit(tokio::io::duplex(8).0).ok().unwrap();
        let _b = guard.admit(tokio::io::duplex(8).0).ok().unwrap();
        assert!(guard.admit(tokio::io::duplex(8).0).is_err());
        drop(a);
        assert!(guard.admit(tokio::io::duplex(8).0).is_ok());
    }

    #[tokio::test]
    async fn a_body_must_keep_arriving() {
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<hyper::body::Frame<Bytes>, std::convert::Infallible>>(4);
        let body = http_body_util::StreamBody::new(tokio_stream::wrappers::ReceiverStream::new(rx));
        let sender = tokio::spawn(async move {
            tx.send(Ok(hyper::body::Frame::data(Bytes::from_static(b"ab")))).await.unwrap();
            tokio::time::sleep(Duration::from_millis(400)).await;
            let _ = tx.send(Ok(hyper::body::Frame::data(Bytes::from_static(b"cd")))).await;
        });
        let error = collect_body(body, 100, Duration::from_millis(200)).await.unwrap_err();
        assert!(matches!(error, BodyError::Stalled(_)), "{error}");
        sender.abort();

        // A byte every 100 ms: each piece in time, but far below the minimum rate.
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<hyper::body::Frame<Bytes>, std::convert::Infallible>>(4);
        let body = http_body_util::StreamBody::new(tokio_stream::wrappers::ReceiverStream::new(rx));
        let sender = tokio::spawn(async move {
            for _ in 0..100 {
                tokio::time::sleep(Duration::from_millis(100)).await;
                if tx.send(Ok(hyper::body::Frame::data(Bytes::from_static(b"x")))).await.is_err() {
                    return;
                }
            }
        });
        let started = Instant::now();
        let error = collect_body(body, 1000, Duration::from_millis(300)).await.unwrap_err();
        assert!(matches!(error, BodyError::Stalled(_)), "{error}");
        assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
        sender.abort();

        let body = http_body_util::Full::new(Bytes::from_static(b"hello"));
        let collected = collect_body(body, 5, Duration::from_secs(1)).await.unwrap();
        assert_eq!(collected.bytes, "hello");
        assert_eq!(collected.reservation.0, 5);
        let body = http_body_util::Full::new(Bytes::from_static(b"hello"));
        assert!(matches!(collect_body(body, 4, Duration::from_secs(1)).await, Err(BodyError::TooLarge(4))));
    }
}
