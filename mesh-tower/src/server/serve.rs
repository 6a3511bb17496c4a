//! Serving HTTP/1.1 and HTTP/2 over accepted mesh connections.

use std::convert::Infallible;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
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
}

impl Server {
    /// A server following `model`, presenting certificates from `tls`,
    /// with the default [`InboundLayer`].
    pub fn new(model: ModelRx, tls: TlsSource) -> Self {
        Server {
            layer: InboundLayer::new(model.clone()),
            model,
            tls,
            accept: AcceptConfig::default(),
        }
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
        let acceptor = Arc::new(Acceptor::new(self.model, self.tls, self.accept));
        let service = self.layer.layer(app);
        loop {
            let (tcp, peer) = match listener.accept().await {
                Ok(c) => c,
                Err(e) if is_per_connection(&e) => continue,
                Err(e) => {
                    // Out of file descriptors and the like: back off a little.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let acceptor = acceptor.clone();
            let service = service.clone();
            tokio::spawn(async move {
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
                if let Err(e) = builder
                    .serve_connection(TokioIo::new(stream), hyper_service)
                    .await
                {
                    tracing::debug!(target: "mesh::inbound", %peer, error = %e, "connection ended with an error");
                }
            });
        }
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
