//! The State-of-the-World protocol of one ADS stream as a state machine,
//! free of I/O: requests and snapshot changes in, responses out.
//!
//! Rules (the xDS protocol's, as Envoy and gRPC clients expect them):
//! - A request whose `response_nonce` is not the last nonce sent for its
//!   type is stale and ignored.
//! - `error_detail` set means NACK: it is recorded (per node and type) and
//!   nothing is re-sent until the snapshot or the subscription changes, so a
//!   rejected version is never pushed in a loop. Otherwise a request with
//!   the last nonce and the version sent is an ACK; with an older version
//!   (the client kept it after a NACK) it only changes the subscription.
//! - LDS and CDS requests with no names (or `*`) subscribe to everything;
//!   otherwise, and always for RDS and EDS, only the names asked for.
//! - A response carries every subscribed resource that exists; names that
//!   do not exist are left out. For LDS and CDS (full state) the client
//!   takes absence as does-not-exist at once; for RDS and EDS gRPC runs its
//!   15 s does-not-exist timer (gRFC A53).
//! - RDS and EDS responses are not full state (a resource left out is
//!   neither removed nor changed on the client), so they carry only what
//!   the client does not hold: new names, changed resources, and names it
//!   asks for again after dropping them. A response that would carry
//!   nothing is not sent.
//! - On a snapshot change, types are pushed CDS, EDS, LDS, RDS (then any
//!   others), and only the types whose content moved, subject to the
//!   make-before-break rules of [`super::order`]: listeners and routes that
//!   reference clusters the client has not ACKed are held back until it
//!   has; clusters that the client's routes still use are kept in CDS (and
//!   their endpoints in EDS) until it ACKs routes without them.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::SystemTime;

use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use envoy_types::pb::google::protobuf::Any;

use super::cache::{Nack, SnapshotCache, Versioned};
use super::order::{self, ClientView};
use super::record::Holdings;
use crate::types;

/// Push order on a snapshot change (make before break).
pub const PUSH_ORDER: [&str; 4] = [
    types::CLUSTER,
    types::ENDPOINT,
    types::LISTENER,
    types::ROUTE,
];

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Subscription {
    pub(crate) wildcard: bool,
    pub(crate) names: BTreeSet<String>,
}

impl Subscription {
    pub(crate) fn wants(&self, name: &str) -> bool {
        self.wildcard || self.names.contains(name)
    }
}

/// What one response carried: enough to know what the client holds
/// without copying resources (the snapshot is shared).
#[derive(Debug, Clone)]
struct Sent {
    type_url: String,
    version: String,
    sub: Arc<Subscription>,
    /// The response's nonce.
    nonce: u64,
    snap: Arc<Versioned>,
    /// Resources kept from earlier responses that the snapshot dropped.
    kept: BTreeMap<String, Any>,
}

impl Sent {
    fn names<'a>(&'a self, type_url: &str) -> Vec<&'a String> {
        let mut v: Vec<&String> = self
            .snap
            .resources(type_url)
            .map(|r| r.pick(self.sub.wildcard, &self.sub.names))
            .unwrap_or_default()
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        v.extend(self.kept.keys());
        v
    }

    fn get(&self, type_url: &str, name: &str) -> Option<&Any> {
        self.kept.get(name).or_else(|| {
            self.snap
                .resources(type_url)?
                .get(name)
                .filter(|_| self.sub.wants(name))
        })
    }

    /// Clusters referenced by what this response carried.
    /// Clusters referenced by what this response carried and the client
    /// still subscribes to (`now`): a route configuration it dropped (its
    /// listener went) uses nothing any more.
    fn refs(&self, type_url: &str, now: &Subscription, out: &mut BTreeSet<String>) {
        for n in self.names(type_url).into_iter().filter(|n| now.wants(n)) {
            if let Some(c) = self.snap.clusters_of(type_url, n) {
                out.extend(c.iter().cloned());
            }
        }
    }
}

impl Holdings for Sent {
    fn version(&self) -> &str {
        &self.version
    }

    fn each(&self, f: &mut dyn FnMut(&str, &str, &Any)) {
        // In SotW a resource's version is the response's.
        for n in self.names(&self.type_url) {
            if let Some(a) = self.get(&self.type_url, n) {
                f(n, &self.version, a);
            }
        }
    }
}

#[derive(Debug, Default)]
struct TypeState {
    sub: Arc<Subscription>,
    /// The last response.
    sent: Option<Arc<Sent>>,
    /// The last response the client ACKed.
    acked: Option<Arc<Sent>>,
    /// The last response was NACKed: the client holds what it ACKed.
    nacked: bool,
    /// Names unsubscribed, with the stream's last nonce then: a client
    /// forgets a resource it stops watching, so one it asks for again is
    /// sent again, until it ACKs a response sent after that.
    forgotten: BTreeMap<String, u64>,
    last_nonce: String,
}

