//! One accepted gateway connection: what its port serves now (read from
//! the latest model per connection, so a config change applies to the
//! next connection and, through the route stage, to the next request),
//! then plaintext HTTP, or the ClientHello's SNI choosing a server that
//! terminates TLS (then HTTP) or passes it through.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use mesh_core::model::gateway::PortKind;
use tokio::net::TcpStream;
use tokio::sync::watch;

use super::hello::{read_hello, Hello, Replay};
use super::http::{self, HttpListener};
use super::passthrough;
use super::tls::ServerConfigs;
use crate::client::listener::ListenerRoutes;
use crate::client::rng;
use crate::mesh::MeshClient;
use crate::telemetry::Telemetry;
use crate::ModelRx;

/// What every connection of a gateway shares.
pub(crate) struct Shared {
    pub model: ModelRx,
    pub client: MeshClient,
    pub telemetry: Telemetry,
    pub tls: ServerConfigs,
    pub handshake_timeout: Duration,
    pub connect_timeout: Duration,
}

/// Serves one connection accepted on the listener of Gateway port `port`.
pub(crate) async fn connection(
    shared: Arc<Shared>,
    port: u16,
    mut tcp: TcpStream,
    peer: SocketAddr,
    drain: watch::Receiver<bool>,
) {
    let _ = tcp.set_nodelay(true);
    let model = shared.model.borrow().clone();
    let Some(gp) = model.gateway.as_ref().and_then(|g| g.ports.get(&port)) else {
        tracing::info!(target: "mesh::gateway", %peer, port, "connection closed: no Gateway server serves this port any more");
        return;
    };
    let listener = |name: &str, tls: bool| HttpListener {
        client: shared.client.clone(),
        routes: ListenerRoutes {
            name: Arc::from(name),
            port,
        },
        tls,
        peer,
        model: shared.model.clone(),
    };
    if gp.kind == PortKind::Http {
        let name = gp.http_routes.clone().unwrap_or_default();
        // Requests read the latest model themselves; this one would only
        // keep an old version alive as long as the connection.
        drop(model);
        http::serve(listener(&name, false), tcp, drain).await;
        return;
    }
    let (hello, parsed) = match read_hello(&mut tcp, shared.handshake_timeout).await {
        Ok(h) => h,
        Err(e) => {
            tracing::info!(target: "mesh::gateway", %peer, port, error = %e, "connection closed before a ClientHello");
            return;
        }
    };
    let sni = match parsed {
        Hello::Complete { sni } => sni,
        Hello::NotTls | Hello::Partial => {
            tracing::info!(target: "mesh::gateway", %peer, port, "connection closed: port {port} serves TLS and the client did not start a TLS handshake");
            return;
        }
    };
    let Some(server) = gp.server_for_sni(sni.as_deref()) else {
        tracing::info!(target: "mesh::gateway", %peer, port, sni = sni.as_deref().unwrap_or("-"), "connection closed: no server of the port serves this SNI");
        return;
    };
    if server.is_passthrough() {
        let decided = passthrough::decide(
            &model,
            server,
            sni.as_deref(),
            rng::next_u64(),
            rng::next_u64(),
        );
        drop(model);
        let r = match decided {
            Ok(target) => {
                passthrough::proxy(
                    target,
                    hello,
                    tcp,
                    &shared.telemetry,
                    shared.connect_timeout,
                )
                .await
            }
            Err(e) => Err(e),
        };
        if let Err(e) = r {
            tracing::info!(target: "mesh::gateway", %peer, port, error = %e, "passthrough connection closed");
        }
        return;
    }
    let config = match shared.tls.config(&model, server) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(target: "mesh::gateway", %peer, port, error = %e, "TLS connection refused");
            return;
        }
    };
    let name = server.http_routes.clone().unwrap_or_default();
    let label = server.label();
    drop(model);
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let handshake = acceptor.accept(Replay::new(hello, tcp));
    let stream = match tokio::time::timeout(shared.handshake_timeout, handshake).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::info!(target: "mesh::gateway", %peer, port, server = %label, error = %e, "TLS handshake failed");
            return;
        }
        Err(_) => {
            tracing::info!(target: "mesh::gateway", %peer, port, "TLS handshake timed out");
            return;
        }
    };
    http::serve(listener(&name, true), stream, drain).await;
}
