//! The State-of-the-World protocol of one ADS stream as a state machine,
//! free of I/O: requests and snapshot changes in, responses out.
//!
//! Rules (the xDS protocol's, as Envoy and gRPC clients expect them):
//! - A request whose `response_nonce` is not the last nonce sent for its
//!   type is stale and ignored.
//! - `error_detail` set means NACK: it is recorded (per node and type) and
//!   nothing is re-sent until the snapshot or the subscription changes, so a
//!   rejected version is never pushed in a loop. Otherwise a request with
//!   the last nonce is an ACK of `version_info`.
//! - LDS and CDS requests with no names (or `*`) subscribe to everything;
//!   otherwise, and always for RDS and EDS, only the names asked for.
//! - A response carries every subscribed resource that exists; names that
//!   do not exist are left out (gRPC then runs its does-not-exist timer).
//! - On a snapshot change, types are pushed CDS, EDS, LDS, RDS (then any
//!   others), and only the types whose version moved.

use std::collections::{BTreeMap, BTreeSet};

use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};

use super::cache::{Nack, SnapshotCache, Versioned};
use crate::types;

/// Push order on a snapshot change (make before break).
pub const PUSH_ORDER: [&str; 4] = [
    types::CLUSTER,
    types::ENDPOINT,
    types::LISTENER,
    types::ROUTE,
];

#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Subscription {
    wildcard: bool,
    names: BTreeSet<String>,
}

#[derive(Debug, Default)]
struct TypeState {
    sub: Subscription,
    /// Version and subscription of the last response.
    sent: Option<(String, Subscription)>,
    last_nonce: String,
}

/// One stream's protocol state.
#[derive(Debug)]
pub struct StreamState {
    node: Option<String>,
    types: BTreeMap<String, TypeState>,
    nonce: u64,
    cache: SnapshotCache,
}

/// What a request was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestKind {
    /// First request for a type on this stream (or a subscription change).
    Subscribe,
    /// ACK of a version.
    Ack(String),
    /// NACK: the rejected version and the client's message.
    Nack(Nack),
    /// Stale nonce; ignored.
    Stale,
}

fn wildcard_type(type_url: &str) -> bool {
    type_url == types::LISTENER || type_url == types::CLUSTER
}

impl StreamState {
    /// A fresh stream that records status into `cache`.
    pub fn new(cache: SnapshotCache) -> Self {
        Self {
            node: None,
            types: BTreeMap::new(),
            nonce: 0,
            cache,
        }
    }

    /// The node id, once a request named it.
    pub fn node(&self) -> Option<&str> {
        self.node.as_deref()
    }

    /// Sets the node id (the first request carries it).
    pub fn set_node(&mut self, id: &str) {
        if self.node.is_none() {
            self.node = Some(id.to_string());
        }
    }

    /// Handles a request; returns its kind and the response to send, if any.
    pub fn on_request(
        &mut self,
        req: &DiscoveryRequest,
        snap: Option<&Versioned>,
    ) -> (RequestKind, Option<DiscoveryResponse>) {
        let type_url = req.type_url.clone();
        let node = self.node.clone().unwrap_or_default();
        let st = self.types.entry(type_url.clone()).or_default();
        let kind = if !req.response_nonce.is_empty() && req.response_nonce != st.last_nonce {
            return (RequestKind::Stale, None);
        } else if let Some(err) = &req.error_detail {
            let rejected = st.sent.as_ref().map(|s| s.0.clone()).unwrap_or_default();
            let nack = Nack {
                rejected_version: rejected,
                nonce: req.response_nonce.clone(),
                message: err.message.clone(),
            };
            tracing::warn!(
                node,
                type_url,
                version = nack.rejected_version,
                message = nack.message,
                "NACK"
            );
            let n = nack.clone();
            self.cache.update_status(&node, &type_url, |s| {
                s.last_nack = Some(n);
                s.pending = None;
                s.nacks += 1;
            });
            RequestKind::Nack(nack)
        } else if req.response_nonce.is_empty() {
            RequestKind::Subscribe
        } else {
            let v = req.version_info.clone();
            self.cache.update_status(&node, &type_url, |s| {
                s.acked = Some(v.clone());
                s.pending = None;
                s.last_nack = None;
            });
            RequestKind::Ack(req.version_info.clone())
        };
        let names: BTreeSet<String> = req.resource_names.iter().cloned().collect();
        st.sub = Subscription {
            wildcard: wildcard_type(&type_url) && (names.is_empty() || names.contains("*")),
            names: names.into_iter().filter(|n| n != "*").collect(),
        };
        let resp = snap.and_then(|s| self.respond(&type_url, s));
        (kind, resp)
    }

