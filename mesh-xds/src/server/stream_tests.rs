//! Unit tests of the SotW stream state machine.
#![allow(clippy::unwrap_used, clippy::expect_used)]
use super::*;
use crate::server::cache::Snapshot;
use envoy_types::pb::google::protobuf::Any;
use envoy_types::pb::google::rpc::Status;

fn res(n: &str) -> Any {
    Any {
        type_url: "t".into(),
        value: n.as_bytes().to_vec(),
    }
}

fn req(type_url: &str, names: &[&str], version: &str, nonce: &str) -> DiscoveryRequest {
    DiscoveryRequest {
        type_url: type_url.into(),
        resource_names: names.iter().map(|s| s.to_string()).collect(),
        version_info: version.into(),
        response_nonce: nonce.into(),
        ..Default::default()
    }
}

fn setup() -> (SnapshotCache, StreamState, Arc<Versioned>) {
    let cache = SnapshotCache::new();
    let mut s = Snapshot::new();
    s.insert(types::CLUSTER, "a", res("a"));
    s.insert(types::CLUSTER, "b", res("b"));
    s.insert(types::ENDPOINT, "a", res("ea"));
    cache.set_snapshot("n", s);
    let snap = cache.snapshot("n").unwrap();
    let mut st = StreamState::new(cache.clone());
    st.set_node("n");
    (cache, st, snap)
}

#[test]
fn wildcard_named_and_missing() {
    let (_, mut st, snap) = setup();
    let (k, r) = st.on_request(&req(types::CLUSTER, &["*"], "", ""), Some(&snap));
    assert_eq!(k, RequestKind::Subscribe);
    assert_eq!(r[0].resources.len(), 2);
    let (_, r) = st.on_request(&req(types::ENDPOINT, &["a", "zz"], "", ""), Some(&snap));
    assert_eq!(r[0].resources.len(), 1);
    // EDS with no names subscribes to nothing (no wildcard for EDS),
    // and names that do not exist are not answered (does-not-exist
    // timer).
    let (_, r) = st.on_request(&req(types::ENDPOINT, &[], "", "2"), Some(&snap));
    assert!(r.is_empty());
    let (_, r) = st.on_request(&req(types::ROUTE, &["nope"], "", ""), Some(&snap));
    assert!(r.is_empty());
    // CDS by name: a missing name is simply absent (full state).
    let (_, r) = st.on_request(&req(types::CLUSTER, &["a", "nope"], "", "1"), Some(&snap));
    assert_eq!(r[0].resources.len(), 1);
}

#[test]
fn stale_ack_nack_and_resubscribe() {
    let (cache, mut st, snap) = setup();
    let (_, r) = st.on_request(&req(types::CLUSTER, &[], "", ""), Some(&snap));
    let r = r[0].clone();
    // Stale nonce: ignored.
    let (k, out) = st.on_request(&req(types::CLUSTER, &[], "", "999"), Some(&snap));
    assert_eq!((k, out), (RequestKind::Stale, vec![]));
    // NACK: recorded, nothing re-sent.
    let mut nack = req(types::CLUSTER, &[], "", &r.nonce);
    nack.error_detail = Some(Status {
        code: 3,
        message: "no".into(),
        details: vec![],
    });
    let (k, out) = st.on_request(&nack, Some(&snap));
    let RequestKind::Nack(n) = k else {
        panic!("not a NACK: {k:?}")
    };
    assert_eq!(
        (n.rejected_version, n.message),
        (r.version_info.clone(), "no".into())
    );
    assert!(out.is_empty());
    assert_eq!(cache.status("n")[types::CLUSTER].nacks, 1);
    // Same again (a client retrying its NACK): still nothing.
    assert!(st.on_request(&nack, Some(&snap)).1.is_empty());
    // A new subscription at the same version is answered.
    let (_, out) = st.on_request(&req(types::CLUSTER, &["a"], "", &r.nonce), Some(&snap));
    let out = out[0].clone();
    assert_eq!(
        (out.version_info.as_str(), out.resources.len()),
        (r.version_info.as_str(), 1)
    );
    // ACK clears the NACK.
    let (k, out) = st.on_request(
        &req(types::CLUSTER, &["a"], &out.version_info, &out.nonce),
        Some(&snap),
    );
    assert_eq!(k, RequestKind::Ack(r.version_info.clone()));
    assert!(out.is_empty());
    let status = &cache.status("n")[types::CLUSTER];
    assert!(status.last_nack.is_none());
    assert_eq!(status.acked.as_deref(), Some(r.version_info.as_str()));
}

