//! The Kubernetes kinds the mesh reads: `Service` (ports, selector), the
//! workload kinds (`Pod`, and the pod template of `Deployment`,
//! `StatefulSet`, `DaemonSet`, `ReplicaSet` and `Job`), what the cluster
//! writes about them ([`cluster`]: pod status, `EndpointSlice`, `Node`,
//! `Namespace`), plus port protocol selection ([`protocol`]).
//!
//! Unlike the Istio kinds, these types do **not** deny unknown fields: they
//! are Kubernetes' own objects, validated by the API server, and carry many
//! fields (resources, probes, volumes, ...) the mesh never reads. Only what
//! the registry and the analyzer need is modelled; everything else is
//! ignored on input.

pub mod cluster;
pub mod protocol;
pub mod workload;

use std::fmt;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::config::common::{service_selects, Labels};
use crate::config::validate::{check_port, field, is_dns1123_label, Issues, Validate};

pub use cluster::{EndpointSlice, NamespaceSpec, NodeSpec, PodStatus};
pub use protocol::Protocol;
pub use workload::{
    Container, ContainerPort, ControllerSpec, EffectiveUid, LabelSelector, Pod, PodSecurityContext,
    PodSpec, PodTemplateSpec, SecurityContext, TemplateMeta, UidSource,
};

/// The `spec` of a Kubernetes Service (the parts the mesh uses).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceSpec {
    /// The ports the Service exposes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<ServicePort>,
    /// Pods with all these labels back the Service. Unset or empty selects
    /// no pods (the endpoints are managed by hand).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<Labels>,
    /// `ClusterIP` (default), `NodePort`, `LoadBalancer` or `ExternalName`.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub type_: Option<ServiceType>,
    /// The virtual IP, `None` for a headless Service.
    #[serde(default, rename = "clusterIP", skip_serializing_if = "Option::is_none")]
    pub cluster_ip: Option<String>,
    /// The DNS name an `ExternalName` Service aliases.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_name: Option<String>,
}

/// Kubernetes `ServiceSpec.type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum ServiceType {
    /// A cluster-internal virtual IP.
    #[default]
    ClusterIP,
    /// A cluster IP plus a port on every node.
    NodePort,
    /// A node port plus an external load balancer.
    LoadBalancer,
    /// A DNS alias (CNAME) for `externalName`.
    ExternalName,
}

/// Kubernetes' IP protocol of a port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum IpProtocol {
    /// TCP (the default).
    #[default]
    TCP,
    /// UDP.
    UDP,
    /// SCTP.
    SCTP,
}

impl IpProtocol {
    /// The protocol as Kubernetes writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            IpProtocol::TCP => "TCP",
            IpProtocol::UDP => "UDP",
            IpProtocol::SCTP => "SCTP",
        }
    }
}

/// One port of a Service.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServicePort {
    /// Port name; declares the protocol as `<protocol>[-<suffix>]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The Service port.
    #[serde(default)]
    pub port: u32,
    /// The pod port (number or container port name); defaults to `port`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_port: Option<IntOrString>,
    /// IP protocol; TCP when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<IpProtocol>,
    /// Application protocol; wins over the name for protocol selection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_protocol: Option<String>,
    /// The node port, for NodePort and LoadBalancer Services.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_port: Option<u32>,
}

/// Kubernetes' `IntOrString`, as used by `targetPort`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum IntOrString {
    /// A number.
    Int(i64),
    /// A name (for `targetPort`, a container port name).
    String(String),
}

impl IntOrString {
    /// The value as a port number, when it is a number in 1..=65535.
    pub fn as_number(&self) -> Option<u16> {
        match self {
            IntOrString::Int(i) => u16::try_from(*i).ok().filter(|p| *p != 0),
            IntOrString::String(_) => None,
        }
    }

    /// The value as a name, when it is a string.
    pub fn as_name(&self) -> Option<&str> {
        match self {
            IntOrString::Int(_) => None,
            IntOrString::String(s) => Some(s),
        }
    }
}

impl fmt::Display for IntOrString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IntOrString::Int(i) => write!(f, "{i}"),
            IntOrString::String(s) => f.write_str(s),
        }
    }
}

impl Serialize for IntOrString {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            IntOrString::Int(i) => s.serialize_i64(*i),
            IntOrString::String(v) => s.serialize_str(v),
        }
    }
}

