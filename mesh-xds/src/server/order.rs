//! Make-before-break, as pure decisions shared by the SotW and Delta
//! streams: what a client must have ACKed before a listener or route that
//! references a cluster may be sent, and which clusters must be kept in its
//! responses after the snapshot dropped them.
//!
//! Why: a route naming a cluster the client does not have yet fails its
//! requests (gRPC fails the RPC, Envoy answers 503 NC), and a cluster
//! removed while a route the client still uses names it does the same. So:
//! - Adding: a listener or route configuration version that references a
//!   cluster the client has not ACKed is held back (not sent) until the CDS
//!   ACK, and, when the client subscribes to that cluster's endpoints, until
//!   the EDS ACK carrying them.
//! - Removing: a cluster still referenced by a listener or route the client
//!   has (ACKed, or sent and not yet answered) stays in the responses, with
//!   the content it had, until the client ACKs routes that no longer use it.
//!
//! Only references new to the client are checked, and references to
//! clusters that exist nowhere are not waited for (nothing would release
//! them), nor, for a client that subscribes to clusters by name, clusters
//! it has not named: gRPC asks for a cluster only once a route names it,
//! and queues the RPCs for it until its CDS and EDS arrive. The gate is active only once the client subscribes to CDS on the
//! stream: a gRPC client asks for LDS, then RDS, then CDS on first
//! connect, and its first routes must not wait for a CDS it has not asked
//! for yet.

use std::collections::{BTreeMap, BTreeSet};

use envoy_types::pb::google::protobuf::Any;

use super::cache::Versioned;
use super::deps::eds_name;
use crate::types;

/// What the client holds, as far as the ordering rules care.
#[derive(Debug, Default, Clone)]
pub struct ClientView {
    /// The client subscribes to CDS on this stream.
    pub cds_subscribed: bool,
    /// Its CDS subscription is a wildcard.
    pub cds_wildcard: bool,
    /// The cluster names it subscribes to by name.
    pub cds_names: BTreeSet<String>,
    /// Cluster names in the client's last ACKed CDS state.
    pub acked_clusters: BTreeSet<String>,
    /// ClusterLoadAssignment names the client subscribes to.
    pub eds_subscribed: BTreeSet<String>,
    /// ClusterLoadAssignment names in the client's last ACKed EDS state.
    pub acked_endpoints: BTreeSet<String>,
    /// EDS names of clusters ACKed since the client's last EDS request: it
    /// has not had a chance to subscribe to them yet.
    pub awaiting_eds: BTreeSet<String>,
}

/// The EDS name of cluster `c`: from the snapshot's index, or decoded from
/// a kept cluster.
fn eds_of(c: &str, snap: &Versioned, kept: &BTreeMap<String, Any>) -> Option<String> {
    snap.eds_name(c)
        .cloned()
        .or_else(|| kept.get(c).and_then(eds_name))
}

/// The first of `new_refs` the client is not ready for, when one is:
/// clusters that exist (in the snapshot or kept) but are not ACKed, or
/// whose endpoints the client asks for (or may be about to) and has not
/// ACKed.
pub fn not_ready<'a>(
    view: &ClientView,
    snap: &Versioned,
    kept: &BTreeMap<String, Any>,
    new_refs: impl IntoIterator<Item = &'a String>,
) -> Option<String> {
    if !view.cds_subscribed {
        return None;
    }
    let clusters = snap.resources(types::CLUSTER);
    let endpoints = snap.resources(types::ENDPOINT);
    for c in new_refs {
        let exists = clusters.is_some_and(|m| m.contains_key(c)) || kept.contains_key(c);
        if !exists || !(view.cds_wildcard || view.cds_names.contains(c)) {
            // A client that names its clusters (gRPC subscribes to the
            // clusters its routes name) can only ask for c once it has the
            // route; until CDS and EDS arrive it queues those RPCs.
            continue;
        }
        if !view.acked_clusters.contains(c) {
            return Some(c.clone());
        }
        let Some(eds) = eds_of(c, snap, kept) else {
            continue;
        };
        if view.awaiting_eds.contains(&eds) {
            return Some(c.clone());
        }
        let has_cla = endpoints.is_some_and(|m| m.contains_key(&eds));
        if has_cla && view.eds_subscribed.contains(&eds) && !view.acked_endpoints.contains(&eds) {
            return Some(c.clone());
        }
    }
    None
}

/// Clusters the client has (`current`) that the snapshot no longer has but
/// that a listener or route the client uses still references (`in_use`):
/// they must keep being sent.
pub fn kept_clusters<'a>(
    current: impl IntoIterator<Item = &'a String>,
    snap: &Versioned,
    in_use: &BTreeSet<String>,
) -> BTreeSet<String> {
    let now = snap.resources(types::CLUSTER);
    current
        .into_iter()
        .filter(|c| !now.is_some_and(|m| m.contains_key(c)) && in_use.contains(*c))
        .cloned()
        .collect()
}

/// The EDS names of kept clusters.
pub fn kept_endpoints(snap: &Versioned, kept: &BTreeMap<String, Any>) -> BTreeSet<String> {
    kept.keys().filter_map(|c| eds_of(c, snap, kept)).collect()
}

