//! gRPC over auto-mTLS: a tonic client on `Mesh::grpc_channel` calls a
//! tonic health service behind the mesh inbound server in STRICT mode.
//! The HTTP/2 pool negotiates ALPN `h2` over the mesh certificate, and
//! the server's authorization sees the caller's SPIFFE principal.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;

use mesh_test_support::identity::{ca_in, issue, TD};
use mesh_test_support::inbound::{model, peer_authn};
use mesh_tower::body::boxed;
use mesh_tower::server::{AcceptConfig, Server, TlsSource};
use mesh_tower::Mesh;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

/// Only `productpage` may call; anyone else gets PERMISSION_DENIED.
const ALLOW_PRODUCTPAGE: &str = "---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: only-productpage, namespace: default}
spec:
  action: ALLOW
  rules:
  - from:
    - source:
        principals: [cluster.local/ns/default/sa/productpage]
";

async fn grpc_mesh_server(ca: &mesh_ca::CertificateAuthority) -> SocketAddr {
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter
        .set_service_status("ratings", tonic_health::ServingStatus::Serving)
        .await;
    let app = tower::ServiceBuilder::new()
        .map_response(|r: http::Response<_>| r.map(boxed))
        .service(health);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let yaml = format!("{}{ALLOW_PRODUCTPAGE}", peer_authn("STRICT"));
    let (tx, rx) = tokio::sync::watch::channel(model(&yaml));
    let server =
        Server::new(rx, TlsSource::fixed(issue(ca, "ratings"))).accept_config(AcceptConfig {
            port: Some(8080),
            ..AcceptConfig::default()
        });
    tokio::spawn(async move {
        let _tx = tx;
        server.serve(listener, app).await
    });
    addr
}

fn config(port: u16) -> String {
    format!(
        "apiVersion: v1
kind: Service
metadata: {{name: ratings, namespace: default}}
spec:
  selector: {{app: ratings}}
  ports: [{{name: grpc, port: 50051}}]
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: ratings-1, namespace: default}}
spec:
  address: 127.0.0.1
  ports: {{grpc: {port}}}
  labels: {{app: ratings, security.istio.io/tlsMode: istio}}
  serviceAccount: ratings
"
    )
}

async fn client_mesh(dir: &std::path::Path, port: u16, sa: &str, identity: TlsSource) -> Mesh {
    std::fs::write(dir.join("mesh.yaml"), config(port)).unwrap();
    Mesh::local(dir)
        .namespace("default")
        .service_account(sa)
        .identity(identity)
        .build()
        .await
        .unwrap()
}

#[tokio::test]
async fn grpc_over_auto_mtls_with_authorization_by_principal() {
    let pki = tempfile::tempdir().unwrap();
    let ca = ca_in(pki.path(), TD);
    let addr = grpc_mesh_server(&ca).await;
    let req = || HealthCheckRequest {
        service: "ratings".into(),
    };

    let cfg = tempfile::tempdir().unwrap();
    let mesh = client_mesh(
        cfg.path(),
        addr.port(),
        "productpage",
        TlsSource::fixed(issue(&ca, "productpage")),
    )
    .await;
    let mut client = HealthClient::new(mesh.grpc_channel("ratings:50051").unwrap());
    for _ in 0..3 {
        let resp = client.check(req()).await.unwrap().into_inner();
        assert_eq!(resp.status, ServingStatus::Serving as i32);
    }
    let stats = mesh
        .endpoints()
        .stats("outbound|50051||ratings.default.svc.cluster.local")
        .unwrap();
    assert_eq!(
        stats.connections, 1,
        "HTTP/2 multiplexes one mTLS connection"
    );

    // Another workload's identity reaches the server but is denied.
    let cfg = tempfile::tempdir().unwrap();
    let mesh = client_mesh(
        cfg.path(),
        addr.port(),
        "reviews",
        TlsSource::fixed(issue(&ca, "reviews")),
    )
    .await;
    let mut client = HealthClient::new(mesh.grpc_channel("ratings:50051").unwrap());
    let status = client.check(req()).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
}
