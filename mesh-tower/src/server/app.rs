//! The last hop of the inbound side when the application runs in another
//! process: [`LocalApp`] forwards each request to the app's port on
//! loopback, as a sidecar's inbound cluster does.
//!
//! The protocol towards the app follows the Service port the request came
//! in on (the model's inbound ports): `grpc`, `grpc-web` and `http2` ports
//! get HTTP/2 with prior knowledge, everything else HTTP/1.1, whatever the
//! caller spoke, because an app that declared `http` may not speak HTTP/2.
//! The request keeps its authority, so the app sees the `Host` its caller
//! sent.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use http::header::{self, HeaderMap, HeaderName};
use http::{Request, Response, Version};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;
use tower::Service;

use crate::body::{self, BoxError, MeshBody};
use crate::error::{MeshError, ResponseFlag};
use crate::server::identity::ConnectionInfo;
use crate::ModelRx;
use mesh_core::sync::LockExt;

/// Dials the app whatever the URI says: the URI only carries the
/// authority for `Host`.
#[derive(Debug, Clone, Copy)]
struct DialApp(SocketAddr);

impl Service<http::Uri> for DialApp {
    type Response = TokioIo<TcpStream>;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = std::io::Result<TokioIo<TcpStream>>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _uri: http::Uri) -> Self::Future {
        let addr = self.0;
        Box::pin(async move {
            let tcp = TcpStream::connect(addr).await?;
            let _ = tcp.set_nodelay(true);
            Ok(TokioIo::new(tcp))
        })
    }
}

/// HTTP/1.1 and HTTP/2 pools to one app address.
#[derive(Clone)]
struct Pools {
    http1: Client<DialApp, MeshBody>,
    http2: Client<DialApp, MeshBody>,
}

impl Pools {
    fn new(addr: SocketAddr) -> Self {
        let dial = DialApp(addr);
        Pools {
            http1: Client::builder(TokioExecutor::new()).build(dial),
            http2: Client::builder(TokioExecutor::new())
                .http2_only(true)
                .build(dial),
        }
    }
}

/// Where the app is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    /// One address for every request.
    Fixed(SocketAddr),
    /// This address, on the port the caller dialed (the connection's
    /// workload port): with inbound capture the app serves each Service
    /// port itself, as in a pod.
    CallerPort(IpAddr),
}

/// Forwards requests to the application on loopback. Clones share
/// connection pools.
#[derive(Clone)]
pub struct LocalApp {
    model: ModelRx,
    target: Target,
    /// The pools of a fixed target, built once: no lock per request.
    fixed: Option<Pools>,
    pools: Arc<Mutex<HashMap<SocketAddr, Pools>>>,
}

impl std::fmt::Debug for LocalApp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalApp")
            .field("target", &self.target)
            .finish()
    }
}

impl LocalApp {
    /// Forwards to `addr`, choosing the protocol from `model`'s inbound
    /// ports.
    pub fn new(model: ModelRx, addr: SocketAddr) -> Self {
        Self::with_target(model, Target::Fixed(addr))
    }

    /// Forwards to `ip` on the port each connection was made to (its
    /// [`ConnectionInfo::port`], the pre-redirect port under iptables
    /// capture).
    pub fn on_caller_port(model: ModelRx, ip: IpAddr) -> Self {
        Self::with_target(model, Target::CallerPort(ip))
    }

