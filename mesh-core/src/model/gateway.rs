//! The compiled Gateway servers of a gateway workload: per port, the
//! servers (hosts, TLS) and the routes they serve, as Envoy's listeners and
//! route configurations on an Istio ingress or egress gateway carry them.
//!
//! Lookups are pure functions the gateway listener calls per connection
//! and per request: [`GatewayPort::server_for_sni`] (which server a TLS
//! ClientHello reaches), [`GatewayRoutes::virtual_host`] (which routes a
//! request's `Host` reaches, else 404 NR) and [`TlsRoute`] matching by
//! SNI. Not here: sockets and certificates (mesh-tower's `gateway` room).

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use serde::Serialize;

use crate::config::kube::Protocol;
use crate::host::host_matches;
use crate::route::RouteTable;

/// Everything a gateway workload serves.
#[derive(Debug, Clone, Default, Serialize)]
pub struct GatewayModel {
    /// The Gateways (`namespace/name`) whose selector selects the workload,
    /// sorted.
    pub gateways: Vec<String>,
    /// Served ports by number.
    pub ports: BTreeMap<u16, GatewayPort>,
    /// HTTP route configurations by name (Istio's `http.<port>` and
    /// `https.<port>.<port name>.<gateway>.<namespace>`).
    pub routes: BTreeMap<String, Arc<GatewayRoutes>>,
    /// Servers that are not served, each with why and how to fix it.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<GatewayServerError>,
}

impl GatewayModel {
    /// The route configuration named `name`.
    pub fn routes(&self, name: &str) -> Option<&Arc<GatewayRoutes>> {
        self.routes.get(name)
    }
}

/// One listening port.
#[derive(Debug, Clone, Serialize)]
pub struct GatewayPort {
    /// The port number the Gateway names.
    pub number: u16,
    /// Plain HTTP (one route configuration for every server) or TLS (the
    /// ClientHello's SNI picks the server).
    pub kind: PortKind,
    /// The servers on the port, in Gateway (`namespace/name`) then
    /// declaration order.
    pub servers: Vec<GatewayServer>,
    /// The route configuration of a plain HTTP port (`http.<port>`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_routes: Option<String>,
}

/// What a port speaks first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum PortKind {
    /// Plaintext HTTP/1.1 and h2c (HTTP, HTTP2, GRPC servers).
    Http,
    /// A TLS ClientHello (HTTPS and TLS servers).
    Tls,
}

impl GatewayPort {
    /// The server a TLS connection with `sni` reaches: a server host equal
    /// to the SNI beats a wildcard, a longer wildcard a shorter one, and
    /// among equals the first server. Without SNI only a server with the
    /// host `*` matches (Envoy's filter chain without server names).
    pub fn server_for_sni(&self, sni: Option<&str>) -> Option<&GatewayServer> {
        let mut best: Option<(usize, &GatewayServer)> = None;
        for s in &self.servers {
            let rank = match sni {
                Some(sni) => s.hosts.iter().filter_map(|h| h.rank(sni)).max(),
                None => s.hosts.iter().any(|h| h.host == "*").then_some(1),
            };
            if let Some(r) = rank {
                if best.is_none_or(|(b, _)| r > b) {
                    best = Some((r, s));
                }
            }
        }
        best.map(|(_, s)| s)
    }
}

/// One Gateway server as served.
#[derive(Debug, Clone, Serialize)]
pub struct GatewayServer {
    /// The Gateway (`namespace/name`).
    pub gateway: String,
    /// Index of the server in the Gateway's `servers`.
    pub index: usize,
    /// The port's name.
    pub port_name: String,
    /// The port's protocol.
    pub protocol: Protocol,
    /// Hosts served.
    pub hosts: Vec<ServerHost>,
    /// TLS settings (HTTPS and TLS servers).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<ServerTls>,
    /// Plain HTTP requests get a 301 to `https` (`tls.httpsRedirect`).
    pub https_redirect: bool,
    /// The route configuration of a terminating HTTPS server.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_routes: Option<String>,
    /// The TLS routes of a PASSTHROUGH server, in match order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tls_routes: Vec<TlsRoute>,
}

