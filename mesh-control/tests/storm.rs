//! A reconnect storm: 1000 ADS clients connect at once while a config
//! change lands. meshd must stay responsive (`/ready` and `/debug/syncz`
//! answer promptly throughout), every client must end up with the change,
//! pushes keep their order (no route names a cluster its client was not
//! sent; every type ACKed, none NACKed or held) and identical clients
//! share compiles.
//!
//! meshd runs on its own runtime, as it would in its own process, so the
//! clients' work does not queue in front of its HTTP port; the HTTP probe
//! runs on a plain thread with blocking sockets, so what it measures is
//! meshd's answer time and nothing of the clients' runtime.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use mesh_xds::pb::envoy::config::route::v3::{
    route::Action, route_action::ClusterSpecifier, RouteConfiguration,
};
use mesh_xds::pb::envoy::service::discovery::v3::{
    aggregated_discovery_service_client::AggregatedDiscoveryServiceClient, DiscoveryRequest,
    DiscoveryResponse,
};
use mesh_xds::types;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint};

/// ADS streams opened at once.
const CLIENTS: usize = 1000;
/// HTTP/2 connections they share (50 streams each).
const CONNECTIONS: usize = 20;
/// Distinct client identities (label sets): 50 replicas of each.
const IDENTITIES: usize = 20;
/// Services besides the standard ones, so a compile is real work.
const EXTRA_SERVICES: usize = 40;
/// The longest `/ready` or `/debug/syncz` may take. A liveness bound, not a
/// speed target: it only says that no request waits behind a compile or
/// behind a lock held across one, with room for a debug build on two
/// shared cores. Waiting behind the storm's compiles takes seconds (1.4 to
/// 5 s when compiles held the controller's lock).
const MAX_HTTP: Duration = Duration::from_millis(500);
/// How long every client may take to converge after the change is written.
const CONVERGE_WITHIN: Duration = Duration::from_secs(40);

/// The standard config plus `EXTRA_SERVICES` services with one endpoint
/// each, all visible to the clients.
fn write_storm_config(dir: &std::path::Path) {
    write_config(dir);
    let mut extra = String::new();
    for i in 0..EXTRA_SERVICES {
        extra.push_str(&format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: svc-{i}, namespace: demo}}\nspec:\n  selector: {{app: svc-{i}}}\n  ports:\n  - {{name: http, port: 80}}\n---\napiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {{name: svc-{i}-1, namespace: demo}}\nspec:\n  address: 10.1.{}.{}\n  labels: {{app: svc-{i}}}\n---\n",
            i / 200,
            i % 200 + 1
        ));
    }
    std::fs::write(dir.join("extra.yaml"), extra).unwrap();
}

/// What the probe saw.
#[derive(Debug, Default)]
struct Probe {
    ready_max: Duration,
    ready_count: usize,
    syncz_max: Duration,
    syncz_count: usize,
    syncz_rows: usize,
}

/// A blocking `GET path`: status, body and how long the answer took
/// (connect to last byte).
fn get(addr: SocketAddr, path: &str) -> (u16, String, Duration) {
    let t = Instant::now();
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: meshd\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)
        .unwrap_or_else(|e| panic!("{path}: no answer within 20 s: {e}"));
    let took = t.elapsed();
    let text = String::from_utf8(buf).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, body.to_string(), took)
}

/// Polls `/ready` and `/debug/syncz` until `stop`, keeping the worst times.
fn probe(addr: SocketAddr, stop: Arc<AtomicBool>) -> Probe {
    let mut p = Probe::default();
    while !stop.load(Ordering::Acquire) {
        let (status, body, took) = get(addr, "/ready");
        assert_eq!(status, 200, "/ready during the storm: {body}");
        p.ready_max = p.ready_max.max(took);
        p.ready_count += 1;
        let (status, body, took) = get(addr, "/debug/syncz");
        assert_eq!(status, 200, "/debug/syncz during the storm: {body}");
        p.syncz_max = p.syncz_max.max(took);
        p.syncz_count += 1;
        // Counted, not parsed: the probe should not compete with meshd for
        // the two cores more than it must.
        p.syncz_rows = body.matches("\"node\":").count();
        // A stall behind compiles lasts seconds: a poll every 50 ms sees it.
        std::thread::sleep(Duration::from_millis(50));
    }
    p
}

/// What the clients report.
struct Progress {
    /// Clients that got their first response.
    started: AtomicUsize,
    /// Clients whose web route carries the new timeout.
    converged: AtomicUsize,
    /// Per client, what it last got of each type (for a failure message).
    seen: std::sync::Mutex<std::collections::BTreeMap<usize, String>>,
    /// Route configurations that named a cluster the client had not been
    /// sent (make-before-break broken), as `client: route -> cluster`.
    unordered: std::sync::Mutex<Vec<String>>,
}

