//! The heart of meshd: the config generation being served, the connected
//! nodes, and turning both into per-node snapshots in the ADS server's
//! cache.
//!
//! - A new generation (or a registration change) rebuilds the compiler,
//!   compiles once per distinct [`ClientKey`] and sets every connected
//!   node's snapshot; the cache bumps the version of only the types whose
//!   content changed, so a node whose resources did not change is not
//!   pushed at all.
//! - A node that connects gets its snapshot right away (shared with nodes
//!   of the same identity).
//! - Auto-registered workloads (see [`crate::autoreg`]) are added to the
//!   registry while their node has at least one stream.

use mesh_core::sync::LockExt;
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use mesh_core::compile::Compiler;
use mesh_core::config::MeshConfig;
use mesh_xds::node::NodeInfo;
use mesh_xds::pb::envoy::config::core::v3::Node;
use mesh_xds::server::{Snapshot, SnapshotCache};
use tokio::time::Instant;

use crate::autoreg::{self, Registration};
use crate::compile::{self, ClientKey, Compiled};
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
    /// The snapshot last handed to the cache for it.
    pushed: Option<Arc<Snapshot>>,
}

#[derive(Debug, Default)]
struct State {
    generation: Option<Arc<Generation>>,
    rejection: Option<Rejection>,
    rejections: u64,
    compiler: Option<Arc<Compiler>>,
    registrations: BTreeMap<String, Registration>,
    nodes: BTreeMap<String, NodeEntry>,
    memo: HashMap<ClientKey, Arc<Compiled>>,
    /// The previous compile round's results, to diff the next against.
    prev: HashMap<ClientKey, Arc<Compiled>>,
    raw: HashMap<String, Node>,
}

/// Shared control-plane state; cheap to clone.
#[derive(Clone)]
pub struct Controller {
    state: Arc<Mutex<State>>,
    cache: SnapshotCache,
    metrics: Arc<Metrics>,
    convergence: Convergence,
}

impl std::fmt::Debug for Controller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Controller").finish_non_exhaustive()
    }
}

