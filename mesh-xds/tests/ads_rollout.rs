//! A canary rollout through the real pipeline: Istio YAML compiled by
//! mesh-core, encoded by mesh-xds, served over SotW ADS (in process, on a
//! paused clock) to a scripted client that subscribes the way gRPC does. At every step, the
//! routes the client holds only name clusters it has ACKed, with their
//! endpoints: the invariant behind "0 503s during a rollout".
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::BTreeSet;

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::config::route::v3::{
    route::Action, route_action::ClusterSpecifier, RouteConfiguration,
};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    http_connection_manager::RouteSpecifier, HttpConnectionManager,
};
use envoy_types::pb::envoy::service::discovery::v3::DiscoveryResponse;
use mesh_core::config::mesh_config::MeshConfig;
use mesh_core::model::Client as MeshClient;
use mesh_test_support::ads::{self, Client};
use mesh_xds::encode::{encode, EncodeOptions};
use mesh_xds::server::{AdsServer, Snapshot, SnapshotCache};
use mesh_xds::types::{self, unany};

const NODE: &str = "frontend-1";

const BASE: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: web, namespace: demo}
spec:
  selector: {app: web}
  ports: [{name: http, port: 8080}]
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: web-v1, namespace: demo}
spec: {address: 10.1.0.1, labels: {app: web, version: v1}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: web-v2, namespace: demo}
spec: {address: 10.1.0.2, labels: {app: web, version: v2}}
"#;

fn step(subsets: &[&str], weights: &[(&str, u32)]) -> Snapshot {
    let mut yaml = BASE.to_string();
    yaml.push_str(
        "---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: web, namespace: demo}\nspec:\n  host: web\n  subsets:\n",
    );
    for s in subsets {
        yaml.push_str(&format!("  - name: {s}\n    labels: {{version: {s}}}\n"));
    }
    yaml.push_str(
        "---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: web, namespace: demo}\nspec:\n  hosts: [web]\n  http:\n  - route:\n",
    );
    for (s, w) in weights {
        yaml.push_str(&format!(
            "    - destination: {{host: web, subset: {s}}}\n      weight: {w}\n"
        ));
    }
    let loaded = mesh_core::config::load_str(&yaml, "rollout.yaml");
    let model = mesh_core::compile::compile(
        &loaded.resources,
        &MeshConfig::default(),
        &MeshClient::new("demo", Default::default()),
    );
    Snapshot::from_resources(&encode(&model, &EncodeOptions::default()))
}

/// What the scripted client holds (last ACKed) and answers with.
#[derive(Default)]
struct Held {
    /// Subscribe to all clusters (Envoy, our SDK) or, like gRPC, to the
    /// clusters its routes name.
    wildcard_cds: bool,
    /// The first fetch is done (before it, routes come before clusters by
    /// design: the client asks for clusters only once it has routes).
    synced: bool,
    ever_clusters: BTreeSet<String>,
    cds_names: BTreeSet<String>,
    last_cds: Option<DiscoveryResponse>,
    last_eds: Option<DiscoveryResponse>,
    clusters: BTreeSet<String>,
    eds_names: BTreeSet<String>,
    endpoints: BTreeSet<String>,
    routes: Vec<RouteConfiguration>,
    rds_names: BTreeSet<String>,
}

