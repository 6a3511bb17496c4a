//! `ConnectionPoolSettings` (circuit-breaker limits and connection
//! lifetimes) and `OutlierDetection` (ejection of failing endpoints). The
//! Sidecar kind reuses `ConnectionPoolSettings` for inbound limits.

use serde::{Deserialize, Serialize};

use crate::config::common::Duration;
use crate::config::validate::{field, Issues, Validate};

/// Istio's `ConnectionPoolSettings`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConnectionPoolSettings {
    /// Settings for every connection (HTTP and TCP).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp: Option<TcpSettings>,
    /// Settings for HTTP/1.1, HTTP/2 and gRPC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpSettings>,
}

/// Istio's `ConnectionPoolSettings.TCPSettings`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TcpSettings {
    /// Maximum connections to a destination host (default 2^32-1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<u32>,
    /// Connect timeout (default 10s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect_timeout: Option<Duration>,
    /// Enables TCP keepalive on upstream sockets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp_keepalive: Option<TcpKeepalive>,
    /// Closes a connection this long after it was opened.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connection_duration: Option<Duration>,
    /// Closes a connection idle this long (default 1h; `0s` disables).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout: Option<Duration>,
}

/// Istio's `TCPSettings.TcpKeepalive`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TcpKeepalive {
    /// Unanswered probes before the connection is dead (OS default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probes: Option<u32>,
    /// Idle time before probes start (OS default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<Duration>,
    /// Time between probes (OS default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<Duration>,
}

/// Istio's `ConnectionPoolSettings.HTTPSettings`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpSettings {
    /// Requests queued while waiting for a connection (default 2^32-1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http1_max_pending_requests: Option<u32>,
    /// Active requests to a destination (default 2^32-1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http2_max_requests: Option<u32>,
    /// Requests per connection; 1 disables keep-alive (0 = unlimited).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_requests_per_connection: Option<u32>,
    /// Outstanding retries across the cluster (default 2^32-1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_retries: Option<u32>,
    /// Closes a connection without active requests after this long (default 1h).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout: Option<Duration>,
    /// Whether HTTP/1.1 connections are upgraded to HTTP/2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub h2_upgrade_policy: Option<H2UpgradePolicy>,
    /// Keep the client's HTTP version upstream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub use_client_protocol: Option<bool>,
    /// Concurrent streams per HTTP/2 connection (default 2^31-1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrent_streams: Option<u32>,
}

/// Istio's `HTTPSettings.H2UpgradePolicy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum H2UpgradePolicy {
    /// The mesh-wide default.
    #[default]
    Default,
    /// Never upgrade.
    DoNotUpgrade,
    /// Upgrade to HTTP/2.
    Upgrade,
}

/// Istio's `OutlierDetection`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OutlierDetection {
    /// Deprecated: counts only 502/503/504; use `consecutive5xxErrors` or
    /// `consecutiveGatewayErrors`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consecutive_errors: Option<u32>,
    /// Count local-origin failures (connect errors, timeouts) separately.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub split_external_local_origin_errors: Option<bool>,
    /// Local-origin failures before ejection (with the split enabled).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consecutive_local_origin_failures: Option<u32>,
    /// 502/503/504 (or connect failures on TCP) before ejection; 0 disables.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consecutive_gateway_errors: Option<u32>,
    /// 5xx (or connect failures on TCP) before ejection (default 5; 0 disables).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        rename = "consecutive5xxErrors"
    )]
    pub consecutive_5xx_errors: Option<u32>,
    /// Time between ejection sweeps (default 10s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<Duration>,
    /// Minimum ejection time, multiplied by the ejection count (default 30s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_ejection_time: Option<Duration>,
    /// Most endpoints (percent) that may be ejected at once (default 10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_ejection_percent: Option<u32>,
    /// Ejection stops when fewer endpoints (percent) are healthy (default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_health_percent: Option<u32>,
}

impl Validate for ConnectionPoolSettings {
    fn validate(&self, path: &str, issues: &mut Issues) {
        if self.tcp.is_none() && self.http.is_none() {
            issues.push(
                path,
                "connectionPool is empty; set tcp and/or http limits, or remove it",
            );
            return;
        }
        if let Some(h) = &self.http {
            let p = field(path, "http");
            if let Some(d) = h.idle_timeout {
                d.check_ms(&field(&p, "idleTimeout"), issues);
            }
            if h.h2_upgrade_policy == Some(H2UpgradePolicy::Upgrade)
                && h.use_client_protocol == Some(true)
            {
                issues.push(
                    field(&p, "useClientProtocol"),
                    "useClientProtocol: true contradicts h2UpgradePolicy: UPGRADE; keep the client's protocol or upgrade, not both",
                );
            }
        }
        if let Some(t) = &self.tcp {
            let p = field(path, "tcp");
            if let Some(d) = t.connect_timeout {
                d.check_ms(&field(&p, "connectTimeout"), issues);
            }
            if let Some(d) = t.max_connection_duration {
                d.check_ms(&field(&p, "maxConnectionDuration"), issues);
            }
            // `0s` turns the idle timeout off, so it is allowed.
            if let Some(d) = t.idle_timeout.filter(|d| !d.get().is_zero()) {
                d.check_ms(&field(&p, "idleTimeout"), issues);
            }
            if let Some(ka) = &t.tcp_keepalive {
                let kp = field(&p, "tcpKeepalive");
                if let Some(d) = ka.time {
                    d.check_ms(&field(&kp, "time"), issues);
                }
                if let Some(d) = ka.interval {
                    d.check_ms(&field(&kp, "interval"), issues);
                }
            }
        }
    }
}

impl Validate for OutlierDetection {
    fn validate(&self, path: &str, issues: &mut Issues) {
        if let Some(d) = self.base_ejection_time {
            d.check_ms(&field(path, "baseEjectionTime"), issues);
        }
        if let Some(d) = self.interval {
            d.check_ms(&field(path, "interval"), issues);
        }
        if self.split_external_local_origin_errors != Some(true)
            && self.consecutive_local_origin_failures.unwrap_or(0) > 0
        {
            issues.push(
                field(path, "consecutiveLocalOriginFailures"),
                "consecutiveLocalOriginFailures only counts when local-origin errors are split out; set splitExternalLocalOriginErrors: true or remove it",
            );
        }
        for (name, v) in [
            ("maxEjectionPercent", self.max_ejection_percent),
            ("minHealthPercent", self.min_health_percent),
        ] {
            if let Some(v) = v.filter(|v| *v > 100) {
                issues.push(
                    field(path, name),
                    format!("{name} {v} is out of range; expected a percentage from 0 to 100"),
                );
            }
        }
    }
}
