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

#[test]
fn listeners_without_our_policy_give_the_mtls_mode_only() {
    let local = compile(YAML);
    let mut res = encode(&local, &EncodeOptions::default());
    for l in &mut res.listeners {
        l.metadata = None;
    }
    let got = decoded(&res.listeners).inbound;
    // Chains alone: STRICT everywhere but the plaintext-only port.
    assert_eq!(got.mtls.mode_for(8080), MtlsMode::Strict);
    assert_eq!(got.mtls.mode_for(5432), MtlsMode::Disable);
    assert!(got.mtls.sources.is_empty());
    assert!(got.authz.policies().is_empty());
    assert!(got.ports.is_empty());
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
