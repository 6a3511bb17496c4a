//! Compilation as a client sees it: registry from Services, ServiceEntries
//! and WorkloadEntries; visibility (exportTo, Sidecar); DestinationRule
//! lookup order and policy merging; PeerAuthentication inheritance; the
//! inbound policies selected for a workload.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test setup

use mesh_core::compile::{compile, Compiler};
use mesh_core::config::common::Labels;
use mesh_core::config::kube::Protocol;
use mesh_core::config::load::mesh_config_from_str;
use mesh_core::config::{load_str, MeshConfig, Resource};
use mesh_core::model::{Client, Model, MtlsMode, OutboundPolicy};
use mesh_core::registry::{Resolution, TlsMode};

fn resources(yaml: &str) -> Vec<Resource> {
    let r = load_str(yaml, "test.yaml");
    assert!(r.is_ok(), "{:#?}", r.errors);
    r.resources
}

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn model(yaml: &str, ns: &str, l: &[(&str, &str)]) -> Model {
    compile(
        &resources(yaml),
        &MeshConfig::default(),
        &Client::new(ns, labels(l)),
    )
}

const REVIEWS: &str = "
apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: shop}
spec:
  selector: {app: reviews}
  ports:
  - {name: http-web, port: 9080, targetPort: 8080}
  - {name: grpc-api, port: 9090}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: reviews-1, namespace: shop}
spec:
  address: 127.0.0.1
  labels: {app: reviews, version: v1}
  serviceAccount: reviews
  locality: us-east/a
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: reviews-2, namespace: shop}
spec:
  address: 127.0.0.2
  ports: {http-web: 18080}
  labels: {app: reviews, version: v2}
  weight: 3
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: other, namespace: shop}
spec:
  address: 127.0.0.9
  labels: {app: ratings}
";

#[test]
fn kubernetes_services_get_workload_entry_endpoints() {
    let m = model(REVIEWS, "shop", &[]);
    let http = m
        .outbound_for("reviews.shop.svc.cluster.local", 9080)
        .expect("reviews:9080");
    assert_eq!(http.protocol, Protocol::Http);
    let grpc = m
        .outbound_for("reviews.shop.svc.cluster.local", 9090)
        .expect("reviews:9090");
    assert_eq!(grpc.protocol, Protocol::Grpc);
    let c = m
        .cluster_for("reviews.shop.svc.cluster.local", 9080, None)
        .expect("default cluster");
    assert_eq!(c.name, "outbound|9080||reviews.shop.svc.cluster.local");
    let eps: Vec<(&str, u16, u32)> = c
        .endpoints
        .iter()
        .map(|e| (e.address.as_str(), e.port, e.weight))
        .collect();
    // targetPort 8080 by default, the entry's own port mapping by name wins.
    assert_eq!(eps, vec![("127.0.0.1", 8080, 1), ("127.0.0.2", 18080, 3)]);
    assert!(c.endpoints.iter().all(|e| e.tls_mode == TlsMode::Istio));
    assert_eq!(
        c.endpoints[0].identity.as_deref(),
        Some("spiffe://cluster.local/ns/shop/sa/reviews")
    );
    assert_eq!(c.endpoints[0].locality.as_deref(), Some("us-east/a"));
}

#[test]
fn subsets_filter_endpoints_and_merge_policies() {
    let yaml = format!(
        "{REVIEWS}---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: reviews, namespace: shop}}
spec:
  host: reviews
  trafficPolicy:
    loadBalancer: {{simple: ROUND_ROBIN}}
    outlierDetection: {{consecutive5xxErrors: 5}}
    portLevelSettings:
    - port: {{number: 9090}}
      loadBalancer: {{simple: RANDOM}}
  subsets:
  - name: v1
    labels: {{version: v1}}
  - name: v2
    labels: {{version: v2}}
    trafficPolicy:
      outlierDetection: {{consecutive5xxErrors: 1}}
"
    );
    let m = model(&yaml, "shop", &[]);
    let host = "reviews.shop.svc.cluster.local";
    let v1 = m.cluster_for(host, 9080, Some("v1")).expect("v1");
    let v2 = m.cluster_for(host, 9080, Some("v2")).expect("v2");
    assert_eq!(v1.endpoints.len(), 1);
    assert_eq!(v1.endpoints[0].address, "127.0.0.1");
    assert_eq!(v2.endpoints[0].address, "127.0.0.2");
    let od = |c: &mesh_core::model::Cluster| {
        c.policy
            .outlier_detection
            .as_ref()
            .and_then(|o| o.consecutive_5xx_errors)
    };
    assert_eq!(od(v1), Some(5), "v1 inherits the top-level policy");
    assert_eq!(od(v2), Some(1), "v2's own policy wins");
    assert_eq!(v2.policy.destination_rule.as_deref(), Some("shop/reviews"));
    let lb = |c: &mesh_core::model::Cluster| {
        serde_json::to_value(&c.policy.load_balancer).unwrap()["simple"].clone()
    };
    assert_eq!(lb(v1), "ROUND_ROBIN");
    assert_eq!(lb(m.cluster_for(host, 9090, Some("v1")).unwrap()), "RANDOM");
}

