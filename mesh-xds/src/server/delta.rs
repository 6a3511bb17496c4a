//! The Delta (incremental) protocol of one ADS stream as a state machine,
//! free of I/O: requests and snapshot changes in, responses out.
//!
//! Rules (Envoy's incremental xDS):
//! - Per type, a subscription: wildcard (LDS/CDS whose first request
//!   subscribes to nothing, or anyone subscribing to `*`) and/or names,
//!   changed by `resource_names_subscribe` / `_unsubscribe`.
//! - The server keeps, per type, what the client has: name -> resource
//!   version (a hash of the encoding, [`super::resource_version`]), seeded
//!   from `initial_resource_versions` on the first request of the type, so
//!   a reconnecting client only gets what differs.
//! - A response carries only resources whose version differs from what the
//!   client has, and names the client has that left the snapshot in
//!   `removed_resources`. Names asked for that never existed are not
//!   answered (the client's does-not-exist timer decides).
//! - A request with `response_nonce` and no `error_detail` ACKs that
//!   response; with `error_detail` it NACKs: recorded, and the rejected
//!   versions are not re-sent until they change (no loop).
//! - Make-before-break as in SotW ([`super::order`]), per resource: a
//!   listener or route that references a cluster the client has not ACKed
//!   is held back alone (others go out); a cluster still referenced by a
//!   listener or route the client has is not removed.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::SystemTime;

use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, Resource,
};
use envoy_types::pb::google::protobuf::Any;

use super::cache::{Nack, SnapshotCache, Versioned};
use super::order::{self, ClientView};
use super::record::Holdings;
use super::stream::{push_order, wildcard_type, RequestKind};
use crate::types;

/// A resource version the client has, and the snapshot it came from (none
/// when the client told us at reconnect).
#[derive(Debug, Clone)]
struct Held {
    version: String,
    snap: Option<Arc<Versioned>>,
}

/// A type's resources the client has, as of some response.
#[derive(Debug, Clone, Default)]
struct HeldSet {
    type_url: String,
    system_version: String,
    items: BTreeMap<String, Held>,
}

impl HeldSet {
    fn get(&self, name: &str) -> Option<&Any> {
        let h = self.items.get(name)?;
        h.snap.as_ref()?.resources(&self.type_url)?.get(name)
    }
}

impl Holdings for HeldSet {
    fn version(&self) -> &str {
        &self.system_version
    }

    fn each(&self, f: &mut dyn FnMut(&str, &str, &Any)) {
        for (n, h) in &self.items {
            if let Some(a) = self.get(n) {
                f(n, &h.version, a);
            }
        }
    }
}

/// Unanswered responses remembered per type.
const MAX_PENDING: usize = 64;

/// Changes one response makes: name -> new holding (`None`: removed).
type Changes = BTreeMap<String, Option<Held>>;

#[derive(Debug, Default)]
struct DeltaType {
    started: bool,
    wildcard: bool,
    names: BTreeSet<String>,
    /// What the client has or is being sent.
    known: HeldSet,
    /// What the client has ACKed.
    acked: HeldSet,
    /// Responses not answered yet: nonce -> (system version, changes).
    pending: BTreeMap<String, (String, Changes)>,
}

/// One Delta stream's protocol state.
#[derive(Debug)]
pub struct DeltaState {
    node: Option<String>,
    types: BTreeMap<String, DeltaType>,
    nonce: u64,
    cache: SnapshotCache,
    awaiting_eds: BTreeSet<String>,
    /// Some request carried `initial_resource_versions`.
    reconnected: bool,
}