impl TypeState {
    fn names(&self, type_url: &str) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        for s in [&self.sent, &self.acked].into_iter().flatten() {
            out.extend(s.names(type_url).into_iter().cloned());
        }
        out
    }

    fn acked_names(&self, type_url: &str) -> BTreeSet<String> {
        self.acked
            .as_ref()
            .map(|a| a.names(type_url).into_iter().cloned().collect())
            .unwrap_or_default()
    }

    fn get(&self, type_url: &str, name: &str) -> Option<&Any> {
        [&self.sent, &self.acked]
            .into_iter()
            .flatten()
            .find_map(|s| s.get(type_url, name))
    }

    fn refs(&self, type_url: &str, out: &mut BTreeSet<String>) {
        for s in [&self.sent, &self.acked].into_iter().flatten() {
            s.refs(type_url, &self.sub, out);
        }
    }
}

/// One stream's protocol state.
#[derive(Debug)]
pub struct StreamState {
    node: Option<String>,
    types: BTreeMap<String, TypeState>,
    nonce: u64,
    cache: SnapshotCache,
    /// EDS names of clusters ACKed since the last EDS request.
    awaiting_eds: BTreeSet<String>,
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

pub(crate) fn wildcard_type(type_url: &str) -> bool {
    type_url == types::LISTENER || type_url == types::CLUSTER
}

/// Types in push order: the four xDS types, then any others, keeping only
/// those in `present`.
pub(crate) fn push_order<'a>(present: impl Iterator<Item = &'a String>) -> Vec<String> {
    let present: BTreeSet<&String> = present.collect();
    let mut order: Vec<String> = PUSH_ORDER
        .iter()
        .filter(|t| present.iter().any(|p| p == *t))
        .map(|s| s.to_string())
        .collect();
    order.extend(
        present
            .into_iter()
            .filter(|t| !PUSH_ORDER.contains(&t.as_str()))
            .cloned(),
    );
    order
}