impl<'de> Deserialize<'de> for IntOrString {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = IntOrString;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a port number or a port name")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<IntOrString, E> {
                Ok(IntOrString::Int(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<IntOrString, E> {
                i64::try_from(v).map(IntOrString::Int).map_err(|_| {
                    E::custom(format!("{v} is too large; expected a port number 1-65535"))
                })
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<IntOrString, E> {
                Ok(IntOrString::String(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

impl ServicePort {
    /// The protocol Istio selects for this port (`protocol: UDP`, then
    /// `appProtocol`, then the name, then well-known server-first ports).
    pub fn mesh_protocol(&self) -> Protocol {
        Protocol::for_service_port(
            self.port,
            self.name.as_deref(),
            self.protocol.map(IpProtocol::as_str),
            self.app_protocol.as_deref(),
        )
    }

    /// True when neither the name nor `appProtocol` declares a protocol Istio
    /// knows (and the port is not UDP): Istio must sniff, or treat it as TCP.
    pub fn protocol_undeclared(&self) -> bool {
        self.protocol != Some(IpProtocol::UDP)
            && Protocol::declared(self.name.as_deref(), self.app_protocol.as_deref()).is_unknown()
    }

    /// The pod port traffic goes to: `targetPort` when it is a number, the
    /// named container port of `pod` when it is a name (None when `pod` is
    /// not given or has no such port), and `port` when unset.
    pub fn resolve_target_port(&self, pod: Option<&PodSpec>) -> Option<u32> {
        match &self.target_port {
            None => Some(self.port),
            Some(IntOrString::Int(i)) => u32::try_from(*i).ok(),
            Some(IntOrString::String(name)) => pod.and_then(|p| p.port_by_name(name)),
        }
    }
}

impl ServiceSpec {
    /// True when the Service's selector selects a pod with `labels`. A
    /// Service without a selector selects nothing.
    pub fn selects(&self, labels: &Labels) -> bool {
        self.selector
            .as_ref()
            .is_some_and(|sel| service_selects(sel, labels))
    }

    /// The port with this Service port number.
    pub fn port(&self, number: u32) -> Option<&ServicePort> {
        self.ports.iter().find(|p| p.port == number)
    }

    /// The Service type, `ClusterIP` when unset.
    pub fn service_type(&self) -> ServiceType {
        self.type_.unwrap_or_default()
    }

    /// True for a headless Service (`clusterIP: None`).
    pub fn is_headless(&self) -> bool {
        self.cluster_ip.as_deref() == Some("None")
    }
}

/// Checks an IANA service name as Kubernetes requires for a named port:
/// at most 15 characters of `[a-z0-9-]`, at least one letter, no leading,
/// trailing or doubled `-`.
pub fn is_iana_svc_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 15
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && s.bytes().any(|b| b.is_ascii_lowercase())
        && !s.starts_with('-')
        && !s.ends_with('-')
        && !s.contains("--")
}

impl Validate for ServiceSpec {
    fn validate(&self, path: &str, issues: &mut Issues) {
        let ports = field(path, "ports");
        let mut names: Vec<&str> = Vec::new();
        for (i, p) in self.ports.iter().enumerate() {
            let pp = format!("{ports}[{i}]");
            p.validate(&pp, issues);
            match p.name.as_deref() {
                Some(n) if !n.is_empty() => {
                    if names.contains(&n) {
                        issues.push(
                            field(&pp, "name"),
                            format!("port name {n:?} is used by an earlier port; port names must be unique"),
                        );
                    }
                    names.push(n);
                }
                _ if self.ports.len() > 1 => issues.push(
                    field(&pp, "name"),
                    "a Service with several ports must name each one; use <protocol>[-<suffix>] such as http-web so Istio also knows the protocol",
                ),
                _ => {}
            }
        }
        if self.service_type() == ServiceType::ExternalName
            && self.external_name.as_deref().unwrap_or("").is_empty()
        {
            issues.push(
                field(path, "externalName"),
                "an ExternalName Service needs externalName; set the DNS name it aliases",
            );
        }
    }
}

impl Validate for ServicePort {
    fn validate(&self, path: &str, issues: &mut Issues) {
        check_port(self.port, &field(path, "port"), issues);
        if let Some(n) = self.name.as_deref().filter(|n| !n.is_empty()) {
            if !is_dns1123_label(n) {
                issues.push(
                    field(path, "name"),
                    format!("port name {n:?} is not a valid DNS-1123 label; use lowercase letters, digits and '-'"),
                );
            }
        }
        match &self.target_port {
            Some(IntOrString::Int(i)) if !(1..=65535).contains(i) => issues.push(
                field(path, "targetPort"),
                format!("targetPort {i} is out of range; expected 1-65535 or a container port name"),
            ),
            Some(IntOrString::String(s)) if !is_iana_svc_name(s) => issues.push(
                field(path, "targetPort"),
                format!("targetPort {s:?} is neither a number nor a valid port name; write the number unquoted, or a name of at most 15 lowercase letters, digits and '-'"),
            ),
            _ => {}
        }
        if let Some(np) = self.node_port {
            check_port(np, &field(path, "nodePort"), issues);
        }
    }
}

#[cfg(test)]
mod yaml_tests;

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: serde_json::Value) -> ServiceSpec {
        serde_json::from_value(v).unwrap()
    }

    fn paths(s: &ServiceSpec) -> Vec<String> {
        let mut issues = Issues::new();
        s.validate("spec", &mut issues);
        issues.errors().iter().map(|e| e.path.clone()).collect()
    }

    #[test]
    fn parses_service_and_ignores_unknown_fields() {
        let s = parse(json!({
            "type": "NodePort",
            "clusterIP": "10.0.0.1",
            "sessionAffinity": "None",
            "ipFamilies": ["IPv4"],
            "selector": {"app": "reviews"},
            "ports": [
                {"name": "http", "port": 9080, "targetPort": 9080, "protocol": "TCP", "nodePort": 30080},
                {"name": "database", "port": 3306, "appProtocol": "mysql", "targetPort": "db"},
                {"name": "dns", "port": 53, "protocol": "UDP"},
                {"name": "web", "port": 8080}
            ]
        }));
        assert_eq!(s.service_type(), ServiceType::NodePort);
        assert_eq!(s.ports[0].mesh_protocol(), Protocol::Http);
        assert_eq!(s.ports[1].mesh_protocol(), Protocol::Mysql);
        assert_eq!(
            s.ports[1].target_port,
            Some(IntOrString::String("db".into()))
        );
        assert_eq!(s.ports[2].mesh_protocol(), Protocol::Udp);
        assert!(!s.ports[2].protocol_undeclared());
        assert!(s.ports[3].protocol_undeclared());
        assert!(paths(&s).is_empty(), "{:?}", paths(&s));
        let back: ServiceSpec = serde_json::from_value(serde_json::to_value(&s).unwrap()).unwrap();
        assert_eq!(back, s);
    }

    #[test]
    fn selection_and_lookup() {
        let s = parse(json!({"selector": {"app": "a"}, "ports": [{"port": 80}]}));
        let mut labels = Labels::new();
        labels.insert("app".into(), "a".into());
        labels.insert("version".into(), "v1".into());
        assert!(s.selects(&labels));
        assert!(
            !parse(json!({})).selects(&labels),
            "no selector selects nothing"
        );
        assert_eq!(
            s.port(80).and_then(|p| p.resolve_target_port(None)),
            Some(80)
        );
        assert!(s.port(81).is_none());
        assert!(parse(json!({"clusterIP": "None"})).is_headless());
    }

    #[test]
    fn target_port_forms() {
        let s = parse(json!({"ports": [{"port": 80, "targetPort": 8080}]}));
        assert_eq!(s.ports[0].resolve_target_port(None), Some(8080));
        assert_eq!(
            s.ports[0]
                .target_port
                .as_ref()
                .and_then(IntOrString::as_number),
            Some(8080)
        );
        let named = IntOrString::String("http".into());
        assert_eq!((named.as_number(), named.as_name()), (None, Some("http")));
        assert_eq!(IntOrString::Int(70000).as_number(), None);
        assert!(!parse(json!({"selector": {}})).selects(&Labels::new()));
        assert!(serde_json::from_value::<ServiceSpec>(
            json!({"ports": [{"port": 80, "targetPort": true}]})
        )
        .is_err());
        assert!(serde_json::from_value::<ServiceSpec>(
            json!({"ports": [{"port": 80, "protocol": "ICMP"}]})
        )
        .is_err());
    }

    #[test]
    fn validation_rules() {
        let s = parse(json!({
            "type": "ExternalName",
            "ports": [
                {"name": "http", "port": 0},
                {"name": "http", "port": 80, "targetPort": 70000},
                {"port": 81, "targetPort": "8080"},
                {"name": "Bad_Name", "port": 82, "nodePort": 0}
            ]
        }));
        assert_eq!(
            paths(&s),
            vec![
                "spec.ports[0].port",
                "spec.ports[1].targetPort",
                "spec.ports[1].name",
                "spec.ports[2].targetPort",
                "spec.ports[2].name",
                "spec.ports[3].name",
                "spec.ports[3].nodePort",
                "spec.externalName",
            ]
        );
    }

    #[test]
    fn iana_names() {
        assert!(is_iana_svc_name("http-metrics"));
        assert!(!is_iana_svc_name("8080"));
        assert!(!is_iana_svc_name("a--b"));
        assert!(!is_iana_svc_name("averyveryverylongname"));
    }
}
