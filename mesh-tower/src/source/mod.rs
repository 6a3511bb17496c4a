//! Where the model comes from. In local mode (this module): a directory of
//! Istio YAML, watched for changes. In mesh mode: `xds`, a control plane
//! over xDS (the `xds` feature), with the workload certificate from the
//! mesh CA (`ca`, the `ca` feature).
//!
//! Every change is loaded, validated and compiled for this workload; a
//! config with any error is rejected with a logged error that names file,
//! line and field, and the last good model keeps serving. The watcher polls
//! a fingerprint of the directory (paths, sizes and contents;
//! [`mesh_core::config::fingerprint`], the same one meshd polls) rather than
//! relying on inotify, so it behaves the same on every filesystem, including
//! the symlink swaps Kubernetes uses for mounted ConfigMaps.

use mesh_core::sync::LockExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mesh_core::compile::Compiler;
use mesh_core::config::load::{load_mesh_config, load_paths, ConfigError};
use mesh_core::config::MeshConfig;
use mesh_core::model::{Client, Model};
use tokio::sync::watch;

#[cfg(feature = "ca")]
pub mod ca;
#[cfg(feature = "xds")]
pub mod xds;

/// What went wrong loading a config version.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SourceError {
    /// A path could not be read at all.
    #[error("{0}")]
    Unreadable(String),
    /// The config has errors; each names file, line and field.
    #[error("configuration rejected ({} errors):\n{}", .0.len(), .0.iter().map(|e| format!("  {e}")).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<ConfigError>),
    /// The xDS client could not start or got no model in time.
    #[cfg(feature = "xds")]
    #[error(transparent)]
    Xds(#[from] mesh_xds::client::XdsClientError),
    /// An `https://` xDS server cannot be dialed as configured.
    #[cfg(feature = "xds")]
    #[error("xDS server {server}: {why}")]
    XdsTls {
        /// The server address.
        server: String,
        /// What is missing or wrong, and what to do.
        why: String,
    },
    /// No workload certificate from the CA.
    #[error("workload identity from the CA at {ca}: {why}")]
    Identity {
        /// The CA address.
        ca: String,
        /// What failed.
        why: String,
    },
}

/// A local config source: a directory (or files) and an optional MeshConfig.
#[derive(Debug, Clone)]
pub struct LocalSource {
    /// Files or directories of YAML/JSON.
    pub paths: Vec<PathBuf>,
    /// MeshConfig file, if any.
    pub mesh_config: Option<PathBuf>,
    /// How often to look for changes.
    pub poll_interval: Duration,
}

impl LocalSource {
    /// Loads, validates and compiles the current config for `client`.
    pub fn load(&self, client: &Client) -> Result<Model, SourceError> {
        let mesh = match &self.mesh_config {
            Some(p) => load_mesh_config(p).map_err(|e| SourceError::Invalid(vec![e]))?,
            None => MeshConfig::default(),
        };
        let loaded = load_paths(&self.paths).map_err(|e| SourceError::Unreadable(e.to_string()))?;
        let resources = loaded.into_result().map_err(SourceError::Invalid)?;
        Ok(Compiler::new(resources, mesh).compile(client))
    }

    /// A fingerprint that changes whenever any config file is added,
    /// removed or edited: [`mesh_core::config::fingerprint`] of the paths
    /// and the MeshConfig file.
    pub fn fingerprint(&self) -> u64 {
        let watched: Vec<&Path> = self
            .paths
            .iter()
            .chain(self.mesh_config.iter())
            .map(PathBuf::as_path)
            .collect();
        mesh_core::config::fingerprint(&watched)
    }
}

/// Status of a watched source, for health and debug endpoints.
#[derive(Debug, Clone, Default)]
pub struct SourceStatus {
    /// How many config versions were applied (the initial one included).
    pub applied: u64,
    /// How many were rejected.
    pub rejected: u64,
    /// Why the latest rejected version was rejected, while it is still the
    /// newest on disk; cleared once a good version is applied.
    pub last_error: Option<String>,
}

/// A running watcher; dropping it stops the watch.
#[derive(Debug)]
pub struct Watcher {
    task: tokio::task::JoinHandle<()>,
    status: Arc<Mutex<SourceStatus>>,
}

