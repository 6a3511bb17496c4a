//! Istio `Telemetry` (telemetry.istio.io): tracing, metrics and access
//! logging behaviour for the selected workloads.
//!
//! Serde types and Istio's validation. Whether a named provider exists is a
//! cross-resource question (it lives in MeshConfig's `extensionProviders`)
//! and is left to the analyzer, which can call
//! [`crate::config::mesh_config::MeshConfig::has_provider`].

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::config::common::{
    check_percent, check_targeting, Duration, PolicyTargetReference, WorkloadSelector,
};
use crate::config::validate::{each, field, Issues, Validate};

/// The `spec` of a Telemetry resource.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Telemetry {
    /// Workloads the resource applies to; unset means the whole namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<WorkloadSelector>,
    /// A single resource the policy attaches to (hidden in Istio's docs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_ref: Option<PolicyTargetReference>,
    /// Resources the policy attaches to, instead of a selector.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub target_refs: Vec<PolicyTargetReference>,
    /// Tracing behaviour.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tracing: Vec<Tracing>,
    /// Metrics behaviour.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub metrics: Vec<Metrics>,
    /// Access logging behaviour.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub access_logging: Vec<AccessLogging>,
}

/// Which side of the traffic a rule applies to (Istio's `WorkloadMode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum WorkloadMode {
    /// Both outbound (client) and inbound (server) traffic.
    #[default]
    ClientAndServer,
    /// Outbound traffic: the workload is the client.
    Client,
    /// Inbound traffic: the workload is the server.
    Server,
}

impl WorkloadMode {
    /// True when a rule with this mode applies to traffic in `direction`
    /// (`Client` or `Server`).
    pub fn covers(self, direction: WorkloadMode) -> bool {
        self == WorkloadMode::ClientAndServer || self == direction
    }
}

/// A reference to a provider defined in MeshConfig `extensionProviders`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProviderRef {
    /// The provider's name.
    #[serde(default)]
    pub name: String,
}

/// Istio's `Tracing`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Tracing {
    /// Limits the rule to client or server traffic.
    #[serde(default, rename = "match", skip_serializing_if = "Option::is_none")]
    pub match_: Option<TracingSelector>,
    /// Providers spans are reported to; empty uses the default tracing provider.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub providers: Vec<ProviderRef>,
    /// Percentage (0-100) of requests sampled when no decision was made upstream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub random_sampling_percentage: Option<f64>,
    /// Stop reporting spans (context is still propagated).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disable_span_reporting: Option<bool>,
    /// Extra span tags; replaces (not merges with) the parent's tags.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub custom_tags: BTreeMap<String, CustomTag>,
    /// Let Envoy sample based on the request ID (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub use_request_id_for_trace_sampling: Option<bool>,
    /// Add Istio's canonical-service tags to spans (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enable_istio_tags: Option<bool>,
}

/// Istio's `Tracing.TracingSelector`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TracingSelector {
    /// Traffic direction the rule applies to.
    #[serde(default)]
    pub mode: WorkloadMode,
}

/// Istio's `Tracing.CustomTag`: exactly one of `literal`, `environment`, `header`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CustomTag {
    /// A fixed value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub literal: Option<TagLiteral>,
    /// The value of an environment variable of the proxy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<TagEnvironment>,
    /// The value of a request header.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<TagRequestHeader>,
}

/// Istio's `Tracing.Literal`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TagLiteral {
    /// The tag value.
    #[serde(default)]
    pub value: String,
}

/// Istio's `Tracing.Environment`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TagEnvironment {
    /// Environment variable name.
    #[serde(default)]
    pub name: String,
    /// Value used when the variable is not set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_value: Option<String>,
}

/// Istio's `Tracing.RequestHeader`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TagRequestHeader {
    /// Header name.
    #[serde(default)]
    pub name: String,
    /// Value used when the header is absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_value: Option<String>,
}

/// Istio's `Metrics`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Metrics {
    /// Providers the rule applies to; empty uses the default metrics provider.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub providers: Vec<ProviderRef>,
    /// Ordered overrides, applied after the inherited ones.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub overrides: Vec<MetricsOverrides>,
    /// Reporting interval for long-lived (TCP) streams (default 5s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reporting_interval: Option<Duration>,
}

/// Istio's `MetricsOverrides`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MetricsOverrides {
    /// Which metrics and modes; unset matches all metrics in both modes.
    #[serde(default, rename = "match", skip_serializing_if = "Option::is_none")]
    pub match_: Option<MetricSelector>,
    /// Turn the selected metrics off (or back on with `false`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled: Option<bool>,
    /// Tag (label) changes keyed by tag name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tag_overrides: BTreeMap<String, TagOverride>,
}

