//! Delta (incremental) ADS, in process on a paused clock, with
//! envoy-types' generated tonic client: subscriptions, only-changed
//! pushes, removals, NACK without a re-send loop, reconnect with
//! initial_resource_versions, and make-before-break per resource.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::HashMap;

use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
use envoy_types::pb::envoy::config::route::v3::{route::Action, route_action::ClusterSpecifier};
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse,
};
use envoy_types::pb::google::rpc::Status as RpcStatus;
use mesh_test_support::ads::{self, cluster, routes, snapshot, Address, Delta, NODE};
use mesh_xds::server::{AdsServer, SnapshotCache};
use mesh_xds::types::{self, any, unany};

/// An in-process server over `cache` (the tests run on a paused clock, so
/// `silent` means the server had nothing more to send).
fn serve(cache: SnapshotCache) -> Address {
    ads::serve(AdsServer::new(cache))
}

async fn open(addr: &Address) -> Delta {
    Delta::connect(addr, ads::node(NODE)).await
}

fn names(r: &DeltaDiscoveryResponse) -> Vec<String> {
    r.resources.iter().map(|x| x.name.clone()).collect()
}

fn versions(r: &DeltaDiscoveryResponse) -> HashMap<String, String> {
    r.resources
        .iter()
        .map(|x| (x.name.clone(), x.version.clone()))
        .collect()
}

#[tokio::test(start_paused = true)]
async fn delta_subscribe_change_remove_nack_reconnect() {
    let cache = SnapshotCache::new();
    cache.set_snapshot(NODE, snapshot(&["a"], &["a"]));
    let addr = serve(cache.clone());
    let mut c = open(&addr).await;

    // CDS wildcard (first request subscribes to nothing).
    c.subscribe(types::CLUSTER, &[]).await;
    let r = c.recv().await;
    assert_eq!(names(&r), ["a"]);
    assert!(!r.resources[0].version.is_empty());
    assert_eq!(
        Some(r.system_version_info.as_str()),
        cache.snapshot(NODE).unwrap().version(types::CLUSTER)
    );
    let version_a = r.resources[0].version.clone();
    c.ack(&r).await;
    // RDS by name.
    c.subscribe(types::ROUTE, &["r"]).await;
    let rds = c.recv().await;
    assert_eq!(names(&rds), ["r"]);
    c.ack(&rds).await;
    c.silent().await;

    // b added: only b is sent.
    cache.set_snapshot(NODE, snapshot(&["a", "b"], &["a"]));
    let r = c.recv().await;
    assert_eq!(r.type_url, types::CLUSTER);
    assert_eq!(names(&r), ["b"]);
    assert!(r.removed_resources.is_empty());
    c.ack(&r).await;
    c.silent().await;

    // b removed: only its name, in removed_resources.
    cache.set_snapshot(NODE, snapshot(&["a"], &["a"]));
    let r = c.recv().await;
    assert!(r.resources.is_empty());
    assert_eq!(r.removed_resources, ["b"]);
    c.ack(&r).await;
    c.silent().await;

    // a changes and the client rejects it: recorded, never re-sent.
    let mut s = snapshot(&["a"], &["a"]);
    let mut a2 = cluster("a");
    a2.alt_stat_name = "rejected".into();
    s.insert(types::CLUSTER, "a", any(&a2));
    cache.set_snapshot(NODE, s);
    let r = c.recv().await;
    assert_eq!(names(&r), ["a"]);
    assert_ne!(r.resources[0].version, version_a);
    c.send(DeltaDiscoveryRequest {
        type_url: types::CLUSTER.into(),
        response_nonce: r.nonce.clone(),
        error_detail: Some(RpcStatus {
            code: 3,
            message: "cluster a: bad alt_stat_name".into(),
            details: vec![],
        }),
        ..Default::default()
    })
    .await;
    c.silent().await;
    let st = &cache.status(NODE)[types::CLUSTER];
    let nack = st.last_nack.as_ref().unwrap();
    assert_eq!(nack.message, "cluster a: bad alt_stat_name");
    assert_eq!(nack.rejected_version, r.system_version_info);
    // Unsubscribe then subscribe again to a named route: sent again.
    c.send(DeltaDiscoveryRequest {
        type_url: types::ROUTE.into(),
        resource_names_unsubscribe: vec!["r".into()],
        ..Default::default()
    })
    .await;
    c.silent().await;
    c.subscribe(types::ROUTE, &["r"]).await;
    let rds2 = c.recv().await;
    assert_eq!(names(&rds2), ["r"]);
    assert_eq!(versions(&rds2), versions(&rds));
    c.ack(&rds2).await;
    drop(c);

    // Reconnect: the client says it has a (the original version) and a
    // cluster that is gone; the snapshot gained c.
    cache.set_snapshot(NODE, snapshot(&["a", "c"], &["a"]));
    let mut c = open(&addr).await;
    c.send(DeltaDiscoveryRequest {
        type_url: types::CLUSTER.into(),
        initial_resource_versions: [
            ("a".to_string(), version_a.clone()),
            ("gone".to_string(), "123".to_string()),
        ]
        .into(),
        ..Default::default()
    })
    .await;
    let r = c.recv().await;
    assert_eq!(names(&r), ["c"], "a is unchanged, only c is new");
    assert!(
        r.removed_resources.is_empty(),
        "gone is kept until the client says which routes it runs"
    );
    c.ack(&r).await;
    c.silent().await;
    // Its routes are current and do not use gone: only now is it removed.
    c.send(DeltaDiscoveryRequest {
        type_url: types::ROUTE.into(),
        resource_names_subscribe: vec!["r".into()],
        initial_resource_versions: versions(&rds2),
        ..Default::default()
    })
    .await;
    let r = c.recv().await;
    assert_eq!(r.type_url, types::CLUSTER);
    assert!(r.resources.is_empty());
    assert_eq!(r.removed_resources, ["gone"]);
    c.ack(&r).await;
    c.silent().await;
}

