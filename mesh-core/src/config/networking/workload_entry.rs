//! Istio `WorkloadEntry`: a non-Kubernetes workload (a VM, a bare-metal
//! host) with its address, ports, labels and identity. The same shape is a
//! ServiceEntry's inline endpoint.
//!
//! Types and Istio's validation rules only; turning entries into registry
//! endpoints is `crate::registry`'s job.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::service_entry::checks::{
    check_labels, check_port_name, fqdn_error, is_ip, unix_path_error, UNIX_PREFIX,
};
use crate::config::common::Labels;
use crate::config::validate::{check_port, field, Issues, Validate};

/// A WorkloadEntry spec (also a ServiceEntry endpoint).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkloadEntry {
    /// IP, DNS name or `unix:///path`. Required unless `network` is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// Port name to the port this workload listens on for it.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub ports: BTreeMap<String, u32>,
    /// Labels (what subsets and selectors match).
    #[serde(default, skip_serializing_if = "Labels::is_empty")]
    pub labels: Labels,
    /// Network the workload is on (reached through that network's gateway).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
    /// `region/zone/subzone`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locality: Option<String>,
    /// Load-balancing weight relative to the other endpoints.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<u32>,
    /// Kubernetes service account the workload runs as (its identity).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account: Option<String>,
}

/// What a ServiceEntry tells the validation of one of its endpoints.
#[derive(Debug, Clone, Default)]
pub struct EndpointContext<'a> {
    /// The entry's port names; endpoint ports must name one of them.
    /// `None` for a standalone WorkloadEntry.
    pub service_ports: Option<&'a BTreeSet<&'a str>>,
    /// DNS names are allowed as addresses (DNS resolution, or a standalone
    /// WorkloadEntry); with STATIC resolution only IPs and Unix sockets are.
    pub allow_hostnames: bool,
}

impl Validate for WorkloadEntry {
    fn validate(&self, path: &str, issues: &mut Issues) {
        let ctx = EndpointContext {
            service_ports: None,
            allow_hostnames: true,
        };
        self.validate_endpoint(path, &ctx, issues);
    }
}

impl WorkloadEntry {
    /// Validates the entry as an endpoint of a ServiceEntry described by `ctx`.
    pub fn validate_endpoint(&self, path: &str, ctx: &EndpointContext<'_>, issues: &mut Issues) {
        let addr_path = field(path, "address");
        let addr = self.address.as_deref().unwrap_or_default();
        let network = self.network.as_deref().is_some_and(|n| !n.is_empty());
        let mut unix = false;
        if addr.is_empty() {
            if !network {
                issues.push(
                    &addr_path,
                    "address is required (an IP, a DNS name or unix:///path); only entries with a network may omit it",
                );
                return;
            }
        } else if let Some(socket) = addr.strip_prefix(UNIX_PREFIX) {
            unix = true;
            if let Some(why) = unix_path_error(socket) {
                issues.push(&addr_path, why);
            }
            if !self.ports.is_empty() {
                issues.push(
                    field(path, "ports"),
                    "a Unix socket endpoint has no ports; remove ports",
                );
            }
        } else if !is_ip(addr) {
            if !ctx.allow_hostnames {
                issues.push(
                    &addr_path,
                    format!("address {addr:?} is not a valid IP address; with resolution STATIC use IPs (or unix:///path), or switch to resolution DNS"),
                );
            } else if fqdn_error(addr).is_some() {
                issues.push(
                    &addr_path,
                    format!("address {addr:?} is neither an IP address nor a valid DNS name"),
                );
            }
        }
        let ports_path = field(path, "ports");
        for (name, port) in &self.ports {
            let p = format!("{ports_path}.{name}");
            if let Some(known) = ctx.service_ports {
                if !known.contains(name.as_str()) {
                    issues.push(
                        &p,
                        format!("port name {name:?} is not a port of the ServiceEntry; use one of its port names ({})",
                            known.iter().copied().collect::<Vec<_>>().join(", ")),
                    );
                }
            }
            check_port_name(name, &p, issues);
            check_port(*port, &p, issues);
        }
        check_labels(&self.labels, &field(path, "labels"), issues);
        if unix {
            if let Some(known) = ctx.service_ports {
                if known.len() != 1 {
                    issues.push(
                        &addr_path,
                        "a Unix socket endpoint needs a ServiceEntry with exactly one port",
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn errors(v: serde_json::Value) -> Vec<String> {
        let we: WorkloadEntry = match serde_json::from_value(v) {
            Ok(we) => we,
            Err(e) => panic!("does not parse: {e}"),
        };
        let mut issues = Issues::new();
        we.validate("spec", &mut issues);
        issues.errors().iter().map(ToString::to_string).collect()
    }

    #[test]
    fn docs_example_is_valid() {
        let v = json!({
            "serviceAccount": "details-legacy",
            "address": "2.2.2.2",
            "labels": {"app": "details-legacy", "instance-id": "vm1"},
            "ports": {"http": 8080},
            "locality": "us-east1/zone1",
            "network": "vm-network",
            "weight": 2
        });
        assert_eq!(errors(v.clone()), Vec::<String>::new());
        let we: WorkloadEntry = serde_json::from_value(v.clone()).unwrap_or_default();
        assert_eq!(we.weight, Some(2));
        assert_eq!(serde_json::to_value(&we).ok(), Some(v));
        assert!(errors(json!({"address": "vm1.example.com"})).is_empty());
        assert!(errors(json!({"network": "remote"})).is_empty());
    }

    #[test]
    fn rejects_unknown_fields() {
        assert!(serde_json::from_value::<WorkloadEntry>(json!({"adress": "1.1.1.1"})).is_err());
    }

    #[test]
    fn address_and_ports_rules() {
        let e = errors(json!({}));
        assert!(
            e[0].starts_with("spec.address: address is required"),
            "{e:?}"
        );
        let e = errors(json!({"address": "not_a host"}));
        assert!(e[0].contains("neither an IP"), "{e:?}");
        let e = errors(json!({"address": "unix:///sock", "ports": {"http": 80}}));
        assert!(e[0].starts_with("spec.ports:"), "{e:?}");
        let e = errors(json!({"address": "1.1.1.1", "ports": {"HTTP": 0}}));
        assert_eq!(e.len(), 2, "{e:?}");
        assert!(e.iter().all(|m| m.starts_with("spec.ports.HTTP:")));
        let e = errors(json!({"address": "1.1.1.1", "labels": {"app": "a b"}}));
        assert!(e[0].starts_with("spec.labels.app:"), "{e:?}");
    }
}
