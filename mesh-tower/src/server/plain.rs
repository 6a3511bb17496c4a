//! Plain HTTP listeners for what the local application talks to: the
//! shim's outbound ports (the app's own requests, before the mesh) and its
//! admin ports. No mesh TLS and no inbound policy, the same drain and
//! slowloris bound as the inbound [`super::Server`].

use std::future::Future;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use tokio::net::TcpListener;
use tower::Service;

use crate::body::{self, BoxError, MeshBody};
use crate::server::identity::ConnectionInfo;
use crate::server::listen::{accept_until, serve_http, Drain, DEFAULT_HEADER_TIMEOUT};
use crate::server::serve::dispatch;
use crate::server::DEFAULT_DRAIN_TIMEOUT;

/// A plaintext HTTP/1.1 + HTTP/2 (prior knowledge) server. Each request
/// carries a [`ConnectionInfo`] (no identity) so the service knows which
/// port and peer it came from.
#[derive(Debug, Clone)]
pub struct PlainServer {
    name: &'static str,
    drain_timeout: Duration,
    header_timeout: Duration,
}

impl PlainServer {
    /// A server whose logs name it `name`.
    pub fn new(name: &'static str) -> Self {
        PlainServer {
            name,
            drain_timeout: DEFAULT_DRAIN_TIMEOUT,
            header_timeout: DEFAULT_HEADER_TIMEOUT,
        }
    }

    /// How long a shutdown lets requests in flight finish.
    pub fn drain_timeout(mut self, timeout: Duration) -> Self {
        self.drain_timeout = timeout;
        self
    }

    /// How long an HTTP/1.1 client may take to send a request's headers.
    pub fn header_timeout(mut self, timeout: Duration) -> Self {
        self.header_timeout = timeout;
        self
    }

    /// Serves `service` on `listener` until `signal` resolves, then drains.
    pub async fn serve_with_shutdown<S, F>(self, listener: TcpListener, service: S, signal: F)
    where
        S: Service<Request<MeshBody>, Response = Response<MeshBody>> + Clone + Send + 'static,
        S::Future: Send + 'static,
        S::Error: Into<BoxError>,
        F: Future<Output = ()>,
    {
        let this = self.clone();
        accept_until(
            listener,
            signal,
            self.drain_timeout,
            self.name,
            move |tcp, peer, drain| {
                let (this, service) = (this.clone(), service.clone());
                async move {
                    let Ok(local_addr) = tcp.local_addr() else {
                        return;
                    };
                    let info = ConnectionInfo {
                        peer_addr: peer,
                        local_addr,
                        port: local_addr.port(),
                        identity: None,
                        sni: None,
                    };
                    this.serve_connection(tcp, info, service, drain).await;
                }
            },
        )
        .await;
    }

    /// Serves HTTP on one connection of a loop the caller runs (the
    /// shim's capture port, which looks at each connection first); every
    /// request carries `info`.
    pub async fn serve_connection<I, S>(
        &self,
        io: I,
        info: ConnectionInfo,
        service: S,
        drain: Drain,
    ) where
        I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
        S: Service<Request<MeshBody>, Response = Response<MeshBody>> + Clone + Send + 'static,
        S::Future: Send + 'static,
        S::Error: Into<BoxError>,
    {
        let peer = info.peer_addr;
        let hyper_service = hyper::service::service_fn(move |req: Request<Incoming>| {
            let mut req = req.map(body::boxed);
            req.extensions_mut().insert(info.clone());
            dispatch(service.clone(), req)
        });
        if let Err(e) = serve_http(io, hyper_service, drain, self.header_timeout).await {
            tracing::debug!(listener = self.name, %peer, error = %e, "connection ended with an error");
        }
    }
}
