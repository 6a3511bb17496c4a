//! What Kubernetes itself writes about where workloads run: a Pod's
//! `status` (its IP and readiness), `EndpointSlice`s (the ready addresses
//! behind a Service, as the endpoint-slice controller publishes them),
//! `Node`s (locality from their topology labels) and `Namespace`s.
//!
//! In a cluster these come from the API server; in a directory of YAML
//! they may be written by hand, and mean the same. As for every
//! Kubernetes kind, unknown fields are accepted and ignored.

use serde::{Deserialize, Serialize};

use crate::config::common::Labels;
use crate::config::validate::{field, Issues, Validate};

use super::IpProtocol;

/// The label on an EndpointSlice naming the Service it belongs to.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// A Node's region label.
pub const REGION_LABEL: &str = "topology.kubernetes.io/region";
/// A Node's zone label.
pub const ZONE_LABEL: &str = "topology.kubernetes.io/zone";
/// Istio's subzone label (on Nodes or Pods).
pub const SUBZONE_LABEL: &str = "topology.istio.io/subzone";
/// Istio's network label (on Pods or Namespaces).
pub const NETWORK_LABEL: &str = "topology.istio.io/network";

/// A Pod's `status`, the parts the mesh uses.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodStatus {
    /// `Pending`, `Running`, `Succeeded`, `Failed` or `Unknown`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    /// The primary pod IP.
    #[serde(default, rename = "podIP", skip_serializing_if = "Option::is_none")]
    pub pod_ip: Option<String>,
    /// Every pod IP (dual stack).
    #[serde(default, rename = "podIPs", skip_serializing_if = "Vec::is_empty")]
    pub pod_ips: Vec<PodIp>,
    /// Conditions; `Ready` is the one the mesh reads.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// One entry of `status.podIPs`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct PodIp {
    /// The address.
    #[serde(default)]
    pub ip: String,
}

/// A status condition.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Condition {
    /// `Ready`, `PodScheduled`, ...
    #[serde(rename = "type", default)]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    #[serde(default)]
    pub status: String,
}

impl PodStatus {
    /// The pod's addresses, primary first.
    pub fn ips(&self) -> Vec<&str> {
        let mut out: Vec<&str> = self.pod_ip.iter().map(String::as_str).collect();
        for ip in &self.pod_ips {
            if !out.contains(&ip.ip.as_str()) && !ip.ip.is_empty() {
                out.push(&ip.ip);
            }
        }
        out.retain(|s| !s.is_empty());
        out
    }

    /// True when the `Ready` condition is `True`.
    pub fn ready(&self) -> bool {
        self.conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True")
    }

    /// True once the pod has finished (`Succeeded` or `Failed`): its IP
    /// may already belong to another pod.
    pub fn terminated(&self) -> bool {
        matches!(self.phase.as_deref(), Some("Succeeded" | "Failed"))
    }
}

/// An `EndpointSlice` (discovery.k8s.io/v1), the parts the mesh uses. Its
/// fields sit at the top level of the object, not under `spec`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EndpointSlice {
    /// `IPv4`, `IPv6` or `FQDN`.
    #[serde(default)]
    pub address_type: String,
    /// The endpoints.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub endpoints: Vec<SliceEndpoint>,
    /// The ports every endpoint of the slice serves, named as the Service
    /// ports they back.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<SlicePort>,
}

/// One endpoint of a slice.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SliceEndpoint {
    /// The endpoint's addresses (the first is the one used).
    #[serde(default)]
    pub addresses: Vec<String>,
    /// Readiness.
    #[serde(default)]
    pub conditions: SliceConditions,
    /// The object behind the endpoint, usually its Pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_ref: Option<ObjectReference>,
    /// The Node it runs on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_name: Option<String>,
    /// Its zone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
}

/// EndpointSlice endpoint conditions. Kubernetes reads an unset `ready`
/// as ready.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct SliceConditions {
    /// Ready to take new connections.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready: Option<bool>,
    /// Serving, though perhaps terminating.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serving: Option<bool>,
    /// Terminating.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub terminating: Option<bool>,
}

