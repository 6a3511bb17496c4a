//! Chaos against the real control plane: meshd is stopped while an SDK
//! workload is under load, the config changes while it is down, and a new
//! meshd comes back on the same address. Each step waits for what it
//! needs (requests served, a failed reconnect), not for a guessed time.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use mesh_control::{Meshd, MeshdConfig};
use mesh_examples::canary::{config, measure};
use mesh_examples::{backend, Backend, Behaviour, Error};
use mesh_test_support::wait;
use mesh_test_support::xds_client::reconnect_failed;
use mesh_tower::{Mesh, MeshClient};
use tokio::task::JoinHandle;

/// Waits until `b` has served `n` more requests.
async fn serves(b: &Backend, n: u64) {
    let want = b.served.load(Ordering::Relaxed) + n;
    wait::until(&format!("{want} requests served by {}", b.addr), || {
        b.served.load(Ordering::Relaxed) >= want
    })
    .await;
}

/// Requests one after another until `stop`: the (v1, v2) answers, or the
/// first failure.
fn load(client: MeshClient, stop: Arc<AtomicBool>) -> JoinHandle<Result<(u32, u32), Error>> {
    tokio::spawn(async move {
        let (mut v1, mut v2) = (0, 0);
        while !stop.load(Ordering::Relaxed) {
            let (a, b) = measure(&client, 1).await?;
            v1 += a;
            v2 += b;
        }
        Ok((v1, v2))
    })
}

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

    // Steady load across the outage and the resync.
    let stop = Arc::new(AtomicBool::new(false));
    let load = load(client.clone(), stop.clone());
    serves(&v1, 20).await;
    meshd.shutdown().await;
    // While it is down the config moves everything to v2; nobody serves it.
    std::fs::write(&file, config(v1.addr.port(), v2.addr.port(), 0)).unwrap();
    // Down, and known to be down: the last good config keeps serving.
    wait::until("a failed reconnect to meshd", || {
        reconnect_failed(&mesh.xds_status().unwrap())
    })
    .await;
    serves(&v1, 20).await;
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
    serves(&v2, 20).await;
    stop.store(true, Ordering::Relaxed);
    let (a, b) = load
        .await
        .unwrap()
        .expect("no request failed across the outage");
    assert!(
        a >= 40 && b >= 20,
        "v1 {a}, v2 {b}: the load spans the outage"
    );
    assert_eq!(measure(&client, 50).await.unwrap(), (0, 50));
    again.shutdown().await;
}
