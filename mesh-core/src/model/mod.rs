//! The compiled data-plane model: what one client (a workload identified by
//! namespace, labels and service account) needs to route its outbound
//! requests and police its inbound ones. The SDK layers execute it, xDS
//! carries it, and `meshctl x` explains it.
//!
//! A model is plain data plus prebuilt matchers, cheap to share behind an
//! `Arc` and to swap through a `watch` channel: building it is the control
//! plane's (or local mode's) job, reading it is the hot path's.

pub mod client;
pub mod gateway;
mod inbound;

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Serialize;

pub use client::Client;
pub use gateway::GatewayModel;
pub use inbound::{InboundPolicy, JwtPolicy, MtlsMode, MtlsPolicy};

use crate::authz::path::Normalization;
use crate::config::common::{Duration, Labels};
use crate::config::kube::Protocol;
use crate::config::networking::destination_rule::{
    ClientTlsSettings, ConnectionPoolSettings, LoadBalancerSettings, OutlierDetection,
};
use crate::registry::{Resolution, TlsMode};
use crate::route::RouteTable;
use crate::telemetry::TelemetryPolicy;

/// What to do with a request for a host the registry does not know.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OutboundPolicy {
    /// Forward it to the requested address (Istio's default).
    AllowAny,
    /// Refuse it: 503 with flag NR.
    RegistryOnly,
}

/// Mesh-wide settings the layers need at request time.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MeshSettings {
    /// Namespace whose policies apply mesh-wide.
    pub root_namespace: String,
    /// The local trust domain.
    pub trust_domain: String,
    /// Other trust domains treated as local.
    pub trust_domain_aliases: Vec<String>,
    /// DNS suffix of in-cluster services.
    pub domain_suffix: String,
    /// Unknown hosts: passthrough or refuse.
    pub outbound_policy: OutboundPolicy,
    /// Path normalization applied before authorization.
    pub path_normalization: Normalization,
}

/// One outbound service port the client may call, with its routes.
#[derive(Debug, Clone, Serialize)]
pub struct OutboundService {
    /// Fully qualified host.
    pub host: String,
    /// Service port.
    pub port: u16,
    /// Declared protocol of the port.
    pub protocol: Protocol,
    /// True for MESH_EXTERNAL services.
    pub mesh_external: bool,
    /// The ordered routes for `host:port`.
    pub routes: Arc<RouteTable>,
}

/// The traffic policy of a cluster after merging the DestinationRule's
/// top-level, port-level and subset settings.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct ClusterPolicy {
    /// The DestinationRule it came from (`ns/name`), if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub destination_rule: Option<String>,
    /// Load balancer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub load_balancer: Option<LoadBalancerSettings>,
    /// Connection pool limits (circuit breakers).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connection_pool: Option<ConnectionPoolSettings>,
    /// Outlier detection.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outlier_detection: Option<OutlierDetection>,
    /// TLS origination; `None` means auto-mTLS decides per endpoint.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<ClientTlsSettings>,
}

/// One endpoint of a cluster, with the port to dial resolved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ClusterEndpoint {
    /// IP or host name.
    pub address: String,
    /// Port to connect to.
    pub port: u16,
    /// Labels.
    pub labels: Labels,
    /// `region/zone/subzone`, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub locality: Option<String>,
    /// Load-balancing weight.
    pub weight: u32,
    /// Whether it takes Istio mTLS.
    pub tls_mode: TlsMode,
    /// Its SPIFFE identity, when known (what the client verifies).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub identity: Option<String>,
}

/// An upstream cluster: one host, port and optional subset.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Cluster {
    /// Envoy-style name `outbound|<port>|<subset>|<host>`.
    pub name: String,
    /// Fully qualified host.
    pub host: String,
    /// Service port.
    pub port: u16,
    /// Subset, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subset: Option<String>,
    /// Declared protocol.
    pub protocol: Protocol,
    /// How endpoints are found.
    pub resolution: Resolution,
    /// Merged traffic policy.
    pub policy: ClusterPolicy,
    /// Endpoints (filtered by the subset's labels).
    pub endpoints: Vec<ClusterEndpoint>,
    /// How often host names are looked up again: set for DNS clusters.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dns: Option<DnsRefresh>,
}

/// When a DNS cluster's host names are looked up again, as Envoy's
/// `dns_refresh_rate` and `respect_dns_ttl` say.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct DnsRefresh {
    /// Between lookups of a name; `None` is Envoy's default, 5 s.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate: Option<Duration>,
    /// A known TTL of the answer decides instead of `rate` (Istio always
    /// asks for this).
    pub respect_ttl: bool,
}

/// Istio's cluster name for host, port and subset.
pub fn cluster_name(host: &str, port: u16, subset: Option<&str>) -> String {
    let mut out = String::with_capacity(host.len() + 20);
    write_cluster_name(&mut out, host, port, subset);
    out
}

