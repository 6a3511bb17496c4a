//! A real Kubernetes API server for the tests of meshd's Kubernetes source:
//! `etcd` and `kube-apiserver` (built from Go modules by
//! `scripts/kube-peers.sh`) started on loopback, kube-rs clients and
//! kubeconfig files for it (an admin and a non-admin `meshd` user, for
//! checking meshd's RBAC), and helpers that write objects the way the
//! missing kubelet and controllers would: Pod status (IP, phase, `Ready`),
//! Nodes with topology labels, EndpointSlices.
//!
//! What it is not: no kubelet, scheduler or controller-manager runs. Nothing
//! makes EndpointSlices from Services (the test writes them), a new
//! namespace gets no `default` ServiceAccount (the `ServiceAccount`
//! admission plugin is off, so Pods are created anyway), a deleted Namespace
//! stays `Terminating` forever (use a fresh namespace per test), and a Pod
//! with a node is only gone when deleted with `gracePeriodSeconds=0`
//! ([`KubeCluster::delete_pod`] does).
//!
//! Workload addresses: EndpointSlice addresses may not be loopback (the
//! API server answers 422), so a test that needs workloads reachable at the
//! addresses in its slices first moves its thread into a private network
//! namespace ([`netns::enter_private`]) where every address of
//! [`netns::POD_CIDR`] is local like 127/8; that also keeps the API
//! server's ports private. Call it before building the tokio runtime:
//!
//! ```ignore
//! #[test]
//! fn sees_pods() {
//!     mesh_test_support::kube::netns::enter_private();
//!     let rt = tokio::runtime::Runtime::new().unwrap();
//!     rt.block_on(async {
//!         let cluster = KubeCluster::start().await;
//!         cluster.create_namespace("t1").await;
//!         // ... meshd with KUBECONFIG=cluster.kubeconfig(MESHD) ...
//!     });
//! }
//! ```
//!
//! A missing binary or a missing privilege fails the test, saying what to
//! run; nothing here skips.

mod binaries;
mod cluster;
mod crds;
mod etcd_http;
pub mod netns;
mod objects;

pub use binaries::{
    apiserver_binary, cache_dir, etcd_binary, APISERVER_ENV, BUILD_COMMAND, ETCD_ENV, ETCD_VERSION,
    KUBE_VERSION,
};
pub use cluster::{KubeCluster, KubeClusterOptions, ADMIN, MESHD, READY_WITHIN};
pub use crds::istio_crds;
pub use objects::{SliceEndpoint, TestPod, FIELD_MANAGER};
