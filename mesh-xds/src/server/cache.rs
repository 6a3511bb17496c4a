//! The snapshot cache: per node id, the resources it should have and the
//! version of each resource type. Setting a snapshot bumps the version of
//! exactly the types whose content changed and wakes that node's streams.

use mesh_core::sync::LockExt;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::config::{
    cluster::v3::Cluster, endpoint::v3::ClusterLoadAssignment, listener::v3::Listener,
    route::v3::RouteConfiguration,
};
use envoy_types::pb::google::protobuf::Any;
use tokio::sync::watch;

use super::deps::Deps;
use super::record::{NodeRecord, TypeRecord};
use crate::encode::Resources;
use crate::node::NodeInfo;
use crate::types::{self, any, unany};

/// Resources of one node, by type URL then resource name.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    types: BTreeMap<String, BTreeMap<String, Any>>,
}

impl Snapshot {
    /// An empty snapshot (every type present with no resources is not the
    /// same as absent: absent types are never sent).
    pub fn new() -> Self {
        Self::default()
    }

    /// The four xDS types of an encoded model.
    pub fn from_resources(r: &Resources) -> Self {
        let mut s = Self::new();
        s.set_type(
            types::LISTENER,
            r.listeners.iter().map(|l| (l.name.clone(), any(l))),
        );
        s.set_type(
            types::ROUTE,
            r.routes.iter().map(|x| (x.name.clone(), any(x))),
        );
        s.set_type(
            types::CLUSTER,
            r.clusters.iter().map(|c| (c.name.clone(), any(c))),
        );
        s.set_type(
            types::ENDPOINT,
            r.endpoints.iter().map(|e| (e.cluster_name.clone(), any(e))),
        );
        s
    }

    /// Replaces every resource of `type_url`.
    pub fn set_type(&mut self, type_url: &str, resources: impl IntoIterator<Item = (String, Any)>) {
        self.types
            .insert(type_url.to_string(), resources.into_iter().collect());
    }

    /// Adds or replaces one resource.
    pub fn insert(&mut self, type_url: &str, name: impl Into<String>, resource: Any) {
        self.types
            .entry(type_url.to_string())
            .or_default()
            .insert(name.into(), resource);
    }

    /// The resources of a type, by name.
    pub fn resources(&self, type_url: &str) -> Option<&BTreeMap<String, Any>> {
        self.types.get(type_url)
    }

    /// The type URLs present.
    pub fn type_urls(&self) -> impl Iterator<Item = &str> {
        self.types.keys().map(String::as_str)
    }
}

/// True when two encodings of a resource carry the same message. Byte
/// equality is not enough: protobuf maps (metadata, `Struct`) encode in hash
/// order, so known types are compared decoded.
pub fn same_resource(type_url: &str, a: &Any, b: &Any) -> bool {
    if a == b {
        return true;
    }
    if a.type_url != b.type_url {
        return false;
    }
    fn eq<T: prost::Message + prost::Name + Default + PartialEq>(a: &Any, b: &Any) -> bool {
        match (unany::<T>(a), unany::<T>(b)) {
            (Some(x), Some(y)) => x == y,
            _ => false,
        }
    }
    match type_url {
        types::LISTENER => eq::<Listener>(a, b),
        types::ROUTE => eq::<RouteConfiguration>(a, b),
        types::CLUSTER => eq::<Cluster>(a, b),
        types::ENDPOINT => eq::<ClusterLoadAssignment>(a, b),
        _ => false,
    }
}

/// How many earlier contents a [`Content`] remembers its difference from:
/// the nodes moving to it come from a handful (usually one) of them.
const DIFF_MEMO: usize = 4;

/// The types that differ from an earlier content.
type Diff = (Weak<Content>, Arc<[String]>);

