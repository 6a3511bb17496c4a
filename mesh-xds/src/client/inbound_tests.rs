//! The inbound policy through the inbound listeners: what an SDK server
//! fed by xDS enforces equals what a local compile gives, and listeners
//! without our metadata still tell the mTLS mode.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use envoy_types::pb::envoy::config::listener::v3::Listener;
use mesh_core::authz::{PolicySet, Request};
use mesh_core::config::mesh_config::{NormalizationType, ProxyPathNormalization};
use mesh_core::config::MeshConfig;
use mesh_core::model::{Client, Model, MtlsMode};

use crate::encode::{encode, EncodeOptions};
use crate::types::json_to_struct;

const YAML: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: api, namespace: shop}
spec:
  selector: {app: api}
  ports:
  - {name: http, port: 80, targetPort: 8080}
  - {name: grpc-api, port: 9090}
  - {name: tcp-db, port: 5432}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: istio-system}
spec: {mtls: {mode: STRICT}}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: shop}
spec: {mtls: {mode: PERMISSIVE}}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: api, namespace: shop}
spec:
  selector: {matchLabels: {app: api}}
  mtls: {mode: STRICT}
  portLevelMtls: {5432: {mode: DISABLE}}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow-reads, namespace: shop}
spec:
  selector: {matchLabels: {app: api}}
  action: ALLOW
  rules:
  - from: [{source: {principals: ["cluster.local/ns/shop/sa/web"], notIpBlocks: ["10.9.0.0/16"]}}]
    to: [{operation: {methods: [GET], paths: ["/items/*", "/admin"]}}]
  - from: [{source: {requestPrincipals: ["https://issuer.example/*"]}}]
    when: [{key: "request.auth.claims[groups]", values: [ops]}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-admin, namespace: shop}
spec:
  action: DENY
  rules: [{to: [{operation: {paths: ["/admin"]}}]}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: ext, namespace: shop}
spec:
  action: CUSTOM
  provider: {name: ext-authz}
  rules: [{to: [{operation: {paths: ["/items/secret"]}}]}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: audit, namespace: istio-system}
spec:
  action: AUDIT
  rules: [{to: [{operation: {methods: [DELETE]}}]}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: shadow
  namespace: shop
  annotations: {istio.io/dry-run: "true"}
spec:
  action: DENY
  rules: [{to: [{operation: {paths: ["/items/1"]}}]}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: other-app, namespace: shop}
spec:
  selector: {matchLabels: {app: other}}
  action: DENY
  rules: [{}]
---
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: jwt, namespace: shop}
spec:
  selector: {matchLabels: {app: api}}
  jwtRules:
  - issuer: https://issuer.example
    jwksUri: https://issuer.example/jwks
    audiences: [api]
    fromHeaders: [{name: x-token, prefix: "Bearer "}]
    fromParams: [token]
    outputPayloadToHeader: x-payload
    forwardOriginalToken: true
    timeout: 5s
"#;

fn client() -> Client {
    Client::new(
        "shop",
        [("app".to_string(), "api".to_string())]
            .into_iter()
            .collect(),
    )
}

fn compile(yaml: &str) -> Model {
    let r = mesh_core::config::load_str(yaml, "t.yaml");
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    let mesh = MeshConfig {
        path_normalization: Some(ProxyPathNormalization {
            normalization: NormalizationType::MergeSlashes,
        }),
        ..MeshConfig::default()
    };
    mesh_core::compile::compile(&r.resources, &mesh, &client())
}

/// What the client makes of `listeners`, starting from a model compiled
/// without any config (the SDK's base model).
fn decoded(listeners: &[Listener]) -> Model {
    let mut m = mesh_core::compile::compile(&[], &MeshConfig::default(), &client());
    super::inbound::apply(listeners.iter(), &mut m).unwrap();
    m
}

fn verdicts(set: &PolicySet) -> Vec<serde_json::Value> {
    let web = "spiffe://cluster.local/ns/shop/sa/web";
    let reqs = [
        Request::http("GET", "/items/1").with_principal(web),
        Request::http("GET", "//items//2").with_principal(web),
        Request::http("GET", "/admin").with_principal(web),
        Request::http("GET", "/items/secret").with_principal(web),
        Request::http("DELETE", "/items/1").with_principal(web),
        Request::http("GET", "/items/1"),
        Request::tcp(5432).with_principal(web),
    ];
    reqs.iter()
        .map(|r| serde_json::to_value(set.evaluate(r)).unwrap())
        .collect()
}

