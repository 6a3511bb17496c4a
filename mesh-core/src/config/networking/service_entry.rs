//! Istio `ServiceEntry`: adds hosts to the mesh's service registry — external
//! APIs, VMs, or in-mesh services the platform registry does not know —
//! with their ports, resolution and endpoints (inline, or the WorkloadEntries
//! and pods a `workloadSelector` picks).
//!
//! Types and Istio's validation rules only; turning entries into registry
//! services is `crate::registry`'s job.

#[path = "checks.rs"]
pub(super) mod checks;

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use self::checks::{
    check_export_to, check_ip_or_cidr, check_port_name, check_protocol, fqdn_error, known_protocol,
    wildcard_domain_error, ExportToOwner,
};
use super::sidecar::WorkloadSelector;
use super::workload_entry::{EndpointContext, WorkloadEntry};
use crate::config::validate::{check_port, field, Issues, Validate};

/// A ServiceEntry spec.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceEntry {
    /// Host names of the service (a leading `*.` wildcard is allowed). Required.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    /// Virtual IPs or CIDR blocks of the service.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<String>,
    /// Ports of the service.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<ServicePort>,
    /// Inside or outside the mesh (MESH_EXTERNAL when unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<Location>,
    /// How endpoints are found (NONE when unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolution: Option<Resolution>,
    /// Inline endpoints; excludes `workloadSelector`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub endpoints: Vec<WorkloadEntry>,
    /// Picks WorkloadEntries and pods in the namespace as endpoints;
    /// excludes `endpoints`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload_selector: Option<WorkloadSelector>,
    /// Namespaces that see the service (`.`, `*`, `~` or names); all when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub export_to: Vec<String>,
    /// SANs accepted from the endpoints' certificates.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subject_alt_names: Vec<String>,
}

/// Istio's `ServicePort`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServicePort {
    /// Port number. Required.
    #[serde(default)]
    pub number: u32,
    /// Protocol (HTTP, HTTPS, GRPC, HTTP2, MONGO, TCP, TLS, ...); sniffed when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    /// Port name, a DNS-1123 label unique in the entry. Required.
    #[serde(default)]
    pub name: String,
    /// Port on the endpoints (defaults to `number`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_port: Option<u32>,
}

/// Istio's `ServiceEntry.Location`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Location {
    /// Outside the mesh: no mTLS, no Istio identity.
    #[default]
    MeshExternal,
    /// Part of the mesh (e.g. VMs with a sidecar).
    MeshInternal,
}

/// Istio's `ServiceEntry.Resolution`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Resolution {
    /// Forward to the address the caller dialed.
    #[default]
    None,
    /// Use the listed endpoint IPs.
    Static,
    /// Resolve the hosts (or endpoint names) through DNS, all addresses.
    Dns,
    /// Resolve through DNS, using the first address only.
    DnsRoundRobin,
}

impl ServiceEntry {
    /// The resolution, NONE when unset.
    pub fn resolution(&self) -> Resolution {
        self.resolution.unwrap_or_default()
    }

    /// The location, MESH_EXTERNAL when unset.
    pub fn location(&self) -> Location {
        self.location.unwrap_or_default()
    }
}

