//! Per-cluster counters of the endpoint stage, for tests and metrics.

use std::sync::atomic::{AtomicU64, Ordering};

/// Live counters of one cluster.
#[derive(Debug, Default)]
pub struct ClusterStats {
    requests: AtomicU64,
    pending: AtomicU64,
    overflows: AtomicU64,
    ejections: AtomicU64,
    no_healthy: AtomicU64,
    connections: AtomicU64,
    connect_failures: AtomicU64,
}

/// A copy of a cluster's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    /// Requests sent to an endpoint.
    pub requests: u64,
    /// Requests in flight now.
    pub active_requests: u64,
    /// Requests waiting for a connection now.
    pub pending_requests: u64,
    /// Requests refused by a circuit breaker (UO).
    pub overflows: u64,
    /// Outlier ejections.
    pub ejections: u64,
    /// Requests refused for lack of a healthy endpoint (UH).
    pub no_healthy: u64,
    /// Connections open now.
    pub connections: u64,
    /// Failed connection attempts.
    pub connect_failures: u64,
}

impl ClusterStats {
    /// The current values (`active_requests` is the caller's to fill:
    /// the endpoints count their requests in flight).
    pub fn snapshot(&self) -> StatsSnapshot {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        StatsSnapshot {
            requests: g(&self.requests),
            active_requests: 0,
            pending_requests: g(&self.pending),
            overflows: g(&self.overflows),
            ejections: g(&self.ejections),
            no_healthy: g(&self.no_healthy),
            connections: g(&self.connections),
            connect_failures: g(&self.connect_failures),
        }
    }

    pub(crate) fn inc_requests(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
    }
    pub(crate) fn pending_up(&self) {
        self.pending.fetch_add(1, Ordering::Relaxed);
    }
    pub(crate) fn pending_down(&self) {
        self.pending.fetch_sub(1, Ordering::Relaxed);
    }
    pub(crate) fn inc_overflows(&self) {
        self.overflows.fetch_add(1, Ordering::Relaxed);
    }
    pub(crate) fn inc_ejections(&self) {
        self.ejections.fetch_add(1, Ordering::Relaxed);
    }
    pub(crate) fn inc_no_healthy(&self) {
        self.no_healthy.fetch_add(1, Ordering::Relaxed);
    }
    pub(crate) fn conn_opened(&self) {
        self.connections.fetch_add(1, Ordering::Relaxed);
    }
    pub(crate) fn conn_closed(&self) {
        self.connections.fetch_sub(1, Ordering::Relaxed);
    }
    pub(crate) fn inc_connect_failures(&self) {
        self.connect_failures.fetch_add(1, Ordering::Relaxed);
    }
}