/// Istio's `MetricSelector`: one of `metric` or `customMetric`, plus a mode.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MetricSelector {
    /// One of Istio's standard metrics.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metric: Option<IstioMetric>,
    /// Any other metric, by name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom_metric: Option<String>,
    /// Client, server or both.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<WorkloadMode>,
}

/// Istio's standard metrics (`MetricSelector.IstioMetric`).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum IstioMetric {
    /// Every standard metric.
    #[default]
    AllMetrics,
    /// `istio_requests_total`.
    RequestCount,
    /// `istio_request_duration_milliseconds`.
    RequestDuration,
    /// `istio_request_bytes`.
    RequestSize,
    /// `istio_response_bytes`.
    ResponseSize,
    /// `istio_tcp_connections_opened_total`.
    TcpOpenedConnections,
    /// `istio_tcp_connections_closed_total`.
    TcpClosedConnections,
    /// `istio_tcp_sent_bytes_total`.
    TcpSentBytes,
    /// `istio_tcp_received_bytes_total`.
    TcpReceivedBytes,
    /// `istio_request_messages_total`.
    GrpcRequestMessages,
    /// `istio_response_messages_total`.
    GrpcResponseMessages,
}

/// Istio's `MetricsOverrides.TagOverride`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TagOverride {
    /// Add/update (default) or remove the tag.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation: Option<TagOperation>,
    /// CEL expression for the value; required for `UPSERT`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

/// Istio's `TagOverride.Operation`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TagOperation {
    /// Insert or update the tag with `value`.
    #[default]
    Upsert,
    /// Drop the tag.
    Remove,
}

/// Istio's `AccessLogging`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AccessLogging {
    /// Limits the rule to client or server traffic.
    #[serde(default, rename = "match", skip_serializing_if = "Option::is_none")]
    pub match_: Option<LogSelector>,
    /// Providers the rule applies to; empty uses the default logging provider.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub providers: Vec<ProviderRef>,
    /// Turn access logs off (or back on with `false`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled: Option<bool>,
    /// Only log what this filter selects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<AccessLogFilter>,
}

/// Istio's `AccessLogging.LogSelector`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LogSelector {
    /// Traffic direction the rule applies to.
    #[serde(default)]
    pub mode: WorkloadMode,
}

/// Istio's `AccessLogging.Filter`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AccessLogFilter {
    /// CEL expression, e.g. `response.code >= 400`.
    #[serde(default)]
    pub expression: String,
}

impl IstioMetric {
    /// The ten standard metrics `ALL_METRICS` stands for.
    pub const STANDARD: [IstioMetric; 10] = [
        IstioMetric::RequestCount,
        IstioMetric::RequestDuration,
        IstioMetric::RequestSize,
        IstioMetric::ResponseSize,
        IstioMetric::TcpOpenedConnections,
        IstioMetric::TcpClosedConnections,
        IstioMetric::TcpSentBytes,
        IstioMetric::TcpReceivedBytes,
        IstioMetric::GrpcRequestMessages,
        IstioMetric::GrpcResponseMessages,
    ];
}

impl Telemetry {
    /// Every provider name this resource refers to, with the path of the
    /// reference (for the analyzer's "unknown provider" check).
    pub fn provider_refs(&self) -> Vec<(String, &str)> {
        let sections: [(&str, Vec<&[ProviderRef]>); 3] = [
            (
                "tracing",
                self.tracing
                    .iter()
                    .map(|t| t.providers.as_slice())
                    .collect(),
            ),
            (
                "metrics",
                self.metrics
                    .iter()
                    .map(|m| m.providers.as_slice())
                    .collect(),
            ),
            (
                "accessLogging",
                self.access_logging
                    .iter()
                    .map(|a| a.providers.as_slice())
                    .collect(),
            ),
        ];
        let mut out = Vec::new();
        for (section, lists) in sections {
            for (i, providers) in lists.into_iter().enumerate() {
                for (j, p) in providers.iter().enumerate() {
                    out.push((
                        format!("spec.{section}[{i}].providers[{j}].name"),
                        p.name.as_str(),
                    ));
                }
            }
        }
        out
    }
}

/// Rejects an expression the proxy could not parse: Envoy refuses such a
/// filter and Istio's stats filter such a tag, so a bad one must not load.
fn check_cel(expr: &str, path: &str, yields: &str, issues: &mut Issues) {
    if let Err(e) = crate::telemetry::CelExpr::compile(expr) {
        issues.push(
            path,
            format!("{e}; write a CEL expression over Envoy attributes that yields {yields}"),
        );
    }
}

