//! A small fleet (20 SotW clients, then 20 Delta clients, x 10 services)
//! against meshd started in process: every client gets configured
//! (LDS -> RDS -> CDS -> EDS, all ACKed) and the VirtualService edit
//! reaches every client that targets the edited service. The Delta fleet's
//! apps also serve a port, so each of its clients is sent server
//! listeners named by its own IP as well.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use mesh_control::{Meshd, MeshdConfig};
use mesh_loadgen::config;
use mesh_loadgen::fleet::FleetSpec;
use mesh_loadgen::run::{measure, Plan};

async fn smoke(delta: bool, serving: bool) {
    let dir = tempfile::tempdir().unwrap();
    config::generate(dir.path(), 10).unwrap();
    config::serve_apps(dir.path(), serving.then_some(4)).unwrap();
    let meshd = Meshd::start(MeshdConfig::new(dir.path()))
        .await
        .expect("meshd starts on the generated YAML");
    let plan = Plan {
        fleet: FleetSpec {
            clients: 20,
            services: 10,
            targets: 3,
            connections: 3,
            delta,
            apps: 4,
            serving,
            naming: Default::default(),
        },
        edit: true,
        timeout: Duration::from_secs(30),
        settle: Duration::from_millis(200),
        max_rss_kib: None,
    };
    let m = measure("meshd", meshd.xds_addr(), None, dir.path(), &plan)
        .await
        .unwrap();
    assert!(
        m.initial.complete(),
        "only {}/{} clients configured; ended streams: {} (first: {:?})",
        m.initial.done,
        m.initial.of,
        m.initial.ended,
        m.initial.first_end
    );
    assert_eq!(m.initial.ended, 0, "{:?}", m.initial.first_end);
    // 20 clients x 3 listeners, each naming its route config (and, when
    // serving, each client's own server listener); services 0, 4 and 8
    // split over two subset clusters, the rest use one; every cluster is
    // EDS.
    let [l, r, c, e] = m.resources;
    assert_eq!((l, r), (if serving { 80 } else { 60 }, 60));
    assert!(c >= 60 && e == c, "clusters {c}, endpoint sets {e}");
    let edit = m.edit.expect("the edit ran");
    // Clients 0..20 x 3 targets over 10 services: 6 target service 0.
    assert_eq!(edit.progress.of, 6);
    assert!(
        edit.progress.complete(),
        "the edit reached {}/{} affected clients",
        edit.progress.done,
        edit.progress.of
    );
    assert_eq!(edit.changed, 6, "only affected clients see a route change");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sotw_fleet_configures_and_takes_the_edit() {
    smoke(false, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delta_fleet_configures_and_takes_the_edit() {
    smoke(true, true).await;
}