fn targets(r: &DeltaDiscoveryResponse) -> Vec<String> {
    let rc = unany::<RouteConfiguration>(r.resources[0].resource.as_ref().unwrap()).unwrap();
    match &rc.virtual_hosts[0].routes[0].action {
        Some(Action::Route(ra)) => match &ra.cluster_specifier {
            Some(ClusterSpecifier::WeightedClusters(w)) => {
                w.clusters.iter().map(|c| c.name.clone()).collect()
            }
            _ => vec![],
        },
        _ => vec![],
    }
}

#[tokio::test(start_paused = true)]
async fn delta_make_before_break() {
    let cache = SnapshotCache::new();
    cache.set_snapshot(NODE, snapshot(&["a"], &["a"]));
    let addr = serve(cache.clone());
    let mut c = open(&addr).await;
    c.subscribe(types::ROUTE, &["r"]).await;
    let r = c.recv().await;
    c.ack(&r).await;
    c.subscribe(types::CLUSTER, &["*"]).await;
    let r = c.recv().await;
    c.ack(&r).await;
    c.subscribe(types::ENDPOINT, &["a"]).await;
    let r = c.recv().await;
    c.ack(&r).await;
    c.silent().await;

    // A second route config that does not need b goes out at once; r
    // (split onto the new b) waits for b's CDS and EDS ACKs.
    let mut s = snapshot(&["a", "b"], &["a", "b"]);
    let mut other = routes(&["a"]);
    other.name = "r2".into();
    s.insert(types::ROUTE, "r2", any(&other));
    cache.set_snapshot(NODE, s);
    c.subscribe(types::ROUTE, &["r2"]).await;
    let mut got = [c.recv().await, c.recv().await];
    got.sort_by(|x, y| x.type_url.cmp(&y.type_url));
    let (cds, rds2) = (got[0].clone(), got[1].clone());
    assert_eq!(cds.type_url, types::CLUSTER);
    assert_eq!(names(&cds), ["b"]);
    assert_eq!(names(&rds2), ["r2"]);
    c.ack(&rds2).await;
    c.silent().await;
    c.ack(&cds).await;
    c.silent().await;
    c.subscribe(types::ENDPOINT, &["b"]).await;
    let eds = c.recv().await;
    assert_eq!(names(&eds), ["b"]);
    c.ack(&eds).await;
    let rds = c.recv().await;
    assert_eq!(names(&rds), ["r"]);
    assert_eq!(targets(&rds), ["a", "b"]);
    c.ack(&rds).await;

    // Removing a: r moves to b only; a stays until that is ACKed.
    let mut s = snapshot(&["b"], &["b"]);
    let mut other = routes(&["b"]);
    other.name = "r2".into();
    s.insert(types::ROUTE, "r2", any(&other));
    cache.set_snapshot(NODE, s);
    let rds = c.recv().await;
    assert_eq!(rds.type_url, types::ROUTE);
    assert_eq!(rds.resources.len(), 2);
    c.silent().await;
    c.ack(&rds).await;
    let cds = c.recv().await;
    assert_eq!(cds.type_url, types::CLUSTER);
    assert_eq!(cds.removed_resources, ["a"]);
    c.ack(&cds).await;
    let eds = c.recv().await;
    assert_eq!(eds.removed_resources, ["a"]);
}
