//! The ADS client in Delta mode against the real Delta ADS server on
//! loopback: sync equal to the local compile, additions and removals,
//! NACK once, and resync after the server restarts.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::time::Duration;

use mesh_core::model::Model;
use mesh_test_support::ads::{break_routes, TestServer};
use mesh_test_support::bookinfo::{self, productpage_with_backup as updated, PRODUCTPAGE};
use mesh_test_support::xds_client::{
    config, node_info, outbound_json, serve_model, wait_for_model, wait_status,
};
use mesh_xds::client::{default_node_id, XdsClient, XdsClientConfig};
use mesh_xds::encode::{encode, EncodeOptions};
use mesh_xds::pb::envoy::service::discovery::v3::{
    aggregated_discovery_service_server::{
        AggregatedDiscoveryService, AggregatedDiscoveryServiceServer,
    },
    DeltaDiscoveryRequest, DiscoveryRequest,
};
use mesh_xds::server::{Snapshot, SnapshotCache};
use mesh_xds::types;

const REVIEWS_RDS: &str = "outbound|9080||reviews.bookinfo.svc.cluster.local";

/// One more service than [`updated`]: a newer config after a restart.
fn newer() -> Model {
    bookinfo::productpage_with(&[("backup", "10.7.0.1"), ("archive", "10.7.0.2")])
}

fn delta(servers: Vec<String>) -> XdsClientConfig {
    let mut c = config(servers, node_info("bookinfo", PRODUCTPAGE));
    c.delta = true;
    c
}

#[tokio::test]
async fn delta_sync_adds_and_removes_like_the_local_compile() {
    let cache = SnapshotCache::new();
    let id = default_node_id(&node_info("bookinfo", PRODUCTPAGE));
    let local = bookinfo::productpage();
    serve_model(&cache, &id, &local);
    let server = TestServer::any(cache.clone());
    let client = XdsClient::start(delta(vec![server.url()])).unwrap();

    let got = client.ready(Duration::from_secs(10)).await.unwrap();
    assert_eq!(outbound_json(&got), outbound_json(&local));
    wait_status(&client, "all types ACKed", |s| {
        s.types.len() == 4 && s.types.values().all(|t| t.acked_version.is_some())
    })
    .await;

    // A service appears, then goes away again (removed_resources).
    let next = updated();
    serve_model(&cache, &id, &next);
    wait_for_model(&client, &next, "addition").await;
    serve_model(&cache, &id, &local);
    wait_for_model(&client, &local, "removal").await;
    assert!(!client
        .current()
        .outbound
        .contains_key("backup.books.example:8443"));
    // Each step a consistent set: a removal may publish twice (listeners
    // gone first, then their clusters), never a route without its cluster.
    assert!(client.status().models_published >= 3);
}

#[tokio::test]
async fn delta_nack_once_then_resync_after_a_restart() {
    let cache = SnapshotCache::new();
    let id = default_node_id(&node_info("bookinfo", PRODUCTPAGE));
    let local = bookinfo::productpage();
    serve_model(&cache, &id, &local);
    let mut server = TestServer::any(cache.clone());
    let addr = server.addr;
    let client = XdsClient::start(delta(vec![server.url()])).unwrap();
    client.ready(Duration::from_secs(10)).await.unwrap();

    // A broken route configuration: one NACK, the model stays.
    let mut res = encode(&local, &EncodeOptions::default());
    break_routes(&mut res, REVIEWS_RDS);
    cache.set_snapshot(&id, Snapshot::from_resources(&res));
    wait_status(&client, "NACK sent", |s| s.types[types::ROUTE].nacks == 1).await;
    let msg = client.status().types[types::ROUTE]
        .last_nack
        .clone()
        .unwrap()
        .message;
    assert!(msg.contains(REVIEWS_RDS), "{msg}");
    assert_eq!(outbound_json(&client.current()), outbound_json(&local));

    // A good config clears the NACK. It was sent once: whatever the bad
    // version set off (a re-send, another NACK) came over this stream
    // before the good one.
    let next = updated();
    serve_model(&cache, &id, &next);
    wait_for_model(&client, &next, "after the fix").await;
    wait_status(&client, "NACK cleared", |s| {
        s.types[types::ROUTE].last_nack.is_none()
    })
    .await;
    assert_eq!(client.status().types[types::ROUTE].nacks, 1);

    // The server dies; it comes back with a newer config and the client
    // resyncs, telling it what it holds.
    server.kill();
    wait_status(&client, "disconnected", |s| s.connected.is_none()).await;
    assert_eq!(outbound_json(&client.current()), outbound_json(&next));
    let newer = newer();
    serve_model(&cache, &id, &newer);
    let _server = TestServer::start(cache.clone(), addr);
    wait_for_model(&client, &newer, "resync").await;
}

/// A control plane that only speaks State of the World (as istiod's
/// proxyless path and older servers): Delta answers UNIMPLEMENTED.
#[derive(Clone)]
struct SotwOnly(mesh_xds::server::AdsServer);

#[tonic::async_trait]
impl AggregatedDiscoveryService for SotwOnly {
    type StreamAggregatedResourcesStream =
        <mesh_xds::server::AdsServer as AggregatedDiscoveryService>::StreamAggregatedResourcesStream;

    async fn stream_aggregated_resources(
        &self,
        request: tonic::Request<tonic::Streaming<DiscoveryRequest>>,
    ) -> Result<tonic::Response<Self::StreamAggregatedResourcesStream>, tonic::Status> {
        self.0.stream_aggregated_resources(request).await
    }

    type DeltaAggregatedResourcesStream =
        <mesh_xds::server::AdsServer as AggregatedDiscoveryService>::DeltaAggregatedResourcesStream;

    async fn delta_aggregated_resources(
        &self,
        _request: tonic::Request<tonic::Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<tonic::Response<Self::DeltaAggregatedResourcesStream>, tonic::Status> {
        Err(tonic::Status::unimplemented("no Delta here"))
    }
}

#[tokio::test]
async fn delta_mode_speaks_sotw_to_a_server_without_delta() {
    let cache = SnapshotCache::new();
    let id = default_node_id(&node_info("bookinfo", PRODUCTPAGE));
    let local = bookinfo::productpage();
    serve_model(&cache, &id, &local);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let svc = AggregatedDiscoveryServiceServer::new(SotwOnly(mesh_xds::server::AdsServer::new(
        cache.clone(),
    )));
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(svc)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let client = XdsClient::start(delta(vec![format!("http://{addr}")])).unwrap();
    let got = client.ready(Duration::from_secs(10)).await.unwrap();
    assert_eq!(outbound_json(&got), outbound_json(&local));
    // The server saw SotW ACKs.
    wait_status(&client, "synced", |s| s.connected.is_some()).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while cache
        .status(&id)
        .get(types::ROUTE)
        .and_then(|s| s.acked.clone())
        .is_none()
    {
        assert!(tokio::time::Instant::now() < deadline, "no SotW ACK");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
