//! The SDK fed by xDS: a real ADS server (mesh-xds) serving snapshots
//! compiled from YAML, two hyper backends on loopback, and `Mesh::xds`
//! routing requests by what the control plane sends; the model it builds
//! equals the one `Mesh::local` compiles from the same YAML for the same
//! workload, its inbound policy (mTLS, AuthorizationPolicies,
//! RequestAuthentications, port protocols) included.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test setup

use std::time::Duration;

use http_body_util::BodyExt;
use mesh_core::model::{Client, Model};
use mesh_test_support::backends::named as backend;
use mesh_test_support::configs::versioned_service;
use mesh_test_support::sdk::{self, ads_server};
use mesh_tower::source::SourceError;
use mesh_tower::{body, Mesh, MeshClient};
use mesh_xds::client::XdsClientError;
use mesh_xds::server::SnapshotCache;

/// Reviews with two subsets on the two backends, all traffic to `subset`.
fn config(v1: u16, v2: u16, subset: &str) -> String {
    format!(
        "{}apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: reviews, namespace: default}}
spec:
  host: reviews
  trafficPolicy:
    loadBalancer: {{simple: ROUND_ROBIN}}
    outlierDetection: {{consecutive5xxErrors: 3, interval: 5s, baseEjectionTime: 30s}}
  subsets:
  - {{name: v1, labels: {{version: v1}}}}
  - {{name: v2, labels: {{version: v2}}}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: reviews, namespace: default}}
spec:
  hosts: [reviews]
  http:
  - name: pinned
    match: [{{headers: {{x-pin: {{exact: v2}}}}}}]
    route: [{{destination: {{host: reviews, subset: v2}}}}]
  - name: main
    route: [{{destination: {{host: reviews, subset: {subset}}}}}]
    retries: {{attempts: 2, retryOn: connect-failure}}
    timeout: 3s
{INBOUND}",
        versioned_service("reviews", "http", 9080, &[("v1", v1), ("v2", v2)])
    )
}

/// The calling workload's own inbound side, bookinfo's productpage style:
/// a Service selecting it (so it has inbound listeners), its own mTLS mode,
/// who may call it, and the JWTs it accepts.
const INBOUND: &str = "---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: default}
spec:
  selector: {app: web}
  ports: [{name: http, port: 9080, targetPort: 8080}, {name: grpc-admin, port: 9090}]
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: web, namespace: default}
spec:
  selector: {matchLabels: {app: web}}
  mtls: {mode: STRICT}
  portLevelMtls: {9090: {mode: PERMISSIVE}}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: web-viewer, namespace: default}
spec:
  selector: {matchLabels: {app: web}}
  action: ALLOW
  rules:
  - from: [{source: {principals: [cluster.local/ns/istio-system/sa/istio-ingressgateway]}}]
    to: [{operation: {methods: [GET]}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: no-admin, namespace: default}
spec:
  selector: {matchLabels: {app: web}}
  action: DENY
  rules: [{to: [{operation: {paths: [/admin*]}}]}]
---
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: web-jwt, namespace: default}
spec:
  selector: {matchLabels: {app: web}}
  jwtRules:
  - issuer: testing@secure.istio.io
    jwksUri: https://raw.githubusercontent.com/istio/istio/release-1.24/security/tools/jwt/samples/jwks.json
    forwardOriginalToken: true
";

/// The workload calling reviews.
fn workload() -> Client {
    sdk::workload(Some("web"))
}

fn publish(cache: &SnapshotCache, yaml: &str) {
    sdk::publish(cache, yaml, &workload());
}

