//! Serving HTTP/1.1 and HTTP/2 over accepted mesh connections, with
//! graceful shutdown.
//!
//! [`Server::serve_with_shutdown`] stops when its signal future resolves:
//! the listener is closed at once (new connections are refused), every
//! open connection is told to finish (HTTP/1.1 closes after the response
//! in flight, idle ones at once; HTTP/2 sends GOAWAY and lets open streams
//! complete), and the call returns when the last connection is done or the
//! drain deadline passes, whichever is first; connections still open then
//! are closed.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tower::{Layer, Service, ServiceExt};

use crate::body::{self, BoxError, MeshBody};
use crate::error::{is_grpc, MeshError, ResponseFlag};
use crate::server::accept::{AcceptConfig, Acceptor, TlsSource};
use crate::server::authz::BoxFuture;
use crate::server::InboundLayer;
use crate::ModelRx;

/// An inbound server: the acceptor plus the inbound stack.
#[derive(Debug, Clone)]
pub struct Server {
    model: ModelRx,
    tls: TlsSource,
    accept: AcceptConfig,
    layer: InboundLayer,
    drain_timeout: Duration,
    keep: Option<crate::mesh::MeshGuard>,
}

/// How long a shutdown waits for open connections by default (Envoy's
/// default drain time).
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

impl Server {
    /// A server following `model`, presenting certificates from `tls`,
    /// with the default [`InboundLayer`].
    pub fn new(model: ModelRx, tls: TlsSource) -> Self {
        Server {
            layer: InboundLayer::new(model.clone()),
            model,
            tls,
            accept: AcceptConfig::default(),
            drain_timeout: DEFAULT_DRAIN_TIMEOUT,
            keep: None,
        }
    }

    /// Keeps the mesh the model comes from running while this server
    /// exists (see [`crate::mesh::MeshGuard`]; [`crate::Mesh::server`] does it).
    pub fn keep_alive(mut self, guard: crate::mesh::MeshGuard) -> Self {
        self.keep = Some(guard);
        self
    }

    /// How long [`Server::serve_with_shutdown`] lets requests in flight
    /// finish after the signal (default [`DEFAULT_DRAIN_TIMEOUT`]).
    pub fn drain_timeout(mut self, timeout: Duration) -> Self {
        self.drain_timeout = timeout;
        self
    }

    /// Replaces the acceptor settings.
    pub fn accept_config(mut self, config: AcceptConfig) -> Self {
        self.accept = config;
        self
    }

    /// Replaces the inbound stack (JWT/authz settings, rate limits).
    pub fn layer(mut self, layer: InboundLayer) -> Self {
        self.layer = layer;
        self
    }

    /// Accepts connections from `listener` forever, serving `app` behind
    /// the inbound stack on each. Returns only if accepting fails in a way
    /// that is not per-connection.
    pub async fn serve<S>(self, listener: TcpListener, app: S) -> io::Result<()>
    where
        S: Service<Request<MeshBody>, Response = Response<MeshBody>> + Clone + Send + 'static,
        S::Future: Send + 'static,
        S::Error: Into<BoxError>,
    {
        self.serve_with_shutdown(listener, app, std::future::pending())
            .await
    }

    /// Like [`Server::serve`] until `signal` resolves, then shuts down
    /// gracefully: stops accepting, lets requests in flight finish for up
    /// to the drain timeout, closes what is left and returns.
    pub async fn serve_with_shutdown<S, F>(
        self,
        listener: TcpListener,
        app: S,
        signal: F,
    ) -> io::Result<()>
    where
        S: Service<Request<MeshBody>, Response = Response<MeshBody>> + Clone + Send + 'static,
        S::Future: Send + 'static,
        S::Error: Into<BoxError>,
        F: Future<Output = ()>,
    {
        let acceptor = Arc::new(Acceptor::new(self.model, self.tls, self.accept));
        let service = self.layer.layer(app);
        let (drain_tx, drain_rx) = watch::channel(false);
        let mut conns = JoinSet::new();
        let mut signal = std::pin::pin!(signal);
        loop {
            tokio::select! {
                biased;
                () = &mut signal => break,
                Some(_) = conns.join_next(), if !conns.is_empty() => {}
                accepted = listener.accept() => {
                    let (tcp, peer) = match accepted {
                        Ok(c) => c,
                        Err(e) if is_per_connection(&e) => continue,
                        Err(e) => {
                            // Out of file descriptors and the like: back off a little.
                            tracing::warn!(error = %e, "accept failed");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    };
                    conns.spawn(connection(
                        acceptor.clone(),
                        service.clone(),
                        tcp,
                        peer,
                        drain_rx.clone(),
                    ));
                }
            }
        }
        // Closing the listener makes new connections fail at once instead
        // of queueing in the backlog of a server that will never answer.
        drop(listener);
        let open = conns.len();
        tracing::info!(target: "mesh::inbound", open, drain_timeout = ?self.drain_timeout, "shutting down: draining connections");
        let _ = drain_tx.send(true);
        let deadline = tokio::time::sleep(self.drain_timeout);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                () = &mut deadline => {
                    tracing::warn!(target: "mesh::inbound", remaining = conns.len(), "drain deadline passed; closing the remaining connections");
                    conns.abort_all();
                    while conns.join_next().await.is_some() {}
                    break;
                }
                next = conns.join_next() => if next.is_none() { break },
            }
        }
        Ok(())
    }
}

