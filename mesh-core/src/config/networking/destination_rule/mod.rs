//! Istio `DestinationRule` (networking.istio.io v1/v1beta1/v1alpha3): what
//! happens to traffic for a host after routing chose it — load balancing,
//! connection-pool limits, outlier detection, TLS origination, per-port and
//! per-subset overrides.
//!
//! This module holds the serde types and Istio's validation rules. Merging
//! the top-level, subset and port-level policies into a cluster's effective
//! policy is the compiler's job, not this module's.

mod connection_pool;
mod load_balancer;
mod tls;

#[cfg(test)]
mod tests;

use serde::{Deserialize, Serialize};

pub use connection_pool::{
    ConnectionPoolSettings, H2UpgradePolicy, HttpSettings, OutlierDetection, TcpKeepalive,
    TcpSettings,
};
pub use load_balancer::{
    ConsistentHashLb, Distribute, Failover, HttpCookie, HttpCookieAttribute, LoadBalancerSettings,
    LocalityLoadBalancerSetting, MagLev, RingHash, SimpleLb, WarmupConfiguration,
};
pub use tls::{ClientTlsMode, ClientTlsSettings};

use super::service_entry::checks::{
    check_export_to, check_labels, fqdn_error, is_ip, is_set, wildcard_domain_error, ExportToOwner,
};
use crate::config::common::{check_percent, Duration, Labels, PortSelector, WorkloadSelector};
use crate::config::validate::{check_port, each, field, is_dns1123_label, Issues, Validate};

/// A DestinationRule spec.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DestinationRule {
    /// The service the rule applies to (short names resolve in the rule's
    /// namespace). Required.
    #[serde(default)]
    pub host: String,
    /// Policies for all subsets and ports, unless overridden.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traffic_policy: Option<TrafficPolicy>,
    /// Named sets of endpoints (by labels), each with optional overrides.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subsets: Vec<Subset>,
    /// Namespaces that may use this rule (`.`, `*` or names); all when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub export_to: Vec<String>,
    /// Limits the rule to matching workloads in its own namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload_selector: Option<WorkloadSelector>,
}

/// Istio's `TrafficPolicy`: the settings a DestinationRule (or one of its
/// subsets) applies.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TrafficPolicy {
    /// Load-balancing algorithm and locality settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_balancer: Option<LoadBalancerSettings>,
    /// Connection limits (circuit breaking).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_pool: Option<ConnectionPoolSettings>,
    /// Ejection of failing endpoints.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outlier_detection: Option<OutlierDetection>,
    /// TLS towards the upstream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<ClientTlsSettings>,
    /// Per-port overrides; a port-level field replaces the top-level one
    /// wholesale.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub port_level_settings: Vec<PortTrafficPolicy>,
    /// Tunnel TCP over HTTP CONNECT or POST to another host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tunnel: Option<TunnelSettings>,
    /// Send a PROXY protocol header upstream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_protocol: Option<ProxyProtocol>,
    /// Limits concurrent retries relative to active requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_budget: Option<RetryBudget>,
}

/// Istio's `TrafficPolicy.PortTrafficPolicy`: overrides for one port.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PortTrafficPolicy {
    /// The destination port the overrides apply to. Required.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<PortSelector>,
    /// Load balancer for this port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_balancer: Option<LoadBalancerSettings>,
    /// Connection pool for this port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_pool: Option<ConnectionPoolSettings>,
    /// Outlier detection for this port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outlier_detection: Option<OutlierDetection>,
    /// TLS for this port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<ClientTlsSettings>,
}

/// Istio's `TrafficPolicy.TunnelSettings`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TunnelSettings {
    /// `CONNECT` (default) or `POST`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    /// FQDN or IP the connection is tunneled to. Required.
    #[serde(default)]
    pub target_host: String,
    /// Port on the target host. Required.
    #[serde(default)]
    pub target_port: u32,
}

/// Istio's `TrafficPolicy.ProxyProtocol`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProxyProtocol {
    /// The PROXY protocol version; V1 when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<ProxyProtocolVersion>,
}

/// PROXY protocol versions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub enum ProxyProtocolVersion {
    /// Human-readable version 1.
    #[default]
    V1,
    /// Binary version 2.
    V2,
}

/// Istio's `TrafficPolicy.RetryBudget`: retries allowed as a share of the
/// active requests.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RetryBudget {
    /// Percentage of active requests that may be retries (default 20).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percent: Option<f64>,
    /// Retries always allowed regardless of the percentage (default 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_retry_concurrency: Option<u32>,
    /// Window of requests the budget is computed over (default: only active ones).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget_interval: Option<Duration>,
}

/// Istio's `Subset`: a named group of endpoints selected by labels.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Subset {
    /// The name routes refer to (`destination.subset`). Required, DNS-1123 label.
    #[serde(default)]
    pub name: String,
    /// Endpoint labels that select the subset's members.
    #[serde(default, skip_serializing_if = "Labels::is_empty")]
    pub labels: Labels,
    /// Overrides of the rule's traffic policy for this subset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traffic_policy: Option<TrafficPolicy>,
}

