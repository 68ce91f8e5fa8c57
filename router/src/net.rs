//! Listening sockets shared by the front doors and the replicas' data ports.

use std::future::Future;
use std::net::SocketAddr;

/// Accepts connections forever (Nagle off) and runs `connection` for each in its own task; a
/// failed accept (out of file descriptors, say) is logged and retried shortly. Every HTTP
/// listener uses it (front doors, REST API, data ports); tonic's accept their own
/// ([`incoming_guarded`]).
pub async fn accept_loop<F, Fut>(listener: tokio::net::TcpListener, connection: F)
where
    F: Fn(tokio::net::TcpStream) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(conn) => conn,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(connection(stream));
    }
}

/// A tonic server for an internal port: HTTP/2 pings every 30 s (10 s to answer), so that a
/// dead peer is noticed and a live idle one (a quiet routing-table stream) keeps its connection
/// under [`internal_guard`]'s idle rule.
pub fn internal_server() -> tonic::transport::Server {
    tonic::transport::Server::builder()
        .tcp_nodelay(true)
        .http2_keepalive_interval(Some(std::time::Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(std::time::Duration::from_secs(10)))
}

/// The limits of an internal gRPC port: idle (no byte either way, pings included) for 90 s.
pub fn internal_guard() -> crate::guard::ConnectionGuard {
    crate::guard::ConnectionGuard::new(crate::guard::ConnectionLimits::internal(
        crate::guard::DEFAULT_MAX_CONNECTIONS,
        std::time::Duration::from_secs(90),
    ))
}

/// Accepted connections of an internal gRPC server, within `guard`'s limits (one beyond them
/// is closed at once) and with Nagle's algorithm off: tonic sets `TCP_NODELAY` only on sockets
/// it accepts itself, and a small response held back by Nagle waits for the peer's delayed ACK
/// (tens of milliseconds).
pub fn incoming_guarded(
    listener: tokio::net::TcpListener,
    guard: crate::guard::ConnectionGuard,
) -> impl tokio_stream::Stream<Item = std::io::Result<crate::guard::Tracked<tokio::net::TcpStream>>> {
    use tokio_stream::StreamExt;
    tokio_stream::wrappers::TcpListenerStream::new(listener).filter_map(move |conn| match conn {
        Ok(stream) => {
            let _ = stream.set_nodelay(true);
            guard.admit(stream).ok().map(|(tracked, _activity)| Ok(tracked))
        }
        Err(e) => Some(Err(e)),
    })
}

/// Runs `serve` on `threads` OS threads, each with its own single-threaded runtime and its own
/// `SO_REUSEPORT` listener on the same port (as Ray's proxies reuse their port): the kernel
/// spreads connections over the threads and a request never changes threads, so there are no
/// cross-thread wake-ups between a connection, the router and the upstream connection (whose
/// pool is per thread, see `client.rs`). Port 0 picks one free port for all threads. Returns
/// the address bound.
pub fn serve_on_threads<F, Fut>(addr: SocketAddr, threads: usize, name: &str, serve: F) -> std::io::Result<SocketAddr>
where
    F: Fn(tokio::net::TcpListener) -> Fut + Send + Clone + 'static,
    Fut: Future<Output = ()>,
{
    let (bound_tx, bound_rx) = std::sync::mpsc::channel::<std::io::Result<SocketAddr>>();
    let mut port = addr.port();
    for i in 0..threads.max(1) {
        let (serve, bound_tx) = (serve.clone(), bound_tx.clone());
        let this = SocketAddr::new(addr.ip(), port);
        std::thread::Builder::new().name(format!("{name}-{i}")).spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(rt) => rt,
                Err(e) => return drop(bound_tx.send(Err(e))),
            };
            runtime.block_on(async move {
                let socket =
                    if this.is_ipv4() { tokio::net::TcpSocket::new_v4() } else { tokio::net::TcpSocket::new_v6() };
                let listener = socket.and_then(|socket| {
                    socket.set_reuseaddr(true)?;
                    socket.set_reuseport(true)?;
                    socket.bind(this)?;
                    socket.listen(1024)
                });
                match listener {
                    Ok(l) => {
                        let _ = bound_tx.send(l.local_addr());
                        serve(l).await;
                    }
                    Err(e) => drop(bound_tx.send(Err(e))),
                }
            });
        })?;
        let bound = bound_rx.recv().map_err(|_| std::io::Error::other("server thread ended before binding"))??;
        port = bound.port();
    }
    Ok(SocketAddr::new(addr.ip(), port))
}