    fn with_target(model: ModelRx, target: Target) -> Self {
        let fixed = match target {
            Target::Fixed(addr) => Some(Pools::new(addr)),
            Target::CallerPort(_) => None,
        };
        LocalApp {
            model,
            target,
            fixed,
            pools: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    fn pools(&self, addr: SocketAddr) -> Pools {
        if let Some(p) = &self.fixed {
            return p.clone();
        }
        self.pools
            .locked()
            .entry(addr)
            .or_insert_with(|| Pools::new(addr))
            .clone()
    }

    fn wants_http2(&self, port: Option<u16>, downstream: Version) -> bool {
        let declared = port.and_then(|p| self.model.borrow().inbound.ports.get(&p).copied());
        match declared {
            Some(p) if !p.is_unknown() => p.is_http2(),
            // Undeclared: the caller's protocol is the best guess (Istio's
            // sniffed inbound uses the downstream protocol).
            _ => downstream == Version::HTTP_2,
        }
    }
}

impl Service<Request<MeshBody>> for LocalApp {
    type Response = Response<MeshBody>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Response<MeshBody>, BoxError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut req: Request<MeshBody>) -> Self::Future {
        let port = req.extensions().get::<ConnectionInfo>().map(|c| c.port);
        let addr = match (self.target, port) {
            (Target::Fixed(a), _) => a,
            (Target::CallerPort(ip), Some(p)) => SocketAddr::new(ip, p),
            (Target::CallerPort(_), None) => {
                return Box::pin(async {
                    Err(Box::new(MeshError::new(
                        ResponseFlag::NoRoute,
                        "no connection port to forward to",
                    )) as BoxError)
                })
            }
        };
        let http2 = self.wants_http2(port, req.version());
        strip_hop_by_hop(req.headers_mut());
        if let Err(e) = absolute_uri(&mut req) {
            return Box::pin(async move { Err(e) });
        }
        *req.version_mut() = if http2 {
            Version::HTTP_2
        } else {
            Version::HTTP_11
        };
        let pools = self.pools(addr);
        let fut = if http2 {
            pools.http2.request(req)
        } else {
            pools.http1.request(req)
        };
        Box::pin(async move {
            match fut.await {
                Ok(resp) => {
                    let (mut parts, body) = resp.into_parts();
                    strip_hop_by_hop(&mut parts.headers);
                    Ok(Response::from_parts(parts, body::boxed(body)))
                }
                Err(e) => {
                    let flag = if e.is_connect() {
                        ResponseFlag::UpstreamConnectionFailure
                    } else {
                        ResponseFlag::UpstreamRemoteReset
                    };
                    Err(Box::new(
                        MeshError::new(flag, format!("local app at {addr}: {e}"))
                            .with_status(http::StatusCode::SERVICE_UNAVAILABLE),
                    ) as BoxError)
                }
            }
        })
    }
}

/// The legacy client wants an absolute URI; the authority it names is only
/// used for `Host`, since the connector always dials the app.
fn absolute_uri(req: &mut Request<MeshBody>) -> Result<(), BoxError> {
    if req.uri().authority().is_some() {
        return Ok(());
    }
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost")
        .to_string();
    let pq = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/")
        .to_string();
    *req.uri_mut() = format!("http://{host}{pq}").parse().map_err(|e| {
        Box::new(MeshError::new(
            ResponseFlag::DownstreamProtocolError,
            format!("bad Host {host:?}: {e}"),
        )) as BoxError
    })?;
    Ok(())
}

/// Headers that describe one connection, not the request (RFC 9110 7.6.1):
/// a proxy drops them, and any header the `Connection` header names,
/// before forwarding. `te: trailers` is kept: gRPC needs it.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    const HOP: [&str; 6] = [
        "keep-alive",
        "proxy-connection",
        "proxy-authorization",
        "proxy-authenticate",
        "transfer-encoding",
        "upgrade",
    ];
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for name in named {
        if name != header::TE {
            headers.remove(name);
        }
    }
    headers.remove(header::CONNECTION);
    for h in HOP {
        headers.remove(h);
    }
    if let Some(te) = headers.get(header::TE) {
        if !te.as_bytes().eq_ignore_ascii_case(b"trailers") {
            headers.remove(header::TE);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_go_and_end_to_end_ones_stay() {
        let mut h = HeaderMap::new();
        h.insert("connection", "keep-alive, x-private".parse().unwrap());
        h.insert("keep-alive", "timeout=5".parse().unwrap());
        h.insert("x-private", "1".parse().unwrap());
        h.insert("proxy-connection", "keep-alive".parse().unwrap());
        h.insert("te", "trailers".parse().unwrap());
        h.insert("x-request-id", "abc".parse().unwrap());
        strip_hop_by_hop(&mut h);
        let mut left: Vec<_> = h.keys().map(|k| k.as_str()).collect();
        left.sort();
        assert_eq!(left, ["te", "x-request-id"]);
    }

    #[test]
    fn te_other_than_trailers_is_dropped() {
        let mut h = HeaderMap::new();
        h.insert("te", "gzip".parse().unwrap());
        strip_hop_by_hop(&mut h);
        assert!(h.is_empty());
    }
}
