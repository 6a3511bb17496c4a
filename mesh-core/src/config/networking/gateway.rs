//! Istio `Gateway`: the ports, hosts and TLS a gateway workload (picked by
//! `selector`) serves at the edge of the mesh. `ServerTlsSettings` is also
//! what a Sidecar ingress listener uses to terminate TLS.
//!
//! Types and Istio's validation rules only; which routes bind to a server is
//! decided when compiling VirtualServices.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use super::service_entry::checks::{
    check_bind_ip, check_namespaced_host, check_protocol, is_set, known_protocol, unix_path_error,
    HostOwner, UNIX_PREFIX,
};
use crate::config::common::Labels;
use crate::config::validate::{check_port, each, field, Issues, Validate};

/// A Gateway spec.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Gateway {
    /// What the gateway serves. At least one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub servers: Vec<Server>,
    /// Labels of the gateway workloads this applies to.
    #[serde(default, skip_serializing_if = "Labels::is_empty")]
    pub selector: Labels,
}

/// Istio's `Server`: one port with its hosts and TLS.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Server {
    /// The port to listen on. Required.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<ServerPort>,
    /// IP or `unix:///path` to bind to (all addresses when unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bind: Option<String>,
    /// Hosts served, as `[namespace/]host`. At least one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    /// TLS settings (required for HTTPS and TLS ports).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<ServerTlsSettings>,
    /// Loopback endpoint to forward to (`127.0.0.1:port` or `unix://`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_endpoint: Option<String>,
    /// Optional server name, used in stats and status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// Istio's `Port` in a Gateway server (named `ServerPort` here to keep it
/// apart from other port types).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServerPort {
    /// Port number (0 only with a Unix socket bind).
    #[serde(default)]
    pub number: u32,
    /// HTTP, HTTPS, GRPC, GRPC-WEB, HTTP2, MONGO, TCP or TLS. Required.
    #[serde(default)]
    pub protocol: String,
    /// Port name, unique across the gateway's servers. Required.
    #[serde(default)]
    pub name: String,
    /// Deprecated and ignored on gateways.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_port: Option<u32>,
}

/// Istio's `ServerTLSSettings`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServerTlsSettings {
    /// Redirect plain-HTTP requests to HTTPS (HTTP servers only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub https_redirect: Option<bool>,
    /// How TLS is handled (PASSTHROUGH when unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<ServerTlsMode>,
    /// Server certificate file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_certificate: Option<String>,
    /// Server private key file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub private_key: Option<String>,
    /// CA bundle verifying client certificates (MUTUAL).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_certificates: Option<String>,
    /// Certificate revocation list file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_crl: Option<String>,
    /// Secret holding key, certificate (and CA).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential_name: Option<String>,
    /// Several secrets (e.g. an RSA and an ECDSA certificate).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub credential_names: Vec<String>,
    /// Several certificate/key file pairs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tls_certificates: Vec<TlsCertificate>,
    /// SANs accepted in client certificates.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subject_alt_names: Vec<String>,
    /// Accepted SPKI hashes of client certificates (base64).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub verify_certificate_spki: Vec<String>,
    /// Accepted hashes of client certificates (hex).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub verify_certificate_hash: Vec<String>,
    /// Lowest TLS version accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_protocol_version: Option<TlsProtocol>,
    /// Highest TLS version accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_protocol_version: Option<TlsProtocol>,
    /// Cipher suites offered (Envoy's defaults when empty).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cipher_suites: Vec<String>,
}

/// Istio's `ServerTLSSettings.TLSCertificate`: one certificate/key pair.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TlsCertificate {
    /// Server certificate file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_certificate: Option<String>,
    /// Private key file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub private_key: Option<String>,
    /// CA bundle file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_certificates: Option<String>,
}

/// Istio's `ServerTLSSettings.TLSmode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ServerTlsMode {
    /// Forward TLS untouched, routing on SNI.
    #[default]
    Passthrough,
    /// Terminate TLS.
    Simple,
    /// Terminate TLS and require a client certificate.
    Mutual,
    /// Passthrough routed by the SNI's encoded destination (east-west gateways).
    AutoPassthrough,
    /// Terminate with the mesh's workload certificates.
    IstioMutual,
    /// Terminate; verify a client certificate only if one is sent.
    OptionalMutual,
}

