//! The client state machine without I/O: the order resources arrive in,
//! ACK/NACK, consistency, and the does-not-exist timer on a paused clock.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use mesh_core::config::MeshConfig;
use mesh_core::model::{Client, Model};
use tokio::time::Instant;

use super::state::SotwState;
use crate::encode::{encode, EncodeOptions, Resources};
use crate::types::{self, any};

const YAML: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: svc, namespace: p}
spec:
  selector: {app: svc}
  ports: [{name: http, port: 8080}]
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: svc-1, namespace: p}
spec: {address: 10.9.0.1, labels: {app: svc, version: v1}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: svc, namespace: p}
spec:
  host: svc
  subsets:
  - {name: v1, labels: {version: v1}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: svc, namespace: p}
spec:
  hosts: [svc]
  http:
  - route: [{destination: {host: svc, subset: v1}}]
"#;

fn model() -> Model {
    let r = mesh_core::config::load_str(YAML, "t.yaml");
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    mesh_core::compile::compile(
        &r.resources,
        &MeshConfig::default(),
        &Client::new("p", Default::default()),
    )
}

fn resources() -> Resources {
    let opts = EncodeOptions {
        short_name_listeners: false,
        ..EncodeOptions::default()
    };
    encode(&model(), &opts)
}

fn resp<T: prost::Message + prost::Name>(
    type_url: &str,
    items: &[T],
    version: &str,
    nonce: &str,
) -> DiscoveryResponse {
    DiscoveryResponse {
        type_url: type_url.into(),
        version_info: version.into(),
        nonce: nonce.into(),
        resources: items.iter().map(any).collect(),
        ..Default::default()
    }
}

fn kinds(reqs: &[DiscoveryRequest]) -> Vec<(&str, Vec<String>, &str, &str, bool)> {
    reqs.iter()
        .map(|r| {
            (
                r.type_url.as_str(),
                r.resource_names.clone(),
                r.version_info.as_str(),
                r.response_nonce.as_str(),
                r.error_detail.is_some(),
            )
        })
        .collect()
}

const RDS: &str = "outbound|8080||svc.p.svc.cluster.local";
const V1: &str = "outbound|8080|v1|svc.p.svc.cluster.local";

#[tokio::test(start_paused = true)]
async fn sync_in_any_order_publishes_only_a_consistent_set() {
    let res = resources();
    let mut st = SotwState::new(Duration::from_secs(15), Duration::from_secs(2));
    let now = Instant::now();
    let first = st.on_connect(now);
    assert_eq!(
        kinds(&first),
        [
            (types::LISTENER, vec![], "", "", false),
            (types::CLUSTER, vec![], "", "", false)
        ]
    );

    // Listeners first: ACK, then the RDS subscription they demand.
    let step = st.on_response(&resp(types::LISTENER, &res.listeners, "1", "n1"), now);
    assert!(step.accepted);
    assert_eq!(
        kinds(&step.requests),
        [
            (types::LISTENER, vec![], "1", "n1", false),
            (types::ROUTE, vec![RDS.to_string()], "", "", false)
        ]
    );
    assert!(st.assemble().is_none());

    // Routes before clusters (a server without make-before-break): not
    // consistent while the clusters they send to are unknown. CDS now also
    // names the clusters the routes send to, beside the wildcard (istiod's
    // gRPC generator builds only named clusters).
    let step = st.on_response(&resp(types::ROUTE, &res.routes, "2", "n2"), now);
    assert_eq!(
        kinds(&step.requests),
        [
            (types::ROUTE, vec![RDS.to_string()], "2", "n2", false),
            (
                types::CLUSTER,
                vec!["*".to_string(), V1.to_string()],
                "",
                "",
                false
            )
        ]
    );
    assert!(st.assemble().is_none());

    // Clusters: EDS subscribed for every EDS cluster.
    let step = st.on_response(&resp(types::CLUSTER, &res.clusters, "3", "n3"), now);
    let eds: Vec<String> = res.clusters.iter().map(|c| c.name.clone()).collect();
    assert_eq!(
        kinds(&step.requests),
        [
            (
                types::CLUSTER,
                vec!["*".to_string(), V1.to_string()],
                "3",
                "n3",
                false
            ),
            (types::ENDPOINT, eds.clone(), "", "", false)
        ]
    );
    assert!(st.assemble().is_none(), "load assignments still missing");
    let step = st.on_response(&resp(types::ENDPOINT, &res.endpoints, "4", "n4"), now);
    assert_eq!(
        kinds(&step.requests),
        [(types::ENDPOINT, eds, "4", "n4", false)]
    );
    let got = st.assemble().expect("consistent");
    assert_eq!(got, res);
    let sync = st.sync();
    assert_eq!(sync[types::ENDPOINT].acked_version.as_deref(), Some("4"));
}

