//! The control plane of the interop tests: the real
//! [`mesh_xds::server::AdsServer`] on `127.0.0.1:0`, with a node hook that
//! compiles the YAML directory for each connecting node (its Istio
//! metadata -> [`mesh_core::model::Client`] -> compiled model -> Envoy
//! resources -> snapshot), as `meshd` will.
//!
//! [`ControlPlane::start`] is the one place to swap for
//! `mesh_control::Meshd::start(MeshdConfig::new(dir))` when `meshd` lands.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use mesh_core::authz::{self, Workload};
use mesh_core::compile::Compiler;
use mesh_core::config::load::load_paths;
use mesh_core::config::MeshConfig;
use mesh_xds::encode::{encode, EncodeOptions};
use mesh_xds::node::NodeInfo;
use mesh_xds::server::{AdsServer, Nack, Snapshot, SnapshotCache};
use tokio::sync::oneshot;
use tokio_stream::wrappers::TcpListenerStream;

use crate::HarnessError;

struct State {
    compiler: Compiler,
    nodes: BTreeMap<String, NodeInfo>,
}

/// A running control plane; dropping it stops the server.
pub struct ControlPlane {
    xds_addr: SocketAddr,
    cache: SnapshotCache,
    state: Arc<Mutex<State>>,
    stop: Option<oneshot::Sender<()>>,
}

impl std::fmt::Debug for ControlPlane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlPlane")
            .field("xds_addr", &self.xds_addr)
            .finish_non_exhaustive()
    }
}

fn load(dir: &Path) -> Result<Compiler, HarnessError> {
    let err = |message: String| HarnessError::Config {
        dir: dir.display().to_string(),
        message,
    };
    let loaded = load_paths(&[dir]).map_err(|e| err(e.to_string()))?;
    let resources = loaded.into_result().map_err(|errs| {
        err(errs
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; "))
    })?;
    Ok(Compiler::new(resources, MeshConfig::default()))
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    // A panic elsewhere mid-update leaves plain maps that are still usable.
    state.lock().unwrap_or_else(|e| e.into_inner())
}

/// The snapshot of one node: its model, encoded with the server listeners
/// a gRPC xDS server of that workload asks for (each instance IP, and
/// `0.0.0.0`, on every port a Service selects it on) and the
/// AuthorizationPolicies that select it.
fn snapshot_for(compiler: &Compiler, node: &NodeInfo) -> Snapshot {
    let client = node.client();
    let model = compiler.compile(&client);
    let workload = Workload::new(client.namespace.clone(), client.labels.clone());
    let policies = authz::select(
        compiler.resources().iter(),
        &model.mesh.root_namespace,
        &workload,
    )
    .into_iter()
    .cloned()
    .collect();
    let mut ips = node.instance_ips.clone();
    ips.push("0.0.0.0".to_string());
    let inbound_addresses = model
        .inbound
        .ports
        .keys()
        .flat_map(|p| ips.iter().map(move |ip| (ip.clone(), *p)))
        .collect();
    let opts = EncodeOptions {
        inbound_addresses,
        authorization_policies: policies,
        // Every node here is a stock proxyless gRPC client (its bootstrap
        // says GENERATOR: grpc); meshd decides this per node.
        proxyless_grpc: true,
        ..EncodeOptions::default()
    };
    Snapshot::from_resources(&encode(&model, &opts))
}

impl ControlPlane {
    /// Loads the Istio YAML in `dir` and serves ADS on `127.0.0.1:0`.
    pub async fn start(dir: &Path) -> Result<Self, HarnessError> {
        let compiler = load(dir)?;
        let cache = SnapshotCache::new();
        let state = Arc::new(Mutex::new(State {
            compiler,
            nodes: BTreeMap::new(),
        }));
        let hook_state = Arc::clone(&state);
        let hook_cache = cache.clone();
        let server = AdsServer::new(cache.clone()).with_node_hook(move |node: &NodeInfo| {
            let mut st = lock(&hook_state);
            st.nodes.insert(node.id.clone(), node.clone());
            hook_cache.set_snapshot(&node.id, snapshot_for(&st.compiler, node));
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| HarnessError::io("binding the xDS port on 127.0.0.1", e))?;
        let xds_addr = listener
            .local_addr()
            .map_err(|e| HarnessError::io("reading the xDS port", e))?;
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(async move {
            let result = tonic::transport::Server::builder()
                .add_service(server.into_service())
                .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async {
                    let _ = stopped.await;
                })
                .await;
            if let Err(e) = result {
                tracing::error!(error = %e, "interop control plane stopped");
            }
        });
        Ok(Self {
            xds_addr,
            cache,
            state,
            stop: Some(stop),
        })
    }

    /// Where clients reach ADS (`127.0.0.1:port`).
    pub fn xds_addr(&self) -> SocketAddr {
        self.xds_addr
    }

    /// Loads `dir` instead and pushes the new snapshots to every node that
    /// connected so far.
    pub fn reload(&self, dir: &Path) -> Result<(), HarnessError> {
        let compiler = load(dir)?;
        let mut st = lock(&self.state);
        st.compiler = compiler;
        for node in st.nodes.values() {
            self.cache
                .set_snapshot(&node.id, snapshot_for(&st.compiler, node));
        }
        Ok(())
    }

    /// The ids of the nodes that connected.
    pub fn nodes(&self) -> Vec<String> {
        lock(&self.state).nodes.keys().cloned().collect()
    }

    /// Every NACK a node still stands by, per type URL (an ACK clears it):
    /// a stock client rejecting our resources shows up here.
    pub fn nacks(&self) -> Vec<(String, String, Nack)> {
        let mut out = Vec::new();
        for node in self.nodes() {
            for (type_url, st) in self.cache.status(&node) {
                if let Some(n) = st.last_nack {
                    out.push((node.clone(), type_url, n));
                }
            }
        }
        out
    }

    /// Total NACKs ever received, over all nodes and types.
    pub fn nack_count(&self) -> u64 {
        self.nodes()
            .iter()
            .flat_map(|n| self.cache.status(n).into_values())
            .map(|s| s.nacks)
            .sum()
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// A fresh directory holding `yaml` as `config.yaml`.
pub fn yaml_dir(yaml: &str) -> Result<tempfile::TempDir, HarnessError> {
    let dir = tempfile::tempdir().map_err(|e| HarnessError::io("creating a temp dir", e))?;
    write_yaml(dir.path(), yaml)?;
    Ok(dir)
}

/// Replaces `config.yaml` in `dir` with `yaml`.
pub fn write_yaml(dir: &Path, yaml: &str) -> Result<PathBuf, HarnessError> {
    let path = dir.join("config.yaml");
    std::fs::write(&path, yaml)
        .map_err(|e| HarnessError::io(format!("writing {}", path.display()), e))?;
    Ok(path)
}
