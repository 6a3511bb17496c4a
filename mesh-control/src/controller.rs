//! The heart of meshd: the config generation being served, the connected
//! nodes, and turning both into per-node snapshots in the ADS server's
//! cache.
//!
//! Who does what:
//! - The ADS streams, the events task and the watcher only *record* what
//!   changed (a node seen, a stream connected or gone, a new generation, a
//!   registration) under a short lock and wake the compile worker. They
//!   never compile, so a reconnect storm cannot stall a stream, the event
//!   handling or the HTTP port.
//! - The compile worker ([`Controller::run`], in `round`) takes what a
//!   round needs under the lock (the inputs' epoch, an `Arc` of the
//!   generation, the nodes and their [`ClientKey`]s), releases it, compiles
//!   once per distinct key on the blocking pool with a bounded number of
//!   compiles at once (identical nodes share one), re-takes the lock
//!   briefly to decide, and hands the nodes their snapshots off the lock.
//!   A round overtaken by a newer change is not installed (an install
//!   batch under way stops): its results become the base of the next
//!   round's incremental compile, which serves every node, so no change is
//!   lost and no stale config is served (unless changes keep overtaking
//!   rounds; then a round is installed anyway so clients keep moving
//!   forward).
//! - The cache bumps the version of only the types whose content changed,
//!   so a node whose resources did not change is not pushed at all.
//! - [`Controller::generation`] and the rejection state live apart from the
//!   node table, so `/ready` never waits for it. It names the generation of
//!   the last installed round: it moves once the round is compiled, just
//!   before the nodes are handed their snapshots, so a client that has a
//!   generation's resources finds it there.
//! - Auto-registered workloads (see [`crate::autoreg`]) are added to the
//!   registry while their node has at least one stream.

mod round;
#[cfg(test)]
mod tests;

use mesh_core::sync::LockExt;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use mesh_core::config::Kind;
use mesh_xds::node::NodeInfo;
use mesh_xds::pb::envoy::config::core::v3::Node;
use mesh_xds::server::{Content, SnapshotCache};
use tokio::sync::{watch, Notify, Semaphore};
use tokio::time::Instant;

use crate::autoreg::{self, Registration};
use crate::compile::{ClientKey, Compiled, OutboundCache};
use crate::converge::Convergence;
use crate::load::{Generation, Rejection};
use crate::metrics::Metrics;

/// One ADS stream of a node.
#[derive(Debug, Clone)]
pub struct StreamInfo {
    /// The peer address, when known.
    pub peer: Option<SocketAddr>,
    /// When it connected.
    pub since: SystemTime,
}

/// A node meshd serves.
#[derive(Debug, Clone)]
pub struct NodeEntry {
    /// What its metadata says.
    pub info: NodeInfo,
    /// Its compile key.
    pub key: ClientKey,
    /// Its open streams, by stream id.
    pub streams: BTreeMap<u64, StreamInfo>,
    /// Why its auto-registration was refused, if it was.
    pub registration_error: Option<String>,
    /// The content and overlay last handed to the cache for it.
    pushed: Option<Pushed>,
}

/// A node's shared content and its own overlay.
type Pushed = (Arc<Content>, Option<Arc<Content>>);

/// What the compile worker built for one epoch of the inputs.
#[derive(Debug)]
struct Built {
    epoch: u64,
    /// Built on the first compile of the epoch (a round with no node to
    /// serve needs none).
    compiler: Option<Arc<mesh_core::compile::Compiler>>,
    /// One compilation per identity, shared by its nodes.
    memo: HashMap<ClientKey, Arc<Compiled>>,
    /// The server listeners of keys that serve their identity's ports at
    /// their own IPs (see [`crate::compile::Sharing::Overlay`]).
    overlays: HashMap<ClientKey, Arc<Content>>,
}

/// The node table and the compile inputs. Every critical section on it is
/// short: no compile, encode or snapshot install happens under it.
#[derive(Debug, Default)]
struct State {
    /// The newest accepted generation: what rounds compile toward.
    generation: Option<Arc<Generation>>,
    registrations: BTreeMap<String, Registration>,
    /// Bumped whenever the compile inputs (generation, registrations)
    /// change; a round compiled for an older epoch is not installed.
    epoch: u64,
    /// When the oldest change not installed yet was seen.
    changed_at: Option<Instant>,
    nodes: BTreeMap<String, NodeEntry>,
    raw: HashMap<String, Node>,
    /// Nodes to hand their snapshot at the built epoch.
    dirty: BTreeSet<String>,
    /// The installed epoch's compiler and compilations.
    built: Option<Built>,
    /// The newest compilation of each identity, whatever its epoch: the
    /// base of the identity's next (incremental) compile.
    latest: HashMap<ClientKey, Arc<Compiled>>,
    /// `epoch`, readable without the lock: an install batch stops early
    /// when it moves.
    epoch_now: Arc<AtomicU64>,
    /// The keys of the nodes served, with their identities.
    keys: LiveKeys,
}