impl Watcher {
    /// The current status.
    pub fn status(&self) -> SourceStatus {
        self.status.locked().clone()
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Loads the initial model (an error here is returned: a workload should not
/// start on a config it cannot understand) and starts watching.
pub fn watch_local(
    source: LocalSource,
    client: Client,
) -> Result<(watch::Receiver<Arc<Model>>, Watcher), SourceError> {
    let mut fingerprint = source.fingerprint();
    let initial = source.load(&client)?;
    let (tx, rx) = watch::channel(Arc::new(initial));
    let status = Arc::new(Mutex::new(SourceStatus {
        applied: 1,
        ..SourceStatus::default()
    }));
    let task_status = Arc::clone(&status);
    let source = Arc::new(source);
    let client = Arc::new(client);
    let task = tokio::spawn(async move {
        let mut tick = tokio::time::interval(source.poll_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            // Hashing the files and compiling read disk and burn CPU: off
            // the async workers, which serve requests.
            let (src, cl) = (Arc::clone(&source), Arc::clone(&client));
            let seen = fingerprint;
            let polled = tokio::task::spawn_blocking(move || {
                let now = src.fingerprint();
                (now, (now != seen).then(|| src.load(&cl)))
            })
            .await;
            let Ok((now, loaded)) = polled else {
                // The blocking pool is shutting down with the runtime.
                return;
            };
            fingerprint = now;
            let Some(loaded) = loaded else {
                continue;
            };
            match loaded {
                Ok(model) => {
                    tracing::info!(paths = ?source.paths, "configuration change applied");
                    {
                        let mut s = task_status.locked();
                        s.applied += 1;
                        s.last_error = None;
                    }
                    if tx.send(Arc::new(model)).is_err() {
                        return;
                    }
                }
                Err(e) => {
                    tracing::error!("{e}; the previous configuration keeps serving");
                    let mut s = task_status.locked();
                    s.rejected += 1;
                    s.last_error = Some(e.to_string());
                }
            }
        }
    });
    Ok((rx, Watcher { task, status }))
}

#[cfg(test)]
mod tests {
    use super::*;

    const VS: &str = "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: api, namespace: default}
spec:
  hosts: [api.example.com]
  ports: [{number: 80, name: http, protocol: HTTP}]
  resolution: STATIC
  endpoints: [{address: 127.0.0.1}]
";

    fn source(dir: &Path) -> LocalSource {
        LocalSource {
            paths: vec![dir.to_path_buf()],
            mesh_config: None,
            poll_interval: Duration::from_millis(100),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn applies_good_changes_and_keeps_last_good_on_bad_ones() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.yaml"), VS).unwrap();
        let (mut rx, watcher) = watch_local(
            source(dir.path()),
            Client::new("default", Default::default()),
        )
        .unwrap();
        assert!(rx.borrow().outbound_for("api.example.com", 80).is_some());

        // A valid edit: a second port appears.
        std::fs::write(
            dir.path().join("a.yaml"),
            VS.replace("ports: [{number: 80, name: http, protocol: HTTP}]", "ports: [{number: 80, name: http, protocol: HTTP}, {number: 81, name: http-b, protocol: HTTP}]"),
        )
        .unwrap();
        tokio::time::timeout(Duration::from_secs(5), rx.changed())
            .await
            .unwrap()
            .unwrap();
        assert!(rx
            .borrow_and_update()
            .outbound_for("api.example.com", 81)
            .is_some());

        // An invalid edit is rejected; the last good model keeps serving.
        std::fs::write(dir.path().join("b.yaml"), "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: x}\nspec:\n  hosts: [api.example.com]\n  htp: []\n").unwrap();
        tokio::time::sleep(Duration::from_millis(350)).await;
        assert!(!rx.has_changed().unwrap());
        let status = watcher.status();
        assert_eq!(status.rejected, 1);
        let err = status.last_error.unwrap_or_default();
        assert!(
            err.contains("b.yaml:6") && err.contains("spec.htp"),
            "{err}"
        );
        assert!(rx.borrow().outbound_for("api.example.com", 81).is_some());

        // Fixing it applies again and clears the error.
        std::fs::remove_file(dir.path().join("b.yaml")).unwrap();
        std::fs::write(dir.path().join("a.yaml"), VS).unwrap();
        tokio::time::timeout(Duration::from_secs(5), rx.changed())
            .await
            .unwrap()
            .unwrap();
        assert!(rx.borrow().outbound_for("api.example.com", 81).is_none());
        assert!(watcher.status().last_error.is_none());
        assert_eq!(watcher.status().applied, 3);
    }

    #[tokio::test]
    async fn initial_errors_are_returned() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("a.yaml"),
            "kind: Nope\napiVersion: v1\nmetadata: {name: a}\n",
        )
        .unwrap();
        let err = watch_local(source(dir.path()), Client::default()).unwrap_err();
        assert!(
            matches!(err, SourceError::Invalid(ref e) if e.len() == 1),
            "{err}"
        );
        let missing =
            watch_local(source(&dir.path().join("missing")), Client::default()).unwrap_err();
        assert!(matches!(missing, SourceError::Unreadable(_)));
    }

    #[test]
    fn fingerprint_is_mesh_cores_over_config_and_mesh_config() {
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("conf");
        let mesh = dir.path().join("mesh.yaml");
        std::fs::create_dir(&conf).unwrap();
        std::fs::write(conf.join("a.yaml"), VS).unwrap();
        std::fs::write(&mesh, "{}\n").unwrap();
        let src = LocalSource {
            mesh_config: Some(mesh.clone()),
            ..source(&conf)
        };
        let before = src.fingerprint();
        assert_eq!(before, mesh_core::config::fingerprint(&[&conf, &mesh]));
        std::fs::write(&mesh, "defaultConfig: {}\n").unwrap();
        assert_ne!(before, src.fingerprint());
    }
}
