//! Clusters for one service port: the default cluster and one per subset of
//! the DestinationRule that applies, each with its merged traffic policy and
//! its endpoints.
//!
//! DestinationRule lookup follows Istio: the client's namespace first, then
//! the service's namespace, then the root namespace; within a namespace the
//! most specific host wins (exact over wildcard, longer wildcard first).
//! Policies merge field by field: top level, then the top level's
//! `portLevelSettings` for the port, then the subset's policy, then the
//! subset's `portLevelSettings`.

use crate::config::common::selector_matches;
use crate::config::networking::destination_rule::{DestinationRule, TrafficPolicy};
use crate::config::{Kind, Resource};
use crate::host::{fqdn, host_matches};
use crate::model::{cluster_name, Client, Cluster, ClusterEndpoint, ClusterPolicy, DnsRefresh};
use crate::registry::{Service, ServicePort};

use super::visibility::Scope;
use super::Compiler;
use std::collections::HashMap;

/// The DestinationRules visible to one client, indexed by namespace and
/// host: built once per compile, so each of a thousand services finds its
/// rule by lookup instead of scanning every resource.
pub(crate) struct DrIndex<'a> {
    by_ns: HashMap<&'a str, NsRules<'a>>,
    root: &'a str,
}

#[derive(Default)]
struct NsRules<'a> {
    /// Lowercase exact host -> the first rule for it in load order.
    exact: HashMap<String, &'a Resource>,
    /// Wildcard hosts, in load order.
    wildcards: Vec<(String, &'a Resource)>,
}

impl<'a> DrIndex<'a> {
    /// Indexes the rules `scope` (one client's) sees.
    pub(crate) fn new(compiler: &'a Compiler, scope: &Scope<'_>) -> Self {
        let suffix = &compiler.settings().domain_suffix;
        let mut by_ns: HashMap<&'a str, NsRules<'a>> = HashMap::new();
        for r in compiler
            .of_kind(Kind::DestinationRule)
            .filter(|r| scope.destination_rule_visible(r))
        {
            let Some(dr) = r.destination_rule() else {
                continue;
            };
            let h = fqdn(&dr.host, &r.meta.namespace, suffix);
            let rules = by_ns.entry(r.meta.namespace.as_str()).or_default();
            if h.starts_with('*') {
                rules.wildcards.push((h, r));
            } else {
                rules.exact.entry(h).or_insert(r);
            }
        }
        Self {
            by_ns,
            root: &compiler.settings().root_namespace,
        }
    }

    /// The DestinationRule that applies to `host` (declared in
    /// `service_ns`) for the client: its own namespace first, then the
    /// service's, then the root namespace; within one, an exact host over
    /// wildcards, a longer wildcard over a shorter one, the first loaded
    /// among equals.
    pub(crate) fn find(
        &self,
        client: &Client,
        host: &str,
        service_ns: &str,
    ) -> Option<&'a Resource> {
        let lower = host.to_ascii_lowercase();
        let mut namespaces = vec![client.namespace.as_str(), service_ns, self.root];
        namespaces.dedup();
        for ns in namespaces {
            let Some(rules) = self.by_ns.get(ns) else {
                continue;
            };
            if let Some(r) = rules.exact.get(&lower) {
                return Some(r);
            }
            let best = rules
                .wildcards
                .iter()
                .filter(|(h, _)| host_matches(h, host))
                .map(|(h, r)| (specificity(h), *r))
                // max_by_key keeps the last of equals; this keeps the first
                // (oldest in load order).
                .rev_max();
            if best.is_some() {
                return best;
            }
        }
        None
    }
}

/// Exact hosts beat wildcards; longer wildcards beat shorter ones.
fn specificity(host: &str) -> (bool, usize) {
    (!host.starts_with('*'), host.len())
}

trait RevMax<'a> {
    fn rev_max(self) -> Option<&'a Resource>;
}

