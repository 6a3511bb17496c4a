//! The app's own requests into the SDK's client stack: routing, splits,
//! retries, timeouts, faults, outlier detection, mTLS origination and
//! `reporter="source"` telemetry are all the SDK's, for every listener.
//!
//! - the outbound port (15001), two ways on one listener: connections
//!   iptables redirected there (`mesh-shim iptables`) are recognised by
//!   their original destination (`SO_ORIGINAL_DST`) and sniffed: HTTP is
//!   routed by `Host` on the dialed port, other TCP passes through to the
//!   dialed address under `ALLOW_ANY` and is refused under `REGISTRY_ONLY`;
//!   connections made to it directly are an explicit HTTP proxy
//!   (`HTTP_PROXY=http://127.0.0.1:15001`), with `CONNECT` tunnels for
//!   TLS the app originates (`HTTPS_PROXY`);
//! - one port per upstream (`--upstream 9080=reviews:9080`), for apps whose
//!   HTTP client cannot use a proxy.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use http::uri::Authority;
use http::{Request, Response, StatusCode};
use mesh_core::model::OutboundPolicy;
use mesh_tower::body::MeshBody;
use mesh_tower::gateway::passthrough::{decide_authority, dial, PassthroughError};
use mesh_tower::server::listen::accept_until;
use mesh_tower::server::original_dst::original_dst;
use mesh_tower::server::sniff::{sniff, Sniffed};
use mesh_tower::server::{strip_hop_by_hop, ConnectionInfo, Drain, PlainServer};
use mesh_tower::telemetry::tcp::MeteredIo;
use mesh_tower::telemetry::Telemetry;
use mesh_tower::{Mesh, MeshClient, MeshError, ModelRx, ResponseFlag};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};

use crate::inbound::SNIFF_TIMEOUT;

/// How long a `CONNECT` waits for the upstream connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A random number for endpoint picks: a fresh SipHash key per process,
/// over a counter.
fn next_random() -> u64 {
    use std::hash::BuildHasher;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::OnceLock;
    static KEYS: OnceLock<std::collections::hash_map::RandomState> = OnceLock::new();
    static N: AtomicU64 = AtomicU64::new(0);
    KEYS.get_or_init(Default::default)
        .hash_one(N.fetch_add(1, Ordering::Relaxed))
}

use crate::capture::{self, CaptureError};

/// The outbound side: shared by all outbound listeners, so they share
/// connection pools, balancers and outlier state.
#[derive(Clone)]
pub struct Outbound {
    client: MeshClient,
    model: ModelRx,
    telemetry: Telemetry,
    header_timeout: Duration,
    drain_timeout: Duration,
}

impl std::fmt::Debug for Outbound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbound").finish_non_exhaustive()
    }
}

impl Outbound {
    /// The outbound side of `mesh`.
    pub fn new(mesh: &Mesh, header_timeout: Duration, drain_timeout: Duration) -> Self {
        Outbound {
            client: mesh.http_client(),
            model: mesh.model(),
            telemetry: mesh.telemetry().clone(),
            header_timeout,
            drain_timeout,
        }
    }

    fn server(&self, name: &'static str) -> PlainServer {
        PlainServer::new(name)
            .header_timeout(self.header_timeout)
            .drain_timeout(self.drain_timeout)
    }

    /// Serves the outbound port (capture and explicit proxy) until
    /// `signal`.
    pub async fn serve_proxy(self, listener: TcpListener, signal: impl Future<Output = ()>) {
        let drain_timeout = self.drain_timeout;
        accept_until(
            listener,
            signal,
            drain_timeout,
            "outbound",
            move |tcp, peer, drain| self.clone().connection(tcp, peer, drain),
        )
        .await;
    }