/// A reference to another object.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ObjectReference {
    /// Its kind (`Pod`).
    #[serde(default)]
    pub kind: String,
    /// Its name.
    #[serde(default)]
    pub name: String,
    /// Its namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// One port of a slice.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SlicePort {
    /// The Service port name it backs (empty for a single unnamed port).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The port the endpoints listen on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u32>,
    /// IP protocol.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<IpProtocol>,
    /// Application protocol.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_protocol: Option<String>,
}

impl SliceEndpoint {
    /// True when the endpoint takes new traffic: ready, or with readiness
    /// unset.
    pub fn ready(&self) -> bool {
        self.conditions.ready.unwrap_or(true)
    }
}

impl Validate for EndpointSlice {
    fn validate(&self, path: &str, issues: &mut Issues) {
        if !matches!(self.address_type.as_str(), "IPv4" | "IPv6" | "FQDN") {
            issues.push(
                field(path, "addressType"),
                format!(
                    "addressType {:?} is not one of IPv4, IPv6 or FQDN",
                    self.address_type
                ),
            );
        }
        for (i, p) in self.ports.iter().enumerate() {
            if let Some(n) = p.port {
                if n == 0 || n > 65535 {
                    issues.push(
                        format!("{}[{i}].port", field(path, "ports")),
                        format!("port {n} is out of range; use 1-65535"),
                    );
                }
            }
        }
    }
}

/// A `Node` (the mesh reads only its labels, in metadata).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct NodeSpec {}

impl Validate for NodeSpec {
    fn validate(&self, _path: &str, _issues: &mut Issues) {}
}

/// The locality `region/zone/subzone` a Node's labels give, if it has a
/// region or zone.
pub fn node_locality(labels: &Labels) -> Option<String> {
    let get = |k: &str| labels.get(k).map(String::as_str).unwrap_or("");
    let (region, zone, subzone) = (get(REGION_LABEL), get(ZONE_LABEL), get(SUBZONE_LABEL));
    if region.is_empty() && zone.is_empty() {
        return None;
    }
    let mut out = format!("{region}/{zone}");
    if !subzone.is_empty() {
        out.push('/');
        out.push_str(subzone);
    }
    Some(out)
}

/// A `Namespace` (the mesh reads only its labels, in metadata).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct NamespaceSpec {}

impl Validate for NamespaceSpec {
    fn validate(&self, _path: &str, _issues: &mut Issues) {}
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn locality_from_node_labels() {
        let mut l = Labels::new();
        assert_eq!(node_locality(&l), None);
        l.insert(REGION_LABEL.into(), "us-east1".into());
        l.insert(ZONE_LABEL.into(), "us-east1-b".into());
        assert_eq!(node_locality(&l).as_deref(), Some("us-east1/us-east1-b"));
        l.insert(SUBZONE_LABEL.into(), "rack7".into());
        assert_eq!(
            node_locality(&l).as_deref(),
            Some("us-east1/us-east1-b/rack7")
        );
    }

    #[test]
    fn pod_status_ips_and_readiness() {
        let s: PodStatus = serde_json::from_value(serde_json::json!({
            "phase": "Running",
            "podIP": "10.0.0.5",
            "podIPs": [{"ip": "10.0.0.5"}, {"ip": "fd00::5"}],
            "conditions": [{"type": "Ready", "status": "True"}]
        }))
        .unwrap();
        assert_eq!(s.ips(), vec!["10.0.0.5", "fd00::5"]);
        assert!(s.ready());
        assert!(!s.terminated());
        assert!(!PodStatus::default().ready());
    }

    #[test]
    fn unset_readiness_means_ready() {
        let e = SliceEndpoint::default();
        assert!(e.ready());
        let e = SliceEndpoint {
            conditions: SliceConditions {
                ready: Some(false),
                ..Default::default()
            },
            ..Default::default()
        };
        assert!(!e.ready());
    }
}
