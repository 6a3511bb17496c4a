//! The ADS client against the real ADS server on loopback: initial sync,
//! updates, NACK of an invalid resource, and the does-not-exist timer.
//! Models are compiled from YAML by mesh-core, encoded by mesh-xds, served
//! by `AdsServer` and decoded by the client.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::time::Duration;

use mesh_test_support::ads::{add_locality, break_routes, TestServer};
use mesh_test_support::bookinfo::{self, productpage_with_backup as updated, PRODUCTPAGE};
use mesh_test_support::xds_client::{
    config, node_info, outbound_json, serve_model, wait_for_model, wait_status,
};
use mesh_xds::client::{default_node_id, XdsClient};
use mesh_xds::encode::{encode, EncodeOptions};
use mesh_xds::server::{Snapshot, SnapshotCache};
use mesh_xds::types;

const REVIEWS_RDS: &str = "outbound|9080||reviews.bookinfo.svc.cluster.local";
const REVIEWS_V1: &str = "outbound|9080|v1|reviews.bookinfo.svc.cluster.local";

#[tokio::test]
async fn initial_sync_equals_the_local_compile_and_updates_apply() {
    let cache = SnapshotCache::new();
    let info = node_info("bookinfo", PRODUCTPAGE);
    let id = default_node_id(&info);
    let local = bookinfo::productpage();
    serve_model(&cache, &id, &local);
    let server = TestServer::any(cache.clone());
    let client = XdsClient::start(config(vec![server.url()], info)).unwrap();

    let got = client.ready(Duration::from_secs(10)).await.unwrap();
    assert_eq!(outbound_json(&got), outbound_json(&local));
    assert!(got
        .outbound
        .contains_key("reviews.bookinfo.svc.cluster.local:9080"));
    // The inbound mTLS mode (mesh-wide STRICT) comes from the server-side
    // listeners.
    assert!(!local.inbound.ports.is_empty());
    for port in local.inbound.ports.keys() {
        assert_eq!(
            got.inbound.mtls.mode_for(*port),
            local.inbound.mtls.mode_for(*port),
            "port {port}"
        );
    }
    assert_eq!(got.inbound.mtls.mode, local.inbound.mtls.mode);
    assert_eq!(got.inbound.mtls.mode, mesh_core::model::MtlsMode::Strict);

    // Every type ACKed, on both sides, at the server's versions.
    let snap = cache.snapshot(&id).unwrap();
    wait_status(&client, "all types ACKed", |s| {
        s.types.len() == 4
            && s.types
                .iter()
                .all(|(t, ts)| ts.acked_version.as_deref() == snap.version(t))
    })
    .await;
    let status = client.status();
    assert_eq!(status.connected.as_deref(), Some(server.url().as_str()));
    assert_eq!(status.models_published, 1);
    assert!(!status.serving_cache);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    for t in [
        types::LISTENER,
        types::ROUTE,
        types::CLUSTER,
        types::ENDPOINT,
    ] {
        while cache.status(&id)[t].acked.as_deref() != snap.version(t) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{t} not ACKed at the server"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(cache.status(&id)[t].nacks, 0, "{t}");
    }

    // An update is applied.
    let next = updated();
    serve_model(&cache, &id, &next);
    wait_for_model(&client, &next, "update").await;
    assert!(client
        .current()
        .outbound
        .contains_key("backup.books.example:8443"));
    assert_eq!(client.status().models_published, 2);

    // The same content again publishes nothing: once a change of
    // endpoints only (one response, one model) has come over the same
    // stream after it, that change is the only new model.
    assert!(serve_model(&cache, &id, &next).is_empty());
    let mut res = encode(&next, &EncodeOptions::default());
    add_locality(&mut res, REVIEWS_V1);
    assert_eq!(
        cache.set_snapshot(&id, Snapshot::from_resources(&res)),
        [types::ENDPOINT]
    );
    let eds = cache
        .snapshot(&id)
        .unwrap()
        .version(types::ENDPOINT)
        .map(str::to_string);
    wait_status(&client, "the endpoints change ACKed", |s| {
        s.types[types::ENDPOINT].acked_version == eds
    })
    .await;
    assert_eq!(client.status().models_published, 3);
}