async fn get(client: &MeshClient, pin: Option<&str>) -> (u16, String) {
    let mut req = http::Request::get("http://reviews:9080/reviews/1");
    if let Some(p) = pin {
        req = req.header("x-pin", p);
    }
    let resp = client
        .request(req.body(body::empty()).unwrap())
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

fn json(m: &Model) -> serde_json::Value {
    serde_json::to_value(m).unwrap()
}

/// The whole model is the same, inbound included: the JSON covers all but
/// the compiled AuthorizationPolicies, compared here by what they were
/// compiled from.
fn assert_same_model(xds: &Model, local: &Model) {
    assert_eq!(json(xds), json(local));
    let specs = |m: &Model| {
        m.inbound
            .authz
            .policies()
            .iter()
            .map(|p| (p.name.clone(), p.action, p.dry_run, p.spec().clone()))
            .collect::<Vec<_>>()
    };
    assert_eq!(specs(xds), specs(local));
    assert_eq!(
        xds.inbound.authz.normalization(),
        local.inbound.authz.normalization()
    );
}

/// `Mesh::local` over `yaml` for the same workload.
async fn local_model(yaml: &str) -> std::sync::Arc<Model> {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("mesh.yaml"), yaml).unwrap();
    let w = workload();
    let mesh = Mesh::local(dir.path())
        .namespace(w.namespace.clone())
        .labels(w.labels.clone())
        .service_account("web")
        .build()
        .await
        .unwrap();
    mesh.current()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn xds_fed_mesh_routes_like_local_mode_and_follows_updates() {
    routes_and_follows(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_over_delta_xds() {
    routes_and_follows(true).await;
}

async fn routes_and_follows(delta: bool) {
    let v1 = backend("v1").await;
    let v2 = backend("v2").await;
    let yaml_v1 = config(v1.port(), v2.port(), "v1");
    let yaml_v2 = config(v1.port(), v2.port(), "v2");
    let cache = SnapshotCache::new();
    publish(&cache, &yaml_v1);
    let url = ads_server(cache.clone()).await;

    let w = workload();
    let mesh = Mesh::xds([url.clone()])
        .namespace("default")
        .labels(w.labels.clone())
        .service_account("web")
        .xds_tuning(move |c| c.delta = delta)
        .build()
        .await
        .unwrap();
    let client = mesh.http_client();
    for _ in 0..20 {
        assert_eq!(get(&client, None).await, (200, "v1".to_string()));
    }
    assert_eq!(get(&client, Some("v2")).await, (200, "v2".to_string()));
    assert_eq!(
        mesh.xds_status().unwrap().connected.as_deref(),
        Some(url.as_str())
    );

    // The same YAML and workload give the same model in both modes,
    // including what the workload's own server enforces.
    let local = local_model(&yaml_v1).await;
    assert_eq!(
        local.inbound.authz_policies,
        ["default/no-admin", "default/web-viewer"]
    );
    assert_eq!(local.inbound.jwt.len(), 1);
    assert_eq!(local.inbound.mtls.sources, ["default/web"]);
    assert_same_model(&mesh.current(), &local);

    // The control plane moves all traffic to v2: the next requests follow.
    let mut rx = mesh.model();
    rx.borrow_and_update();
    publish(&cache, &yaml_v2);
    tokio::time::timeout(Duration::from_secs(10), rx.changed())
        .await
        .unwrap()
        .unwrap();
    for _ in 0..20 {
        assert_eq!(get(&client, None).await, (200, "v2".to_string()));
    }
    assert_same_model(&mesh.current(), &*local_model(&yaml_v2).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn build_serves_the_cache_without_a_control_plane_or_names_the_server() {
    let v1 = backend("v1").await;
    let yaml = config(v1.port(), v1.port(), "v1");
    let cache = SnapshotCache::new();
    publish(&cache, &yaml);
    let url = ads_server(cache).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("xds.pb");
    let fast = |c: &mut mesh_xds::client::XdsClientConfig| {
        c.backoff_base = Duration::from_millis(50);
        c.backoff_max = Duration::from_millis(100);
    };

    let first = Mesh::xds([url])
        .namespace("default")
        .labels(workload().labels)
        .service_account("web")
        .xds_cache_file(&file)
        .xds_tuning(fast)
        .build()
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !file.exists() {
        assert!(tokio::time::Instant::now() < deadline, "no cache written");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(first);

    // Nothing listens here: the cached config serves, and requests work.
    let dead = format!(
        "http://{}",
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
    );
    let mesh = Mesh::xds([dead.clone()])
        .namespace("default")
        .labels(workload().labels)
        .service_account("web")
        .xds_cache_file(&file)
        .xds_tuning(fast)
        .build()
        .await
        .unwrap();
    assert!(mesh.xds_status().unwrap().serving_cache);
    assert_eq!(
        get(&mesh.http_client(), None).await,
        (200, "v1".to_string())
    );

    // No cache and no server: build fails in time, naming the server.
    let err = Mesh::xds([dead.clone()])
        .namespace("default")
        .xds_ready_timeout(Duration::from_millis(500))
        .xds_tuning(fast)
        .build()
        .await
        .err()
        .unwrap();
    assert!(
        matches!(err, SourceError::Xds(XdsClientError::Timeout { .. })),
        "{err}"
    );
    assert!(err.to_string().contains(&dead), "{err}");
}