#[test]
fn destination_rule_lookup_prefers_client_then_service_then_root_namespace() {
    let dr = |ns: &str, lb: &str| {
        format!(
            "---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: reviews-{ns}, namespace: {ns}}}
spec:
  host: reviews.shop.svc.cluster.local
  trafficPolicy:
    loadBalancer: {{simple: {lb}}}
"
        )
    };
    let all = format!(
        "{REVIEWS}{}{}{}",
        dr("istio-system", "RANDOM"),
        dr("shop", "ROUND_ROBIN"),
        dr("web", "LEAST_REQUEST")
    );
    let chosen = |yaml: &str, ns: &str| {
        let m = model(yaml, ns, &[]);
        m.cluster_for("reviews.shop.svc.cluster.local", 9080, None)
            .and_then(|c| c.policy.destination_rule.clone())
    };
    assert_eq!(chosen(&all, "web").as_deref(), Some("web/reviews-web"));
    assert_eq!(chosen(&all, "shop").as_deref(), Some("shop/reviews-shop"));
    assert_eq!(chosen(&all, "other").as_deref(), Some("shop/reviews-shop"));
    let root_only = format!("{REVIEWS}{}", dr("istio-system", "RANDOM"));
    assert_eq!(
        chosen(&root_only, "other").as_deref(),
        Some("istio-system/reviews-istio-system")
    );
}

#[test]
fn destination_rule_with_workload_selector_applies_only_to_matching_clients() {
    let yaml = format!(
        "{REVIEWS}---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: for-canary, namespace: web}}
spec:
  host: reviews.shop.svc.cluster.local
  workloadSelector:
    matchLabels: {{track: canary}}
  exportTo: [.]
  trafficPolicy:
    loadBalancer: {{simple: RANDOM}}
"
    );
    let dr_of = |l: &[(&str, &str)]| {
        model(&yaml, "web", l)
            .cluster_for("reviews.shop.svc.cluster.local", 9080, None)
            .and_then(|c| c.policy.destination_rule.clone())
    };
    assert_eq!(
        dr_of(&[("track", "canary")]).as_deref(),
        Some("web/for-canary")
    );
    assert_eq!(dr_of(&[("track", "stable")]), None);
}

#[test]
fn export_to_and_sidecar_limit_what_a_client_sees() {
    let yaml = format!(
        "{REVIEWS}---
apiVersion: v1
kind: Service
metadata:
  name: internal
  namespace: shop
  annotations: {{networking.istio.io/exportTo: .}}
spec:
  selector: {{app: internal}}
  ports: [{{name: http, port: 80}}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: ext, namespace: shop}}
spec:
  hosts: [api.example.com]
  location: MESH_EXTERNAL
  resolution: DNS
  ports: [{{number: 443, name: tls, protocol: TLS}}]
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {{name: default, namespace: locked}}
spec:
  egress:
  - hosts: [shop/reviews.shop.svc.cluster.local]
  outboundTrafficPolicy: {{mode: REGISTRY_ONLY}}
"
    );
    let hosts = |ns: &str| -> Vec<String> {
        model(&yaml, ns, &[])
            .outbound
            .keys()
            .map(|k| k.to_string())
            .collect()
    };
    let in_shop = hosts("shop");
    assert!(in_shop.contains(&"internal.shop.svc.cluster.local:80".to_string()));
    assert!(in_shop.contains(&"api.example.com:443".to_string()));
    let elsewhere = hosts("web");
    assert!(
        !elsewhere.iter().any(|h| h.starts_with("internal.")),
        "{elsewhere:?}"
    );
    assert!(elsewhere.contains(&"api.example.com:443".to_string()));
    let locked = model(&yaml, "locked", &[]);
    let locked_hosts: Vec<&String> = locked.outbound.keys().collect();
    assert_eq!(
        locked_hosts,
        vec![
            "reviews.shop.svc.cluster.local:9080",
            "reviews.shop.svc.cluster.local:9090"
        ]
    );
    assert_eq!(locked.mesh.outbound_policy, OutboundPolicy::RegistryOnly);
    assert_eq!(
        model(&yaml, "web", &[]).mesh.outbound_policy,
        OutboundPolicy::AllowAny
    );
    let ext = locked_or(&yaml);
    assert_eq!(ext.0, Resolution::Dns);
    assert_eq!(ext.1, TlsMode::Disabled);
}

