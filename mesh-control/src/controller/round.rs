//! The compile worker: rounds of compile-then-install, off the ADS stream
//! tasks and never under the state lock.
//!
//! A round is planned under the lock (what to compile, for which nodes, at
//! which epoch), compiled on the blocking pool (one compile per distinct
//! [`ClientKey`] missing from the epoch's memo, at most
//! `compile_slots()` at once), decided under the lock again (install, or
//! drop because a newer change overtook it), and installed into the
//! snapshot cache off the lock. Rounds run one after another, so installs
//! never race each other: a node can never be handed an older snapshot
//! after a newer one.
//!
//! Not here: what a change or a connect records (the parent module).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use mesh_core::compile::Compiler;
use mesh_core::config::Resource;
use mesh_xds::server::Content;
use tokio::sync::OwnedSemaphorePermit;
use tokio::task::JoinSet;

use super::{Built, Controller, Pushed};
use crate::compile::{self, ClientKey, Compiled, Sharing};
use crate::load::Generation;

/// Rounds in a row that newer changes may overtake before one is installed
/// anyway, so clients keep moving forward while changes keep coming (each
/// auto-registering workload of a storm is a change).
const MAX_OVERTAKEN: u32 = 3;

/// What one round compiles and for whom.
struct Plan {
    epoch: u64,
    generation: Arc<Generation>,
    /// The epoch is not the built one: every node is served and the
    /// generation becomes the served one.
    new_epoch: bool,
    nodes: Vec<String>,
    /// Keys to compile.
    keys: Vec<Job>,
    /// The epoch's compiler, when built already.
    compiler: Option<Arc<Compiler>>,
    /// Auto-registered workloads, to build the compiler with.
    registered: Vec<Resource>,
}

/// A key missing from the epoch's memo.
struct Job {
    key: ClientKey,
    /// The base of its incremental compile.
    prev: Option<Arc<Compiled>>,
    /// The epoch's compile of its identity, if done: a workload that
    /// serves no port at its addresses takes that one.
    shared: Option<Arc<Compiled>>,
    /// The base of its identity's incremental compile.
    identity_prev: Option<Arc<Compiled>>,
}

/// A node to hand its snapshot.
struct Install {
    node: String,
    content: Arc<Content>,
    overlay: Option<Arc<Content>>,
    /// The node was handed this very snapshot before: set it again only if
    /// the cache lost it.
    again: bool,
}

type Bumped = BTreeMap<String, BTreeMap<String, String>>;

impl Controller {
    /// Runs rounds whenever something changed, until the task is dropped.
    pub async fn run(self) {
        let mut overtaken = 0;
        loop {
            let Some(plan) = self.plan() else {
                self.wake.notified().await;
                continue;
            };
            overtaken = if self.execute(plan, overtaken >= MAX_OVERTAKEN).await {
                0
            } else {
                overtaken + 1
            };
        }
    }

    /// What the next round does, if anything (under the lock, no compile).
    fn plan(&self) -> Option<Plan> {
        let mut st = self.lock();
        let generation = st.generation.clone()?;
        let epoch = st.epoch;
        let built = st.built.as_ref().filter(|b| b.epoch == epoch);
        let new_epoch = built.is_none();
        let compiler = built.and_then(|b| b.compiler.clone());
        let nodes: Vec<String> = if new_epoch {
            st.dirty.clear();
            st.nodes.keys().cloned().collect()
        } else if st.dirty.is_empty() {
            return None;
        } else {
            std::mem::take(&mut st.dirty).into_iter().collect()
        };
        let memo = st
            .built
            .as_ref()
            .filter(|b| b.epoch == epoch)
            .map(|b| &b.memo);
        let mut keys: HashMap<&ClientKey, Job> = HashMap::new();
        for id in &nodes {
            let Some(key) = st.nodes.get(id).map(|n| &n.key) else {
                continue;
            };
            if memo.is_none_or(|m| !m.contains_key(key)) && !keys.contains_key(key) {
                let identity = key.identity();
                let job = Job {
                    prev: st.latest.get(key).cloned(),
                    shared: memo.and_then(|m| m.get(&identity)).cloned(),
                    identity_prev: st.latest.get(&identity).cloned(),
                    key: key.clone(),
                };
                keys.insert(key, job);
            }
        }
        let keys: Vec<Job> = keys.into_values().collect();
        let registered = if compiler.is_none() && !keys.is_empty() {
            st.registrations
                .values()
                .map(|r| r.resource.clone())
                .collect()
        } else {
            Vec::new()
        };
        Some(Plan {
            epoch,
            generation,
            new_epoch,
            nodes,
            keys,
            compiler,
            registered,
        })
    }

