//! Telemetry as Istio's proxies report it, from the SDK itself: Istio's
//! standard request metrics with their names, labels and buckets, and
//! access logs in Istio's text and JSON formats. One layer serves both
//! sides: the client stack reports as `reporter="source"`, the server
//! stack as `reporter="destination"`, so a call between two SDK
//! workloads is counted twice, as between two sidecars, and Kiali and
//! the Istio Grafana dashboards read it unchanged.
//!
//! - [`peer`]: the workload labels of each end, as Istio derives them;
//! - [`exchange`]: Istio's HTTP peer metadata exchange, so each end learns
//!   the other's workload;
//! - [`metrics`], [`registry`]: the series and the Prometheus registry
//!   (`mesh.metrics()`, `/stats/prometheus`);
//! - [`record`], [`body`], [`layer`]: what one request reports, when its
//!   response ends;
//! - [`access_log`]: the log lines, through `tracing`.
//!
//! - `otlp` (feature `otlp`): span export to an OpenTelemetry collector.
//!
//! Not here: what the Telemetry API selects (compiled in mesh-core, read
//! from the model per request).

pub mod access_log;
pub mod body;
pub mod exchange;
pub mod layer;
pub mod metrics;
#[cfg(feature = "otlp")]
pub mod otlp;
pub mod peer;
pub mod record;
pub mod registry;

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering::Relaxed};
use std::sync::Arc;

use http::{HeaderMap, Request};

pub use layer::{TelemetryFuture, TelemetryLayer, TelemetryService};
pub use peer::{Peer, WorkloadInfo};
pub use registry::{MeshMetrics, StatsHandler, STATS_PATH};

use crate::thread_cache::ThreadCache;
use crate::upstream::Upstream;
use crate::ModelRx;
use exchange::LocalMetadata;
use metrics::REQUEST_LABELS;

/// Which end of a request a report comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reporter {
    /// The client (`reporter="source"`).
    Source,
    /// The server (`reporter="destination"`).
    Destination,
}

/// How access log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccessLogFormat {
    /// No access log.
    Off,
    /// Istio's default text line.
    Text,
    /// Istio's JSON keys.
    Json,
}

/// A workload's telemetry: who it is, where its metrics go, and how it
/// logs. Clones share everything.
#[derive(Clone)]
pub struct Telemetry {
    inner: Arc<Inner>,
}

struct Inner {
    /// Tells this instance's series apart in per-thread caches.
    id: u64,
    metrics: MeshMetrics,
    local: Arc<Peer>,
    principal: Arc<str>,
    local_meta: LocalMetadata,
    names: Arc<[Arc<str>]>,
    unknown: Arc<str>,
    model: ModelRx,
    access_log: AtomicU8,
}

impl std::fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Telemetry")
            .field("local", &self.inner.local)
            .finish_non_exhaustive()
    }
}

impl Telemetry {
    /// Telemetry for the workload `w`, reading the mesh from `model`,
    /// recording into `metrics`.
    pub fn new(w: &WorkloadInfo, model: ModelRx, metrics: MeshMetrics) -> Self {
        static IDS: AtomicU64 = AtomicU64::new(1);
        let local = Peer::of(w);
        Telemetry {
            inner: Arc::new(Inner {
                id: IDS.fetch_add(1, Relaxed),
                metrics,
                principal: w.principal.as_deref().unwrap_or(peer::UNKNOWN).into(),
                local,
                local_meta: LocalMetadata::encode(w),
                names: REQUEST_LABELS.iter().map(|n| Arc::from(*n)).collect(),
                unknown: Arc::from(peer::UNKNOWN),
                model,
                access_log: AtomicU8::new(AccessLogFormat::Off as u8),
            }),
        }
    }

    /// The registry the metrics go to.
    pub fn metrics(&self) -> &MeshMetrics {
        &self.inner.metrics
    }

    /// This workload's labels.
    pub fn local(&self) -> &Arc<Peer> {
        &self.inner.local
    }

    /// Sets the access log format for both sides (MeshConfig's
    /// `accessLogFile`/`accessLogEncoding` as a switch).
    pub fn set_access_log(&self, format: AccessLogFormat) {
        self.inner.access_log.store(format as u8, Relaxed);
    }

    /// The client stack's layer.
    pub fn client_layer(&self) -> TelemetryLayer {
        TelemetryLayer::new(Some(self.clone()), Reporter::Source)
    }

    /// The server stack's layer.
    pub fn server_layer(&self) -> TelemetryLayer {
        TelemetryLayer::new(Some(self.clone()), Reporter::Destination)
    }

    fn enabled(&self, _reporter: Reporter) -> bool {
        true
    }

    fn access_log_on(&self, _reporter: Reporter) -> bool {
        self.inner.access_log.load(Relaxed) != AccessLogFormat::Off as u8
    }

    /// Whether the destination is a mesh workload, which takes part in
    /// the metadata exchange (external services are told nothing).
    fn in_mesh(&self, up: &Upstream) -> bool {
        thread_local! {
            static IN_MESH: ThreadCache<Arc<str>, bool> = const { ThreadCache::new() };
        }
        if let Some(hit) =
            IN_MESH.with(|c| c.find(|k, v| Arc::ptr_eq(k, &up.cluster).then_some(*v)))
        {
            return hit;
        }
        let model = up.model();
        let yes = model.clusters.get(&*up.cluster).is_some_and(|c| {
            model
                .outbound
                .values()
                .find(|s| s.host == c.host)
                .is_none_or(|s| !s.mesh_external)
        });
        IN_MESH.with(|c| c.insert(up.cluster.clone(), yes, |_| true));
        yes
    }

    /// The service a request to this workload is for: its authority
    /// resolved to a mesh host as this workload's clients would, else
    /// the host as written.
    fn served_service<B>(&self, req: &Request<B>) -> Arc<str> {
        thread_local! {
            static SERVED: ThreadCache<(u64, String), Arc<str>> = const { ThreadCache::new() };
        }
        let authority = req
            .uri()
            .authority()
            .map(|a| a.as_str())
            .or_else(|| req.headers().get(http::header::HOST)?.to_str().ok());
        let Some(authority) = authority else {
            return self.inner.unknown.clone();
        };
        let id = self.inner.id;
        if let Some(hit) =
            SERVED.with(|c| c.find(|(i, a), v| (*i == id && a == authority).then(|| v.clone())))
        {
            return hit;
        }
        let host = authority
            .rsplit_once(':')
            .filter(|(_, p)| p.bytes().all(|b| b.is_ascii_digit()))
            .map_or(authority, |(h, _)| h);
        let model = self.inner.model.borrow();
        let resolved: Arc<str> = Arc::from(model.resolve_host(host).unwrap_or(host));
        drop(model);
        SERVED.with(|c| c.insert((id, authority.to_string()), resolved.clone(), |_| true));
        resolved
    }

    /// `destination_service_name` and `_namespace` of a host.
    fn service_parts(&self, host: &str) -> (Arc<str>, Arc<str>) {
        let model = self.inner.model.borrow();
        match mesh_core::host::service_of(host, &model.mesh.domain_suffix) {
            Some((name, ns)) => (name.into(), ns.into()),
            None => (host.into(), self.inner.unknown.clone()),
        }
    }
}

impl Inner {
    fn access_log_json(&self) -> bool {
        self.access_log.load(Relaxed) == AccessLogFormat::Json as u8
    }
}

/// The `grpc-status` in a header or trailer map.
pub(crate) fn grpc_status(h: &HeaderMap) -> Option<u16> {
    h.get("grpc-status")?.to_str().ok()?.parse().ok()
}