fn locked_or(yaml: &str) -> (Resolution, TlsMode) {
    let c = Compiler::new(resources(yaml), MeshConfig::default());
    let svc = c
        .registry()
        .services_named("api.example.com")
        .next()
        .expect("service entry");
    let tls = svc
        .endpoints
        .first()
        .map(|e| e.tls_mode)
        .unwrap_or(TlsMode::Disabled);
    (svc.resolution, tls)
}

#[test]
fn mesh_config_registry_only_applies_to_every_client() {
    let mesh = mesh_config_from_str(
        "outboundTrafficPolicy: {mode: REGISTRY_ONLY}\n",
        "mesh.yaml",
    )
    .expect("mesh config");
    let m = compile(
        &resources(REVIEWS),
        &mesh,
        &Client::new("shop", Labels::new()),
    );
    assert_eq!(m.mesh.outbound_policy, OutboundPolicy::RegistryOnly);
}

/// DNS becomes Envoy's STRICT_DNS and DNS_ROUND_ROBIN its LOGICAL_DNS,
/// both refreshed at MeshConfig's `dnsRefreshRate` with the TTL respected;
/// STATIC clusters carry no refresh.
#[test]
fn dns_resolutions_keep_their_kind_and_refresh_rate() {
    let yaml = "
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: strict, namespace: shop}
spec:
  hosts: [api.external.test]
  location: MESH_EXTERNAL
  ports: [{number: 80, name: http, protocol: HTTP}]
  resolution: DNS
  endpoints: [{address: a.external.test}, {address: b.external.test}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: logical, namespace: shop}
spec:
  hosts: [rr.external.test]
  location: MESH_EXTERNAL
  ports: [{number: 80, name: http, protocol: HTTP}]
  resolution: DNS_ROUND_ROBIN
";
    let mesh = mesh_config_from_str("dnsRefreshRate: 7s\n", "mesh.yaml").expect("mesh config");
    let all = [resources(yaml), resources(REVIEWS)].concat();
    let m = compile(&all, &mesh, &Client::new("shop", Labels::new()));
    let strict = &m.clusters["outbound|80||api.external.test"];
    assert_eq!(strict.resolution, Resolution::Dns);
    let refresh = strict.dns.expect("DNS clusters carry their refresh");
    assert_eq!(
        refresh.rate.map(|d| d.get()),
        Some(std::time::Duration::from_secs(7))
    );
    assert!(refresh.respect_ttl);
    let logical = &m.clusters["outbound|80||rr.external.test"];
    assert_eq!(logical.resolution, Resolution::DnsRoundRobin);
    assert_eq!(logical.dns, strict.dns);
    let reviews = &m.clusters["outbound|9080||reviews.shop.svc.cluster.local"];
    assert_eq!(reviews.dns, None);
    let unset = compile(
        &all,
        &MeshConfig::default(),
        &Client::new("shop", Labels::new()),
    );
    let refresh = unset.clusters["outbound|80||api.external.test"]
        .dns
        .expect("refresh");
    assert_eq!(refresh.rate, None, "unset: Envoy's default applies");
}

#[test]
fn virtual_service_routes_are_compiled_per_service_port() {
    let yaml = format!(
        "{REVIEWS}---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: reviews, namespace: shop}}
spec:
  hosts: [reviews]
  http:
  - match:
    - port: 9090
    route:
    - destination: {{host: reviews, subset: v2}}
  - route:
    - destination: {{host: reviews, subset: v1}}
"
    );
    let m = model(&yaml, "shop", &[]);
    let routes = |port| {
        let out = m
            .outbound_for("reviews.shop.svc.cluster.local", port)
            .expect("service port");
        out.routes
            .routes
            .iter()
            .map(|r| r.rule_index)
            .collect::<Vec<_>>()
    };
    assert_eq!(routes(9090), vec![Some(0), Some(1)]);
    assert_eq!(
        routes(9080),
        vec![Some(1)],
        "the port-9090 rule is dropped on 9080"
    );
}

