//! Which clusters each listener and route configuration of a snapshot
//! references, and which EDS name each cluster reads its endpoints from:
//! the facts make-before-break needs to order pushes. Computed once per
//! snapshot (in [`super::SnapshotCache::set_snapshot`]), shared by every
//! stream of the node.
//!
//! Only the references a client acts on are followed: a route's cluster,
//! weighted clusters and mirror clusters; a listener's inline route
//! configuration (server-side inbound listeners) and TCP proxy cluster.
//! A listener's RDS name is not a cluster reference: the client asks for
//! that route configuration after it has the listener.

use std::collections::{BTreeMap, BTreeSet};

use envoy_types::pb::envoy::config::cluster::v3::cluster::DiscoveryType;
use envoy_types::pb::envoy::config::cluster::v3::{cluster::ClusterDiscoveryType, Cluster};
use envoy_types::pb::envoy::config::listener::v3::{filter::ConfigType, Listener};
use envoy_types::pb::envoy::config::route::v3::{
    route::Action, route_action::ClusterSpecifier, RouteConfiguration,
};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    http_connection_manager::RouteSpecifier, HttpConnectionManager,
};
use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::{tcp_proxy, TcpProxy};
use envoy_types::pb::google::protobuf::Any;

use super::cache::Snapshot;
use crate::types::{self, unany};

/// References inside one snapshot.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Deps {
    /// Listener name -> clusters it references directly.
    pub listener_clusters: BTreeMap<String, BTreeSet<String>>,
    /// Route configuration name -> clusters its routes send to or mirror to.
    pub route_clusters: BTreeMap<String, BTreeSet<String>>,
    /// EDS cluster name -> the ClusterLoadAssignment name it subscribes to.
    pub eds_names: BTreeMap<String, String>,
}

impl Deps {
    /// The references of a snapshot's listeners, routes and clusters.
    pub fn of(snapshot: &Snapshot) -> Self {
        Self::update(snapshot, None)
    }

    /// The references of `snapshot`, reusing those of `old` (the previous
    /// snapshot of the node, with its index) for resources whose bytes did
    /// not change: most pushes change a few resources of many.
    pub fn update(snapshot: &Snapshot, old: Option<(&Snapshot, &Deps)>) -> Self {
        let unchanged = |t: &str, name: &str, a: &Any| {
            old.and_then(|(s, d)| {
                let same = s.resources(t)?.get(name)? == a;
                same.then_some(d)
            })
        };
        let mut d = Self::default();
        for (name, a) in snapshot.resources(types::LISTENER).into_iter().flatten() {
            let refs = match unchanged(types::LISTENER, name, a) {
                Some(o) => o.listener_clusters.get(name).cloned().unwrap_or_default(),
                None => listener_clusters(a),
            };
            if !refs.is_empty() {
                d.listener_clusters.insert(name.clone(), refs);
            }
        }
        for (name, a) in snapshot.resources(types::ROUTE).into_iter().flatten() {
            let refs = match unchanged(types::ROUTE, name, a) {
                Some(o) => o.route_clusters.get(name).cloned().unwrap_or_default(),
                None => unany::<RouteConfiguration>(a)
                    .map(|rc| route_clusters(&rc))
                    .unwrap_or_default(),
            };
            if !refs.is_empty() {
                d.route_clusters.insert(name.clone(), refs);
            }
        }
        for (name, a) in snapshot.resources(types::CLUSTER).into_iter().flatten() {
            let eds = match unchanged(types::CLUSTER, name, a) {
                Some(o) => o.eds_names.get(name).cloned(),
                None => eds_name(a),
            };
            if let Some(eds) = eds {
                d.eds_names.insert(name.clone(), eds);
            }
        }
        d
    }

    /// Clusters referenced by the resource `name` of `type_url`.
    pub fn clusters_of(&self, type_url: &str, name: &str) -> Option<&BTreeSet<String>> {
        match type_url {
            types::LISTENER => self.listener_clusters.get(name),
            types::ROUTE => self.route_clusters.get(name),
            _ => None,
        }
    }
}

/// The ClusterLoadAssignment name of an EDS cluster (`service_name`, or the
/// cluster's own name when that is empty); `None` for other clusters.
pub fn eds_name(a: &Any) -> Option<String> {
    let c = unany::<Cluster>(a)?;
    let is_eds = matches!(
        c.cluster_discovery_type,
        Some(ClusterDiscoveryType::Type(t)) if t == DiscoveryType::Eds as i32
    );
    if !is_eds {
        return None;
    }
    Some(
        c.eds_cluster_config
            .map(|e| e.service_name)
            .filter(|s| !s.is_empty())
            .unwrap_or(c.name),
    )
}

fn route_clusters(rc: &RouteConfiguration) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for r in rc.virtual_hosts.iter().flat_map(|vh| &vh.routes) {
        let Some(Action::Route(ra)) = &r.action else {
            continue;
        };
        match &ra.cluster_specifier {
            Some(ClusterSpecifier::Cluster(c)) => {
                out.insert(c.clone());
            }
            Some(ClusterSpecifier::WeightedClusters(w)) => {
                out.extend(w.clusters.iter().map(|c| c.name.clone()));
            }
            _ => {}
        }
        out.extend(ra.request_mirror_policies.iter().map(|m| m.cluster.clone()));
    }
    out.retain(|c| !c.is_empty());
    out
}

fn hcm_clusters(a: &Any, out: &mut BTreeSet<String>) {
    if let Some(hcm) = unany::<HttpConnectionManager>(a) {
        if let Some(RouteSpecifier::RouteConfig(rc)) = &hcm.route_specifier {
            out.extend(route_clusters(rc));
        }
    } else if let Some(tcp) = unany::<TcpProxy>(a) {
        match tcp.cluster_specifier {
            Some(tcp_proxy::ClusterSpecifier::Cluster(c)) if !c.is_empty() => {
                out.insert(c);
            }
            Some(tcp_proxy::ClusterSpecifier::WeightedClusters(w)) => {
                out.extend(w.clusters.into_iter().map(|c| c.name));
            }
            _ => {}
        }
    }
}

fn listener_clusters(a: &Any) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let Some(l) = unany::<Listener>(a) else {
        return out;
    };
    if let Some(api) = l
        .api_listener
        .as_ref()
        .and_then(|x| x.api_listener.as_ref())
    {
        hcm_clusters(api, &mut out);
    }
    let chains = l
        .filter_chains
        .iter()
        .chain(l.default_filter_chain.as_ref());
    for f in chains.flat_map(|c| &c.filters) {
        if let Some(ConfigType::TypedConfig(a)) = &f.config_type {
            hcm_clusters(a, &mut out);
        }
    }
    out
}