impl<'a, I: Iterator<Item = ((bool, usize), &'a Resource)>> RevMax<'a> for I {
    fn rev_max(self) -> Option<&'a Resource> {
        let mut best: Option<((bool, usize), &'a Resource)> = None;
        for (k, r) in self {
            if best.as_ref().is_none_or(|(bk, _)| k > *bk) {
                best = Some((k, r));
            }
        }
        best.map(|(_, r)| r)
    }
}

/// Applies the set fields of `over` on top of `base`.
fn overlay(base: &mut ClusterPolicy, over: &TrafficPolicy, port: u16) {
    if over.load_balancer.is_some() {
        base.load_balancer.clone_from(&over.load_balancer);
    }
    if over.connection_pool.is_some() {
        base.connection_pool.clone_from(&over.connection_pool);
    }
    if over.outlier_detection.is_some() {
        base.outlier_detection.clone_from(&over.outlier_detection);
    }
    if over.tls.is_some() {
        base.tls.clone_from(&over.tls);
    }
    for pl in &over.port_level_settings {
        if pl
            .port
            .as_ref()
            .is_some_and(|p| p.number == u32::from(port))
        {
            if pl.load_balancer.is_some() {
                base.load_balancer.clone_from(&pl.load_balancer);
            }
            if pl.connection_pool.is_some() {
                base.connection_pool.clone_from(&pl.connection_pool);
            }
            if pl.outlier_detection.is_some() {
                base.outlier_detection.clone_from(&pl.outlier_detection);
            }
            if pl.tls.is_some() {
                base.tls.clone_from(&pl.tls);
            }
        }
    }
}

/// The clusters of one service port.
pub(super) fn build(
    compiler: &Compiler,
    drs: &DrIndex<'_>,
    client: &Client,
    svc: &Service,
    port: &ServicePort,
) -> Vec<Cluster> {
    let dr_res = drs.find(client, &svc.hostname, &svc.namespace);
    let dr: Option<&DestinationRule> = dr_res.and_then(Resource::destination_rule);
    let mut base = ClusterPolicy {
        destination_rule: dr_res.map(Resource::ns_name),
        ..ClusterPolicy::default()
    };
    if let Some(tp) = dr.and_then(|d| d.traffic_policy.as_ref()) {
        overlay(&mut base, tp, port.number);
    }
    let trust_domain = &compiler.settings().trust_domain;
    let endpoints = |filter: Option<&crate::config::common::Labels>| -> Vec<ClusterEndpoint> {
        svc.endpoints
            .iter()
            .filter(|e| filter.is_none_or(|l| selector_matches(l, &e.labels)))
            .map(|e| ClusterEndpoint {
                address: e.address.clone(),
                port: e.port_for(port),
                labels: e.labels.clone(),
                locality: e.locality.clone(),
                weight: e.weight,
                tls_mode: e.tls_mode,
                identity: e.identity(trust_domain),
            })
            .collect()
    };
    // Istio sends DNS clusters `respect_dns_ttl: true` and MeshConfig's
    // `dnsRefreshRate`.
    let dns = svc.resolution.is_dns().then(|| DnsRefresh {
        rate: compiler.mesh().dns_refresh_rate,
        respect_ttl: true,
    });
    let mut out = vec![Cluster {
        name: cluster_name(&svc.hostname, port.number, None),
        host: svc.hostname.clone(),
        port: port.number,
        subset: None,
        protocol: port.protocol,
        resolution: svc.resolution,
        policy: base.clone(),
        endpoints: endpoints(None),
        dns,
    }];
    for subset in dr.map(|d| d.subsets.as_slice()).unwrap_or_default() {
        let mut policy = base.clone();
        if let Some(tp) = &subset.traffic_policy {
            overlay(&mut policy, tp, port.number);
        }
        out.push(Cluster {
            name: cluster_name(&svc.hostname, port.number, Some(&subset.name)),
            host: svc.hostname.clone(),
            port: port.number,
            subset: Some(subset.name.clone()),
            protocol: port.protocol,
            resolution: svc.resolution,
            policy,
            endpoints: endpoints(Some(&subset.labels)),
            dns,
        });
    }
    out
}
