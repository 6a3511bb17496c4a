//! An SDK server fed by xDS enforces the workload's inbound policy: a real
//! ADS server (mesh-xds) serves snapshots compiled from YAML, the
//! workload's `Mesh::xds` model drives the inbound server stack on
//! loopback, and an AuthorizationPolicy and a RequestAuthentication sent
//! by the control plane are enforced, then lifted when the control plane
//! drops them.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test setup

#[path = "server_support.rs"]
mod support;
#[path = "xds_support.rs"]
mod xds_support;

use std::net::SocketAddr;
use std::time::Duration;

use mesh_core::model::Client;
use mesh_tower::server::{AcceptConfig, Server, TlsSource};
use mesh_tower::Mesh;
use mesh_xds::server::SnapshotCache;
use support::{plain, raw_get};
use xds_support::ads_server;

const SERVICE: &str = "apiVersion: v1
kind: Service
metadata: {name: web, namespace: default}
spec:
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: 8080}]
";

/// An AuthorizationPolicy denying `/admin` and a RequestAuthentication
/// (inline key set) selecting the workload.
const POLICIES: &str = r#"---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: no-admin, namespace: default}
spec:
  selector: {matchLabels: {app: web}}
  action: DENY
  rules: [{to: [{operation: {paths: [/admin]}}]}]
---
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: web-jwt, namespace: default}
spec:
  selector: {matchLabels: {app: web}}
  jwtRules:
  - issuer: https://issuer.test
    jwks: '{"keys":[{"kty":"OKP","crv":"Ed25519","kid":"k","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}]}'
"#;

fn workload() -> Client {
    xds_support::workload(Some("web"))
}

fn publish(cache: &SnapshotCache, yaml: &str) {
    xds_support::publish(cache, yaml, &workload());
}

/// The workload's server: the default inbound stack on the xDS model.
async fn serve(mesh: &Mesh, cert_dir: &std::path::Path) -> SocketAddr {
    let ca = support::ca_in(cert_dir, support::TD);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = Server::new(mesh.model(), TlsSource::fixed(support::issue(&ca, "web")))
        .accept_config(AcceptConfig {
            port: Some(8080),
            ..AcceptConfig::default()
        });
    tokio::spawn(server.serve(listener, tower::service_fn(support::echo)));
    addr
}

async fn status(addr: SocketAddr, path: &str, headers: &str) -> (u16, String) {
    let r = plain(addr, &raw_get(path, headers)).await;
    (r.status, r.body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policies_from_the_control_plane_are_enforced_and_lifted_live() {
    let cache = SnapshotCache::new();
    publish(&cache, &format!("{SERVICE}{POLICIES}"));
    let url = ads_server(cache.clone()).await;
    let mesh = Mesh::xds([url])
        .namespace("default")
        .labels(workload().labels)
        .service_account("web")
        .build()
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let addr = serve(&mesh, dir.path()).await;

    let (code, body) = status(addr, "/admin", "").await;
    assert_eq!(code, 403, "{body}");
    assert_eq!(body.trim_end(), "RBAC: access denied");
    // Path normalization applies before the policy, as in local mode.
    assert_eq!(status(addr, "/./admin", "").await.0, 403);
    let (code, body) = status(addr, "/", "").await;
    assert_eq!(code, 200, "{body}");
    assert!(body.starts_with("path=/\n"), "{body}");
    // The RequestAuthentication came too: a token it cannot verify is 401.
    let bad_token = "Authorization: Bearer not.a.jwt\r\n";
    assert_eq!(status(addr, "/", bad_token).await.0, 401);

    // The control plane drops both policies: the server follows.
    let mut rx = mesh.model();
    rx.borrow_and_update();
    publish(&cache, SERVICE);
    tokio::time::timeout(Duration::from_secs(10), rx.changed())
        .await
        .unwrap()
        .unwrap();
    assert!(mesh.current().inbound.authz_policies.is_empty());
    let (code, body) = status(addr, "/admin", "").await;
    assert_eq!(code, 200, "{body}");
    assert!(body.starts_with("path=/admin\n"), "{body}");
    assert_eq!(status(addr, "/", bad_token).await.0, 200);
}
