//! Helpers of the tests against a real kube-apiserver
//! (`mesh_test_support::kube`): a private network namespace per test,
//! meshd reading the cluster as the admin, and a wait long enough for
//! API round trips.

use std::future::Future;
use std::time::Duration;

use mesh_control::kube::KubeSettings;
use mesh_control::{Meshd, MeshdConfig, MeshdHandle};
use mesh_test_support::kube::{netns, KubeCluster, ADMIN};

/// meshd's namespace, where its CA Secret and leader Lease live.
pub const MESHD_NAMESPACE: &str = "istio-system";

/// Enters a private network namespace, then runs `test` on a runtime
/// whose threads start inside it.
pub fn in_private_netns<F: Future<Output = ()>>(test: impl FnOnce() -> F) {
    netns::enter_private();
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(test());
}

/// meshd's settings for reading only `cluster`, as the admin; its
/// namespace is created if missing.
pub async fn meshd_config(cluster: &KubeCluster) -> MeshdConfig {
    cluster
        .apply_yaml(&format!(
            "apiVersion: v1\nkind: Namespace\nmetadata: {{name: {MESHD_NAMESPACE}}}\n"
        ))
        .await;
    let mut config = MeshdConfig::kubernetes(KubeSettings {
        kubeconfig: Some(cluster.kubeconfig(ADMIN)),
    });
    config.kube_sync_timeout = Duration::from_secs(20);
    config
}

/// meshd reading only `cluster`, as the admin.
pub async fn meshd(cluster: &KubeCluster) -> MeshdHandle {
    Meshd::start(meshd_config(cluster).await).await.unwrap()
}

/// Polls `f` for up to 20 s (API round trips, pushes).
pub async fn eventually<F, Fut>(what: &str, f: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    mesh_test_support::wait::eventually(what, Duration::from_secs(20), f).await;
}
