//! Encode -> wire bytes -> decode gives back what the SDK executes: routes
//! (matches, weights, retries, timeouts, faults, mirrors, header ops,
//! rewrites), cluster policies and endpoints.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use mesh_core::model::Model;
use mesh_test_support::bookinfo as common;
use mesh_xds::decode::decode;
use mesh_xds::encode::{encode, EncodeOptions, Resources};
use proptest::prelude::*;
use prost::Message;
use serde_json::Value;

/// Every resource through its protobuf bytes, as a client receives it.
fn wire(r: &Resources) -> Resources {
    fn rt<T: Message + Default>(v: &[T]) -> Vec<T> {
        v.iter()
            .map(|m| T::decode(m.encode_to_vec().as_slice()).unwrap())
            .collect()
    }
    Resources {
        listeners: rt(&r.listeners),
        routes: rt(&r.routes),
        clusters: rt(&r.clusters),
        endpoints: rt(&r.endpoints),
    }
}

/// Equivalent spellings made equal: a `/` prefix or a "present" path match
/// is no path condition (every path starts with `/`).
fn normalize(v: &mut Value) {
    match v {
        Value::Object(o) => {
            let catch_all = o
                .get("uri")
                .and_then(|u| u.get("matcher"))
                .is_some_and(|m| {
                    m == &serde_json::json!({"prefix": "/"}) || m == &serde_json::json!("present")
                });
            if catch_all {
                o.remove("uri");
            }
            o.values_mut().for_each(normalize);
        }
        Value::Array(a) => a.iter_mut().for_each(normalize),
        _ => {}
    }
}

fn json<T: serde::Serialize>(v: &T) -> Value {
    let mut v = serde_json::to_value(v).unwrap();
    normalize(&mut v);
    v
}

fn assert_round_trip(m: &Model) {
    let res = wire(&encode(m, &EncodeOptions::default()));
    let d = decode(&res).unwrap();
    assert_eq!(
        d.outbound.keys().collect::<Vec<_>>(),
        m.outbound.keys().collect::<Vec<_>>()
    );
    for (k, svc) in &m.outbound {
        let got = &d.outbound[k];
        assert_eq!(json(got), json(svc), "outbound {k}");
    }
    assert_eq!(
        d.clusters.keys().collect::<Vec<_>>(),
        m.clusters.keys().collect::<Vec<_>>()
    );
    for (k, c) in &m.clusters {
        assert_eq!(json(&d.clusters[k]), json(c), "cluster {k}");
    }
    // And the decoded model encodes to the same resources.
    let mut m2 = m.clone();
    d.apply_to(&mut m2);
    assert_eq!(
        encode(&m2, &EncodeOptions::default()),
        encode(m, &EncodeOptions::default())
    );
}

#[test]
fn bookinfo_round_trips() {
    let res = common::bookinfo_resources();
    for (ns, labels) in [
        ("bookinfo", vec![("app", "productpage"), ("version", "v1")]),
        ("bookinfo", vec![("app", "reviews"), ("version", "v2")]),
        ("demo", vec![("app", "client")]),
    ] {
        let m = common::model_for(&res, ns, &labels);
        assert!(!m.outbound.is_empty());
        assert_round_trip(&m);
    }
}

const BASE: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: svc, namespace: p}
spec:
  selector: {app: svc}
  ports:
  - {name: http, port: 8080}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: svc-1, namespace: p}
spec: {address: 10.9.0.1, labels: {app: svc, version: v0}, locality: r/z}
"#;

#[derive(Debug, Clone)]
struct Spec {
    weights: Vec<u32>,
    attempts: u32,
    per_try_ms: Option<u32>,
    retry_on: Vec<&'static str>,
    timeout_ms: Option<u32>,
    delay: Option<(u32, u32)>,
    abort: Option<(u16, u32)>,
    header: Option<(u8, String)>,
    uri: Option<(bool, String)>,
    mirror: Option<u32>,
    lb: u8,
    max_conn: Option<u32>,
    consecutive: Option<u32>,
}

fn spec() -> impl Strategy<Value = Spec> {
    let retry_names = prop::sample::subsequence(
        vec![
            "5xx",
            "gateway-error",
            "connect-failure",
            "reset",
            "unavailable",
            "cancelled",
            "503",
        ],
        0..4,
    );
    (
        (
            prop::collection::vec(1u32..100, 1..4),
            0u32..6,
            prop::option::of(1u32..5000),
            retry_names,
            prop::option::of(1u32..60_000),
            prop::option::of((1u32..3000, 0u32..=1000)),
            prop::option::of((400u16..600, 0u32..=1000)),
        ),
        (
            prop::option::of((0u8..3, "[a-z0-9]{1,8}")),
            prop::option::of((any::<bool>(), "/[a-z]{0,6}")),
            prop::option::of(0u32..=1000),
            0u8..5,
            prop::option::of(1u32..1000),
            prop::option::of(1u32..20),
        ),
    )
        .prop_map(|(a, b)| Spec {
            weights: a.0,
            attempts: a.1,
            per_try_ms: a.2,
            retry_on: a.3,
            timeout_ms: a.4,
            delay: a.5,
            abort: a.6,
            header: b.0,
            uri: b.1,
            mirror: b.2,
            lb: b.3,
            max_conn: b.4,
            consecutive: b.5,
        })
}

