//! A rollout through the xDS-fed SDK under steady traffic: add subset v2,
//! split 50/50, then move everything to v2 and remove subset v1, while
//! requests flow. The client only applies consistent sets (never a route
//! to a cluster it does not have), so no request fails.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test setup

#[path = "xds_support.rs"]
mod xds_support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http_body_util::BodyExt;
use mesh_core::model::Client;
use mesh_tower::{body, Mesh};
use mesh_xds::server::{AdsServer, SnapshotCache};
use xds_support::backend;

/// `subsets` defined; `route` as (subset, weight).
fn config(v1: u16, v2: u16, subsets: &[&str], route: &[(&str, u32)]) -> String {
    let subsets: String = subsets
        .iter()
        .map(|s| format!("  - {{name: {s}, labels: {{version: {s}}}}}\n"))
        .collect();
    let route: String = route
        .iter()
        .map(|(s, w)| {
            format!("    - destination: {{host: reviews, subset: {s}}}\n      weight: {w}\n")
        })
        .collect();
    format!(
        "apiVersion: v1
kind: Service
metadata: {{name: reviews, namespace: default}}
spec:
  selector: {{app: reviews}}
  ports: [{{name: http, port: 9080}}]
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: reviews-v1, namespace: default}}
spec:
  address: 127.0.0.1
  ports: {{http: {v1}}}
  labels: {{app: reviews, version: v1}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: reviews-v2, namespace: default}}
spec:
  address: 127.0.0.1
  ports: {{http: {v2}}}
  labels: {{app: reviews, version: v2}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: reviews, namespace: default}}
spec:
  host: reviews
  subsets:
{subsets}---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: reviews, namespace: default}}
spec:
  hosts: [reviews]
  http:
  - route:
{route}"
    )
}

fn workload() -> Client {
    xds_support::workload(None)
}

fn publish(cache: &SnapshotCache, yaml: &str) {
    xds_support::publish(cache, yaml, &workload());
}