    async fn permit(&self) -> Option<OwnedSemaphorePermit> {
        // The semaphore is never closed.
        self.cpu.clone().acquire_owned().await.ok()
    }

    /// Runs CPU work on the blocking pool within the compile bound.
    async fn cpu_work<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Option<T> {
        let permit = self.permit().await;
        let r = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            f()
        })
        .await;
        match r {
            Ok(v) => Some(v),
            Err(e) => {
                tracing::error!(error = %e, "compile worker job failed");
                self.metrics.istiod.internal_errors.inc();
                None
            }
        }
    }

    /// Compiles, decides and installs one round. False when a newer change
    /// overtook it and it was not installed.
    async fn execute(&self, plan: Plan, install_anyway: bool) -> bool {
        let started = std::time::Instant::now();
        let compiler = match (&plan.compiler, plan.keys.is_empty()) {
            (Some(c), _) => Some(c.clone()),
            (None, true) => None,
            (None, false) => {
                let generation = plan.generation.clone();
                let registered = plan.registered;
                let built = self
                    .cpu_work(move || {
                        let mut resources = generation.resources.as_ref().clone();
                        resources.extend(registered);
                        Arc::new(Compiler::new(resources, generation.mesh.as_ref().clone()))
                    })
                    .await;
                if built.is_none() {
                    // Logged. Nothing is installed for this epoch; the next
                    // change (or node) tries again, not a loop.
                    if plan.new_epoch {
                        let mut st = self.lock();
                        if st.epoch == plan.epoch {
                            st.built = Some(Built {
                                epoch: plan.epoch,
                                compiler: None,
                                memo: HashMap::new(),
                                overlays: HashMap::new(),
                            });
                        }
                    }
                    return true;
                }
                built
            }
        };
        let (mut compiled, mut overlays, failed) =
            self.compile_keys(compiler.as_ref(), plan.keys).await;

        let (installs, changed_at) = {
            let mut guard = self.lock();
            let st = &mut *guard;
            let current = st.epoch == plan.epoch;
            // Keys whose last node left while they compiled are not kept:
            // memory follows the nodes connected, not all that ever were.
            compiled.retain(|k, _| st.keys.contains(k));
            overlays.retain(|k, _| st.keys.contains(k));
            for (k, c) in &compiled {
                st.latest.insert(k.clone(), c.clone());
            }
            if !current && !install_anyway {
                // The next round (a new epoch: every node) starts from
                // these results.
                return false;
            }
            if plan.new_epoch {
                let keys = &st.keys;
                st.latest.retain(|k, _| keys.contains(k));
                st.built = Some(Built {
                    epoch: plan.epoch,
                    compiler: compiler.clone(),
                    memo: compiled,
                    overlays,
                });
            } else if let Some(b) = st.built.as_mut() {
                b.compiler = b.compiler.take().or(compiler.clone());
                b.memo.extend(compiled);
                b.overlays.extend(overlays);
            }
            let memo = st.built.as_ref().map(|b| &b.memo);
            let overlays = st.built.as_ref().map(|b| &b.overlays);
            let (mut installs, mut waiting) = (Vec::new(), Vec::new());
            for id in plan.nodes {
                let Some(entry) = st.nodes.get(&id) else {
                    continue;
                };
                let Some(c) = memo.and_then(|m| m.get(&entry.key)) else {
                    if !failed.contains(&entry.key) {
                        // Its key changed during the round: next round.
                        st.dirty.insert(id);
                    }
                    continue;
                };
                // A pod's own server listeners, else its identity's.
                let overlay = overlays
                    .and_then(|o| o.get(&entry.key))
                    .or(c.inbound_content.as_ref())
                    .cloned();
                let again = entry.pushed.as_ref().is_some_and(|(pc, po)| {
                    Arc::ptr_eq(pc, &c.outbound.content)
                        && match (po, &overlay) {
                            (None, None) => true,
                            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
                            _ => false,
                        }
                });
                let i = Install {
                    node: id,
                    content: c.outbound.content.clone(),
                    overlay,
                    again,
                };
                // Nodes that have nothing yet go first.
                match entry.pushed {
                    None => waiting.push(i),
                    Some(_) => installs.push(i),
                }
            }
            waiting.append(&mut installs);
            let installs = waiting;
            let changed_at = match (plan.new_epoch, current) {
                (false, _) => None,
                (true, true) => st.changed_at.take(),
                (true, false) => st.changed_at,
            };
            (installs, changed_at)
        };

        if plan.new_epoch {
            // Before the first install: a client that has the generation's
            // resources finds it served.
            let number = plan.generation.number;
            self.served.send_replace(Some(plan.generation.clone()));
            self.metrics
                .generation
                .set(i64::try_from(number).unwrap_or(i64::MAX));
        }
        let cache = self.cache.clone();
        // A change that lands during a long batch (a storm's thousand new
        // nodes) cuts it short: the next round serves every node anyway,
        // with the change, instead of finishing the old one first.
        let epoch_now = self.epoch_now.clone();
        let cut = move || !install_anyway && epoch_now.load(Ordering::Acquire) != plan.epoch;
        let (installed, bumped, cut_short) = self
            .cpu_work(move || install(&cache, installs, cut))
            .await
            .unwrap_or_default();
        {
            let mut st = self.lock();
            if let (true, Some(at)) = (cut_short, changed_at) {
                // The nodes left out wait for the next round: convergence
                // still runs from this change.
                st.changed_at = Some(st.changed_at.map_or(at, |c| c.min(at)));
            }
            for (id, pushed) in installed {
                match st.nodes.get_mut(&id) {
                    Some(entry) => entry.pushed = Some(pushed),
                    // It went away while it was being installed: leave
                    // nothing behind in the cache.
                    None => self.cache.clear(&id),
                }
            }
        }
        if plan.new_epoch {
            let number = plan.generation.number;
            self.metrics.push_took(started.elapsed().as_secs_f64());
            tracing::info!(
                generation = number,
                nodes_pushed = bumped.len(),
                elapsed_ms = started.elapsed().as_millis() as u64,
                "configuration applied"
            );
        }
        if let Some(at) = changed_at {
            self.convergence.expect(at, bumped);
        }
        !cut_short
    }

    /// Compiles each key on the blocking pool, at most `compile_slots()` at
    /// once. A key whose resources are its identity's (see [`Sharing`])
    /// takes the identity's compile, made once for all of them, and its
    /// own server listeners as an overlay. Returns the compilations (under
    /// each key, and under the identities compiled), the overlays, and the
    /// keys whose compile failed (logged; their nodes wait for the next
    /// change instead of retrying in a loop).
    async fn compile_keys(
        &self,
        compiler: Option<&Arc<Compiler>>,
        jobs: Vec<Job>,
    ) -> (
        HashMap<ClientKey, Arc<Compiled>>,
        HashMap<ClientKey, Arc<Content>>,
        HashSet<ClientKey>,
    ) {
        let mut out = HashMap::new();
        let Some(compiler) = compiler else {
            return (out, HashMap::new(), HashSet::new());
        };
        let c = compiler.clone();
        let keys: Vec<ClientKey> = jobs.iter().map(|j| j.key.clone()).collect();
        let sharing = self
            .cpu_work(move || keys.iter().map(|k| k.sharing(&c)).collect::<Vec<_>>())
            .await
            .unwrap_or_else(|| vec![Sharing::Own; jobs.len()]);
        // What to compile (key -> base), who takes an identity's compile,
        // and who needs an overlay on it.
        let mut compile: HashMap<ClientKey, Option<Arc<Compiled>>> = HashMap::new();
        let mut takers: HashMap<ClientKey, Vec<(ClientKey, Sharing)>> = HashMap::new();
        let mut overlay_of: Vec<(ClientKey, Arc<Compiled>)> = Vec::new();
        for (job, how) in jobs.into_iter().zip(sharing) {
            match (how, job.shared) {
                (Sharing::Own, _) => {
                    compile.insert(job.key, job.prev);
                }
                (_, Some(shared)) => {
                    if how == Sharing::Overlay {
                        overlay_of.push((job.key.clone(), shared.clone()));
                    }
                    out.insert(job.key, shared);
                }
                (_, None) => {
                    let identity = job.key.identity();
                    compile.entry(identity.clone()).or_insert(job.identity_prev);
                    takers.entry(identity).or_default().push((job.key, how));
                }
            }
        }
        let mut pending: HashSet<ClientKey> = compile.keys().cloned().collect();
        let mut jobs = JoinSet::new();
        for (key, prev) in compile {
            let permit = self.permit().await;
            let compiler = compiler.clone();
            let metrics = self.metrics.clone();
            let outbound = self.outbound.clone();
            jobs.spawn_blocking(move || {
                let _permit = permit;
                let started = std::time::Instant::now();
                let c = compile::compile(&compiler, &key, prev.as_deref(), &outbound);
                metrics.compilations.inc();
                metrics
                    .compile_time
                    .observe(started.elapsed().as_secs_f64());
                (key, Arc::new(c))
            });
        }
        while let Some(r) = jobs.join_next().await {
            match r {
                Ok((key, c)) => {
                    pending.remove(&key);
                    for (t, how) in takers.remove(&key).into_iter().flatten() {
                        if how == Sharing::Overlay {
                            overlay_of.push((t.clone(), c.clone()));
                        }
                        out.insert(t, c.clone());
                    }
                    out.insert(key, c);
                }
                Err(e) => {
                    tracing::error!(error = %e, "compiling a client identity failed");
                    self.metrics.istiod.internal_errors.inc();
                }
            }
        }
        pending.extend(takers.into_values().flatten().map(|(k, _)| k));
        let overlays = if overlay_of.is_empty() {
            HashMap::new()
        } else {
            self.cpu_work(move || {
                overlay_of
                    .into_iter()
                    .filter_map(|(k, c)| Some((k.clone(), compile::overlay(&c, &k)?)))
                    .collect()
            })
            .await
            .unwrap_or_default()
        };
        (out, overlays, pending)
    }
}

