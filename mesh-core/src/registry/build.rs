//! Building the registry from resources.
//!
//! Kubernetes Services become `<name>.<ns>.svc.<suffix>` with ports whose
//! protocol comes from `appProtocol` or the port name prefix; their
//! endpoints are the ready addresses of their EndpointSlices
//! ([`super::slices`]) plus the WorkloadEntries in the namespace that the
//! selector matches (as Istio does for VM workloads). ServiceEntries become one
//! service per host, with inline endpoints or the WorkloadEntries their
//! `workloadSelector` picks.

use crate::config::common::{service_selects, Labels};
use crate::config::kube::Protocol;
use crate::config::networking::service_entry::{Location, Resolution as SeResolution};
use crate::config::networking::workload_entry::WorkloadEntry;
use crate::config::{Kind, MeshConfig, Resource, Spec};
use crate::host::{fqdn, DEFAULT_DOMAIN_SUFFIX};

use super::{
    Endpoint, ExportTo, Registry, Resolution, Service, ServicePort, ServiceSource, TlsMode,
    Workload,
};

use super::slices::{ClusterIndex, TLS_MODE_LABEL};

fn endpoint_from(
    we: &WorkloadEntry,
    namespace: &str,
    source: String,
    default_tls: TlsMode,
) -> Option<Endpoint> {
    let address = we.address.clone().filter(|a| !a.is_empty())?;
    let tls_mode = match we.labels.get(TLS_MODE_LABEL).map(String::as_str) {
        Some("istio") => TlsMode::Istio,
        Some(_) => TlsMode::Disabled,
        None => default_tls,
    };
    Some(Endpoint {
        address,
        ports: we
            .ports
            .iter()
            .filter_map(|(k, v)| u16::try_from(*v).ok().map(|p| (k.clone(), p)))
            .collect(),
        labels: we.labels.clone(),
        locality: we.locality.clone().filter(|l| !l.is_empty()),
        weight: we.weight.filter(|w| *w > 0).unwrap_or(1),
        service_account: we.service_account.clone().filter(|s| !s.is_empty()),
        namespace: namespace.to_string(),
        network: we.network.clone().filter(|n| !n.is_empty()),
        tls_mode,
        source,
    })
}