#[test]
fn inbound_policy_survives_encode_and_decode() {
    let local = compile(YAML);
    // The compile is what the test thinks it is.
    assert_eq!(
        local.inbound.authz_policies,
        [
            "istio-system/audit",
            "shop/allow-reads",
            "shop/deny-admin",
            "shop/ext",
            "shop/shadow"
        ]
    );
    assert_eq!(local.inbound.mtls.sources.len(), 3);
    assert_eq!(local.inbound.jwt.len(), 1);
    assert_eq!(local.inbound.ports.len(), 3);

    let res = encode(&local, &EncodeOptions::default());
    let model = decoded(&res.listeners);
    // The server normalizes paths as the control plane's mesh config says.
    assert_eq!(model.mesh, local.mesh);
    let got = model.inbound;
    assert_eq!(
        serde_json::to_value(&got).unwrap(),
        serde_json::to_value(&local.inbound).unwrap()
    );
    assert_eq!(got.mtls.mode_for(5432), MtlsMode::Disable);
    assert_eq!(got.mtls.mode_for(8080), MtlsMode::Strict);
    assert_eq!(got.jwt, local.inbound.jwt);
    // The policies themselves, not just their names, and how they decide.
    assert_eq!(
        got.authz.normalization(),
        local.inbound.authz.normalization()
    );
    for (g, l) in got
        .authz
        .policies()
        .iter()
        .zip(local.inbound.authz.policies())
    {
        assert_eq!(g.name, l.name);
        assert_eq!(g.action, l.action);
        assert_eq!(g.provider, l.provider);
        assert_eq!(g.dry_run, l.dry_run);
        assert_eq!(g.spec(), l.spec());
        assert_eq!(g.rule_count(), l.rule_count());
    }
    let want = verdicts(&local.inbound.authz);
    assert_eq!(verdicts(&got.authz), want);
    // Spot checks that the verdicts compared are the interesting ones.
    assert_eq!(want[2]["decision"], "DENY");
    assert_eq!(want[2]["policy"], "shop/deny-admin");
    assert_eq!(want[1]["decision"], "ALLOW");
    assert_eq!(want[3]["custom_provider"], "ext-authz");
    assert!(want[0]["dry_run"].is_object(), "{}", want[0]);
    assert_eq!(want[4]["audit"].as_array().map(Vec::len), Some(1));
    assert_eq!(want[5]["decision"], "DENY");
}

#[test]
fn removing_the_policies_reaches_the_client() {
    let mut base = compile(YAML);
    let open = compile(
        "apiVersion: v1\nkind: Service\nmetadata: {name: api, namespace: shop}\nspec:\n  selector: {app: api}\n  ports: [{name: http, port: 80, targetPort: 8080}]\n",
    );
    super::inbound::apply(
        encode(&open, &EncodeOptions::default()).listeners.iter(),
        &mut base,
    )
    .unwrap();
    assert!(base.inbound.authz.policies().is_empty());
    assert!(base.inbound.authz_policies.is_empty());
    assert!(base.inbound.jwt.is_empty());
    assert_eq!(base.inbound.mtls.mode, MtlsMode::Permissive);
}

/// Policies a stock gRPC server can evaluate exactly: templates with
/// notPaths, principals written with `spiffe://`, namespace wildcards,
/// hosts in another case, ip blocks, ports, header conditions, dry-run.
const EXACT: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: api, namespace: shop}
spec:
  selector: {app: api}
  ports:
  - {name: grpc, port: 9090}
  - {name: tcp-db, port: 5432}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-cart, namespace: shop}