    /// Responses for a new snapshot, in push order.
    pub fn on_snapshot(&mut self, snap: &Versioned) -> Vec<DiscoveryResponse> {
        let mut order: Vec<String> = PUSH_ORDER.iter().map(|s| s.to_string()).collect();
        order.extend(
            self.types
                .keys()
                .filter(|t| !PUSH_ORDER.contains(&t.as_str()))
                .cloned(),
        );
        order.retain(|t| self.types.contains_key(t));
        order.iter().filter_map(|t| self.respond(t, snap)).collect()
    }

    fn respond(&mut self, type_url: &str, snap: &Versioned) -> Option<DiscoveryResponse> {
        let version = snap.version(type_url)?.to_string();
        let all = snap.snapshot.resources(type_url)?;
        let st = self.types.get_mut(type_url)?;
        if st
            .sent
            .as_ref()
            .is_some_and(|(v, sub)| *v == version && *sub == st.sub)
        {
            return None;
        }
        let resources = all
            .iter()
            .filter(|(name, _)| st.sub.wildcard || st.sub.names.contains(*name))
            .map(|(_, r)| r.clone())
            .collect();
        self.nonce += 1;
        let nonce = self.nonce.to_string();
        st.last_nonce = nonce.clone();
        st.sent = Some((version.clone(), st.sub.clone()));
        let node = self.node.clone().unwrap_or_default();
        let v = version.clone();
        self.cache.update_status(&node, type_url, |s| {
            s.sent = Some(v.clone());
            s.pending = Some(v);
        });
        Some(DiscoveryResponse {
            version_info: version,
            resources,
            type_url: type_url.to_string(),
            nonce,
            ..Default::default()
        })
    }
}

#[cfg(test)]
mod tests {
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

    fn setup() -> (SnapshotCache, StreamState, Versioned) {
        let cache = SnapshotCache::new();
        let mut s = Snapshot::new();
        s.insert(types::CLUSTER, "a", res("a"));
        s.insert(types::CLUSTER, "b", res("b"));
        s.insert(types::ENDPOINT, "a", res("ea"));
        cache.set_snapshot("n", s);
        let snap = (*cache.snapshot("n").unwrap()).clone();
        let mut st = StreamState::new(cache.clone());
        st.set_node("n");
        (cache, st, snap)
    }

    #[test]
    fn wildcard_named_and_missing() {
        let (_, mut st, snap) = setup();
        let (k, r) = st.on_request(&req(types::CLUSTER, &["*"], "", ""), Some(&snap));
        assert_eq!(k, RequestKind::Subscribe);
        assert_eq!(r.unwrap().resources.len(), 2);
        let (_, r) = st.on_request(&req(types::ENDPOINT, &["a", "zz"], "", ""), Some(&snap));
        assert_eq!(r.unwrap().resources.len(), 1);
        // EDS with no names subscribes to nothing (no wildcard for EDS).
        let (_, r) = st.on_request(&req(types::ENDPOINT, &[], "", "2"), Some(&snap));
        assert_eq!(r.unwrap().resources.len(), 0);
    }

    #[test]
    fn stale_ack_nack_and_resubscribe() {
        let (cache, mut st, snap) = setup();
        let (_, r) = st.on_request(&req(types::CLUSTER, &[], "", ""), Some(&snap));
        let r = r.unwrap();
        // Stale nonce: ignored.
        let (k, out) = st.on_request(&req(types::CLUSTER, &[], "", "999"), Some(&snap));
        assert_eq!((k, out), (RequestKind::Stale, None));
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
        assert!(out.is_none());
        assert_eq!(cache.status("n")[types::CLUSTER].nacks, 1);
        // Same again (a client retrying its NACK): still nothing.
        assert!(st.on_request(&nack, Some(&snap)).1.is_none());
        // A new subscription at the same version is answered.
        let (_, out) = st.on_request(&req(types::CLUSTER, &["a"], "", &r.nonce), Some(&snap));
        let out = out.unwrap();
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
        assert!(out.is_none());
        let status = &cache.status("n")[types::CLUSTER];
        assert!(status.last_nack.is_none());
        assert_eq!(status.acked.as_deref(), Some(r.version_info.as_str()));
    }

    #[test]
    fn snapshot_pushes_only_subscribed_changed_types_in_order() {
        let (cache, mut st, snap) = setup();
        let (_, r) = st.on_request(&req(types::ENDPOINT, &["a"], "", ""), Some(&snap));
        assert!(r.is_some());
        let (_, r) = st.on_request(&req(types::CLUSTER, &[], "", ""), Some(&snap));
        assert!(r.is_some());
        let mut s = snap.snapshot.clone();
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
}
