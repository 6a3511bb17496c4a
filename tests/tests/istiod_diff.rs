//! Differential check of meshd against istiod: the same Istio YAML fed to
//! the real istiod (`pilot-discovery` built by `scripts/istiod.sh`, run
//! without Kubernetes) and to meshd, and compared call by call:
//!
//! - [`routing`]: the stock grpcio client's routing (splits, header and
//!   path routes, faults, retries, timeouts, ring hash, locality weights);
//! - [`sdk`]: our SDK's xDS source (what `Mesh::xds` runs) pointed at each,
//!   with the same workload identity: the routing decision for a corpus of
//!   requests, and the clusters;
//! - [`authz`]: the stock Python xDS server's authorization under each of
//!   a corpus of AuthorizationPolicies, fed by each.
//!
//! Every difference is printed with the case, the request and both
//! outcomes; a difference not listed in [`DELIBERATE`] (with its reason,
//! also in `tests/interop/README.md`) fails the test.
//!
//! Needs the istiod binary: without it every test here fails with the
//! command that builds it (`scripts/istiod.sh`; about 6-7 minutes cold on
//! 2 cores). Run with
//! `cargo test -p mesh-interop --test istiod_diff -- --nocapture`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "istiod_diff/authz.rs"]
mod authz;
#[path = "istiod_diff/diff.rs"]
mod diff;
#[path = "istiod_diff/routing.rs"]
mod routing;
#[path = "istiod_diff/sdk.rs"]
mod sdk;
#[path = "istiod_diff/sdk_inbound.rs"]
mod sdk_inbound;

use diff::{verdict, Deliberate};
use mesh_interop::{istiod, Lang, Tool};

/// The differences we keep on purpose, each with its reason (the same
/// table is in `tests/interop/README.md`, "Differential check against
/// istiod").
const DELIBERATE: &[Deliberate] = &[
    Deliberate {
        area: "sdk",
        case: "kitchen",
        request: "cluster load_balancer",
        reason: "the kitchen route splits between a LEAST_REQUEST subset and a MAGLEV subset \
                 hashing on x-user; istiod's route carries no hash policy for it, so its clients \
                 pick a maglev endpoint without a key (at random); meshd sends the subset's \
                 DestinationRule key as the route's hash policy (gRFC A42), which the SDK reads \
                 back as the cluster's key",
    },
    Deliberate {
        area: "sdk",
        case: "",
        request: "cluster connection_pool",
        reason: "istiod's proxyless generator sends no circuit breakers for a DestinationRule \
                 connectionPool (its cds.go applies TLS and load balancing only); meshd sends \
                 the thresholds gRPC (max_requests) and the SDK enforce",
    },
    Deliberate {
        area: "sdk",
        case: "",
        request: "cluster outlier_detection",
        reason: "istiod's proxyless generator sends no outlier detection; meshd sends a \
                 DestinationRule's outlierDetection, which gRPC (gRFC A50) and the SDK enforce",
    },
    Deliberate {
        area: "stock-client",
        case: "kitchen-",
        request: "",
        reason: "istiod's proxyless generator encodes LEAST_REQUEST and MAGLEV only as \
                 Cluster.lb_policy, which grpcio 1.85 rejects (NACK of the whole CDS response, \
                 every call UNAVAILABLE); meshd also sends load_balancing_policy (gRFC A52), \
                 which gRPC accepts",
    },
    Deliberate {
        area: "authz",
        case: "interop/allow-nothing",
        request: "",
        reason: "an ALLOW policy without rules denies everything (Istio's documented semantics, \
                 and what istiod sends Envoy sidecars); istiod's proxyless generator drops it \
                 (no RBAC filter at all), so its gRPC servers allow everything",
    },
];

/// The tests share two cores; latency-bound probes must not overlap.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn python() -> Tool {
    Tool::find(Lang::Python).unwrap_or_else(|e| panic!("{e}"))
}

fn need_istiod() {
    if let Err(e) = istiod::binary() {
        panic!("{e}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stock_client_routing_matches_istiod() {
    need_istiod();
    let py = python();
    let _one = SERIAL.lock().await;
    let (compared, diffs) = routing::run(&py).await.unwrap();
    if let Err(e) = verdict("stock-client", compared, &diffs, DELIBERATE) {
        panic!("{e}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_xds_model_from_istiod_matches_meshd() {
    need_istiod();
    let _one = SERIAL.lock().await;
    // The routing comparison's YAML, with made-up backend ports: only the
    // models are compared here.
    let yaml = routing::config(|name| {
        routing::BACKENDS
            .iter()
            .position(|(n, _)| *n == name)
            .map_or(0, |i| 41000 + u16::try_from(i).unwrap_or(0))
    });
    let (compared, diffs) = sdk::run(&yaml).await.unwrap();
    if let Err(e) = verdict("sdk", compared, &diffs, DELIBERATE) {
        panic!("{e}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stock_server_authorization_matches_istiod() {
    need_istiod();
    let py = python();
    let _one = SERIAL.lock().await;
    let (compared, diffs) = authz::run(&py).await.unwrap();
    if let Err(e) = verdict("authz", compared, &diffs, DELIBERATE) {
        panic!("{e}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_server_authorization_from_istiod_matches_meshd() {
    need_istiod();
    let _one = SERIAL.lock().await;
    let (compared, diffs) = sdk_inbound::run().await.unwrap();
    assert!(compared >= 50, "{compared} decisions compared");
    if let Err(e) = verdict("sdk-inbound", compared, &diffs, DELIBERATE) {
        panic!("{e}");
    }
}