/// Builds the registry.
pub fn build(resources: &[Resource], mesh: &MeshConfig) -> Registry {
    let suffix = DEFAULT_DOMAIN_SUFFIX;
    let service_export_default = &mesh.default_service_export_to;
    let workload_entries: Vec<(&Resource, &WorkloadEntry)> = resources
        .iter()
        .filter_map(|r| r.workload_entry().map(|we| (r, we)))
        .collect();
    let selected_entries = |namespace: &str, selector: &Labels| -> Vec<Endpoint> {
        workload_entries
            .iter()
            .filter(|(r, we)| {
                r.meta.namespace == namespace && service_selects(selector, &we.labels)
            })
            .filter_map(|(r, we)| endpoint_from(we, namespace, r.key(), TlsMode::Istio))
            .collect()
    };

    let cluster = ClusterIndex::new(resources);

    let mut registry = Registry::default();
    for r in resources {
        let ns = r.meta.namespace.as_str();
        match &r.spec {
            Spec::Service(spec) => {
                let ports = spec
                    .ports
                    .iter()
                    .filter_map(|p| {
                        let number = u16::try_from(p.port).ok()?;
                        let protocol =
                            Protocol::declared(p.name.as_deref(), p.app_protocol.as_deref());
                        Some(ServicePort {
                            name: p.name.clone().unwrap_or_default(),
                            number,
                            target_port: p.target_port.as_ref().and_then(|t| t.as_number()),
                            target_port_name: p
                                .target_port
                                .as_ref()
                                .and_then(|t| t.as_name().map(str::to_string)),
                            protocol,
                            protocol_unknown: protocol == Protocol::Unknown,
                        })
                    })
                    .collect();
                let selector = spec.selector.clone().filter(|s| !s.is_empty());
                let mut endpoints = cluster.endpoints(ns, &r.meta.name);
                endpoints.extend(
                    selector
                        .as_ref()
                        .map(|s| selected_entries(ns, s))
                        .unwrap_or_default(),
                );
                registry.services.push(Service {
                    hostname: format!("{}.{ns}.svc.{suffix}", r.meta.name),
                    namespace: ns.to_string(),
                    source: ServiceSource::Kubernetes(r.ns_name()),
                    ports,
                    selector,
                    mesh_external: false,
                    resolution: Resolution::Static,
                    export_to: ExportTo::from_annotation(
                        r.meta.annotations.get("networking.istio.io/exportTo"),
                        ns,
                        service_export_default,
                    ),
                    addresses: spec
                        .cluster_ip
                        .iter()
                        .filter(|ip| !ip.is_empty() && ip.as_str() != "None")
                        .cloned()
                        .collect(),
                    endpoints,
                });
            }
            Spec::ServiceEntry(se) => {
                let mesh_external = se.location == Some(Location::MeshExternal);
                let resolution = match se.resolution {
                    Some(SeResolution::Dns) => Resolution::Dns,
                    Some(SeResolution::DnsRoundRobin) => Resolution::DnsRoundRobin,
                    Some(SeResolution::Static) => Resolution::Static,
                    Some(SeResolution::None) | None => Resolution::Passthrough,
                };
                let default_tls = if mesh_external {
                    TlsMode::Disabled
                } else {
                    TlsMode::Istio
                };
                let endpoints: Vec<Endpoint> = match &se.workload_selector {
                    Some(sel) => selected_entries(ns, &sel.labels),
                    None => se
                        .endpoints
                        .iter()
                        .filter_map(|we| endpoint_from(we, ns, r.key(), default_tls))
                        .collect(),
                };
                let ports: Vec<ServicePort> = se
                    .ports
                    .iter()
                    .filter_map(|p| {
                        let number = u16::try_from(p.number).ok()?;
                        let protocol = p
                            .protocol
                            .as_deref()
                            .map(Protocol::from_istio)
                            .unwrap_or(Protocol::Unknown);
                        Some(ServicePort {
                            name: p.name.clone(),
                            number,
                            target_port: p.target_port.and_then(|t| u16::try_from(t).ok()),
                            target_port_name: None,
                            protocol,
                            protocol_unknown: protocol == Protocol::Unknown,
                        })
                    })
                    .collect();
                for host in &se.hosts {
                    registry.services.push(Service {
                        hostname: fqdn(host, ns, suffix),
                        namespace: ns.to_string(),
                        source: ServiceSource::ServiceEntry(r.ns_name()),
                        ports: ports.clone(),
                        selector: se.workload_selector.as_ref().map(|s| s.labels.clone()),
                        mesh_external,
                        resolution,
                        export_to: ExportTo::parse(&se.export_to, ns, service_export_default),
                        addresses: se.addresses.clone(),
                        endpoints: endpoints.clone(),
                    });
                }
            }
            Spec::WorkloadEntry(we) => registry.workloads.push(Workload {
                kind: Kind::WorkloadEntry,
                name: r.meta.name.clone(),
                namespace: ns.to_string(),
                labels: we.labels.clone(),
                service_account: we
                    .service_account
                    .clone()
                    .unwrap_or_else(|| "default".to_string()),
                address: we.address.clone(),
            }),
            Spec::Pod(pod) => registry.workloads.push(Workload {
                kind: r.kind,
                name: r.meta.name.clone(),
                namespace: ns.to_string(),
                labels: r.meta.labels.clone(),
                service_account: pod.spec.service_account().to_string(),
                address: ClusterIndex::pod_address(pod),
            }),
            Spec::Controller(c) => registry.workloads.push(Workload {
                kind: r.kind,
                name: r.meta.name.clone(),
                namespace: ns.to_string(),
                labels: c.template_labels().clone(),
                service_account: c.template.spec.service_account().to_string(),
                address: None,
            }),
            _ => {}
        }
    }
    registry
        .services
        .sort_by(|a, b| (&a.hostname, &a.namespace).cmp(&(&b.hostname, &b.namespace)));
    registry
}
