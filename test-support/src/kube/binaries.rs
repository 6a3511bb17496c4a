//! Where the `etcd` and `kube-apiserver` binaries are: an environment
//! override, else the cache `scripts/kube-peers.sh` builds into.

use std::path::PathBuf;

/// The `k8s.io/kubernetes` version `scripts/kube-peers.sh` builds.
pub const KUBE_VERSION: &str = "v1.37.2";

/// The `go.etcd.io/etcd/server/v3` version `scripts/kube-peers.sh` builds.
pub const ETCD_VERSION: &str = "v3.7.3";

/// The command that builds both binaries (once; cached afterwards).
pub const BUILD_COMMAND: &str = "scripts/kube-peers.sh";

/// Names an `etcd` binary to use instead of the cached build.
pub const ETCD_ENV: &str = "MESH_KUBE_ETCD";

/// Names a `kube-apiserver` binary to use instead of the cached build.
pub const APISERVER_ENV: &str = "MESH_KUBE_APISERVER";

/// `${MESH_PEER_CACHE:-$HOME/.cache/mesh-peers}/kube/KUBE_VERSION`, where
/// `scripts/kube-peers.sh` puts both binaries.
pub fn cache_dir() -> PathBuf {
    let root = std::env::var_os("MESH_PEER_CACHE")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache").join("mesh-peers"))
        })
        .unwrap_or_else(|| PathBuf::from(".cache/mesh-peers"));
    root.join("kube").join(KUBE_VERSION)
}

/// The `etcd` binary: `$MESH_KUBE_ETCD`, else the cached build. Panics,
/// naming [`BUILD_COMMAND`], when it is not there.
pub fn etcd_binary() -> PathBuf {
    existing(
        "etcd",
        ETCD_ENV,
        cache_dir().join(format!("etcd-{ETCD_VERSION}")),
    )
}

/// The `kube-apiserver` binary: `$MESH_KUBE_APISERVER`, else the cached
/// build. Panics, naming [`BUILD_COMMAND`], when it is not there.
pub fn apiserver_binary() -> PathBuf {
    existing(
        "kube-apiserver",
        APISERVER_ENV,
        cache_dir().join("kube-apiserver"),
    )
}

fn existing(what: &str, env: &str, cached: PathBuf) -> PathBuf {
    let path = std::env::var_os(env)
        .filter(|v| !v.is_empty())
        .map_or(cached, PathBuf::from);
    assert!(
        path.is_file(),
        "{what} is not at {}: build it with `{BUILD_COMMAND}` (from the workspace root; needs Go >= 1.26 \
         and the Go module proxy; about 5 minutes the first time, cached afterwards; \
         scripts/test.sh runs it), or set {env} to the path of a {what} binary",
        path.display()
    );
    path
}