/// How many nodes have each key, counting every node under its key and
/// under its identity (the key without addresses, see
/// [`ClientKey::identity`]): the compiled results worth keeping.
#[derive(Debug, Default)]
struct LiveKeys(HashMap<ClientKey, usize>);

impl LiveKeys {
    fn both(key: &ClientKey) -> impl Iterator<Item = ClientKey> {
        let id = key.identity();
        let distinct = (id != *key).then(|| key.clone());
        std::iter::once(id).chain(distinct)
    }

    fn add(&mut self, key: &ClientKey) {
        for k in Self::both(key) {
            *self.0.entry(k).or_default() += 1;
        }
    }

    /// Counts one node less; returns the keys no node has now.
    fn remove(&mut self, key: &ClientKey) -> Vec<ClientKey> {
        let mut gone = Vec::new();
        for k in Self::both(key) {
            if let Some(n) = self.0.get_mut(&k) {
                *n -= 1;
                if *n == 0 {
                    self.0.remove(&k);
                    gone.push(k);
                }
            }
        }
        gone
    }

    fn contains(&self, key: &ClientKey) -> bool {
        self.0.contains_key(key)
    }
}

impl State {
    /// Drops the compiled results of keys no node has any more.
    fn forget(&mut self, keys: Vec<ClientKey>) {
        for k in keys {
            self.latest.remove(&k);
            if let Some(b) = self.built.as_mut() {
                b.memo.remove(&k);
                b.overlays.remove(&k);
            }
        }
    }

    fn inputs_changed(&mut self, at: Instant) {
        self.epoch += 1;
        self.epoch_now.store(self.epoch, Ordering::Release);
        self.changed_at = Some(self.changed_at.map_or(at, |c| c.min(at)));
    }
}

/// Rejections, apart from the node table so `/ready` never waits on it.
#[derive(Debug, Default)]
struct Rejections {
    last: Option<Rejection>,
    count: u64,
}

/// Shared control-plane state; cheap to clone.
#[derive(Clone)]
pub struct Controller {
    state: Arc<Mutex<State>>,
    /// The generation whose snapshots are installed.
    served: Arc<watch::Sender<Option<Arc<Generation>>>>,
    rejections: Arc<Mutex<Rejections>>,
    /// Wakes the compile worker.
    wake: Arc<Notify>,
    /// Outbound sides in use, shared by identities that see the same.
    outbound: Arc<OutboundCache>,
    /// Bounds the CPU work the worker runs at once on the blocking pool.
    cpu: Arc<Semaphore>,
    /// The inputs' epoch (see `State::epoch_now`).
    epoch_now: Arc<AtomicU64>,
    cache: SnapshotCache,
    metrics: Arc<Metrics>,
    convergence: Convergence,
}

impl std::fmt::Debug for Controller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Controller").finish_non_exhaustive()
    }
}

/// Compiles at once: one core is left to the ADS streams and the HTTP
/// port, so a storm of compiles cannot starve them.
fn compile_slots() -> usize {
    std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .saturating_sub(1)
        .max(1)
}

