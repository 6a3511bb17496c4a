//! Bounded load: many SotW streams on loopback, a push that touches every
//! node, and the time until every client has ACKed it. Bounded in clients,
//! resources and time, so it runs in CI on two shared cores.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::time::{Duration, Instant};

use mesh_test_support::ads::{self, snapshot, Client};
use mesh_xds::server::{AdsServer, ServerEvent, SnapshotCache};
use mesh_xds::types;

const CLIENTS: usize = 60;
const CLUSTERS: usize = 100;

fn names(prefix: &str) -> Vec<String> {
    (0..CLUSTERS).map(|i| format!("{prefix}{i}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_clients_converge_on_a_push() {
    let cache = SnapshotCache::new();
    let v1 = names("svc-");
    let v1: Vec<&str> = v1.iter().map(String::as_str).collect();
    for i in 0..CLIENTS {
        cache.set_snapshot(&format!("node-{i}"), snapshot(&v1, &v1[..1]));
    }
    let addr = ads::serve_tcp(AdsServer::new(cache.clone())).await;
    let mut tasks = Vec::new();
    let (done_tx, mut done_rx) = tokio::sync::mpsc::channel(CLIENTS);
    for i in 0..CLIENTS {
        let mut c = Client::connect(&addr, ads::node(&format!("node-{i}"))).await;
        let done = done_tx.clone();
        tasks.push(tokio::spawn(async move {
            c.send(types::CLUSTER, &[], None).await;
            let mut seen = 0;
            loop {
                let r = c.recv().await;
                c.send(types::CLUSTER, &[], Some(&r)).await;
                seen += 1;
                if r.resources.len() == CLUSTERS + 1 {
                    done.send((i, seen)).await.unwrap();
                    // Kept open: dropping the stream would cancel the RPC
                    // before the server reads the ACK.
                    return c;
                }
            }
        }));
    }
    // Wait until every client has its first CDS.
    let t0 = Instant::now();
    let deadline = Duration::from_secs(30);
    while cache.nodes().len() < CLIENTS {
        assert!(t0.elapsed() < deadline, "clients did not connect in time");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // One push adds a cluster for every node.
    let mut v2 = v1.clone();
    v2.push("new");
    let start = Instant::now();
    for i in 0..CLIENTS {
        cache.set_snapshot(&format!("node-{i}"), snapshot(&v2, &v1[..1]));
    }
    let mut finished = 0;
    while finished < CLIENTS {
        let (_, seen) = tokio::time::timeout(deadline, done_rx.recv())
            .await
            .expect("every client converges in time")
            .unwrap();
        assert!(seen <= 2, "a client got {seen} CDS responses: pushes loop");
        finished += 1;
    }
    let converged = start.elapsed();
    // Every node ACKed the new version.
    let t1 = Instant::now();
    loop {
        let all = (0..CLIENTS).all(|i| {
            let st = cache.status(&format!("node-{i}"));
            let snap = cache.snapshot(&format!("node-{i}")).unwrap();
            st[types::CLUSTER].acked.as_deref() == snap.version(types::CLUSTER)
        });
        if all {
            break;
        }
        assert!(t1.elapsed() < deadline, "ACKs not recorded in time");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let acked = start.elapsed();
    println!("{CLIENTS} clients x {CLUSTERS} clusters: push received by all in {converged:?}, ACKed by all in {acked:?}");
    let mut open = Vec::new();
    for t in tasks {
        open.push(t.await.unwrap());
    }
    assert_eq!(cache.nodes().len(), CLIENTS);
}

#[tokio::test]
async fn events_count_every_push_and_ack_of_many_streams() {
    let cache = SnapshotCache::new();
    let server = AdsServer::new(cache.clone());
    let mut events = server.events();
    let addr = ads::serve_tcp(server).await;
    let mut clients = Vec::new();
    for i in 0..5 {
        cache.set_snapshot(&format!("n{i}"), snapshot(&["a"], &["a"]));
        let mut c = Client::connect(&addr, ads::node(&format!("n{i}"))).await;
        c.send(types::CLUSTER, &[], None).await;
        let r = c.recv().await;
        c.send(types::CLUSTER, &[], Some(&r)).await;
        clients.push(c);
    }
    let mut pushed = 0;
    let mut acked = 0;
    while pushed < 5 || acked < 5 {
        match tokio::time::timeout(Duration::from_secs(5), events.recv())
            .await
            .unwrap()
            .unwrap()
        {
            ServerEvent::Pushed { .. } => pushed += 1,
            ServerEvent::Acked { .. } => acked += 1,
            _ => {}
        }
    }
    assert_eq!((pushed, acked), (5, 5));
}
