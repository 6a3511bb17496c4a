//! meshd's Prometheus metrics (prometheus-client, served as OpenMetrics
//! text on `/metrics`). Names follow istiod's where one exists
//! (`pilot_xds_pushes`, `pilot_proxy_convergence_time`), prefixed `meshd_`.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

type TypeLabel = Vec<(&'static str, &'static str)>;

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
        Self {
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
        self.pushes
            .get_or_create(&vec![("type", type_label(type_url))])
            .inc();
    }

    /// Counts a NACK of `type_url`.
    pub fn nacked(&self, type_url: &str) {
        self.nacks
            .get_or_create(&vec![("type", type_label(type_url))])
            .inc();
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