fn yaml(s: &Spec) -> String {
    let mut vs = String::from(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: svc, namespace: p}\nspec:\n  hosts: [svc]\n  http:\n  - name: r\n",
    );
    let mut m = Vec::new();
    if let Some((kind, v)) = &s.header {
        let k = ["exact", "prefix", "regex"][usize::from(*kind)];
        m.push(format!("headers: {{x-h: {{{k}: \"{v}\"}}}}"));
    }
    if let Some((exact, p)) = &s.uri {
        m.push(format!(
            "uri: {{{}: \"{p}\"}}",
            if *exact { "exact" } else { "prefix" }
        ));
    }
    if !m.is_empty() {
        vs += &format!("    match:\n    - {{{}}}\n", m.join(", "));
    }
    vs += "    route:\n";
    for (i, w) in s.weights.iter().enumerate() {
        vs += &format!("    - destination: {{host: svc, subset: v{i}}}\n      weight: {w}\n");
    }
    // attempts 0 disables retries, 5 leaves Istio's default policy.
    if s.attempts == 0 {
        vs += "    retries: {attempts: 0}\n";
    } else if s.attempts < 5 {
        vs += &format!("    retries: {{attempts: {}", s.attempts);
        if let Some(ms) = s.per_try_ms {
            vs += &format!(", perTryTimeout: {ms}ms");
        }
        if !s.retry_on.is_empty() {
            vs += &format!(", retryOn: \"{}\"", s.retry_on.join(","));
        }
        vs += "}\n";
    }
    if let Some(t) = s.timeout_ms {
        vs += &format!("    timeout: {t}ms\n");
    }
    if s.delay.is_some() || s.abort.is_some() {
        vs += "    fault:\n";
        if let Some((ms, p)) = s.delay {
            vs += &format!(
                "      delay: {{fixedDelay: {ms}ms, percentage: {{value: {}}}}}\n",
                f64::from(p) / 10.0
            );
        }
        if let Some((code, p)) = s.abort {
            vs += &format!(
                "      abort: {{httpStatus: {code}, percentage: {{value: {}}}}}\n",
                f64::from(p) / 10.0
            );
        }
    }
    if let Some(p) = s.mirror {
        vs += &format!(
            "    mirror: {{host: svc, subset: v0}}\n    mirrorPercentage: {{value: {}}}\n",
            f64::from(p) / 10.0
        );
    }
    let lb = match s.lb {
        0 => "{simple: ROUND_ROBIN}".to_string(),
        1 => "{simple: LEAST_REQUEST}".to_string(),
        2 => "{simple: RANDOM}".to_string(),
        3 => "{consistentHash: {httpHeaderName: x-user}}".to_string(),
        _ => "{consistentHash: {useSourceIp: true, maglev: {tableSize: 65537}}}".to_string(),
    };
    let mut dr = format!(
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: svc, namespace: p}}\nspec:\n  host: svc\n  trafficPolicy:\n    loadBalancer: {lb}\n"
    );
    if let Some(c) = s.max_conn {
        dr += &format!("    connectionPool: {{tcp: {{maxConnections: {c}}}, http: {{http2MaxRequests: {c}}}}}\n");
    }
    if let Some(c) = s.consecutive {
        dr += &format!("    outlierDetection: {{consecutive5xxErrors: {c}, interval: 5s, baseEjectionTime: 30s}}\n");
    }
    dr += "  subsets:\n";
    for i in 0..s.weights.len().max(1) {
        dr += &format!("  - {{name: v{i}, labels: {{version: v{i}}}}}\n");
    }
    format!("{BASE}---\n{vs}---\n{dr}")
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn generated_configs_round_trip(s in spec()) {
        let text = yaml(&s);
        let loaded = mesh_core::config::load_str(&text, "gen.yaml");
        prop_assert!(loaded.errors.is_empty(), "{:?}\n{text}", loaded.errors);
        let m = common::model_for(&loaded.resources, "p", &[("app", "client")]);
        prop_assert!(!m.outbound["svc.p.svc.cluster.local:8080"].routes.routes.is_empty());
        assert_round_trip(&m);
    }
}

const DNS_ENTRIES: &str = r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: strict, namespace: p}
spec:
  hosts: [api.external.test]
  location: MESH_EXTERNAL
  ports: [{number: 80, name: http, protocol: HTTP}]
  resolution: DNS
  endpoints: [{address: a.external.test}, {address: b.external.test}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: logical, namespace: p}
