//! Endpoints of Kubernetes Services from their EndpointSlices, as istiod
//! builds them: the ready addresses of the slices labelled with the
//! Service's name, each enriched from its Pod (labels, service account,
//! network) and its Pod's Node (locality).
//!
//! Not-ready endpoints are left out rather than sent as unhealthy: a
//! proxyless client treats both the same, and the smaller EDS is cheaper
//! to push while pods churn.

use std::collections::{BTreeMap, HashMap};

use crate::config::kube::cluster::{
    node_locality, SliceEndpoint, NETWORK_LABEL, SERVICE_NAME_LABEL, SUBZONE_LABEL,
};
use crate::config::kube::{EndpointSlice, Pod};
use crate::config::{Resource, Spec};

use super::{Endpoint, TlsMode};

/// The label Istio puts on in-mesh endpoints.
pub(super) const TLS_MODE_LABEL: &str = "security.istio.io/tlsMode";

/// What the slices of one config know, indexed for building endpoints.
#[derive(Default)]
pub(super) struct ClusterIndex<'a> {
    /// Slices by (namespace, service name).
    slices: HashMap<(&'a str, &'a str), Vec<(&'a Resource, &'a EndpointSlice)>>,
    /// Pods by (namespace, name).
    pods: HashMap<(&'a str, &'a str), (&'a Resource, &'a Pod)>,
    /// Pods by IP, for slice endpoints without a target reference.
    pods_by_ip: HashMap<&'a str, (&'a Resource, &'a Pod)>,
    /// Node labels by node name.
    nodes: HashMap<&'a str, &'a Resource>,
}

impl<'a> ClusterIndex<'a> {
    pub(super) fn new(resources: &'a [Resource]) -> Self {
        let mut ix = ClusterIndex::default();
        for r in resources {
            match &r.spec {
                Spec::EndpointSlice(s) => {
                    if let Some(svc) = r.meta.labels.get(SERVICE_NAME_LABEL) {
                        ix.slices
                            .entry((r.meta.namespace.as_str(), svc.as_str()))
                            .or_default()
                            .push((r, s));
                    }
                }
                Spec::Pod(p) => {
                    ix.pods
                        .insert((r.meta.namespace.as_str(), r.meta.name.as_str()), (r, p));
                    if !p.status.terminated() {
                        for ip in p.status.ips() {
                            ix.pods_by_ip.insert(ip, (r, p));
                        }
                    }
                }
                Spec::Node(_) => {
                    ix.nodes.insert(r.meta.name.as_str(), r);
                }
                _ => {}
            }
        }
        ix
    }

    /// The ready endpoints of Service `namespace/name`'s slices, one per
    /// address (an address in two slices, as during a slice rebalance,
    /// counts once).
    pub(super) fn endpoints(&self, namespace: &str, name: &str) -> Vec<Endpoint> {
        let Some(slices) = self.slices.get(&(namespace, name)) else {
            return Vec::new();
        };
        let mut out: BTreeMap<String, Endpoint> = BTreeMap::new();
        for (r, slice) in slices {
            if slice.address_type == "FQDN" {
                // Istio ignores FQDN slices too.
                continue;
            }
            let ports: BTreeMap<String, u16> = slice
                .ports
                .iter()
                .filter_map(|p| {
                    let n = u16::try_from(p.port?).ok().filter(|n| *n != 0)?;
                    Some((p.name.clone().unwrap_or_default(), n))
                })
                .collect();
            for e in slice.endpoints.iter().filter(|e| e.ready()) {
                let Some(address) = e.addresses.first().filter(|a| !a.is_empty()) else {
                    continue;
                };
                let endpoint = self.endpoint(namespace, r, e, address, &ports);
                out.entry(address.clone()).or_insert(endpoint);
            }
        }
        out.into_values().collect()
    }

    fn endpoint(
        &self,
        namespace: &str,
        slice: &Resource,
        e: &SliceEndpoint,
        address: &str,
        ports: &BTreeMap<String, u16>,
    ) -> Endpoint {
        let pod = match &e.target_ref {
            Some(t) if t.kind == "Pod" => {
                let ns = t.namespace.as_deref().unwrap_or(namespace);
                self.pods.get(&(ns, t.name.as_str())).copied()
            }
            _ => self.pods_by_ip.get(address).copied(),
        };
        let labels = pod.map(|(r, _)| r.meta.labels.clone()).unwrap_or_default();
        let node = e
            .node_name
            .as_deref()
            .or_else(|| pod.and_then(|(_, p)| p.spec.node_name.as_deref()));
        let mut locality = node
            .and_then(|n| self.nodes.get(n))
            .and_then(|n| node_locality(&n.meta.labels));
        if locality.is_none() {
            locality = e.zone.as_ref().map(|z| format!("/{z}"));
        }
        if let (Some(l), Some(sub)) = (locality.as_mut(), labels.get(SUBZONE_LABEL)) {
            if l.matches('/').count() == 1 {
                l.push('/');
                l.push_str(sub);
            }
        }
        let tls_mode = match labels.get(TLS_MODE_LABEL).map(String::as_str) {
            Some("istio") | None => TlsMode::Istio,
            Some(_) => TlsMode::Disabled,
        };
        Endpoint {
            address: address.to_string(),
            ports: ports.clone(),
            network: labels.get(NETWORK_LABEL).cloned(),
            labels,
            locality,
            weight: 1,
            service_account: pod.map(|(_, p)| p.spec.service_account().to_string()),
            namespace: namespace.to_string(),
            tls_mode,
            source: slice.key(),
        }
    }