impl Controller {
    /// A controller that writes snapshots into `cache`. Nothing is compiled
    /// until [`Controller::run`] runs.
    pub fn new(cache: SnapshotCache, metrics: Arc<Metrics>) -> Self {
        let convergence = Convergence::new(cache.clone(), metrics.clone());
        let state = State::default();
        let epoch_now = state.epoch_now.clone();
        Self {
            state: Arc::new(Mutex::new(state)),
            served: Arc::new(watch::channel(None).0),
            rejections: Arc::default(),
            wake: Arc::new(Notify::new()),
            outbound: Arc::default(),
            cpu: Arc::new(Semaphore::new(compile_slots())),
            epoch_now,
            cache,
            metrics,
            convergence,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.locked()
    }

    /// The snapshot cache the ADS server reads.
    pub fn cache(&self) -> &SnapshotCache {
        &self.cache
    }

    /// The metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The convergence tracker.
    pub fn convergence(&self) -> &Convergence {
        &self.convergence
    }

    /// The generation being served (compiled, and handed or being handed to
    /// every connected node); `None` until one is.
    pub fn generation(&self) -> Option<Arc<Generation>> {
        self.served.borrow().clone()
    }

    /// Waits until generation `number` (or a later one) is served.
    pub async fn serving(&self, number: u64) {
        let mut rx = self.served.subscribe();
        // The sender lives in `self`: the wait cannot fail.
        let _ = rx
            .wait_for(|g| g.as_ref().is_some_and(|g| g.number >= number))
            .await;
    }

    /// The last rejection, while no good generation came after it.
    pub fn rejection(&self) -> Option<Rejection> {
        self.rejections.locked().last.clone()
    }

    /// How many versions were rejected.
    pub fn rejections(&self) -> u64 {
        self.rejections.locked().count
    }

    /// The connected nodes.
    pub fn nodes(&self) -> BTreeMap<String, NodeEntry> {
        self.lock().nodes.clone()
    }

    /// The auto-registered workloads.
    pub fn registrations(&self) -> Vec<Registration> {
        self.lock().registrations.values().cloned().collect()
    }

    /// Records a rejected version; the served generation stays.
    pub fn reject(&self, rejection: Rejection) {
        tracing::error!("{}", rejection.message());
        self.metrics.rejections.inc();
        self.metrics.istiod.validation_failed.inc();
        let mut r = self.rejections.locked();
        r.count += 1;
        r.last = Some(rejection);
    }

    /// Accepts a new generation; the compile worker serves it. `changed_at`
    /// is when the change was first seen; convergence time runs from there.
    pub fn apply(&self, generation: Generation, changed_at: Instant) {
        tracing::debug!(
            generation = generation.number,
            "configuration accepted; compiling"
        );
        let istiod = &self.metrics.istiod;
        let services: usize = generation
            .resources
            .iter()
            .map(|r| match (r.kind, r.service_entry()) {
                (_, Some(se)) => se.hosts.len(),
                (Kind::Service, _) => 1,
                _ => 0,
            })
            .sum();
        let vss = generation
            .resources
            .iter()
            .filter(|r| r.kind == Kind::VirtualService)
            .count();
        istiod
            .services
            .set(i64::try_from(services).unwrap_or(i64::MAX));
        istiod
            .virt_services
            .set(i64::try_from(vss).unwrap_or(i64::MAX));
        istiod.validation_passed.inc();
        istiod.triggered("config");
        {
            let mut st = self.lock();
            st.generation = Some(Arc::new(generation));
            st.inputs_changed(changed_at);
        }
        self.rejections.locked().last = None;
        self.metrics.generations.inc();
        self.wake.notify_one();
    }

    fn ensure_node<'a>(st: &'a mut State, info: &NodeInfo) -> &'a mut NodeEntry {
        if !st.nodes.contains_key(&info.id) {
            let key = ClientKey::of(info);
            st.keys.add(&key);
            st.nodes.insert(
                info.id.clone(),
                NodeEntry {
                    key,
                    info: info.clone(),
                    streams: BTreeMap::new(),
                    registration_error: None,
                    pushed: None,
                },
            );
        }
        // Inserted just above when missing.
        st.nodes
            .get_mut(&info.id)
            .unwrap_or_else(|| unreachable!("node inserted above"))
    }

    /// The ADS server saw a node's first request (the hook runs on the
    /// stream's task): the compile worker hands it its snapshot, and the
    /// stream pushes it as soon as it is in the cache.
    pub fn node_seen(&self, info: &NodeInfo) {
        {
            let mut st = self.lock();
            let entry = Self::ensure_node(&mut st, info);
            let key = ClientKey::of(info);
            if entry.key != key {
                // Same id, new metadata (a restarted workload with new labels).
                let old = std::mem::replace(&mut entry.key, key.clone());
                entry.info = info.clone();
                st.keys.add(&key);
                let gone = st.keys.remove(&old);
                st.forget(gone);
            }
            st.dirty.insert(info.id.clone());
        }
        self.wake.notify_one();
    }

    /// The raw node of a new stream (from [`crate::tap`]), kept until its
    /// `Connected` event is handled.
    pub fn raw_node(&self, node: Node) {
        self.lock().raw.insert(node.id.clone(), node);
    }

    /// A stream of a node connected.
    pub fn connected(&self, info: &NodeInfo, stream_id: u64, peer: Option<SocketAddr>) {
        let raw = {
            let mut st = self.lock();
            let entry = Self::ensure_node(&mut st, info);
            entry.streams.insert(
                stream_id,
                StreamInfo {
                    peer,
                    since: SystemTime::now(),
                },
            );
            st.raw.remove(&info.id)
        };
        let version = raw
            .as_ref()
            .and_then(|n| n.metadata.as_ref())
            .and_then(|md| mesh_xds::node::metadata_str(md, "ISTIO_VERSION"));
        self.metrics.istiod.stream_opened(stream_id, version);
        self.admit(&info.id, raw);
    }

    /// Acts on a node's auto-registration metadata (parsed off the lock)
    /// and has the node served.
    fn admit(&self, node_id: &str, raw: Option<Node>) {
        let registration = raw.as_ref().map(autoreg::registration);
        {
            let mut st = self.lock();
            match registration {
                Some(Ok(Some(r))) if st.registrations.get(node_id) != Some(&r) => {
                    tracing::info!(
                        node = node_id,
                        workload = r.resource.key(),
                        "workload auto-registered"
                    );
                    st.registrations.insert(node_id.to_string(), r);
                    // Its services' endpoints changed for every node that
                    // sees them.
                    st.inputs_changed(Instant::now());
                    self.metrics.istiod.triggered("endpoint");
                }
                Some(Err(e)) => {
                    tracing::warn!("{e}");
                    if let Some(n) = st.nodes.get_mut(node_id) {
                        n.registration_error = Some(e);
                    }
                }
                _ => {}
            }
            if st.nodes.contains_key(node_id) {
                st.dirty.insert(node_id.to_string());
            }
        }
        self.wake.notify_one();
    }

    /// Whether the ADS server counts a stream of the node. The hook that
    /// re-adds a reconnecting node runs after the server counts its stream,
    /// so, asked under the state lock, "no" means no stream of the node is
    /// watching its snapshot.
    fn streaming(&self, node_id: &str) -> bool {
        self.cache.nodes().iter().any(|n| n == node_id)
    }

    /// A stream ended. When the node has no stream left (the ADS server's
    /// own count decides, so a reconnect racing the old stream's end keeps
    /// the node), it is forgotten and its auto-registration withdrawn.
    pub fn disconnected(&self, node_id: &str, stream_id: u64) {
        self.metrics.istiod.stream_closed(stream_id);
        {
            let mut st = self.lock();
            if let Some(entry) = st.nodes.get_mut(node_id) {
                entry.streams.remove(&stream_id);
            }
            if self.streaming(node_id) {
                return;
            }
            self.remove_node(&mut st, node_id);
        }
        self.convergence.forget(node_id);
        self.wake.notify_one();
    }

    /// Forgets a node that has no stream (checked by the caller under the
    /// same lock).
    fn remove_node(&self, st: &mut State, node_id: &str) {
        if let Some(gone) = st.nodes.remove(node_id) {
            // The last node of an identity takes its compiled results
            // along, so pod churn does not grow meshd (a node that comes
            // back is compiled again).
            let keys = st.keys.remove(&gone.key);
            st.forget(keys);
        }
        st.raw.remove(node_id);
        st.dirty.remove(node_id);
        self.cache.clear(node_id);
        if let Some(r) = st.registrations.remove(node_id) {
            tracing::info!(
                node = node_id,
                workload = r.resource.key(),
                "auto-registered workload removed"
            );
            st.inputs_changed(Instant::now());
            self.metrics.istiod.triggered("endpoint");
        }
    }

    /// Re-reads who is connected from the ADS server after events were
    /// lost (a lagging event subscriber): nodes with no stream left are
    /// forgotten, connected ones unknown here are served, and
    /// registrations whose `Connected` event was lost are acted on.
    pub fn resync(&self) {
        let mut gone = Vec::new();
        {
            let mut st = self.lock();
            // Read under the lock: a node whose stream opened after a
            // reading taken before it would look gone.
            let live: BTreeSet<String> = self.cache.nodes().into_iter().collect();
            let ids: Vec<String> = st
                .nodes
                .keys()
                .filter(|id| !live.contains(*id))
                .cloned()
                .collect();
            for id in ids {
                self.remove_node(&mut st, &id);
                gone.push(id);
            }
            let State { raw, nodes, .. } = &mut *st;
            raw.retain(|id, _| nodes.contains_key(id) || live.contains(id));
        }
        for id in &gone {
            self.convergence.forget(id);
        }
        for c in self.cache.connected() {
            let raw = {
                let mut st = self.lock();
                let known = st.nodes.contains_key(&c.info.id);
                if !known {
                    Self::ensure_node(&mut st, &c.info);
                }
                st.raw.remove(&c.info.id)
            };
            self.admit(&c.info.id, raw);
        }
        self.wake.notify_one();
    }
}