impl GatewayServer {
    /// `namespace/name` and the server index, for logs and errors.
    pub fn label(&self) -> String {
        format!(
            "{} servers[{}] (port {})",
            self.gateway, self.index, self.port_name
        )
    }

    /// True when TLS is passed through to the destination untouched.
    pub fn is_passthrough(&self) -> bool {
        self.tls
            .as_ref()
            .is_some_and(|t| t.mode == ServerTlsMode::Passthrough)
    }

    /// The TLS route a connection with `sni` takes: an SNI host equal to
    /// it beats a wildcard, a longer wildcard a shorter one, and among
    /// equals the first route.
    pub fn tls_route(&self, sni: &str) -> Option<&TlsRoute> {
        let mut best: Option<(usize, &TlsRoute)> = None;
        for r in &self.tls_routes {
            if let Some(rank) = r.sni_hosts.iter().filter_map(|h| rank(h, sni)).max() {
                if best.is_none_or(|(b, _)| rank > b) {
                    best = Some((rank, r));
                }
            }
        }
        best.map(|(_, r)| r)
    }
}

/// A server host with its namespace rule (`ns/host`, `./host`, `*/host`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServerHost {
    /// The namespace whose VirtualServices may bind to it; `None` for any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// The host (lowercase; `*`, `*.suffix` or exact).
    pub host: String,
}

impl ServerHost {
    /// Parses `[namespace/]host` as written in a Gateway in `gateway_ns`.
    pub fn parse(written: &str, gateway_ns: &str) -> Self {
        let (ns, host) = match written.split_once('/') {
            Some((ns, h)) => (ns, h),
            None => ("*", written),
        };
        let namespace = match ns {
            "*" => None,
            "." => Some(gateway_ns.to_string()),
            other => Some(other.to_string()),
        };
        ServerHost {
            namespace,
            host: host.to_ascii_lowercase(),
        }
    }

    /// True when a VirtualService in `namespace` may bind to this host.
    pub fn admits_namespace(&self, namespace: &str) -> bool {
        self.namespace.as_deref().is_none_or(|n| n == namespace)
    }

    /// How specifically this host matches the concrete `name` (higher is
    /// more specific), `None` when it does not.
    pub fn rank(&self, name: &str) -> Option<usize> {
        rank(&self.host, name)
    }
}

/// How specifically `pattern` matches the concrete `name`: an exact match
/// ranks above every wildcard, a longer wildcard above a shorter one.
fn rank(pattern: &str, name: &str) -> Option<usize> {
    if !host_matches(pattern, name) {
        return None;
    }
    Some(if pattern.starts_with('*') {
        pattern.len()
    } else {
        usize::MAX
    })
}

/// The TLS a server terminates (or passes through).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServerTls {
    /// How TLS is handled.
    pub mode: ServerTlsMode,
    /// PEM certificate chain file (SIMPLE, MUTUAL).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_certificate: Option<String>,
    /// PEM private key file (SIMPLE, MUTUAL).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub private_key: Option<String>,
    /// PEM CA bundle verifying client certificates (MUTUAL).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_certificates: Option<String>,
    /// Lowest TLS version accepted (`None`: TLS 1.2).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_version: Option<TlsVersion>,
    /// Highest TLS version accepted (`None`: TLS 1.3).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_version: Option<TlsVersion>,
}

/// The TLS modes a gateway serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ServerTlsMode {
    /// Forward the TLS bytes untouched, routed by SNI.
    Passthrough,
    /// Terminate with the server certificate.
    Simple,
    /// Terminate and require a client certificate signed by the CA bundle.
    Mutual,
    /// Terminate and verify a client certificate when one is sent.
    OptionalMutual,
    /// Terminate with the workload's mesh certificate; clients need one.
    IstioMutual,
}

/// TLS versions the gateway can serve.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub enum TlsVersion {
    /// TLS 1.2.
    #[serde(rename = "TLSV1_2")]
    V1_2,
    /// TLS 1.3.
    #[serde(rename = "TLSV1_3")]
    V1_3,
}