async fn rollout(delta: bool) {
    let v1 = backend("v1").await;
    let v2 = backend("v2").await;
    let (p1, p2) = (v1.port(), v2.port());
    let cache = SnapshotCache::new();
    publish(&cache, &config(p1, p2, &["v1"], &[("v1", 100)]));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let incoming = futures_util::stream::unfold(listener, |l| async move {
        Some((l.accept().await.map(|(s, _)| s), l))
    });
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(AdsServer::new(cache.clone()).into_service())
            .serve_with_incoming(incoming),
    );
    let mesh = Mesh::xds([url])
        .namespace("default")
        .labels(workload().labels)
        .xds_tuning(move |c| c.delta = delta)
        .build()
        .await
        .unwrap();

    // Steady traffic, bounded in count, recording every answer in order.
    let client = mesh.http_client();
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = stop.clone();
    let traffic = tokio::spawn(async move {
        let mut seen = Vec::new();
        for _ in 0..20_000 {
            if stop2.load(Ordering::Relaxed) {
                break;
            }
            let req = http::Request::get("http://reviews:9080/")
                .body(body::empty())
                .unwrap();
            let resp = client.request(req).await.unwrap();
            let status = resp.status().as_u16();
            let body = resp.into_body().collect().await.unwrap().to_bytes();
            seen.push((status, String::from_utf8_lossy(&body).into_owned()));
        }
        seen
    });

    let mut rx = mesh.model();
    for yaml in [
        config(p1, p2, &["v1", "v2"], &[("v1", 100)]),
        config(p1, p2, &["v1", "v2"], &[("v1", 50), ("v2", 50)]),
        config(p1, p2, &["v1", "v2"], &[("v2", 100)]),
        config(p1, p2, &["v2"], &[("v2", 100)]),
    ] {
        tokio::time::sleep(Duration::from_millis(150)).await;
        rx.borrow_and_update();
        publish(&cache, &yaml);
        tokio::time::timeout(Duration::from_secs(10), rx.changed())
            .await
            .unwrap()
            .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(150)).await;
    stop.store(true, Ordering::Relaxed);
    let seen = traffic.await.unwrap();

    let failed: Vec<_> = seen.iter().filter(|(s, _)| *s != 200).collect();
    assert!(
        failed.is_empty(),
        "{} of {} failed: {:?}",
        failed.len(),
        seen.len(),
        &failed[..failed.len().min(5)]
    );
    assert!(seen.len() > 50, "only {} requests", seen.len());
    assert_eq!(seen.first().unwrap().1, "v1");
    assert_eq!(seen.last().unwrap().1, "v2");
    assert!(seen.iter().any(|(_, b)| b == "v2") && seen.iter().any(|(_, b)| b == "v1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollout_under_traffic_loses_no_request() {
    rollout(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollout_under_traffic_over_delta_loses_no_request() {
    rollout(true).await;
}

/// An ADS server in its own runtime thread: stopping it closes every
/// connection at once, as a crashed control plane would.
fn killable_server(
    cache: SnapshotCache,
    addr: SocketAddr,
) -> (
    SocketAddr,
    tokio::sync::oneshot::Sender<()>,
    std::thread::JoinHandle<()>,
) {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let (tx, rx) = std::sync::mpsc::channel();
    let thread = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let sock = tokio::net::TcpSocket::new_v4().unwrap();
            sock.set_reuseaddr(true).unwrap();
            sock.bind(addr).unwrap();
            let listener = sock.listen(64).unwrap();
            tx.send(listener.local_addr().unwrap()).unwrap();
            let incoming = futures_util::stream::unfold(listener, |l| async move {
                Some((l.accept().await.map(|(s, _)| s), l))
            });
            let serve = tonic::transport::Server::builder()
                .add_service(AdsServer::new(cache).into_service())
                .serve_with_incoming(incoming);
            tokio::select! {
                _ = serve => {}
                _ = stopped => {}
            }
        });
    });
    (rx.recv().unwrap(), stop, thread)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_plane_killed_under_traffic_loses_no_request_and_resyncs() {
    let v1 = backend("v1").await;
    let v2 = backend("v2").await;
    let (p1, p2) = (v1.port(), v2.port());
    let cache = SnapshotCache::new();
    publish(&cache, &config(p1, p2, &["v1", "v2"], &[("v1", 100)]));
    let (addr, stop, thread) = killable_server(cache.clone(), "127.0.0.1:0".parse().unwrap());
    let mesh = Mesh::xds([format!("http://{addr}")])
        .namespace("default")
        .labels(workload().labels)
        .xds_tuning(|c| {
            c.backoff_base = Duration::from_millis(50);
            c.backoff_max = Duration::from_millis(200);
        })
        .build()
        .await
        .unwrap();
    let client = mesh.http_client();
    let stop_traffic = Arc::new(AtomicBool::new(false));
    let stop2 = stop_traffic.clone();
    let traffic = tokio::spawn(async move {
        let mut seen = Vec::new();
        for _ in 0..20_000 {
            if stop2.load(Ordering::Relaxed) {
                break;
            }
            let req = http::Request::get("http://reviews:9080/")
                .body(body::empty())
                .unwrap();
            let resp = client.request(req).await.unwrap();
            let status = resp.status().as_u16();
            let body = resp.into_body().collect().await.unwrap().to_bytes();
            seen.push((status, String::from_utf8_lossy(&body).into_owned()));
        }
        seen
    });

    tokio::time::sleep(Duration::from_millis(150)).await;
    let _ = stop.send(());
    thread.join().unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while mesh.xds_status().unwrap().connected.is_some() {
        assert!(tokio::time::Instant::now() < deadline, "still connected");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Down for a while: traffic keeps flowing on the last good config.
    tokio::time::sleep(Duration::from_millis(400)).await;

    // Back, with v2 as the destination: the client resyncs.
    let mut rx = mesh.model();
    rx.borrow_and_update();
    publish(&cache, &config(p1, p2, &["v1", "v2"], &[("v2", 100)]));
    let (_, restarted_stop, restarted) = killable_server(cache.clone(), addr);
    tokio::time::timeout(Duration::from_secs(10), rx.changed())
        .await
        .unwrap()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(150)).await;
    stop_traffic.store(true, Ordering::Relaxed);
    let seen = traffic.await.unwrap();
    let failed = seen.iter().filter(|(s, _)| *s != 200).count();
    assert_eq!(failed, 0, "{failed} of {} failed", seen.len());
    assert_eq!(seen.first().unwrap().1, "v1");
    assert_eq!(seen.last().unwrap().1, "v2");
    let _ = restarted_stop.send(());
    restarted.join().unwrap();
}