/// What is the same for every node handed the same resources: the
/// resources, each one's version and the references between them. Built
/// once per distinct set of resources and shared by `Arc`, so a thousand
/// replicas of one app hold one copy (meshd compiles once per identity and
/// hands each node the identity's content).
#[derive(Debug, Default)]
pub struct Content {
    /// The resources.
    pub snapshot: Arc<Snapshot>,
    /// Version per resource (type URL, then name): a hash of its encoding,
    /// what Delta xDS sends as `Resource.version`.
    pub resource_versions: BTreeMap<String, BTreeMap<String, String>>,
    /// Cross-resource references, for make-before-break.
    pub deps: Deps,
    /// The types that differ from earlier contents, by content: every node
    /// that moves from one content to another shares one comparison.
    diffs: Mutex<Vec<Diff>>,
}

impl PartialEq for Content {
    fn eq(&self, other: &Self) -> bool {
        self.snapshot == other.snapshot
            && self.resource_versions == other.resource_versions
            && self.deps == other.deps
    }
}

impl Content {
    /// Versions the resources of `snapshot` and indexes its references.
    pub fn new(snapshot: impl Into<Arc<Snapshot>>) -> Self {
        Self::update(snapshot, None)
    }

    /// Like [`Content::new`], reusing what `old` computed for resources
    /// whose bytes did not change. The bytes are taken as they are: a
    /// producer that re-encodes equal messages should keep the old bytes
    /// (see [`same_resource`]), or the resources' versions move for nothing.
    pub fn update(snapshot: impl Into<Arc<Snapshot>>, old: Option<&Content>) -> Self {
        let snapshot: Arc<Snapshot> = snapshot.into();
        if let Some(o) = old.filter(|o| Arc::ptr_eq(&o.snapshot, &snapshot)) {
            return Self {
                snapshot,
                resource_versions: o.resource_versions.clone(),
                deps: o.deps.clone(),
                diffs: Mutex::default(),
            };
        }
        let resource_versions = snapshot
            .types
            .iter()
            .map(|(t, rs)| {
                let vs = rs
                    .iter()
                    .map(|(n, a)| {
                        let reuse = old.and_then(|o| {
                            (o.snapshot.resources(t)?.get(n)? == a)
                                .then(|| o.resource_version(t, n).map(str::to_string))?
                        });
                        (n.clone(), reuse.unwrap_or_else(|| resource_version(a)))
                    })
                    .collect();
                (t.clone(), vs)
            })
            .collect();
        let deps = Deps::update(&snapshot, old.map(|o| (&*o.snapshot, &o.deps)));
        Self {
            snapshot,
            resource_versions,
            deps,
            diffs: Mutex::default(),
        }
    }

    /// The version of one resource, when present.
    pub fn resource_version(&self, type_url: &str, name: &str) -> Option<&str> {
        self.resource_versions
            .get(type_url)?
            .get(name)
            .map(String::as_str)
    }

    /// The type URLs whose resources (names or messages) differ from
    /// `old`'s, computed once per pair of contents.
    fn changed_since(&self, old: &Arc<Content>) -> Arc<[String]> {
        let mut memo = self.diffs.locked();
        if let Some((_, d)) = memo
            .iter()
            .find(|(w, _)| std::ptr::eq(w.as_ptr(), Arc::as_ptr(old)))
        {
            // The memo's weak reference keeps the allocation, so an equal
            // pointer is this very content.
            return d.clone();
        }
        // Equal messages may differ in bytes (protobuf maps encode in hash
        // order, and two identities' equal resources may come from two
        // encodings): those are compared decoded, once per pair.
        let same = |t: &str, a: &BTreeMap<String, Any>, b: &BTreeMap<String, Any>| {
            a.len() == b.len()
                && a.iter()
                    .zip(b)
                    .all(|((ka, va), (kb, vb))| ka == kb && same_resource(t, va, vb))
        };
        let d: Arc<[String]> = self
            .snapshot
            .types
            .iter()
            .filter(|(t, rs)| {
                old.snapshot
                    .types
                    .get(*t)
                    .is_none_or(|o| o != *rs && !same(t, o, rs))
            })
            .map(|(t, _)| t.clone())
            .collect();
        if memo.len() >= DIFF_MEMO {
            memo.remove(0);
        }
        memo.push((Arc::downgrade(old), d.clone()));
        d
    }
}

