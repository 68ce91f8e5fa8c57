//! Listening sockets shared by the front doors and the replicas' data ports.

use std::future::Future;
use std::net::SocketAddr;

/// Accepted connections of a server with Nagle's algorithm off: tonic sets `TCP_NODELAY` only
/// on sockets it accepts itself, and a small response held back by Nagle waits for the peer's
/// delayed ACK (tens of milliseconds).
pub fn incoming_nodelay(
    listener: tokio::net::TcpListener,
) -> impl tokio_stream::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    use tokio_stream::StreamExt;
    tokio_stream::wrappers::TcpListenerStream::new(listener).map(|conn| {
        let stream = conn?;
        stream.set_nodelay(true)?;
        Ok(stream)
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
