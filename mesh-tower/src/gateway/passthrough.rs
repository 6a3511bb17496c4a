//! PASSTHROUGH servers: the TLS connection is not terminated; its SNI
//! picks a VirtualService `tls` route, the route a weighted destination,
//! and the raw bytes (ClientHello first) are copied to an endpoint of the
//! destination's cluster and back. The upstream terminates TLS itself.
//!
//! [`decide`] is the pure part (route, destination, endpoint); [`proxy`]
//! connects and copies (the shim's `CONNECT` uses [`decide_authority`] and
//! [`dial`] the same way), metered as Istio's TCP metrics with
//! `reporter="source"`. The endpoint is picked by weight at random from
//! the cluster's endpoints; outlier detection and connection-pool limits
//! of the HTTP endpoint stage do not apply to these connections.

use std::net::SocketAddr;
use std::time::Duration;

use mesh_core::model::gateway::GatewayServer;
use mesh_core::model::{Cluster, ClusterEndpoint, Model, OutboundPolicy};
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
    /// An unknown host under `outboundTrafficPolicy: REGISTRY_ONLY`.
    #[error("{authority} is not a service of the mesh and outboundTrafficPolicy is REGISTRY_ONLY; add a ServiceEntry for it (NR)")]
    NotInRegistry {
        /// What was asked for.
        authority: String,
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
    let ep = pick_endpoint(cluster, r2).ok_or_else(no_endpoint)?;
    Ok(Target {
        host: dest.host.clone(),
        cluster: cluster_name.clone(),
        address: ep.address.clone(),
        port: ep.port,
    })
}

/// An endpoint of `cluster`, by weight, from the random number `r`.
pub fn pick_endpoint(cluster: &Cluster, r: u64) -> Option<&ClusterEndpoint> {
    let total: u64 = cluster
        .endpoints
        .iter()
        .map(|e| u64::from(e.weight.max(1)))
        .sum();
    if total == 0 {
        return None;
    }
    let mut at = r % total;
    cluster.endpoints.iter().find(|e| {
        let w = u64::from(e.weight.max(1));
        if at < w {
            return true;
        }
        at -= w;
        false
    })
}

/// Where an app's opaque connection to `host:port` goes (an explicit
/// proxy's `CONNECT`): an endpoint of the mesh service it names, picked
/// with `r`; else the address itself under `ALLOW_ANY` (Istio's
/// PassthroughCluster); refused under `REGISTRY_ONLY`.
pub fn decide_authority(
    model: &Model,
    host: &str,
    port: u16,
    r: u64,
) -> Result<Target, PassthroughError> {
    let mut key = String::new();
    if let Some(svc) = model.resolve_outbound(host, port, &mut key) {
        let cluster_name = mesh_core::model::cluster_name(&svc.host, svc.port, None);
        let no_endpoint = || PassthroughError::NoEndpoint {
            cluster: cluster_name.clone(),
        };
        let cluster = model.clusters.get(&cluster_name).ok_or_else(no_endpoint)?;
        // A DNS or passthrough cluster with no listed endpoint: the host
        // itself, as Envoy's resolver would dial it.
        let (address, ep_port) = match pick_endpoint(cluster, r) {
            Some(ep) => (ep.address.clone(), ep.port),
            None if cluster.endpoints.is_empty() && svc.mesh_external => {
                (svc.host.clone(), svc.port)
            }
            None => return Err(no_endpoint()),
        };
        return Ok(Target {
            host: svc.host.clone(),
            cluster: cluster_name,
            address,
            port: ep_port,
        });
    }
    match model.mesh.outbound_policy {
        OutboundPolicy::AllowAny => Ok(Target {
            host: "PassthroughCluster".into(),
            cluster: "PassthroughCluster".into(),
            address: host.to_string(),
            port,
        }),
        OutboundPolicy::RegistryOnly => Err(PassthroughError::NotInRegistry {
            authority: format!("{host}:{port}"),
        }),
    }
}

/// Connects to `target`, metered as Istio's TCP metrics
/// (`reporter="source"`).
pub async fn dial(
    target: &Target,
    telemetry: &Telemetry,
    connect_timeout: Duration,
) -> Result<MeteredIo<TcpStream>, PassthroughError> {
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
    Ok(MeteredIo::outbound(
        upstream,
        telemetry.tcp_outbound(&target.host),
    ))
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
    let mut upstream = dial(&target, telemetry, connect_timeout).await?;
    let connect_err = |source| PassthroughError::Connect {
        cluster: target.cluster.clone(),
        addr: format!("{}:{}", target.address, target.port),
        source,
    };
    upstream.write_all(&hello).await.map_err(connect_err)?;
    // Errors once both sides are connected are the peers' business (a
    // reset, a close): the copy simply ends.
    Ok(copy_bidirectional(&mut downstream, &mut upstream)
        .await
        .unwrap_or((0, 0)))
}