/// Clusters the routes of `rc` send to.
fn route_clusters(rc: &RouteConfiguration) -> Vec<String> {
    rc.virtual_hosts
        .iter()
        .flat_map(|v| &v.routes)
        .filter_map(|r| match r.action.as_ref()? {
            Action::Route(a) => a.cluster_specifier.as_ref(),
            _ => None,
        })
        .flat_map(|c| match c {
            ClusterSpecifier::Cluster(name) => vec![name.clone()],
            ClusterSpecifier::WeightedClusters(w) => {
                w.clusters.iter().map(|c| c.name.clone()).collect()
            }
            _ => Vec::new(),
        })
        .collect()
}

fn request(
    node: Option<&mesh_xds::pb::envoy::config::core::v3::Node>,
    type_url: &str,
    names: &[String],
    last: Option<&DiscoveryResponse>,
) -> DiscoveryRequest {
    DiscoveryRequest {
        node: node.cloned(),
        type_url: type_url.into(),
        resource_names: names.to_vec(),
        version_info: last.map(|r| r.version_info.clone()).unwrap_or_default(),
        response_nonce: last.map(|r| r.nonce.clone()).unwrap_or_default(),
        ..Default::default()
    }
}

/// One client, as a proxyless gRPC client speaks SotW: LDS and CDS
/// wildcard, RDS and EDS by the names those reference, every response
/// ACKed. Reports when its web route has `want` in it; runs until the
/// stream ends.
async fn client(ch: Channel, i: usize, want: &'static str, progress: Arc<Progress>) {
    let node = node(
        &format!("storm-{i}"),
        "demo",
        &[("app", &format!("client-{}", i % IDENTITIES))],
        &[],
    );
    let (tx, rx) = mpsc::channel(16);
    tx.send(request(Some(&node), types::CLUSTER, &[], None))
        .await
        .unwrap();
    tx.send(request(None, types::LISTENER, &[], None))
        .await
        .unwrap();
    let mut responses = AggregatedDiscoveryServiceClient::new(ch)
        .stream_aggregated_resources(ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    let (mut eds, mut rds): (Vec<String>, Vec<String>) = (Vec::new(), Vec::new());
    let mut last = std::collections::BTreeMap::<String, DiscoveryResponse>::new();
    let mut first = true;
    let mut converged = false;
    while let Ok(Some(r)) = responses.message().await {
        if std::mem::take(&mut first) {
            progress.started.fetch_add(1, Ordering::Relaxed);
        }
        let t = r.type_url.clone();
        let names = match t.as_str() {
            types::ENDPOINT => eds.clone(),
            types::ROUTE => rds.clone(),
            _ => Vec::new(),
        };
        // ACK with the same subscription.
        tx.send(request(None, &t, &names, Some(&r))).await.unwrap();
        match t.as_str() {
            types::CLUSTER => {
                let now = eds_names(&r);
                if now != eds {
                    eds = now;
                    tx.send(request(
                        None,
                        types::ENDPOINT,
                        &eds,
                        last.get(types::ENDPOINT),
                    ))
                    .await
                    .unwrap();
                }
            }
            types::LISTENER => {
                let now = rds_names(&r);
                if now != rds {
                    rds = now;
                    tx.send(request(None, types::ROUTE, &rds, last.get(types::ROUTE)))
                        .await
                        .unwrap();
                }
            }
            types::ROUTE => {
                let have: BTreeSet<String> = last
                    .get(types::CLUSTER)
                    .map(|c| clusters(c).into_iter().map(|c| c.name).collect())
                    .unwrap_or_default();
                for rc in routes(&r) {
                    for c in route_clusters(&rc)
                        .into_iter()
                        .filter(|c| !have.contains(c))
                    {
                        progress
                            .unordered
                            .lock()
                            .unwrap()
                            .push(format!("storm-{i}: {} -> {c}", rc.name));
                    }
                    if !converged && rc.name == WEB_RDS && format!("{rc:?}").contains(want) {
                        converged = true;
                        progress.converged.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            _ => {}
        }
        last.insert(t, r);
        let summary = last
            .values()
            .map(|r| {
                format!(
                    "{}={}",
                    r.type_url.rsplit('.').next().unwrap_or(""),
                    r.version_info
                )
            })
            .collect::<Vec<_>>()
            .join(" ");
        progress
            .seen
            .lock()
            .unwrap()
            .insert(i, format!("{summary} rds={rds:?} converged={converged}"));
    }
}

#[test]
fn a_thousand_clients_connecting_during_a_change_neither_stall_http_nor_miss_the_change() {
    let dir = tempfile::tempdir().unwrap();
    write_storm_config(dir.path());
    let server_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("meshd")
        .enable_all()
        .build()
        .unwrap();
    let client_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("clients")
        .enable_all()
        .build()
        .unwrap();
    let meshd = server_rt.block_on(start(dir.path()));
    let (xds, http) = (meshd.xds_addr(), meshd.http_addr());
    assert_eq!(get(http, "/ready").0, 200);

    let stop = Arc::new(AtomicBool::new(false));
    let prober = {
        let stop = stop.clone();
        std::thread::spawn(move || probe(http, stop))
    };

    let progress = Arc::new(Progress {
        started: AtomicUsize::new(0),
        converged: AtomicUsize::new(0),
        seen: Default::default(),
        unordered: Default::default(),
    });
    let storm_start = Instant::now();
    let (write_after, converge_time) = client_rt.block_on(async {
        let mut channels = Vec::new();
        for _ in 0..CONNECTIONS {
            let ch = Endpoint::from_shared(format!("http://{xds}"))
                .unwrap()
                .connect()
                .await
                .unwrap();
            channels.push(ch);
        }
        for i in 0..CLIENTS {
            tokio::spawn(client(
                channels[i % CONNECTIONS].clone(),
                i,
                "seconds: 7",
                progress.clone(),
            ));
        }
        // The change lands while the storm is under way: a quarter of the
        // clients have their first response, the rest are still arriving.
        let deadline = Instant::now() + CONVERGE_WITHIN;
        while progress.started.load(Ordering::Relaxed) < CLIENTS / 4 {
            assert!(
                Instant::now() < deadline,
                "only {} of {CLIENTS} clients got a first response",
                progress.started.load(Ordering::Relaxed)
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let write_after = storm_start.elapsed();
        std::fs::write(dir.path().join("web-vs.yaml"), web_vs("7s")).unwrap();
        let written = Instant::now();
        while progress.converged.load(Ordering::Relaxed) < CLIENTS
            && written.elapsed() < CONVERGE_WITHIN
        {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        (write_after, written.elapsed())
    });
    stop.store(true, Ordering::Release);
    let p = prober.join().unwrap();
    eprintln!(
        "storm: {CLIENTS} clients, change written {write_after:?} after they started, {} converged {converge_time:?} after it; \
         /ready max {:?} over {} polls, /debug/syncz max {:?} over {} polls (last: {} rows)",
        progress.converged.load(Ordering::Relaxed),
        p.ready_max, p.ready_count, p.syncz_max, p.syncz_count, p.syncz_rows
    );
    let converged = progress.converged.load(Ordering::Relaxed);
    if converged < CLIENTS {
        let seen = progress.seen.lock().unwrap();
        let behind: Vec<String> = seen
            .iter()
            .filter(|(_, s)| s.ends_with("converged=false"))
            .take(5)
            .map(|(i, s)| format!("storm-{i}: {s}"))
            .collect();
        let (_, syncz, _) = get(http, "/debug/syncz");
        let rows: serde_json::Value = serde_json::from_str(&syncz).unwrap();
        let rows: Vec<String> = rows
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| {
                behind
                    .iter()
                    .any(|b| b.starts_with(&format!("{}:", r["node"].as_str().unwrap_or(""))))
            })
            .map(|r| r.to_string())
            .collect();
        panic!(
            "{converged} of {CLIENTS} clients have the change after {converge_time:?} ({} got a first response); behind:\n{}\nmeshd says:\n{}",
            progress.started.load(Ordering::Relaxed),
            behind.join("\n"),
            rows.join("\n")
        );
    }
    assert!(p.ready_count >= 3 && p.syncz_count >= 3, "{p:?}");
    assert!(p.ready_max < MAX_HTTP, "/ready took {:?}", p.ready_max);
    assert!(
        p.syncz_max < MAX_HTTP,
        "/debug/syncz took {:?}",
        p.syncz_max
    );

    // Make before break held for everyone: no route named a cluster its
    // client had not been sent.
    let unordered = progress.unordered.lock().unwrap();
    assert!(
        unordered.is_empty(),
        "{:?}",
        &unordered[..unordered.len().min(5)]
    );

    // meshd's own view agrees: the new generation served, and every node
    // listed with each type ACKed at its current version (no NACK, nothing
    // held back), once the last ACKs are read.
    assert_eq!(meshd.generation(), Some(2));
    // Identical clients shared compiles: at most one per identity and
    // generation, for a thousand clients.
    let compiles = meshd.controller().metrics().compilations.get();
    assert!(compiles <= 2 * IDENTITIES as u64, "{compiles} compiles");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, body, _) = get(http, "/debug/syncz");
        let rows: serde_json::Value = serde_json::from_str(&body).unwrap();
        let rows = rows.as_array().unwrap();
        let nodes: BTreeSet<&str> = rows.iter().filter_map(|r| r["node"].as_str()).collect();
        let behind: Vec<&serde_json::Value> = rows
            .iter()
            .filter(|r| {
                ["CDS", "EDS", "LDS", "RDS"]
                    .iter()
                    .any(|t| r["types"][t]["state"] != "SYNCED")
            })
            .collect();
        if nodes.len() == CLIENTS && behind.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{} nodes in /debug/syncz, {} not SYNCED, e.g. {:?}",
            nodes.len(),
            behind.len(),
            behind.first()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    server_rt.block_on(meshd.shutdown());
    client_rt.shutdown_timeout(Duration::from_secs(5));
    server_rt.shutdown_timeout(Duration::from_secs(5));
}
