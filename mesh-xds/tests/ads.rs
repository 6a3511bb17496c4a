//! The ADS server with envoy-types' generated tonic client, speaking the
//! real SotW protocol: in process on a paused clock where the test checks
//! that the server stays silent, on loopback where it needs the peer's
//! address.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::DiscoveryResponse;
use envoy_types::pb::google::protobuf::{value::Kind, Struct, Value};
use mesh_test_support::ads::{self, Client};
use mesh_test_support::bookinfo;
use mesh_xds::encode::{encode, EncodeOptions, Resources};
use mesh_xds::server::{AdsServer, ServerEvent, Snapshot, SnapshotCache};
use mesh_xds::types::{self, unany};

const NODE: &str = "sidecar~10.0.0.9~productpage-v1.bookinfo~bookinfo.svc.cluster.local";
const REVIEWS: &str = "reviews.bookinfo.svc.cluster.local:9080";
const REVIEWS_RDS: &str = "outbound|9080||reviews.bookinfo.svc.cluster.local";
const REVIEWS_V1: &str = "outbound|9080|v1|reviews.bookinfo.svc.cluster.local";

fn node() -> Node {
    let s = |v: &str| Value {
        kind: Some(Kind::StringValue(v.into())),
    };
    let mut labels = Struct::default();
    labels.fields.insert("app".into(), s("productpage"));
    let mut md = Struct::default();
    md.fields.insert("NAMESPACE".into(), s("bookinfo"));
    md.fields
        .insert("SERVICE_ACCOUNT".into(), s("bookinfo-productpage"));
    md.fields.insert(
        "LABELS".into(),
        Value {
            kind: Some(Kind::StructValue(labels)),
        },
    );
    Node {
        id: NODE.into(),
        metadata: Some(md),
        ..Default::default()
    }
}

fn names(r: &DiscoveryResponse) -> Vec<String> {
    r.resources
        .iter()
        .map(|a| match a.type_url.as_str() {
            types::LISTENER => {
                unany::<envoy_types::pb::envoy::config::listener::v3::Listener>(a)
                    .unwrap()
                    .name
            }
            types::ROUTE => {
                unany::<envoy_types::pb::envoy::config::route::v3::RouteConfiguration>(a)
                    .unwrap()
                    .name
            }
            types::CLUSTER => {
                unany::<envoy_types::pb::envoy::config::cluster::v3::Cluster>(a)
                    .unwrap()
                    .name
            }
            _ => {
                unany::<envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment>(a)
                    .unwrap()
                    .cluster_name
            }
        })
        .collect()
}

fn bookinfo() -> Resources {
    encode(&bookinfo::productpage(), &EncodeOptions::default())
}

