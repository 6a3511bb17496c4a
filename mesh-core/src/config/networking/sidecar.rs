//! Istio `Sidecar`: narrows what a workload's proxy sees and accepts —
//! egress listeners with the hosts it may reach, ingress listeners, the
//! outbound traffic policy and inbound connection limits. Also defines the
//! networking flavour of `WorkloadSelector` (`labels`), which ServiceEntry
//! shares.
//!
//! Types and Istio's validation rules only; choosing which Sidecar applies
//! to a client is the compiler's job.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use super::destination_rule::ConnectionPoolSettings;
use super::gateway::{ServerTlsMode, ServerTlsSettings};
use super::service_entry::checks::{
    check_bind_ip, check_namespaced_host, check_port_name, check_protocol, fqdn_error, is_set,
    known_protocol, unix_path_error, HostOwner, UNIX_PREFIX,
};
use crate::config::common::Labels;
use crate::config::validate::{check_port, field, is_dns1123_label, Issues, Validate};

/// A Sidecar spec.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Sidecar {
    /// Workloads this applies to; without it, the namespace default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload_selector: Option<WorkloadSelector>,
    /// Inbound listeners (ports the workload serves).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ingress: Vec<IstioIngressListener>,
    /// Outbound listeners and the hosts they may reach.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub egress: Vec<IstioEgressListener>,
    /// Inbound connection limits for every ingress port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inbound_connection_pool: Option<ConnectionPoolSettings>,
    /// What happens to traffic for hosts outside the registry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outbound_traffic_policy: Option<OutboundTrafficPolicy>,
}

/// Istio's networking `WorkloadSelector` (Sidecar, ServiceEntry): matches
/// workloads by `labels`. (Security kinds and DestinationRule use
/// `matchLabels`, see [`crate::config::common::WorkloadSelector`].)
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkloadSelector {
    /// Labels a workload must all carry.
    #[serde(default)]
    pub labels: Labels,
}

impl WorkloadSelector {
    /// True when `labels` carries every label of the selector.
    pub fn matches(&self, labels: &Labels) -> bool {
        crate::config::common::selector_matches(&self.labels, labels)
    }
}

/// Istio's `IstioIngressListener`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IstioIngressListener {
    /// The port traffic arrives on. Required.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<SidecarPort>,
    /// IP to bind to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bind: Option<String>,
    /// How traffic is captured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capture_mode: Option<CaptureMode>,
    /// Where the application listens: `127.0.0.1:port`, `0.0.0.0:port`,
    /// `[::1]:port`, `[::]:port` or `unix:///path`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_endpoint: Option<String>,
    /// TLS termination for this port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<ServerTlsSettings>,
    /// Connection limits for this port (overrides `inboundConnectionPool`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_pool: Option<ConnectionPoolSettings>,
}

/// Istio's `IstioEgressListener`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IstioEgressListener {
    /// The port to listen on; unset means all ports (the catch-all listener).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<SidecarPort>,
    /// IP or `unix:///path` to bind to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bind: Option<String>,
    /// How traffic is captured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capture_mode: Option<CaptureMode>,
    /// Reachable hosts as `namespace/dnsName` (`.`, `*`, `~` namespaces). Required.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
}

/// Istio's `SidecarPort`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SidecarPort {
    /// Port number (0 for a Unix socket egress listener).
    #[serde(default)]
    pub number: u32,
    /// Protocol; sniffed when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    /// Optional port name (a DNS-1123 label).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Deprecated and ignored on Sidecars.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_port: Option<u32>,
}

/// Istio's `CaptureMode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum CaptureMode {
    /// The environment's default.
    #[default]
    Default,
    /// Captured by iptables redirection.
    Iptables,
    /// Not captured; the application talks to the listener directly.
    None,
}

/// Istio's `OutboundTrafficPolicy`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OutboundTrafficPolicy {
    /// REGISTRY_ONLY or ALLOW_ANY; REGISTRY_ONLY when the policy is given
    /// without a mode (the proto default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<OutboundTrafficPolicyMode>,
    /// With ALLOW_ANY, send unknown traffic to this proxy instead of passing it through.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress_proxy: Option<Destination>,
}

/// Istio's `OutboundTrafficPolicy.Mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OutboundTrafficPolicyMode {
    /// Only hosts in the registry are reachable (503 NR otherwise).
    #[default]
    RegistryOnly,
    /// Unknown hosts are passed through.
    AllowAny,
}

impl OutboundTrafficPolicyMode {
    /// True for REGISTRY_ONLY.
    pub fn is_registry_only(self) -> bool {
        self == Self::RegistryOnly
    }
}

/// Istio's `Destination`, shared with VirtualService (`egressProxy` uses it).
pub use super::virtual_service::Destination;

impl Validate for WorkloadSelector {
    fn validate(&self, path: &str, issues: &mut Issues) {
        for (k, v) in &self.labels {
            let p = format!("{}.{k}", field(path, "labels"));
            if k.is_empty() {
                issues.push(&p, "label key must not be empty");
            }
            if k.contains('*') || v.contains('*') {
                issues.push(
                    &p,
                    "wildcards are not allowed in workload selectors; list the exact label value",
                );
            }
        }
    }
}

