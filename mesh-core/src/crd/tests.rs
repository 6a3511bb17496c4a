//! The generated CRDs are structural, named as Istio names them, and
//! accept Istio's own samples (bookinfo and the docs' policies) while
//! rejecting what meshd would reject by shape.

use serde_json::{json, Value};

use super::*;
use crate::config::common::{Duration, DURATION_PATTERN};
use crate::config::load_str;
use crate::config::yaml::parse_documents;

/// Bookinfo's gateway, routes and destination rules (with subsets and a
/// traffic policy), a header-matched route with a fault, then the docs'
/// security and telemetry policies, and one of each remaining kind.
const SAMPLES: &str = r#"
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: bookinfo-gateway}
spec:
  selector:
    istio: ingressgateway
  servers:
  - port: {number: 8080, name: http, protocol: HTTP}
    hosts: ["*"]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: bookinfo}
spec:
  hosts: ["*"]
  gateways: [bookinfo-gateway]
  http:
  - match:
    - uri: {exact: /productpage}
    - uri: {prefix: /static}
    - uri: {exact: /login}
    - uri: {exact: /logout}
    - uri: {prefix: /api/v1/products}
    route:
    - destination:
        host: productpage
        port: {number: 9080}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - match:
    - headers:
        end-user: {exact: jason}
    route:
    - destination: {host: reviews, subset: v2}
  - route:
    - destination: {host: reviews, subset: v1}
      weight: 50
    - destination: {host: reviews, subset: v3}
      weight: 50
    timeout: 10s
    retries: {attempts: 3, perTryTimeout: 2s, retryOn: "5xx,connect-failure"}
---
apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata: {name: ratings}
spec:
  hosts: [ratings]
  http:
  - match:
    - headers:
        end-user: {exact: jason}
    fault:
      delay:
        percentage: {value: 100.0}
        fixedDelay: 7s
    route:
    - destination: {host: ratings, subset: v1}
  - route:
    - destination: {host: ratings, subset: v1}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews}
spec:
  host: reviews
  trafficPolicy:
    loadBalancer: {simple: LEAST_REQUEST}
    connectionPool:
      tcp: {maxConnections: 100, connectTimeout: 30ms}
      http: {http2MaxRequests: 1000, maxRequestsPerConnection: 10}
    outlierDetection:
      consecutive5xxErrors: 7
      interval: 5m
      baseEjectionTime: 15m
    tls: {mode: ISTIO_MUTUAL}
  subsets:
  - name: v1
    labels: {version: v1}
  - name: v2
    labels: {version: v2}
    trafficPolicy:
      loadBalancer: {simple: ROUND_ROBIN}
  - name: v3
    labels: {version: v3}
---
apiVersion: networking.istio.io/v1alpha3
kind: DestinationRule
metadata: {name: ratings}
spec:
  host: ratings
  subsets:
  - name: v1
    labels: {version: v1}
  - name: v2
    labels: {version: v2}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: external-svc-https}
spec:
  hosts: [api.dropboxapi.com, www.googleapis.com]
  location: MESH_EXTERNAL
  ports:
  - {number: 443, name: https, protocol: TLS}
  resolution: DNS
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: details-vm}
spec:
  address: 10.0.0.7
  ports: {http: 9080}
  labels: {app: details, version: vm}
  serviceAccount: details
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: default}
spec:
  egress:
  - hosts: ["./*", "istio-system/*"]
  outboundTrafficPolicy: {mode: REGISTRY_ONLY}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: ratings}
spec:
  selector:
    matchLabels: {app: ratings}
  mtls: {mode: STRICT}
  portLevelMtls:
    "9080": {mode: PERMISSIVE}
