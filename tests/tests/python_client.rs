//! Stock Python `grpcio` as a proxyless xDS client of our control plane:
//! `xds:///` targets, weighted splits, header routes, retries, timeouts,
//! fault injection and ring hash, configured only by the bootstrap from
//! `meshctl bootstrap grpc`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use mesh_interop::checks;
use mesh_interop::{Lang, Tool};

fn python() -> Tool {
    Tool::find(Lang::Python).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_xds_target_resolves_and_calls_succeed() {
    let t = python();
    checks::resolves(&t).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_weighted_split_and_header_route() {
    let t = python();
    checks::weighted_split_and_header_route(&t).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_retries_mask_unavailable() {
    let t = python();
    checks::retries(&t).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_route_timeout_gives_deadline_exceeded() {
    let t = python();
    checks::timeout(&t).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_fault_abort_and_delay() {
    let t = python();
    checks::faults(&t).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_ring_hash_is_sticky_per_header() {
    let t = python();
    checks::ring_hash(&t).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_accepts_every_feature_of_a_rich_route() {
    let t = python();
    checks::kitchen_sink_is_accepted(&t).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_follows_a_live_config_change_without_failures() {
    let t = python();
    checks::live_shift(&t).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_honours_locality_weights() {
    let t = python();
    checks::locality_weights(&t).await.unwrap();
}