impl Validate for Sidecar {
    fn validate(&self, path: &str, issues: &mut Issues) {
        self.workload_selector
            .validate(&field(path, "workloadSelector"), issues);
        if self.egress.is_empty()
            && self.ingress.is_empty()
            && self.outbound_traffic_policy.is_none()
            && self.inbound_connection_pool.is_none()
        {
            issues.push(
                path,
                "the Sidecar configures nothing; set egress, ingress, outboundTrafficPolicy or inboundConnectionPool",
            );
            return;
        }

        let ingress_path = field(path, "ingress");
        let mut ports = BTreeSet::new();
        for (i, l) in self.ingress.iter().enumerate() {
            let p = format!("{ingress_path}[{i}]");
            l.validate(&p, issues);
            if let Some(port) = &l.port {
                if !ports.insert(port.number) {
                    issues.push(
                        field(&field(&p, "port"), "number"),
                        format!(
                            "port {} is used by another ingress listener; ports must be unique",
                            port.number
                        ),
                    );
                }
            }
        }
        self.inbound_connection_pool
            .validate(&field(path, "inboundConnectionPool"), issues);

        let egress_path = field(path, "egress");
        let mut ports = BTreeSet::new();
        let mut sockets = BTreeSet::new();
        let mut catch_all = false;
        let last = self.egress.len().saturating_sub(1);
        for (i, l) in self.egress.iter().enumerate() {
            let p = format!("{egress_path}[{i}]");
            match &l.port {
                None => {
                    if catch_all {
                        issues.push(
                            &p,
                            "only one egress listener may omit the port; merge the hosts of the port-less listeners",
                        );
                    } else if i != last {
                        issues.push(
                            &p,
                            "the egress listener without a port catches all other ports and must be the last one; move it to the end",
                        );
                    }
                    catch_all = true;
                }
                Some(port) => {
                    let bind = l.bind.as_deref().unwrap_or_default();
                    if port.number == 0 {
                        if !sockets.insert(bind) {
                            issues.push(
                                field(&p, "bind"),
                                format!("Unix socket {bind:?} is used by another egress listener; sockets must be unique"),
                            );
                        }
                    } else if !ports.insert(port.number) {
                        issues.push(
                            field(&field(&p, "port"), "number"),
                            format!(
                                "port {} is used by another egress listener; ports must be unique",
                                port.number
                            ),
                        );
                    }
                }
            }
            l.validate(&p, issues);
        }

        self.outbound_traffic_policy
            .validate(&field(path, "outboundTrafficPolicy"), issues);
    }
}

impl SidecarPort {
    /// Checks name, protocol and target port; the number is checked by the
    /// listener, which knows whether 0 (a Unix socket) is allowed.
    fn validate_common(&self, path: &str, issues: &mut Issues) {
        if let Some(name) = self.name.as_deref().filter(|n| !n.is_empty()) {
            check_port_name(name, &field(path, "name"), issues);
        }
        check_protocol(
            self.protocol.as_deref().unwrap_or_default(),
            false,
            &field(path, "protocol"),
            issues,
        );
        if self.target_port.is_some_and(|t| t > 0) {
            issues.push(
                field(path, "targetPort"),
                "targetPort has no effect on Sidecars; remove it",
            );
        }
    }

    fn protocol(&self) -> Option<crate::config::kube::Protocol> {
        self.protocol.as_deref().and_then(known_protocol)
    }
}

impl Validate for IstioIngressListener {
    fn validate(&self, path: &str, issues: &mut Issues) {
        let port_path = field(path, "port");
        let Some(port) = &self.port else {
            issues.push(
                port_path,
                "port is required for an ingress listener; e.g. port: {number: 9080, protocol: HTTP, name: http}",
            );
            return;
        };
        port.validate_common(&port_path, issues);
        check_port(port.number, &field(&port_path, "number"), issues);
        if let Some(bind) = self.bind.as_deref().filter(|b| !b.is_empty()) {
            check_bind_ip(bind, &field(path, "bind"), issues);
        }
        if let Some(ep) = self.default_endpoint.as_deref().filter(|e| !e.is_empty()) {
            check_default_endpoint(ep, &field(path, "defaultEndpoint"), issues);
        }
        if let Some(tls) = &self.tls {
            let tp = field(path, "tls");
            for (set, name, why) in [
                (
                    !tls.subject_alt_names.is_empty(),
                    "subjectAltNames",
                    "is not supported in sidecar ingress TLS",
                ),
                (
                    tls.https_redirect == Some(true),
                    "httpsRedirect",
                    "is not supported on a Sidecar",
                ),
                (
                    is_set(&tls.credential_name),
                    "credentialName",
                    "is not supported on a Sidecar; use serverCertificate and privateKey files",
                ),
                (
                    !tls.credential_names.is_empty(),
                    "credentialNames",
                    "is not supported on a Sidecar; use serverCertificate and privateKey files",
                ),
                (
                    !tls.tls_certificates.is_empty(),
                    "tlsCertificates",
                    "is not supported on a Sidecar; use serverCertificate and privateKey",
                ),
            ] {
                if set {
                    issues.push(field(&tp, name), format!("{name} {why}"));
                }
            }
            let mode = tls.mode.unwrap_or_default();
            if matches!(
                mode,
                ServerTlsMode::IstioMutual | ServerTlsMode::AutoPassthrough
            ) {
                issues.push(
                    field(&tp, "mode"),
                    format!(
                        "mode {mode:?} cannot be used in sidecar ingress TLS; use SIMPLE or MUTUAL"
                    ),
                );
            }
            if !port
                .protocol()
                .is_some_and(crate::config::kube::Protocol::is_tls)
            {
                issues.push(
                    &tp,
                    "tls settings need an HTTPS or TLS port; set the port protocol to HTTPS or TLS, or remove tls",
                );
            }
            tls.validate(&tp, issues);
        }
        self.connection_pool
            .validate(&field(path, "connectionPool"), issues);
    }
}

