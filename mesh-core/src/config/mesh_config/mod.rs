//! MeshConfig: the mesh-wide settings (Istio's `istio.mesh.v1alpha1.MeshConfig`),
//! read from its own file, the `mesh` value of Istio's `istio` ConfigMap
//! written as YAML with camelCase fields.
//!
//! Every field is optional; the accessors ([`MeshConfig::root_namespace`],
//! [`MeshConfig::trust_domain`], [`MeshConfig::path_normalization`], ...)
//! apply Istio's defaults. The ConfigMap wrapper itself (`data.mesh` holding
//! the YAML as a string) is not accepted here; a caller that has one
//! extracts `data.mesh` first.
//!
//! Typed: everything the mesh reads. Kept as JSON: settings owned by other
//! APIs (`localityLbSetting`, `defaultHttpRetryPolicy`, `tcpKeepalive`) or
//! that only matter to istiod (`configSources`, `ca`, `serviceSettings`).

pub mod providers;
pub mod proxy;

use serde::{Deserialize, Serialize};

use crate::config::common::Duration;
use crate::config::kube::LabelSelector;
use crate::config::validate::{check_port, each, field, is_dns1123_label, Issues, Validate};

pub use providers::{DefaultProviders, ExtensionProvider, ProviderKind, BUILTIN_PROVIDERS};
pub use proxy::ProxyConfig;

/// Istio's default root namespace.
pub const DEFAULT_ROOT_NAMESPACE: &str = "istio-system";
/// Istio's default trust domain.
pub const DEFAULT_TRUST_DOMAIN: &str = "cluster.local";

/// Istio's `MeshConfig`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MeshConfig {
    /// Outbound capture port (default 15001).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_listen_port: Option<u32>,
    /// Inbound capture port (default 15006).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_inbound_listen_port: Option<u32>,
    /// Port of an explicit HTTP proxy listener, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_http_port: Option<u32>,
    /// Upstream connect timeout (default 10s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect_timeout: Option<Duration>,
    /// How long protocol sniffing waits for the client's first bytes (0s: forever).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol_detection_timeout: Option<Duration>,
    /// TCP keepalive settings (DestinationRule's `TcpKeepalive`), as written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp_keepalive: Option<serde_json::Value>,
    /// `kubernetes.io/ingress.class` handled by Istio.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress_class: Option<String>,
    /// Service of the ingress gateway used for Ingress resources.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress_service: Option<String>,
    /// Which Ingress resources Istio handles.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress_controller_mode: Option<IngressControllerMode>,
    /// `istio:` label value of the gateway that serves Ingress resources.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress_selector: Option<String>,
    /// Generate trace spans and request IDs (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enable_tracing: Option<bool>,
    /// Access log file (e.g. `/dev/stdout`); empty disables.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_log_file: Option<String>,
    /// Access log format string.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_log_format: Option<String>,
    /// Access log encoding (default TEXT).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_log_encoding: Option<AccessLogEncoding>,
    /// Enable Envoy's gRPC access log service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enable_envoy_access_log_service: Option<bool>,
    /// Disable Envoy's listener (no-route) access logs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disable_envoy_listener_log: Option<bool>,
    /// Default proxy settings for every workload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_config: Option<ProxyConfig>,
    /// What happens to traffic for destinations outside the registry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outbound_traffic_policy: Option<OutboundTrafficPolicy>,
    /// Where inbound traffic is delivered in the pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inbound_traffic_policy: Option<InboundTrafficPolicy>,
    /// Configuration sources of istiod, as written.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub config_sources: Vec<serde_json::Value>,
    /// Let clients pick mTLS automatically (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enable_auto_mtls: Option<bool>,
    /// SPIFFE trust domain (default `cluster.local`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trust_domain: Option<String>,
    /// Other trust domains treated as equal to `trustDomain`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub trust_domain_aliases: Vec<String>,
    /// Extra root certificates for workload-to-workload mTLS.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ca_certificates: Vec<CertificateData>,
    /// Default `exportTo` of Services and ServiceEntries (default `*`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub default_service_export_to: Vec<String>,
    /// Default `exportTo` of VirtualServices (default `*`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub default_virtual_service_export_to: Vec<String>,
    /// Default `exportTo` of DestinationRules (default `*`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub default_destination_rule_export_to: Vec<String>,
    /// Namespace whose policies apply mesh-wide (default `istio-system`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root_namespace: Option<String>,
    /// Mesh-wide locality load balancing, as written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locality_lb_setting: Option<serde_json::Value>,
    /// Refresh rate of DNS-resolved clusters. Istio's default mesh config
    /// says 60s; unset here means Envoy's default, 5s (a TTL the resolver
    /// reports decides first either way).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns_refresh_rate: Option<Duration>,
    /// Upgrade HTTP/1.1 connections to HTTP/2 by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub h2_upgrade_policy: Option<H2UpgradePolicy>,
    /// Stat name pattern of inbound clusters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inbound_cluster_stat_name: Option<String>,
    /// Stat name pattern of outbound clusters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outbound_cluster_stat_name: Option<String>,
    /// Deprecated DNS certificate provisioning, as written.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub certificates: Vec<serde_json::Value>,
    /// Per-host settings such as `clusterLocal`, as written.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub service_settings: Vec<serde_json::Value>,
    /// Merge application metrics into the proxy's (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enable_prometheus_merge: Option<bool>,
    /// Deprecated: verify server certificates for SIMPLE/MUTUAL origination.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify_certificate_at_client: Option<bool>,
    /// External CA settings, as written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<serde_json::Value>,
    /// Named external authorizers, tracers, metrics and log sinks.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extension_providers: Vec<ExtensionProvider>,
    /// Providers used when a Telemetry resource names none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_providers: Option<DefaultProviders>,
    /// Namespaces istiod watches; empty means all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub discovery_selectors: Vec<LabelSelector>,
    /// How request paths are normalized before routing and authorization.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_normalization: Option<ProxyPathNormalization>,
    /// Default HTTP retry policy (VirtualService `HTTPRetry`), as written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_http_retry_policy: Option<serde_json::Value>,
    /// TLS settings of in-mesh (ISTIO_MUTUAL) traffic.
    #[serde(default, rename = "meshMTLS", skip_serializing_if = "Option::is_none")]
    pub mesh_mtls: Option<TlsConfig>,
    /// TLS settings of all other TLS traffic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_defaults: Option<TlsConfig>,
    /// Compliance policy, e.g. `fips-140-2`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compliance_policy: Option<String>,
    /// Ambient multicluster service scope settings, as written.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub service_scope_configs: Vec<serde_json::Value>,
}