/// Hands each node its snapshot (the cache versions and indexes it, CPU
/// work for a new node), until `cut` says to stop. Returns the nodes set
/// with what they were given, per node whose resources changed the new
/// version of each changed type, and whether `cut` stopped it.
fn install(
    cache: &mesh_xds::server::SnapshotCache,
    installs: Vec<Install>,
    cut: impl Fn() -> bool,
) -> (Vec<(String, Pushed)>, Bumped, bool) {
    let mut installed = Vec::with_capacity(installs.len());
    let mut bumped = BTreeMap::new();
    for i in installs {
        if cut() {
            return (installed, bumped, true);
        }
        if i.again && cache.snapshot(&i.node).is_some() {
            // Same content as this node already has: nothing to compare.
            continue;
        }
        let changed = cache.set_content(&i.node, i.content.clone(), i.overlay.clone());
        if !changed.is_empty() {
            let versions = cache.snapshot(&i.node);
            let changed: BTreeMap<String, String> = changed
                .into_iter()
                .map(|t| {
                    let v = versions
                        .as_ref()
                        .and_then(|v| v.version(&t).map(str::to_string))
                        .unwrap_or_default();
                    (t, v)
                })
                .collect();
            bumped.insert(i.node.clone(), changed);
        }
        installed.push((i.node, (i.content, i.overlay)));
    }
    (installed, bumped, false)
}