/// Istio's `ServerTLSSettings.TLSProtocol`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub enum TlsProtocol {
    /// Envoy's default.
    #[default]
    #[serde(rename = "TLS_AUTO")]
    TlsAuto,
    /// TLS 1.0.
    #[serde(rename = "TLSV1_0")]
    TlsV1_0,
    /// TLS 1.1.
    #[serde(rename = "TLSV1_1")]
    TlsV1_1,
    /// TLS 1.2.
    #[serde(rename = "TLSV1_2")]
    TlsV1_2,
    /// TLS 1.3.
    #[serde(rename = "TLSV1_3")]
    TlsV1_3,
}

impl Validate for Gateway {
    fn validate(&self, path: &str, issues: &mut Issues) {
        let servers_path = field(path, "servers");
        if self.servers.is_empty() {
            issues.push(
                &servers_path,
                "a Gateway needs at least one server; add servers: [{port: {...}, hosts: [...]}]",
            );
        }
        each(&self.servers, &servers_path, issues);
        let mut names = BTreeSet::new();
        for (i, s) in self.servers.iter().enumerate() {
            if let Some(p) = &s.port {
                if !names.insert(p.name.as_str()) {
                    issues.push(
                        format!("{servers_path}[{i}].port.name"),
                        format!("port name {:?} is used by another server; port names must be unique across a Gateway's servers", p.name),
                    );
                }
            }
        }
    }
}

impl Validate for Server {
    fn validate(&self, path: &str, issues: &mut Issues) {
        let hosts_path = field(path, "hosts");
        if self.hosts.is_empty() {
            issues.push(
                &hosts_path,
                "a server needs at least one host; use \"*\" for any host or e.g. \"*.example.com\"",
            );
        }
        for (i, h) in self.hosts.iter().enumerate() {
            check_namespaced_host(h, HostOwner::Gateway, &format!("{hosts_path}[{i}]"), issues);
        }
        let bind = self.bind.as_deref().unwrap_or_default();
        let port_path = field(path, "port");
        let mut port_ok = false;
        match &self.port {
            None => issues.push(
                &port_path,
                "port is required; e.g. port: {number: 443, name: https, protocol: HTTPS}",
            ),
            Some(p) => {
                let before = issues.errors().len();
                p.validate_for_bind(&port_path, bind, issues);
                port_ok = issues.errors().len() == before;
            }
        }
        if let Some(socket) = bind.strip_prefix(UNIX_PREFIX) {
            if let Some(why) = unix_path_error(socket) {
                issues.push(field(path, "bind"), why);
            }
            if self.port.as_ref().is_some_and(|p| p.number != 0) {
                issues.push(
                    field(&port_path, "number"),
                    "a server bound to a Unix socket must use port number 0",
                );
            }
        } else if !bind.is_empty() {
            check_bind_ip(bind, &field(path, "bind"), issues);
        }
        self.tls.validate(&field(path, "tls"), issues);
        if let (true, Some(port)) = (port_ok, &self.port) {
            let proto = known_protocol(&port.protocol);
            let is_tls = proto.is_some_and(crate::config::kube::Protocol::is_tls);
            let is_http = proto.is_some_and(crate::config::kube::Protocol::is_http);
            match &self.tls {
                None if is_tls => issues.push(
                    field(path, "tls"),
                    format!("a {} server needs tls settings; add tls: {{mode: SIMPLE, credentialName: <secret>}}", port.protocol),
                ),
                Some(tls) if !is_tls => {
                    let redirect_only = matches!(
                        tls.mode.unwrap_or_default(),
                        ServerTlsMode::Passthrough | ServerTlsMode::AutoPassthrough
                    ) && !is_set(&tls.ca_certificates)
                        && !is_set(&tls.private_key)
                        && !is_set(&tls.server_certificate);
                    if !(is_http && redirect_only) {
                        let msg = if is_http {
                            "a plain-text HTTP server may only carry tls.httpsRedirect; use protocol HTTPS to terminate TLS here"
                        } else {
                            "tls settings need an HTTPS or TLS port; change the port protocol or remove tls"
                        };
                        issues.push(field(path, "tls"), msg);
                    }
                }
                _ => {}
            }
        }
    }
}