#[tokio::test]
async fn an_invalid_resource_is_nacked_once_and_the_last_good_model_serves() {
    let cache = SnapshotCache::new();
    let info = node_info("bookinfo", PRODUCTPAGE);
    let id = default_node_id(&info);
    let local = bookinfo::productpage();
    serve_model(&cache, &id, &local);
    let server = TestServer::any(cache.clone());
    let client = XdsClient::start(config(vec![server.url()], info)).unwrap();
    client.ready(Duration::from_secs(10)).await.unwrap();
    let good_rds = cache
        .snapshot(&id)
        .unwrap()
        .version(types::ROUTE)
        .unwrap()
        .to_string();

    // The reviews route configuration loses its virtual hosts (nothing
    // else changes, so the subscription stays and RDS is sent once).
    let mut res = encode(&local, &EncodeOptions::default());
    break_routes(&mut res, REVIEWS_RDS);
    cache.set_snapshot(&id, Snapshot::from_resources(&res));
    let bad_rds = cache
        .snapshot(&id)
        .unwrap()
        .version(types::ROUTE)
        .unwrap()
        .to_string();

    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while cache.status(&id)[types::ROUTE].nacks == 0 {
        assert!(tokio::time::Instant::now() < deadline, "no NACK");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let nack = cache.status(&id)[types::ROUTE].last_nack.clone().unwrap();
    assert_eq!(nack.rejected_version, bad_rds);
    assert!(
        nack.message.contains(REVIEWS_RDS) && nack.message.contains("virtual_hosts"),
        "{}",
        nack.message
    );
    let s = client.status();
    let rds = &s.types[types::ROUTE];
    assert_eq!(rds.acked_version.as_deref(), Some(good_rds.as_str()));
    assert_eq!(rds.last_nack.as_ref().unwrap().version, bad_rds);

    // The previous model keeps serving.
    assert_eq!(outbound_json(&client.current()), outbound_json(&local));
    assert_eq!(client.status().models_published, 1);

    // A good snapshot is ACKed and clears the NACK.
    let next = updated();
    serve_model(&cache, &id, &next);
    wait_for_model(&client, &next, "after the fix").await;
    wait_status(&client, "NACK cleared", |s| {
        s.types[types::ROUTE].last_nack.is_none()
    })
    .await;
    assert!(cache.status(&id)[types::ROUTE].last_nack.is_none());
    // The NACK was sent once: anything the bad version set off (a re-send,
    // another NACK) went over this stream before the fix was ACKed.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while cache.status(&id)[types::ROUTE].acked.as_deref()
        != cache.snapshot(&id).unwrap().version(types::ROUTE)
    {
        assert!(tokio::time::Instant::now() < deadline, "fix not ACKed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(cache.status(&id)[types::ROUTE].nacks, 1);
    assert_eq!(client.status().types[types::ROUTE].nacks, 1);
}

#[tokio::test]
async fn a_route_config_never_sent_is_dropped_after_the_does_not_exist_timeout() {
    let cache = SnapshotCache::new();
    let info = node_info("bookinfo", PRODUCTPAGE);
    let id = default_node_id(&info);
    let local = bookinfo::productpage();
    let mut res = encode(&local, &EncodeOptions::default());
    res.routes.retain(|r| r.name != REVIEWS_RDS);
    cache.set_snapshot(&id, Snapshot::from_resources(&res));
    let server = TestServer::any(cache.clone());
    let mut cfg = config(vec![server.url()], info);
    cfg.does_not_exist_timeout = Duration::from_millis(600);
    let started = tokio::time::Instant::now();
    let client = XdsClient::start(cfg).unwrap();

    // Nothing is published while the name may still come.
    assert!(client.ready(Duration::from_millis(300)).await.is_err());
    let got = client.ready(Duration::from_secs(10)).await.unwrap();
    assert!(started.elapsed() >= Duration::from_millis(600));
    assert!(!got
        .outbound
        .contains_key("reviews.bookinfo.svc.cluster.local:9080"));
    let mut want = outbound_json(&local);
    want["outbound"]
        .as_object_mut()
        .unwrap()
        .remove("reviews.bookinfo.svc.cluster.local:9080");
    assert_eq!(outbound_json(&got), want);
    assert_eq!(
        client.status().types[types::ROUTE].does_not_exist,
        [REVIEWS_RDS]
    );
}