impl DeltaState {
    /// A fresh stream that records status into `cache`.
    pub fn new(cache: SnapshotCache) -> Self {
        Self {
            node: None,
            types: BTreeMap::new(),
            nonce: 0,
            cache,
            awaiting_eds: BTreeSet::new(),
            reconnected: false,
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

    /// Handles a request; returns what it was (an ACK or NACK carries the
    /// system version of the response it answers) and the responses to
    /// send.
    pub fn on_request(
        &mut self,
        req: &DeltaDiscoveryRequest,
        snap: Option<&Arc<Versioned>>,
    ) -> (RequestKind, Vec<DeltaDiscoveryResponse>) {
        let t = req.type_url.clone();
        let node = self.node.clone().unwrap_or_default();
        let eds_sub = match self.types.get(types::ENDPOINT) {
            Some(e) if t == types::CLUSTER => Some(e.names.clone()),
            _ => None,
        };
        let st = self.types.entry(t.clone()).or_default();
        if !st.started {
            st.started = true;
            st.wildcard = wildcard_type(&t) && req.resource_names_subscribe.is_empty();
            st.known.type_url.clone_from(&t);
            st.acked.type_url.clone_from(&t);
            self.reconnected |= !req.initial_resource_versions.is_empty();
            for (n, v) in &req.initial_resource_versions {
                let h = Held {
                    version: v.clone(),
                    snap: None,
                };
                st.known.items.insert(n.clone(), h.clone());
                st.acked.items.insert(n.clone(), h);
            }
        }
        let mut kind = RequestKind::Subscribe;
        if !req.response_nonce.is_empty() {
            match st.pending.remove(&req.response_nonce) {
                None => kind = RequestKind::Stale,
                Some((version, changes)) => {
                    if let Some(err) = &req.error_detail {
                        let nack = Nack {
                            rejected_version: version,
                            nonce: req.response_nonce.clone(),
                            message: err.message.clone(),
                        };
                        tracing::warn!(
                            node,
                            type_url = t,
                            version = nack.rejected_version,
                            message = nack.message,
                            "Delta NACK"
                        );
                        let n = nack.clone();
                        self.cache.update_status(&node, &t, |s| {
                            s.last_nack = Some(n);
                            s.pending = None;
                            s.nacks += 1;
                        });
                        self.cache
                            .record(&node, &t, |r| r.nacked_at = Some(SystemTime::now()));
                        kind = RequestKind::Nack(nack);
                    } else {
                        let before: BTreeSet<String> = st.acked.items.keys().cloned().collect();
                        for (n, h) in changes {
                            match h {
                                Some(h) => st.acked.items.insert(n, h),
                                None => st.acked.items.remove(&n),
                            };
                        }
                        st.acked.system_version.clone_from(&version);
                        if let Some(eds_sub) = eds_sub {
                            for (c, h) in &st.acked.items {
                                if before.contains(c) {
                                    continue;
                                }
                                let eds = h.snap.as_ref().and_then(|s| s.eds_name(c));
                                self.awaiting_eds
                                    .extend(eds.filter(|e| !eds_sub.contains(*e)).cloned());
                            }
                        }
                        let acked: Arc<dyn Holdings> = Arc::new(st.acked.clone());
                        self.cache.record(&node, &t, |r| {
                            r.acked = Some((acked, SystemTime::now()));
                        });
                        let v = version.clone();
                        self.cache.update_status(&node, &t, |s| {
                            s.acked = Some(v);
                            s.pending = None;
                            s.last_nack = None;
                        });
                        kind = RequestKind::Ack(version);
                    }
                }
            }
        }
        for n in &req.resource_names_subscribe {
            if n == "*" {
                st.wildcard = true;
            } else {
                st.names.insert(n.clone());
            }
        }
        for n in &req.resource_names_unsubscribe {
            if n == "*" {
                st.wildcard = false;
            } else {
                st.names.remove(n);
            }
        }
        // Forget what the client dropped, so that subscribing again sends it.
        let (wildcard, names) = (st.wildcard, st.names.clone());
        st.known.items.retain(|n, _| wildcard || names.contains(n));
        st.acked.items.retain(|n, _| wildcard || names.contains(n));
        if t == types::ENDPOINT {
            self.awaiting_eds.clear();
        }
        let out = snap.map(|s| self.plan(s)).unwrap_or_default();
        (kind, out)
    }

    /// Responses for a new snapshot, in push order.
    pub fn on_snapshot(&mut self, snap: &Arc<Versioned>) -> Vec<DeltaDiscoveryResponse> {
        self.plan(snap)
    }

    fn plan(&mut self, snap: &Arc<Versioned>) -> Vec<DeltaDiscoveryResponse> {
        push_order(self.types.keys())
            .iter()
            .filter_map(|t| self.respond(t, snap))
            .collect()
    }

    /// Clusters referenced by the listeners and routes the client has or
    /// is being sent; `None` when that is unknown because it told us at
    /// reconnect of a version whose content we do not have (then every
    /// cluster it has is kept until it ACKs what we send instead).
    fn in_use(&self, snap: &Versioned) -> Option<BTreeSet<String>> {
        if self.reconnected
            && !self.types.contains_key(types::LISTENER)
            && !self.types.contains_key(types::ROUTE)
        {
            // A reconnected client (Envoy asks for CDS first) has not said
            // which listeners and routes it runs yet.
            return None;
        }
        let mut out = BTreeSet::new();
        for t in [types::LISTENER, types::ROUTE] {
            let Some(st) = self.types.get(t) else {
                continue;
            };
            for set in [&st.known, &st.acked] {
                for (n, h) in &set.items {
                    match &h.snap {
                        Some(s) => out.extend(s.clusters_of(t, n).into_iter().flatten().cloned()),
                        None if snap.resource_version(t, n) == Some(h.version.as_str()) => {
                            out.extend(snap.clusters_of(t, n).into_iter().flatten().cloned());
                        }
                        None => return None,
                    }
                }
            }
        }
        Some(out)
    }

    fn kept_clusters(&self, snap: &Versioned) -> BTreeMap<String, Any> {
        let Some(cds) = self.types.get(types::CLUSTER) else {
            return BTreeMap::new();
        };
        let now = snap.resources(types::CLUSTER);
        let current: BTreeSet<String> = cds
            .known
            .items
            .keys()
            .chain(cds.acked.items.keys())
            .filter(|c| !now.is_some_and(|m| m.contains_key(c)))
            .cloned()
            .collect();
        if current.is_empty() {
            return BTreeMap::new();
        }
        let kept = match self.in_use(snap) {
            Some(in_use) => order::kept_clusters(&current, snap, &in_use),
            None => current,
        };
        kept.into_iter()
            .map(|c| {
                let a = cds.known.get(&c).or_else(|| cds.acked.get(&c)).cloned();
                // A cluster known only by version (reconnect) is kept by name.
                (c, a.unwrap_or_default())
            })
            .collect()
    }

    fn view(&self) -> ClientView {
        let acked = |t: &str| {
            self.types
                .get(t)
                .map(|s| s.acked.items.keys().cloned().collect())
                .unwrap_or_default()
        };
        let cds = self.types.get(types::CLUSTER);
        ClientView {
            cds_subscribed: cds.is_some(),
            cds_wildcard: cds.is_some_and(|c| c.wildcard),
            cds_names: cds.map(|c| c.names.clone()).unwrap_or_default(),
            acked_clusters: acked(types::CLUSTER),
            eds_subscribed: self
                .types
                .get(types::ENDPOINT)
                .map(|s| s.names.clone())
                .unwrap_or_default(),
            acked_endpoints: acked(types::ENDPOINT),
            awaiting_eds: self.awaiting_eds.clone(),
        }
    }

    fn respond(&mut self, t: &str, snap: &Arc<Versioned>) -> Option<DeltaDiscoveryResponse> {
        let system_version = snap.version(t)?.to_string();
        let all = snap.resources(t)?;
        let gated = matches!(t, types::LISTENER | types::ROUTE);
        let kept = match t {
            types::CLUSTER => self.kept_clusters(snap),
            types::ENDPOINT => {
                let kc = self.kept_clusters(snap);
                order::kept_endpoints(snap, &kc)
                    .into_iter()
                    .map(|n| (n, Any::default()))
                    .collect()
            }
            _ => BTreeMap::new(),
        };
        let view = gated.then(|| self.view());
        let kept_clusters = if gated {
            self.kept_clusters(snap)
        } else {
            BTreeMap::new()
        };
        let st = self.types.get(t)?;
        let mut changes = Changes::new();
        let mut resources = Vec::new();
        let mut held = false;
        for (name, a) in all.pick(st.wildcard, &st.names) {
            let version = snap.resource_version(t, name).unwrap_or_default();
            let have = st.known.items.get(name);
            if have.is_some_and(|h| h.version == version) {
                continue;
            }
            if let Some(view) = &view {
                let mut old = BTreeSet::new();
                if let Some(s) = have.and_then(|h| h.snap.as_ref()) {
                    old.extend(s.clusters_of(t, name).into_iter().flatten().cloned());
                }
                let new_refs: BTreeSet<String> = snap
                    .clusters_of(t, name)
                    .into_iter()
                    .flatten()
                    .filter(|c| !old.contains(*c))
                    .cloned()
                    .collect();
                if order::not_ready(view, snap, &kept_clusters, &new_refs).is_some() {
                    held = true;
                    continue;
                }
            }
            resources.push(Resource {
                name: name.clone(),
                version: version.to_string(),
                resource: Some(a.clone()),
                ..Default::default()
            });
            changes.insert(
                name.clone(),
                Some(Held {
                    version: version.to_string(),
                    snap: Some(snap.clone()),
                }),
            );
        }
        let removed: Vec<String> = st
            .known
            .items
            .keys()
            .filter(|n| !all.contains_key(n) && !kept.contains_key(*n))
            .cloned()
            .collect();
        let node = self.node.clone().unwrap_or_default();
        if held {
            let v = system_version.clone();
            self.cache.update_status(&node, t, |s| s.held = Some(v));
        }
        let first = st.pending.is_empty()
            && st.acked.system_version.is_empty()
            && st.known.system_version.is_empty();
        if resources.is_empty() && removed.is_empty() && !(first && st.wildcard) {
            return None;
        }
        for n in &removed {
            changes.insert(n.clone(), None);
        }
        let st = self.types.get_mut(t)?;
        for (n, h) in &changes {
            match h {
                Some(h) => st.known.items.insert(n.clone(), h.clone()),
                None => st.known.items.remove(n),
            };
        }
        st.known.system_version.clone_from(&system_version);
        self.nonce += 1;
        let nonce = self.nonce.to_string();
        st.pending
            .insert(nonce.clone(), (system_version.clone(), changes));
        if st.pending.len() > MAX_PENDING {
            // A client that never answers must not grow this without bound;
            // the oldest response is the least likely to be answered.
            let oldest = st
                .pending
                .keys()
                .min_by_key(|n| n.parse::<u64>().unwrap_or(0))
                .cloned();
            if let Some(o) = oldest {
                st.pending.remove(&o);
            }
        }
        let sent: Arc<dyn Holdings> = Arc::new(st.known.clone());
        self.cache
            .record(&node, t, |r| r.sent = Some((sent, SystemTime::now())));
        let v = system_version.clone();
        self.cache.update_status(&node, t, |s| {
            s.sent = Some(v.clone());
            s.pending = Some(v);
            if !held {
                s.held = None;
            }
        });
        Some(DeltaDiscoveryResponse {
            system_version_info: system_version,
            resources,
            type_url: t.to_string(),
            removed_resources: removed,
            nonce,
            ..Default::default()
        })
    }
}
