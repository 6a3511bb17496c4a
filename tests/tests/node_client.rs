//! Stock Node `@grpc/grpc-js-xds` as a proxyless xDS client of our control plane:
//! `xds:///` targets, weighted splits, header routes, retries, timeouts,
//! fault injection and ring hash, configured only by the bootstrap from
//! `meshctl bootstrap grpc`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use mesh_interop::checks;
use mesh_interop::{Lang, Tool};

fn node() -> Tool {
    Tool::find(Lang::Node).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_xds_target_resolves_and_calls_succeed() {
    let t = node();
    checks::resolves(&t).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_weighted_split_and_header_route() {
    let t = node();
    checks::weighted_split_and_header_route(&t).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_retries_mask_unavailable() {
    let t = node();
    checks::retries(&t).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_route_timeout_gives_deadline_exceeded() {
    let t = node();
    checks::timeout(&t).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_fault_abort_and_delay() {
    let t = node();
    checks::faults(&t).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_ring_hash_is_sticky_per_header() {
    let t = node();
    checks::ring_hash(&t).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_accepts_every_feature_of_a_rich_route() {
    let t = node();
    checks::kitchen_sink_is_accepted(&t).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_follows_a_live_config_change_without_failures() {
    let t = node();
    checks::live_shift(&t).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_honours_locality_weights() {
    let t = node();
    checks::locality_weights(&t).await.unwrap();
}
