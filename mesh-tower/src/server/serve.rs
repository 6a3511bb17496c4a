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
use tokio::net::{TcpListener, TcpStream};
use tower::{Layer, Service, ServiceExt};

use crate::body::{self, BoxError, MeshBody};
use crate::error::{is_grpc, MeshError, ResponseFlag};
use crate::server::accept::{AcceptConfig, Acceptor, TlsSource};
use crate::server::authz::BoxFuture;
use crate::server::identity::ConnectionInfo;
use crate::server::listen::{accept_until, serve_http, Drain, DEFAULT_HEADER_TIMEOUT};
use crate::server::{InboundLayer, InboundService};
use crate::ModelRx;

/// An inbound server: the acceptor plus the inbound stack.
#[derive(Debug, Clone)]
pub struct Server {
    model: ModelRx,
    tls: TlsSource,
    accept: AcceptConfig,
    layer: InboundLayer,
    drain_timeout: Duration,
    header_timeout: Duration,
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
            header_timeout: DEFAULT_HEADER_TIMEOUT,
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

    /// How long an HTTP/1.1 client may take to send a request's headers
    /// (default [`DEFAULT_HEADER_TIMEOUT`]); slower ones are cut off.
    pub fn header_timeout(mut self, timeout: Duration) -> Self {
        self.header_timeout = timeout;
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
        let drain_timeout = self.drain_timeout;
        let handler = self.handler(app);
        accept_until(
            listener,
            signal,
            drain_timeout,
            "inbound",
            move |tcp, peer, drain| handler.clone().serve(tcp, peer, drain),
        )
        .await;
        Ok(())
    }

    /// The per-connection half of the server, for callers that run their
    /// own accept loop (the shim, which also serves opaque TCP on the same
    /// listener): accept with [`Handler::acceptor`], then hand HTTP
    /// connections to [`Handler::serve_accepted`].
    pub fn handler<S>(self, app: S) -> Handler<InboundService<S>>
    where
        S: Service<Request<MeshBody>, Response = Response<MeshBody>> + Clone + Send + 'static,
        S::Future: Send + 'static,
        S::Error: Into<BoxError>,
    {
        Handler {
            acceptor: Arc::new(Acceptor::new(self.model, self.tls, self.accept)),
            service: self.layer.layer(app),
            header_timeout: self.header_timeout,
            _keep: self.keep,
        }
    }
}

/// Serves accepted inbound connections with the inbound stack around an
/// app (see [`Server::handler`]). Clones share the acceptor.
#[derive(Clone)]
pub struct Handler<S> {
    acceptor: Arc<Acceptor>,
    service: S,
    header_timeout: Duration,
    _keep: Option<crate::mesh::MeshGuard>,
}

impl<S> std::fmt::Debug for Handler<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handler")
            .field("acceptor", &self.acceptor)
            .finish_non_exhaustive()
    }
}

impl<S> Handler<S>
where
    S: Service<Request<MeshBody>, Response = Response<MeshBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
{
    /// The acceptor: mTLS per the port's PeerAuthentication mode.
    pub fn acceptor(&self) -> &Arc<Acceptor> {
        &self.acceptor
    }

    /// Accepts one connection (mTLS per the port's mode) and serves it
    /// until it ends or a drain finishes it gracefully.
    pub async fn serve(self, tcp: TcpStream, peer: SocketAddr, drain: Drain) {
        match self.acceptor.accept(tcp, peer).await {
            Ok((stream, info)) => self.serve_accepted(stream, info, drain).await,
            Err(e) => {
                tracing::info!(target: "mesh::inbound", %peer, error = %e, "connection refused");
            }
        }
    }

    /// Serves HTTP on a connection the acceptor let in (a [`super::MeshStream`],
    /// or one wrapped after sniffing).
    pub async fn serve_accepted<I>(self, stream: I, info: ConnectionInfo, drain: Drain)
    where
        I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let peer = info.peer_addr;
        let service = self.service;
        let hyper_service = hyper::service::service_fn(move |req: Request<Incoming>| {
            let mut req = req.map(body::boxed);
            if let Some(id) = &info.identity {
                req.extensions_mut().insert(id.clone());
            }
            req.extensions_mut().insert(info.clone());
            dispatch(service.clone(), req)
        });
        if let Err(e) = serve_http(stream, hyper_service, drain, self.header_timeout).await {
            tracing::debug!(target: "mesh::inbound", %peer, error = %e, "connection ended with an error");
        }
    }
}

/// Runs one request through the stack (shared with [`super::PlainServer`]); a combinator chain rather than an
/// `async` block keeps the service's future type out of the connection
/// task's `Send` analysis.
pub(super) fn dispatch<S>(
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