spec:
  action: DENY
  rules:
  - to: [{operation: {ports: ["9090"], paths: ["/shop.Cart/{*}"], notPaths: ["/shop.Cart/Get"]}}]
  - from: [{source: {notNamespaces: ["prod-*", "shop"]}}]
    to: [{operation: {ports: ["5432"]}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: dry
  namespace: shop
  annotations: {istio.io/dry-run: "true"}
spec:
  action: DENY
  rules: [{}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow, namespace: shop}
spec:
  rules:
  - from: [{source: {principals: ["spiffe://cluster.local/ns/shop/sa/web"]}}]
  - from: [{source: {namespaces: ["prod-*"], notIpBlocks: ["10.9.0.0/16"]}}]
    to: [{operation: {hosts: ["API.shop.svc.cluster.local:*"], methods: ["POST"]}}]
    when: [{key: "request.headers[x-env]", notValues: ["test*"]}]
  - to: [{operation: {ports: ["5432"]}}]
"#;

/// Requests over the policies' corners, HTTP on 9090 and TCP on 5432.
fn corpus() -> Vec<Request> {
    let mut out = Vec::new();
    let peers = [
        None,
        Some("spiffe://cluster.local/ns/shop/sa/web"),
        Some("cluster.local/ns/prod-eu/sa/job"),
        Some("spiffe://cluster.local/ns/dev/sa/x"),
    ];
    for peer in peers {
        for path in [
            "/shop.Cart/Add",
            "/shop.Cart/Get",
            "/shop.Cart/a/b",
            "/other/x",
        ] {
            for (host, env, ip) in [
                ("api.shop.svc.cluster.local:9090", None, "10.1.0.1"),
                (
                    "api.shop.svc.cluster.local:9090",
                    Some("test-1"),
                    "10.1.0.1",
                ),
                ("api.shop.svc.cluster.local:9090", Some("prod"), "10.9.0.1"),
                ("other:9090", None, "10.1.0.1"),
            ] {
                let mut r = Request::http("POST", path);
                r.port = 9090;
                r.host = host.to_string();
                r.source_ip = ip.parse().ok();
                r.source_principal = peer.map(str::to_string);
                if let Some(v) = env {
                    r = r.with_header("x-env", v);
                }
                out.push(r);
            }
        }
        let mut tcp = Request::tcp(5432);
        tcp.source_principal = peer.map(str::to_string);
        out.push(tcp);
    }
    out
}

fn stripped(model: &Model) -> Vec<Listener> {
    let mut res = encode(model, &EncodeOptions::default());
    for l in &mut res.listeners {
        l.metadata = None;
    }
    res.listeners
}

/// A base model with the same mesh config (so paths normalize alike).
fn decoded_like(local: &Model, listeners: &[Listener]) -> Model {
    let mut m = local.clone();
    m.inbound = mesh_core::compile::compile(&[], &MeshConfig::default(), &client()).inbound;
    super::inbound::apply(listeners.iter(), &mut m).unwrap();
    m
}

fn allowed(set: &PolicySet, r: &Request) -> bool {
    let c = set.check(r);
    c.verdict == mesh_core::authz::Verdict::Allow && c.custom_provider.is_none()
}

#[test]
fn listeners_without_our_metadata_enforce_their_rbac_filters() {
    let local = compile(EXACT);
    let got = decoded_like(&local, &stripped(&local)).inbound;
    assert!(
        got.authz.policies().is_empty(),
        "decided by RBAC, not specs"
    );
    assert!(got.authz.rbac().is_some());
    let reqs = corpus();
    let (mut allows, mut denies) = (0, 0);
    for r in &reqs {
        let want = allowed(&local.inbound.authz, r);
        assert_eq!(
            allowed(&got.authz, r),
            want,
            "{r:?}\n{:#?}",
            got.authz.evaluate(r)
        );
        if want {
            allows += 1;
        } else {
            denies += 1;
        }
    }
    // The corpus exercises both outcomes, on both protocols.
    assert!(
        allows >= 10 && denies >= 10,
        "{allows} allowed, {denies} denied"
    );
    let tcp_web = reqs
        .iter()
        .find(|r| {
            r.port == 5432
                && r.source_principal.as_deref() == Some("spiffe://cluster.local/ns/shop/sa/web")
        })
        .unwrap();
    assert!(allowed(&got.authz, tcp_web), "shop is in notNamespaces");
    let tcp_allowed = reqs
        .iter()
        .filter(|r| r.protocol == mesh_core::authz::Protocol::Tcp && allowed(&got.authz, r))
        .count();
    assert_eq!(
        tcp_allowed, 2,
        "the shop and prod-* peers reach the TCP port; plaintext and dev are denied"
    );
    // The explanation names the RBAC policy and the listener.
    let d = got.authz.evaluate(&reqs[0]);
    assert!(d.reason.contains("shop-deny-cart-0"), "{}", d.reason);
    assert!(
        d.reason.contains("xds.istio.io/grpc/lds/inbound/"),
        "{}",
        d.reason
    );
}

#[test]
fn what_rbac_cannot_carry_fails_closed_without_our_metadata() {
    // YAML has an ALLOW rule on JWT claims and a CUSTOM policy: a stock
    // server cannot evaluate either, so without our metadata the SDK never
    // allows more than the engine, and denies what they would have
    // allowed.
    let local = compile(YAML);
    let got = decoded_like(&local, &stripped(&local)).inbound;
    let web = "spiffe://cluster.local/ns/shop/sa/web";
    let mut jwt = Request::http("POST", "/x");
    jwt.port = 8080;
    jwt.request_principal = Some("https://issuer.example/u".into());
    jwt.claims = serde_json::json!({"groups": ["ops"]});
    let reqs = [
        Request::http("GET", "/items/1").with_principal(web),
        Request::http("GET", "/admin").with_principal(web),
        Request::http("GET", "/items/secret").with_principal(web),
        Request::http("GET", "/items/1"),
        jwt.clone(),
    ];
    for r in &reqs {
        let mut r = r.clone();
        r.port = 8080;
        assert!(
            allowed(&local.inbound.authz, &r) || !allowed(&got.authz, &r),
            "the stripped listener allowed what the engine denies: {r:?}"
        );
    }
    let at = |i: usize| {
        let mut r = reqs[i].clone();
        r.port = 8080;
        (allowed(&local.inbound.authz, &r), allowed(&got.authz, &r))
    };
    assert_eq!(at(0), (true, true));
    assert_eq!(at(1), (false, false));
    assert!(!at(2).1, "CUSTOM enforced as DENY");
    assert_eq!(at(4), (true, false), "the JWT ALLOW rule is dropped");
}

#[test]
fn a_listener_the_sdk_cannot_understand_denies_its_port() {
    use envoy_types::pb::envoy::config::listener::v3::filter::ConfigType as Cfg;
    use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::HttpConnectionManager;
    let local = compile(EXACT);
    let mut listeners = stripped(&local);
    let l = listeners
        .iter_mut()
        .find(|l| l.name == "xds.istio.io/grpc/lds/inbound/0.0.0.0:9090")
        .unwrap();
    let Some(Cfg::TypedConfig(a)) = &l.filter_chains[0].filters[0].config_type else {
        panic!("no HCM")
    };
    let mut hcm: HttpConnectionManager = crate::types::unany(a).unwrap();
    // An unknown, non-optional HTTP filter before the router.
    let mut unknown = hcm.http_filters[0].clone();
    unknown.name = "example.filters.http.mystery".into();
    if let Some(envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::http_filter::ConfigType::TypedConfig(t)) = &mut unknown.config_type {
        t.type_url = "type.googleapis.com/example.Mystery".into();
    }
    hcm.http_filters.insert(0, unknown);
    l.filter_chains[0].filters[0].config_type = Some(Cfg::TypedConfig(crate::types::any(&hcm)));
    let got = decoded_like(&local, &listeners).inbound;
    let mut r =
        Request::http("POST", "/other/x").with_principal("spiffe://cluster.local/ns/shop/sa/web");
    r.port = 9090;
    assert!(allowed(&local.inbound.authz, &r));
    let d = got.authz.evaluate(&r);
    assert_eq!(d.decision, mesh_core::authz::Verdict::Deny);
    assert!(d.reason.contains("mystery"), "{}", d.reason);
    // The other port keeps its own, understood, filters.
    let mut tcp = Request::tcp(5432);
    tcp.source_principal = Some("spiffe://cluster.local/ns/prod-1/sa/x".into());
    assert!(allowed(&local.inbound.authz, &tcp));
    assert!(allowed(&got.authz, &tcp), "{:#?}", got.authz.evaluate(&tcp));
}

#[test]
fn a_policy_that_does_not_decode_is_refused() {
    let local = compile(YAML);
    let mut res = encode(&local, &EncodeOptions::default());
    let l = res
        .listeners
        .iter_mut()
        .find(|l| l.api_listener.is_none())
        .unwrap();
    let mut md = crate::decode::mesh_md(l.metadata.as_ref()).unwrap();
    md["inbound"]["authz"]["policies"][0]["name"] = "no-namespace".into();
    l.metadata
        .as_mut()
        .unwrap()
        .filter_metadata
        .insert("mesh".into(), json_to_struct(&md));
    let bad = l.clone();
    let err = super::validate::listeners(vec![bad.clone()]).unwrap_err();
    assert!(err.contains("no-namespace"), "{err}");
    let mut m = compile("");
    assert!(super::inbound::apply(std::iter::once(&bad), &mut m).is_err());
}