impl ServerPort {
    /// Validates the port of a server bound to `bind` (a Unix socket bind
    /// allows port 0).
    fn validate_for_bind(&self, path: &str, bind: &str, issues: &mut Issues) {
        check_protocol(&self.protocol, true, &field(path, "protocol"), issues);
        if self.number > 0 || !bind.starts_with(UNIX_PREFIX) {
            check_port(self.number, &field(path, "number"), issues);
        }
        if self.target_port.is_some_and(|t| t > 0) {
            issues.push(
                field(path, "targetPort"),
                "targetPort has no effect on Gateways; remove it",
            );
        }
        if self.name.is_empty() {
            issues.push(
                field(path, "name"),
                "port name is required; e.g. name: https-443",
            );
        }
    }
}

impl Validate for ServerTlsSettings {
    fn validate(&self, path: &str, issues: &mut Issues) {
        let mode = self.mode.unwrap_or_default();
        if mode == ServerTlsMode::IstioMutual {
            for (set, name) in [
                (is_set(&self.server_certificate), "serverCertificate"),
                (is_set(&self.private_key), "privateKey"),
                (is_set(&self.ca_certificates), "caCertificates"),
                (!self.tls_certificates.is_empty(), "tlsCertificates"),
                (is_set(&self.credential_name), "credentialName"),
                (!self.credential_names.is_empty(), "credentialNames"),
            ] {
                if set {
                    issues.push(
                        field(path, name),
                        format!("ISTIO_MUTUAL uses the mesh's own certificates; remove {name}"),
                    );
                }
            }
            return;
        }
        let sources = [
            is_set(&self.server_certificate) && is_set(&self.private_key),
            is_set(&self.credential_name),
            !self.credential_names.is_empty(),
            !self.tls_certificates.is_empty(),
        ]
        .iter()
        .filter(|b| **b)
        .count();
        if sources > 1 {
            issues.push(
                path,
                "certificates come from more than one source; set only one of credentialName, credentialNames, serverCertificate/privateKey or tlsCertificates",
            );
        }
        let terminating = matches!(
            mode,
            ServerTlsMode::Simple | ServerTlsMode::Mutual | ServerTlsMode::OptionalMutual
        );
        if terminating && (is_set(&self.credential_name) || !self.credential_names.is_empty()) {
            // The secret supplies certificate, key and CA.
            return;
        }
        if terminating {
            let label = if mode == ServerTlsMode::Simple {
                "SIMPLE"
            } else {
                "MUTUAL"
            };
            if mode != ServerTlsMode::Simple && !is_set(&self.ca_certificates) {
                issues.push(
                    field(path, "caCertificates"),
                    format!("{label} TLS needs a CA bundle to verify clients; set caCertificates or use credentialName"),
                );
            }
            if self.tls_certificates.is_empty() {
                self.require_pair(
                    label,
                    &self.server_certificate,
                    &self.private_key,
                    path,
                    issues,
                );
            } else {
                for (i, c) in self.tls_certificates.iter().enumerate() {
                    self.require_pair(
                        label,
                        &c.server_certificate,
                        &c.private_key,
                        &format!("{}[{i}]", field(path, "tlsCertificates")),
                        issues,
                    );
                }
            }
        }
        if is_set(&self.ca_crl) {
            if is_set(&self.credential_name) {
                issues.push(
                    field(path, "caCrl"),
                    "caCrl cannot be combined with credentialName; put the CRL in the secret",
                );
            }
            if mode == ServerTlsMode::Simple {
                issues.push(
                    field(path, "caCrl"),
                    "caCrl needs client certificates; it has no effect with SIMPLE TLS (use MUTUAL or remove it)",
                );
            }
        }
    }
}

impl ServerTlsSettings {
    fn require_pair(
        &self,
        label: &str,
        cert: &Option<String>,
        key: &Option<String>,
        path: &str,
        issues: &mut Issues,
    ) {
        if !is_set(cert) {
            issues.push(
                field(path, "serverCertificate"),
                format!("{label} TLS needs a server certificate; set serverCertificate (and privateKey) or credentialName"),
            );
        }
        if !is_set(key) {
            issues.push(
                field(path, "privateKey"),
                format!("{label} TLS needs a private key; set privateKey (and serverCertificate) or credentialName"),
            );
        }
    }
}

#[cfg(test)]
#[path = "gateway_tests.rs"]
mod tests;
