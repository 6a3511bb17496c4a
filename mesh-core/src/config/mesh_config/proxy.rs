//! `defaultConfig` of MeshConfig: Istio's `ProxyConfig`.
//!
//! ProxyConfig has a very large surface (bootstrap paths, Envoy stats
//! matchers, readiness probes, private key providers, ...), most of which
//! only matters to an Envoy sidecar. The fields the mesh reads are typed;
//! every other key is kept verbatim in [`ProxyConfig::other`] instead of
//! being rejected, so a real installation's mesh config loads unchanged.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::config::common::Duration;
use crate::config::validate::{check_port, field, Issues, Validate};

/// Istio's `ProxyConfig` (a typed subset, the rest kept as JSON).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProxyConfig {
    /// Address (`host:port`) of the xDS server, e.g. `istiod.istio-system.svc:15012`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub discovery_address: Option<String>,
    /// Extra node metadata and proxy environment, keyed by name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub proxy_metadata: BTreeMap<String, String>,
    /// Start the application only once the proxy is ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hold_application_until_proxy_starts: Option<bool>,
    /// Number of worker threads; 0 means one per core.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<i64>,
    /// Tracer settings (zipkin, datadog, ...), kept as written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracing: Option<serde_json::Value>,
    /// How long connections are drained on a hot restart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drain_duration: Option<Duration>,
    /// How long the proxy drains on shutdown (default 5s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub termination_drain_duration: Option<Duration>,
    /// Mesh ID, used in multi-mesh and telemetry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mesh_id: Option<String>,
    /// Port of the agent's status/health server (default 15020).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_port: Option<u32>,
    /// Port of the proxy's admin interface (default 15000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_admin_port: Option<u32>,
    /// How inbound traffic is captured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interception_mode: Option<InterceptionMode>,
    /// Extra tags added to the standard metrics.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra_stat_tags: Vec<String>,
    /// Every other ProxyConfig field, as written.
    #[serde(flatten)]
    pub other: BTreeMap<String, serde_json::Value>,
}

/// Istio's `ProxyConfig.InboundInterceptionMode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum InterceptionMode {
    /// iptables REDIRECT (the default).
    #[default]
    Redirect,
    /// TPROXY, preserving source addresses.
    Tproxy,
    /// No capture.
    None,
}

impl Validate for ProxyConfig {
    fn validate(&self, path: &str, issues: &mut Issues) {
        if let Some(addr) = &self.discovery_address {
            let ok = addr
                .rsplit_once(':')
                .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p > 0));
            if !ok {
                issues.push(
                    field(path, "discoveryAddress"),
                    format!("discoveryAddress {addr:?} is not host:port; use e.g. istiod.istio-system.svc:15012"),
                );
            }
        }
        if let Some(c) = self.concurrency {
            if c < 0 {
                issues.push(
                    field(path, "concurrency"),
                    format!("concurrency {c} is negative; use 0 (one worker per core) or a positive thread count"),
                );
            }
        }
        if let Some(d) = self.drain_duration {
            d.check_ms(&field(path, "drainDuration"), issues);
        }
        if let Some(d) = self.termination_drain_duration {
            d.check_ms(&field(path, "terminationDrainDuration"), issues);
        }
        if let Some(p) = self.status_port {
            check_port(p, &field(path, "statusPort"), issues);
        }
        if let Some(p) = self.proxy_admin_port {
            check_port(p, &field(path, "proxyAdminPort"), issues);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn keeps_unmodelled_fields() {
        let pc: ProxyConfig = serde_json::from_value(json!({
            "discoveryAddress": "istiod.istio-system.svc:15012",
            "proxyMetadata": {"ISTIO_META_DNS_CAPTURE": "true"},
            "holdApplicationUntilProxyStarts": true,
            "concurrency": 2,
            "tracing": {"zipkin": {"address": "zipkin.istio-system:9411"}, "sampling": 1.0},
            "drainDuration": "45s",
            "terminationDrainDuration": "5s",
            "interceptionMode": "TPROXY",
            "proxyStatsMatcher": {"inclusionPrefixes": ["cluster.outbound"]},
            "gatewayTopology": {"numTrustedProxies": 1}
        }))
        .unwrap();
        assert_eq!(pc.concurrency, Some(2));
        assert_eq!(pc.drain_duration, Some(Duration::from_secs(45)));
        assert_eq!(pc.interception_mode, Some(InterceptionMode::Tproxy));
        assert_eq!(pc.other.len(), 2);
        assert!(pc.other.contains_key("proxyStatsMatcher"));
        let mut issues = Issues::new();
        pc.validate("defaultConfig", &mut issues);
        assert!(issues.is_empty(), "{:?}", issues.errors());
        let back: ProxyConfig = serde_json::from_value(serde_json::to_value(&pc).unwrap()).unwrap();
        assert_eq!(back, pc);
    }

    #[test]
    fn validation() {
        let pc: ProxyConfig = serde_json::from_value(json!({
            "discoveryAddress": "istiod",
            "concurrency": -1,
            "drainDuration": "0s",
            "statusPort": 0
        }))
        .unwrap();
        let mut issues = Issues::new();
        pc.validate("defaultConfig", &mut issues);
        let paths: Vec<_> = issues.errors().iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            paths,
            vec![
                "defaultConfig.discoveryAddress",
                "defaultConfig.concurrency",
                "defaultConfig.drainDuration",
                "defaultConfig.statusPort"
            ]
        );
    }
}