#[tokio::test(start_paused = true)]
async fn invalid_response_is_nacked_with_the_previous_version_and_changes_nothing() {
    let res = resources();
    let mut st = SotwState::new(Duration::from_secs(15), Duration::from_secs(2));
    let now = Instant::now();
    st.on_connect(now);
    st.on_response(&resp(types::LISTENER, &res.listeners, "1", "a"), now);
    st.on_response(&resp(types::CLUSTER, &res.clusters, "1", "b"), now);
    st.on_response(&resp(types::ENDPOINT, &res.endpoints, "1", "c"), now);
    st.on_response(&resp(types::ROUTE, &res.routes, "1", "d"), now);
    let before = st.assemble().unwrap();

    let broken = RouteConfiguration {
        name: RDS.into(),
        ..Default::default()
    };
    let step = st.on_response(&resp(types::ROUTE, &[broken], "2", "e"), now);
    assert!(!step.accepted);
    assert_eq!(step.requests.len(), 1);
    let nack = &step.requests[0];
    assert_eq!(
        (nack.version_info.as_str(), nack.response_nonce.as_str()),
        ("1", "e")
    );
    let msg = &nack.error_detail.as_ref().unwrap().message;
    assert!(
        msg.contains(RDS) && msg.contains("virtual_hosts") && msg.contains("version 2"),
        "{msg}"
    );
    assert_eq!(st.assemble().unwrap(), before);
    let sync = st.sync();
    assert_eq!(sync[types::ROUTE].nacks, 1);
    assert_eq!(sync[types::ROUTE].acked_version.as_deref(), Some("1"));

    // A resource of another type inside a response is refused too.
    let step = st.on_response(&resp(types::CLUSTER, &res.routes, "3", "f"), now);
    assert!(!step.accepted);
    assert_eq!(st.assemble().unwrap(), before);
}

