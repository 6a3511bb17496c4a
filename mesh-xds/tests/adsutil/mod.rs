//! A scripted ADS client and small resources shared by the server tests:
//! the test plays the client and decides when it ACKs.
#![allow(dead_code, missing_docs, clippy::unwrap_used, clippy::expect_used)]

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
use mesh_xds::server::Snapshot;
use mesh_xds::server::{AdsServer, CsdsServer, SnapshotCache};
use mesh_xds::types::{self, any, unany};
use tokio::sync::mpsc;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};

pub const NODE: &str = "grpc-client-1";

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

pub struct Client {
    pub node: String,
    pub tx: mpsc::Sender<DiscoveryRequest>,
    pub rx: tonic::Streaming<DiscoveryResponse>,
}

impl Client {
    pub async fn send(&self, type_url: &str, names: &[&str], last: Option<&DiscoveryResponse>) {
        self.tx
            .send(DiscoveryRequest {
                node: Some(Node {
                    id: self.node.clone(),
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

    pub async fn recv(&mut self) -> DiscoveryResponse {
        tokio::time::timeout(Duration::from_secs(5), self.rx.message())
            .await
            .expect("a response in time")
            .unwrap()
            .unwrap()
    }

    pub async fn silent(&mut self) {
        let r = tokio::time::timeout(Duration::from_millis(300), self.rx.message()).await;
        assert!(
            r.is_err(),
            "unexpected response: {:?}",
            r.map(|m| m.map(|x| x.map(|y| y.type_url)))
        );
    }
}

/// ADS and CSDS on one loopback gRPC server over `cache`.
pub async fn serve(cache: SnapshotCache) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let ads = AdsServer::new(cache.clone()).into_service();
    let csds = CsdsServer::new(cache).into_service();
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(ads)
            .add_service(csds)
            .serve_with_incoming(TcpListenerStream::new(listener))
            .await
            .unwrap();
    });
    addr
}

/// A SotW stream to `addr` as node `node`.
pub async fn connect(addr: std::net::SocketAddr, node: &str) -> Client {
    let mut client = AggregatedDiscoveryServiceClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    let (tx, rx) = mpsc::channel(16);
    let rx = client
        .stream_aggregated_resources(ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    Client {
        node: node.to_string(),
        tx,
        rx,
    }
}

pub async fn start(cache: SnapshotCache) -> Client {
    connect(serve(cache).await, NODE).await
}

pub fn cluster_names(r: &DiscoveryResponse) -> Vec<String> {
    r.resources
        .iter()
        .map(|a| unany::<Cluster>(a).unwrap().name)
        .collect()
}

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
