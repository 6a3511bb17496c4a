//! The service registry: every service the mesh knows (Kubernetes Services
//! and ServiceEntries), their ports with protocols, their endpoints
//! (WorkloadEntries, inline ServiceEntry endpoints) and the workloads that
//! exist (Pods, Deployments, ... and WorkloadEntries).
//!
//! It is built from resources alone, so the same files give the same
//! registry in `meshctl`, in local SDK mode and in `meshd`. It does no
//! per-client filtering; visibility (`exportTo`, Sidecar) belongs to
//! compilation.

mod build;
mod slices;
mod visibility;

use std::collections::BTreeMap;

use serde::Serialize;

pub use build::build;
pub use visibility::ExportTo;

use crate::config::common::{service_selects, Labels};
use crate::config::kube::Protocol;
use crate::config::Kind;

/// Where a service was declared.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", content = "resource")]
pub enum ServiceSource {
    /// A Kubernetes Service (`namespace/name`).
    Kubernetes(String),
    /// A ServiceEntry (`namespace/name`).
    ServiceEntry(String),
}

/// How clients find a service's endpoints (ServiceEntry `resolution`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Resolution {
    /// Endpoints are known (Kubernetes, STATIC, WorkloadEntries).
    Static,
    /// Resolve the host names via DNS and use every address (DNS; Envoy's
    /// STRICT_DNS).
    Dns,
    /// Resolve the host name via DNS and open new connections to the first
    /// address only (DNS_ROUND_ROBIN; Envoy's LOGICAL_DNS).
    DnsRoundRobin,
    /// Forward to the original destination address (NONE).
    Passthrough,
}

impl Resolution {
    /// True for the two DNS resolutions, whose host names clients look up
    /// again and again.
    pub fn is_dns(self) -> bool {
        matches!(self, Self::Dns | Self::DnsRoundRobin)
    }
}

/// One port of a service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServicePort {
    /// Port name (may be empty for a single-port Kubernetes Service).
    pub name: String,
    /// The port clients call.
    pub number: u16,
    /// The port endpoints listen on, when different.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_port: Option<u16>,
    /// The named target port (Kubernetes `targetPort: http-web`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_port_name: Option<String>,
    /// Declared protocol.
    pub protocol: Protocol,
    /// True when no protocol was declared (Istio then sniffs; we treat it as TCP).
    pub protocol_unknown: bool,
}

/// Whether an endpoint takes Istio mTLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TlsMode {
    /// The endpoint is in the mesh: auto-mTLS sends ISTIO_MUTUAL.
    Istio,
    /// The endpoint is outside the mesh: plaintext unless a DestinationRule says otherwise.
    Disabled,
}

/// One endpoint of a service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Endpoint {
    /// IP address or host name.
    pub address: String,
    /// Ports by service port name (`ports` of a WorkloadEntry).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub ports: BTreeMap<String, u16>,
    /// Labels, used by subsets.
    pub labels: Labels,
    /// `region/zone/subzone`, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub locality: Option<String>,
    /// Load-balancing weight (default 1).
    pub weight: u32,
    /// Service account the endpoint runs as.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service_account: Option<String>,
    /// Namespace of the endpoint.
    pub namespace: String,
    /// Network of the endpoint, when set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
    /// Whether it takes Istio mTLS.
    pub tls_mode: TlsMode,
    /// The resource that declared it (`Kind/ns/name`).
    pub source: String,
}

impl Endpoint {
    /// The port this endpoint listens on for `port` of its service: the
    /// endpoint's own mapping by port name, else the target port, else the
    /// service port itself.
    pub fn port_for(&self, port: &ServicePort) -> u16 {
        if let Some(p) = self.ports.get(&port.name) {
            return *p;
        }
        if let Some(name) = &port.target_port_name {
            if let Some(p) = self.ports.get(name) {
                return *p;
            }
        }
        port.target_port.unwrap_or(port.number)
    }

    /// The SPIFFE-style identity `ns/<ns>/sa/<sa>` of the endpoint, when known.
    pub fn identity(&self, trust_domain: &str) -> Option<String> {
        self.service_account
            .as_ref()
            .map(|sa| format!("spiffe://{trust_domain}/ns/{}/sa/{sa}", self.namespace))
    }
}