#[tokio::test(start_paused = true)]
async fn does_not_exist_timer_declares_missing_names_absent() {
    let res = resources();
    let mut st = SotwState::new(Duration::from_secs(15), Duration::from_secs(2));
    st.on_connect(Instant::now());
    // The server never answers RDS, nor EDS for v1.
    st.on_response(
        &resp(types::LISTENER, &res.listeners, "1", "a"),
        Instant::now(),
    );
    st.on_response(
        &resp(types::CLUSTER, &res.clusters, "1", "b"),
        Instant::now(),
    );
    let partial: Vec<_> = res
        .endpoints
        .iter()
        .filter(|e| e.cluster_name != V1)
        .cloned()
        .collect();
    st.on_response(&resp(types::ENDPOINT, &partial, "1", "c"), Instant::now());
    assert!(st.assemble().is_none());
    let deadline = st.next_deadline().unwrap();

    tokio::time::advance(Duration::from_secs(14)).await;
    assert!(!st.on_timer(Instant::now()));
    assert!(st.assemble().is_none());

    // A disconnect stops the timers; the next stream starts them afresh.
    st.on_disconnect();
    assert!(st.next_deadline().is_none());
    st.on_connect(Instant::now());
    assert!(st.next_deadline().unwrap() > deadline);
    tokio::time::advance(Duration::from_secs(15)).await;
    assert!(st.on_timer(Instant::now()));
    let got = st.assemble().expect("consistent once the timer fired");
    // The listener without its route config gives no service; the v1
    // cluster is there without endpoints.
    let d = crate::decode::decode(&got).unwrap();
    assert!(d.outbound.is_empty());
    assert!(d.clusters[V1].endpoints.is_empty());
    let sync = st.sync();
    assert_eq!(sync[types::ROUTE].does_not_exist, [RDS]);
    assert_eq!(sync[types::ENDPOINT].does_not_exist, [V1]);

    // A late answer replaces the absence.
    st.on_response(&resp(types::ROUTE, &res.routes, "2", "d"), Instant::now());
    let d = crate::decode::decode(&st.assemble().unwrap()).unwrap();
    assert_eq!(d.outbound.len(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_route_to_a_cluster_cds_lacks_waits_only_the_grace() {
    let res = resources();
    let mut st = SotwState::new(Duration::from_secs(15), Duration::from_secs(2));
    st.on_connect(Instant::now());
    // CDS without the v1 subset cluster the route sends to (an undefined
    // subset, or a server that sends routes before clusters).
    let clusters: Vec<_> = res
        .clusters
        .iter()
        .filter(|c| c.name != V1)
        .cloned()
        .collect();
    let endpoints: Vec<_> = res
        .endpoints
        .iter()
        .filter(|e| e.cluster_name != V1)
        .cloned()
        .collect();
    let now = Instant::now();
    st.on_response(&resp(types::CLUSTER, &clusters, "1", "a"), now);
    st.on_response(&resp(types::ENDPOINT, &endpoints, "1", "b"), now);
    st.on_response(&resp(types::LISTENER, &res.listeners, "1", "c"), now);
    st.on_response(&resp(types::ROUTE, &res.routes, "1", "d"), now);
    assert!(
        st.assemble().is_none(),
        "the route's cluster may still come"
    );

    // It comes within the grace: consistent at once.
    let mut early = SotwState::new(Duration::from_secs(15), Duration::from_secs(2));
    early.on_connect(now);
    early.on_response(&resp(types::CLUSTER, &clusters, "1", "a"), now);
    early.on_response(&resp(types::ENDPOINT, &endpoints, "1", "b"), now);
    early.on_response(&resp(types::LISTENER, &res.listeners, "1", "c"), now);
    early.on_response(&resp(types::ROUTE, &res.routes, "1", "d"), now);
    early.on_response(&resp(types::CLUSTER, &res.clusters, "2", "e"), now);
    early.on_response(&resp(types::ENDPOINT, &res.endpoints, "2", "f"), now);
    assert_eq!(early.assemble().unwrap(), res);

    // It never comes: published without it after 2 s, not 15 s.
    tokio::time::advance(Duration::from_millis(1900)).await;
    assert!(!st.on_timer(Instant::now()));
    tokio::time::advance(Duration::from_millis(100)).await;
    assert!(st.on_timer(Instant::now()));
    let got = st.assemble().unwrap();
    assert!(got.clusters.iter().all(|c| c.name != V1));
    assert_eq!(st.sync()[types::CLUSTER].does_not_exist, [V1]);
}

#[tokio::test(start_paused = true)]
async fn delta_applies_changes_and_removals_and_asks_by_difference() {
    use envoy_types::pb::envoy::service::discovery::v3::{DeltaDiscoveryResponse, Resource};
    fn delta<T: prost::Message + prost::Name>(
        type_url: &str,
        items: &[(String, T)],
        removed: &[&str],
        nonce: &str,
    ) -> DeltaDiscoveryResponse {
        DeltaDiscoveryResponse {
            type_url: type_url.into(),
            nonce: nonce.into(),
            system_version_info: nonce.into(),
            resources: items
                .iter()
                .map(|(n, r)| Resource {
                    name: n.clone(),
                    version: format!("{n}@{nonce}"),
                    resource: Some(any(r)),
                    ..Default::default()
                })
                .collect(),
            removed_resources: removed.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }
    fn named<T: Clone>(v: &[T], f: impl Fn(&T) -> String) -> Vec<(String, T)> {
        v.iter().map(|x| (f(x), x.clone())).collect()
    }
    let res = resources();
    let mut st = SotwState::new(Duration::from_secs(15), Duration::from_secs(2));
    let now = Instant::now();
    let first = st.delta_on_connect(now);
    assert_eq!(first.len(), 2);
    assert_eq!(first[0].resource_names_subscribe, ["*"]);

    let (reqs, ok) = st.delta_on_response(
        &delta(
            types::CLUSTER,
            &named(
                &res.clusters,
                |c: &envoy_types::pb::envoy::config::cluster::v3::Cluster| c.name.clone(),
            ),
            &[],
            "c1",
        ),
        now,
    );
    assert!(ok);
    assert_eq!(reqs[0].response_nonce, "c1");
    assert_eq!(reqs[1].type_url, types::ENDPOINT);
    assert_eq!(reqs[1].resource_names_subscribe.len(), res.clusters.len());
    st.delta_on_response(
        &delta(
            types::ENDPOINT,
            &named(
                &res.endpoints,
                |e: &envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment| {
                    e.cluster_name.clone()
                },
            ),
            &[],
            "e1",
        ),
        now,
    );
    let (reqs, _) = st.delta_on_response(
        &delta(
            types::LISTENER,
            &named(
                &res.listeners,
                |l: &envoy_types::pb::envoy::config::listener::v3::Listener| l.name.clone(),
            ),
            &[],
            "l1",
        ),
        now,
    );
    assert_eq!(reqs[1].resource_names_subscribe, [RDS]);
    st.delta_on_response(
        &delta(
            types::ROUTE,
            &named(&res.routes, |r: &RouteConfiguration| r.name.clone()),
            &[],
            "r1",
        ),
        now,
    );
    assert_eq!(st.assemble().unwrap(), res);

    // The server removes the route config the listener names: absent at
    // once, no timer.
    st.delta_on_response(
        &delta::<RouteConfiguration>(types::ROUTE, &[], &[RDS], "r2"),
        now,
    );
    let d = crate::decode::decode(&st.assemble().unwrap()).unwrap();
    assert!(d.outbound.is_empty());
    // The listener goes: RDS is unsubscribed by difference.
    let (reqs, _) = st.delta_on_response(
        &delta::<envoy_types::pb::envoy::config::listener::v3::Listener>(
            types::LISTENER,
            &[],
            &[&res.listeners[0].name],
            "l2",
        ),
        now,
    );
    assert_eq!(reqs[1].resource_names_unsubscribe, [RDS]);
    // A reconnect tells the server what is held.
    st.on_disconnect();
    let again = st.delta_on_connect(now);
    let cds = again.iter().find(|r| r.type_url == types::CLUSTER).unwrap();
    assert_eq!(cds.initial_resource_versions.len(), res.clusters.len());
    assert!(cds
        .initial_resource_versions
        .values()
        .all(|v| v.ends_with("@c1")));
}

#[test]
fn inbound_listeners_give_the_mtls_mode_per_port() {
    use crate::encode::inbound_listener;
    use mesh_core::model::MtlsMode;
    let mut m = model();
    m.inbound.mtls.mode = MtlsMode::Permissive;
    m.inbound.mtls.ports.insert(8443, MtlsMode::Strict);
    m.inbound.mtls.ports.insert(8080, MtlsMode::Disable);
    let ls: Vec<_> = [8080, 8443, 9090]
        .iter()
        .map(|p| inbound_listener(&m, "0.0.0.0", *p, Default::default()))
        .collect();
    let got = super::inbound::mtls_policy(ls.iter()).unwrap();
    assert_eq!(got.mode_for(8443), MtlsMode::Strict);
    assert_eq!(got.mode_for(8080), MtlsMode::Disable);
    assert_eq!(got.mode_for(9090), MtlsMode::Permissive);
    // Disagreeing ports: others fall back to Istio's default.
    assert_eq!(got.mode, MtlsMode::Permissive);
    // All STRICT: STRICT for every port.
    m.inbound.mtls.ports.clear();
    m.inbound.mtls.mode = MtlsMode::Strict;
    let strict = inbound_listener(&m, "0.0.0.0", 9090, Default::default());
    let got = super::inbound::mtls_policy(std::iter::once(&strict)).unwrap();
    assert_eq!(got.mode_for(1234), MtlsMode::Strict);
    // No inbound listener: nothing to say.
    assert!(super::inbound::mtls_policy(resources().listeners.iter()).is_none());
}

/// The server-listener stream: LDS by name only; the set is published once
/// every name is answered or declared absent by the does-not-exist timer.
#[tokio::test(start_paused = true)]
async fn listeners_only_names_its_listeners_and_waits_for_each() {
    use crate::encode::inbound_listener;
    let m = model();
    let a = crate::encode::inbound_listener_name("0.0.0.0", 9090);
    let b = crate::encode::inbound_listener_name("0.0.0.0", 7777);
    let names: std::collections::BTreeSet<String> = [a.clone(), b.clone()].into();
    let mut st = SotwState::listeners_only(Duration::from_secs(15), names);
    let now = Instant::now();
    let first = st.on_connect(now);
    assert_eq!(
        kinds(&first),
        [(types::LISTENER, vec![b.clone(), a.clone()], "", "", false)]
    );
    let l = inbound_listener(&m, "0.0.0.0", 9090, Default::default());
    let step = st.on_response(&resp(types::LISTENER, &[l], "1", "n1"), now);
    assert!(step.accepted);
    assert_eq!(
        step.requests.len(),
        1,
        "an ACK, no other type: {:?}",
        step.requests
    );
    assert!(st.assemble().is_none(), "7777 is still unanswered");
    let due = st.next_deadline().unwrap();
    assert_eq!(due, now + Duration::from_secs(15));
    assert!(st.on_timer(due));
    let res = st.assemble().unwrap();
    assert_eq!(
        res.listeners
            .iter()
            .map(|l| l.name.clone())
            .collect::<Vec<_>>(),
        [a]
    );
    assert!(res.clusters.is_empty() && res.routes.is_empty());
}
