//! tonic through the whole SDK: `Mesh::local` config, `grpc_channel`, the
//! routing stage and the endpoint stage (h2c), to real tonic servers on
//! loopback.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test setup

use std::net::SocketAddr;
use std::time::Duration;

use mesh_test_support::configs::versioned_service;
use mesh_tower::Mesh;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

/// A tonic health server reporting `service` as SERVING.
async fn health_server(service: &str) -> SocketAddr {
    let (reporter, svc) = tonic_health::server::health_reporter();
    reporter
        .set_service_status(service, tonic_health::ServingStatus::Serving)
        .await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let incoming = futures_util::stream::unfold(listener, |l| async move {
        Some((l.accept().await.map(|(s, _)| s), l))
    });
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(svc)
            .serve_with_incoming(incoming)
            .await
            .unwrap();
    });
    addr
}

fn config(v1: u16, v2: u16) -> String {
    format!(
        "{}apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: health, namespace: default}}
spec:
  host: health
  subsets:
  - {{name: v1, labels: {{version: v1}}}}
  - {{name: v2, labels: {{version: v2}}}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: health, namespace: default}}
spec:
  hosts: [health]
  http:
  - name: chaos
    match: [{{headers: {{x-chaos: {{exact: abort}}}}}}]
    fault:
      abort: {{grpcStatus: UNAVAILABLE, percentage: {{value: 100}}}}
    route: [{{destination: {{host: health, subset: v1}}}}]
  - name: canary
    match: [{{headers: {{x-canary: {{exact: 'true'}}}}}}]
    route: [{{destination: {{host: health, subset: v2}}}}]
  - name: stable
    route: [{{destination: {{host: health, subset: v1}}}}]
    timeout: 2s
",
        versioned_service("health", "grpc", 50051, &[("v1", v1), ("v2", v2)])
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tonic_clients_route_through_the_mesh() {
    // v1 knows service "stable", v2 knows "canary": the answer says which one served.
    let v1 = health_server("stable").await;
    let v2 = health_server("canary").await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("mesh.yaml"), config(v1.port(), v2.port())).unwrap();
    let mesh = Mesh::local(dir.path())
        .namespace("default")
        .poll_interval(Duration::from_millis(100))
        .build()
        .await
        .unwrap();
    let mut client = HealthClient::new(mesh.grpc_channel("health:50051").unwrap());

    let check = |service: &str| HealthCheckRequest {
        service: service.into(),
    };
    // Default route: v1 answers for "stable".
    let ok = client.check(check("stable")).await.unwrap();
    assert_eq!(ok.into_inner().status, ServingStatus::Serving as i32);
    let not_there = client.check(check("canary")).await.unwrap_err();
    assert_eq!(
        not_there.code(),
        tonic::Code::NotFound,
        "v1 does not know canary"
    );

    // Header route to v2.
    let mut req = tonic::Request::new(check("canary"));
    req.metadata_mut()
        .insert("x-canary", "true".parse().unwrap());
    let ok = client.check(req).await.unwrap();
    assert_eq!(ok.into_inner().status, ServingStatus::Serving as i32);

    // Fault injection answers with the configured gRPC status.
    let mut req = tonic::Request::new(check("stable"));
    req.metadata_mut()
        .insert("x-chaos", "abort".parse().unwrap());
    let err = client.check(req).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable);

    // Many calls multiplex over HTTP/2 without errors.
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let mut c = client.clone();
        tasks.push(tokio::spawn(async move {
            c.check(check("stable")).await.map(|_| ())
        }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
}
