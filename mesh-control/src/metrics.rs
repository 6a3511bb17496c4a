//! meshd's Prometheus metrics (prometheus-client, served as OpenMetrics
//! text on `/metrics`): meshd's own (`meshd_*`), and beside them the ones
//! istiod exports under the same names, labels and buckets ([`Istiod`]),
//! so istiod's dashboards and alerts work on meshd unchanged.

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::Mutex;

use mesh_core::sync::LockExt;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

type TypeLabel = Vec<(&'static str, &'static str)>;
type VersionLabel = Vec<(&'static str, String)>;

/// A monotonic count exported under istiod's exact name. istiod's
/// exposition has no `_total` suffix on these (`pilot_xds_pushes`), and
/// OpenMetrics adds one to every counter, so they are typed gauge: PromQL's
/// `rate()` and `irate()` treat the series the same.
pub type Sum = Gauge<u64, AtomicU64>;

/// istiod's buckets for push and debounce times, in seconds.
const PUSH_BUCKETS: [f64; 8] = [0.01, 0.1, 1.0, 3.0, 5.0, 10.0, 20.0, 30.0];

/// istiod's buckets for pushed config sizes, in bytes (10K, 1M, gRPC's 4M
/// default limit, 10M, 40M).
const SIZE_BUCKETS: [f64; 6] = [
    1.0,
    10_000.0,
    1_000_000.0,
    4_000_000.0,
    10_000_000.0,
    40_000_000.0,
];

/// A histogram per type with istiod's size buckets.
type SizeFamily = Family<TypeLabel, Histogram, fn() -> Histogram>;

/// istiod's buckets for proxy convergence, in seconds.
const CONVERGENCE_BUCKETS: [f64; 8] = [0.1, 0.5, 1.0, 3.0, 5.0, 10.0, 20.0, 30.0];

/// The metrics istiod exports, with its names, labels and buckets, fed
/// from the same events as meshd's own. Where meshd differs in what it can
/// measure, the doc of the field says so.
#[derive(Debug)]
pub struct Istiod {
    /// `pilot_xds{version}`: connected ADS streams by the client's
    /// `ISTIO_VERSION` (`unknown` when it sends none).
    xds: Family<VersionLabel, Gauge>,
    /// Stream id -> the version it is counted under.
    streams: Mutex<HashMap<u64, String>>,
    /// `pilot_xds_pushes{type}`: resource-type versions pushed.
    pub pushes: Family<TypeLabel, Sum>,
    /// `pilot_total_xds_rejects{type}`: pushes clients NACKed.
    pub rejects: Family<TypeLabel, Sum>,
    /// `pilot_total_xds_internal_errors`: compile jobs that failed.
    pub internal_errors: Sum,
    /// `pilot_xds_push_time`: seconds to compile, encode and hand out one
    /// push (istiod times each type per proxy; meshd hands out whole
    /// snapshots, so this is per push).
    pub push_time: Histogram,
    /// `pilot_proxy_convergence_time`: seconds from a change to every
    /// affected client holding it.
    pub convergence: Histogram,
    /// `pilot_xds_config_size_bytes{type}`: encoded size of each response.
    pub config_size: SizeFamily,
    /// `pilot_push_triggers{type}`: pushes by reason (`config`, `endpoint`).
    pub push_triggers: Family<TypeLabel, Sum>,
    /// `pilot_services`: services in the served config (each
    /// ServiceEntry host counts, as in istiod's registry).
    pub services: Gauge,
    /// `pilot_virt_services`: VirtualServices in the served config.
    pub virt_services: Gauge,
    /// `galley_validation_passed`: config versions that passed validation.
    pub validation_passed: Sum,
    /// `galley_validation_failed`: config versions rejected.
    pub validation_failed: Sum,
}

impl Istiod {
    fn new() -> Self {
        Self {
            xds: Family::default(),
            streams: Mutex::default(),
            pushes: Family::default(),
            rejects: Family::default(),
            internal_errors: Sum::default(),
            push_time: Histogram::new(PUSH_BUCKETS),
            convergence: Histogram::new(CONVERGENCE_BUCKETS),
            config_size: Family::new_with_constructor(|| Histogram::new(SIZE_BUCKETS)),
            push_triggers: Family::default(),
            services: Gauge::default(),
            virt_services: Gauge::default(),
            validation_passed: Sum::default(),
            validation_failed: Sum::default(),
        }
    }

    fn register(&self, r: &mut Registry) {
        r.register(
            "pilot_xds",
            "Number of endpoints connected to this pilot using XDS",
            self.xds.clone(),
        );
        r.register(
            "pilot_xds_pushes",
            "Pilot build and send errors for lds, rds, cds and eds",
            self.pushes.clone(),
        );
        r.register(
            "pilot_total_xds_rejects",
            "Total number of XDS responses from pilot rejected by proxy",
            self.rejects.clone(),
        );
        r.register(
            "pilot_total_xds_internal_errors",
            "Total number of internal XDS errors in pilot",
            self.internal_errors.clone(),
        );
        r.register(
            "pilot_xds_push_time",
            "Total time in seconds Pilot takes to push lds, rds, cds and eds",
            self.push_time.clone(),
        );
        r.register(
            "pilot_proxy_convergence_time",
            "Delay in seconds between config change and a proxy receiving all required configuration",
            self.convergence.clone(),
        );
        r.register(
            "pilot_xds_config_size_bytes",
            "Distribution of configuration sizes pushed to clients",
            self.config_size.clone(),
        );
        r.register(
            "pilot_push_triggers",
            "Total number of times a push was triggered, labeled by reason for the push",
            self.push_triggers.clone(),
        );
        r.register(
            "pilot_services",
            "Total services known to pilot",
            self.services.clone(),
        );
        r.register(
            "pilot_virt_services",
            "Total virtual services known to pilot",
            self.virt_services.clone(),
        );
        r.register(
            "galley_validation_passed",
            "Resource is valid",
            self.validation_passed.clone(),
        );
        r.register(
            "galley_validation_failed",
            "Resource validation failed",
            self.validation_failed.clone(),
        );
    }

    /// A stream of a client reporting `version` opened.
    pub fn stream_opened(&self, stream_id: u64, version: Option<&str>) {
        let version = version.unwrap_or("unknown").to_string();
        self.xds
            .get_or_create(&vec![("version", version.clone())])
            .inc();
        self.streams.locked().insert(stream_id, version);
    }

    /// A stream closed.
    pub fn stream_closed(&self, stream_id: u64) {
        if let Some(v) = self.streams.locked().remove(&stream_id) {
            self.xds.get_or_create(&vec![("version", v)]).dec();
        }
    }

    /// A push was triggered for `reason`.
    pub fn triggered(&self, reason: &'static str) {
        self.push_triggers
            .get_or_create(&vec![("type", reason)])
            .inc();
    }
}

/// Every metric meshd exports.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Config generations applied.
    pub generations: Counter,
    /// The generation being served.
    pub generation: Gauge<i64, std::sync::atomic::AtomicI64>,
    /// Config versions rejected.
    pub rejections: Counter,
    /// Resource-type versions handed to a node's streams, by type.
    pub pushes: Family<TypeLabel, Counter>,
    /// NACKs received, by type.
    pub nacks: Family<TypeLabel, Counter>,
    /// Seconds to compile, encode and hand out one config generation.
    pub push_time: Histogram,
    /// Seconds to compile and encode one client identity.
    pub compile_time: Histogram,
    /// Seconds from a config change being seen to every affected client
    /// ACKing (or NACKing) it.
    pub convergence: Histogram,
    /// Connected ADS streams.
    pub connected: Gauge<i64, std::sync::atomic::AtomicI64>,
    /// Distinct client identities compiled for the current generation.
    pub compilations: Counter<u64, AtomicU64>,
    /// istiod's names for the same events.
    pub istiod: Istiod,
}

