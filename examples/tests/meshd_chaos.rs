//! Chaos against the real control plane: meshd is stopped while an SDK
//! workload is under load, the config changes while it is down, and a new
//! meshd comes back on the same address.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use mesh_control::{Meshd, MeshdConfig};
use mesh_examples::canary::{config, measure};
use mesh_examples::{backend, Behaviour};
use mesh_tower::Mesh;

/// Killing meshd under load fails no request (the workload keeps its last
/// good config); a restarted meshd is found again and its config applies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_meshd_under_load_fails_nothing_and_a_restart_resyncs() {
    let v1 = backend("v1", Behaviour::Healthy).await.unwrap();
    let v2 = backend("v2", Behaviour::Healthy).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("reviews.yaml");
    std::fs::write(&file, config(v1.addr.port(), v2.addr.port(), 100)).unwrap();

    let meshd = Meshd::start(MeshdConfig::new(dir.path())).await.unwrap();
    let addr = meshd.xds_addr();
    let mesh = Mesh::xds([format!("http://{addr}")])
        .namespace("default")
        .labels([("app", "productpage")])
        .xds_tuning(|c| {
            c.backoff_base = Duration::from_millis(50);
            c.backoff_max = Duration::from_millis(300);
        })
        .build()
        .await
        .unwrap();
    let client = mesh.http_client();
    assert_eq!(measure(&client, 50).await.unwrap(), (50, 0));

    // Steady load across the outage; `measure` fails on any failed request.
    let load = {
        let client = client.clone();
        tokio::spawn(async move { measure(&client, 3000).await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    meshd.shutdown().await;
    // While it is down the config moves everything to v2; nobody serves it.
    std::fs::write(&file, config(v1.addr.port(), v2.addr.port(), 0)).unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        measure(&client, 20).await.unwrap(),
        (20, 0),
        "the last good config keeps serving while meshd is down"
    );

    // meshd comes back on the same address with the new config.
    let mut model = mesh.model();
    model.borrow_and_update();
    let mut cfg = MeshdConfig::new(dir.path());
    cfg.xds_addr = addr;
    let again = Meshd::start(cfg).await.unwrap();
    if tokio::time::timeout(Duration::from_secs(15), model.changed())
        .await
        .is_err()
    {
        panic!(
            "the workload did not resync with the restarted meshd: {:?}; meshd nodes {:?}",
            mesh.xds_status(),
            again.controller().cache().nodes()
        );
    }
    let (a, b) = load
        .await
        .unwrap()
        .expect("no request failed across the outage");
    assert_eq!(a + b, 3000);
    assert_eq!(measure(&client, 50).await.unwrap(), (0, 50));
    again.shutdown().await;
}
