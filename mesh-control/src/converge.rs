//! Convergence time: from a config change being seen to every node whose
//! resources it changed having answered (ACK, or NACK, which is an answer
//! too: that node will not take the version) each changed type.
//!
//! The answers are read from the snapshot cache's per-node status, which
//! the ADS streams keep; a node that disconnects stops being waited for.

use mesh_core::sync::LockExt;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use mesh_xds::server::SnapshotCache;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::metrics::Metrics;

#[derive(Debug)]
struct Pending {
    started: Instant,
    /// Node id -> type URL -> version it must answer.
    waiting: BTreeMap<String, BTreeMap<String, String>>,
}

#[derive(Debug, Default)]
struct Inner {
    pending: Option<Pending>,
    last: Option<Duration>,
    completed: u64,
}

/// Tracks the push in flight.
#[derive(Debug, Clone)]
pub struct Convergence {
    inner: Arc<Mutex<Inner>>,
    cache: SnapshotCache,
    metrics: Arc<Metrics>,
    wake: Arc<Notify>,
}

impl Convergence {
    /// A tracker reading answers from `cache`.
    pub fn new(cache: SnapshotCache, metrics: Arc<Metrics>) -> Self {
        Self {
            inner: Arc::default(),
            cache,
            metrics,
            wake: Arc::new(Notify::new()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.locked()
    }

    /// Waits for `bumped` (node -> type -> version). A push that overlaps an
    /// unfinished one joins it and keeps its earlier start, so the figure
    /// is the time until everything is current.
    pub fn expect(&self, started: Instant, bumped: BTreeMap<String, BTreeMap<String, String>>) {
        if bumped.is_empty() {
            return;
        }
        let mut inner = self.lock();
        let p = inner.pending.get_or_insert_with(|| Pending {
            started,
            waiting: BTreeMap::new(),
        });
        p.started = p.started.min(started);
        for (node, types) in bumped {
            p.waiting.entry(node).or_default().extend(types);
        }
        drop(inner);
        self.wake.notify_one();
    }

    /// Stops waiting for a node (it disconnected).
    pub fn forget(&self, node_id: &str) {
        if let Some(p) = self.lock().pending.as_mut() {
            p.waiting.remove(node_id);
        }
        self.wake.notify_one();
    }

    /// Nodes still to answer.
    pub fn waiting(&self) -> usize {
        self.lock().pending.as_ref().map_or(0, |p| p.waiting.len())
    }

    /// The last completed convergence time.
    pub fn last(&self) -> Option<Duration> {
        self.lock().last
    }

    /// How many pushes have fully converged.
    pub fn completed(&self) -> u64 {
        self.lock().completed
    }

    /// Drops what has been answered; when nothing is left, records and
    /// returns the convergence time.
    ///
    /// The answers are read with the tracker unlocked (one status read per
    /// waiting node), so [`Convergence::expect`] and
    /// [`Convergence::forget`], which the control plane calls, never wait
    /// for a thousand of them.
    pub fn check(&self) -> Option<Duration> {
        let waiting = self.lock().pending.as_ref()?.waiting.clone();
        let answered: Vec<(String, String, String)> = waiting
            .into_iter()
            .flat_map(|(node, types)| {
                let status = self.cache.status(&node);
                types.into_iter().filter_map(move |(t, v)| {
                    let done = match status.get(&t) {
                        // Never subscribed on any stream: nothing to wait for.
                        None => true,
                        Some(s) => {
                            s.acked.as_deref() == Some(v.as_str())
                                || s.last_nack
                                    .as_ref()
                                    .is_some_and(|n| n.rejected_version == v)
                        }
                    };
                    done.then(|| (node.clone(), t, v))
                })
            })
            .collect();
        let mut inner = self.lock();
        let p = inner.pending.as_mut()?;
        for (node, t, v) in answered {
            let Some(types) = p.waiting.get_mut(&node) else {
                continue;
            };
            // A newer push of the type since the read still waits.
            if types.get(&t) == Some(&v) {
                types.remove(&t);
            }
            if types.is_empty() {
                p.waiting.remove(&node);
            }
        }
        if !p.waiting.is_empty() {
            return None;
        }
        let took = p.started.elapsed();
        inner.pending = None;
        inner.last = Some(took);
        inner.completed += 1;
        drop(inner);
        self.metrics.converged(took.as_secs_f64());
        tracing::info!(
            elapsed_ms = took.as_millis() as u64,
            "every affected client acknowledged the push"
        );
        Some(took)
    }

    /// Checks whenever something is pending or an answer may have arrived.
    pub async fn run(self) {
        loop {
            if self.waiting() == 0 {
                self.wake.notified().await;
            } else {
                // Answers arrive on many streams; a short poll is cheaper
                // than waking on each and bounds the error of the figure.
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            self.check();
        }
    }

    /// Wakes the checker (an ACK or NACK arrived).
    pub fn poke(&self) {
        self.wake.notify_one();
    }
}