/// Istio's `MeshConfig.IngressControllerMode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum IngressControllerMode {
    /// Not set.
    #[default]
    Unspecified,
    /// Istio ignores Ingress resources.
    Off,
    /// Istio handles unannotated Ingresses and those of its class.
    Default,
    /// Istio handles only Ingresses of its class.
    Strict,
}

/// Istio's `MeshConfig.AccessLogEncoding`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum AccessLogEncoding {
    /// Plain text.
    #[default]
    Text,
    /// JSON.
    Json,
}

/// Istio's `MeshConfig.OutboundTrafficPolicy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OutboundTrafficPolicy {
    /// The mode; `ALLOW_ANY` when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<OutboundTrafficPolicyMode>,
}

/// Istio's `OutboundTrafficPolicy.Mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OutboundTrafficPolicyMode {
    /// Only hosts in the registry (Services, ServiceEntries) are reachable.
    RegistryOnly,
    /// Unknown destinations are passed through (Istio's default).
    #[default]
    AllowAny,
}

/// Istio's `MeshConfig.InboundTrafficPolicy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InboundTrafficPolicy {
    /// The mode; `PASSTHROUGH` when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<InboundTrafficPolicyMode>,
}

/// Istio's `InboundTrafficPolicy.Mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum InboundTrafficPolicyMode {
    /// Deliver to the pod IP, as without a mesh.
    #[default]
    Passthrough,
    /// Deliver to localhost.
    Localhost,
}

/// Istio's `MeshConfig.H2UpgradePolicy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum H2UpgradePolicy {
    /// Keep HTTP/1.1.
    #[default]
    DoNotUpgrade,
    /// Upgrade to HTTP/2.
    Upgrade,
}

/// Istio's `MeshConfig.ProxyPathNormalization`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProxyPathNormalization {
    /// The normalization; `DEFAULT` (= `BASE`) when unset.
    #[serde(default)]
    pub normalization: NormalizationType,
}

/// Istio's `ProxyPathNormalization.NormalizationType`, as written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum NormalizationType {
    /// Istio's default, currently `BASE`.
    #[default]
    Default,
    /// Paths are used as they arrive.
    None,
    /// RFC 3986 normalization (dot segments; backslash to slash).
    Base,
    /// `BASE`, and `//` merged into `/`.
    MergeSlashes,
    /// `MERGE_SLASHES`, after decoding `%2F`/`%5C`.
    DecodeAndMergeSlashes,
}