/// A node's resources with the version the cache gave each of its types:
/// the shared [`Content`], an optional small per-node overlay (resources
/// only this node has, e.g. server listeners named by its own IP) and the
/// node's type versions. Read resources through its accessors, which see
/// the overlay over the content.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Versioned {
    /// The resources, their versions and references, shared.
    pub content: Arc<Content>,
    /// Resources only this node has; a name here hides the same name in
    /// `content`.
    pub overlay: Option<Arc<Content>>,
    /// Version per type URL.
    pub versions: BTreeMap<String, String>,
}

impl Versioned {
    /// Versions the resources of `snapshot` and indexes its references.
    pub fn new(snapshot: Snapshot, versions: BTreeMap<String, String>) -> Self {
        Self {
            content: Arc::new(Content::new(snapshot)),
            overlay: None,
            versions,
        }
    }

    /// The version of a type, when the type is present.
    pub fn version(&self, type_url: &str) -> Option<&str> {
        self.versions.get(type_url).map(String::as_str)
    }

    /// The resources of a type (content and overlay), when the type is
    /// present in either.
    pub fn resources(&self, type_url: &str) -> Option<ResourceView<'_>> {
        let base = self.content.snapshot.resources(type_url);
        let extra = self
            .overlay
            .as_ref()
            .and_then(|o| o.snapshot.resources(type_url));
        (base.is_some() || extra.is_some()).then_some(ResourceView { base, extra })
    }

    /// The type URLs present, sorted.
    pub fn type_urls(&self) -> impl Iterator<Item = &str> {
        let mut v: Vec<&str> = self.content.snapshot.type_urls().collect();
        if let Some(o) = &self.overlay {
            v.extend(o.snapshot.type_urls());
            v.sort_unstable();
            v.dedup();
        }
        v.into_iter()
    }

    /// Content and overlay as one snapshot (a copy: for tests and
    /// debugging views).
    pub fn to_snapshot(&self) -> Snapshot {
        let mut s = Snapshot::new();
        for t in self.type_urls() {
            let res = self.resources(t).map(|r| r.to_map()).unwrap_or_default();
            s.set_type(t, res);
        }
        s
    }

    /// The version of one resource, when present.
    pub fn resource_version(&self, type_url: &str, name: &str) -> Option<&str> {
        self.overlay
            .as_ref()
            .and_then(|o| o.resource_version(type_url, name))
            .or_else(|| self.content.resource_version(type_url, name))
    }

    fn layer(&self, type_url: &str, name: &str) -> &Content {
        match &self.overlay {
            Some(o)
                if o.snapshot
                    .resources(type_url)
                    .is_some_and(|r| r.contains_key(name)) =>
            {
                o
            }
            _ => &self.content,
        }
    }

    /// Clusters referenced by the resource `name` of `type_url` (a
    /// listener or route configuration).
    pub fn clusters_of(&self, type_url: &str, name: &str) -> Option<&BTreeSet<String>> {
        self.layer(type_url, name).deps.clusters_of(type_url, name)
    }

    /// The ClusterLoadAssignment name an EDS cluster reads.
    pub fn eds_name(&self, cluster: &str) -> Option<&String> {
        self.layer(types::CLUSTER, cluster)
            .deps
            .eds_names
            .get(cluster)
    }
}

/// The resources of one type of a [`Versioned`]: its content's with its
/// overlay's over them, as one sorted map.
#[derive(Debug, Clone, Copy)]
pub struct ResourceView<'a> {
    base: Option<&'a BTreeMap<String, Any>>,
    extra: Option<&'a BTreeMap<String, Any>>,
}

