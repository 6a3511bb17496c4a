//! An SDK server fed by xDS enforces the workload's inbound policy: a real
//! ADS server (mesh-xds) serves snapshots compiled from YAML, the
//! workload's `Mesh::xds` model drives the inbound server stack on
//! loopback, and an AuthorizationPolicy and a RequestAuthentication sent
//! by the control plane are enforced, then lifted when the control plane
//! drops them.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test setup

use std::net::SocketAddr;
use std::time::Duration;

use mesh_core::model::Client;
use mesh_test_support::raw_http::{plain, raw_get};
use mesh_test_support::sdk::{self, ads_server};
use mesh_test_support::{identity, inbound};
use mesh_tower::server::{AcceptConfig, Server, TlsSource};
use mesh_tower::Mesh;
use mesh_xds::server::SnapshotCache;

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
    sdk::workload(Some("web"))
}

fn publish(cache: &SnapshotCache, yaml: &str) {
    sdk::publish(cache, yaml, &workload());
}

/// The workload's server: the default inbound stack on the xDS model.
async fn serve(mesh: &Mesh, cert_dir: &std::path::Path) -> SocketAddr {
    let ca = identity::ca_in(cert_dir, identity::TD);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = Server::new(mesh.model(), TlsSource::fixed(identity::issue(&ca, "web")))
        .accept_config(AcceptConfig {
            port: Some(8080),
            ..AcceptConfig::default()
        });
    tokio::spawn(server.serve(listener, tower::service_fn(inbound::echo)));
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

/// A control plane like istiod: its answer to the SDK's wildcard carries
/// no server listener, and the server listener, sent only to a stream that
/// names it, has standard RBAC filters and none of our metadata. With
/// `inbound_ports` the SDK names it on a second stream and enforces those
/// filters; `build()` waits for them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_listeners_named_on_a_second_stream_carry_their_rbac() {
    use mesh_xds::encode::inbound_listener_name;
    let loaded = mesh_core::config::load_str(&format!("{SERVICE}{POLICIES}"), "mesh.yaml");
    assert!(loaded.errors.is_empty(), "{:?}", loaded.errors);
    let client = workload();
    let model = mesh_core::compile::compile(
        &loaded.resources,
        &mesh_core::config::MeshConfig::default(),
        &client,
    );
    let mut all = mesh_xds::encode::encode(&model, &mesh_xds::encode::EncodeOptions::default());
    let server_name = inbound_listener_name("0.0.0.0", 8080);
    let mut server: Vec<_> = all
        .listeners
        .iter()
        .filter(|l| l.name == server_name)
        .cloned()
        .collect();
    assert_eq!(server.len(), 1);
    for l in &mut server {
        l.metadata = None;
    }
    all.listeners.retain(|l| l.api_listener.is_some());
    let cache = SnapshotCache::new();
    let info = mesh_tower::source::xds::node_info(&client);
    let main_id = mesh_xds::client::default_node_id(&info);
    cache.set_snapshot(&main_id, mesh_xds::server::Snapshot::from_resources(&all));
    let inbound_id = main_id.replacen("~workload.", "~workload-inbound.", 1);
    cache.set_snapshot(
        &inbound_id,
        mesh_xds::server::Snapshot::from_resources(&mesh_xds::encode::Resources {
            listeners: server,
            ..Default::default()
        }),
    );
    let url = ads_server(cache.clone()).await;
    let mesh = Mesh::xds([url])
        .namespace("default")
        .labels(client.labels.clone())
        .service_account("web")
        .inbound_ports([8080])
        .build()
        .await
        .unwrap();
    assert_eq!(mesh.current().inbound.listeners, [server_name]);
    assert!(mesh.current().inbound.authz.rbac().is_some());
    assert!(
        !mesh.current().outbound.is_empty(),
        "the main stream's model is kept"
    );
    let dir = tempfile::tempdir().unwrap();
    let addr = serve(&mesh, dir.path()).await;
    let (code, body) = status(addr, "/admin", "").await;
    assert_eq!(code, 403, "the DENY filter from the named listener: {body}");
    assert_eq!(status(addr, "/./admin", "").await.0, 403);
    assert_eq!(status(addr, "/", "").await.0, 200);
}