/// Appends [`cluster_name`] to `out` (for callers that reuse a buffer).
pub fn write_cluster_name(out: &mut String, host: &str, port: u16, subset: Option<&str>) {
    out.push_str("outbound|");
    push_port(out, port);
    out.push('|');
    out.push_str(subset.unwrap_or(""));
    out.push('|');
    out.push_str(host);
}

/// Appends `port` in decimal. By hand rather than `write!`: this runs per
/// request in the SDK.
fn push_port(out: &mut String, port: u16) {
    let mut digits = [0u8; 5];
    let mut i = digits.len();
    let mut n = port;
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend(digits[i..].iter().map(|d| char::from(*d)));
}

/// Everything one client needs.
// Aligned to a cache line: requests in flight hold it by `Arc`, and the
// reference count they write then shares no line with the fields every
// request reads.
#[derive(Debug, Clone, Serialize)]
#[repr(align(64))]
pub struct Model {
    /// Who it was compiled for.
    pub client: Client,
    /// Mesh-wide settings.
    pub mesh: MeshSettings,
    /// Outbound services by `host:port`.
    pub outbound: BTreeMap<String, OutboundService>,
    /// Clusters by name.
    pub clusters: BTreeMap<String, Cluster>,
    /// Policy for requests this workload receives.
    pub inbound: InboundPolicy,
    /// Telemetry (metrics, tracing, access logs) per direction, from the
    /// Telemetry resources that select this workload and MeshConfig.
    pub telemetry: Arc<TelemetryPolicy>,
    /// What a gateway workload serves (its Gateways' servers and routes);
    /// `None` for mesh workloads.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gateway: Option<Arc<GatewayModel>>,
}

impl Model {
    /// The outbound service for `host:port`.
    pub fn outbound_for(&self, host: &str, port: u16) -> Option<&OutboundService> {
        self.outbound.get(&format!("{host}:{port}"))
    }

    /// The outbound service a request from this model's client for
    /// `host:port` reaches: the first of [`crate::host::candidates`] (the
    /// name as written, its search-path expansion from the client's
    /// namespace, covering wildcards) that names one. `key` is a scratch
    /// buffer, so a caller that keeps one allocates nothing here.
    pub fn resolve_outbound(
        &self,
        host: &str,
        port: u16,
        key: &mut String,
    ) -> Option<&OutboundService> {
        self.resolve_key(host, key, |key| {
            push_port(key, port);
            self.outbound.get(key.as_str())
        })
    }

    /// The fully qualified host this model's client reaches by dialling
    /// `host` on any port: the first of [`crate::host::candidates`] that
    /// names an outbound service, as [`Model::resolve_outbound`] picks it
    /// for a port the service has.
    pub fn resolve_host(&self, host: &str) -> Option<&str> {
        use std::ops::Bound;
        self.resolve_key(host, &mut String::new(), |prefix| {
            self.outbound
                .range::<str, _>((Bound::Included(prefix.as_str()), Bound::Unbounded))
                .next()
                .filter(|(k, _)| k.starts_with(prefix.as_str()))
                .map(|(_, s)| s.host.as_str())
        })
    }

    /// Tries `found` on `<candidate>:` (lowercase, in `key`) for each of
    /// the [`crate::host::candidates`] of a `host` this client dials.
    fn resolve_key<T>(
        &self,
        host: &str,
        key: &mut String,
        mut found: impl FnMut(&mut String) -> Option<T>,
    ) -> Option<T> {
        crate::host::resolve(
            host,
            &self.client.namespace,
            &self.mesh.domain_suffix,
            |c| {
                key.clear();
                c.write_lowercase(key);
                key.push(':');
                found(key)
            },
        )
    }

    /// The ports of the outbound services for the fully qualified `host`.
    pub fn ports_of<'a>(&'a self, host: &'a str) -> impl Iterator<Item = u16> + 'a {
        self.outbound
            .values()
            .filter(move |s| s.host.eq_ignore_ascii_case(host))
            .map(|s| s.port)
    }

    /// The cluster for host, port and subset.
    pub fn cluster_for(&self, host: &str, port: u16, subset: Option<&str>) -> Option<&Cluster> {
        self.clusters.get(&cluster_name(host, port, subset))
    }
}

#[cfg(test)]
mod name_tests {
    use super::cluster_name;

    #[test]
    fn cluster_names_are_istios() {
        assert_eq!(
            cluster_name("reviews.default.svc.cluster.local", 9080, Some("v2")),
            "outbound|9080|v2|reviews.default.svc.cluster.local"
        );
        assert_eq!(cluster_name("a", 0, None), "outbound|0||a");
        assert_eq!(cluster_name("a", 7, None), "outbound|7||a");
        assert_eq!(cluster_name("a", 65535, Some("s")), "outbound|65535|s|a");
    }
}
