//! Istio Gateway serving: a process built on a gateway [`Mesh`] (see
//! [`crate::MeshBuilder::gateway`]) becomes the ingress or egress gateway,
//! listening on every port of the Gateways that select it.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use mesh_tower::gateway::GatewayServer;
//! let mesh = mesh_tower::Mesh::local("mesh/")
//!     .namespace("istio-system")
//!     .labels([("istio", "ingressgateway")])
//!     .gateway()
//!     .build()
//!     .await?;
//! let bound = GatewayServer::new(&mesh)
//!     .bind(|port| std::net::SocketAddr::from(([0, 0, 0, 0], port)))
//!     .await?;
//! bound.serve_with_shutdown(async { let _ = tokio::signal::ctrl_c().await; }).await?;
//! # Ok(()) }
//! ```
//!
//! Per port (compiled by mesh-core into [`mesh_core::model::GatewayModel`]):
//!
//! - plaintext HTTP ([`http`]): HTTP/1.1 and h2c; `httpsRedirect` answers
//!   301; the request's `Host` must match a virtual host of the port's
//!   routes (else 404 NR), and is then routed by the SDK's client stack;
//! - TLS ([`listener`], [`hello`]): the ClientHello's SNI picks the server;
//!   SIMPLE / MUTUAL / ISTIO_MUTUAL servers terminate ([`tls`], certificates
//!   from the files the Gateway names, reloaded when they change) and
//!   serve HTTP as above with that server's routes; PASSTHROUGH servers
//!   copy the raw bytes to the destination a VirtualService `tls` route
//!   picks by SNI ([`passthrough`]).
//!
//! Telemetry is the client stack's (`reporter="source"`, as Istio's
//! gateways report) and Istio's TCP metrics for passthrough connections.
//!
//! Config changes (new VirtualServices, servers, certificates) apply to the
//! next connection or request without restarting listeners. Ports are
//! bound once, by [`GatewayServer::bind`]: a port a later config adds is
//! not listened on until the next bind, and a port it removes closes new
//! connections at once. Servers the model refuses (see
//! [`mesh_core::model::gateway::GatewayServerError`]) are logged at bind
//! and at every config change.
//!
//! Not here: compiling Gateways (mesh-core), routing (`client`), the
//! endpoint stage (`balance`).

pub mod hello;
mod http;
mod listener;
pub mod passthrough;
pub mod tls;

use std::collections::BTreeMap;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use crate::balance::DEFAULT_CONNECT_TIMEOUT;
use crate::mesh::{Mesh, MeshGuard};
use crate::server::DEFAULT_DRAIN_TIMEOUT;
use crate::ModelRx;

use listener::Shared;
use tls::ServerConfigs;

/// Why a gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// The mesh's model has no gateway part.
    #[error("this workload is not a gateway: build the Mesh with MeshBuilder::gateway() (local mode) so the Gateways selecting its labels are compiled for it")]
    NotAGateway,
    /// A port could not be bound.
    #[error("binding Gateway port {port} on {addr}: {source}")]
    Bind {
        /// The Gateway port.
        port: u16,
        /// The address it was mapped to.
        addr: SocketAddr,
        /// Why.
        source: io::Error,
    },
}

/// A gateway over a [`Mesh`]: its model, outbound client, telemetry and
/// identity (for ISTIO_MUTUAL servers).
pub struct GatewayServer {
    model: ModelRx,
    shared: Shared,
    drain_timeout: Duration,
    guard: MeshGuard,
}

impl std::fmt::Debug for GatewayServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GatewayServer")
            .field("drain_timeout", &self.drain_timeout)
            .finish_non_exhaustive()
    }
}

impl GatewayServer {
    /// A gateway serving `mesh`'s Gateways, routing with its client stack.
    pub fn new(mesh: &Mesh) -> Self {
        GatewayServer {
            model: mesh.model(),
            shared: Shared {
                model: mesh.model(),
                client: mesh.http_client(),
                telemetry: mesh.telemetry().clone(),
                tls: ServerConfigs::new(mesh.identity().cloned()),
                handshake_timeout: Duration::from_secs(10),
                connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            },
            drain_timeout: DEFAULT_DRAIN_TIMEOUT,
            guard: mesh.keep_alive(),
        }
    }

    /// How long a shutdown lets open connections finish (default 5 s).
    pub fn drain_timeout(mut self, timeout: Duration) -> Self {
        self.drain_timeout = timeout;
        self
    }

    /// How long a client may take to send its ClientHello and finish the
    /// TLS handshake (default 10 s).
    pub fn handshake_timeout(mut self, timeout: Duration) -> Self {
        self.shared.handshake_timeout = timeout;
        self
    }