/// Resolves once a drain starts; never if the server is gone without one
/// (its task set then aborts the connection anyway).
async fn drained(mut drain: watch::Receiver<bool>) {
    if drain.wait_for(|d| *d).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Accepts one connection (mTLS per the port's mode) and serves it until
/// it ends or a drain finishes it gracefully.
async fn connection<S>(
    acceptor: Arc<Acceptor>,
    service: S,
    tcp: TcpStream,
    peer: SocketAddr,
    drain: watch::Receiver<bool>,
) where
    S: Service<Request<MeshBody>, Response = Response<MeshBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
{
    let (stream, info) = match acceptor.accept(tcp, peer).await {
        Ok(c) => c,
        Err(e) => {
            tracing::info!(target: "mesh::inbound", %peer, error = %e, "connection refused");
            return;
        }
    };
    let hyper_service = hyper::service::service_fn(move |req: Request<Incoming>| {
        let mut req = req.map(body::boxed);
        if let Some(id) = &info.identity {
            req.extensions_mut().insert(id.clone());
        }
        req.extensions_mut().insert(info.clone());
        dispatch(service.clone(), req)
    });
    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    let conn = builder.serve_connection(TokioIo::new(stream), hyper_service);
    tokio::pin!(conn);
    let result = tokio::select! {
        r = conn.as_mut() => r,
        () = drained(drain) => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        tracing::debug!(target: "mesh::inbound", %peer, error = %e, "connection ended with an error");
    }
}

/// Runs one request through the stack; a combinator chain rather than an
/// `async` block keeps the service's future type out of the connection
/// task's `Send` analysis.
fn dispatch<S>(
    service: S,
    req: Request<MeshBody>,
) -> BoxFuture<Result<Response<MeshBody>, Infallible>>
where
    S: Service<Request<MeshBody>, Response = Response<MeshBody>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
{
    let grpc = is_grpc(&req);
    Box::pin(service.oneshot(req).map(move |r| {
        Ok(match r {
            Ok(resp) => resp,
            Err(e) => internal_error(e.into(), grpc),
        })
    }))
}

fn is_per_connection(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionRefused
    )
}

/// The response for an error the app (or a layer) returned instead of a
/// response: a typed mesh error keeps its flag, anything else is a 500.
fn internal_error(e: BoxError, grpc: bool) -> Response<MeshBody> {
    match MeshError::find(e.as_ref()) {
        Some(m) => m.into_response(grpc),
        None => MeshError::new(ResponseFlag::DownstreamProtocolError, e.to_string())
            .with_status(http::StatusCode::INTERNAL_SERVER_ERROR)
            .into_response(grpc),
    }
}

/// Serves `app` on `listener` with the default inbound stack: the mTLS
/// mode, JWT rules and authorization policies of the current `model`,
/// certificates from `tls`.
pub async fn serve<S>(
    listener: TcpListener,
    model: ModelRx,
    tls: TlsSource,
    app: S,
) -> io::Result<()>
where
    S: Service<Request<MeshBody>, Response = Response<MeshBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
{
    Server::new(model, tls).serve(listener, app).await
}

/// [`serve`] until `signal` resolves, then a graceful shutdown with the
/// default drain timeout (see [`Server::serve_with_shutdown`]).
pub async fn serve_with_shutdown<S, F>(
    listener: TcpListener,
    model: ModelRx,
    tls: TlsSource,
    app: S,
    signal: F,
) -> io::Result<()>
where
    S: Service<Request<MeshBody>, Response = Response<MeshBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    F: Future<Output = ()>,
{
    Server::new(model, tls)
        .serve_with_shutdown(listener, app, signal)
        .await
}