---
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: jwt-example}
spec:
  selector:
    matchLabels: {app: httpbin}
  jwtRules:
  - issuer: testing@secure.istio.io
    jwksUri: https://raw.githubusercontent.com/istio/istio/release-1.24/security/tools/jwt/samples/jwks.json
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: reviews-viewer}
spec:
  selector:
    matchLabels: {app: reviews}
  action: ALLOW
  rules:
  - from:
    - source:
        principals: ["cluster.local/ns/default/sa/bookinfo-productpage"]
        namespaces: [default]
    to:
    - operation:
        methods: [GET]
        paths: ["/reviews/*"]
    when:
    - key: request.auth.claims[iss]
      values: ["https://accounts.google.com"]
---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: mesh-default, namespace: istio-system}
spec:
  tracing:
  - providers: [{name: otel}]
    randomSamplingPercentage: 10.0
    customTags:
      team: {literal: {value: payments}}
  metrics:
  - providers: [{name: prometheus}]
    overrides:
    - match: {metric: REQUEST_COUNT, mode: CLIENT_AND_SERVER}
      tagOverrides:
        request_protocol: {operation: REMOVE}
  accessLogging:
  - providers: [{name: envoy}]
    filter:
      expression: response.code >= 400
"#;

/// Every schema node with `properties` closed with
/// `additionalProperties: false`, for tests only: Kubernetes prunes an
/// unknown field silently, so a field missing from the schema would be a
/// setting that silently vanishes. A closed schema makes it an error here.
fn closed(schema: &Value) -> Value {
    let mut s = schema.clone();
    fn close(n: &mut Value) {
        let Value::Object(o) = n else { return };
        if o.contains_key("properties") {
            o.insert("additionalProperties".into(), Value::Bool(false));
        }
        for (_, v) in o.iter_mut() {
            match v {
                Value::Object(_) => close(v),
                Value::Array(a) => a.iter_mut().for_each(close),
                _ => {}
            }
        }
        if let Some(Value::Object(props)) = o.get_mut("properties") {
            props.values_mut().for_each(close);
        }
    }
    close(&mut s);
    s
}

/// Schema validation errors of `spec` against the closed spec schema of
/// `kind` (Draft 4: OpenAPI v3's boolean `exclusiveMinimum`).
fn errors(kind: Kind, spec: &Value) -> Vec<String> {
    let schema = closed(&spec_schema(kind).unwrap_or_default());
    let validator = match jsonschema::draft4::new(&schema) {
        Ok(v) => v,
        Err(e) => return vec![format!("schema of {kind} does not compile: {e}")],
    };
    validator
        .iter_errors(spec)
        .map(|e| format!("{}: {e}", e.instance_path()))
        .collect()
}

fn samples() -> Vec<(Kind, Value)> {
    let (docs, err) = parse_documents(SAMPLES);
    assert!(err.is_none(), "{err:?}");
    docs.into_iter()
        .map(|d| {
            let v = d.value;
            let api_version = v["apiVersion"].as_str().unwrap_or_default();
            let kind = v["kind"].as_str().unwrap_or_default();
            let kind = Kind::resolve(api_version, kind).map(|(k, _)| k);
            assert!(kind.is_ok(), "{kind:?}");
            (kind.unwrap_or(Kind::Service), v["spec"].clone())
        })
        .collect()
}

#[test]
fn every_crd_schema_is_structural() {
    let crds = all();
    assert_eq!(crds.len(), KINDS.len());
    for (crd, kind) in crds.iter().zip(KINDS) {
        let versions = crd["spec"]["versions"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        assert_eq!(versions.len(), kind.group_versions().1.len(), "{kind}");
        for v in versions {
            let schema = &v["schema"]["openAPIV3Schema"];
            let problems = structural::check(schema);
            assert!(problems.is_empty(), "{kind} {}: {problems:#?}", v["name"]);
            // Nothing the model can say is left open: the only node that
            // keeps unknown fields is `status`.
            let mut open = Vec::new();
            preserved(schema, "", &mut open);
            assert_eq!(open, [".status"], "{kind}");
        }
    }
}

fn preserved(n: &Value, path: &str, out: &mut Vec<String>) {
    if n.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true)) {
        out.push(path.to_string());
    }
    if let Some(Value::Object(p)) = n.get("properties") {
        for (k, v) in p {
            preserved(v, &format!("{path}.{k}"), out);
        }
    }
    if let Some(i) = n.get("items") {
        preserved(i, &format!("{path}[]"), out);
    }
    if let Some(a) = n.get("additionalProperties") {
        preserved(a, &format!("{path}{{}}"), out);
    }
}