    /// How long connecting to a passthrough upstream may take (default
    /// 10 s, Envoy's).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.shared.connect_timeout = timeout;
        self
    }

    /// The Gateway ports the current model serves.
    pub fn ports(&self) -> Vec<u16> {
        self.model
            .borrow()
            .gateway
            .as_ref()
            .map(|g| g.ports.keys().copied().collect())
            .unwrap_or_default()
    }

    /// Binds one listener per Gateway port of the current model, at the
    /// address `map` gives for the port (`0.0.0.0:<port>` in production;
    /// `127.0.0.1:0` in tests, then read [`BoundGateway::local_addr`]).
    pub async fn bind(self, map: impl Fn(u16) -> SocketAddr) -> Result<BoundGateway, GatewayError> {
        let ports = {
            let model = self.model.borrow();
            let gw = model.gateway.as_ref().ok_or(GatewayError::NotAGateway)?;
            log_errors(gw);
            gw.ports.keys().copied().collect::<Vec<_>>()
        };
        let mut listeners = Vec::with_capacity(ports.len());
        for port in ports {
            let addr = map(port);
            let l = TcpListener::bind(addr)
                .await
                .map_err(|source| GatewayError::Bind { port, addr, source })?;
            let local =
                l.local_addr()
                    .map_err(|source| GatewayError::Bind { port, addr, source })?;
            tracing::info!(target: "mesh::gateway", port, %local, "listening");
            listeners.push((port, local, l));
        }
        Ok(BoundGateway {
            server: self,
            listeners,
        })
    }
}

fn log_errors(gw: &mesh_core::model::GatewayModel) {
    for e in &gw.errors {
        tracing::error!(target: "mesh::gateway", "{e}");
    }
}

/// A gateway with its ports bound, ready to serve.
pub struct BoundGateway {
    server: GatewayServer,
    listeners: Vec<(u16, SocketAddr, TcpListener)>,
}

impl std::fmt::Debug for BoundGateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BoundGateway")
            .field("addrs", &self.local_addrs())
            .finish_non_exhaustive()
    }
}

impl BoundGateway {
    /// Where Gateway port `port` listens.
    pub fn local_addr(&self, port: u16) -> Option<SocketAddr> {
        self.listeners
            .iter()
            .find(|(p, _, _)| *p == port)
            .map(|(_, a, _)| *a)
    }

    /// Every Gateway port and where it listens.
    pub fn local_addrs(&self) -> BTreeMap<u16, SocketAddr> {
        self.listeners.iter().map(|(p, a, _)| (*p, *a)).collect()
    }

    /// Serves until the process ends.
    pub async fn serve(self) -> io::Result<()> {
        self.serve_with_shutdown(std::future::pending()).await
    }

    /// Serves until `signal` resolves, then shuts down gracefully: the
    /// listeners close at once, open HTTP connections finish the requests
    /// in flight (HTTP/2 gets GOAWAY), and what is still open after the
    /// drain timeout is closed.
    pub async fn serve_with_shutdown<F>(self, signal: F) -> io::Result<()>
    where
        F: Future<Output = ()>,
    {
        let BoundGateway { server, listeners } = self;
        let GatewayServer {
            model,
            shared,
            drain_timeout,
            guard,
        } = server;
        // Held while serving: the mesh's config watcher keeps running.
        let _guard = guard;
        let shared = Arc::new(shared);
        let (conn_tx, mut conn_rx) = mpsc::channel(64);
        let mut accepts = JoinSet::new();
        for (port, _, l) in listeners {
            accepts.spawn(accept_loop(port, l, conn_tx.clone()));
        }
        drop(conn_tx);
        let (drain_tx, drain_rx) = watch::channel(false);
        let mut conns = JoinSet::new();
        let mut changes = model.clone();
        changes.mark_unchanged();
        let mut signal = std::pin::pin!(signal);
        loop {
            tokio::select! {
                biased;
                () = &mut signal => break,
                Some(_) = conns.join_next(), if !conns.is_empty() => {}
                Ok(()) = changes.changed() => {
                    let model = changes.borrow_and_update().clone();
                    if let Some(gw) = model.gateway.as_deref() {
                        log_errors(gw);
                    }
                }
                accepted = conn_rx.recv() => {
                    let Some((port, tcp, peer)) = accepted else { break };
                    conns.spawn(listener::connection(shared.clone(), port, tcp, peer, drain_rx.clone()));
                }
            }
        }
        // Closing the listeners refuses new connections at once.
        accepts.abort_all();
        while accepts.join_next().await.is_some() {}
        let open = conns.len();
        tracing::info!(target: "mesh::gateway", open, drain_timeout = ?drain_timeout, "shutting down: draining connections");
        let _ = drain_tx.send(true);
        let deadline = tokio::time::sleep(drain_timeout);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                () = &mut deadline => {
                    tracing::warn!(target: "mesh::gateway", remaining = conns.len(), "drain deadline passed; closing the remaining connections");
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

type Accepted = (u16, tokio::net::TcpStream, SocketAddr);

/// Accepts on one listener, handing connections to the serve loop.
async fn accept_loop(port: u16, listener: TcpListener, tx: mpsc::Sender<Accepted>) {
    loop {
        match listener.accept().await {
            Ok((tcp, peer)) => {
                if tx.send((port, tcp, peer)).await.is_err() {
                    return;
                }
            }
            Err(e) => {
                // Per-connection failures and running out of descriptors
                // alike: a short pause, then accept again.
                tracing::warn!(target: "mesh::gateway", port, error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Resolves once a drain starts; never if the gateway is gone without one.
async fn drained(mut drain: watch::Receiver<bool>) {
    if drain.wait_for(|d| *d).await.is_err() {
        std::future::pending::<()>().await;
    }
}