/// The short name of a type URL, as istiod labels it (`cds`, `lds`, ...).
pub fn type_label(type_url: &str) -> &'static str {
    match type_url {
        mesh_xds::types::CLUSTER => "cds",
        mesh_xds::types::LISTENER => "lds",
        mesh_xds::types::ROUTE => "rds",
        mesh_xds::types::ENDPOINT => "eds",
        _ => "other",
    }
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let generations = Counter::default();
        let generation = Gauge::default();
        let rejections = Counter::default();
        let pushes = Family::<TypeLabel, Counter>::default();
        let nacks = Family::<TypeLabel, Counter>::default();
        let push_time = Histogram::new(exponential_buckets(0.001, 2.0, 16));
        let convergence = Histogram::new(exponential_buckets(0.005, 2.0, 14));
        let compile_time = Histogram::new(exponential_buckets(0.0001, 2.0, 16));
        let connected = Gauge::default();
        let compilations = Counter::default();
        registry.register(
            "meshd_config_generations",
            "Config generations applied",
            generations.clone(),
        );
        registry.register(
            "meshd_config_generation",
            "The config generation being served",
            generation.clone(),
        );
        registry.register(
            "meshd_config_rejections",
            "Config versions rejected by validation or analysis (the previous one kept serving)",
            rejections.clone(),
        );
        registry.register(
            "meshd_xds_pushes",
            "Resource-type versions pushed to a node, by type",
            pushes.clone(),
        );
        registry.register(
            "meshd_xds_nacks",
            "NACKs received from clients, by type",
            nacks.clone(),
        );
        registry.register(
            "meshd_push_time_seconds",
            "Time to compile, encode and hand out one config generation to every node",
            push_time.clone(),
        );
        registry.register(
            "meshd_compile_time_seconds",
            "Time to compile and encode one client identity (the rest of push time is handing snapshots to nodes)",
            compile_time.clone(),
        );
        registry.register(
            "meshd_convergence_time_seconds",
            "Time from a config change being seen to every affected client ACKing it",
            convergence.clone(),
        );
        registry.register(
            "meshd_xds_connected_streams",
            "Connected ADS streams",
            connected.clone(),
        );
        registry.register(
            "meshd_compilations",
            "Per-client-identity compilations (identical nodes share one)",
            compilations.clone(),
        );
        let istiod = Istiod::new();
        istiod.register(&mut registry);
        Self {
            istiod,
            registry,
            generations,
            generation,
            rejections,
            pushes,
            nacks,
            push_time,
            compile_time,
            convergence,
            connected,
            compilations,
        }
    }

    /// Counts a version bump of `type_url` for one node.
    pub fn pushed(&self, type_url: &str) {
        let label = vec![("type", type_label(type_url))];
        self.pushes.get_or_create(&label).inc();
        self.istiod.pushes.get_or_create(&label).inc();
    }

    /// Counts a NACK of `type_url`.
    pub fn nacked(&self, type_url: &str) {
        let label = vec![("type", type_label(type_url))];
        self.nacks.get_or_create(&label).inc();
        self.istiod.rejects.get_or_create(&label).inc();
    }

    /// Records the encoded size of one response of `type_url`.
    pub fn sent(&self, type_url: &str, bytes: usize) {
        self.istiod
            .config_size
            .get_or_create(&vec![("type", type_label(type_url))])
            .observe(bytes as f64);
    }

    /// Records one push's time (from the change to every snapshot handed
    /// out), in seconds.
    pub fn push_took(&self, seconds: f64) {
        self.push_time.observe(seconds);
        self.istiod.push_time.observe(seconds);
    }

    /// Records a convergence time, in seconds.
    pub fn converged(&self, seconds: f64) {
        self.convergence.observe(seconds);
        self.istiod.convergence.observe(seconds);
    }

    /// The classic Prometheus text exposition (format 0.0.4), for
    /// scrapers and tools that do not ask for OpenMetrics: a counter's
    /// `HELP` and `TYPE` name its `_total` sample, and OpenMetrics-only
    /// lines (`# UNIT`, `# EOF`) are left out.
    pub fn render_text(&self) -> String {
        mesh_core::exposition::openmetrics_to_classic(&self.render())
    }

    /// The OpenMetrics text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connected_clients_are_counted_by_version_while_their_streams_last() {
        let m = Metrics::new();
        m.istiod.stream_opened(1, Some("1.28.0"));
        m.istiod.stream_opened(2, Some("1.28.0"));
        m.istiod.stream_opened(3, None);
        m.istiod.stream_closed(1);
        m.istiod.stream_closed(1);
        let text = m.render();
        assert!(text.contains("pilot_xds{version=\"1.28.0\"} 1\n"), "{text}");
        assert!(
            text.contains("pilot_xds{version=\"unknown\"} 1\n"),
            "{text}"
        );
        m.pushed(mesh_xds::types::ENDPOINT);
        m.nacked(mesh_xds::types::ENDPOINT);
        let text = m.render();
        // istiod's names carry no `_total`; meshd's own do.
        assert!(
            text.contains("pilot_xds_pushes{type=\"eds\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("pilot_total_xds_rejects{type=\"eds\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("meshd_xds_pushes_total{type=\"eds\"} 1\n"),
            "{text}"
        );
        // The classic format names a counter's metadata by its sample and
        // has no OpenMetrics-only lines.
        assert!(text.contains("# TYPE meshd_xds_pushes counter\n"), "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
        let classic = m.render_text();
        assert!(classic.contains("# TYPE meshd_xds_pushes_total counter\n"));
        assert!(classic.contains("# HELP meshd_xds_pushes_total "));
        assert!(classic.contains("meshd_xds_pushes_total{type=\"eds\"} 1\n"));
        assert!(!classic.contains("# EOF"), "{classic}");
    }
}