#[test]
fn crds_carry_istio_names_versions_and_status() {
    let vs = crd(Kind::VirtualService).unwrap_or_default();
    assert_eq!(
        vs["metadata"]["name"],
        "virtualservices.networking.istio.io"
    );
    assert_eq!(vs["spec"]["group"], "networking.istio.io");
    assert_eq!(vs["spec"]["scope"], "Namespaced");
    assert_eq!(
        vs["spec"]["names"],
        json!({
            "kind": "VirtualService",
            "listKind": "VirtualServiceList",
            "plural": "virtualservices",
            "singular": "virtualservice",
            "shortNames": ["vs"],
            "categories": ["istio-io", "networking-istio-io"],
        })
    );
    let versions: Vec<(String, bool)> = vs["spec"]["versions"]
        .as_array()
        .map(|vs| {
            vs.iter()
                .map(|v| {
                    (
                        v["name"].as_str().unwrap_or_default().to_string(),
                        v["storage"].as_bool().unwrap_or_default(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(
        versions,
        [
            ("v1".to_string(), true),
            ("v1beta1".to_string(), false),
            ("v1alpha3".to_string(), false)
        ]
    );
    for v in vs["spec"]["versions"].as_array().into_iter().flatten() {
        assert_eq!(v["served"], true);
        assert_eq!(v["subresources"], json!({"status": {}}));
    }
    let expect = [
        (
            Kind::DestinationRule,
            "destinationrules.networking.istio.io",
            Some("dr"),
        ),
        (Kind::Gateway, "gateways.networking.istio.io", Some("gw")),
        (
            Kind::ServiceEntry,
            "serviceentries.networking.istio.io",
            Some("se"),
        ),
        (
            Kind::WorkloadEntry,
            "workloadentries.networking.istio.io",
            Some("we"),
        ),
        (Kind::Sidecar, "sidecars.networking.istio.io", None),
        (
            Kind::PeerAuthentication,
            "peerauthentications.security.istio.io",
            Some("pa"),
        ),
        (
            Kind::RequestAuthentication,
            "requestauthentications.security.istio.io",
            Some("ra"),
        ),
        (
            Kind::AuthorizationPolicy,
            "authorizationpolicies.security.istio.io",
            Some("ap"),
        ),
        (
            Kind::Telemetry,
            "telemetries.telemetry.istio.io",
            Some("telemetry"),
        ),
    ];
    for (kind, name, short) in expect {
        let c = crd(kind).unwrap_or_default();
        assert_eq!(c["metadata"]["name"], name);
        assert_eq!(
            c["spec"]["names"]["shortNames"]
                .get(0)
                .and_then(Value::as_str),
            short
        );
        let storage: Vec<&Value> = c["spec"]["versions"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|v| v["storage"] == true)
            .map(|v| &v["name"])
            .collect();
        assert_eq!(storage, [&json!("v1")], "{kind}");
    }
    let ap = crd(Kind::AuthorizationPolicy).unwrap_or_default();
    assert_eq!(
        ap["spec"]["versions"][0]["additionalPrinterColumns"][0]["jsonPath"],
        ".spec.action"
    );
    assert!(crd(Kind::Service).is_none());
    assert!(names(Kind::Pod).is_none());
}

#[test]
fn istio_samples_validate_against_the_schemas() {
    // The samples are valid for meshd too, so the schema is held against
    // what the loader accepts, not against a guess.
    let loaded = load_str(SAMPLES, "samples.yaml");
    assert!(loaded.errors.is_empty(), "{:#?}", loaded.errors);
    let samples = samples();
    assert_eq!(loaded.resources.len(), samples.len());
    let mut kinds: Vec<Kind> = samples.iter().map(|(k, _)| *k).collect();
    kinds.dedup();
    assert_eq!(kinds.len(), KINDS.len(), "a sample of every kind");
    for (kind, spec) in &samples {
        let errs = errors(*kind, spec);
        assert!(errs.is_empty(), "{kind}: {errs:#?}\n{spec:#}");
    }
    // And what meshd writes back out (every field the model knows) too.
    for r in &loaded.resources {
        let spec = spec_json(r);
        let errs = errors(r.kind, &spec);
        assert!(errs.is_empty(), "{}: {errs:#?}\n{spec:#}", r.key());
    }
}

fn spec_json(r: &crate::config::Resource) -> Value {
    use crate::config::Spec;
    let v = match &r.spec {
        Spec::VirtualService(s) => serde_json::to_value(s),
        Spec::DestinationRule(s) => serde_json::to_value(s),
        Spec::Gateway(s) => serde_json::to_value(s),
        Spec::ServiceEntry(s) => serde_json::to_value(s),
        Spec::WorkloadEntry(s) => serde_json::to_value(s),
        Spec::Sidecar(s) => serde_json::to_value(s),
        Spec::PeerAuthentication(s) => serde_json::to_value(s),
        Spec::RequestAuthentication(s) => serde_json::to_value(s),
        Spec::AuthorizationPolicy(s) => serde_json::to_value(s),
        Spec::Telemetry(s) => serde_json::to_value(s),
        _ => Ok(Value::Null),
    };
    v.unwrap_or_default()
}

#[test]
fn schemas_reject_what_meshd_rejects_by_shape() {
    let bad = [
        (
            Kind::VirtualService,
            json!({"hosts": ["r"], "http": [{"timeout": "10 seconds"}]}),
            "/http/0/timeout",
        ),
        (Kind::VirtualService, json!({"hosts": "reviews"}), "/hosts"),
        (
            Kind::DestinationRule,
            json!({"host": "r", "trafficPolicy": {"loadBalancer": {"simple": "FASTEST"}}}),
            "/trafficPolicy/loadBalancer/simple",
        ),
        (
            Kind::PeerAuthentication,
            json!({"mtls": {"mode": "strict"}}),
            "/mtls/mode",
        ),
        (
            Kind::AuthorizationPolicy,
            json!({"rules": [{"to": [{"operation": {"method": ["GET"]}}]}]}),
            "/rules/0/to/0/operation",
        ),
    ];
    for (kind, spec, at) in bad {
        let errs = errors(kind, &spec);
        assert!(
            errs.iter().any(|e| e.starts_with(&format!("{at}: "))),
            "{kind} {spec}: expected an error at {at}, got {errs:#?}"
        );
        // meshd's loader rejects each of them as well.
        let doc = json!({
            "apiVersion": kind.current_api_version(),
            "kind": kind.name(),
            "metadata": {"name": "x"},
            "spec": spec,
        });
        let loaded = load_str(&doc.to_string(), "bad.json");
        assert!(!loaded.errors.is_empty(), "meshd accepts {doc}");
    }
}

#[test]
fn duration_pattern_agrees_with_the_parser() {
    let re = regex::Regex::new(DURATION_PATTERN);
    assert!(re.is_ok(), "{re:?}");
    let Ok(re) = re else { return };
    for s in [
        "5s", "250ms", "1h30m", "0", "+0", "0s", "1.5s", ".5s", "1.s", "10us", "3µs", "7ns",
        " 2m ", "5", "-1s", "1d", "s", "", "1.2.3s", "1s2", "00", "5 s", "1e3s", ".s",
    ] {
        let parsed = s.parse::<Duration>().is_ok();
        assert_eq!(re.is_match(s), parsed, "{s:?}: parser says {parsed}");
    }
}
