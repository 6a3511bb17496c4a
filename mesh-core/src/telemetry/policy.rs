//! The effective telemetry of one workload, per direction: the value
//! [`super::policy_for`] computes and the SDK's telemetry layer executes.
//!
//! Plain data plus compiled CEL ([`CelExpr`] compares by source text), so
//! two policies compare cheaply and a model swap can tell whether telemetry
//! changed.
//!
//! Serde round-trips it exactly (a control plane sends the compiled policy
//! to SDK workloads as JSON, see mesh-xds's `telemetry_policy`):
//! deserializing compiles each CEL expression again from its source, and
//! fails on one that does not compile or on a field it does not know, so a
//! receiver never runs a policy it only half understood.
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::config::common::Duration;
use crate::config::mesh_config::providers::{EnvoyOtelAlsProvider, ExtensionProvider};
use crate::config::telemetry::{CustomTag, IstioMetric};

use super::cel::CelExpr;

/// Which side of a request the workload is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// Outbound: the workload is the client (`reporter=source`).
    Client,
    /// Inbound: the workload is the server (`reporter=destination`).
    Server,
}

/// Telemetry of one workload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetryPolicy {
    /// The Telemetry resources that applied (`namespace/name`), least
    /// specific first.
    pub sources: Vec<String>,
    /// Outbound requests.
    pub client: DirectionPolicy,
    /// Inbound requests.
    pub server: DirectionPolicy,
}

impl TelemetryPolicy {
    /// The policy of one direction.
    pub fn direction(&self, d: Direction) -> &DirectionPolicy {
        match d {
            Direction::Client => &self.client,
            Direction::Server => &self.server,
        }
    }
}

/// Telemetry of one direction.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DirectionPolicy {
    /// Istio's standard metrics (Prometheus provider).
    pub metrics: MetricsPolicy,
    /// Spans.
    pub tracing: TracingPolicy,
    /// Access logs.
    pub access_logs: AccessLogPolicy,
}

/// Istio's standard metrics for one direction, as the Prometheus provider
/// records them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsPolicy {
    /// False when no Prometheus provider is in scope or `ALL_METRICS` is
    /// disabled for this direction: no standard metric is recorded.
    pub enabled: bool,
    /// Each of the ten standard metrics (all present, even untouched ones).
    pub metrics: BTreeMap<IstioMetric, MetricPolicy>,
    /// Overrides of other (custom) metrics by name, kept for the record.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub custom: BTreeMap<String, MetricPolicy>,
    /// How often long-lived streams report; `None` is Istio's default (5s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reporting_interval: Option<Duration>,
    /// Metrics providers in scope that are not Prometheus (e.g. stackdriver):
    /// named here and otherwise ignored.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ignored_providers: Vec<String>,
}

impl MetricsPolicy {
    /// The policy of one standard metric; `None` for `ALL_METRICS`.
    pub fn metric(&self, m: IstioMetric) -> Option<&MetricPolicy> {
        self.metrics.get(&m)
    }

    /// True when `m` is recorded in this direction.
    pub fn records(&self, m: IstioMetric) -> bool {
        self.enabled && self.metric(m).is_some_and(|p| p.enabled)
    }
}

/// One metric: on or off, and its tag changes.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricPolicy {
    /// False when an override disabled it.
    pub enabled: bool,
    /// Tag changes by tag name (Istio applies them in name order).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, TagAction>,
}

/// What an override does to one tag.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TagAction {
    /// Set the tag to the expression's value ([`CelExpr::tag_value`]).
    Upsert(CelExpr),
    /// Drop the tag.
    Remove,
}

/// Where spans go and how often, for one direction.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TracingPolicy {
    /// The tracer; `None` means no tracing in this direction.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<TracingProvider>,
    /// Percentage (0-100) of requests sampled when no decision came with
    /// the request.
    pub random_sampling_percentage: f64,
    /// Extra span tags.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub custom_tags: BTreeMap<String, CustomTag>,
    /// No spans are reported (Istio then configures no tracing at all).
    pub disable_span_reporting: bool,
    /// Let the request ID carry the sampling decision.
    pub use_request_id_for_trace_sampling: bool,
    /// Add Istio's canonical-service tags to spans.
    pub enable_istio_tags: bool,
}

impl TracingPolicy {
    /// True when spans are produced and reported in this direction.
    pub fn is_active(&self) -> bool {
        self.provider.is_some() && !self.disable_span_reporting
    }
}

/// A tracer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TracingProvider {
    /// A MeshConfig extension provider (zipkin, opentelemetry, datadog,
    /// skywalking) chosen by Telemetry or `defaultProviders.tracing`.
    Extension(Box<ExtensionProvider>),
    /// No Telemetry tracing at all: the tracer of MeshConfig
    /// `defaultConfig.tracing` (as written), Istio's legacy path.
    ProxyConfig(serde_json::Value),
}

/// Access logs of one direction.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessLogPolicy {
    /// Which configuration decided.
    pub source: AccessLogSource,
    /// The logs to write; empty means no access log.
    pub logs: Vec<AccessLog>,
}

/// Who decided the access logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AccessLogSource {
    /// Telemetry resources or `defaultProviders.accessLogging`.
    Telemetry,
    /// Neither: MeshConfig `accessLogFile` / `accessLogEncoding` /
    /// `accessLogFormat`.
    MeshConfig,
}

/// One access log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessLog {
    /// The provider's name (empty for the MeshConfig log).
    pub provider: String,
    /// Where and how lines are written.
    pub sink: AccessLogSink,
    /// Write a line only when this is true ([`CelExpr::filter`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<CelExpr>,
}

impl AccessLog {
    /// True when a line is written for a request with these attributes.
    pub fn selects(&self, attrs: &super::Attributes<'_>) -> bool {
        self.filter.as_ref().is_none_or(|f| f.filter(attrs))
    }
}

/// Where access-log lines go.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AccessLogSink {
    /// A file or stream (`envoyFileAccessLog`, the built-in `envoy`
    /// provider, MeshConfig `accessLogFile`).
    File {
        /// Path, e.g. `/dev/stdout`.
        path: String,
        /// Line format.
        format: LogFormat,
    },
    /// OpenTelemetry logs (`envoyOtelAls`).
    OpenTelemetry(EnvoyOtelAlsProvider),
    /// Envoy's gRPC access log service (`envoyHttpAls` / `envoyTcpAls`), as
    /// written.
    Grpc(serde_json::Value),
}

/// An access-log line format.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// Istio's default text format.
    DefaultText,
    /// An Envoy format string.
    Text(String),
    /// JSON with these fields (name to Envoy command operator); `None` is
    /// Istio's default JSON fields.
    Json(Option<serde_json::Map<String, serde_json::Value>>),
}
