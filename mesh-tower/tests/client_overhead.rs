//! Per-request cost of the routing stage, in process (no network): the
//! whole stack around a trivial inner service against the bare inner
//! service, in the same run. Ignored by default (timing); run with
//! `cargo test --release -p mesh-tower --test client_overhead -- --ignored --nocapture`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Instant;

use http::{Request, Response};
use mesh_core::config::MeshConfig;
use mesh_core::model::Client as MeshClient;
use mesh_tower::body::{self, BoxError, MeshBody};
use mesh_tower::client::{self, ClientOptions};
use tokio::sync::watch;
use tower::util::BoxCloneService;
use tower::{Service, ServiceExt};

const YAML: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: default}
spec:
  selector: {app: reviews}
  ports: [{name: http, port: 9080}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: default}
spec:
  host: reviews
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews]
  http:
  - match: [{headers: {end-user: {exact: jason}}}]
    route: [{destination: {host: reviews, subset: v2}}]
  - route:
    - {destination: {host: reviews, subset: v1}, weight: 90}
    - {destination: {host: reviews, subset: v2}, weight: 10}
    timeout: 10s
    retries: {attempts: 2, retryOn: 5xx}
"#;

type Svc = BoxCloneService<Request<MeshBody>, Response<MeshBody>, BoxError>;

async fn run(svc: &mut Svc, n: usize) -> std::time::Duration {
    let start = Instant::now();
    for _ in 0..n {
        let req = Request::builder()
            .uri("http://reviews:9080/api/v1/products?id=1")
            .header("user-agent", "bench")
            .body(body::empty())
            .unwrap();
        let r = svc.ready().await.unwrap().call(req).await.unwrap();
        assert_eq!(r.status(), 200);
    }
    start.elapsed()
}

#[tokio::test(flavor = "current_thread")]
#[ignore = "timing; run in release"]
async fn overhead_per_request() {
    let loaded = mesh_core::config::load_str(YAML, "bench.yaml");
    assert!(loaded.errors.is_empty());
    let model = mesh_core::compile::compile(
        &loaded.resources,
        &MeshConfig::default(),
        &MeshClient::new("default", Default::default()),
    );
    let (_tx, rx) = watch::channel(Arc::new(model));
    let inner: Svc = BoxCloneService::new(tower::service_fn(|_req: Request<MeshBody>| async {
        Ok::<_, BoxError>(Response::new(body::empty()))
    }));
    let mut bare = inner.clone();
    let mut stack: Svc = client::layer(rx, ClientOptions::default()).boxed(inner);
    let n = 200_000;
    run(&mut bare, 10_000).await;
    run(&mut stack, 10_000).await;
    let b = run(&mut bare, n).await;
    let s = run(&mut stack, n).await;
    let per = (s.as_nanos() as f64 - b.as_nanos() as f64) / n as f64;
    println!(
        "bare {:.0} ns/req, stack {:.0} ns/req, overhead {per:.0} ns/req",
        b.as_nanos() as f64 / n as f64,
        s.as_nanos() as f64 / n as f64
    );
}

#[tokio::test(flavor = "current_thread")]
#[ignore = "timing; run in release"]
async fn overhead_by_layer() {
    use mesh_tower::client::*;
    use tower::Layer;
    let loaded = mesh_core::config::load_str(YAML, "bench.yaml");
    let model = mesh_core::compile::compile(
        &loaded.resources,
        &MeshConfig::default(),
        &MeshClient::new("default", Default::default()),
    );
    let (_tx, rx) = watch::channel(Arc::new(model));
    let inner: Svc = BoxCloneService::new(tower::service_fn(|_req: Request<MeshBody>| async {
        Ok::<_, BoxError>(Response::new(body::empty()))
    }));
    let n = 100_000;
    let mut bare = inner.clone();
    run(&mut bare, 10_000).await;
    let b = run(&mut bare, n).await.as_nanos() as f64 / n as f64;
    let variants: Vec<(&str, Svc)> = vec![
        (
            "route",
            BoxCloneService::new(RouteLayer::new(rx.clone()).layer(inner.clone())),
        ),
        (
            "route+fault",
            BoxCloneService::new(
                RouteLayer::new(rx.clone()).layer(FaultLayer.layer(inner.clone())),
            ),
        ),
        (
            "route+retry",
            BoxCloneService::new(
                RouteLayer::new(rx.clone())
                    .layer(RetryLayer::new(RetryConfig::default()).layer(inner.clone())),
            ),
        ),
        (
            "route+timeout",
            BoxCloneService::new(
                RouteLayer::new(rx.clone()).layer(TimeoutLayer::new(None).layer(inner.clone())),
            ),
        ),
        (
            "route+mirror",
            BoxCloneService::new(
                RouteLayer::new(rx.clone())
                    .layer(MirrorLayer::new(inner.clone(), 1024).layer(inner.clone())),
            ),
        ),
    ];
    for (name, mut svc) in variants {
        run(&mut svc, 10_000).await;
        let s = run(&mut svc, n).await.as_nanos() as f64 / n as f64;
        println!("{name}: {:.0} ns/req over bare {b:.0}", s - b);
    }
}
