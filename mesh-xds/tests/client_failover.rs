//! The ADS client when control planes fail: last-known-good across a
//! killed server and resync when it returns, fallback to the next server
//! and back to the first (gRFC A71), and the on-disk cache served at start
//! when no server answers.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::time::Duration;

use mesh_test_support::ads::TestServer;
use mesh_test_support::bookinfo::{self, productpage_with_backup as updated, PRODUCTPAGE};
use mesh_test_support::xds_client::{
    config, free_addr, node_info, outbound_json, reconnect_failed, serve_model, wait_for_model,
    wait_status,
};
use mesh_xds::client::{default_node_id, XdsClient, XdsClientError};
use mesh_xds::server::SnapshotCache;

#[tokio::test]
async fn a_killed_server_leaves_the_model_and_a_returning_one_resyncs() {
    let cache = SnapshotCache::new();
    let info = node_info("bookinfo", PRODUCTPAGE);
    let id = default_node_id(&info);
    let local = bookinfo::productpage();
    serve_model(&cache, &id, &local);
    let mut server = TestServer::any(cache.clone());
    let addr = server.addr;
    let client = XdsClient::start(config(vec![server.url()], info)).unwrap();
    client.ready(Duration::from_secs(10)).await.unwrap();

    server.kill();
    // A reconnect attempt fails, and the model is still the last good one.
    wait_status(&client, "a failed reconnect", reconnect_failed).await;
    assert_eq!(outbound_json(&client.current()), outbound_json(&local));
    let err = client.status().last_error.unwrap();
    assert!(err.contains(&addr.to_string()), "{err}");

    // The control plane comes back (same address) with a newer config.
    let next = updated();
    serve_model(&cache, &id, &next);
    let _server = TestServer::start(cache.clone(), addr);
    wait_for_model(&client, &next, "resync").await;
    let url = format!("http://{addr}");
    wait_status(&client, "reconnected", |s| {
        s.connected.as_deref() == Some(url.as_str())
    })
    .await;
}

#[tokio::test]
async fn falls_back_to_the_next_server_and_returns_to_the_first() {
    let info = node_info("bookinfo", PRODUCTPAGE);
    let id = default_node_id(&info);
    // The two control planes serve different configs, so the model says
    // which one the client listens to.
    let primary_model = bookinfo::productpage();
    let secondary_model = updated();
    let primary_cache = SnapshotCache::new();
    serve_model(&primary_cache, &id, &primary_model);
    let secondary_cache = SnapshotCache::new();
    serve_model(&secondary_cache, &id, &secondary_model);

    let primary_addr = free_addr();
    let primary_url = format!("http://{primary_addr}");
    let secondary = TestServer::any(secondary_cache);
    let client =
        XdsClient::start(config(vec![primary_url.clone(), secondary.url()], info)).unwrap();

    // The primary is down: the secondary serves.
    client.ready(Duration::from_secs(10)).await.unwrap();
    wait_for_model(&client, &secondary_model, "fallback").await;
    assert_eq!(
        client.status().connected.as_deref(),
        Some(secondary.url().as_str())
    );

    // The primary comes up: the client goes back to it.
    let mut primary = TestServer::start(primary_cache, primary_addr);
    wait_for_model(&client, &primary_model, "back to the primary").await;
    wait_status(&client, "on the primary", |s| {
        s.connected.as_deref() == Some(primary_url.as_str())
    })
    .await;

    // And falls back again when it dies.
    primary.kill();
    wait_for_model(&client, &secondary_model, "second fallback").await;
}

#[tokio::test]
async fn the_cache_serves_at_start_without_a_server_and_corruption_is_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("xds-cache.pb");
    let cache = SnapshotCache::new();
    let info = node_info("bookinfo", PRODUCTPAGE);
    let id = default_node_id(&info);
    let local = bookinfo::productpage();
    serve_model(&cache, &id, &local);
    let mut server = TestServer::any(cache.clone());
    let addr = server.addr;

    let mut cfg = config(vec![server.url()], info);
    cfg.cache_file = Some(file.clone());
    let first = XdsClient::start(cfg.clone()).unwrap();
    first.ready(Duration::from_secs(10)).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !file.exists() {
        assert!(tokio::time::Instant::now() < deadline, "cache not written");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(first);
    server.kill();

    // A restart while the control plane is down serves the cached config.
    let second = XdsClient::start(cfg.clone()).unwrap();
    let got = second.ready(Duration::from_secs(5)).await.unwrap();
    assert_eq!(outbound_json(&got), outbound_json(&local));
    let s = second.status();
    assert!(s.serving_cache && s.connected.is_none(), "{s:?}");

    // The control plane returns with news: the client syncs and leaves the cache.
    let next = updated();
    serve_model(&cache, &id, &next);
    let mut server = TestServer::start(cache.clone(), addr);
    wait_for_model(&second, &next, "resync after serving the cache").await;
    wait_status(&second, "not serving the cache", |s| !s.serving_cache).await;
    drop(second);
    server.kill();

    // A damaged cache is ignored: no model, and the error names the server.
    // (Its own file: the dropped client's last cache write may still land.)
    let damaged = file.with_extension("damaged");
    std::fs::write(&damaged, b"\x0a\x05hello, not a cache").unwrap();
    cfg.cache_file = Some(damaged);
    let third = XdsClient::start(cfg).unwrap();
    let err = third.ready(Duration::from_millis(800)).await.unwrap_err();
    assert!(matches!(err, XdsClientError::Timeout { .. }), "{err}");
    let msg = err.to_string();
    assert!(msg.contains(&addr.to_string()), "{msg}");
    assert!(third.current().outbound.is_empty());
}