spec:
  hosts: [rr.external.test]
  location: MESH_EXTERNAL
  ports: [{number: 80, name: http, protocol: HTTP}]
  resolution: DNS_ROUND_ROBIN
  endpoints: [{address: rr.external.test}]
"#;

/// DNS and DNS_ROUND_ROBIN clusters keep their kind and refresh settings
/// through xDS, so the SDK refreshes them the same way in both modes.
#[test]
fn dns_clusters_round_trip() {
    use mesh_core::registry::Resolution;
    let loaded = mesh_core::config::load_str(DNS_ENTRIES, "dns.yaml");
    assert!(loaded.errors.is_empty(), "{:?}", loaded.errors);
    let mesh =
        mesh_core::config::load::mesh_config_from_str("dnsRefreshRate: 7s\n", "mesh.yaml").unwrap();
    let m = mesh_core::compile::compile(
        &loaded.resources,
        &mesh,
        &mesh_core::model::Client::new("p", Default::default()),
    );
    assert_round_trip(&m);
    let d = decode(&wire(&encode(&m, &EncodeOptions::default()))).unwrap();
    let strict = &d.clusters["outbound|80||api.external.test"];
    assert_eq!(strict.resolution, Resolution::Dns);
    assert_eq!(
        strict.dns.and_then(|r| r.rate).map(|r| r.get()),
        Some(std::time::Duration::from_secs(7))
    );
    let logical = &d.clusters["outbound|80||rr.external.test"];
    assert_eq!(logical.resolution, Resolution::DnsRoundRobin);
    assert!(logical.dns.is_some_and(|r| r.respect_ttl));
}

/// Another control plane's STRICT_DNS and LOGICAL_DNS clusters (no EDS:
/// their hosts are inline) decode to DNS clusters with their hosts as
/// endpoints and their refresh settings.
#[test]
// Istio still sends the deprecated `dns_refresh_rate`/`respect_dns_ttl`.
#[allow(deprecated)]
fn envoy_dns_clusters_decode() {
    use envoy_types::pb::envoy::config::cluster::v3::cluster::{
        ClusterDiscoveryType, DiscoveryType,
    };
    use envoy_types::pb::envoy::config::cluster::v3::Cluster;
    use envoy_types::pb::envoy::config::core::v3::{
        address, socket_address::PortSpecifier, Address, SocketAddress,
    };
    use envoy_types::pb::envoy::config::endpoint::v3::{
        lb_endpoint::HostIdentifier, ClusterLoadAssignment, Endpoint, LbEndpoint,
        LocalityLbEndpoints,
    };
    use mesh_core::registry::Resolution;
    let host = |name: &str| LbEndpoint {
        host_identifier: Some(HostIdentifier::Endpoint(Endpoint {
            address: Some(Address {
                address: Some(address::Address::SocketAddress(SocketAddress {
                    address: name.to_string(),
                    port_specifier: Some(PortSpecifier::PortValue(8080)),
                    ..Default::default()
                })),
            }),
            ..Default::default()
        })),
        ..Default::default()
    };
    let cluster = |name: &str, t: DiscoveryType, hosts: &[&str]| Cluster {
        name: name.to_string(),
        cluster_discovery_type: Some(ClusterDiscoveryType::Type(t as i32)),
        load_assignment: Some(ClusterLoadAssignment {
            cluster_name: name.to_string(),
            endpoints: vec![LocalityLbEndpoints {
                lb_endpoints: hosts.iter().map(|h| host(h)).collect(),
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    };
    let mut strict = cluster(
        "outbound|80||api.external.test",
        DiscoveryType::StrictDns,
        &["a.external.test", "b.external.test"],
    );
    strict.dns_refresh_rate = Some(envoy_types::pb::google::protobuf::Duration {
        seconds: 30,
        nanos: 0,
    });
    strict.respect_dns_ttl = true;
    let c = mesh_xds::decode::decode_cluster(&strict, None).unwrap();
    assert_eq!(c.resolution, Resolution::Dns);
    let names: Vec<&str> = c.endpoints.iter().map(|e| e.address.as_str()).collect();
    assert_eq!(names, ["a.external.test", "b.external.test"]);
    assert_eq!(c.endpoints[0].port, 8080);
    let dns = c.dns.unwrap();
    assert_eq!(
        dns.rate.map(|r| r.get()),
        Some(std::time::Duration::from_secs(30))
    );
    assert!(dns.respect_ttl);
    let logical = cluster(
        "outbound|80||rr.external.test",
        DiscoveryType::LogicalDns,
        &["rr.external.test"],
    );
    let c = mesh_xds::decode::decode_cluster(&logical, None).unwrap();
    assert_eq!(c.resolution, Resolution::DnsRoundRobin);
    assert_eq!(c.endpoints.len(), 1);
    let dns = c.dns.unwrap();
    assert_eq!(dns.rate, None, "unset: Envoy's default");
    assert!(!dns.respect_ttl);
}