impl Validate for ServiceEntry {
    fn validate(&self, path: &str, issues: &mut Issues) {
        let resolution = self.resolution();
        if let Some(sel) = &self.workload_selector {
            sel.validate(&field(path, "workloadSelector"), issues);
            if !self.endpoints.is_empty() {
                issues.push(
                    field(path, "workloadSelector"),
                    "workloadSelector and endpoints cannot both be set; list endpoints inline or select them by labels",
                );
            }
        }

        let hosts_path = field(path, "hosts");
        if self.hosts.is_empty() {
            issues.push(
                &hosts_path,
                "at least one host is required, e.g. hosts: [api.example.com]",
            );
        }
        for (i, h) in self.hosts.iter().enumerate() {
            let p = format!("{hosts_path}[{i}]");
            if h == "*" {
                issues.push(
                    p,
                    "host \"*\" is not allowed in a ServiceEntry; name the host or use a wildcard such as *.example.com",
                );
            } else if let Some(why) = wildcard_domain_error(h) {
                issues.push(p, why);
            }
        }

        let addr_path = field(path, "addresses");
        let mut cidr = false;
        for (i, a) in self.addresses.iter().enumerate() {
            cidr |= a.contains('/');
            check_ip_or_cidr(a, &format!("{addr_path}[{i}]"), issues);
        }
        if cidr && !matches!(resolution, Resolution::None | Resolution::Static) {
            issues.push(
                &addr_path,
                "CIDR addresses need resolution NONE or STATIC; list single IPs or change the resolution",
            );
        }

        let ports_path = field(path, "ports");
        let mut names = BTreeSet::new();
        let mut numbers = BTreeSet::new();
        for (i, port) in self.ports.iter().enumerate() {
            let p = format!("{ports_path}[{i}]");
            if !names.insert(port.name.as_str()) {
                issues.push(
                    field(&p, "name"),
                    format!(
                        "port name {:?} is already used by another port; port names must be unique",
                        port.name
                    ),
                );
            }
            if !numbers.insert(port.number) {
                issues.push(
                    field(&p, "number"),
                    format!(
                        "port {} is listed twice; each port number may appear once",
                        port.number
                    ),
                );
            }
            port.validate(&p, issues);
        }

        let endpoints_path = field(path, "endpoints");
        match resolution {
            Resolution::None => {
                if !self.endpoints.is_empty() {
                    issues.push(
                        &endpoints_path,
                        "endpoints are not used with resolution NONE (traffic goes to the address the caller dialed); remove them or set resolution STATIC or DNS",
                    );
                }
            }
            Resolution::Static | Resolution::Dns | Resolution::DnsRoundRobin => {
                let dns = resolution != Resolution::Static;
                if dns && self.endpoints.is_empty() {
                    for (i, h) in self.hosts.iter().enumerate() {
                        if h != "*" && wildcard_domain_error(h).is_none() && fqdn_error(h).is_some()
                        {
                            issues.push(
                                format!("{hosts_path}[{i}]"),
                                format!("host {h:?} cannot be resolved through DNS; with resolution DNS and no endpoints every host must be a fully qualified name (no wildcard), or add endpoints"),
                            );
                        }
                    }
                }
                if resolution == Resolution::DnsRoundRobin && self.endpoints.len() > 1 {
                    issues.push(
                        &endpoints_path,
                        "resolution DNS_ROUND_ROBIN takes at most one endpoint; use DNS for several",
                    );
                }
                let ctx = EndpointContext {
                    service_ports: Some(&names),
                    allow_hostnames: dns,
                };
                for (i, ep) in self.endpoints.iter().enumerate() {
                    let p = format!("{endpoints_path}[{i}]");
                    let unix = ep
                        .address
                        .as_deref()
                        .is_some_and(|a| a.starts_with(checks::UNIX_PREFIX));
                    if dns && unix {
                        issues.push(
                            field(&p, "address"),
                            "Unix socket endpoints cannot be resolved through DNS; use resolution STATIC",
                        );
                        continue;
                    }
                    ep.validate_endpoint(&p, &ctx, issues);
                }
            }
        }

        // Plain TCP carries no host name, so several hosts on one TCP port
        // cannot be told apart (unless resolution is NONE, where hosts are
        // ignored).
        if resolution != Resolution::None && self.hosts.len() > 1 {
            let opaque = self.ports.iter().position(|p| {
                let proto = p.protocol.as_deref().and_then(known_protocol);
                !proto.is_some_and(|p| p.is_http() || p.is_tls())
            });
            if let Some(i) = opaque {
                issues.push(
                    format!("{ports_path}[{i}]"),
                    "several hosts share a port that is neither HTTP nor TLS, so connections cannot be told apart; use one host per ServiceEntry, an HTTP/TLS protocol, or resolution NONE",
                );
            }
        }

        check_export_to(
            &self.export_to,
            ExportToOwner::ServiceEntry,
            &field(path, "exportTo"),
            issues,
        );
    }
}

