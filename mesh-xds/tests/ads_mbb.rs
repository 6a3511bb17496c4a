//! Make-before-break and missing resources over a real tonic ADS stream on
//! loopback. The test is the client and decides when it ACKs, so the
//! held-back ordering is observable step by step.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::time::Duration;

use envoy_types::pb::envoy::config::cluster::v3::{
    cluster::{ClusterDiscoveryType, DiscoveryType, EdsClusterConfig},
    Cluster,
};
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::config::listener::v3::{ApiListener, Listener};
use envoy_types::pb::envoy::config::route::v3::{
    route::Action, route_action::ClusterSpecifier, weighted_cluster::ClusterWeight, Route,
    RouteAction, RouteConfiguration, VirtualHost, WeightedCluster,
};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    http_connection_manager::RouteSpecifier, HttpConnectionManager, Rds,
};
use envoy_types::pb::envoy::service::discovery::v3::{
    aggregated_discovery_service_client::AggregatedDiscoveryServiceClient, DiscoveryRequest,
    DiscoveryResponse,
};
use mesh_xds::server::{AdsServer, Snapshot, SnapshotCache};
use mesh_xds::types::{self, any, unany};
use tokio::sync::mpsc;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};

const NODE: &str = "grpc-client-1";

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

fn listener() -> Listener {
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

fn snapshot(clusters: &[&str], to: &[&str]) -> Snapshot {
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

struct Client {
    tx: mpsc::Sender<DiscoveryRequest>,
    rx: tonic::Streaming<DiscoveryResponse>,
}

impl Client {
    async fn send(&self, type_url: &str, names: &[&str], last: Option<&DiscoveryResponse>) {
        self.tx
            .send(DiscoveryRequest {
                node: Some(Node {
                    id: NODE.into(),
                    ..Default::default()
                }),
                type_url: type_url.into(),
                resource_names: names.iter().map(|s| s.to_string()).collect(),
                version_info: last.map(|r| r.version_info.clone()).unwrap_or_default(),
                response_nonce: last.map(|r| r.nonce.clone()).unwrap_or_default(),
                ..Default::default()
            })
            .await
            .unwrap();
    }

    async fn recv(&mut self) -> DiscoveryResponse {
        tokio::time::timeout(Duration::from_secs(5), self.rx.message())
            .await
            .expect("a response in time")
            .unwrap()
            .unwrap()
    }

    async fn silent(&mut self) {
        let r = tokio::time::timeout(Duration::from_millis(300), self.rx.message()).await;
        assert!(
            r.is_err(),
            "unexpected response: {:?}",
            r.map(|m| m.map(|x| x.map(|y| y.type_url)))
        );
    }
}

async fn start(cache: SnapshotCache) -> Client {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let svc = AdsServer::new(cache).into_service();
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(svc)
            .serve_with_incoming(TcpListenerStream::new(listener))
            .await
            .unwrap();
    });
    let mut client = AggregatedDiscoveryServiceClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    let (tx, rx) = mpsc::channel(16);
    let rx = client
        .stream_aggregated_resources(ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    Client { tx, rx }
}

fn cluster_names(r: &DiscoveryResponse) -> Vec<String> {
    r.resources
        .iter()
        .map(|a| unany::<Cluster>(a).unwrap().name)
        .collect()
}

fn route_targets(r: &DiscoveryResponse) -> Vec<String> {
    let rc = unany::<RouteConfiguration>(&r.resources[0]).unwrap();
    match &rc.virtual_hosts[0].routes[0].action {
        Some(Action::Route(RouteAction {
            cluster_specifier: Some(ClusterSpecifier::WeightedClusters(w)),
            ..
        })) => w.clusters.iter().map(|c| c.name.clone()).collect(),
        _ => vec![],
    }
}

/// Subscribes the way a gRPC client does (LDS, RDS, CDS, EDS), ACKing each.
async fn synced(c: &mut Client) -> DiscoveryResponse {
    c.send(types::LISTENER, &[], None).await;
    let lds = c.recv().await;
    c.send(types::LISTENER, &[], Some(&lds)).await;
    c.send(types::ROUTE, &["r"], None).await;
    let rds = c.recv().await;
    assert_eq!(route_targets(&rds), ["a"]);
    c.send(types::ROUTE, &["r"], Some(&rds)).await;
    c.send(types::CLUSTER, &[], None).await;
    let cds = c.recv().await;
    c.send(types::CLUSTER, &[], Some(&cds)).await;
    c.send(types::ENDPOINT, &["a"], None).await;
    let eds = c.recv().await;
    c.send(types::ENDPOINT, &["a"], Some(&eds)).await;
    c.silent().await;
    eds
}

#[tokio::test]
async fn new_subset_route_waits_for_cluster_and_endpoint_acks() {
    let cache = SnapshotCache::new();
    cache.set_snapshot(NODE, snapshot(&["a"], &["a"]));
    let mut c = start(cache.clone()).await;
    let eds = synced(&mut c).await;

    // A new subset b and a split onto it.
    cache.set_snapshot(NODE, snapshot(&["a", "b"], &["a", "b"]));
    let cds = c.recv().await;
    assert_eq!(cds.type_url, types::CLUSTER);
    assert_eq!(cluster_names(&cds), ["a", "b"]);
    c.silent().await; // the split is held back
    assert!(cache.status(NODE)[types::ROUTE].held.is_some());

    c.send(types::CLUSTER, &[], Some(&cds)).await;
    c.silent().await; // b's endpoints not there yet
    c.send(types::ENDPOINT, &["a", "b"], Some(&eds)).await;
    let eds = c.recv().await;
    assert_eq!(eds.type_url, types::ENDPOINT);
    assert_eq!(eds.resources.len(), 2);
    c.silent().await;
    c.send(types::ENDPOINT, &["a", "b"], Some(&eds)).await;
    let rds = c.recv().await;
    assert_eq!(rds.type_url, types::ROUTE);
    assert_eq!(route_targets(&rds), ["a", "b"]);
    c.send(types::ROUTE, &["r"], Some(&rds)).await;
    c.silent().await;

    // Remove a: routes first; CDS keeps a until those routes are ACKed.
    cache.set_snapshot(NODE, snapshot(&["b"], &["b"]));
    let cds = c.recv().await;
    assert_eq!(cds.type_url, types::CLUSTER);
    let mut names = cluster_names(&cds);
    names.sort();
    assert_eq!(names, ["a", "b"], "a kept: routes still use it");
    let rds = c.recv().await;
    assert_eq!(route_targets(&rds), ["b"]);
    c.send(types::CLUSTER, &[], Some(&cds)).await;
    c.silent().await;
    c.send(types::ROUTE, &["r"], Some(&rds)).await;
    let cds = c.recv().await;
    assert_eq!(cluster_names(&cds), ["b"]);
    assert_eq!(
        Some(cds.version_info.as_str()),
        cache.snapshot(NODE).unwrap().version(types::CLUSTER)
    );
    c.send(types::CLUSTER, &[], Some(&cds)).await;
    c.send(types::ENDPOINT, &["b"], Some(&eds)).await;
    c.silent().await;
    let st = cache.status(NODE);
    assert_eq!(
        st[types::CLUSTER].acked.as_deref(),
        Some(cds.version_info.as_str())
    );
    assert_eq!(st[types::ROUTE].held, None);
}

#[tokio::test]
async fn missing_resources_named_and_wildcard() {
    let cache = SnapshotCache::new();
    cache.set_snapshot(NODE, snapshot(&["a"], &["a"]));
    let mut c = start(cache.clone()).await;

    // LDS and CDS by name: a missing name is just absent (the client takes
    // that as does-not-exist at once).
    c.send(types::LISTENER, &["svc:80", "nope:80"], None).await;
    let lds = c.recv().await;
    assert_eq!(lds.resources.len(), 1);
    c.send(types::CLUSTER, &["a", "nope"], None).await;
    let cds = c.recv().await;
    assert_eq!(cluster_names(&cds), ["a"]);
    c.send(types::CLUSTER, &["nope"], Some(&cds)).await;
    let cds = c.recv().await;
    assert!(
        cds.resources.is_empty(),
        "full state: an empty CDS response"
    );
    // Wildcard ("*") brings everything back.
    c.send(types::CLUSTER, &["*"], Some(&cds)).await;
    let cds = c.recv().await;
    assert_eq!(cluster_names(&cds), ["a"]);
    c.send(types::CLUSTER, &["*"], Some(&cds)).await;

    // RDS and EDS for names that do not exist: nothing (gRPC's 15 s
    // does-not-exist timer decides).
    c.send(types::ROUTE, &["nope"], None).await;
    c.send(types::ENDPOINT, &["nope"], None).await;
    c.silent().await;
    // When the name appears, it is sent.
    let mut s = snapshot(&["a"], &["a"]);
    let mut rc = routes(&["a"]);
    rc.name = "nope".into();
    s.insert(types::ROUTE, "nope", any(&rc));
    cache.set_snapshot(NODE, s);
    let rds = c.recv().await;
    assert_eq!(rds.type_url, types::ROUTE);
    assert_eq!(
        unany::<RouteConfiguration>(&rds.resources[0]).unwrap().name,
        "nope"
    );
    c.silent().await;
}