fn check_providers(providers: &[ProviderRef], path: &str, issues: &mut Issues) {
    for (i, p) in providers.iter().enumerate() {
        if p.name.trim().is_empty() {
            issues.push(
                format!("{path}[{i}].name"),
                "provider name must not be empty; use the name of a MeshConfig extensionProvider (e.g. prometheus, envoy)",
            );
        }
    }
}

impl Validate for Telemetry {
    fn validate(&self, path: &str, issues: &mut Issues) {
        check_targeting(
            path,
            &self.selector,
            &self.target_ref,
            &self.target_refs,
            issues,
        );
        each(&self.tracing, &field(path, "tracing"), issues);
        each(&self.metrics, &field(path, "metrics"), issues);
        each(&self.access_logging, &field(path, "accessLogging"), issues);
    }
}

impl Validate for Tracing {
    fn validate(&self, path: &str, issues: &mut Issues) {
        check_providers(&self.providers, &field(path, "providers"), issues);
        if let Some(p) = self.random_sampling_percentage {
            check_percent(p, &field(path, "randomSamplingPercentage"), issues);
        }
        let tags = field(path, "customTags");
        for (name, tag) in &self.custom_tags {
            let p = format!("{tags}.{name}");
            if name.is_empty() {
                issues.push(&p, "custom tag name must not be empty");
            }
            tag.validate(&p, issues);
        }
    }
}

impl Validate for CustomTag {
    fn validate(&self, path: &str, issues: &mut Issues) {
        let set = [
            self.literal.is_some(),
            self.environment.is_some(),
            self.header.is_some(),
        ]
        .iter()
        .filter(|b| **b)
        .count();
        if set != 1 {
            issues.push(
                path,
                format!(
                    "a custom tag needs exactly one of literal, environment or header, but {set} are set"
                ),
            );
        }
        if let Some(l) = &self.literal {
            if l.value.is_empty() {
                issues.push(
                    field(&field(path, "literal"), "value"),
                    "literal value must not be empty",
                );
            }
        }
        if let Some(e) = &self.environment {
            if e.name.is_empty() {
                issues.push(
                    field(&field(path, "environment"), "name"),
                    "environment name must not be empty; name the proxy environment variable to read",
                );
            }
        }
        if let Some(h) = &self.header {
            if h.name.is_empty() {
                issues.push(
                    field(&field(path, "header"), "name"),
                    "header name must not be empty; name the request header to read",
                );
            }
        }
    }
}

impl Validate for Metrics {
    fn validate(&self, path: &str, issues: &mut Issues) {
        check_providers(&self.providers, &field(path, "providers"), issues);
        each(&self.overrides, &field(path, "overrides"), issues);
        if let Some(d) = self.reporting_interval {
            d.check_ms(&field(path, "reportingInterval"), issues);
        }
    }
}

impl Validate for MetricsOverrides {
    fn validate(&self, path: &str, issues: &mut Issues) {
        if let Some(m) = &self.match_ {
            let mp = field(path, "match");
            if m.metric.is_some() && m.custom_metric.is_some() {
                issues.push(
                    &mp,
                    "metric and customMetric are mutually exclusive; use metric for Istio's standard metrics, customMetric for any other",
                );
            }
            if m.custom_metric.as_deref() == Some("") {
                issues.push(field(&mp, "customMetric"), "customMetric must not be empty");
            }
        }
        let tp = field(path, "tagOverrides");
        for (name, t) in &self.tag_overrides {
            let p = format!("{tp}.{name}");
            if name.is_empty() {
                issues.push(&p, "tag name must not be empty");
            }
            match t.operation.unwrap_or_default() {
                TagOperation::Upsert => match t.value.as_deref().unwrap_or("") {
                    "" => issues.push(
                        field(&p, "value"),
                        "value is required when operation is UPSERT; give a CEL expression such as request.host, or use operation: REMOVE",
                    ),
                    expr => check_cel(expr, &field(&p, "value"), "a string, e.g. request.host or 'literal'", issues),
                },
                TagOperation::Remove => {
                    if t.value.is_some() {
                        issues.push(
                            field(&p, "value"),
                            "value must not be set when operation is REMOVE; delete it",
                        );
                    }
                }
            }
        }
    }
}

impl Validate for AccessLogging {
    fn validate(&self, path: &str, issues: &mut Issues) {
        check_providers(&self.providers, &field(path, "providers"), issues);
        if let Some(f) = &self.filter {
            let fp = field(&field(path, "filter"), "expression");
            if f.expression.trim().is_empty() {
                issues.push(
                    fp,
                    "filter expression must not be empty; give a CEL expression such as response.code >= 400, or remove filter",
                );
            } else {
                check_cel(
                    &f.expression,
                    &fp,
                    "a bool, e.g. response.code >= 400",
                    issues,
                );
            }
        }
    }
}

#[cfg(test)]
mod tests;