impl StreamState {
    /// A fresh stream that records status into `cache`.
    pub fn new(cache: SnapshotCache) -> Self {
        Self {
            node: None,
            types: BTreeMap::new(),
            nonce: 0,
            cache,
            awaiting_eds: BTreeSet::new(),
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

    /// Handles a request; returns its kind and the responses to send (an
    /// ACK may release held-back types, so there can be several).
    pub fn on_request(
        &mut self,
        req: &DiscoveryRequest,
        snap: Option<&Arc<Versioned>>,
    ) -> (RequestKind, Vec<DiscoveryResponse>) {
        let type_url = req.type_url.clone();
        let node = self.node.clone().unwrap_or_default();
        let eds_on = self.types.contains_key(types::ENDPOINT);
        let eds_sub = match self.types.get(types::ENDPOINT) {
            Some(e) if type_url == types::CLUSTER => e.sub.names.clone(),
            _ => BTreeSet::new(),
        };
        let st = self.types.entry(type_url.clone()).or_default();
        let kind = if !req.response_nonce.is_empty() && req.response_nonce != st.last_nonce {
            return (RequestKind::Stale, Vec::new());
        } else if let Some(err) = &req.error_detail {
            let rejected = st
                .sent
                .as_ref()
                .map(|s| s.version.clone())
                .unwrap_or_default();
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
            self.cache.record(&node, &type_url, |r| {
                r.nacked_at = Some(SystemTime::now());
            });
            let n = nack.clone();
            self.cache.update_status(&node, &type_url, |s| {
                s.last_nack = Some(n);
                s.pending = None;
                s.nacks += 1;
            });
            st.nacked = true;
            RequestKind::Nack(nack)
        } else if req.response_nonce.is_empty()
            || st.sent.as_ref().map(|s| s.version.as_str()) != Some(req.version_info.as_str())
        {
            // No nonce: a first request. A nonce with a version other than
            // the one sent: the client keeps an older version (it NACKed
            // the last one) and is only changing its subscription.
            RequestKind::Subscribe
        } else {
            let before = st.acked_names(&type_url);
            st.acked = st.sent.clone();
            st.nacked = false;
            if let Some(a) = &st.acked {
                // Names the ACKed response was sent for after they were
                // forgotten (so it carried them, when they exist) are held
                // again.
                st.forgotten
                    .retain(|n, at| a.nonce <= *at || !a.sub.wants(n));
            }
            if type_url == types::CLUSTER && eds_on {
                if let Some(a) = &st.acked {
                    for c in a.names(&type_url) {
                        if before.contains(c) {
                            continue;
                        }
                        let eds = a.snap.eds_name(c).cloned();
                        let eds = eds.or_else(|| a.kept.get(c).and_then(super::deps::eds_name));
                        self.awaiting_eds
                            .extend(eds.filter(|e| !eds_sub.contains(e)));
                    }
                }
            }
            if let Some(a) = st.acked.clone() {
                self.cache.record(&node, &type_url, |r| {
                    r.acked = Some((a, SystemTime::now()));
                });
            }
            let v = req.version_info.clone();
            self.cache.update_status(&node, &type_url, |s| {
                s.acked = Some(v.clone());
                s.pending = None;
                s.last_nack = None;
            });
            RequestKind::Ack(req.version_info.clone())
        };
        let names: BTreeSet<String> = req.resource_names.iter().cloned().collect();
        let Some(st) = self.types.get_mut(&type_url) else {
            return (kind, Vec::new());
        };
        let sub = Subscription {
            wildcard: wildcard_type(&type_url) && (names.is_empty() || names.contains("*")),
            names: names.into_iter().filter(|n| n != "*").collect(),
        };
        if !sub.wildcard {
            let dropped: Vec<String> = st.sub.names.difference(&sub.names).cloned().collect();
            let at = self.nonce;
            st.forgotten.extend(dropped.into_iter().map(|n| (n, at)));
        }
        if *st.sub != sub {
            // Shared with the responses sent under it, not copied.
            st.sub = Arc::new(sub);
        }
        if type_url == types::ENDPOINT {
            // The client has said which endpoints it wants.
            self.awaiting_eds.clear();
        }
        let out = snap.map(|s| self.plan(s)).unwrap_or_default();
        (kind, out)
    }

    /// Responses for a new snapshot, in push order.
    pub fn on_snapshot(&mut self, snap: &Arc<Versioned>) -> Vec<DiscoveryResponse> {
        self.plan(snap)
    }

    fn plan(&mut self, snap: &Arc<Versioned>) -> Vec<DiscoveryResponse> {
        push_order(self.types.keys())
            .iter()
            .filter_map(|t| self.respond(t, snap))
            .collect()
    }

    /// Clusters referenced by the listeners and routes the client has or
    /// is being sent.
    fn in_use(&self) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        for t in [types::LISTENER, types::ROUTE] {
            if let Some(st) = self.types.get(t) {
                st.refs(t, &mut out);
            }
        }
        out
    }

    fn kept_clusters(&self, snap: &Versioned) -> BTreeMap<String, Any> {
        let Some(cds) = self.types.get(types::CLUSTER) else {
            return BTreeMap::new();
        };
        // Fast path: everything the client has came from this snapshot.
        let from_here = |s: &Option<Arc<Sent>>| {
            s.as_ref()
                .is_none_or(|s| std::ptr::eq(Arc::as_ptr(&s.snap), snap) && s.kept.is_empty())
        };
        if from_here(&cds.sent) && from_here(&cds.acked) {
            return BTreeMap::new();
        }
        let current = cds.names(types::CLUSTER);
        let now = snap.resources(types::CLUSTER);
        if current
            .iter()
            .all(|c| now.is_some_and(|m| m.contains_key(c)))
        {
            return BTreeMap::new();
        }
        order::kept_clusters(&current, snap, &self.in_use())
            .into_iter()
            .filter_map(|c| {
                let a = cds.get(types::CLUSTER, &c)?.clone();
                Some((c, a))
            })
            .collect()
    }

    fn kept_endpoints(&self, snap: &Versioned) -> BTreeMap<String, Any> {
        let Some(eds) = self.types.get(types::ENDPOINT) else {
            return BTreeMap::new();
        };
        let kept = self.kept_clusters(snap);
        let now = snap.resources(types::ENDPOINT);
        order::kept_endpoints(snap, &kept)
            .into_iter()
            .filter(|n| !now.is_some_and(|m| m.contains_key(n)))
            .filter_map(|n| {
                let a = eds.get(types::ENDPOINT, &n)?.clone();
                Some((n, a))
            })
            .collect()
    }

    fn view(&self) -> ClientView {
        let acked = |t: &str| {
            self.types
                .get(t)
                .map(|s| s.acked_names(t))
                .unwrap_or_default()
        };
        let cds = self.types.get(types::CLUSTER);
        ClientView {
            cds_subscribed: cds.is_some(),
            cds_wildcard: cds.is_some_and(|c| c.sub.wildcard),
            cds_names: cds.map(|c| c.sub.names.clone()).unwrap_or_default(),
            acked_clusters: acked(types::CLUSTER),
            eds_subscribed: self
                .types
                .get(types::ENDPOINT)
                .map(|s| s.sub.names.clone())
                .unwrap_or_default(),
            acked_endpoints: acked(types::ENDPOINT),
            awaiting_eds: self.awaiting_eds.clone(),
        }
    }

    /// The cluster that holds back `type_url` (a listener or route type)
    /// from `snap`, if any.
    fn held_by(&self, type_url: &str, snap: &Versioned) -> Option<String> {
        let st = self.types.get(type_url)?;
        let mut have = BTreeSet::new();
        st.refs(type_url, &mut have);
        let mut new_refs = BTreeSet::new();
        for (n, _) in snap
            .resources(type_url)?
            .pick(st.sub.wildcard, &st.sub.names)
        {
            if let Some(c) = snap.clusters_of(type_url, n) {
                new_refs.extend(c.difference(&have).cloned());
            }
        }
        if new_refs.is_empty() {
            return None;
        }
        order::not_ready(&self.view(), snap, &self.kept_clusters(snap), &new_refs)
    }

    fn respond(&mut self, type_url: &str, snap: &Arc<Versioned>) -> Option<DiscoveryResponse> {
        let base = snap.version(type_url)?.to_string();
        let kept = match type_url {
            types::CLUSTER => self.kept_clusters(snap),
            types::ENDPOINT => self.kept_endpoints(snap),
            _ => BTreeMap::new(),
        };
        let version = order::version_with_kept(&base, &kept);
        let node = self.node.clone().unwrap_or_default();
        {
            let st = self.types.get(type_url)?;
            let asked_again = st.forgotten.keys().any(|n| st.sub.wants(n));
            if !asked_again
                && st
                    .sent
                    .as_ref()
                    .is_some_and(|s| s.version == version && s.sub == st.sub)
            {
                return None;
            }
        }
        if matches!(type_url, types::LISTENER | types::ROUTE) {
            if let Some(c) = self.held_by(type_url, snap) {
                tracing::debug!(
                    node,
                    type_url,
                    version,
                    cluster = c,
                    "held back until the client ACKs the cluster"
                );
                let v = version.clone();
                self.cache
                    .update_status(&node, type_url, |s| s.held = Some(v));
                return None;
            }
        }
        let st = self.types.get_mut(type_url)?;
        let kept: BTreeMap<String, Any> =
            kept.into_iter().filter(|(n, _)| st.sub.wants(n)).collect();
        // In name order, kept resources among the others.
        let mut all: BTreeMap<&String, &Any> = snap
            .resources(type_url)?
            .pick(st.sub.wildcard, &st.sub.names)
            .into_iter()
            .chain(kept.iter())
            .collect();
        if !wildcard_type(type_url) {
            // RDS and EDS are not full state: a resource left out of a
            // response is neither removed nor changed on the client, so
            // only what it does not hold yet goes out (one route table of
            // fifty when one VirtualService changed). Nothing new means no
            // response at all; names that exist nowhere are covered by
            // gRPC's does-not-exist timer. After a NACK, the reference is
            // what the client last ACKed.
            let holds = if st.nacked { &st.acked } else { &st.sent };
            if let Some(h) = holds {
                let forgotten = &st.forgotten;
                all.retain(|n, a| forgotten.contains_key(*n) || h.get(type_url, n) != Some(*a));
            }
            if all.is_empty() {
                // This version has nothing for the client beyond what it
                // holds: with nothing in flight, it is current (what
                // convergence and the sync view wait for). With a
                // response in flight, its ACK plans again and gets here.
                let in_flight = !st.nacked
                    && st
                        .sent
                        .as_ref()
                        .is_some_and(|s| st.acked.as_ref().is_none_or(|a| !Arc::ptr_eq(a, s)));
                if !in_flight {
                    self.cache.update_status(&node, type_url, |s| {
                        s.acked = Some(version);
                        s.held = None;
                    });
                }
                return None;
            }
        }
        let resources: Vec<Any> = all.into_values().cloned().collect();
        self.nonce += 1;
        let nonce = self.nonce.to_string();
        st.last_nonce = nonce.clone();
        let sent = Arc::new(Sent {
            type_url: type_url.to_string(),
            version: version.clone(),
            sub: st.sub.clone(),
            nonce: self.nonce,
            snap: snap.clone(),
            kept,
        });
        st.sent = Some(sent.clone());
        self.cache.record(&node, type_url, |r| {
            r.sent = Some((sent, SystemTime::now()));
        });
        let v = version.clone();
        self.cache.update_status(&node, type_url, |s| {
            s.sent = Some(v.clone());
            s.pending = Some(v);
            s.held = None;
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
#[path = "stream_tests.rs"]
mod tests;