impl Validate for DestinationRule {
    fn validate(&self, path: &str, issues: &mut Issues) {
        let host_path = field(path, "host");
        if self.host.is_empty() {
            issues.push(
                host_path,
                "host is required; name the service, e.g. reviews.default.svc.cluster.local",
            );
        } else if let Some(why) = wildcard_domain_error(&self.host) {
            issues.push(host_path, why);
        }
        self.traffic_policy
            .validate(&field(path, "trafficPolicy"), issues);
        let subsets_path = field(path, "subsets");
        let mut names = std::collections::BTreeSet::new();
        for (i, s) in self.subsets.iter().enumerate() {
            let p = format!("{subsets_path}[{i}]");
            if !s.name.is_empty() && !names.insert(s.name.as_str()) {
                issues.push(
                    field(&p, "name"),
                    format!("duplicate subset name {:?}; subset names must be unique within a DestinationRule", s.name),
                );
            }
            s.validate(&p, issues);
        }
        check_export_to(
            &self.export_to,
            ExportToOwner::DestinationRule {
                with_selector: self.workload_selector.is_some(),
            },
            &field(path, "exportTo"),
            issues,
        );
        self.workload_selector
            .validate(&field(path, "workloadSelector"), issues);
    }
}

impl Validate for Subset {
    fn validate(&self, path: &str, issues: &mut Issues) {
        let name_path = field(path, "name");
        if self.name.is_empty() {
            issues.push(
                name_path,
                "subset name is required; use a DNS-1123 label such as \"v1\"",
            );
        } else if !is_dns1123_label(&self.name) {
            issues.push(
                name_path,
                format!(
                    "subset name {:?} is not a valid DNS-1123 label; use lowercase letters, digits and '-' (at most 63 characters)",
                    self.name
                ),
            );
        }
        check_labels(&self.labels, &field(path, "labels"), issues);
        self.traffic_policy
            .validate(&field(path, "trafficPolicy"), issues);
    }
}

impl Validate for TrafficPolicy {
    fn validate(&self, path: &str, issues: &mut Issues) {
        let empty = self.load_balancer.is_none()
            && self.connection_pool.is_none()
            && self.outlier_detection.is_none()
            && self.tls.is_none()
            && self.port_level_settings.is_empty()
            && self.tunnel.is_none()
            && self.proxy_protocol.is_none()
            && self.retry_budget.is_none();
        if empty {
            issues.push(
                path,
                "trafficPolicy is empty; set at least one of loadBalancer, connectionPool, outlierDetection, tls, portLevelSettings, tunnel, proxyProtocol or retryBudget, or remove it",
            );
            return;
        }
        if self.tunnel.is_some() && self.proxy_protocol.is_some() {
            issues.push(
                path,
                "tunnel and proxyProtocol cannot be set together; keep only one",
            );
        }
        self.outlier_detection
            .validate(&field(path, "outlierDetection"), issues);
        self.connection_pool
            .validate(&field(path, "connectionPool"), issues);
        self.load_balancer
            .validate(&field(path, "loadBalancer"), issues);
        self.tls.validate(&field(path, "tls"), issues);
        each(
            &self.port_level_settings,
            &field(path, "portLevelSettings"),
            issues,
        );
        self.tunnel.validate(&field(path, "tunnel"), issues);
        self.retry_budget
            .validate(&field(path, "retryBudget"), issues);
    }
}

impl Validate for PortTrafficPolicy {
    fn validate(&self, path: &str, issues: &mut Issues) {
        match &self.port {
            Some(p) => p.validate(&field(path, "port"), issues),
            None => issues.push(
                field(path, "port"),
                "port is required in portLevelSettings; add port: {number: <port>}",
            ),
        }
        if self.load_balancer.is_none()
            && self.connection_pool.is_none()
            && self.outlier_detection.is_none()
            && self.tls.is_none()
        {
            issues.push(
                path,
                "port-level traffic policy sets nothing; add loadBalancer, connectionPool, outlierDetection or tls, or remove the entry",
            );
            return;
        }
        self.outlier_detection
            .validate(&field(path, "outlierDetection"), issues);
        self.connection_pool
            .validate(&field(path, "connectionPool"), issues);
        self.load_balancer
            .validate(&field(path, "loadBalancer"), issues);
        self.tls.validate(&field(path, "tls"), issues);
    }
}

impl Validate for TunnelSettings {
    fn validate(&self, path: &str, issues: &mut Issues) {
        if is_set(&self.protocol) {
            let p = self.protocol.as_deref().unwrap_or_default();
            if p != "CONNECT" && p != "POST" {
                issues.push(
                    field(path, "protocol"),
                    format!("tunnel protocol {p:?} is not supported; use \"CONNECT\" or \"POST\""),
                );
            }
        }
        let host_path = field(path, "targetHost");
        if self.target_host.is_empty() {
            issues.push(
                host_path,
                "targetHost is required; give the FQDN or IP address to tunnel to",
            );
        } else if !is_ip(&self.target_host) {
            if let Some(why) = fqdn_error(&self.target_host) {
                issues.push(
                    host_path,
                    format!(
                        "targetHost must be a fully qualified domain name or an IP address: {why}"
                    ),
                );
            }
        }
        check_port(self.target_port, &field(path, "targetPort"), issues);
    }
}

impl Validate for RetryBudget {
    fn validate(&self, path: &str, issues: &mut Issues) {
        if let Some(p) = self.percent {
            check_percent(p, &field(path, "percent"), issues);
        }
    }
}