/// An HTTP route configuration: virtual hosts by domain.
#[derive(Debug, Clone, Default, Serialize)]
pub struct GatewayRoutes {
    /// Istio's name for it.
    pub name: String,
    /// The virtual hosts, one per domain.
    pub virtual_hosts: Vec<VirtualHost>,
}

impl GatewayRoutes {
    /// The virtual host a request for `host` (no port) reaches, as Envoy
    /// picks it: an exact domain, else the longest wildcard suffix, else
    /// `*`. `None` is Envoy's 404 NR.
    pub fn virtual_host(&self, host: &str) -> Option<&VirtualHost> {
        let mut best: Option<(usize, &VirtualHost)> = None;
        for v in &self.virtual_hosts {
            if let Some(r) = rank(&v.domain, host) {
                if best.is_none_or(|(b, _)| r > b) {
                    best = Some((r, v));
                }
            }
        }
        best.map(|(_, v)| v)
    }
}

/// The routes of one domain on a gateway.
#[derive(Debug, Clone, Serialize)]
pub struct VirtualHost {
    /// The domain (`bookinfo.example.com`, `*.example.com`, `*`): the
    /// intersection of a server host and a VirtualService host.
    pub domain: String,
    /// Plain HTTP requests are redirected to HTTPS (Envoy's
    /// `require_tls: ALL`, from `tls.httpsRedirect`).
    pub https_redirect: bool,
    /// The routes (the http rules of every VirtualService for the domain,
    /// in `namespace/name` order).
    pub routes: Arc<RouteTable>,
}

/// One TLS (SNI) route of a PASSTHROUGH server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TlsRoute {
    /// The VirtualService (`namespace/name`).
    pub virtual_service: String,
    /// Index of the rule in its `tls` list.
    pub rule_index: usize,
    /// SNI hosts matched (lowercase; wildcards allowed).
    pub sni_hosts: Vec<String>,
    /// Weighted destinations.
    pub destinations: Vec<TcpDestination>,
}

impl TlsRoute {
    /// The destination for a random `r` (weighted; `None` when every
    /// weight is zero).
    pub fn pick(&self, r: u64) -> Option<&TcpDestination> {
        let total: u64 = self.destinations.iter().map(|d| u64::from(d.weight)).sum();
        if total == 0 {
            return None;
        }
        let mut at = r % total;
        for d in &self.destinations {
            let w = u64::from(d.weight);
            if at < w {
                return Some(d);
            }
            at -= w;
        }
        None
    }
}

/// A TCP destination: a service port and optional subset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TcpDestination {
    /// Fully qualified host.
    pub host: String,
    /// Subset, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subset: Option<String>,
    /// Service port (the destination's, else the service's only port).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// Relative weight.
    pub weight: u32,
}

/// A Gateway server that is not served, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GatewayServerError {
    /// The Gateway (`namespace/name`).
    pub gateway: String,
    /// Where it was read from (`file:line`).
    pub origin: String,
    /// The field at fault (`spec.servers[1].tls.credentialName`).
    pub field: String,
    /// Why, and what to do about it.
    pub reason: String,
}

impl fmt::Display for GatewayServerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Gateway {} ({}) {}: {}; this server is not served",
            self.gateway, self.origin, self.field, self.reason
        )
    }
}