/// The path normalization in effect, with `DEFAULT` resolved: the same
/// enum the authorization engine executes.
pub use crate::authz::path::Normalization as PathNormalizationKind;

impl NormalizationType {
    /// The normalization in effect (`DEFAULT` is `BASE`).
    pub fn resolve(self) -> PathNormalizationKind {
        match self {
            NormalizationType::Default | NormalizationType::Base => PathNormalizationKind::Base,
            NormalizationType::None => PathNormalizationKind::None,
            NormalizationType::MergeSlashes => PathNormalizationKind::MergeSlashes,
            NormalizationType::DecodeAndMergeSlashes => {
                PathNormalizationKind::DecodeAndMergeSlashes
            }
        }
    }
}

/// Istio's `MeshConfig.TLSConfig`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TlsConfig {
    /// Minimum TLS version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_protocol_version: Option<TlsProtocol>,
    /// Allowed ECDH curves.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ecdh_curves: Vec<String>,
    /// Allowed cipher suites for TLS 1.0-1.2.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cipher_suites: Vec<String>,
}

/// Istio's `TLSConfig.TLSProtocol`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum TlsProtocol {
    /// Let the proxy choose.
    #[default]
    #[serde(rename = "TLS_AUTO")]
    Auto,
    /// TLS 1.2.
    #[serde(rename = "TLSV1_2")]
    V1_2,
    /// TLS 1.3.
    #[serde(rename = "TLSV1_3")]
    V1_3,
}

/// Istio's `MeshConfig.CertificateData`: a trust anchor.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CertificateData {
    /// PEM certificates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pem: Option<String>,
    /// SPIFFE bundle endpoint URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spiffe_bundle_url: Option<String>,
    /// Kubernetes signers that use this anchor.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cert_signers: Vec<String>,
    /// Trust domains this anchor belongs to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub trust_domains: Vec<String>,
}

impl MeshConfig {
    /// The root namespace (default `istio-system`).
    pub fn root_namespace(&self) -> &str {
        self.root_namespace
            .as_deref()
            .filter(|s| !s.is_empty())
            .unwrap_or(DEFAULT_ROOT_NAMESPACE)
    }

    /// The trust domain (default `cluster.local`).
    pub fn trust_domain(&self) -> &str {
        self.trust_domain
            .as_deref()
            .filter(|s| !s.is_empty())
            .unwrap_or(DEFAULT_TRUST_DOMAIN)
    }

    /// The trust domain followed by its aliases: every domain whose
    /// identities are treated as this mesh's.
    pub fn trust_domains(&self) -> Vec<&str> {
        std::iter::once(self.trust_domain())
            .chain(self.trust_domain_aliases.iter().map(String::as_str))
            .collect()
    }

    /// The path normalization in effect (`DEFAULT` and unset are `BASE`).
    pub fn path_normalization(&self) -> PathNormalizationKind {
        self.path_normalization
            .map(|p| p.normalization)
            .unwrap_or_default()
            .resolve()
    }

    /// The outbound traffic policy mode (default `ALLOW_ANY`).
    pub fn outbound_policy_mode(&self) -> OutboundTrafficPolicyMode {
        self.outbound_traffic_policy
            .and_then(|p| p.mode)
            .unwrap_or_default()
    }

    /// True when `outboundTrafficPolicy.mode` is `REGISTRY_ONLY`.
    pub fn registry_only(&self) -> bool {
        self.outbound_policy_mode() == OutboundTrafficPolicyMode::RegistryOnly
    }

    /// Whether auto mTLS is on (default true).
    pub fn auto_mtls(&self) -> bool {
        self.enable_auto_mtls.unwrap_or(true)
    }

    /// Whether tracing is on (default true).
    pub fn tracing_enabled(&self) -> bool {
        self.enable_tracing.unwrap_or(true)
    }

    /// The upstream connect timeout (default 10s).
    pub fn connect_timeout(&self) -> Duration {
        self.connect_timeout.unwrap_or(Duration::from_secs(10))
    }

    /// Default `exportTo` of Services and ServiceEntries (`["*"]` when unset).
    pub fn service_export_to(&self) -> Vec<&str> {
        export_to_or_all(&self.default_service_export_to)
    }

    /// Default `exportTo` of VirtualServices (`["*"]` when unset).
    pub fn virtual_service_export_to(&self) -> Vec<&str> {
        export_to_or_all(&self.default_virtual_service_export_to)
    }

    /// Default `exportTo` of DestinationRules (`["*"]` when unset).
    pub fn destination_rule_export_to(&self) -> Vec<&str> {
        export_to_or_all(&self.default_destination_rule_export_to)
    }

