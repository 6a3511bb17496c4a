//! Telemetry as Istio's proxies report it, from the SDK itself: Istio's
//! standard request metrics with their names, labels and buckets,
//! OpenTelemetry spans, and access logs in Istio's text and JSON formats,
//! each as the workload's Telemetry API policy (`Model.telemetry`) says. One layer serves both
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
//! - [`span`], [`otlp`]: spans, trace context propagation and export to an
//!   OpenTelemetry collector;
//! - [`plan`]: what the Telemetry API asks of a direction.
//!
//! Not here: what the Telemetry API selects (compiled in mesh-core, read
//! from the model per request).

pub mod access_log;
pub mod body;
pub mod exchange;
pub mod layer;
pub mod metrics;
pub mod otlp;
pub mod peer;
pub mod plan;
pub mod record;
pub mod registry;
pub mod span;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use mesh_core::sync::LockExt;
use mesh_core::telemetry::TracingPolicy;

use http::{HeaderMap, Request};

pub use layer::{TelemetryFuture, TelemetryLayer, TelemetryService};
pub use peer::{Peer, WorkloadInfo};
pub use registry::{MeshMetrics, StatsHandler, STATS_PATH};

use crate::thread_cache::ThreadCache;
use crate::upstream::Upstream;
use crate::ModelRx;
use exchange::LocalMetadata;
use metrics::REQUEST_LABELS;
use otlp::OtlpExporter;

/// Which end of a request a report comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reporter {
    /// The client (`reporter="source"`).
    Source,
    /// The server (`reporter="destination"`).
    Destination,
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
    /// Span exporters by OTLP endpoint (`None`: it could not start).
    exporters: Mutex<HashMap<String, Option<OtlpExporter>>>,
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
                exporters: Mutex::default(),
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

    /// The client stack's layer.
    pub fn client_layer(&self) -> TelemetryLayer {
        TelemetryLayer::new(Some(self.clone()), Reporter::Source)
    }

    /// The server stack's layer.
    pub fn server_layer(&self) -> TelemetryLayer {
        TelemetryLayer::new(Some(self.clone()), Reporter::Destination)
    }

    /// The exporter for the policy's tracing provider, started on first
    /// use; `None` when the provider is not one the SDK exports to.
    fn exporter(&self, policy: &TracingPolicy) -> Option<OtlpExporter> {
        let endpoint = span::endpoint(policy.provider.as_ref()?)?;
        let mut exporters = self.inner.exporters.locked();
        if let Some(e) = exporters.get(&endpoint) {
            return e.clone();
        }
        let started = match OtlpExporter::start(span::config(self, &endpoint)) {
            Ok(e) => Some(e),
            Err(e) => {
                tracing::warn!(endpoint = %endpoint, error = %e, "spans cannot be exported");
                None
            }
        };
        exporters.insert(endpoint, started.clone());
        started
    }

    /// The exporters started so far, by endpoint (exported and dropped
    /// span counts).
    pub fn exporters(&self) -> Vec<(String, OtlpExporter)> {
        self.inner
            .exporters
            .locked()
            .iter()
            .filter_map(|(k, v)| Some((k.clone(), v.clone()?)))
            .collect()
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

/// The `grpc-status` in a header or trailer map.
pub(crate) fn grpc_status(h: &HeaderMap) -> Option<u16> {
    h.get("grpc-status")?.to_str().ok()?.parse().ok()
}
