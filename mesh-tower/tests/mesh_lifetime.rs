//! A Mesh lives as long as what was built from it (local mode): with the
//! `Mesh` dropped and a client (or a server from `Mesh::server`) kept, a
//! config change still applies; with the last of them dropped, the watcher
//! stops.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test setup

use std::time::Duration;

use mesh_test_support::identity;
use mesh_tower::server::TlsSource;
use mesh_tower::Mesh;

fn service(port: u16) -> String {
    format!(
        "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: api, namespace: default}}
spec:
  hosts: [api.example.com]
  ports: [{{number: {port}, name: http, protocol: HTTP}}]
  resolution: STATIC
  endpoints: [{{address: 127.0.0.1}}]
"
    )
}

async fn mesh(dir: &std::path::Path) -> Mesh {
    Mesh::local(dir)
        .namespace("default")
        .poll_interval(Duration::from_millis(20))
        .build()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_change_reaches_a_client_that_outlives_its_mesh() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("mesh.yaml");
    std::fs::write(&file, service(80)).unwrap();
    let m = mesh(dir.path()).await;
    let mut rx = m.model();
    rx.borrow_and_update();
    let client = m.http_client();
    drop(m);

    std::fs::write(&file, service(81)).unwrap();
    applies(
        &mut rx,
        "api.example.com:81",
        "the change applies while the client lives",
    )
    .await;

    // The last holder gone: the watcher stops and its channel closes.
    drop(client);
    tokio::time::timeout(Duration::from_secs(5), async {
        while rx.changed().await.is_ok() {}
    })
    .await
    .expect("the watcher stopped with the last client");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_from_the_mesh_keeps_it_running_too() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("mesh.yaml");
    std::fs::write(&file, service(80)).unwrap();
    // The CA's files go elsewhere: the config directory is watched.
    let certs = tempfile::tempdir().unwrap();
    let ca = identity::ca_in(certs.path(), identity::TD);
    let m = mesh(dir.path()).await;
    let server = m.server(TlsSource::fixed(identity::issue(&ca, "web")));
    let mut rx = m.model();
    rx.borrow_and_update();
    drop(m);
    std::fs::write(&file, service(82)).unwrap();
    applies(
        &mut rx,
        "api.example.com:82",
        "the change applies while the server exists",
    )
    .await;
    drop(server);
    tokio::time::timeout(Duration::from_secs(5), async {
        while rx.changed().await.is_ok() {}
    })
    .await
    .expect("the watcher stopped with the server");
}

/// Waits for a model serving `host`: the watcher may catch the file
/// between truncation and write and apply that version first.
async fn applies(rx: &mut mesh_tower::ModelRx, host: &str, what: &str) {
    tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            rx.changed().await.expect("the watcher is still running");
            if rx.borrow().outbound.contains_key(host) {
                break;
            }
        }
    })
    .await
    .expect(what);
}