impl Validate for ServicePort {
    fn validate(&self, path: &str, issues: &mut Issues) {
        check_port(self.number, &field(path, "number"), issues);
        check_port_name(&self.name, &field(path, "name"), issues);
        check_protocol(
            self.protocol.as_deref().unwrap_or_default(),
            false,
            &field(path, "protocol"),
            issues,
        );
        if let Some(t) = self.target_port {
            check_port(t, &field(path, "targetPort"), issues);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: serde_json::Value) -> ServiceEntry {
        match serde_json::from_value(v) {
            Ok(se) => se,
            Err(e) => panic!("does not parse: {e}"),
        }
    }

    fn errors(se: &ServiceEntry) -> Vec<String> {
        let mut issues = Issues::new();
        se.validate("spec", &mut issues);
        issues.errors().iter().map(ToString::to_string).collect()
    }

    fn assert_error(se: &ServiceEntry, path: &str, needle: &str) {
        let errs = errors(se);
        assert!(
            errs.iter()
                .any(|e| e.starts_with(&format!("{path}: ")) && e.contains(needle)),
            "expected {path}: ...{needle}... in {errs:#?}"
        );
    }

    #[test]
    fn docs_examples_are_valid() {
        let external = parse(json!({
            "hosts": ["api.dropboxapi.com", "www.googleapis.com"],
            "location": "MESH_EXTERNAL",
            "ports": [{"number": 443, "name": "https", "protocol": "TLS"}],
            "resolution": "DNS"
        }));
        assert_eq!(errors(&external), Vec::<String>::new());
        assert_eq!(external.resolution(), Resolution::Dns);

        let mongo = parse(json!({
            "hosts": ["mymongodb.somedomain"],
            "addresses": ["192.192.192.192/24"],
            "ports": [{"number": 27018, "name": "mongodb", "protocol": "MONGO"}],
            "location": "MESH_INTERNAL",
            "resolution": "STATIC",
            "endpoints": [
                {"address": "2.2.2.2"},
                {"address": "3.3.3.3", "ports": {"mongodb": 27019}, "labels": {"version": "v2"}}
            ]
        }));
        assert_eq!(errors(&mongo), Vec::<String>::new());
        assert_eq!(mongo.location(), Location::MeshInternal);
        assert_eq!(mongo.endpoints[1].ports.get("mongodb"), Some(&27019));

        let selected = parse(json!({
            "hosts": ["details.bookinfo.com"],
            "location": "MESH_INTERNAL",
            "ports": [{"number": 80, "name": "http", "protocol": "HTTP", "targetPort": 8080}],
            "resolution": "STATIC",
            "workloadSelector": {"labels": {"app": "details-legacy"}},
            "exportTo": ["."],
            "subjectAltNames": ["spiffe://cluster.local/ns/bookinfo/sa/details"]
        }));
        assert_eq!(errors(&selected), Vec::<String>::new());

        let unix = parse(json!({
            "hosts": ["unix.example.com"],
            "ports": [{"number": 80, "name": "http", "protocol": "HTTP"}],
            "resolution": "STATIC",
            "endpoints": [{"address": "unix:///var/run/example/socket"}]
        }));
        assert_eq!(errors(&unix), Vec::<String>::new());
    }

    #[test]
    fn unknown_fields_and_enum_values_are_rejected() {
        assert!(
            serde_json::from_value::<ServiceEntry>(json!({"hosts": ["a.com"], "host": "a"}))
                .is_err()
        );
        assert!(serde_json::from_value::<ServiceEntry>(json!({"resolution": "DYNAMIC"})).is_err());
        assert!(serde_json::from_value::<ServiceEntry>(
            json!({"ports": [{"number": 80, "nmae": "x"}]})
        )
        .is_err());
    }

    #[test]
    fn hosts_rules() {
        assert_error(&parse(json!({})), "spec.hosts", "at least one host");
        let se = parse(json!({"hosts": ["*", "*foo.com", "Bad_Host.com", "*.ok.com"]}));
        assert_error(&se, "spec.hosts[0]", "not allowed");
        assert_error(&se, "spec.hosts[1]", "partial wildcard");
        assert_error(&se, "spec.hosts[2]", "invalid label");
        assert_eq!(errors(&se).len(), 3);
        // DNS resolution without endpoints needs resolvable names.
        let se = parse(json!({"hosts": ["*.example.com"], "resolution": "DNS"}));
        assert_error(&se, "spec.hosts[0]", "cannot be resolved");
        let se = parse(json!({
            "hosts": ["*.example.com"], "resolution": "DNS",
            "endpoints": [{"address": "proxy.example.com"}]
        }));
        assert_eq!(errors(&se), Vec::<String>::new());
    }

    #[test]
    fn addresses_and_ports() {
        let se = parse(json!({
            "hosts": ["a.example.com"],
            "addresses": ["10.0.0.0/8", "not-an-ip"],
            "resolution": "DNS",
            "ports": [
                {"number": 80, "name": "http", "protocol": "HTTP"},
                {"number": 80, "name": "http", "protocol": "SPDY"},
                {"number": 0, "name": "Bad", "targetPort": 70000}
            ]
        }));
        assert_error(&se, "spec.addresses[1]", "not a valid IP");
        assert_error(
            &se,
            "spec.addresses",
            "CIDR addresses need resolution NONE or STATIC",
        );
        assert_error(&se, "spec.ports[1].name", "already used");
        assert_error(&se, "spec.ports[1].number", "listed twice");
        assert_error(
            &se,
            "spec.ports[1].protocol",
            "unsupported protocol \"SPDY\"",
        );
        assert_error(&se, "spec.ports[2].number", "out of range");
        assert_error(&se, "spec.ports[2].name", "DNS-1123");
        assert_error(&se, "spec.ports[2].targetPort", "out of range");
        let unnamed = parse(json!({"hosts": ["a.example.com"], "ports": [{"number": 80}]}));
        assert_error(&unnamed, "spec.ports[0].name", "port name is required");
    }

    #[test]
    fn resolution_rules() {
        let none = parse(json!({
            "hosts": ["a.example.com"], "endpoints": [{"address": "1.1.1.1"}]
        }));
        assert_error(&none, "spec.endpoints", "resolution NONE");

        let stat = parse(json!({
            "hosts": ["a.example.com"], "resolution": "STATIC",
            "ports": [{"number": 80, "name": "http"}],
            "endpoints": [
                {"address": "db.example.com"},
                {},
                {"address": "1.1.1.1", "ports": {"grpc": 9000}},
                {"address": "unix://relative"}
            ]
        }));
        assert_error(&stat, "spec.endpoints[0].address", "not a valid IP");
        assert_error(&stat, "spec.endpoints[1].address", "address is required");
        assert_error(
            &stat,
            "spec.endpoints[2].ports.grpc",
            "not a port of the ServiceEntry",
        );
        assert_error(&stat, "spec.endpoints[3].address", "absolute path");

        let rr = parse(json!({
            "hosts": ["a.example.com"], "resolution": "DNS_ROUND_ROBIN",
            "endpoints": [{"address": "a.example.com"}, {"address": "b.example.com"}]
        }));
        assert_error(&rr, "spec.endpoints", "at most one endpoint");
        let dns_unix = parse(json!({
            "hosts": ["a.example.com"], "resolution": "DNS",
            "endpoints": [{"address": "unix:///var/run/a.sock"}]
        }));
        assert_error(
            &dns_unix,
            "spec.endpoints[0].address",
            "use resolution STATIC",
        );

        let both = parse(json!({
            "hosts": ["a.example.com"], "resolution": "STATIC",
            "endpoints": [{"address": "1.1.1.1"}],
            "workloadSelector": {"labels": {"app": "a"}}
        }));
        assert_error(&both, "spec.workloadSelector", "cannot both be set");

        let tcp_hosts = parse(json!({
            "hosts": ["a.example.com", "b.example.com"], "resolution": "DNS",
            "ports": [{"number": 443, "name": "tls", "protocol": "TLS"},
                      {"number": 5432, "name": "pg", "protocol": "TCP"}]
        }));
        assert_error(&tcp_hosts, "spec.ports[1]", "neither HTTP nor TLS");
        let tcp_hosts_none = parse(json!({
            "hosts": ["a.example.com", "b.example.com"],
            "ports": [{"number": 5432, "name": "pg", "protocol": "TCP"}]
        }));
        assert_eq!(errors(&tcp_hosts_none), Vec::<String>::new());
    }

    #[test]
    fn export_to_and_selector() {
        let se = parse(json!({
            "hosts": ["a.example.com"],
            "exportTo": ["~", "prod"],
            "workloadSelector": {"labels": {"app": "*"}}
        }));
        assert_error(&se, "spec.exportTo", "\"~\"");
        assert_error(&se, "spec.workloadSelector.labels.app", "wildcard");
    }

    #[test]
    fn serializes_tidily() {
        let se =
            parse(json!({"hosts": ["a.example.com"], "ports": [{"number": 80, "name": "http"}]}));
        let v = serde_json::to_value(&se).unwrap_or_default();
        assert_eq!(
            v,
            json!({"hosts": ["a.example.com"], "ports": [{"number": 80, "name": "http"}]})
        );
    }
}
