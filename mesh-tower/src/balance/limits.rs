//! Connection-pool limits as Envoy circuit breakers, per cluster.
//!
//! - `http2MaxRequests` caps the requests in flight to the cluster (Envoy's
//!   `max_requests`, for every protocol);
//! - `maxConnections` caps HTTP/1.1 connections: each request in flight
//!   holds one, and a request that finds none free waits as *pending*;
//! - `http1MaxPendingRequests` caps the waiting requests.
//!
//! A request over any limit fails at once with UO; nothing queues beyond
//! the configured bounds. Istio's defaults leave every limit at 2^32-1.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use mesh_core::config::networking::destination_rule::ConnectionPoolSettings;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::stats::ClusterStats;
use crate::{MeshError, ResponseFlag};

/// The limits of one cluster and their live counts.
#[derive(Debug)]
pub(crate) struct Limits {
    max_requests: u64,
    max_pending: u64,
    max_connections: u64,
    conn_slots: Option<Arc<Semaphore>>,
    /// No limit below Istio's defaults: admission counts nothing.
    unlimited: bool,
    active: AtomicU64,
    pending: AtomicU64,
}

/// A request's admission; releases its slots when dropped. Under no
/// limit it holds nothing (nothing is counted).
#[derive(Debug)]
pub(crate) struct Admission {
    limits: Option<(Arc<Limits>, Arc<ClusterStats>)>,
    _slot: Option<OwnedSemaphorePermit>,
}

impl Drop for Admission {
    fn drop(&mut self) {
        if let Some((l, _)) = &self.limits {
            l.active.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

impl Limits {
    pub fn new(cp: Option<&ConnectionPoolSettings>) -> Self {
        let http = cp.and_then(|c| c.http.as_ref());
        let tcp = cp.and_then(|c| c.tcp.as_ref());
        let max = u64::from(u32::MAX);
        let max_connections = tcp
            .and_then(|t| t.max_connections)
            .map_or(max, u64::from)
            .max(1);
        let conn_slots = (max_connections < max).then(|| {
            Arc::new(Semaphore::new(
                (max_connections as usize).min(Semaphore::MAX_PERMITS),
            ))
        });
        let max_requests = http
            .and_then(|h| h.http2_max_requests)
            .map_or(max, u64::from)
            .max(1);
        Self {
            max_requests,
            max_pending: http
                .and_then(|h| h.http1_max_pending_requests)
                .map_or(max, u64::from),
            max_connections,
            unlimited: max_requests >= max && conn_slots.is_none(),
            conn_slots,
            active: AtomicU64::new(0),
            pending: AtomicU64::new(0),
        }
    }

    /// Admits a request at once, refuses it with UO, or (an `http1`
    /// request when every connection slot is taken and pending requests
    /// are allowed) gives the [`Wait`] for a slot.
    pub fn admit_now(
        self: &Arc<Self>,
        http1: bool,
        stats: &Arc<ClusterStats>,
    ) -> Result<Admit, MeshError> {
        if self.unlimited {
            // Istio's defaults: nothing to enforce, so nothing to count
            // (the cluster's requests in flight are the endpoints' counts).
            return Ok(Admit::Now(Admission {
                limits: None,
                _slot: None,
            }));
        }
        let prev = self.active.fetch_add(1, Ordering::AcqRel);
        // From here on, dropping `adm` undoes the active count.
        let mut adm = Admission {
            limits: Some((self.clone(), stats.clone())),
            _slot: None,
        };
        if prev >= self.max_requests {
            stats.inc_overflows();
            return Err(MeshError::new(
                ResponseFlag::UpstreamOverflow,
                format!(
                    "{} requests already in flight to the cluster (connectionPool.http.http2MaxRequests)",
                    self.max_requests
                ),
            ));
        }
        let Some(slots) = self.conn_slots.as_ref().filter(|_| http1) else {
            return Ok(Admit::Now(adm));
        };
        if let Ok(p) = slots.clone().try_acquire_owned() {
            adm._slot = Some(p);
            return Ok(Admit::Now(adm));
        }
        let prev = self.pending.fetch_add(1, Ordering::AcqRel);
        stats.pending_up();
        let pending = Pending(Some(adm));
        if prev >= self.max_pending {
            drop(pending);
            stats.inc_overflows();
            return Err(MeshError::new(
                ResponseFlag::UpstreamOverflow,
                format!(
                    "all {} connections busy and {} requests already pending (connectionPool.tcp.maxConnections, http.http1MaxPendingRequests)",
                    self.max_connections, self.max_pending
                ),
            ));
        }
        Ok(Admit::Wait(Wait {
            slots: slots.clone(),
            pending,
        }))
    }
}

/// The result of [`Limits::admit_now`] that did not refuse.
pub(crate) enum Admit {
    /// Admitted.
    Now(Admission),
    /// Admitted once a connection slot frees up.
    Wait(Wait),
}

/// An admission counted as pending until it gets its connection slot.
pub(crate) struct Wait {
    slots: Arc<Semaphore>,
    pending: Pending,
}

/// An admission counted as pending; dropping it undoes both counts.
struct Pending(Option<Admission>);

impl Pending {
    fn end(a: &Admission) {
        if let Some((l, stats)) = &a.limits {
            l.pending.fetch_sub(1, Ordering::AcqRel);
            stats.pending_down();
        }
    }

    /// The admission, no longer pending.
    fn into_admission(mut self) -> Option<Admission> {
        let a = self.0.take()?;
        Self::end(&a);
        Some(a)
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if let Some(a) = &self.0 {
            Self::end(a);
        }
    }
}

impl Wait {
    /// Waits for the connection slot.
    pub async fn admitted(self) -> Result<Admission, MeshError> {
        let permit = self.slots.clone().acquire_owned().await.map_err(|_| {
            MeshError::new(ResponseFlag::UpstreamOverflow, "connection pool closed")
        })?;
        let mut adm = self.pending.into_admission().ok_or_else(|| {
            MeshError::new(ResponseFlag::UpstreamOverflow, "admission already used")
        })?;
        adm._slot = Some(permit);
        Ok(adm)
    }
}