impl Controller {
    /// A controller that writes snapshots into `cache`.
    pub fn new(cache: SnapshotCache, metrics: Arc<Metrics>) -> Self {
        let convergence = Convergence::new(cache.clone(), metrics.clone());
        Self {
            state: Arc::default(),
            cache,
            metrics,
            convergence,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Poisoning only means a panic mid-update of plain maps elsewhere;
        // serving on is better than taking the control plane down.
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

    /// The generation being served.
    pub fn generation(&self) -> Option<Arc<Generation>> {
        self.lock().generation.clone()
    }

    /// The last rejection, while no good generation came after it.
    pub fn rejection(&self) -> Option<Rejection> {
        self.lock().rejection.clone()
    }

    /// How many versions were rejected.
    pub fn rejections(&self) -> u64 {
        self.lock().rejections
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
        let mut st = self.lock();
        st.rejections += 1;
        st.rejection = Some(rejection);
    }

    /// Serves a new generation. `changed_at` is when the change was first
    /// seen; convergence time runs from there.
    pub fn apply(&self, generation: Generation, changed_at: Instant) {
        let started = std::time::Instant::now();
        let number = generation.number;
        let mut st = self.lock();
        st.generation = Some(Arc::new(generation));
        st.rejection = None;
        let bumped = self.recompile(&mut st);
        drop(st);
        self.metrics.generations.inc();
        self.metrics
            .generation
            .set(i64::try_from(number).unwrap_or(i64::MAX));
        self.metrics
            .push_time
            .observe(started.elapsed().as_secs_f64());
        tracing::info!(
            generation = number,
            nodes_pushed = bumped.len(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "configuration applied"
        );
        self.convergence.expect(changed_at, bumped);
    }

    /// Rebuilds the compiler from the generation and registrations, then
    /// sets every node's snapshot. Returns, per node whose resources
    /// changed, the new version of each changed type.
    fn recompile(&self, st: &mut State) -> BTreeMap<String, BTreeMap<String, String>> {
        let Some(generation) = st.generation.clone() else {
            return BTreeMap::new();
        };
        let mut resources: Vec<_> = generation.resources.as_ref().clone();
        resources.extend(st.registrations.values().map(|r| r.resource.clone()));
        let mesh: MeshConfig = generation.mesh.as_ref().clone();
        st.compiler = Some(Arc::new(Compiler::new(resources, mesh)));
        let memo = std::mem::take(&mut st.memo);
        // Identities no node has any more are not worth keeping.
        let live: std::collections::HashSet<&ClientKey> =
            st.nodes.values().map(|n| &n.key).collect();
        let prev: HashMap<ClientKey, Arc<Compiled>> =
            memo.into_iter().filter(|(k, _)| live.contains(k)).collect();
        st.prev = prev;
        let ids: Vec<String> = st.nodes.keys().cloned().collect();
        let mut bumped = BTreeMap::new();
        for id in ids {
            let changed = self.push_node(st, &id);
            if !changed.is_empty() {
                bumped.insert(id, changed);
            }
        }
        bumped
    }

    /// Sets one node's snapshot from its (shared) compilation.
    fn push_node(&self, st: &mut State, node_id: &str) -> BTreeMap<String, String> {
        let Some(key) = st.nodes.get(node_id).map(|n| n.key.clone()) else {
            return BTreeMap::new();
        };
        let Some(compiler) = st.compiler.clone() else {
            return BTreeMap::new();
        };
        let snap = match st.memo.get(&key) {
            Some(c) => c.snapshot.clone(),
            None => {
                self.metrics.compilations.inc();
                let started = std::time::Instant::now();
                let c = Arc::new(compile::compile(
                    &compiler,
                    &key,
                    st.prev.get(&key).map(|p| &**p),
                ));
                self.metrics
                    .compile_time
                    .observe(started.elapsed().as_secs_f64());
                let snap = c.snapshot.clone();
                st.memo.insert(key, c);
                snap
            }
        };
        let Some(entry) = st.nodes.get_mut(node_id) else {
            return BTreeMap::new();
        };
        if entry.pushed.as_ref().is_some_and(|p| Arc::ptr_eq(p, &snap))
            && self.cache.snapshot(node_id).is_some()
        {
            // Same content as this node already has: nothing to compare.
            return BTreeMap::new();
        }
        entry.pushed = Some(snap.clone());
        let changed = self.cache.set_snapshot(node_id, (*snap).clone());
        let versions = self.cache.snapshot(node_id);
        changed
            .into_iter()
            .map(|t| {
                let v = versions
                    .as_ref()
                    .and_then(|v| v.version(&t).map(str::to_string))
                    .unwrap_or_default();
                (t, v)
            })
            .collect()
    }

    fn ensure_node<'a>(st: &'a mut State, info: &NodeInfo) -> &'a mut NodeEntry {
        st.nodes
            .entry(info.id.clone())
            .or_insert_with(|| NodeEntry {
                key: ClientKey::of(info),
                info: info.clone(),
                streams: BTreeMap::new(),
                registration_error: None,
                pushed: None,
            })
    }

    /// The ADS server saw a node's first request: give it its snapshot now,
    /// before the stream answers (the node hook runs on the stream's task).
    pub fn node_seen(&self, info: &NodeInfo) {
        let mut st = self.lock();
        let entry = Self::ensure_node(&mut st, info);
        let key = ClientKey::of(info);
        if entry.key != key {
            // Same id, new metadata (a restarted workload with new labels).
            entry.key = key;
            entry.info = info.clone();
        }
        self.push_node(&mut st, &info.id);
    }

    /// The raw node of a new stream (from [`crate::tap`]), kept until its
    /// `Connected` event is handled.
    pub fn raw_node(&self, node: Node) {
        self.lock().raw.insert(node.id.clone(), node);
    }

    /// A stream of a node connected.
    pub fn connected(&self, info: &NodeInfo, stream_id: u64, peer: Option<SocketAddr>) {
        let mut st = self.lock();
        let raw = st.raw.remove(&info.id);
        let entry = Self::ensure_node(&mut st, info);
        entry.streams.insert(
            stream_id,
            StreamInfo {
                peer,
                since: SystemTime::now(),
            },
        );
        let registration = raw.as_ref().map(autoreg::registration);
        let newly_registered = match registration {
            Some(Ok(Some(r))) if st.registrations.get(&info.id) != Some(&r) => {
                tracing::info!(
                    node = info.id,
                    workload = r.resource.key(),
                    "workload auto-registered"
                );
                st.registrations.insert(info.id.clone(), r);
                true
            }
            Some(Err(e)) => {
                tracing::warn!("{e}");
                if let Some(n) = st.nodes.get_mut(&info.id) {
                    n.registration_error = Some(e);
                }
                false
            }
            _ => false,
        };
        if newly_registered {
            // Its services' endpoints changed for every node that sees them.
            let bumped = self.recompile(&mut st);
            drop(st);
            self.convergence.expect(Instant::now(), bumped);
        } else {
            self.push_node(&mut st, &info.id);
        }
    }

    /// A stream ended. When the node has no stream left (the ADS server's
    /// own count decides, so a reconnect racing the old stream's end keeps
    /// the node), it is forgotten and its auto-registration withdrawn.
    pub fn disconnected(&self, node_id: &str, stream_id: u64) {
        let mut st = self.lock();
        if let Some(entry) = st.nodes.get_mut(node_id) {
            entry.streams.remove(&stream_id);
        }
        if self.cache.nodes().iter().any(|n| n == node_id) {
            return;
        }
        self.remove_node(st, node_id);
    }

    fn remove_node(&self, mut st: MutexGuard<'_, State>, node_id: &str) {
        st.nodes.remove(node_id);
        st.raw.remove(node_id);
        self.cache.clear(node_id);
        self.convergence.forget(node_id);
        if let Some(r) = st.registrations.remove(node_id) {
            tracing::info!(
                node = node_id,
                workload = r.resource.key(),
                "auto-registered workload removed"
            );
            let bumped = self.recompile(&mut st);
            drop(st);
            self.convergence.expect(Instant::now(), bumped);
        }
    }

    /// Re-reads who is connected from the ADS server after events were
    /// lost (a lagging event subscriber).
    pub fn resync(&self) {
        let connected = self.cache.connected();
        let ids: std::collections::BTreeSet<String> =
            connected.iter().map(|c| c.info.id.clone()).collect();
        let gone: Vec<String> = self
            .lock()
            .nodes
            .keys()
            .filter(|id| !ids.contains(*id))
            .cloned()
            .collect();
        for id in gone {
            let st = self.lock();
            self.remove_node(st, &id);
        }
        for c in connected {
            let known = self.lock().nodes.contains_key(&c.info.id);
            if !known {
                self.node_seen(&c.info);
            }
        }
        let mut st = self.lock();
        let State { raw, nodes, .. } = &mut *st;
        raw.retain(|id, _| nodes.contains_key(id) || ids.contains(id));
    }
}
