//! The control plane of the interop tests: `meshd` itself
//! ([`mesh_control::Meshd`]) on `127.0.0.1:0`, watching the test's YAML
//! directory. Stock clients get what any user's clients get: meshd compiles
//! per node identity, decides per node that a `GENERATOR: grpc` client
//! without our SDK's marker is a stock proxyless client, and pushes
//! debounced changes.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use mesh_control::{Meshd, MeshdConfig, MeshdHandle};
use mesh_xds::server::Nack;

use crate::HarnessError;

/// A running control plane; dropping it stops meshd.
pub struct ControlPlane {
    handle: MeshdHandle,
    dir: PathBuf,
}

impl std::fmt::Debug for ControlPlane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlPlane")
            .field("xds_addr", &self.handle.xds_addr())
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl ControlPlane {
    /// Starts meshd on the Istio YAML in `dir` (ADS on `127.0.0.1:0`); a
    /// config meshd rejects is an error naming what it said.
    pub async fn start(dir: &Path) -> Result<Self, HarnessError> {
        let handle =
            Meshd::start(MeshdConfig::new(dir))
                .await
                .map_err(|e| HarnessError::Config {
                    dir: dir.display().to_string(),
                    message: e.to_string(),
                })?;
        Ok(Self {
            handle,
            dir: dir.to_path_buf(),
        })
    }

    /// Where clients reach ADS (`127.0.0.1:port`).
    pub fn xds_addr(&self) -> SocketAddr {
        self.handle.xds_addr()
    }

    /// Waits until meshd has applied what is now in `dir` (the directory it
    /// watches): a new config generation, or the rejection it logged.
    pub async fn reload(&self, dir: &Path) -> Result<(), HarnessError> {
        let err = |message: String| HarnessError::Config {
            dir: dir.display().to_string(),
            message,
        };
        if dir != self.dir {
            return Err(err(format!(
                "meshd watches {}, not this directory",
                self.dir.display()
            )));
        }
        let before = self.handle.generation();
        let rejected = self.handle.controller().rejections();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            if self.handle.generation() != before {
                return Ok(());
            }
            if self.handle.controller().rejections() != rejected {
                let why = self
                    .handle
                    .controller()
                    .rejection()
                    .map(|r| format!("{r:?}"))
                    .unwrap_or_default();
                return Err(err(format!("meshd rejected the change: {why}")));
            }
            if tokio::time::Instant::now() > deadline {
                return Err(err("meshd did not apply the change within 10s".into()));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The ids of the nodes connected now.
    pub fn nodes(&self) -> Vec<String> {
        self.handle.controller().cache().nodes()
    }

    /// Every NACK a node still stands by, per type URL (an ACK clears it):
    /// a stock client rejecting our resources shows up here.
    pub fn nacks(&self) -> Vec<(String, String, Nack)> {
        let cache = self.handle.controller().cache();
        let mut nodes = cache.nodes();
        nodes.extend(cache.snapshot_nodes());
        nodes.sort();
        nodes.dedup();
        let mut out = Vec::new();
        for node in nodes {
            for (type_url, st) in cache.status(&node) {
                if let Some(n) = st.last_nack {
                    out.push((node.clone(), type_url, n));
                }
            }
        }
        out
    }

    /// Total NACKs meshd ever received, over all nodes and types: its
    /// `meshd_xds_nacks_total` metric, as an operator would read it (it
    /// outlives the clients, whose stream state goes when they leave).
    pub fn nack_count(&self) -> u64 {
        self.handle
            .controller()
            .metrics()
            .render()
            .lines()
            .filter(|l| l.starts_with("meshd_xds_nacks_total"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>() as u64
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
