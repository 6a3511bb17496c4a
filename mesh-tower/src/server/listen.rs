//! The accept loop and drain every mesh listener shares: the inbound
//! [`super::Server`], [`super::PlainServer`] and the shim's TCP listeners.
//!
//! A signal stops accepting at once (the listener is closed, so new
//! connections are refused rather than left in the backlog of a server that
//! will never answer), then every connection task sees its [`Drain`] fire
//! and finishes on its own terms; the loop returns when the last one is done
//! or the drain deadline passes, and aborts what is left.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

/// How long a client may take to send a request's headers before its
/// HTTP/1.1 connection is closed: the slowloris bound.
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// Fires when the listener a connection came from starts draining.
#[derive(Debug, Clone)]
pub struct Drain(watch::Receiver<bool>);

impl Drain {
    /// A drain that never fires, for connections served outside a loop.
    pub fn never() -> Self {
        // With its sender gone at once, `signaled` never resolves.
        Drain(watch::channel(false).1)
    }

    /// Resolves once draining starts; never if the listener went away
    /// without one (its task set aborts the connection anyway).
    pub async fn signaled(mut self) {
        if self.0.wait_for(|d| *d).await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// Accepts connections from `listener` and runs `on_conn` for each in its
/// own task until `signal` resolves, then drains for up to `drain_timeout`.
/// `target` names the listener in logs.
pub async fn accept_until<C, Fut, F>(
    listener: TcpListener,
    signal: F,
    drain_timeout: Duration,
    target: &'static str,
    mut on_conn: C,
) where
    C: FnMut(TcpStream, SocketAddr, Drain) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
    F: Future<Output = ()>,
{
    let (drain_tx, drain_rx) = watch::channel(false);
    let mut conns = JoinSet::new();
    let mut signal = std::pin::pin!(signal);
    loop {
        tokio::select! {
            biased;
            () = &mut signal => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((tcp, peer)) => {
                    let _ = tcp.set_nodelay(true);
                    conns.spawn(on_conn(tcp, peer, Drain(drain_rx.clone())));
                }
                Err(e) if is_per_connection(&e) => {}
                Err(e) => {
                    // Out of file descriptors and the like: back off a little.
                    tracing::warn!(listener = target, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }
    drop(listener);
    tracing::info!(
        listener = target,
        open = conns.len(),
        ?drain_timeout,
        "shutting down: draining connections"
    );
    let _ = drain_tx.send(true);
    let deadline = tokio::time::sleep(drain_timeout);
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            () = &mut deadline => {
                tracing::warn!(listener = target, remaining = conns.len(), "drain deadline passed; closing the remaining connections");
                conns.abort_all();
                while conns.join_next().await.is_some() {}
                break;
            }
            next = conns.join_next() => if next.is_none() { break },
        }
    }
}

fn is_per_connection(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionRefused
    )
}

/// Serves HTTP/1.1 and HTTP/2 (prior knowledge) on one connection until it
/// ends, or until `drain` fires and it finishes gracefully (HTTP/1.1 closes
/// after the response in flight, HTTP/2 sends GOAWAY). A client that does
/// not finish its request headers within `header_timeout` is cut off.
pub async fn serve_http<I, S>(
    io: I,
    service: S,
    drain: Drain,
    header_timeout: Duration,
) -> Result<(), crate::BoxError>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: hyper::service::Service<http::Request<Incoming>, Response = http::Response<crate::MeshBody>>
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Into<crate::BoxError>,
{
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout);
    builder.http2().timer(TokioTimer::new());
    // With upgrades, so a proxy can take over the connection after
    // `CONNECT` (and HTTP/1.1 `Upgrade` reaches the service).
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => r,
        () = drain.signaled() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    }
}
