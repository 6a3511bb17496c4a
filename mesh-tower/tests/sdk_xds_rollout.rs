//! A rollout through the xDS-fed SDK under steady traffic: add subset v2,
//! split 50/50, then move everything to v2 and remove subset v1, while
//! requests flow. The client only applies consistent sets (never a route
//! to a cluster it does not have), so no request fails. Each step waits
//! for requests to have been answered under it, not for a guessed time.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test setup

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http_body_util::BodyExt;
use mesh_core::model::Client;
use mesh_test_support::ads::TestServer;
use mesh_test_support::backends::named as backend;
use mesh_test_support::configs::versioned_service;
use mesh_test_support::sdk::{self, ads_server};
use mesh_test_support::wait;
use mesh_test_support::xds_client::reconnect_failed;
use mesh_tower::{body, Mesh, MeshClient};
use mesh_xds::server::SnapshotCache;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Requests answered under each step before the next one.
const PER_STEP: usize = 20;

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
        "{}apiVersion: networking.istio.io/v1
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
{route}",
        versioned_service("reviews", "http", 9080, &[("v1", v1), ("v2", v2)])
    )
}

fn workload() -> Client {
    sdk::workload(None)
}

fn publish(cache: &SnapshotCache, yaml: &str) {
    sdk::publish(cache, yaml, &workload());
}

/// Steady traffic: one request after another (at most 20 000) until
/// stopped, every answer recorded in order.
struct Traffic {
    answered: watch::Receiver<usize>,
    stop: Arc<AtomicBool>,
    task: JoinHandle<Vec<(u16, String)>>,
}

impl Traffic {
    fn start(client: MeshClient) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let (count, answered) = watch::channel(0);
        let stopped = stop.clone();
        let task = tokio::spawn(async move {
            let mut seen = Vec::new();
            for _ in 0..20_000 {
                if stopped.load(Ordering::Relaxed) {
                    break;
                }
                let req = http::Request::get("http://reviews:9080/")
                    .body(body::empty())
                    .unwrap();
                let resp = client.request(req).await.unwrap();
                let status = resp.status().as_u16();
                let body = resp.into_body().collect().await.unwrap().to_bytes();
                seen.push((status, String::from_utf8_lossy(&body).into_owned()));
                count.send_replace(seen.len());
            }
            seen
        });
        Self {
            answered,
            stop,
            task,
        }
    }

    /// Waits until `n` more requests have been answered.
    async fn more(&mut self, n: usize) {
        let want = *self.answered.borrow() + n;
        tokio::time::timeout(
            Duration::from_secs(10),
            self.answered.wait_for(|c| *c >= want),
        )
        .await
        .unwrap_or_else(|_| panic!("fewer than {want} requests answered in 10s"))
        .expect("the traffic stopped early");
    }

    /// Stops it; every answer, in order.
    async fn stop(self) -> Vec<(u16, String)> {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.unwrap()
    }
}

async fn rollout(delta: bool) {
    let v1 = backend("v1").await;
    let v2 = backend("v2").await;
    let (p1, p2) = (v1.port(), v2.port());
    let cache = SnapshotCache::new();
    publish(&cache, &config(p1, p2, &["v1"], &[("v1", 100)]));
    let url = ads_server(cache.clone()).await;
    let mesh = Mesh::xds([url])
        .namespace("default")
        .labels(workload().labels)
        .xds_tuning(move |c| c.delta = delta)
        .build()
        .await
        .unwrap();

    let mut traffic = Traffic::start(mesh.http_client());
    let mut rx = mesh.model();
    for yaml in [
        config(p1, p2, &["v1", "v2"], &[("v1", 100)]),
        config(p1, p2, &["v1", "v2"], &[("v1", 50), ("v2", 50)]),
        config(p1, p2, &["v1", "v2"], &[("v2", 100)]),
        config(p1, p2, &["v2"], &[("v2", 100)]),
    ] {
        traffic.more(PER_STEP).await;
        rx.borrow_and_update();
        publish(&cache, &yaml);
        tokio::time::timeout(Duration::from_secs(10), rx.changed())
            .await
            .unwrap()
            .unwrap();
    }
    // At most one request was in flight when the last step arrived: the
    // ones after it went to v2.
    traffic.more(PER_STEP).await;
    let seen = traffic.stop().await;

    let failed: Vec<_> = seen.iter().filter(|(s, _)| *s != 200).collect();
    assert!(
        failed.is_empty(),
        "{} of {} failed: {:?}",
        failed.len(),
        seen.len(),
        &failed[..failed.len().min(5)]
    );
    assert!(seen.len() >= 5 * PER_STEP, "only {} requests", seen.len());
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_plane_killed_under_traffic_loses_no_request_and_resyncs() {
    let v1 = backend("v1").await;
    let v2 = backend("v2").await;
    let (p1, p2) = (v1.port(), v2.port());
    let cache = SnapshotCache::new();
    publish(&cache, &config(p1, p2, &["v1", "v2"], &[("v1", 100)]));
    let mut server = TestServer::any(cache.clone());
    let mesh = Mesh::xds([server.url()])
        .namespace("default")
        .labels(workload().labels)
        .xds_tuning(|c| {
            c.backoff_base = Duration::from_millis(50);
            c.backoff_max = Duration::from_millis(200);
        })
        .build()
        .await
        .unwrap();
    let mut traffic = Traffic::start(mesh.http_client());

    traffic.more(PER_STEP).await;
    server.kill();
    // Down, and known to be down (a reconnect failed): traffic keeps
    // flowing on the last good config.
    wait::until("a failed reconnect", || {
        reconnect_failed(&mesh.xds_status().unwrap())
    })
    .await;
    traffic.more(PER_STEP).await;

    // Back, with v2 as the destination: the client resyncs.
    let mut rx = mesh.model();
    rx.borrow_and_update();
    publish(&cache, &config(p1, p2, &["v1", "v2"], &[("v2", 100)]));
    let _restarted = TestServer::start(cache.clone(), server.addr);
    tokio::time::timeout(Duration::from_secs(10), rx.changed())
        .await
        .unwrap()
        .unwrap();
    traffic.more(PER_STEP).await;
    let seen = traffic.stop().await;
    let failed = seen.iter().filter(|(s, _)| *s != 200).count();
    assert_eq!(failed, 0, "{failed} of {} failed", seen.len());
    assert_eq!(seen.first().unwrap().1, "v1");
    assert_eq!(seen.last().unwrap().1, "v2");
}