/// Checks an ingress `defaultEndpoint`: a loopback/any address with a port,
/// or a Unix socket.
fn check_default_endpoint(ep: &str, path: &str, issues: &mut Issues) {
    if let Some(socket) = ep.strip_prefix(UNIX_PREFIX) {
        if let Some(why) = unix_path_error(socket) {
            issues.push(path, why);
        }
        return;
    }
    let expected =
        "use 127.0.0.1:<port>, 0.0.0.0:<port>, [::1]:<port>, [::]:<port> or unix:///path";
    let Some((host, port)) = ep.rsplit_once(':') else {
        issues.push(
            path,
            format!("defaultEndpoint {ep:?} has no port; {expected}"),
        );
        return;
    };
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if !matches!(host, "" | "127.0.0.1" | "0.0.0.0" | "::1" | "::") {
        issues.push(
            path,
            format!("defaultEndpoint host {host:?} is not allowed; {expected}"),
        );
    }
    match port.parse::<u32>() {
        Ok(n) => check_port(n, path, issues),
        Err(_) => issues.push(
            path,
            format!("defaultEndpoint port {port:?} is not a number; {expected}"),
        ),
    }
}

impl Validate for IstioEgressListener {
    fn validate(&self, path: &str, issues: &mut Issues) {
        if let Some(port) = &self.port {
            let port_path = field(path, "port");
            port.validate_common(&port_path, issues);
            let bind = self.bind.as_deref().unwrap_or_default();
            if port.number == 0 {
                match bind.strip_prefix(UNIX_PREFIX) {
                    None => issues.push(
                        field(&port_path, "number"),
                        "port 0 is only allowed with a Unix socket bind (bind: unix:///path); set a port number 1-65535",
                    ),
                    Some(socket) => {
                        if let Some(why) = unix_path_error(socket) {
                            issues.push(field(path, "bind"), why);
                        }
                    }
                }
                if self.capture_mode == Some(CaptureMode::Iptables) {
                    issues.push(
                        field(path, "captureMode"),
                        "a Unix socket listener cannot use captureMode IPTABLES; use DEFAULT or NONE",
                    );
                }
            } else {
                check_port(port.number, &field(&port_path, "number"), issues);
                if !bind.is_empty() {
                    check_bind_ip(bind, &field(path, "bind"), issues);
                }
            }
        }
        let hosts_path = field(path, "hosts");
        if self.hosts.is_empty() {
            issues.push(
                &hosts_path,
                "an egress listener needs at least one host; e.g. hosts: [\"./*\", \"istio-system/*\"]",
            );
        }
        for (i, h) in self.hosts.iter().enumerate() {
            check_namespaced_host(h, HostOwner::Sidecar, &format!("{hosts_path}[{i}]"), issues);
        }
    }
}

impl Validate for OutboundTrafficPolicy {
    fn validate(&self, path: &str, issues: &mut Issues) {
        let Some(proxy) = &self.egress_proxy else {
            return;
        };
        let pp = field(path, "egressProxy");
        if self.mode != Some(OutboundTrafficPolicyMode::AllowAny) {
            issues.push(
                &pp,
                "egressProxy only applies with mode: ALLOW_ANY; set the mode or remove egressProxy",
            );
            return;
        }
        if let Some(why) = fqdn_error(&proxy.host) {
            issues.push(
                field(&pp, "host"),
                format!("egressProxy.host must be a fully qualified host name: {why}"),
            );
        }
        if let Some(s) = proxy.subset.as_deref().filter(|s| !s.is_empty()) {
            if !is_dns1123_label(s) {
                issues.push(
                    field(&pp, "subset"),
                    format!("subset name {s:?} is not a valid DNS-1123 label; use lowercase letters, digits and '-'"),
                );
            }
        }
        match &proxy.port {
            None => issues.push(
                field(&pp, "port"),
                "egressProxy.port is required; e.g. port: {number: 3128}",
            ),
            Some(p) => p.validate(&field(&pp, "port"), issues),
        }
    }
}

#[cfg(test)]
#[path = "sidecar_tests.rs"]
mod tests;
