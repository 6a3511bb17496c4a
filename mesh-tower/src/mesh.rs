//! The entry point a service uses: one builder that yields the compiled
//! model for this workload and the clients and servers built on it.
//!
//! ```no_run
//! # async fn demo() -> Result<(), mesh_tower::source::SourceError> {
//! let mesh = mesh_tower::Mesh::local("mesh/")
//!     .namespace("default")
//!     .labels([("app", "productpage")])
//!     .build()
//!     .await?;
//! let model = mesh.current();
//! # let _ = model; Ok(()) }
//! ```

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use mesh_core::config::common::Labels;
use mesh_core::model::{Client, Model};

use crate::source::{watch_local, LocalSource, SourceError, SourceStatus, Watcher};
use crate::ModelRx;

/// A workload's view of the mesh: its identity and the live compiled model.
#[derive(Debug)]
pub struct Mesh {
    client: Client,
    model: ModelRx,
    watcher: Option<Watcher>,
}

/// Builds a [`Mesh`].
#[derive(Debug, Clone)]
pub struct MeshBuilder {
    paths: Vec<PathBuf>,
    mesh_config: Option<PathBuf>,
    client: Client,
    poll_interval: Duration,
}

impl Mesh {
    /// Local mode (the embedded default): the model is compiled in-process
    /// from a directory of Istio YAML, which is watched for changes.
    pub fn local(path: impl Into<PathBuf>) -> MeshBuilder {
        MeshBuilder {
            paths: vec![path.into()],
            mesh_config: None,
            client: Client::new("default", Labels::new()),
            poll_interval: Duration::from_millis(500),
        }
    }

    /// A mesh over a model channel someone else feeds (tests, or an xDS client).
    pub fn from_model(client: Client, model: ModelRx) -> Self {
        Self {
            client,
            model,
            watcher: None,
        }
    }

    /// Who this workload is.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The live model channel the layers read.
    pub fn model(&self) -> ModelRx {
        self.model.clone()
    }

    /// The model right now.
    pub fn current(&self) -> Arc<Model> {
        Arc::clone(&self.model.borrow())
    }

    /// Applied/rejected counts and the last rejection, in local mode.
    pub fn source_status(&self) -> Option<SourceStatus> {
        self.watcher.as_ref().map(Watcher::status)
    }
}

impl MeshBuilder {
    /// The workload's namespace (default `default`).
    pub fn namespace(mut self, ns: impl Into<String>) -> Self {
        self.client.namespace = ns.into();
        self
    }

    /// The workload's labels (used by `sourceLabels`, selectors, subsets).
    pub fn labels<K: Into<String>, V: Into<String>>(
        mut self,
        labels: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        self.client.labels = labels
            .into_iter()
            .map(|(k, v)| (k.into(), v.into()))
            .collect();
        self
    }

    /// The workload's service account (its SPIFFE identity).
    pub fn service_account(mut self, sa: impl Into<String>) -> Self {
        self.client.service_account = Some(sa.into());
        self
    }

    /// Another file or directory of config, in addition to the first.
    pub fn add_path(mut self, path: impl Into<PathBuf>) -> Self {
        self.paths.push(path.into());
        self
    }

    /// A MeshConfig file (rootNamespace, trustDomain, pathNormalization, ...).
    pub fn mesh_config(mut self, path: impl Into<PathBuf>) -> Self {
        self.mesh_config = Some(path.into());
        self
    }

    /// How often the directory is checked for changes (default 500 ms).
    pub fn poll_interval(mut self, every: Duration) -> Self {
        self.poll_interval = every;
        self
    }

    /// Loads and compiles the config and starts watching it. Fails when the
    /// initial config is unreadable or invalid; later invalid edits are
    /// rejected while the last good model keeps serving.
    pub async fn build(self) -> Result<Mesh, SourceError> {
        let source = LocalSource {
            paths: self.paths,
            mesh_config: self.mesh_config,
            poll_interval: self.poll_interval,
        };
        let (model, watcher) = watch_local(source, self.client.clone())?;
        Ok(Mesh {
            client: self.client,
            model,
            watcher: Some(watcher),
        })
    }
}
