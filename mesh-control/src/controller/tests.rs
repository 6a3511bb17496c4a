//! The compile worker without sockets: identical nodes share a compile,
//! and changes that land while rounds are compiling reach every node.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use mesh_core::compile::Compiler;
use mesh_core::config::load::load_str;
use mesh_core::config::MeshConfig;
use mesh_xds::node::NodeInfo;
use mesh_xds::pb::envoy::config::core::v3::Node;
use mesh_xds::pb::google::protobuf::{value::Kind, Struct, Value};
use mesh_xds::server::SnapshotCache;
use tokio::time::Instant;

use super::Controller;
use crate::compile::{self, ClientKey};
use crate::load::Generation;
use crate::metrics::Metrics;

const CONFIG: &str = "apiVersion: v1\nkind: Service\nmetadata: {name: a, namespace: demo}\nspec:\n  selector: {app: a}\n  ports: [{name: http, port: 80}]\n---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: a, namespace: demo}\nspec:\n  hosts: [a]\n  http:\n  - timeout: TIMEOUT\n    route: [{destination: {host: a}}]\n";

fn generation(number: u64) -> Generation {
    let yaml = CONFIG.replace("TIMEOUT", &format!("{number}s"));
    Generation {
        number,
        resources: Arc::new(load_str(&yaml, "t.yaml").into_result().unwrap()),
        mesh: Arc::new(MeshConfig::default()),
        files: vec!["t.yaml".into()],
        findings: Vec::new(),
        applied_at: SystemTime::now(),
        skipped: Vec::new(),
        kube_objects: 0,
    }
}

fn node(id: &str, app: &str) -> NodeInfo {
    node_at(id, app, None)
}

/// A node with `INSTANCE_IPS` (every pod has its own).
fn node_at(id: &str, app: &str, ip: Option<&str>) -> NodeInfo {
    let s = |v: &str| Value {
        kind: Some(Kind::StringValue(v.into())),
    };
    let mut labels = Struct::default();
    labels.fields.insert("app".into(), s(app));
    let mut md = Struct::default();
    md.fields.insert("NAMESPACE".into(), s("demo"));
    if let Some(ip) = ip {
        md.fields.insert("INSTANCE_IPS".into(), s(ip));
    }
    md.fields.insert(
        "LABELS".into(),
        Value {
            kind: Some(Kind::StructValue(labels)),
        },
    );
    NodeInfo::from_node(&Node {
        id: id.into(),
        metadata: Some(md),
        ..Default::default()
    })
}

fn start() -> (Controller, SnapshotCache, tokio::task::JoinHandle<()>) {
    let cache = SnapshotCache::new();
    let ctl = Controller::new(cache.clone(), Arc::new(Metrics::new()));
    let worker = tokio::spawn(ctl.clone().run());
    (ctl, cache, worker)
}

