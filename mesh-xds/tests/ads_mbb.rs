//! Make-before-break and missing resources over a real tonic ADS stream,
//! in process on a paused clock (so "nothing sent" is exact). The test is
//! the client and decides when it ACKs, so the held-back ordering is
//! observable step by step.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
use envoy_types::pb::envoy::service::discovery::v3::DiscoveryResponse;
use mesh_test_support::ads::{cluster_names, route_targets, routes, snapshot, start, Client, NODE};
use mesh_xds::server::SnapshotCache;
use mesh_xds::types::{self, any, unany};

/// Subscribes the way a gRPC client does (LDS, RDS, CDS, EDS), ACKing each.
async fn synced(c: &mut Client) -> DiscoveryResponse {
    c.send(types::LISTENER, &[], None).await;
    let lds = c.recv().await;
    c.send(types::LISTENER, &[], Some(&lds)).await;
    c.send(types::ROUTE, &["r"], None).await;
    let rds = c.recv().await;
    assert_eq!(route_targets(&rds), ["a"]);
    c.send(types::ROUTE, &["r"], Some(&rds)).await;
    c.send(types::CLUSTER, &[], None).await;
    let cds = c.recv().await;
    c.send(types::CLUSTER, &[], Some(&cds)).await;
    c.send(types::ENDPOINT, &["a"], None).await;
    let eds = c.recv().await;
    c.send(types::ENDPOINT, &["a"], Some(&eds)).await;
    c.silent().await;
    eds
}

#[tokio::test(start_paused = true)]
async fn new_subset_route_waits_for_cluster_and_endpoint_acks() {
    let cache = SnapshotCache::new();
    cache.set_snapshot(NODE, snapshot(&["a"], &["a"]));
    let mut c = start(cache.clone()).await;
    let eds = synced(&mut c).await;

    // A new subset b and a split onto it.
    cache.set_snapshot(NODE, snapshot(&["a", "b"], &["a", "b"]));
    let cds = c.recv().await;
    assert_eq!(cds.type_url, types::CLUSTER);
    assert_eq!(cluster_names(&cds), ["a", "b"]);
    c.silent().await; // the split is held back
    assert!(cache.status(NODE)[types::ROUTE].held.is_some());

    c.send(types::CLUSTER, &[], Some(&cds)).await;
    c.silent().await; // b's endpoints not there yet
    c.send(types::ENDPOINT, &["a", "b"], Some(&eds)).await;
    let eds = c.recv().await;
    assert_eq!(eds.type_url, types::ENDPOINT);
    // Only b's endpoints: the client holds a's (EDS is not full state).
    assert_eq!(eds.resources.len(), 1);
    c.silent().await;
    c.send(types::ENDPOINT, &["a", "b"], Some(&eds)).await;
    let rds = c.recv().await;
    assert_eq!(rds.type_url, types::ROUTE);
    assert_eq!(route_targets(&rds), ["a", "b"]);
    c.send(types::ROUTE, &["r"], Some(&rds)).await;
    c.silent().await;

    // Remove a: routes first; CDS keeps a until those routes are ACKed.
    cache.set_snapshot(NODE, snapshot(&["b"], &["b"]));
    let cds = c.recv().await;
    assert_eq!(cds.type_url, types::CLUSTER);
    let mut names = cluster_names(&cds);
    names.sort();
    assert_eq!(names, ["a", "b"], "a kept: routes still use it");
    let rds = c.recv().await;
    assert_eq!(route_targets(&rds), ["b"]);
    c.send(types::CLUSTER, &[], Some(&cds)).await;
    c.silent().await;
    c.send(types::ROUTE, &["r"], Some(&rds)).await;
    let cds = c.recv().await;
    assert_eq!(cluster_names(&cds), ["b"]);
    assert_eq!(
        Some(cds.version_info.as_str()),
        cache.snapshot(NODE).unwrap().version(types::CLUSTER)
    );
    c.send(types::CLUSTER, &[], Some(&cds)).await;
    c.send(types::ENDPOINT, &["b"], Some(&eds)).await;
    c.silent().await;
    let st = cache.status(NODE);
    assert_eq!(
        st[types::CLUSTER].acked.as_deref(),
        Some(cds.version_info.as_str())
    );
    assert_eq!(st[types::ROUTE].held, None);
}

#[tokio::test(start_paused = true)]
async fn missing_resources_named_and_wildcard() {
    let cache = SnapshotCache::new();
    cache.set_snapshot(NODE, snapshot(&["a"], &["a"]));
    let mut c = start(cache.clone()).await;

    // LDS and CDS by name: a missing name is just absent (the client takes
    // that as does-not-exist at once).
    c.send(types::LISTENER, &["svc:80", "nope:80"], None).await;
    let lds = c.recv().await;
    assert_eq!(lds.resources.len(), 1);
    c.send(types::CLUSTER, &["a", "nope"], None).await;
    let cds = c.recv().await;
    assert_eq!(cluster_names(&cds), ["a"]);
    c.send(types::CLUSTER, &["nope"], Some(&cds)).await;
    let cds = c.recv().await;
    assert!(
        cds.resources.is_empty(),
        "full state: an empty CDS response"
    );
    // Wildcard ("*") brings everything back.
    c.send(types::CLUSTER, &["*"], Some(&cds)).await;
    let cds = c.recv().await;
    assert_eq!(cluster_names(&cds), ["a"]);
    c.send(types::CLUSTER, &["*"], Some(&cds)).await;

    // RDS and EDS for names that do not exist: nothing (gRPC's 15 s
    // does-not-exist timer decides).
    c.send(types::ROUTE, &["nope"], None).await;
    c.send(types::ENDPOINT, &["nope"], None).await;
    c.silent().await;
    // When the name appears, it is sent.
    let mut s = snapshot(&["a"], &["a"]);
    let mut rc = routes(&["a"]);
    rc.name = "nope".into();
    s.insert(types::ROUTE, "nope", any(&rc));
    cache.set_snapshot(NODE, s);
    let rds = c.recv().await;
    assert_eq!(rds.type_url, types::ROUTE);
    assert_eq!(
        unany::<RouteConfiguration>(&rds.resources[0]).unwrap().name,
        "nope"
    );
    c.silent().await;
}
