//! Small xDS resources for the server tests (one listener `svc:80`, its
//! route configuration `r` splitting over some EDS clusters) and readers
//! of the responses that carry them; edits of encoded resources that make
//! a change of one type, or a resource clients must reject.

use envoy_types::pb::envoy::config::cluster::v3::{
    cluster::{ClusterDiscoveryType, DiscoveryType, EdsClusterConfig},
    Cluster,
};
use envoy_types::pb::envoy::config::endpoint::v3::{ClusterLoadAssignment, LocalityLbEndpoints};
use envoy_types::pb::envoy::config::listener::v3::{ApiListener, Listener};
use envoy_types::pb::envoy::config::route::v3::{
    route::Action, route_action::ClusterSpecifier, weighted_cluster::ClusterWeight, Route,
    RouteAction, RouteConfiguration, VirtualHost, WeightedCluster,
};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    http_connection_manager::RouteSpecifier, HttpConnectionManager, Rds,
};
use envoy_types::pb::envoy::service::discovery::v3::DiscoveryResponse;
use mesh_xds::encode::Resources;
use mesh_xds::server::Snapshot;
use mesh_xds::types::{self, any, unany};

/// An EDS cluster named `n` (service name `n`).
pub fn cluster(n: &str) -> Cluster {
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

/// Route configuration `r`: host `svc:80`, one route splitting over the
/// clusters `to` (equal weights).
pub fn routes(to: &[&str]) -> RouteConfiguration {
    RouteConfiguration {
        name: "r".into(),
        virtual_hosts: vec![VirtualHost {
            name: "svc".into(),
            domains: vec!["svc:80".into()],
            routes: vec![Route {
                action: Some(Action::Route(RouteAction {
                    cluster_specifier: Some(ClusterSpecifier::WeightedClusters(WeightedCluster {
                        clusters: to
                            .iter()
                            .map(|c| ClusterWeight {
                                name: c.to_string(),
                                ..Default::default()
                            })
                            .collect(),
                        ..Default::default()
                    })),
                    ..Default::default()
                })),
                ..Default::default()
            }],
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// The client-side listener `svc:80`, routes from RDS `r`.
pub fn listener() -> Listener {
    let hcm = HttpConnectionManager {
        route_specifier: Some(RouteSpecifier::Rds(Rds {
            config_source: None,
            route_config_name: "r".into(),
        })),
        ..Default::default()
    };
    Listener {
        name: "svc:80".into(),
        api_listener: Some(ApiListener {
            api_listener: Some(any(&hcm)),
        }),
        ..Default::default()
    }
}

/// `svc:80` routed over `to`, and EDS clusters `clusters`, each with an
/// empty load assignment.
pub fn snapshot(clusters: &[&str], to: &[&str]) -> Snapshot {
    let mut s = Snapshot::new();
    s.insert(types::LISTENER, "svc:80", any(&listener()));
    s.insert(types::ROUTE, "r", any(&routes(to)));
    for c in clusters {
        s.insert(types::CLUSTER, *c, any(&cluster(c)));
        let cla = ClusterLoadAssignment {
            cluster_name: c.to_string(),
            ..Default::default()
        };
        s.insert(types::ENDPOINT, *c, any(&cla));
    }
    s
}

/// The cluster names in a CDS response.
pub fn cluster_names(r: &DiscoveryResponse) -> Vec<String> {
    r.resources
        .iter()
        .map(|a| unany::<Cluster>(a).unwrap().name)
        .collect()
}

/// The clusters the first route of an RDS response splits over.
pub fn route_targets(r: &DiscoveryResponse) -> Vec<String> {
    let rc = unany::<RouteConfiguration>(&r.resources[0]).unwrap();
    match &rc.virtual_hosts[0].routes[0].action {
        Some(Action::Route(RouteAction {
            cluster_specifier: Some(ClusterSpecifier::WeightedClusters(w)),
            ..
        })) => w.clusters.iter().map(|c| c.name.clone()).collect(),
        _ => vec![],
    }
}

/// Adds an empty priority-1 locality to the load assignment of `cluster`
/// in `res`: a change of endpoints only.
pub fn add_locality(res: &mut Resources, cluster: &str) {
    let cla = res
        .endpoints
        .iter_mut()
        .find(|e| e.cluster_name == cluster)
        .unwrap_or_else(|| panic!("no load assignment for {cluster}"));
    cla.endpoints.push(LocalityLbEndpoints {
        priority: 1,
        ..Default::default()
    });
}

/// Empties route configuration `name` in `res` of its virtual hosts: a
/// resource clients must reject.
pub fn break_routes(res: &mut Resources, name: &str) {
    let rc = res
        .routes
        .iter_mut()
        .find(|r| r.name == name)
        .unwrap_or_else(|| panic!("no route configuration {name}"));
    rc.virtual_hosts.clear();
}