#[test]
fn snapshot_pushes_only_subscribed_changed_types_in_order() {
    let (cache, mut st, snap) = setup();
    let (_, r) = st.on_request(&req(types::ENDPOINT, &["a"], "", ""), Some(&snap));
    assert!(!r.is_empty());
    let (_, r) = st.on_request(&req(types::CLUSTER, &[], "", ""), Some(&snap));
    assert!(!r.is_empty());
    let mut s = (*snap.content.snapshot).clone();
    s.insert(types::CLUSTER, "c", res("c"));
    s.insert(types::ENDPOINT, "a", res("ea2"));
    s.insert(types::LISTENER, "l", res("l"));
    assert_eq!(cache.set_snapshot("n", s).len(), 3);
    let v = cache.snapshot("n").unwrap();
    let out: Vec<String> = st.on_snapshot(&v).into_iter().map(|r| r.type_url).collect();
    // LDS is not subscribed on this stream.
    assert_eq!(out, [types::CLUSTER, types::ENDPOINT]);
    assert!(st.on_snapshot(&v).is_empty());
    // A type dropped from the snapshot is pushed empty.
    let mut s = Snapshot::new();
    s.insert(types::ENDPOINT, "a", res("ea2"));
    s.insert(types::LISTENER, "l", res("l"));
    assert_eq!(cache.set_snapshot("n", s), [types::CLUSTER]);
    let v = cache.snapshot("n").unwrap();
    let out = st.on_snapshot(&v);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].type_url, types::CLUSTER);
    assert!(out[0].resources.is_empty());
}

#[test]
fn subscription_change_after_nack_is_not_an_ack() {
    let (cache, mut st, snap) = setup();
    let (_, r) = st.on_request(&req(types::CLUSTER, &[], "", ""), Some(&snap));
    let v1 = r[0].clone();
    st.on_request(
        &req(types::CLUSTER, &[], &v1.version_info, &v1.nonce),
        Some(&snap),
    );
    let mut s = (*snap.content.snapshot).clone();
    s.insert(types::CLUSTER, "c", res("c"));
    cache.set_snapshot("n", s);
    let snap2 = cache.snapshot("n").unwrap();
    let v2 = st.on_snapshot(&snap2).remove(0);
    let mut nack = req(types::CLUSTER, &[], &v1.version_info, &v2.nonce);
    nack.error_detail = Some(Status {
        code: 3,
        message: "no".into(),
        details: vec![],
    });
    st.on_request(&nack, Some(&snap2));
    // Same nonce, the old version, no error: a subscription change.
    let (k, out) = st.on_request(
        &req(types::CLUSTER, &["a"], &v1.version_info, &v2.nonce),
        Some(&snap2),
    );
    assert_eq!(k, RequestKind::Subscribe);
    assert_eq!(out.len(), 1, "the new subscription is answered");
    let status = &cache.status("n")[types::CLUSTER];
    assert_eq!(status.acked.as_deref(), Some(v1.version_info.as_str()));
    assert!(status.last_nack.is_some(), "the NACK stands");
}

/// A stream subscribed to EDS `a` and `b`, both ACKed.
fn eds_synced() -> (SnapshotCache, StreamState) {
    let cache = SnapshotCache::new();
    let mut s = Snapshot::new();
    s.insert(types::ENDPOINT, "a", res("ea"));
    s.insert(types::ENDPOINT, "b", res("eb"));
    cache.set_snapshot("n", s);
    let snap = cache.snapshot("n").unwrap();
    let mut st = StreamState::new(cache.clone());
    st.set_node("n");
    let (_, r) = st.on_request(&req(types::ENDPOINT, &["a", "b"], "", ""), Some(&snap));
    assert_eq!(r[0].resources.len(), 2);
    let ack = req(
        types::ENDPOINT,
        &["a", "b"],
        &r[0].version_info,
        &r[0].nonce,
    );
    assert!(st.on_request(&ack, Some(&snap)).1.is_empty());
    (cache, st)
}

fn values(r: &DiscoveryResponse) -> Vec<String> {
    r.resources
        .iter()
        .map(|a| String::from_utf8(a.value.clone()).unwrap())
        .collect()
}

#[test]
fn endpoints_and_routes_carry_only_what_changed() {
    let (cache, mut st) = eds_synced();
    let mut s = Snapshot::new();
    s.insert(types::ENDPOINT, "a", res("ea"));
    s.insert(types::ENDPOINT, "b", res("eb2"));
    cache.set_snapshot("n", s);
    let out = st.on_snapshot(&cache.snapshot("n").unwrap());
    assert_eq!(out.len(), 1);
    // a is unchanged and the client holds it: only b goes out.
    assert_eq!(values(&out[0]), ["eb2"]);
}

