//! Compiles a VirtualService's `tls` rules into the SNI routes of a
//! gateway's PASSTHROUGH server: `match.sniHosts` (kept where they overlap
//! the server's hosts) to weighted TCP destinations.
//!
//! Minimal on purpose: `destinationSubnets` blocks are dropped (the
//! gateway routes by SNI only), and sidecar TLS routing (mesh clients) is
//! not compiled here.

use crate::config::common::selector_matches;
use crate::config::networking::virtual_service::TlsMatchAttributes;
use crate::host::{fqdn, host_matches};
use crate::model::gateway::{TcpDestination, TlsRoute};
use crate::model::Client;

use super::compile::{gateways_apply, VsRef};

/// The TLS routes of `v` for `client` on a listener port `port`, keeping
/// the SNI hosts `overlaps` accepts (those that intersect the server's
/// hosts). Rules without a remaining block are dropped.
pub fn compile_tls_routes(
    v: VsRef<'_>,
    client: &Client,
    port: u16,
    domain_suffix: &str,
    overlaps: impl Fn(&str) -> bool,
) -> Vec<TlsRoute> {
    let mut out = Vec::new();
    for (i, rule) in v.spec.tls.iter().enumerate() {
        let mut sni_hosts: Vec<String> = Vec::new();
        for m in &rule.matches {
            if !tls_block_applies(m, v, client, port) {
                continue;
            }
            for h in &m.sni_hosts {
                let h = h.to_ascii_lowercase();
                if overlaps(&h) && !sni_hosts.contains(&h) {
                    sni_hosts.push(h);
                }
            }
        }
        if sni_hosts.is_empty() {
            continue;
        }
        let lone = rule.route.len() == 1;
        let destinations = rule
            .route
            .iter()
            .map(|d| TcpDestination {
                host: fqdn(&d.destination.host, v.namespace, domain_suffix),
                subset: d.destination.subset.clone(),
                port: d
                    .destination
                    .port
                    .and_then(|p| u16::try_from(p.number).ok())
                    .filter(|p| *p != 0),
                weight: if lone {
                    100
                } else {
                    d.weight.max(0).unsigned_abs()
                },
            })
            .collect();
        out.push(TlsRoute {
            virtual_service: v.key(),
            rule_index: i,
            sni_hosts,
            destinations,
        });
    }
    out
}

/// True when a TLS match block applies to the client on `port`.
fn tls_block_applies(m: &TlsMatchAttributes, v: VsRef<'_>, client: &Client, port: u16) -> bool {
    let gateways = if m.gateways.is_empty() {
        &v.spec.gateways
    } else {
        &m.gateways
    };
    m.destination_subnets.is_empty()
        && gateways_apply(gateways, v.namespace, client)
        && selector_matches(&m.source_labels, &client.labels)
        && m.source_namespace
            .as_ref()
            .is_none_or(|ns| *ns == client.namespace)
        && m.port.is_none_or(|p| p == u32::from(port))
}

/// True when two host patterns (each exact, `*.suffix` or `*`) can name
/// the same host.
pub fn hosts_overlap(a: &str, b: &str) -> bool {
    host_matches(a, b) || host_matches(b, a)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::networking::virtual_service::VirtualService;
    use serde_json::json;

    #[test]
    fn sni_rules_bound_to_the_gateway_compile_to_weighted_destinations() {
        let spec: VirtualService = serde_json::from_value(json!({
            "hosts": ["db.example.com", "web.example.com"],
            "gateways": ["istio-system/tls-gw"],
            "tls": [
                {"match": [{"sniHosts": ["DB.example.com"], "port": 443}],
                 "route": [{"destination": {"host": "db", "port": {"number": 5443}}, "weight": 20},
                           {"destination": {"host": "db-v2", "subset": "v2"}, "weight": 80}]},
                {"match": [{"sniHosts": ["web.example.com"], "port": 8443}],
                 "route": [{"destination": {"host": "web"}}]},
                {"match": [{"sniHosts": ["other.org"]}],
                 "route": [{"destination": {"host": "other"}}]},
                {"match": [{"sniHosts": ["db.example.com"], "gateways": ["mesh"]}],
                 "route": [{"destination": {"host": "mesh-only"}}]}
            ]
        }))
        .unwrap();
        let v = VsRef {
            namespace: "data",
            name: "db",
            spec: &spec,
        };
        let mut gw = Client::gateway("istio-system", Default::default());
        gw.gateways = vec!["istio-system/tls-gw".into()];
        let routes = compile_tls_routes(v, &gw, 443, "cluster.local", |h| {
            hosts_overlap("*.example.com", h)
        });
        assert_eq!(routes.len(), 1, "{routes:?}");
        let r = &routes[0];
        assert_eq!((r.virtual_service.as_str(), r.rule_index), ("data/db", 0));
        assert_eq!(r.sni_hosts, ["db.example.com"]);
        assert_eq!(r.destinations[0].host, "db.data.svc.cluster.local");
        assert_eq!(
            (r.destinations[0].port, r.destinations[0].weight),
            (Some(5443), 20)
        );
        assert_eq!(r.destinations[1].subset.as_deref(), Some("v2"));
        assert_eq!(
            (r.destinations[1].port, r.destinations[1].weight),
            (None, 80)
        );
        // Another gateway sees none of it.
        let mut other = gw.clone();
        other.gateways = vec!["istio-system/other".into()];
        assert!(compile_tls_routes(v, &other, 443, "cluster.local", |_| true).is_empty());
        // The 8443 rule applies on its own port, a lone destination at 100.
        let on_8443 = compile_tls_routes(v, &gw, 8443, "cluster.local", |_| true);
        assert_eq!(on_8443.len(), 2);
        assert_eq!(on_8443[0].destinations[0].weight, 100);
    }

    #[test]
    fn overlap_is_symmetric_over_wildcards() {
        assert!(hosts_overlap("*.example.com", "a.example.com"));
        assert!(hosts_overlap("a.example.com", "*.example.com"));
        assert!(hosts_overlap("*", "x"));
        assert!(!hosts_overlap("a.example.com", "b.example.com"));
    }
}
