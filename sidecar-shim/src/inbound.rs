//! Mesh traffic to the app: each connection is accepted under its port's
//! PeerAuthentication mode by the SDK's acceptor, then served by protocol:
//!
//! - a port a Service declares HTTP, HTTP/2 or gRPC goes through the SDK's
//!   inbound stack (JWT, authorization, rate limits, telemetry) to the app
//!   on 127.0.0.1 ([`mesh_tower::server::LocalApp`]);
//! - a port declared TCP, TLS or a server-first protocol (MySQL, Mongo,
//!   Redis) is proxied as bytes after the connection-level authorization
//!   check, with Istio's TCP metrics, and never sniffed;
//! - an undeclared port is sniffed ([`mesh_tower::server::sniff`]): HTTP
//!   goes the HTTP way, anything else or silence (the client of a
//!   server-first protocol waits for the server) the TCP way.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use mesh_tower::server::listen::accept_until;
use mesh_tower::server::sniff::{sniff, Sniffed};
use mesh_tower::server::{
    check_connection, AcceptConfig, ConnectionInfo, Drain, Handler, InboundService, LocalApp,
    TlsSource,
};
use mesh_tower::telemetry::tcp::MeteredIo;
use mesh_tower::telemetry::Telemetry;
use mesh_tower::{Mesh, ModelRx};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};

/// How long an undeclared port waits for the client's first bytes before
/// treating the connection as opaque TCP.
pub const SNIFF_TIMEOUT: Duration = Duration::from_millis(100);

/// The inbound side: one per shim.
#[derive(Clone)]
pub struct Inbound {
    handler: Handler<InboundService<LocalApp>>,
    model: ModelRx,
    telemetry: Telemetry,
    app: Option<SocketAddr>,
}

/// How a port is served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PortKind {
    Http,
    Tcp,
    Undeclared,
}

impl Inbound {
    /// The inbound side presenting `tls`, for the app at `app`, or (when
    /// `None`) on 127.0.0.1 at the port each caller dialed before iptables
    /// redirected it.
    pub fn new(
        mesh: &Mesh,
        tls: TlsSource,
        app: Option<SocketAddr>,
        header_timeout: Duration,
    ) -> Self {
        let local = match app {
            Some(a) => LocalApp::new(mesh.model(), a),
            None => LocalApp::on_caller_port(mesh.model(), IpAddr::V4(Ipv4Addr::LOCALHOST)),
        };
        // Redirected connections are policed and forwarded under the port
        // the caller dialed, not the capture port.
        let accept = AcceptConfig {
            original_dst: true,
            ..AcceptConfig::default()
        };
        Inbound {
            handler: mesh
                .server(tls)
                .accept_config(accept)
                .header_timeout(header_timeout)
                .handler(local),
            model: mesh.model(),
            telemetry: mesh.telemetry().clone(),
            app,
        }
    }

    /// Serves `listener` until `signal`, then drains for up to `drain`.
    pub async fn serve(
        self,
        listener: TcpListener,
        signal: impl std::future::Future<Output = ()>,
        drain: Duration,
    ) {
        accept_until(listener, signal, drain, "inbound", move |tcp, peer, d| {
            self.clone().connection(tcp, peer, d)
        })
        .await;
    }

    fn kind(&self, port: u16) -> PortKind {
        match self.model.borrow().inbound.ports.get(&port) {
            Some(p) if p.is_tcp() || p.is_tls() => PortKind::Tcp,
            Some(p) if p.is_unknown() => PortKind::Undeclared,
            Some(_) => PortKind::Http,
            None => PortKind::Undeclared,
        }
    }

    async fn connection(self, tcp: TcpStream, peer: SocketAddr, drain: Drain) {
        let (stream, info) = match self.handler.acceptor().accept(tcp, peer).await {
            Ok(c) => c,
            Err(e) => {
                tracing::info!(target: "mesh::inbound", %peer, error = %e, "connection refused");
                return;
            }
        };
        match self.kind(info.port) {
            PortKind::Http => self.handler.serve_accepted(stream, info, drain).await,
            PortKind::Tcp => self.tcp(stream, info).await,
            PortKind::Undeclared => match sniff(stream, SNIFF_TIMEOUT).await {
                Ok((Sniffed::Http, s)) => self.handler.serve_accepted(s, info, drain).await,
                Ok((Sniffed::Opaque, s)) => self.tcp(s, info).await,
                Err(e) => {
                    tracing::debug!(target: "mesh::inbound", %peer, error = %e, "connection closed while sniffing")
                }
            },
        }
    }

    /// Opaque TCP: L4 authorization, then bytes both ways to the app.
    async fn tcp<S>(self, stream: S, info: ConnectionInfo)
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let model = self.model.borrow().clone();
        let decision = check_connection(&model, &info, None).await;
        if decision.verdict == mesh_core::authz::Verdict::Deny {
            // Closing is all TCP can say; the authz log names the policy.
            return;
        }
        let meter = self.telemetry.tcp_inbound(&info, None);
        let mut down = MeteredIo::inbound(stream, meter);
        let app_addr = self
            .app
            .unwrap_or_else(|| SocketAddr::from((Ipv4Addr::LOCALHOST, info.port)));
        let mut app = match TcpStream::connect(app_addr).await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(target: "mesh::inbound", app = %app_addr, error = %e, "app refused the connection");
                return;
            }
        };
        let _ = app.set_nodelay(true);
        if let Err(e) = tokio::io::copy_bidirectional(&mut down, &mut app).await {
            tracing::debug!(target: "mesh::inbound", peer = %info.peer_addr, error = %e, "tcp proxy ended with an error");
        }
    }
}