#[test]
fn a_name_asked_for_again_is_sent_again() {
    let (cache, mut st) = eds_synced();
    let snap = cache.snapshot("n").unwrap();
    // The client stops watching b (and forgets it), then watches it again;
    // nothing changed on the server meanwhile.
    let status = cache.status("n");
    let v = status[types::ENDPOINT].acked.clone().unwrap();
    let (_, r) = st.on_request(&req(types::ENDPOINT, &["a"], &v, "1"), Some(&snap));
    assert!(r.is_empty(), "nothing new for a");
    let (_, r) = st.on_request(&req(types::ENDPOINT, &["a", "b"], &v, "1"), Some(&snap));
    assert_eq!(r.len(), 1);
    assert_eq!(values(&r[0]), ["eb"]);
}

#[test]
fn after_a_nack_what_the_client_acked_is_the_reference() {
    let (cache, mut st) = eds_synced();
    let v1 = cache.status("n")[types::ENDPOINT].acked.clone().unwrap();
    let mut s = Snapshot::new();
    s.insert(types::ENDPOINT, "a", res("ea2"));
    s.insert(types::ENDPOINT, "b", res("eb"));
    cache.set_snapshot("n", s);
    let snap2 = cache.snapshot("n").unwrap();
    let r2 = st.on_snapshot(&snap2).remove(0);
    assert_eq!(values(&r2), ["ea2"]);
    let mut nack = req(types::ENDPOINT, &["a", "b"], &v1, &r2.nonce);
    nack.error_detail = Some(Status {
        code: 3,
        message: "no".into(),
        details: Vec::new(),
    });
    assert!(st.on_request(&nack, Some(&snap2)).1.is_empty());
    // b changes: the client still lacks a's new endpoints, so both go.
    let mut s = Snapshot::new();
    s.insert(types::ENDPOINT, "a", res("ea2"));
    s.insert(types::ENDPOINT, "b", res("eb3"));
    cache.set_snapshot("n", s);
    let r3 = st.on_snapshot(&cache.snapshot("n").unwrap()).remove(0);
    assert_eq!(values(&r3), ["ea2", "eb3"]);
}

#[test]
fn a_version_with_nothing_new_for_the_client_counts_as_held() {
    let (cache, mut st) = eds_synced();
    let snap1 = cache.snapshot("n").unwrap();
    // c changes, which this client does not ask for: nothing is sent, and
    // the client is current at the new version.
    let mut s = Snapshot::new();
    s.insert(types::ENDPOINT, "a", res("ea"));
    s.insert(types::ENDPOINT, "b", res("eb"));
    s.insert(types::ENDPOINT, "c", res("ec"));
    cache.set_snapshot("n", s);
    let snap2 = cache.snapshot("n").unwrap();
    assert!(st.on_snapshot(&snap2).is_empty());
    assert_eq!(
        cache.status("n")[types::ENDPOINT].acked.as_deref(),
        snap2.version(types::ENDPOINT)
    );

    // With a response in flight, only its ACK makes the client current.
    let mut s = Snapshot::new();
    s.insert(types::ENDPOINT, "a", res("ea2"));
    s.insert(types::ENDPOINT, "b", res("eb"));
    s.insert(types::ENDPOINT, "c", res("ec"));
    cache.set_snapshot("n", s);
    let snap3 = cache.snapshot("n").unwrap();
    let r3 = st.on_snapshot(&snap3).remove(0);
    let mut s = Snapshot::new();
    s.insert(types::ENDPOINT, "a", res("ea2"));
    s.insert(types::ENDPOINT, "b", res("eb"));
    s.insert(types::ENDPOINT, "c", res("ec2"));
    cache.set_snapshot("n", s);
    let snap4 = cache.snapshot("n").unwrap();
    assert!(st.on_snapshot(&snap4).is_empty());
    assert_eq!(
        cache.status("n")[types::ENDPOINT].acked.as_deref(),
        snap2.version(types::ENDPOINT),
        "a response is in flight"
    );
    let ack = req(types::ENDPOINT, &["a", "b"], &r3.version_info, &r3.nonce);
    assert!(st.on_request(&ack, Some(&snap4)).1.is_empty());
    assert_eq!(
        cache.status("n")[types::ENDPOINT].acked.as_deref(),
        snap4.version(types::ENDPOINT)
    );
    assert_ne!(
        snap1.version(types::ENDPOINT),
        snap4.version(types::ENDPOINT)
    );
}