impl<'a> ResourceView<'a> {
    /// One resource.
    pub fn get(&self, name: &str) -> Option<&'a Any> {
        self.extra
            .and_then(|e| e.get(name))
            .or_else(|| self.base.and_then(|b| b.get(name)))
    }

    /// One resource with its name.
    pub fn get_key_value(&self, name: &str) -> Option<(&'a String, &'a Any)> {
        self.extra
            .and_then(|e| e.get_key_value(name))
            .or_else(|| self.base.and_then(|b| b.get_key_value(name)))
    }

    /// The resources a subscription asks for, by name: all of them for a
    /// wildcard, otherwise looked up name by name (a client subscribes to
    /// a few of thousands).
    pub fn pick(&self, wildcard: bool, names: &BTreeSet<String>) -> Vec<(&'a String, &'a Any)> {
        if wildcard {
            return self.iter().collect();
        }
        names.iter().filter_map(|n| self.get_key_value(n)).collect()
    }

    /// Whether a resource of that name is present.
    pub fn contains_key(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// The resources, by name.
    pub fn iter(&self) -> impl Iterator<Item = (&'a String, &'a Any)> + 'a {
        let extra = self.extra;
        let base = self
            .base
            .into_iter()
            .flatten()
            .filter(move |(n, _)| !extra.is_some_and(|e| e.contains_key(*n)));
        Merge {
            a: base.peekable(),
            b: self.extra.into_iter().flatten().peekable(),
        }
    }

    /// The names, sorted.
    pub fn keys(&self) -> impl Iterator<Item = &'a String> + 'a {
        self.iter().map(|(n, _)| n)
    }

    /// How many resources.
    pub fn len(&self) -> usize {
        let extra = self.extra.map_or(0, |e| {
            e.keys()
                .filter(|n| !self.base.is_some_and(|b| b.contains_key(*n)))
                .count()
        });
        self.base.map_or(0, BTreeMap::len) + extra
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A copy as one map.
    pub fn to_map(&self) -> BTreeMap<String, Any> {
        self.iter().map(|(n, a)| (n.clone(), a.clone())).collect()
    }
}

impl<'a> IntoIterator for ResourceView<'a> {
    type Item = (&'a String, &'a Any);
    type IntoIter = Box<dyn Iterator<Item = (&'a String, &'a Any)> + 'a>;

    fn into_iter(self) -> Self::IntoIter {
        Box::new(self.iter())
    }
}

/// Two iterators sorted by name, merged (names are disjoint).
struct Merge<A: Iterator, B: Iterator> {
    a: std::iter::Peekable<A>,
    b: std::iter::Peekable<B>,
}

impl<'a, A, B> Iterator for Merge<A, B>
where
    A: Iterator<Item = (&'a String, &'a Any)>,
    B: Iterator<Item = (&'a String, &'a Any)>,
{
    type Item = (&'a String, &'a Any);

    fn next(&mut self) -> Option<Self::Item> {
        match (self.a.peek(), self.b.peek()) {
            (Some(x), Some(y)) if y.0 < x.0 => self.b.next(),
            (Some(_), _) => self.a.next(),
            (None, _) => self.b.next(),
        }
    }
}

/// The content of `snapshot` for a node that has `old`: types `old` had
/// and `snapshot` lacks are present and empty (so clients drop their
/// resources instead of keeping them), and resources equal to `old`'s keep
/// `old`'s bytes.
fn canonical(mut snapshot: Snapshot, old: Option<&Versioned>) -> Content {
    if let Some(o) = old {
        for type_url in o.type_urls() {
            let res = snapshot.types.entry(type_url.to_string()).or_default();
            let Some(prev) = o.resources(type_url) else {
                continue;
            };
            for (name, a) in res.iter_mut() {
                if let Some(p) = prev.get(name) {
                    if p != a && same_resource(type_url, p, a) {
                        *a = p.clone();
                    }
                }
            }
        }
    }
    Content::update(snapshot, old.map(|o| &*o.content))
}

