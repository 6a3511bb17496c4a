//! Unit tests of the Delta stream state machine, driven without sockets.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;

use envoy_types::pb::envoy::service::discovery::v3::DeltaDiscoveryRequest;
use envoy_types::pb::google::protobuf::Any;

use super::cache::{Snapshot, SnapshotCache};
use super::delta::DeltaState;
use super::stream::RequestKind;
use crate::types;

fn res(n: &str) -> Any {
    Any {
        type_url: "t".into(),
        value: n.as_bytes().to_vec(),
    }
}

fn sub(type_url: &str, names: &[&str]) -> DeltaDiscoveryRequest {
    DeltaDiscoveryRequest {
        type_url: type_url.into(),
        resource_names_subscribe: names.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

fn ack(type_url: &str, nonce: &str) -> DeltaDiscoveryRequest {
    DeltaDiscoveryRequest {
        type_url: type_url.into(),
        response_nonce: nonce.into(),
        ..Default::default()
    }
}

#[test]
fn wildcard_star_and_unsubscribe() {
    let cache = SnapshotCache::new();
    let mut s = Snapshot::new();
    s.insert(types::CLUSTER, "a", res("a"));
    s.insert(types::CLUSTER, "b", res("b"));
    cache.set_snapshot("n", s);
    let snap = cache.snapshot("n").unwrap();
    let mut st = DeltaState::new(cache.clone());
    st.set_node("n");
    // Explicitly named first: not wildcard.
    let (_, out) = st.on_request(&sub(types::CLUSTER, &["a"]), Some(&snap));
    assert_eq!(out[0].resources.len(), 1);
    let (k, out) = st.on_request(&ack(types::CLUSTER, &out[0].nonce), Some(&snap));
    assert!(matches!(k, RequestKind::Ack(_)) && out.is_empty());
    // "*" adds everything else.
    let (_, out) = st.on_request(&sub(types::CLUSTER, &["*"]), Some(&snap));
    assert_eq!(out[0].resources[0].name, "b");
    // A stale nonce is not an ACK.
    let (k, _) = st.on_request(&ack(types::CLUSTER, "999"), Some(&snap));
    assert_eq!(k, RequestKind::Stale);
}

#[test]
fn reconnect_with_unknown_route_content_keeps_clusters_until_routes_acked() {
    let cache = SnapshotCache::new();
    let mut s = Snapshot::new();
    s.insert(types::CLUSTER, "a", res("a"));
    s.insert(types::ROUTE, "r", res("r-to-a"));
    cache.set_snapshot("n", s);
    let snap = cache.snapshot("n").unwrap();
    let mut st = DeltaState::new(cache.clone());
    st.set_node("n");
    let va = snap
        .resource_version(types::CLUSTER, "a")
        .unwrap()
        .to_string();
    // The client had a and b, and routes r at a version we do not know.
    let initial = |v: &[(&str, &str)]| -> HashMap<String, String> {
        v.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    };
    let mut rds = sub(types::ROUTE, &["r"]);
    rds.initial_resource_versions = initial(&[("r", "old")]);
    let mut cds = sub(types::CLUSTER, &[]);
    cds.initial_resource_versions = initial(&[("a", &va), ("b", "old")]);
    let (_, out) = st.on_request(&cds, Some(&snap));
    // The first wildcard answer says what changed: nothing (b is kept: the
    // client's routes may use it).
    assert!(out[0].resources.is_empty() && out[0].removed_resources.is_empty());
    st.on_request(&ack(types::CLUSTER, &out[0].nonce), Some(&snap));
    let (_, out) = st.on_request(&rds, Some(&snap));
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].type_url, types::ROUTE);
    // Once the new routes are ACKed, b goes.
    let (_, out) = st.on_request(&ack(types::ROUTE, &out[0].nonce), Some(&snap));
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].removed_resources, ["b"]);
}