    /// The extension provider defined here with this name.
    pub fn extension_provider(&self, name: &str) -> Option<&ExtensionProvider> {
        self.extension_providers.iter().find(|p| p.name == name)
    }

    /// True when `name` is a provider other resources can refer to: one
    /// defined in `extensionProviders` or one of Istio's built-in
    /// providers (`prometheus`, `stackdriver`, `envoy`).
    pub fn has_provider(&self, name: &str) -> bool {
        self.extension_provider(name).is_some() || BUILTIN_PROVIDERS.contains(&name)
    }

    /// The default providers (empty lists when unset).
    pub fn default_providers(&self) -> DefaultProviders {
        self.default_providers.clone().unwrap_or_default()
    }
}

fn export_to_or_all(v: &[String]) -> Vec<&str> {
    if v.is_empty() {
        vec!["*"]
    } else {
        v.iter().map(String::as_str).collect()
    }
}

/// Checks a SPIFFE trust domain: dot-separated labels of lowercase letters,
/// digits, `-` and `_`.
pub fn check_trust_domain(domain: &str) -> Result<(), String> {
    if domain.is_empty() {
        return Err("the trust domain is empty".to_string());
    }
    if domain.len() > 255 {
        return Err("the trust domain is longer than 255 characters".to_string());
    }
    for label in domain.split('.') {
        if label.is_empty() {
            return Err("it has an empty label (a leading, trailing or doubled '.')".to_string());
        }
        if let Some(c) = label
            .chars()
            .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-' || *c == '_'))
        {
            return Err(format!(
                "it contains {c:?}; only lowercase letters, digits, '-', '_' and '.' are allowed"
            ));
        }
    }
    Ok(())
}

impl Validate for MeshConfig {
    fn validate(&self, path: &str, issues: &mut Issues) {
        if let Some(ns) = &self.root_namespace {
            if !is_dns1123_label(ns) {
                issues.push(
                    field(path, "rootNamespace"),
                    format!("rootNamespace {ns:?} is not a valid namespace name; use lowercase letters, digits and '-' (Istio's default is istio-system)"),
                );
            }
        }
        if let Some(td) = &self.trust_domain {
            if let Err(why) = check_trust_domain(td) {
                issues.push(
                    field(path, "trustDomain"),
                    format!("invalid trustDomain {td:?}: {why}; use a DNS-like name such as cluster.local"),
                );
            }
        }
        for (i, td) in self.trust_domain_aliases.iter().enumerate() {
            if let Err(why) = check_trust_domain(td) {
                issues.push(
                    format!("{}[{i}]", field(path, "trustDomainAliases")),
                    format!("invalid trust domain alias {td:?}: {why}"),
                );
            }
        }
        for (name, port) in [
            ("proxyListenPort", self.proxy_listen_port),
            ("proxyInboundListenPort", self.proxy_inbound_listen_port),
            ("proxyHttpPort", self.proxy_http_port),
        ] {
            if let Some(p) = port {
                check_port(p, &field(path, name), issues);
            }
        }
        if let Some(d) = self.connect_timeout {
            d.check_ms(&field(path, "connectTimeout"), issues);
        }
        if let Some(d) = self.dns_refresh_rate {
            d.check_ms(&field(path, "dnsRefreshRate"), issues);
        }
        if let Some(d) = self.protocol_detection_timeout {
            if !d.get().is_zero() {
                d.check_ms(&field(path, "protocolDetectionTimeout"), issues);
            }
        }
        self.default_config
            .validate(&field(path, "defaultConfig"), issues);
        let eps = field(path, "extensionProviders");
        each(&self.extension_providers, &eps, issues);
        let mut seen: Vec<&str> = Vec::new();
        for (i, p) in self.extension_providers.iter().enumerate() {
            if !p.name.is_empty() && seen.contains(&p.name.as_str()) {
                issues.push(
                    format!("{eps}[{i}].name"),
                    format!("extension provider name {:?} is already used by an earlier provider; names must be unique", p.name),
                );
            }
            seen.push(&p.name);
        }
        if let Some(dp) = &self.default_providers {
            let dpp = field(path, "defaultProviders");
            for (list, names) in [
                ("tracing", &dp.tracing),
                ("metrics", &dp.metrics),
                ("accessLogging", &dp.access_logging),
            ] {
                for (i, name) in names.iter().enumerate() {
                    if !self.has_provider(name) {
                        issues.push(
                            format!("{}[{i}]", field(&dpp, list)),
                            format!("default provider {name:?} is not defined; add it to extensionProviders or use a built-in provider (prometheus, envoy, stackdriver)"),
                        );
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