/// A resource's version: FNV-1a 64 of its type URL and bytes, in hex. Stable
/// across processes (unlike std's hasher), so a client reconnecting with
/// `initial_resource_versions` to a restarted server is not sent what it has.
pub fn resource_version(a: &Any) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in a.type_url.bytes().chain(a.value.iter().copied()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// A NACK a client sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nack {
    /// The version it rejected (the one we sent).
    pub rejected_version: String,
    /// The nonce of the rejected response.
    pub nonce: String,
    /// The client's `error_detail.message`.
    pub message: String,
}

/// Sync state of one type on one node.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TypeStatus {
    /// Last version sent.
    pub sent: Option<String>,
    /// The version sent and not yet ACKed or NACKed.
    pub pending: Option<String>,
    /// Last version the client is known to hold: one it ACKed, or a newer
    /// RDS/EDS version with nothing for it beyond that (those responses
    /// carry only what changed, so none is sent).
    pub acked: Option<String>,
    /// A version held back by make-before-break: it references clusters
    /// the client has not ACKed yet.
    pub held: Option<String>,
    /// The last NACK, cleared by a later ACK.
    pub last_nack: Option<Nack>,
    /// NACKs received in total.
    pub nacks: u64,
}

/// Sync state of one node: per type URL.
pub type NodeStatus = BTreeMap<String, TypeStatus>;

/// A node with at least one open stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectedNode {
    /// What the node said about itself on its latest stream.
    pub info: NodeInfo,
    /// Open streams of this node.
    pub streams: usize,
    /// TCP peer of the latest stream, when known.
    pub peer: Option<SocketAddr>,
}

#[derive(Debug, Default)]
struct Inner {
    nodes: HashMap<String, watch::Sender<Option<Arc<Versioned>>>>,
    status: HashMap<String, NodeStatus>,
    connected: HashMap<String, ConnectedNode>,
    records: HashMap<String, NodeRecord>,
}

/// Snapshots per node id, shared by the server and whoever computes them.
#[derive(Debug, Clone, Default)]
pub struct SnapshotCache {
    inner: Arc<Mutex<Inner>>,
    counter: Arc<AtomicU64>,
    /// Held by [`SnapshotCache::set_snapshot`] for its whole run (never by
    /// the streams or readers).
    setter: Arc<Mutex<()>>,
}

