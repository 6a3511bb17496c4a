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
//! - [`tcp`]: Istio's TCP metrics for opaque connections;
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
pub mod tcp;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use mesh_core::sync::LockExt;
use mesh_core::telemetry::TracingPolicy;

use http::{HeaderMap, Request};

pub use layer::{TelemetryFuture, TelemetryLayer, TelemetryService};
pub use peer::{Peer, WorkloadInfo};
pub use registry::{MeshMetrics, StatsHandler, STATS_PATH};
pub use tcp::{MeteredIo, TcpConnection};

use crate::handle::Handle;
use crate::thread_cache::ThreadCache;
use crate::upstream::Upstream;
use crate::ModelRx;
use exchange::LocalMetadata;
use metrics::REQUEST_LABELS;
use otlp::OtlpExporter;

/// Requests sent with metadata to a cluster that never answers before
/// the client stops sending it on every request.
const EXCHANGE_PROBES: u32 = 16;
/// After that, one request in this many still asks.
const EXCHANGE_REPROBE: u32 = 1024;

/// Per thread and cluster: whether it is a mesh service, and how many
/// exchanges in a row went unanswered.
struct Exchange {
    in_mesh: bool,
    unanswered: std::cell::Cell<u32>,
}

thread_local! {
    static EXCHANGE: ThreadCache<Arc<str>, std::rc::Rc<Exchange>> = const { ThreadCache::new() };
}

/// Notes whether the exchange with the cluster at `cluster` (a pointer
/// the thread's cache holds) was answered.
fn exchange_answered(cluster: usize, answered: bool) {
    EXCHANGE.with(|c| {
        c.find(|k, v| {
            (Arc::as_ptr(k).cast::<u8>() as usize == cluster).then(|| {
                let n = v.unanswered.get();
                v.unanswered
                    .set(if answered { 0 } else { n.saturating_add(1) });
            })
        })
    });
}

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

pub(crate) struct Inner {
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

    /// Whether to send this workload's metadata to the destination:
    /// only to mesh services (external ones are told nothing), and, per
    /// cluster, while its endpoints answer with theirs. A destination that
    /// never answers (a workload outside the mesh behind a mesh service
    /// name) is asked again only once in a while, so it does not pay for
    /// headers it ignores on every request.
    fn exchange_with(&self, up: &Upstream) -> bool {
        let state =
            EXCHANGE.with(|c| c.find(|k, v| Arc::ptr_eq(k, &up.cluster).then(|| v.clone())));
        let state = match state {
            Some(s) => s,
            None => {
                let model = up.model();
                let in_mesh = model.clusters.get(&*up.cluster).is_some_and(|c| {
                    model
                        .outbound
                        .values()
                        .find(|s| s.host == c.host)
                        .is_none_or(|s| !s.mesh_external)
                });
                let s = std::rc::Rc::new(Exchange {
                    in_mesh,
                    unanswered: std::cell::Cell::new(0),
                });
                EXCHANGE.with(|c| c.insert(up.cluster.clone(), s.clone(), |_| true));
                s
            }
        };
        let n = state.unanswered.get();
        state.in_mesh && (n < EXCHANGE_PROBES || n % EXCHANGE_REPROBE == 0)
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
}

impl Inner {
    /// `destination_service_name` and `_namespace` of a host.
    fn service_parts(&self, host: &str) -> (Arc<str>, Arc<str>) {
        let model = self.model.borrow();
        match mesh_core::host::service_of(host, &model.mesh.domain_suffix) {
            Some((name, ns)) => (name.into(), ns.into()),
            None => (host.into(), self.unknown.clone()),
        }
    }
}

static GRPC_STATUS: http::HeaderName = http::HeaderName::from_static("grpc-status");

/// The `grpc-status` in a header or trailer map.
pub(crate) fn grpc_status(h: &HeaderMap) -> Option<u16> {
    h.get(&GRPC_STATUS)?.to_str().ok()?.parse().ok()
}

impl Telemetry {
    /// A handle on this telemetry that the calling thread made: a request
    /// holds one until its response ends, and cloning it writes a count
    /// only this thread uses (see `crate::handle`).
    pub(crate) fn handle(&self) -> Handle<Inner> {
        thread_local! {
            static HANDLES: ThreadCache<Arc<Inner>, Handle<Inner>> = const { ThreadCache::new() };
        }
        if let Some(h) =
            HANDLES.with(|c| c.find(|k, h| Arc::ptr_eq(k, &self.inner).then(|| h.clone())))
        {
            return h;
        }
        let h = Handle::new(self.inner.clone());
        HANDLES.with(|c| c.insert(self.inner.clone(), h.clone(), |_| true));
        h
    }
}