impl Held {
    fn route_targets(&self) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        for rc in &self.routes {
            for r in rc.virtual_hosts.iter().flat_map(|v| &v.routes) {
                if let Some(Action::Route(ra)) = &r.action {
                    match &ra.cluster_specifier {
                        Some(ClusterSpecifier::Cluster(c)) => {
                            out.insert(c.clone());
                        }
                        Some(ClusterSpecifier::WeightedClusters(w)) => {
                            out.extend(w.clusters.iter().map(|c| c.name.clone()));
                        }
                        _ => {}
                    }
                }
            }
        }
        out
    }

    /// The invariant. Wildcard CDS: every cluster a held route names is
    /// held, with endpoints. Named CDS (gRPC queues RPCs for a cluster it
    /// is still fetching): a cluster a held route names is never deleted.
    fn check(&self) {
        for c in self.route_targets() {
            if self.wildcard_cds && self.synced {
                assert!(
                    self.clusters.contains(&c),
                    "route to {c} without the cluster"
                );
                assert!(
                    self.endpoints.contains(&c),
                    "route to {c} without endpoints"
                );
            } else if self.ever_clusters.contains(&c) {
                assert!(
                    self.clusters.contains(&c),
                    "cluster {c} deleted while routed to"
                );
            }
        }
    }

    async fn subscribe_clusters(&mut self, c: &Client) {
        if self.wildcard_cds {
            return;
        }
        let names = self.route_targets();
        if names != self.cds_names {
            self.cds_names = names;
            let v: Vec<&str> = self.cds_names.iter().map(String::as_str).collect();
            c.send(types::CLUSTER, &v, self.last_cds.as_ref()).await;
        }
    }

    fn cds_sub(&self) -> Vec<&str> {
        self.cds_names.iter().map(String::as_str).collect()
    }

    /// Applies and ACKs one response the way a gRPC client does (and then
    /// subscribes to what the new listeners and clusters name).
    async fn apply(&mut self, c: &Client, r: DiscoveryResponse) {
        match r.type_url.as_str() {
            types::LISTENER => {
                c.send(types::LISTENER, &[], Some(&r)).await;
                let mut names = BTreeSet::new();
                for l in r.resources.iter().map(|a| unany::<Listener>(a).unwrap()) {
                    let Some(api) = l.api_listener.and_then(|a| a.api_listener) else {
                        continue;
                    };
                    let hcm = unany::<HttpConnectionManager>(&api).unwrap();
                    if let Some(RouteSpecifier::Rds(rds)) = hcm.route_specifier {
                        names.insert(rds.route_config_name);
                    }
                }
                if names != self.rds_names {
                    self.rds_names = names;
                    let v: Vec<&str> = self.rds_names.iter().map(String::as_str).collect();
                    c.send(types::ROUTE, &v, None).await;
                }
            }
            types::ROUTE => {
                self.routes = r
                    .resources
                    .iter()
                    .map(|a| unany::<RouteConfiguration>(a).unwrap())
                    .collect();
                let v: Vec<&str> = self.rds_names.iter().map(String::as_str).collect();
                c.send(types::ROUTE, &v, Some(&r)).await;
                if self.wildcard_cds && self.last_cds.is_none() {
                    c.send(types::CLUSTER, &[], None).await;
                    self.last_cds = Some(DiscoveryResponse::default());
                }
                self.subscribe_clusters(c).await;
            }
            types::CLUSTER => {
                let clusters: Vec<Cluster> = r
                    .resources
                    .iter()
                    .map(|a| unany::<Cluster>(a).unwrap())
                    .collect();
                self.clusters = clusters.iter().map(|c| c.name.clone()).collect();
                self.ever_clusters.extend(self.clusters.iter().cloned());
                // Endpoints of clusters that left are dropped with them.
                self.endpoints.retain(|e| self.clusters.contains(e));
                c.send(types::CLUSTER, &self.cds_sub(), Some(&r)).await;
                self.last_cds = Some(r);
                let names: BTreeSet<String> = clusters
                    .iter()
                    .map(|c| c.eds_cluster_config.as_ref().unwrap().service_name.clone())
                    .collect();
                if names != self.eds_names {
                    self.eds_names = names;
                    let v: Vec<&str> = self.eds_names.iter().map(String::as_str).collect();
                    c.send(types::ENDPOINT, &v, self.last_eds.as_ref()).await;
                }
            }
            _ => {
                for a in &r.resources {
                    let cla = unany::<ClusterLoadAssignment>(a).unwrap();
                    self.endpoints.insert(cla.cluster_name);
                }
                let v: Vec<&str> = self.eds_names.iter().map(String::as_str).collect();
                c.send(types::ENDPOINT, &v, Some(&r)).await;
                self.last_eds = Some(r);
            }
        }
        self.check();
    }

    /// Applies responses until the server has nothing more to say.
    async fn settle(&mut self, c: &mut Client) -> usize {
        let mut n = 0;
        while let Some(r) = c.recv_unless_silent().await {
            self.apply(c, r).await;
            n += 1;
            assert!(n < 100, "responses in a loop");
        }
        n
    }
}

const CANARY: &str = "outbound|8080|v2|web.demo.svc.cluster.local";
const STABLE: &str = "outbound|8080|v1|web.demo.svc.cluster.local";

async fn rollout(wildcard_cds: bool) {
    let cache = SnapshotCache::new();
    cache.set_snapshot(NODE, step(&["v1"], &[("v1", 100)]));
    let addr = ads::serve(AdsServer::new(cache.clone()));
    let mut c = Client::connect(&addr, ads::node(NODE)).await;
    let mut held = Held {
        wildcard_cds,
        ..Default::default()
    };
    c.send(types::LISTENER, &[], None).await;
    assert!(held.settle(&mut c).await >= 4);
    held.synced = true;
    held.check();
    assert!(held.route_targets().contains(STABLE));
    assert!(held.clusters.contains(STABLE) && held.endpoints.contains(STABLE));

    // Add the canary subset and split onto it.
    cache.set_snapshot(NODE, step(&["v1", "v2"], &[("v1", 90), ("v2", 10)]));
    held.settle(&mut c).await;
    assert!(held.route_targets().contains(CANARY));
    assert!(held.clusters.contains(CANARY) && held.endpoints.contains(CANARY));

    // Promote: all traffic to v2, then drop v1.
    cache.set_snapshot(NODE, step(&["v2"], &[("v2", 100)]));
    held.settle(&mut c).await;
    assert_eq!(held.route_targets(), BTreeSet::from([CANARY.to_string()]));
    assert!(
        !held.clusters.contains(STABLE),
        "v1 goes once no route uses it"
    );
    let st = cache.status(NODE);
    for t in [
        types::LISTENER,
        types::ROUTE,
        types::CLUSTER,
        types::ENDPOINT,
    ] {
        assert!(
            st[t].pending.is_none() && st[t].held.is_none() && st[t].last_nack.is_none(),
            "{t}: {:?}",
            st[t]
        );
    }
}

#[tokio::test(start_paused = true)]
async fn rollout_wildcard_cds_client_never_routes_to_a_missing_cluster() {
    rollout(true).await;
}

#[tokio::test(start_paused = true)]
async fn rollout_grpc_style_client_never_loses_a_routed_cluster() {
    rollout(false).await;
}