impl SnapshotCache {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A poisoned lock only means another thread panicked mid-update of
        // plain maps; the data is still usable.
        self.inner.locked()
    }

    /// Sets the snapshot of `node_id`; types whose content changed get a new
    /// version (others keep theirs) and connected streams are woken. Returns
    /// the type URLs whose version changed.
    ///
    /// A resource equal to the one the node has (compared decoded, see
    /// [`same_resource`]) keeps its old bytes, so its version does not move
    /// when only the protobuf map order of a re-encoding differs. Callers
    /// that hand many nodes the same resources use
    /// [`SnapshotCache::set_content`] instead, which shares them.
    pub fn set_snapshot(&self, node_id: &str, snapshot: Snapshot) -> Vec<String> {
        let _turn = self.setter.locked();
        let old = self.snapshot(node_id);
        let content = Arc::new(canonical(snapshot, old.as_deref()));
        self.install(node_id, content, None, old)
    }

    /// Sets the node's resources to a shared [`Content`], as
    /// [`SnapshotCache::set_snapshot`] does, without copying them: the
    /// node holds the `Arc` and its own type versions. Resources compare
    /// by bytes, so the producer keeps a resource's old bytes when a
    /// re-encoding means the same.
    ///
    /// The cache's lock is held only to read the node's current snapshot
    /// and to swap the new one in, never while contents are compared:
    /// the streams, which record every response and ACK here, and readers
    /// such as a control plane's sync view never wait for that. Setters
    /// take turns, so the snapshot read is still the node's at the swap
    /// unless [`SnapshotCache::clear`] ran in between.
    pub fn set_content(
        &self,
        node_id: &str,
        content: Arc<Content>,
        overlay: Option<Arc<Content>>,
    ) -> Vec<String> {
        let _turn = self.setter.locked();
        let old = self.snapshot(node_id);
        let has = |t: &str| {
            content.snapshot.types.contains_key(t)
                || overlay
                    .as_ref()
                    .is_some_and(|o| o.snapshot.types.contains_key(t))
        };
        let missing: Vec<String> = old
            .iter()
            .flat_map(|o| o.type_urls())
            .filter(|t| !has(t))
            .map(str::to_string)
            .collect();
        let overlay = if missing.is_empty() {
            overlay
        } else {
            // A type that disappears is sent as empty (rare: a producer's
            // snapshots usually carry the same types).
            let mut s = overlay
                .as_ref()
                .map(|o| (*o.snapshot).clone())
                .unwrap_or_default();
            for t in missing {
                s.set_type(&t, []);
            }
            Some(Arc::new(Content::new(s)))
        };
        self.install(node_id, content, overlay, old)
    }

    fn install(
        &self,
        node_id: &str,
        content: Arc<Content>,
        overlay: Option<Arc<Content>>,
        old: Option<Arc<Versioned>>,
    ) -> Vec<String> {
        let (changed, next) = self.next(content, overlay, old.as_deref());
        let mut inner = self.lock();
        let tx = inner
            .nodes
            .entry(node_id.to_string())
            .or_insert_with(|| watch::channel(None).0);
        let now = tx.borrow().clone();
        let same = match (&now, &old) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            (None, None) => true,
            _ => false,
        };
        let (changed, next) = match next {
            Some(v) if !same => {
                // Cleared meanwhile: version against what is there now
                // (rare, so under the lock).
                self.next(v.content, v.overlay, now.as_deref())
            }
            next => (changed, next),
        };
        if let Some(v) = next {
            // A new content with the same resources is swapped in quietly
            // (the old one can be freed); streams wake only for a change.
            let wake = !changed.is_empty() || now.is_none();
            tx.send_if_modified(|cur| {
                *cur = Some(Arc::new(v));
                wake
            });
        }
        changed
    }

    /// Versions `content` and `overlay` against the node's `old` snapshot:
    /// the types whose version changed, and what to set (nothing when it
    /// is the very same content and overlay).
    fn next(
        &self,
        content: Arc<Content>,
        overlay: Option<Arc<Content>>,
        old: Option<&Versioned>,
    ) -> (Vec<String>, Option<Versioned>) {
        let fresh = || (self.counter.fetch_add(1, Ordering::Relaxed) + 1).to_string();
        let mut next = Versioned {
            content,
            overlay,
            versions: BTreeMap::new(),
        };
        let types: Vec<String> = next.type_urls().map(str::to_string).collect();
        let Some(o) = old else {
            next.versions = types.iter().map(|t| (t.clone(), fresh())).collect();
            return (types, Some(next));
        };
        let same_overlay = match (&o.overlay, &next.overlay) {
            (None, None) => true,
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            _ => false,
        };
        let same_content = Arc::ptr_eq(&o.content, &next.content);
        if same_content && same_overlay {
            return (Vec::new(), None);
        }
        let diff = if same_content {
            Arc::from([])
        } else {
            next.content.changed_since(&o.content)
        };
        let overlay_of = |v: &Versioned, t: &str| {
            v.overlay
                .as_ref()
                .and_then(|x| x.snapshot.types.get(t).cloned())
        };
        let mut changed = Vec::new();
        for t in types {
            let moved =
                diff.contains(&t) || (!same_overlay && overlay_of(o, &t) != overlay_of(&next, &t));
            let v = match o.versions.get(&t) {
                Some(v) if !moved => v.clone(),
                _ => {
                    changed.push(t.clone());
                    fresh()
                }
            };
            next.versions.insert(t, v);
        }
        (changed, Some(next))
    }

    /// The current snapshot of a node.
    pub fn snapshot(&self, node_id: &str) -> Option<Arc<Versioned>> {
        self.lock()
            .nodes
            .get(node_id)
            .and_then(|tx| tx.borrow().clone())
    }

    /// Removes a node's snapshot and status (streams keep their last state).
    pub fn clear(&self, node_id: &str) {
        let mut inner = self.lock();
        inner.nodes.remove(node_id);
        inner.status.remove(node_id);
    }

    /// Ids of the nodes connected now (at least one open stream), sorted.
    pub fn nodes(&self) -> Vec<String> {
        let mut v: Vec<String> = self.lock().connected.keys().cloned().collect();
        v.sort();
        v
    }

    /// The connected nodes with their metadata, sorted by id.
    pub fn connected(&self) -> Vec<ConnectedNode> {
        let mut v: Vec<ConnectedNode> = self.lock().connected.values().cloned().collect();
        v.sort_by(|a, b| a.info.id.cmp(&b.info.id));
        v
    }

    /// Ids of the nodes that have a snapshot, sorted.
    pub fn snapshot_nodes(&self) -> Vec<String> {
        let inner = self.lock();
        let mut v: Vec<String> = inner
            .nodes
            .iter()
            .filter(|(_, tx)| tx.borrow().is_some())
            .map(|(k, _)| k.clone())
            .collect();
        v.sort();
        v
    }

    pub(crate) fn stream_opened(&self, node: &Node, info: &NodeInfo, peer: Option<SocketAddr>) {
        let mut inner = self.lock();
        inner.records.entry(info.id.clone()).or_default().node = node.clone();
        let e = inner
            .connected
            .entry(info.id.clone())
            .or_insert_with(|| ConnectedNode {
                info: info.clone(),
                streams: 0,
                peer,
            });
        e.info = info.clone();
        e.peer = peer;
        e.streams += 1;
        if e.streams == 1 {
            // A new connection has nothing in flight and nothing held back
            // yet; what it ACKed and NACKed before stays as history.
            for st in inner
                .status
                .entry(info.id.clone())
                .or_default()
                .values_mut()
            {
                st.pending = None;
                st.held = None;
            }
        }
    }

    pub(crate) fn stream_closed(&self, node_id: &str) {
        let mut inner = self.lock();
        if let Some(e) = inner.connected.get_mut(node_id) {
            e.streams = e.streams.saturating_sub(1);
            if e.streams == 0 {
                inner.connected.remove(node_id);
                inner.records.remove(node_id);
            }
        }
    }

    /// Sync state of a node (what was sent, ACKed, NACKed per type).
    pub fn status(&self, node_id: &str) -> NodeStatus {
        self.lock().status.get(node_id).cloned().unwrap_or_default()
    }

    pub(crate) fn watch(&self, node_id: &str) -> watch::Receiver<Option<Arc<Versioned>>> {
        self.lock()
            .nodes
            .entry(node_id.to_string())
            .or_insert_with(|| watch::channel(None).0)
            .subscribe()
    }

    pub(crate) fn record(&self, node_id: &str, type_url: &str, f: impl FnOnce(&mut TypeRecord)) {
        let mut inner = self.lock();
        f(inner
            .records
            .entry(node_id.to_string())
            .or_default()
            .types
            .entry(type_url.to_string())
            .or_default());
    }

    /// The records of the connected nodes, by id.
    pub(crate) fn records(&self) -> BTreeMap<String, NodeRecord> {
        let inner = self.lock();
        inner
            .records
            .iter()
            .filter(|(id, _)| inner.connected.contains_key(*id))
            .map(|(id, r)| (id.clone(), r.clone()))
            .collect()
    }

    pub(crate) fn update_status(
        &self,
        node_id: &str,
        type_url: &str,
        f: impl FnOnce(&mut TypeStatus),
    ) {
        let mut inner = self.lock();
        f(inner
            .status
            .entry(node_id.to_string())
            .or_default()
            .entry(type_url.to_string())
            .or_default());
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn res(v: &str) -> Any {
        Any {
            type_url: "t".into(),
            value: v.as_bytes().to_vec(),
        }
    }

    fn content(clusters: &[&str], routes: &[&str]) -> Arc<Content> {
        let mut s = Snapshot::new();
        s.set_type(
            types::CLUSTER,
            clusters.iter().map(|c| (c.to_string(), res(c))),
        );
        s.set_type(types::ROUTE, routes.iter().map(|r| (r.to_string(), res(r))));
        Arc::new(Content::new(s))
    }

    #[test]
    fn nodes_handed_one_content_share_it_and_version_it_apart() {
        let cache = SnapshotCache::new();
        let c1 = content(&["a"], &["r"]);
        assert_eq!(cache.set_content("n1", c1.clone(), None).len(), 2);
        let other = content(&["x"], &["r"]);
        cache.set_content("n2", other, None);
        assert_eq!(cache.set_content("n2", c1.clone(), None), [types::CLUSTER]);
        let (s1, s2) = (cache.snapshot("n1").unwrap(), cache.snapshot("n2").unwrap());
        assert!(Arc::ptr_eq(&s1.content, &c1) && Arc::ptr_eq(&s2.content, &c1));
        // n2's route version stayed; its cluster version moved.
        assert_ne!(s1.version(types::ROUTE), s2.version(types::ROUTE));
        assert_ne!(s1.version(types::CLUSTER), s2.version(types::CLUSTER));

        // The next content: only routes changed, for both nodes; the
        // comparison is made once and remembered.
        let c2 = content(&["a"], &["r2"]);
        assert_eq!(cache.set_content("n1", c2.clone(), None), [types::ROUTE]);
        assert_eq!(c2.diffs.locked().len(), 1);
        assert_eq!(cache.set_content("n2", c2.clone(), None), [types::ROUTE]);
        assert_eq!(c2.diffs.locked().len(), 1);
        assert!(cache.set_content("n2", c2.clone(), None).is_empty());
    }

    #[test]
    fn an_equal_content_is_swapped_in_without_a_new_version_or_a_wake() {
        let cache = SnapshotCache::new();
        cache.set_content("n", content(&["a"], &["r"]), None);
        let before = cache.snapshot("n").unwrap();
        let mut rx = cache.watch("n");
        rx.mark_unchanged();
        let again = content(&["a"], &["r"]);
        assert!(cache.set_content("n", again.clone(), None).is_empty());
        let after = cache.snapshot("n").unwrap();
        // The old content can be freed: the node holds the new one.
        assert!(Arc::ptr_eq(&after.content, &again));
        assert_eq!(after.versions, before.versions);
        assert!(!rx.has_changed().unwrap());
    }

    #[test]
    fn equal_messages_in_other_bytes_are_no_change() {
        use prost::Message;
        let part = |c: Cluster| c.encode_to_vec();
        let name = part(Cluster {
            name: "a".into(),
            ..Default::default()
        });
        let alt = part(Cluster {
            alt_stat_name: "x".into(),
            ..Default::default()
        });
        // The same message, its fields in two orders (as two encodings of a
        // map may give).
        let cluster = |value: Vec<u8>| {
            let mut s = Snapshot::new();
            s.insert(
                types::CLUSTER,
                "a",
                Any {
                    type_url: "type.googleapis.com/envoy.config.cluster.v3.Cluster".into(),
                    value,
                },
            );
            Arc::new(Content::new(s))
        };
        let cache = SnapshotCache::new();
        cache.set_content("n", cluster([name.clone(), alt.clone()].concat()), None);
        assert!(cache
            .set_content("n", cluster([alt, name].concat()), None)
            .is_empty());
    }

    #[test]
    fn a_type_the_new_content_lacks_is_sent_empty() {
        let cache = SnapshotCache::new();
        cache.set_content("n", content(&["a"], &["r"]), None);
        let mut s = Snapshot::new();
        s.set_type(types::CLUSTER, [("a".to_string(), res("a"))]);
        assert_eq!(
            cache.set_content("n", Arc::new(Content::new(s)), None),
            [types::ROUTE]
        );
        let now = cache.snapshot("n").unwrap();
        assert!(now.resources(types::ROUTE).unwrap().is_empty());
    }
}