    /// The address of a Pod, when it has one and has not finished.
    pub(super) fn pod_address(pod: &Pod) -> Option<String> {
        if pod.status.terminated() {
            return None;
        }
        pod.status.ips().first().map(|s| s.to_string())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use crate::config::load::load_str;
    use crate::config::MeshConfig;
    use crate::registry::{build, TlsMode};

    const CLUSTER: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: bookinfo}
spec:
  selector: {app: reviews}
  ports: [{name: http, port: 9080, targetPort: 9080}]
---
apiVersion: v1
kind: Node
metadata:
  name: node-a
  labels: {topology.kubernetes.io/region: eu, topology.kubernetes.io/zone: eu-1}
---
apiVersion: v1
kind: Pod
metadata: {name: reviews-v1-abc, namespace: bookinfo, labels: {app: reviews, version: v1}}
spec: {serviceAccountName: bookinfo-reviews, nodeName: node-a, containers: [{name: app}]}
status:
  phase: Running
  podIP: 10.244.0.5
  conditions: [{type: Ready, status: "True"}]
---
apiVersion: v1
kind: Pod
metadata: {name: reviews-v2-def, namespace: bookinfo, labels: {app: reviews, version: v2, security.istio.io/tlsMode: disabled}}
spec: {containers: [{name: app}]}
status: {phase: Running, podIP: 10.244.0.6}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: reviews-x1, namespace: bookinfo, labels: {kubernetes.io/service-name: reviews}}
addressType: IPv4
ports: [{name: http, port: 9081, protocol: TCP}]
endpoints:
- addresses: [10.244.0.5]
  conditions: {ready: true}
  targetRef: {kind: Pod, name: reviews-v1-abc, namespace: bookinfo}
- addresses: [10.244.0.6]
  zone: eu-2
- addresses: [10.244.0.7]
  conditions: {ready: false}
"#;

    #[test]
    fn service_endpoints_come_from_ready_slice_addresses_enriched_from_pods() {
        let loaded = load_str(CLUSTER, "cluster.yaml");
        assert!(loaded.errors.is_empty(), "{:?}", loaded.errors);
        let reg = build(&loaded.resources, &MeshConfig::default());
        let svc = reg
            .services_named("reviews.bookinfo.svc.cluster.local")
            .next()
            .unwrap();
        let addrs: Vec<&str> = svc.endpoints.iter().map(|e| e.address.as_str()).collect();
        assert_eq!(
            addrs,
            ["10.244.0.5", "10.244.0.6"],
            "not-ready 10.244.0.7 is left out"
        );
        let v1 = &svc.endpoints[0];
        assert_eq!(v1.labels.get("version").map(String::as_str), Some("v1"));
        assert_eq!(v1.service_account.as_deref(), Some("bookinfo-reviews"));
        assert_eq!(v1.locality.as_deref(), Some("eu/eu-1"));
        assert_eq!(v1.port_for(&svc.ports[0]), 9081, "the slice's port wins");
        assert_eq!(v1.tls_mode, TlsMode::Istio);
        // Found by IP (no targetRef); zone from the slice.
        let v2 = &svc.endpoints[1];
        assert_eq!(v2.labels.get("version").map(String::as_str), Some("v2"));
        assert_eq!(v2.service_account.as_deref(), Some("default"));
        assert_eq!(v2.locality.as_deref(), Some("/eu-2"));
        assert_eq!(v2.tls_mode, TlsMode::Disabled);
        let pod = reg
            .workloads
            .iter()
            .find(|w| w.name == "reviews-v1-abc")
            .unwrap();
        assert_eq!(pod.address.as_deref(), Some("10.244.0.5"));
    }

    #[test]
    fn slice_field_errors_name_top_level_paths() {
        let bad = r#"
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: s, labels: {kubernetes.io/service-name: x}}
addressType: IPv5
endpoints: [{addresses: 5}]
"#;
        let loaded = load_str(bad, "bad.yaml");
        let e = &loaded.errors[0];
        assert_eq!(e.field.as_deref(), Some("endpoints[0].addresses"), "{e}");
    }
}