impl std::error::Error for GatewayServerError {}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(hosts: &[&str]) -> GatewayServer {
        GatewayServer {
            gateway: "istio-system/gw".into(),
            index: 0,
            port_name: "https".into(),
            protocol: Protocol::Https,
            hosts: hosts
                .iter()
                .map(|h| ServerHost::parse(h, "istio-system"))
                .collect(),
            tls: None,
            https_redirect: false,
            http_routes: Some((*hosts.first().unwrap_or(&"")).to_string()),
            tls_routes: Vec::new(),
        }
    }

    #[test]
    fn sni_picks_the_most_specific_server() {
        let port = GatewayPort {
            number: 443,
            kind: PortKind::Tls,
            servers: vec![
                server(&["*"]),
                server(&["*.example.com"]),
                server(&["ns/a.example.com"]),
            ],
            http_routes: None,
        };
        let pick = |sni| port.server_for_sni(sni).and_then(|s| s.http_routes.clone());
        assert_eq!(
            pick(Some("a.example.com")).as_deref(),
            Some("ns/a.example.com")
        );
        assert_eq!(
            pick(Some("B.example.com")).as_deref(),
            Some("*.example.com")
        );
        assert_eq!(pick(Some("other.org")).as_deref(), Some("*"));
        assert_eq!(pick(None).as_deref(), Some("*"));
        let only_named = GatewayPort {
            servers: vec![server(&["a.example.com"])],
            ..port.clone()
        };
        assert!(only_named.server_for_sni(None).is_none());
        assert!(only_named.server_for_sni(Some("b.example.com")).is_none());
    }

    #[test]
    fn server_hosts_parse_namespace_rules() {
        let h = ServerHost::parse("./Foo.example.com", "istio-system");
        assert_eq!(h.namespace.as_deref(), Some("istio-system"));
        assert_eq!(h.host, "foo.example.com");
        assert!(h.admits_namespace("istio-system") && !h.admits_namespace("default"));
        let any = ServerHost::parse("*/foo.example.com", "istio-system");
        assert!(any.namespace.is_none() && any.admits_namespace("default"));
        let bare = ServerHost::parse("foo.example.com", "istio-system");
        assert_eq!(bare, any);
        let ns = ServerHost::parse("bookinfo/*", "istio-system");
        assert!(ns.admits_namespace("bookinfo") && !ns.admits_namespace("default"));
    }

    #[test]
    fn virtual_hosts_match_exact_then_longest_wildcard() {
        let vh = |d: &str| VirtualHost {
            domain: d.into(),
            https_redirect: false,
            routes: Arc::new(RouteTable::default()),
        };
        let routes = GatewayRoutes {
            name: "http.80".into(),
            virtual_hosts: vec![vh("*"), vh("*.example.com"), vh("a.example.com")],
        };
        let d = |h| routes.virtual_host(h).map(|v| v.domain.as_str());
        assert_eq!(d("a.example.com"), Some("a.example.com"));
        assert_eq!(d("A.EXAMPLE.com"), Some("a.example.com"));
        assert_eq!(d("b.example.com"), Some("*.example.com"));
        assert_eq!(d("example.com"), Some("*"));
        let narrow = GatewayRoutes {
            name: "http.80".into(),
            virtual_hosts: vec![vh("a.example.com")],
        };
        assert!(narrow.virtual_host("b.example.com").is_none());
    }

    #[test]
    fn tls_routes_pick_by_sni_and_weight() {
        let route = |vs: &str, sni: &[&str], dests: &[(&str, u32)]| TlsRoute {
            virtual_service: vs.into(),
            rule_index: 0,
            sni_hosts: sni.iter().map(|s| s.to_string()).collect(),
            destinations: dests
                .iter()
                .map(|(h, w)| TcpDestination {
                    host: h.to_string(),
                    subset: None,
                    port: Some(443),
                    weight: *w,
                })
                .collect(),
        };
        let mut s = server(&["*"]);
        s.tls_routes = vec![
            route("a/wild", &["*.example.com"], &[("w", 100)]),
            route("a/exact", &["db.example.com"], &[("x", 30), ("y", 70)]),
        ];
        assert_eq!(
            s.tls_route("db.example.com").unwrap().virtual_service,
            "a/exact"
        );
        assert_eq!(
            s.tls_route("web.example.com").unwrap().virtual_service,
            "a/wild"
        );
        assert!(s.tls_route("example.org").is_none());
        let r = s.tls_route("db.example.com").unwrap();
        assert_eq!(r.pick(0).unwrap().host, "x");
        assert_eq!(r.pick(29).unwrap().host, "x");
        assert_eq!(r.pick(30).unwrap().host, "y");
        assert_eq!(r.pick(99 + 100).unwrap().host, "y");
        let zero = route("a/z", &["*"], &[("z", 0)]);
        assert!(zero.pick(5).is_none());
    }
}