#[tokio::test(start_paused = true)]
async fn sotw_protocol() {
    let cache = SnapshotCache::new();
    let res = bookinfo();
    cache.set_snapshot(NODE, Snapshot::from_resources(&res));
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen2 = seen.clone();
    let server = AdsServer::new(cache.clone())
        .with_node_hook(move |n| seen2.lock().unwrap().push(n.client()));
    let mut c = Client::connect(&ads::serve(server), node()).await;

    // CDS wildcard.
    c.send(types::CLUSTER, &[], None).await;
    let cds = c.recv().await;
    assert_eq!(cds.type_url, types::CLUSTER);
    assert_eq!(cds.resources.len(), res.clusters.len());
    c.ack(&cds, &[]).await;
    // The control plane heard about the node, with its Istio metadata.
    let clients = seen.lock().unwrap().clone();
    assert_eq!(clients.len(), 1);
    assert_eq!(clients[0].namespace, "bookinfo");

    // EDS by name, one that does not exist left out.
    c.send(types::ENDPOINT, &[REVIEWS_V1, "outbound|1||nope"], None)
        .await;
    let eds = c.recv().await;
    assert_eq!(names(&eds), [REVIEWS_V1]);
    c.ack(&eds, &[REVIEWS_V1, "outbound|1||nope"]).await;

    // LDS wildcard.
    c.send(types::LISTENER, &[], None).await;
    let lds = c.recv().await;
    assert_eq!(lds.resources.len(), res.listeners.len());
    assert!(names(&lds).contains(&REVIEWS.to_string()));
    c.ack(&lds, &[]).await;

    // RDS by name, a missing name omitted.
    c.send(types::ROUTE, &[REVIEWS_RDS, "missing:80"], None)
        .await;
    let rds = c.recv().await;
    assert_eq!(names(&rds), [REVIEWS_RDS]);
    c.ack(&rds, &[REVIEWS_RDS, "missing:80"]).await;
    c.silent().await;

    // The same model encoded again (protobuf maps in another order on the
    // wire) is not a change.
    assert!(cache
        .set_snapshot(NODE, Snapshot::from_resources(&bookinfo()))
        .is_empty());

    let status = cache.status(NODE);
    assert_eq!(
        status[types::ROUTE].acked.as_deref(),
        Some(rds.version_info.as_str())
    );

    // NACK the listeners: recorded, and not re-sent.
    c.nack(&lds, &[], "bad listener").await;
    c.silent().await;
    let nack = cache.status(NODE)[types::LISTENER]
        .last_nack
        .clone()
        .unwrap();
    assert_eq!(nack.rejected_version, lds.version_info);
    assert_eq!(nack.message, "bad listener");

    // A snapshot touching all four types is pushed CDS, EDS, LDS, RDS.
    let mut res2 = res.clone();
    let mut extra = res.clusters[0].clone();
    extra.name = "outbound|1||extra.example".into();
    res2.clusters.push(extra);
    ads::add_locality(&mut res2, REVIEWS_V1);
    let mut l = res.listeners[0].clone();
    l.name = "extra.example:1".into();
    res2.listeners.push(l);
    let rc = res2
        .routes
        .iter_mut()
        .find(|r| r.name == REVIEWS_RDS)
        .unwrap();
    rc.virtual_hosts[0].domains.push("reviews.extra".into());
    let changed = cache.set_snapshot(NODE, Snapshot::from_resources(&res2));
    assert_eq!(changed.len(), 4);
    let order = [
        types::CLUSTER,
        types::ENDPOINT,
        types::LISTENER,
        types::ROUTE,
    ];
    let mut got = Vec::new();
    for _ in 0..4 {
        let r = c.recv().await;
        let names: &[&str] = match r.type_url.as_str() {
            types::ROUTE => &[REVIEWS_RDS, "missing:80"],
            types::ENDPOINT => &[REVIEWS_V1, "outbound|1||nope"],
            _ => &[],
        };
        c.ack(&r, names).await;
        got.push(r.type_url);
    }
    assert_eq!(got, order);
    c.silent().await;

    // Only what changed is pushed; the same content again pushes nothing.
    let mut res3 = res2.clone();
    let cla = res3
        .endpoints
        .iter_mut()
        .find(|e| e.cluster_name == REVIEWS_V1)
        .unwrap();
    cla.endpoints.pop();
    assert_eq!(
        cache.set_snapshot(NODE, Snapshot::from_resources(&res3)),
        [types::ENDPOINT]
    );
    let r = c.recv().await;
    assert_eq!(r.type_url, types::ENDPOINT);
    c.ack(&r, &[REVIEWS_V1, "outbound|1||nope"]).await;
    c.silent().await;
    assert!(cache
        .set_snapshot(NODE, Snapshot::from_resources(&res3))
        .is_empty());
    c.silent().await;
}

#[tokio::test]
async fn node_metadata_gives_client() {
    let info = mesh_xds::node::NodeInfo::from_node(&node());
    let c = info.client();
    assert_eq!(c.namespace, "bookinfo");
    assert_eq!(c.labels.get("app").map(String::as_str), Some("productpage"));
    assert_eq!(c.service_account.as_deref(), Some("bookinfo-productpage"));
    let bare = Node {
        id: NODE.into(),
        ..Default::default()
    };
    assert_eq!(mesh_xds::node::client(&bare).namespace, "bookinfo");
}

