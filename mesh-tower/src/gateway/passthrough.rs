//! PASSTHROUGH servers: the TLS connection is not terminated; its SNI
//! picks a VirtualService `tls` route, the route a weighted destination,
//! and the raw bytes (ClientHello first) are copied to an endpoint of the
//! destination's cluster and back. The upstream terminates TLS itself.
//!
//! [`decide`] is the pure part (route, destination, endpoint); [`proxy`]
//! connects and copies, metered as Istio's TCP metrics with
//! `reporter="source"`. The endpoint is picked by weight at random from
//! the cluster's endpoints; outlier detection and connection-pool limits
//! of the HTTP endpoint stage do not apply to these connections.

use std::net::SocketAddr;
use std::time::Duration;

use mesh_core::model::gateway::GatewayServer;
use mesh_core::model::Model;
use tokio::io::{copy_bidirectional, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::telemetry::tcp::MeteredIo;
use crate::telemetry::Telemetry;

/// Why a passthrough connection was closed without reaching an upstream.
#[derive(Debug, thiserror::Error)]
pub enum PassthroughError {
    /// No SNI: nothing to route by.
    #[error("{server}: the ClientHello has no SNI, and PASSTHROUGH routes by SNI")]
    NoSni {
        /// The server.
        server: String,
    },
    /// No `tls` route of a bound VirtualService matches the SNI.
    #[error("{server}: no VirtualService tls route bound to the gateway matches SNI {sni} (NR)")]
    NoRoute {
        /// The server.
        server: String,
        /// The SNI.
        sni: String,
    },
    /// The route's destinations all weigh zero, or one has no port.
    #[error("{route}: no destination with a positive weight and a port (set destination.port when the service has several)")]
    NoDestination {
        /// The VirtualService and rule.
        route: String,
    },
    /// The destination has no cluster or no endpoint.
    #[error("no healthy upstream for {cluster} (UH)")]
    NoEndpoint {
        /// The cluster.
        cluster: String,
    },
    /// Connecting failed.
    #[error("connecting to {addr} for {cluster} failed (UF): {source}")]
    Connect {
        /// The cluster.
        cluster: String,
        /// The endpoint.
        addr: String,
        /// Why.
        source: std::io::Error,
    },
}

/// Where a passthrough connection goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The destination service host (for telemetry).
    pub host: String,
    /// The cluster name.
    pub cluster: String,
    /// The endpoint's address (IP or host name) and port.
    pub address: String,
    /// The endpoint port.
    pub port: u16,
}

/// Picks the route, destination and endpoint for `sni` on `server`, with
/// the random numbers `r1` (destination) and `r2` (endpoint).
pub fn decide(
    model: &Model,
    server: &GatewayServer,
    sni: Option<&str>,
    r1: u64,
    r2: u64,
) -> Result<Target, PassthroughError> {
    let label = server.label();
    let sni = sni.ok_or_else(|| PassthroughError::NoSni {
        server: label.clone(),
    })?;
    let route = server
        .tls_route(sni)
        .ok_or_else(|| PassthroughError::NoRoute {
            server: label,
            sni: sni.to_string(),
        })?;
    let no_dest = || PassthroughError::NoDestination {
        route: format!("{} tls[{}]", route.virtual_service, route.rule_index),
    };
    let dest = route.pick(r1).ok_or_else(no_dest)?;
    let port = dest.port.ok_or_else(no_dest)?;
    let cluster_name = mesh_core::model::cluster_name(&dest.host, port, dest.subset.as_deref());
    let no_endpoint = || PassthroughError::NoEndpoint {
        cluster: cluster_name.clone(),
    };
    let cluster = model.clusters.get(&cluster_name).ok_or_else(no_endpoint)?;
    let total: u64 = cluster
        .endpoints
        .iter()
        .map(|e| u64::from(e.weight.max(1)))
        .sum();
    if total == 0 {
        return Err(no_endpoint());
    }
    let mut at = r2 % total;
    let ep = cluster
        .endpoints
        .iter()
        .find(|e| {
            let w = u64::from(e.weight.max(1));
            if at < w {
                return true;
            }
            at -= w;
            false
        })
        .ok_or_else(no_endpoint)?;
    Ok(Target {
        host: dest.host.clone(),
        cluster: cluster_name.clone(),
        address: ep.address.clone(),
        port: ep.port,
    })
}

/// Proxies a passthrough connection to `target` ([`decide`]), its first
/// bytes (`hello`) already read from `downstream`.
pub async fn proxy(
    target: Target,
    hello: Vec<u8>,
    mut downstream: TcpStream,
    telemetry: &Telemetry,
    connect_timeout: Duration,
) -> Result<(u64, u64), PassthroughError> {
    let connect_err = |source| PassthroughError::Connect {
        cluster: target.cluster.clone(),
        addr: format!("{}:{}", target.address, target.port),
        source,
    };
    let connect = async {
        let addr: SocketAddr = match target.address.parse::<std::net::IpAddr>() {
            Ok(ip) => SocketAddr::new(ip, target.port),
            Err(_) => tokio::net::lookup_host((target.address.as_str(), target.port))
                .await?
                .next()
                .ok_or_else(|| std::io::Error::other("the name resolved to no address"))?,
        };
        let s = TcpStream::connect(addr).await?;
        s.set_nodelay(true)?;
        Ok::<_, std::io::Error>(s)
    };
    let upstream = tokio::time::timeout(connect_timeout, connect)
        .await
        .map_err(|_| connect_err(std::io::ErrorKind::TimedOut.into()))?
        .map_err(connect_err)?;
    let mut upstream = MeteredIo::outbound(upstream, telemetry.tcp_outbound(&target.host));
    upstream.write_all(&hello).await.map_err(connect_err)?;
    // Errors once both sides are connected are the peers' business (a
    // reset, a close): the copy simply ends.
    Ok(copy_bidirectional(&mut downstream, &mut upstream)
        .await
        .unwrap_or((0, 0)))
}