/// One service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Service {
    /// Fully qualified host name.
    pub hostname: String,
    /// Namespace of the declaring resource.
    pub namespace: String,
    /// Where it was declared.
    pub source: ServiceSource,
    /// Ports.
    pub ports: Vec<ServicePort>,
    /// Workload selector (Kubernetes selector or ServiceEntry workloadSelector).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub selector: Option<Labels>,
    /// True for MESH_EXTERNAL ServiceEntries.
    pub mesh_external: bool,
    /// How endpoints are found.
    pub resolution: Resolution,
    /// Which namespaces may see it.
    pub export_to: ExportTo,
    /// Virtual addresses (ServiceEntry `addresses`, Service clusterIP).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<String>,
    /// Endpoints.
    pub endpoints: Vec<Endpoint>,
}

impl Service {
    /// True when the service's selector selects a workload with these
    /// labels in `namespace` (no selector selects nothing).
    pub fn selects(&self, namespace: &str, labels: &Labels) -> bool {
        self.namespace == namespace
            && self
                .selector
                .as_ref()
                .is_some_and(|sel| service_selects(sel, labels))
    }

    /// The port with this number.
    pub fn port(&self, number: u16) -> Option<&ServicePort> {
        self.ports.iter().find(|p| p.number == number)
    }
}

/// A workload that exists in the config: a Pod, a controller's pod
/// template, or a WorkloadEntry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Workload {
    /// The kind that declared it.
    pub kind: Kind,
    /// Name of the declaring resource.
    pub name: String,
    /// Namespace.
    pub namespace: String,
    /// Pod labels (the template's for controllers).
    pub labels: Labels,
    /// Service account (Kubernetes default `default`).
    pub service_account: String,
    /// Address: a WorkloadEntry's, or a running Pod's IP.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
}

/// The registry.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Registry {
    /// Services, sorted by host name then namespace.
    pub services: Vec<Service>,
    /// Workloads, in load order.
    pub workloads: Vec<Workload>,
}

impl Registry {
    /// Services with exactly this host name (several namespaces may declare
    /// the same external host).
    pub fn services_named<'a>(&'a self, host: &'a str) -> impl Iterator<Item = &'a Service> + 'a {
        self.services
            .iter()
            .filter(move |s| s.hostname.eq_ignore_ascii_case(host))
    }

    /// The workload ports of the services a workload serves: those whose
    /// selector selects it, and those without a selector whose endpoint
    /// is at one of its `addresses` (a ServiceEntry's inline endpoint, as
    /// istiod matches a proxy by its IP). Each Service port as the
    /// workload port it targets (the endpoint's port for that name, else
    /// `targetPort`, else the port), with its protocol.
    pub fn served_ports<'a>(
        &'a self,
        namespace: &str,
        labels: &Labels,
        addresses: &[String],
    ) -> Vec<(u16, &'a ServicePort)> {
        let mut out = Vec::new();
        for s in self
            .services
            .iter()
            .filter(|s| s.selects(namespace, labels))
        {
            out.extend(
                s.ports
                    .iter()
                    .map(|p| (p.target_port.unwrap_or(p.number), p)),
            );
        }
        if addresses.is_empty() {
            return out;
        }
        for s in self.services.iter().filter(|s| s.selector.is_none()) {
            for e in s
                .endpoints
                .iter()
                .filter(|e| addresses.contains(&e.address))
            {
                out.extend(s.ports.iter().map(|p| {
                    let port = e
                        .ports
                        .get(&p.name)
                        .copied()
                        .unwrap_or(p.target_port.unwrap_or(p.number));
                    (port, p)
                }));
            }
        }
        out
    }

    /// Services whose selector selects a workload with these labels in `namespace`.
    pub fn services_of_workload<'a>(
        &'a self,
        namespace: &'a str,
        labels: &'a Labels,
    ) -> impl Iterator<Item = &'a Service> + 'a {
        self.services
            .iter()
            .filter(move |s| s.selects(namespace, labels))
    }
}