    async fn connection(self, tcp: TcpStream, peer: SocketAddr, drain: Drain) {
        let Ok(local_addr) = tcp.local_addr() else {
            return;
        };
        let dst = match original_dst(&tcp) {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(%peer, error = %e, "cannot read the original destination");
                None
            }
        };
        let info = |local_addr: SocketAddr| ConnectionInfo {
            peer_addr: peer,
            local_addr,
            port: local_addr.port(),
            identity: None,
            sni: None,
        };
        let server = self.server("outbound");
        let client = self.client.clone();
        let Some(dst) = dst else {
            let tunnels = self.clone();
            let svc = tower::service_fn(move |mut req: Request<MeshBody>| {
                let tunnels = tunnels.clone();
                let client = client.clone();
                async move {
                    if req.method() == http::Method::CONNECT {
                        return Ok(tunnels.connect(req).await);
                    }
                    let captured = capture::from_proxy(&mut req);
                    send(client, req, captured).await
                }
            });
            return server
                .serve_connection(tcp, info(local_addr), svc, drain)
                .await;
        };
        match sniff(tcp, SNIFF_TIMEOUT).await {
            Ok((Sniffed::Http, io)) => {
                let svc = tower::service_fn(move |mut req: Request<MeshBody>| {
                    let captured = capture::from_original_dst(&mut req, dst);
                    send(client.clone(), req, captured)
                });
                server.serve_connection(io, info(dst), svc, drain).await;
            }
            Ok((Sniffed::Opaque, io)) => self.passthrough(io, dst).await,
            Err(e) => tracing::debug!(%peer, error = %e, "connection closed while sniffing"),
        }
    }

    /// `CONNECT host:port` (TLS the app originates itself through
    /// `HTTPS_PROXY`): the mesh service's endpoint, or the address itself
    /// under `ALLOW_ANY`; 200 once the upstream is connected, then bytes
    /// both ways, metered as TCP.
    async fn connect(self, req: Request<MeshBody>) -> Response<MeshBody> {
        let refuse = |flag, status, why: String| {
            MeshError::new(flag, why)
                .with_status(status)
                .into_response(false)
        };
        let Some(authority) = req.uri().authority().cloned() else {
            return refuse(
                ResponseFlag::DownstreamProtocolError,
                StatusCode::BAD_REQUEST,
                "CONNECT needs host:port".into(),
            );
        };
        let port = authority.port_u16().unwrap_or(443);
        let decided = {
            let model = self.model.borrow();
            decide_authority(&model, authority.host(), port, next_random())
        };
        let target = match decided {
            Ok(t) => t,
            Err(e @ PassthroughError::NotInRegistry { .. }) => {
                return refuse(ResponseFlag::NoRoute, StatusCode::FORBIDDEN, e.to_string())
            }
            Err(e) => {
                return refuse(
                    ResponseFlag::NoHealthyUpstream,
                    StatusCode::SERVICE_UNAVAILABLE,
                    e.to_string(),
                )
            }
        };
        let mut upstream = match dial(&target, &self.telemetry, CONNECT_TIMEOUT).await {
            Ok(u) => u,
            Err(e) => {
                return refuse(
                    ResponseFlag::UpstreamConnectionFailure,
                    StatusCode::SERVICE_UNAVAILABLE,
                    e.to_string(),
                )
            }
        };
        tokio::spawn(async move {
            match hyper::upgrade::on(req).await {
                Ok(up) => {
                    let mut io = hyper_util::rt::TokioIo::new(up);
                    if let Err(e) = tokio::io::copy_bidirectional(&mut io, &mut upstream).await {
                        tracing::debug!(cluster = %target.cluster, error = %e, "CONNECT tunnel ended with an error");
                    }
                }
                Err(e) => {
                    tracing::debug!(error = %e, "CONNECT: the client went away before the tunnel")
                }
            }
        });
        Response::new(mesh_tower::body::empty())
    }

    /// Opaque TCP the app sent to `dst`: Istio's PassthroughCluster under
    /// `ALLOW_ANY`, its BlackHoleCluster under `REGISTRY_ONLY`.
    async fn passthrough<S>(self, io: S, dst: SocketAddr)
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        if self.model.borrow().mesh.outbound_policy == OutboundPolicy::RegistryOnly {
            tracing::info!(%dst, "outbound TCP refused: outboundTrafficPolicy is REGISTRY_ONLY");
            return;
        }
        let up = match TcpStream::connect(dst).await {
            Ok(s) => s,
            Err(e) => {
                tracing::info!(%dst, error = %e, "outbound TCP: upstream connect failed");
                return;
            }
        };
        let _ = up.set_nodelay(true);
        let meter = self.telemetry.tcp_outbound("PassthroughCluster");
        let mut up = MeteredIo::outbound(up, meter);
        let mut io = io;
        if let Err(e) = tokio::io::copy_bidirectional(&mut io, &mut up).await {
            tracing::debug!(%dst, error = %e, "outbound TCP ended with an error");
        }
    }

    /// Serves a per-upstream port for `authority` until `signal`.
    pub async fn serve_upstream(
        self,
        listener: TcpListener,
        authority: String,
        signal: impl Future<Output = ()>,
    ) {
        let authority: Authority = match authority.parse() {
            Ok(a) => a,
            Err(e) => {
                tracing::error!(%authority, error = %e, "upstream is not an authority; listener not served");
                return;
            }
        };
        let client = self.client.clone();
        let svc = tower::service_fn(move |mut req: Request<MeshBody>| {
            let captured = capture::to_upstream(&mut req, &authority);
            send(client.clone(), req, captured)
        });
        self.server("upstream")
            .serve_with_shutdown(listener, svc, signal)
            .await;
    }
}

async fn send(
    client: MeshClient,
    mut req: Request<MeshBody>,
    captured: Result<(), CaptureError>,
) -> Result<Response<MeshBody>, mesh_tower::BoxError> {
    if let Err(e) = captured {
        let grpc = mesh_tower::error::is_grpc(&req);
        return Ok(MeshError::new(ResponseFlag::NoRoute, e.0)
            .with_status(StatusCode::BAD_REQUEST)
            .into_response(grpc));
    }
    strip_hop_by_hop(req.headers_mut());
    let mut resp = client.request(req).await?;
    strip_hop_by_hop(resp.headers_mut());
    Ok(resp)
}
