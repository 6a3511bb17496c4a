//! Make-before-break driven through the SotW stream state machine with no
//! sockets: the test plays the client and decides when it ACKs.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use envoy_types::pb::envoy::config::cluster::v3::{
    cluster::{ClusterDiscoveryType, DiscoveryType, EdsClusterConfig},
    Cluster,
};
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::config::route::v3::{
    route::Action, route_action::ClusterSpecifier, weighted_cluster::ClusterWeight, Route,
    RouteAction, RouteConfiguration, VirtualHost, WeightedCluster,
};
use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use envoy_types::pb::google::rpc::Status;

use super::cache::{Snapshot, SnapshotCache, Versioned};
use super::stream::StreamState;
use crate::types::{self, any, unany};

fn cluster(n: &str) -> Cluster {
    Cluster {
        name: n.into(),
        cluster_discovery_type: Some(ClusterDiscoveryType::Type(DiscoveryType::Eds as i32)),
        eds_cluster_config: Some(EdsClusterConfig {
            eds_config: None,
            service_name: n.into(),
        }),
        ..Default::default()
    }
}

fn routes(to: &[&str]) -> RouteConfiguration {
    let spec = if to.len() == 1 {
        ClusterSpecifier::Cluster(to[0].into())
    } else {
        ClusterSpecifier::WeightedClusters(WeightedCluster {
            clusters: to
                .iter()
                .map(|c| ClusterWeight {
                    name: c.to_string(),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        })
    };
    RouteConfiguration {
        name: "r".into(),
        virtual_hosts: vec![VirtualHost {
            name: "vh".into(),
            domains: vec!["*".into()],
            routes: vec![Route {
                action: Some(Action::Route(RouteAction {
                    cluster_specifier: Some(spec),
                    ..Default::default()
                })),
                ..Default::default()
            }],
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn snapshot(clusters: &[&str], to: &[&str]) -> Snapshot {
    let mut s = Snapshot::new();
    for c in clusters {
        s.insert(types::CLUSTER, *c, any(&cluster(c)));
        let cla = ClusterLoadAssignment {
            cluster_name: c.to_string(),
            ..Default::default()
        };
        s.insert(types::ENDPOINT, *c, any(&cla));
    }
    s.insert(types::ROUTE, "r", any(&routes(to)));
    s
}

fn req(type_url: &str, names: &[&str], r: Option<&DiscoveryResponse>) -> DiscoveryRequest {
    DiscoveryRequest {
        type_url: type_url.into(),
        resource_names: names.iter().map(|s| s.to_string()).collect(),
        version_info: r.map(|r| r.version_info.clone()).unwrap_or_default(),
        response_nonce: r.map(|r| r.nonce.clone()).unwrap_or_default(),
        ..Default::default()
    }
}

fn cluster_names(r: &DiscoveryResponse) -> Vec<String> {
    r.resources
        .iter()
        .map(|a| unany::<Cluster>(a).unwrap().name)
        .collect()
}

fn route_targets(r: &DiscoveryResponse) -> Vec<String> {
    let rc = unany::<RouteConfiguration>(&r.resources[0]).unwrap();
    let mut out = Vec::new();
    if let Some(Action::Route(ra)) = &rc.virtual_hosts[0].routes[0].action {
        match &ra.cluster_specifier {
            Some(ClusterSpecifier::Cluster(c)) => out.push(c.clone()),
            Some(ClusterSpecifier::WeightedClusters(w)) => {
                out.extend(w.clusters.iter().map(|c| c.name.clone()))
            }
            _ => {}
        }
    }
    out
}

fn types_of(rs: &[DiscoveryResponse]) -> Vec<&str> {
    rs.iter().map(|r| r.type_url.as_str()).collect()
}

struct Fixture {
    cache: SnapshotCache,
    st: StreamState,
}

impl Fixture {
    fn snap(&self) -> Arc<Versioned> {
        self.cache.snapshot("n").unwrap()
    }

    fn request(&mut self, r: DiscoveryRequest) -> Vec<DiscoveryResponse> {
        let snap = self.snap();
        self.st.on_request(&r, Some(&snap)).1
    }

    fn set(&mut self, s: Snapshot) -> Vec<DiscoveryResponse> {
        self.cache.set_snapshot("n", s);
        let snap = self.snap();
        self.st.on_snapshot(&snap)
    }

    /// A client that has everything of `snapshot(["a"], ["a"])`, ACKed, in
    /// gRPC's order: RDS, then CDS, then EDS.
    fn synced() -> (Self, [DiscoveryResponse; 3]) {
        let cache = SnapshotCache::new();
        cache.set_snapshot("n", snapshot(&["a"], &["a"]));
        let mut st = StreamState::new(cache.clone());
        st.set_node("n");
        let mut f = Self { cache, st };
        let rds = f.request(req(types::ROUTE, &["r"], None)).remove(0);
        assert!(f.request(req(types::ROUTE, &["r"], Some(&rds))).is_empty());
        let cds = f.request(req(types::CLUSTER, &[], None)).remove(0);
        assert!(f.request(req(types::CLUSTER, &[], Some(&cds))).is_empty());
        let eds = f.request(req(types::ENDPOINT, &["a"], None)).remove(0);
        assert!(f
            .request(req(types::ENDPOINT, &["a"], Some(&eds)))
            .is_empty());
        (f, [rds, cds, eds])
    }
}

#[test]
fn route_to_a_new_cluster_waits_for_its_cds_and_eds_acks() {
    let (mut f, [_, _, eds]) = Fixture::synced();
    let out = f.set(snapshot(&["a", "b"], &["a", "b"]));
    // CDS goes out (EDS too, had a's endpoints changed); the route to b is
    // held back.
    assert_eq!(types_of(&out), [types::CLUSTER]);
    let cds = out[0].clone();
    assert_eq!(cluster_names(&cds), ["a", "b"]);
    let held = f.cache.status("n")[types::ROUTE].held.clone();
    assert_eq!(held.as_deref(), f.snap().version(types::ROUTE));
    // The client ACKs CDS: still held, it has not had b's endpoints.
    assert!(f.request(req(types::CLUSTER, &[], Some(&cds))).is_empty());
    // It subscribes to b's endpoints (with the last EDS nonce it saw).
    let out = f.request(req(types::ENDPOINT, &["a", "b"], Some(&eds)));
    assert_eq!(types_of(&out), [types::ENDPOINT]);
    // Only b's: the client holds a's, unchanged (EDS is not full state).
    assert_eq!(out[0].resources.len(), 1);
    let cla: ClusterLoadAssignment = unany(&out[0].resources[0]).unwrap();
    assert_eq!(cla.cluster_name, "b");
    // The EDS ACK releases the route.
    let out = f.request(req(types::ENDPOINT, &["a", "b"], Some(&out[0])));
    assert_eq!(types_of(&out), [types::ROUTE]);
    assert_eq!(route_targets(&out[0]), ["a", "b"]);
    assert_eq!(f.cache.status("n")[types::ROUTE].held, None);
}

#[test]
fn removed_cluster_stays_until_routes_without_it_are_acked() {
    let (mut f, [_, _, eds]) = Fixture::synced();
    // Get to a, b with routes to both (the add path, quickly).
    let out = f.set(snapshot(&["a", "b"], &["a", "b"]));
    f.request(req(types::CLUSTER, &[], Some(&out[0])));
    let e = f.request(req(types::ENDPOINT, &["a", "b"], Some(&eds)));
    let rds = f.request(req(types::ENDPOINT, &["a", "b"], Some(&e[0])));
    f.request(req(types::ROUTE, &["r"], Some(&rds[0])));

    // b goes away: the routes move first; CDS still carries b (EDS is not
    // re-sent: b's endpoints stay, unchanged, while b is kept).
    let out = f.set(snapshot(&["a"], &["a"]));
    assert_eq!(types_of(&out), [types::CLUSTER, types::ROUTE]);
    assert_eq!(cluster_names(&out[0]), ["a", "b"]);
    assert_eq!(route_targets(&out[1]), ["a"]);
    let rds = out[1].clone();
    f.request(req(types::CLUSTER, &[], Some(&out[0])));
    // A NACK of the new routes keeps b: the client still routes to it.
    let mut nack = req(types::ROUTE, &["r"], Some(&rds));
    nack.error_detail = Some(Status {
        code: 3,
        message: "no".into(),
        details: vec![],
    });
    assert!(f.request(nack).is_empty(), "nothing re-sent after a NACK");
    // A newer routes version (same content, new snapshot version) is
    // accepted: only then does CDS drop b, then EDS.
    let mut s = snapshot(&["a"], &["a"]);
    let mut rc = routes(&["a"]);
    rc.virtual_hosts[0].domains.push("x".into());
    s.insert(types::ROUTE, "r", any(&rc));
    let out = f.set(s);
    assert_eq!(types_of(&out), [types::ROUTE]);
    let out = f.request(req(types::ROUTE, &["r"], Some(&out[0])));
    assert_eq!(types_of(&out), [types::CLUSTER]);
    assert_eq!(cluster_names(&out[0]), ["a"]);
    assert_eq!(
        out[0].version_info,
        f.snap().version(types::CLUSTER).unwrap()
    );
}

#[test]
fn nacked_cluster_keeps_routes_held_and_is_not_resent() {
    let (mut f, [_, _, eds]) = Fixture::synced();
    let out = f.set(snapshot(&["a", "b"], &["a", "b"]));
    let mut nack = req(types::CLUSTER, &[], Some(&out[0]));
    nack.error_detail = Some(Status {
        code: 3,
        message: "bad cluster b".into(),
        details: vec![],
    });
    assert!(f.request(nack.clone()).is_empty());
    assert!(f.request(nack).is_empty());
    assert!(f.st.on_snapshot(&f.snap()).is_empty());
    assert!(f.cache.status("n")[types::ROUTE].held.is_some());
    // A fixed snapshot (b changed) is sent, and its ACK releases the route.
    let mut s = snapshot(&["a", "b"], &["a", "b"]);
    let mut b = cluster("b");
    b.alt_stat_name = "fixed".into();
    s.insert(types::CLUSTER, "b", any(&b));
    let out = f.set(s);
    assert_eq!(types_of(&out), [types::CLUSTER]);
    assert!(f
        .request(req(types::CLUSTER, &[], Some(&out[0])))
        .is_empty());
    let out = f.request(req(types::ENDPOINT, &["a", "b"], Some(&eds)));
    assert_eq!(types_of(&out), [types::ENDPOINT]);
    let out = f.request(req(types::ENDPOINT, &["a", "b"], Some(&out[0])));
    assert_eq!(types_of(&out), [types::ROUTE]);
    assert_eq!(route_targets(&out[0]), ["a", "b"]);
}

#[test]
fn clusters_of_dropped_routes_are_released() {
    let (mut f, [rds, _, _]) = Fixture::synced();
    // The listener and its routes go away together with cluster a; the
    // client's routes still name a, so a stays...
    let mut s = Snapshot::new();
    s.insert(types::CLUSTER, "z", any(&cluster("z")));
    let out = f.set(s);
    assert_eq!(types_of(&out), [types::CLUSTER]);
    assert_eq!(cluster_names(&out[0]), ["a", "z"]);
    f.request(req(types::CLUSTER, &[], Some(&out[0])));
    // ...until the client drops those routes (its listener went).
    let out = f.request(req(types::ROUTE, &[], Some(&rds)));
    assert_eq!(types_of(&out), [types::CLUSTER]);
    assert_eq!(cluster_names(&out[0]), ["z"]);
}