/// A version string for a type's state when some resources are kept from
/// earlier snapshots: distinct from the snapshot's own version, and the
/// same for the same kept set.
pub fn version_with_kept(version: &str, kept: &BTreeMap<String, Any>) -> String {
    if kept.is_empty() {
        return version.to_string();
    }
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for (n, a) in kept {
        for b in n.bytes().chain(a.value.iter().copied()) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    format!("{version}+kept.{h:012x}")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::server::cache::{Snapshot, SnapshotCache};
    use crate::types::any;
    use envoy_types::pb::envoy::config::cluster::v3::{
        cluster::{ClusterDiscoveryType, DiscoveryType, EdsClusterConfig},
        Cluster,
    };
    use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
    use envoy_types::pb::envoy::config::route::v3::{
        route::Action, route_action::ClusterSpecifier, Route, RouteAction, RouteConfiguration,
        VirtualHost,
    };

    fn eds_cluster(n: &str) -> Any {
        any(&Cluster {
            name: n.into(),
            cluster_discovery_type: Some(ClusterDiscoveryType::Type(DiscoveryType::Eds as i32)),
            eds_cluster_config: Some(EdsClusterConfig {
                eds_config: None,
                service_name: format!("eds-{n}"),
            }),
            ..Default::default()
        })
    }

    fn routes(to: &[&str]) -> Any {
        any(&RouteConfiguration {
            name: "r".into(),
            virtual_hosts: vec![VirtualHost {
                routes: to
                    .iter()
                    .map(|c| Route {
                        action: Some(Action::Route(RouteAction {
                            cluster_specifier: Some(ClusterSpecifier::Cluster(c.to_string())),
                            ..Default::default()
                        })),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }],
            ..Default::default()
        })
    }

    fn snap(clusters: &[&str], to: &[&str]) -> Versioned {
        let mut s = Snapshot::new();
        for c in clusters {
            s.insert(types::CLUSTER, *c, eds_cluster(c));
            s.insert(
                types::ENDPOINT,
                format!("eds-{c}"),
                any(&ClusterLoadAssignment {
                    cluster_name: format!("eds-{c}"),
                    ..Default::default()
                }),
            );
        }
        s.insert(types::ROUTE, "r", routes(to));
        let cache = SnapshotCache::new();
        cache.set_snapshot("n", s);
        (*cache.snapshot("n").unwrap()).clone()
    }

    fn set(v: &[&str]) -> BTreeSet<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn deps_index_routes_and_eds_names() {
        let s = snap(&["a", "b"], &["a", "b", "ghost"]);
        assert_eq!(
            s.content.deps.route_clusters["r"],
            set(&["a", "b", "ghost"])
        );
        assert_eq!(s.content.deps.eds_names["a"], "eds-a");
    }

    #[test]
    fn new_cluster_waits_for_cds_then_eds_ack() {
        let s = snap(&["a", "b"], &["a", "b"]);
        let kept = BTreeMap::new();
        let new = set(&["b"]);
        let mut v = ClientView {
            cds_subscribed: true,
            cds_wildcard: true,
            cds_names: BTreeSet::new(),
            acked_clusters: set(&["a"]),
            eds_subscribed: set(&["eds-a"]),
            acked_endpoints: set(&["eds-a"]),
            awaiting_eds: BTreeSet::new(),
        };
        assert_eq!(not_ready(&v, &s, &kept, &new).as_deref(), Some("b"));
        // CDS ACKed: now the client may subscribe to b's endpoints.
        v.acked_clusters.insert("b".into());
        v.awaiting_eds.insert("eds-b".into());
        assert_eq!(not_ready(&v, &s, &kept, &new).as_deref(), Some("b"));
        // It asked for them: wait for their ACK.
        v.awaiting_eds.clear();
        v.eds_subscribed.insert("eds-b".into());
        assert_eq!(not_ready(&v, &s, &kept, &new).as_deref(), Some("b"));
        v.acked_endpoints.insert("eds-b".into());
        assert_eq!(not_ready(&v, &s, &kept, &new), None);
        // A reference to a cluster that exists nowhere is not waited for.
        assert_eq!(not_ready(&v, &s, &kept, &set(&["ghost"])), None);
        // Nor one a client naming its clusters has not named.
        v.acked_endpoints.remove("eds-b");
        v.cds_wildcard = false;
        v.cds_names = set(&["a"]);
        assert_eq!(not_ready(&v, &s, &kept, &new), None);
        v.cds_names.insert("b".into());
        assert_eq!(not_ready(&v, &s, &kept, &new).as_deref(), Some("b"));
        // Before the client subscribes to CDS there is nothing to wait for.
        v.cds_subscribed = false;
        v.acked_clusters.clear();
        assert_eq!(not_ready(&v, &s, &kept, &new), None);
    }

    #[test]
    fn removed_cluster_kept_while_in_use() {
        let s = snap(&["a"], &["a"]);
        let current = set(&["a", "b", "c"]);
        let kept = kept_clusters(&current, &s, &set(&["a", "b"]));
        assert_eq!(kept, set(&["b"]));
        let kept: BTreeMap<String, Any> = [("b".to_string(), eds_cluster("b"))].into();
        assert_eq!(kept_endpoints(&s, &kept), set(&["eds-b"]));
        let v = version_with_kept("7", &kept);
        assert!(v.starts_with("7+kept."));
        assert_eq!(v, version_with_kept("7", &kept));
        assert_eq!(version_with_kept("7", &BTreeMap::new()), "7");
    }
}
