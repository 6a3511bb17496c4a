//! The hand-off between the routing stage ([`crate::client`]) and the
//! endpoint stage ([`crate::balance`]).
//!
//! Routing decides *which cluster* a request (or a retry attempt) goes to
//! and records it as an [`Upstream`] request extension; the endpoint stage
//! decides *which endpoint* of that cluster serves it, and records every
//! endpoint it used ([`Upstream::tried_endpoints`]) so a retry can prefer
//! another one.

use mesh_core::sync::LockExt;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use mesh_core::model::Model;

use crate::client::Routed;
use crate::handle::Handle;

/// Where a request goes, set by routing on every attempt.
///
/// Cloned for every attempt and by the endpoint stage, so its names are
/// shared `Arc<str>`s: a clone allocates nothing.
#[derive(Debug, Clone)]
pub struct Upstream {
    /// Cluster name in the model (`outbound|<port>|<subset>|<host>`), or
    /// [`Upstream::PASSTHROUGH`] for an unknown host under ALLOW_ANY.
    pub cluster: Arc<str>,
    /// Destination host (fully qualified for mesh services).
    pub host: Arc<str>,
    /// Destination port.
    pub port: u16,
    /// Subset, if the route named one.
    pub subset: Option<Arc<str>>,
    /// The model the request started with ([`Upstream::model`]). A handle
    /// the routing thread made, so the request writes a count only its
    /// thread uses (see `crate::handle`).
    pub(crate) model: Handle<Model>,
    /// 1-based attempt number (retries increase it).
    pub attempt: u32,
    /// Endpoints earlier attempts of this request used, most recent last,
    /// shared by its attempts: the endpoint stage appends to it and avoids
    /// these when it can.
    pub(crate) tried: Arc<Mutex<Tried>>,
    /// The routing decision that chose this upstream (`None` when the
    /// request did not come through the route layer, e.g. a mirror copy).
    pub routed: Option<Routed>,
}

impl Upstream {
    /// The cluster name for requests passed through to their original
    /// destination (Istio's `PassthroughCluster`).
    pub const PASSTHROUGH: &'static str = "PassthroughCluster";

    /// A first attempt at `cluster` of `model` (for an endpoint stage
    /// called without the routing stage, e.g. in tests).
    pub fn new(cluster: &str, host: &str, port: u16, model: Arc<Model>) -> Self {
        Self {
            cluster: cluster.into(),
            host: host.into(),
            port,
            subset: None,
            model: Handle::new(model),
            attempt: 1,
            tried: Arc::default(),
            routed: None,
        }
    }

    /// The model the request started with: in-flight requests finish on
    /// the config they started with, whatever arrives meanwhile.
    pub fn model(&self) -> &Arc<Model> {
        self.model.arc()
    }

    /// True for passthrough requests.
    pub fn is_passthrough(&self) -> bool {
        &*self.cluster == Self::PASSTHROUGH
    }

    /// The endpoints tried so far.
    pub fn tried_endpoints(&self) -> Vec<SocketAddr> {
        self.tried.locked().iter().collect()
    }

    /// Records that an attempt used `addr`.
    pub fn record_tried(&self, addr: SocketAddr) {
        self.tried.locked().push(addr);
    }
}

/// Response extension set by the endpoint stage: the endpoint that answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServedBy(pub SocketAddr);

/// Endpoints tried by a request's attempts. The first few are kept inline
/// (a request rarely makes more than three attempts), so recording one
/// allocates nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Tried {
    inline: [Option<SocketAddr>; 3],
    more: Vec<SocketAddr>,
}

impl Tried {
    /// The endpoints, most recent last.
    pub fn iter(&self) -> impl Iterator<Item = SocketAddr> + '_ {
        self.inline
            .iter()
            .flatten()
            .copied()
            .chain(self.more.iter().copied())
    }

    /// True when no attempt recorded an endpoint yet.
    pub fn is_empty(&self) -> bool {
        self.inline[0].is_none()
    }

    /// True when `addr` was tried.
    pub fn contains(&self, addr: &SocketAddr) -> bool {
        self.iter().any(|a| a == *addr)
    }

    /// Records `addr`.
    pub fn push(&mut self, addr: SocketAddr) {
        match self.inline.iter_mut().find(|s| s.is_none()) {
            Some(slot) => *slot = Some(addr),
            None => self.more.push(addr),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tried_keeps_order_past_its_inline_slots() {
        let mut t = Tried::default();
        assert!(t.is_empty());
        let addrs: Vec<SocketAddr> = (1..=5)
            .map(|i| SocketAddr::from(([10, 0, 0, i], 80)))
            .collect();
        for a in &addrs {
            t.push(*a);
        }
        assert!(!t.is_empty());
        assert_eq!(t.iter().collect::<Vec<_>>(), addrs);
        assert!(t.contains(&addrs[4]));
        assert!(!t.contains(&SocketAddr::from(([10, 0, 0, 9], 80))));
    }
}
