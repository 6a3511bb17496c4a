//! End-to-end tests through the YAML loader for the kinds of this slice
//! (Kubernetes kinds, PeerAuthentication, RequestAuthentication, Telemetry):
//! real YAML in, typed specs out, errors pointing at file lines.

use crate::config::kube::Protocol;
use crate::config::load_str;
use crate::config::security::peer_authentication::MtlsMode;

const BOOKINFO: &str = r#"
apiVersion: v1
kind: Service
metadata:
  name: reviews
  namespace: bookinfo
spec:
  selector:
    app: reviews
  sessionAffinity: None
  ports:
  - name: http
    port: 9080
    targetPort: 9080
  - name: grpc-api
    port: 9090
    appProtocol: kubernetes.io/h2c
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: reviews-v1
  namespace: bookinfo
spec:
  replicas: 1
  selector:
    matchLabels:
      app: reviews
  template:
    metadata:
      labels:
        app: reviews
        version: v1
    spec:
      serviceAccountName: bookinfo-reviews
      securityContext:
        runAsUser: 1337
      containers:
      - name: reviews
        image: docker.io/istio/examples-bookinfo-reviews-v1:1.20.2
        imagePullPolicy: IfNotPresent
        ports:
        - containerPort: 9080
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata:
  name: reviews
  namespace: bookinfo
spec:
  selector:
    matchLabels:
      app: reviews
  mtls:
    mode: STRICT
  portLevelMtls:
    9080:
      mode: PERMISSIVE
---
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata:
  name: jwt
  namespace: bookinfo
spec:
  jwtRules:
  - issuer: "testing@secure.istio.io"
    jwksUri: "https://example.com/jwks.json"
    outputClaimToHeaders:
    - header: x-jwt-claim-foo
      claim: foo
---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata:
  name: mesh-default
  namespace: istio-system
spec:
  tracing:
  - randomSamplingPercentage: 10.00
  accessLogging:
  - providers:
    - name: envoy
"#;

#[test]
fn bookinfo_slice_loads() {
    let r = load_str(BOOKINFO, "bookinfo.yaml");
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    assert_eq!(r.resources.len(), 5);
    let svc = r.resources[0].service().unwrap();
    assert_eq!(svc.ports[0].mesh_protocol(), Protocol::Http);
    assert_eq!(svc.ports[1].mesh_protocol(), Protocol::Http2);
    let dep = r.resources[1].controller().unwrap();
    assert_eq!(dep.service_account(), "bookinfo-reviews");
    let bad = dep.pod_spec().containers_running_as(1337);
    assert_eq!(bad.len(), 1);
    let path = format!(
        "{}.{}",
        crate::config::kube::ControllerSpec::POD_SPEC_PATH,
        bad[0].path
    );
    assert_eq!(path, "spec.template.spec.securityContext.runAsUser");
    assert_eq!(r.resources[1].origin.line_of(&path), 37);
    let pa = r.resources[2].peer_authentication().unwrap();
    assert_eq!(pa.mode_for_port(9080), MtlsMode::Permissive);
    assert_eq!(pa.mode_for_port(9090), MtlsMode::Strict);
    let ra = r.resources[3].request_authentication().unwrap();
    assert_eq!(ra.jwt_rules[0].output_claim_to_headers[0].claim, "foo");
    let t = r.resources[4].telemetry().unwrap();
    assert_eq!(t.tracing[0].random_sampling_percentage, Some(10.0));
}

#[test]
fn errors_point_at_fields_and_lines() {
    let yaml = r#"
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata:
  name: default
spec:
  portLevelMtls:
    8080:
      mode: DISABLE
---
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata:
  name: jwt
spec:
  jwtRules:
  - jwksUri: https://example.com/jwks.json
    fromHeaders:
    - prefix: "Bearer "
---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata:
  name: t
spec:
  tracing:
  - randomSamplingPercentage: 150
    sampling: 3
"#;
    let r = load_str(yaml, "bad.yaml");
    let got: Vec<(Option<String>, Option<usize>)> =
        r.errors.iter().map(|e| (e.field.clone(), e.line)).collect();
    assert_eq!(
        got,
        vec![
            (Some("spec.portLevelMtls".to_string()), Some(7)),
            (Some("spec.jwtRules[0].issuer".to_string()), Some(17)),
            (
                Some("spec.jwtRules[0].fromHeaders[0].name".to_string()),
                Some(19)
            ),
            (Some("spec.tracing[0].sampling".to_string()), Some(28)),
        ],
        "{:#?}",
        r.errors
    );
}