const PEER_AUTHN: &str = "
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: istio-system}
spec:
  mtls: {mode: STRICT}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: legacy}
spec:
  mtls: {mode: PERMISSIVE}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: db, namespace: legacy}
spec:
  selector: {matchLabels: {app: db}}
  mtls: {mode: UNSET}
  portLevelMtls:
    5432: {mode: DISABLE}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: ns-ports, namespace: other}
spec:
  mtls: {mode: DISABLE}
";

#[test]
fn peer_authentication_inheritance() {
    let mode = |ns: &str, l: &[(&str, &str)]| model(PEER_AUTHN, ns, l).inbound.mtls;
    assert_eq!(mode("shop", &[]).mode, MtlsMode::Strict, "mesh-wide STRICT");
    assert_eq!(
        mode("legacy", &[]).mode,
        MtlsMode::Permissive,
        "namespace overrides mesh"
    );
    let db = mode("legacy", &[("app", "db")]);
    assert_eq!(
        db.mode,
        MtlsMode::Permissive,
        "UNSET inherits the namespace mode"
    );
    assert_eq!(db.mode_for(5432), MtlsMode::Disable);
    assert_eq!(db.mode_for(8080), MtlsMode::Permissive);
    assert_eq!(
        db.sources,
        vec!["istio-system/default", "legacy/default", "legacy/db"]
    );
    assert_eq!(mode("other", &[]).mode, MtlsMode::Disable);
    let none = compile(
        &[],
        &MeshConfig::default(),
        &Client::new("x", Labels::new()),
    );
    assert_eq!(
        none.inbound.mtls.mode,
        MtlsMode::Permissive,
        "Istio's default"
    );
}

#[test]
fn inbound_policies_selected_for_the_workload() {
    let yaml = format!(
        "{REVIEWS}---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: mesh-deny, namespace: istio-system}}
spec:
  action: DENY
  rules:
  - to: [{{operation: {{paths: [/debug*]}}}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: reviews-allow, namespace: shop}}
spec:
  selector: {{matchLabels: {{app: reviews}}}}
  rules: [{{from: [{{source: {{namespaces: [web]}}}}]}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: ratings-allow, namespace: shop}}
spec:
  selector: {{matchLabels: {{app: ratings}}}}
  rules: [{{}}]
---
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {{name: jwt, namespace: shop}}
spec:
  selector: {{matchLabels: {{app: reviews}}}}
  jwtRules:
  - issuer: https://issuer.example.com
    jwksUri: https://issuer.example.com/jwks.json
"
    );
    let m = model(&yaml, "shop", &[("app", "reviews"), ("version", "v1")]);
    assert_eq!(
        m.inbound.authz_policies,
        vec!["istio-system/mesh-deny", "shop/reviews-allow"]
    );
    assert_eq!(m.inbound.jwt.len(), 1);
    assert_eq!(m.inbound.jwt[0].policy, "shop/jwt");
    assert_eq!(m.inbound.ports.get(&8080), Some(&Protocol::Http));
    assert_eq!(m.inbound.ports.get(&9090), Some(&Protocol::Grpc));
    let other = model(&yaml, "shop", &[("app", "ratings")]);
    assert!(other.inbound.jwt.is_empty());
    assert!(other.inbound.ports.is_empty());
}

#[test]
fn a_service_entry_inline_endpoint_is_served_by_the_workload_at_its_address() {
    // No workloadSelector: istiod finds the serving proxy by its IP; so do
    // we, through the client's addresses (INSTANCE_IPS). The endpoint's
    // port for the port name is the workload port.
    let yaml = "
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: legacy, namespace: shop}
spec:
  hosts: [legacy.shop.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 7070, name: grpc, protocol: GRPC}]
  endpoints:
  - {address: 10.0.0.7, ports: {grpc: 9090}}
";
    let res = resources(yaml);
    let mut c = Client::new("shop", labels(&[("app", "legacy")]));
    let none = compile(&res, &MeshConfig::default(), &c);
    assert!(none.inbound.ports.is_empty(), "{:?}", none.inbound.ports);
    c.addresses = vec!["10.0.0.8".into()];
    assert!(compile(&res, &MeshConfig::default(), &c)
        .inbound
        .ports
        .is_empty());
    c.addresses = vec!["10.0.0.8".into(), "10.0.0.7".into()];
    let m = compile(&res, &MeshConfig::default(), &c);
    assert_eq!(
        m.inbound.ports.into_iter().collect::<Vec<_>>(),
        [(9090, Protocol::Grpc)]
    );
}
