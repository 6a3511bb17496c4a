//! Bookinfo as the xDS tests use it: the example's YAML plus
//! WorkloadEntries with localities and a kitchen sink of routing features,
//! compiled for a workload; and one extra service for updates.

use mesh_core::config::common::Labels;
use mesh_core::config::mesh_config::MeshConfig;
use mesh_core::config::Resource;
use mesh_core::model::{Client, Model};

/// Bookinfo from the repo plus endpoints (WorkloadEntries with localities).
pub const ENDPOINTS: &str = r#"
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: reviews-v1-a, namespace: bookinfo}
spec:
  address: 10.0.0.1
  labels: {app: reviews, version: v1}
  locality: us-east/us-east-1a
  serviceAccount: bookinfo-reviews
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: reviews-v1-b, namespace: bookinfo}
spec:
  address: 10.0.0.2
  labels: {app: reviews, version: v1}
  locality: us-west/us-west-1b
  serviceAccount: bookinfo-reviews
  weight: 3
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: reviews-v2, namespace: bookinfo}
spec:
  address: 10.0.0.3
  labels: {app: reviews, version: v2}
  locality: us-east/us-east-1a
  serviceAccount: bookinfo-reviews
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: ratings, namespace: bookinfo}
spec:
  address: 10.0.1.1
  labels: {app: ratings, version: v1}
  serviceAccount: bookinfo-ratings
"#;

/// Everything else a round trip should exercise.
pub const EXTRAS: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: echo, namespace: demo}
spec:
  selector: {app: echo}
  ports:
  - {name: grpc, port: 7070, appProtocol: grpc}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: echo-1, namespace: demo}
spec:
  address: 10.1.0.1
  labels: {app: echo, version: v1}
  locality: eu/eu-1/a
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: echo, namespace: demo}
spec:
  hosts: [echo]
  http:
  - name: faulty
    match:
    - uri: {prefix: /echo.Echo/Slow}
      headers:
        x-debug: {}
      withoutHeaders:
        x-skip: {exact: "1"}
      queryParams:
        q: {regex: "a.*"}
    - uri: {regex: "/echo\\..*"}
      ignoreUriCase: true
      method: {exact: POST}
    fault:
      delay: {fixedDelay: 2s, percentage: {value: 12.5}}
      abort: {grpcStatus: UNAVAILABLE, percentage: {value: 0.5}}
    rewrite: {uri: /v2/, authority: echo-v2}
    headers:
      request:
        set: {x-a: "1"}
        add: {x-b: "2"}
        remove: [x-c]
      response:
        remove: [x-d]
    mirror: {host: echo, subset: v1}
    mirrorPercentage: {value: 25}
    route:
    - destination: {host: echo, subset: v1}
      weight: 70
      headers:
        request:
          set: {x-subset: v1}
    - destination: {host: echo, subset: v2}
      weight: 30
    retries: {attempts: 4, perTryTimeout: 1s, retryOn: "5xx,unavailable,503", retryRemoteLocalities: true}
    timeout: 5s
  - name: moved
    match: [{uri: {exact: /old}}]
    redirect: {uri: /new, authority: other, redirectCode: 302}
  - name: teapot
    match: [{uri: {exact: /tea}}]
    directResponse: {status: 418, body: {string: short and stout}}
  - name: regex-rewrite
    match: [{uri: {prefix: /r/}}]
    rewrite:
      uriRegexRewrite: {match: "^/r/(.*)$", rewrite: "/\\1"}
    route:
    - destination: {host: echo, subset: v1}
    retries: {attempts: 0}
  - route:
    - destination: {host: echo, subset: v2}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: echo, namespace: demo}
spec:
  host: echo
  trafficPolicy:
    loadBalancer:
      consistentHash:
        httpHeaderName: x-user
        ringHash: {minimumRingSize: 1024}
    connectionPool:
      tcp: {maxConnections: 10, connectTimeout: 2s}
      http: {http1MaxPendingRequests: 5, http2MaxRequests: 50, maxRetries: 3, maxRequestsPerConnection: 7, idleTimeout: 30s}
    outlierDetection:
      consecutive5xxErrors: 5
      consecutiveGatewayErrors: 2
      interval: 10s
      baseEjectionTime: 30s
      maxEjectionPercent: 50
      minHealthPercent: 20
  subsets:
  - name: v1
    labels: {version: v1}
  - name: v2
    labels: {version: v2}
    trafficPolicy:
      loadBalancer: {simple: RANDOM}
      tls: {mode: DISABLE}
"#;

/// Loads YAML `(text, file name)` pairs; errors are left to the caller.
pub fn load(texts: &[(&str, &str)]) -> Vec<Resource> {
    let mut out = Vec::new();
    for (text, file) in texts {
        let r = mesh_core::config::load_str(text, file);
        out.extend(r.resources);
    }
    out
}

/// The bookinfo example's YAML plus [`ENDPOINTS`] and [`EXTRAS`], loaded.
pub fn bookinfo_resources() -> Vec<Resource> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/bookinfo");
    let mut texts = Vec::new();
    for f in [
        "services.yaml",
        "traffic.yaml",
        "security.yaml",
        "workloads.yaml",
    ] {
        texts.push((
            std::fs::read_to_string(format!("{dir}/{f}")).unwrap(),
            f.to_string(),
        ));
    }
    texts.push((ENDPOINTS.to_string(), "endpoints.yaml".to_string()));
    texts.push((EXTRAS.to_string(), "extras.yaml".to_string()));
    let refs: Vec<(&str, &str)> = texts
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    load(&refs)
}

/// Labels from pairs.
pub fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// `resources` compiled for a workload in `ns` with labels `l`.
pub fn model_for(resources: &[Resource], ns: &str, l: &[(&str, &str)]) -> Model {
    mesh_core::compile::compile(
        resources,
        &MeshConfig::default(),
        &Client::new(ns, labels(l)),
    )
}

/// The productpage workload's model (it calls reviews, details, ratings).
pub fn productpage() -> Model {
    model_for(&bookinfo_resources(), "bookinfo", PRODUCTPAGE)
}

/// The productpage workload's labels.
pub const PRODUCTPAGE: &[(&str, &str)] = &[("app", "productpage"), ("version", "v1")];

/// A ServiceEntry `books-{name}` for `{name}.books.example:8443` at
/// `address`: one more service, for an update a client must apply.
pub fn extra_service(name: &str, address: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: books-{name}, namespace: bookinfo}}
spec:
  hosts: [{name}.books.example]
  ports: [{{number: 8443, name: http, protocol: HTTP}}]
  resolution: STATIC
  endpoints: [{{address: {address}}}]
"
    )
}

/// The productpage model with extra services `(name, address)` (see
/// [`extra_service`]).
pub fn productpage_with(extra: &[(&str, &str)]) -> Model {
    let mut res = bookinfo_resources();
    for (name, address) in extra {
        res.extend(load(&[(&extra_service(name, address), "extra.yaml")]));
    }
    model_for(&res, "bookinfo", PRODUCTPAGE)
}

/// The productpage model with `backup.books.example` added: what an
/// update brings.
pub fn productpage_with_backup() -> Model {
    productpage_with(&[("backup", "10.7.0.1")])
}