/// Waits until every node in `nodes` holds what generation `number`
/// compiles to for it.
async fn all_hold(cache: &SnapshotCache, nodes: &[NodeInfo], number: u64) {
    let g = generation(number);
    let compiler = Compiler::new(g.resources.as_ref().clone(), MeshConfig::default());
    let deadline = Instant::now() + Duration::from_secs(20);
    for n in nodes {
        let want = compile::snapshot(&compiler, &ClientKey::of(n));
        loop {
            let have = cache.snapshot(&n.id).map(|v| v.to_snapshot());
            if have.is_some_and(|h| compile::stabilize(&h, want.clone()).1) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{} does not hold generation {number}",
                n.id
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_identical_nodes_cost_one_compile() {
    let (ctl, cache, worker) = start();
    ctl.apply(generation(1), Instant::now());
    ctl.serving(1).await;
    let nodes: Vec<NodeInfo> = (0..1000)
        .map(|i| node(&format!("n{i}"), "client"))
        .collect();
    for n in &nodes {
        ctl.node_seen(n);
    }
    all_hold(&cache, &nodes, 1).await;
    assert_eq!(ctl.metrics().compilations.get(), 1);
    // A change: one compile again, for all of them.
    ctl.apply(generation(2), Instant::now());
    all_hold(&cache, &nodes, 2).await;
    assert_eq!(ctl.metrics().compilations.get(), 2);
    worker.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_landing_while_rounds_compile_reach_every_node() {
    let (ctl, cache, worker) = start();
    ctl.apply(generation(1), Instant::now());
    let mut nodes = Vec::new();
    // Nodes of four identities keep arriving while generations keep
    // landing, at every offset from the rounds in flight.
    for g in 2..=40u64 {
        for i in 0..10 {
            let n = node(&format!("g{g}-{i}"), &format!("app-{}", i % 4));
            ctl.node_seen(&n);
            nodes.push(n);
        }
        ctl.apply(generation(g), Instant::now());
        tokio::time::sleep(Duration::from_micros(300 * (g % 5))).await;
    }
    tokio::time::timeout(Duration::from_secs(20), ctl.serving(40))
        .await
        .expect("the last generation is served");
    assert_eq!(ctl.generation().map(|g| g.number), Some(40));
    all_hold(&cache, &nodes, 40).await;
    worker.abort();
}

#[tokio::test]
async fn ready_state_never_waits_for_the_node_table() {
    let (ctl, _cache, worker) = start();
    ctl.apply(generation(1), Instant::now());
    ctl.serving(1).await;
    // Even with the node table locked (as a long section would), the
    // served generation and the rejections answer.
    let held = ctl.lock();
    assert_eq!(ctl.generation().map(|g| g.number), Some(1));
    assert_eq!(ctl.rejections(), 0);
    assert!(ctl.rejection().is_none());
    drop(held);
    worker.abort();
}

/// Compiled results go with the last node of their identity, so nodes
/// that come and go leave nothing behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compiled_results_leave_with_the_last_node_of_their_identity() {
    let (ctl, cache, worker) = start();
    ctl.apply(generation(1), Instant::now());
    ctl.serving(1).await;
    let nodes: Vec<NodeInfo> = (0..6)
        .map(|i| node(&format!("n{i}"), &format!("app-{}", i % 3)))
        .collect();
    for n in &nodes {
        ctl.node_seen(n);
    }
    all_hold(&cache, &nodes, 1).await;
    let kept = |ctl: &Controller| {
        let st = ctl.lock();
        let memo = st.built.as_ref().map_or(0, |b| b.memo.len());
        (st.latest.len(), memo)
    };
    assert_eq!(kept(&ctl), (3, 3));
    // One node of each identity leaves: the others still need theirs.
    for n in &nodes[..3] {
        ctl.disconnected(&n.id, 0);
    }
    assert_eq!(kept(&ctl), (3, 3));
    for n in &nodes[3..] {
        ctl.disconnected(&n.id, 0);
    }
    assert_eq!(kept(&ctl), (0, 0), "nothing kept for nodes that are gone");
    worker.abort();
}

/// Pods of one app differ by IP. A pod that serves no port shares its
/// app's compile and its copy of the resources; one that serves a port
/// shares them too, plus its own server listeners named by its IP.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_of_one_app_share_its_resources_whatever_their_ips() {
    let (ctl, cache, worker) = start();
    ctl.apply(generation(1), Instant::now());
    ctl.serving(1).await;
    let clients: Vec<NodeInfo> = (0..200)
        .map(|i| node_at(&format!("c{i}"), "client", Some(&format!("10.1.0.{i}"))))
        .collect();
    for n in &clients {
        ctl.node_seen(n);
    }
    all_hold(&cache, &clients, 1).await;
    assert_eq!(ctl.metrics().compilations.get(), 1);
    let first = cache.snapshot("c0").unwrap();
    for n in &clients {
        let v = cache.snapshot(&n.id).unwrap();
        assert!(
            Arc::ptr_eq(&v.content, &first.content),
            "{} has a copy",
            n.id
        );
    }

    let servers: Vec<NodeInfo> = (0..3)
        .map(|i| node_at(&format!("s{i}"), "a", Some(&format!("10.2.0.{i}"))))
        .collect();
    for n in &servers {
        ctl.node_seen(n);
    }
    all_hold(&cache, &servers, 1).await;
    assert_eq!(ctl.metrics().compilations.get(), 2);
    let s0 = cache.snapshot("s0").unwrap();
    for (i, n) in servers.iter().enumerate() {
        let v = cache.snapshot(&n.id).unwrap();
        assert!(Arc::ptr_eq(&v.content, &s0.content), "{} has a copy", n.id);
        let listeners = v.resources(mesh_xds::types::LISTENER).unwrap();
        let own = format!("xds.istio.io/grpc/lds/inbound/10.2.0.{i}:80");
        assert!(listeners.contains_key(&own), "{} lacks {own}", n.id);
        let other = format!("xds.istio.io/grpc/lds/inbound/10.2.0.{}:80", (i + 1) % 3);
        assert!(!listeners.contains_key(&other), "{} has {other}", n.id);
        // Its own listener with its app's four on the shared addresses.
        let overlay = v.overlay.as_ref().unwrap();
        let own = overlay.snapshot.resources(mesh_xds::types::LISTENER);
        assert_eq!(own.unwrap().len(), 5);
        // The outbound side is the clients' too: they see the same.
        assert!(Arc::ptr_eq(&v.content, &first.content));
    }

    // A change: still one compile per app.
    ctl.apply(generation(2), Instant::now());
    all_hold(&cache, &clients, 2).await;
    all_hold(&cache, &servers, 2).await;
    assert_eq!(ctl.metrics().compilations.get(), 4);

    for n in clients.iter().chain(&servers) {
        ctl.disconnected(&n.id, 0);
    }
    let st = ctl.lock();
    assert!(st.latest.is_empty(), "nothing kept for nodes that are gone");
    assert!(st.built.as_ref().is_some_and(|b| b.memo.is_empty()));
    drop(st);
    worker.abort();
}

fn generation_of(number: u64, yaml: &str) -> Generation {
    Generation {
        number,
        resources: Arc::new(load_str(yaml, "t.yaml").into_result().unwrap()),
        mesh: Arc::new(MeshConfig::default()),
        files: vec!["t.yaml".into()],
        findings: Vec::new(),
        applied_at: SystemTime::now(),
        skipped: Vec::new(),
        kube_objects: 0,
    }
}

/// An endpoint-only change (a workload joins a service) moves EDS alone:
/// listeners, routes and clusters keep their versions, so nothing but the
/// endpoints is pushed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_change_moves_endpoints_alone() {
    let workload = |name: &str, ip: &str| {
        format!("---\napiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {{name: {name}, namespace: demo}}\nspec:\n  address: {ip}\n  labels: {{app: a}}\n")
    };
    let base = CONFIG.replace("TIMEOUT", "5s");
    let one = format!("{base}{}", workload("a1", "10.0.0.1"));
    let two = format!("{one}{}", workload("a2", "10.0.0.2"));
    let (ctl, cache, worker) = start();
    ctl.apply(generation_of(1, &one), Instant::now());
    ctl.serving(1).await;
    let n = node("n0", "client");
    ctl.node_seen(&n);
    let deadline = Instant::now() + Duration::from_secs(20);
    while cache.snapshot("n0").is_none() {
        assert!(Instant::now() < deadline, "n0 was never served");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let before = cache.snapshot("n0").unwrap();
    ctl.apply(generation_of(2, &two), Instant::now());
    ctl.serving(2).await;
    let after = loop {
        let v = cache.snapshot("n0").unwrap();
        if v.version(mesh_xds::types::ENDPOINT) != before.version(mesh_xds::types::ENDPOINT) {
            break v;
        }
        assert!(
            Instant::now() < deadline,
            "the new endpoint never reached n0"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    for t in [
        mesh_xds::types::LISTENER,
        mesh_xds::types::ROUTE,
        mesh_xds::types::CLUSTER,
    ] {
        assert_eq!(after.version(t), before.version(t), "{t} moved");
    }
    worker.abort();
}
