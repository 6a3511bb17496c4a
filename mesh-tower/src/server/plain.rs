//! Plain HTTP listeners for what the local application talks to: the
//! shim's outbound ports (the app's own requests, before the mesh) and its
//! admin ports. No mesh TLS and no inbound policy, the same drain and
//! slowloris bound as the inbound [`super::Server`].

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use tokio::net::{TcpListener, TcpStream};
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
        let name = self.name;
        let header_timeout = self.header_timeout;
        accept_until(
            listener,
            signal,
            self.drain_timeout,
            name,
            move |tcp, peer, drain| {
                connection(name, service.clone(), tcp, peer, drain, header_timeout)
            },
        )
        .await;
    }
}

async fn connection<S>(
    name: &'static str,
    service: S,
    tcp: TcpStream,
    peer: SocketAddr,
    drain: Drain,
    header_timeout: Duration,
) where
    S: Service<Request<MeshBody>, Response = Response<MeshBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
{
    let local_addr = match tcp.local_addr() {
        Ok(a) => a,
        Err(_) => return,
    };
    let info = ConnectionInfo {
        peer_addr: peer,
        local_addr,
        port: local_addr.port(),
        identity: None,
        sni: None,
    };
    let hyper_service = hyper::service::service_fn(move |req: Request<Incoming>| {
        let mut req = req.map(body::boxed);
        req.extensions_mut().insert(info.clone());
        dispatch(service.clone(), req)
    });
    if let Err(e) = serve_http(tcp, hyper_service, drain, header_timeout).await {
        tracing::debug!(listener = name, %peer, error = %e, "connection ended with an error");
    }
}