async fn next_event(rx: &mut tokio::sync::broadcast::Receiver<ServerEvent>) -> ServerEvent {
    tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .expect("an event in time")
        .unwrap()
}

#[tokio::test]
async fn server_events_and_connected_nodes() {
    let cache = SnapshotCache::new();
    let res = bookinfo();
    cache.set_snapshot(NODE, Snapshot::from_resources(&res));
    let server = AdsServer::new(cache.clone());
    let mut events = server.events();
    // On loopback: the Connected event carries the peer's address.
    let addr = ads::serve_tcp(server).await;
    assert!(cache.nodes().is_empty());
    let mut c = Client::connect(&addr, node()).await;

    c.send(types::CLUSTER, &[], None).await;
    let cds = c.recv().await;
    let ServerEvent::Connected {
        node: info,
        stream_id,
        peer,
    } = next_event(&mut events).await
    else {
        panic!("expected Connected first")
    };
    assert_eq!(info.id, NODE);
    assert_eq!(info.namespace.as_deref(), Some("bookinfo"));
    assert!(peer.unwrap().ip().is_loopback());
    match next_event(&mut events).await {
        ServerEvent::Pushed {
            node_id,
            type_url,
            version,
            nonce,
            bytes,
        } => {
            let sent: usize = cds.resources.iter().map(|a| a.value.len()).sum();
            assert_eq!(bytes, sent);
            assert_eq!(node_id, NODE);
            assert_eq!(type_url, types::CLUSTER);
            assert_eq!(version, cds.version_info);
            assert_eq!(nonce, cds.nonce);
        }
        e => panic!("expected Pushed, got {e:?}"),
    }
    assert_eq!(cache.nodes(), [NODE]);
    let connected = cache.connected();
    assert_eq!(connected[0].streams, 1);
    assert_eq!(
        connected[0].info.service_account.as_deref(),
        Some("bookinfo-productpage")
    );
    // Sent, not yet ACKed: pending.
    let st = &cache.status(NODE)[types::CLUSTER];
    assert_eq!(st.pending.as_deref(), Some(cds.version_info.as_str()));
    assert_eq!(st.acked, None);

    c.ack(&cds, &[]).await;
    match next_event(&mut events).await {
        ServerEvent::Acked {
            node_id,
            type_url,
            version,
        } => assert_eq!(
            (node_id.as_str(), type_url.as_str(), version.as_str()),
            (NODE, types::CLUSTER, cds.version_info.as_str())
        ),
        e => panic!("expected Acked, got {e:?}"),
    }
    let st = &cache.status(NODE)[types::CLUSTER];
    assert_eq!(st.pending, None);
    assert_eq!(st.acked.as_deref(), Some(cds.version_info.as_str()));

    // LDS, then a NACK of it.
    c.send(types::LISTENER, &[], None).await;
    let lds = c.recv().await;
    assert!(matches!(
        next_event(&mut events).await,
        ServerEvent::Pushed { .. }
    ));
    c.nack(&lds, &[], "listener rejected: bad filter").await;
    match next_event(&mut events).await {
        ServerEvent::Nacked {
            type_url,
            version,
            message,
            ..
        } => {
            assert_eq!(type_url, types::LISTENER);
            assert_eq!(version, lds.version_info);
            assert_eq!(message, "listener rejected: bad filter");
        }
        e => panic!("expected Nacked, got {e:?}"),
    }
    let st = &cache.status(NODE)[types::LISTENER];
    assert_eq!(
        st.last_nack.as_ref().unwrap().rejected_version,
        lds.version_info
    );
    assert_eq!(st.acked, None);

    // The client goes away.
    drop(c);
    match next_event(&mut events).await {
        ServerEvent::Disconnected {
            node_id,
            stream_id: id,
        } => assert_eq!((node_id.as_str(), id), (NODE, stream_id)),
        e => panic!("expected Disconnected, got {e:?}"),
    }
    assert!(cache.nodes().is_empty());
    // The snapshot stays for when it comes back.
    assert_eq!(cache.snapshot_nodes(), [NODE]);
}
