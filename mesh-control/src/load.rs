//! Turning the directory and the cluster into a config generation: load,
//! validate, analyze. A file with any error (a YAML/schema problem or an
//! analyzer finding of severity error) makes the version a [`Rejection`]
//! that says file, line, field and fix for each problem; it never replaces
//! the generation being served.
//!
//! Objects from the Kubernetes API are judged one by one instead, as the
//! API server admits them one by one: an invalid object, or one the
//! analyzer finds an error in, is skipped (and reported) while every other
//! object serves. Otherwise one bad `kubectl apply` made while the
//! validating webhook was down would freeze every endpoint update.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use mesh_core::analyze::{analyze, has_errors, Finding, Severity};
use mesh_core::config::fingerprint;
use mesh_core::config::load::{load_mesh_config, load_paths, LoadResult};
use mesh_core::config::{MeshConfig, Resource};
use serde::Serialize;

use crate::kube::convert::CLUSTER_ORIGIN;
use crate::kube::KubeStore;

/// One accepted version of the configuration.
#[derive(Debug, Clone)]
pub struct Generation {
    /// 1 for the first config applied, +1 for each one after.
    pub number: u64,
    /// The valid resources, in load order.
    pub resources: Arc<Vec<Resource>>,
    /// The MeshConfig in force.
    pub mesh: Arc<MeshConfig>,
    /// Files that contributed resources.
    pub files: Vec<String>,
    /// Warnings and notes the analyzer had (errors reject the version).
    pub findings: Vec<Finding>,
    /// When it was applied.
    pub applied_at: SystemTime,
    /// Objects from the Kubernetes API that were skipped:
    /// (`Kind/namespace/name`, why).
    pub skipped: Vec<(String, Vec<String>)>,
    /// How many resources came from the Kubernetes API.
    pub kube_objects: usize,
}

/// A version that was not applied, and why.
#[derive(Debug, Clone, Serialize)]
pub struct Rejection {
    /// When it was rejected.
    #[serde(serialize_with = "crate::debug::unix_seconds")]
    pub at: SystemTime,
    /// One line per problem: `file:line: resource field: what and the fix`.
    pub errors: Vec<String>,
}

impl Rejection {
    /// The problems as one message.
    pub fn message(&self) -> String {
        format!(
            "configuration rejected ({} error{}), the previous configuration keeps serving:\n{}",
            self.errors.len(),
            if self.errors.len() == 1 { "" } else { "s" },
            self.errors
                .iter()
                .map(|e| format!("  {e}"))
                .collect::<Vec<_>>()
                .join("\n")
        )
    }
}

fn finding_line(f: &Finding) -> String {
    let loc = match f.line {
        Some(l) => format!("{}:{l}", f.file),
        None => f.file.clone(),
    };
    let res = if f.resource.is_empty() {
        String::new()
    } else {
        format!(" {}", f.resource)
    };
    format!("{loc}:{res} [{}] {}", f.code, f.message)
}

/// Where config comes from.
#[derive(Debug, Clone)]
pub struct ConfigSource {
    /// The Istio YAML directory, if files are a source.
    pub dir: Option<PathBuf>,
    /// The cluster's objects, if Kubernetes is a source.
    pub kube: Option<KubeStore>,
    /// The MeshConfig file, if any.
    pub mesh_config: Option<PathBuf>,
    /// The trust domain to use when the MeshConfig sets none.
    pub trust_domain: String,
}

impl ConfigSource {
    /// Loads and checks the current files. `number` is the generation number
    /// the result gets if accepted.
    pub fn load(&self, number: u64) -> Result<Generation, Rejection> {
        let reject = |errors: Vec<String>| Rejection {
            at: SystemTime::now(),
            errors,
        };
        let mut mesh = match &self.mesh_config {
            Some(p) => load_mesh_config(p).map_err(|e| reject(vec![e.to_string()]))?,
            None => MeshConfig::default(),
        };
        if mesh.trust_domain.as_deref().is_none_or(str::is_empty) {
            mesh.trust_domain = Some(self.trust_domain.clone());
        }
        let mut loaded = match &self.dir {
            Some(dir) => load_paths(&[dir]).map_err(|e| {
                reject(vec![format!(
                    "{e}; check that the directory exists and is readable"
                )])
            })?,
            None => LoadResult::default(),
        };
        let mut skipped = Vec::new();
        if let Some(kube) = &self.kube {
            let snap = kube.snapshot();
            loaded.resources.extend(snap.resources);
            skipped = snap.invalid;
        }
        let mut findings = analyze(&loaded, &mesh);
        // Skip the cluster objects with errors; what they were needed by
        // may now have errors too, so look again (a chain of references is
        // short: VirtualService -> DestinationRule -> Service).
        for _ in 0..4 {
            let bad: BTreeSet<&str> = findings
                .iter()
                .filter(|f| f.severity == Severity::Error && from_cluster(&f.file))
                .map(|f| f.file.as_str())
                .collect();
            if bad.is_empty() {
                break;
            }
            let mut why: Vec<(String, Vec<String>)> = Vec::new();
            for f in findings.iter().filter(|f| bad.contains(f.file.as_str())) {
                match why.iter_mut().find(|(k, _)| *k == f.resource) {
                    Some((_, lines)) => lines.push(finding_line(f)),
                    None => why.push((f.resource.clone(), vec![finding_line(f)])),
                }
            }
            for (_, lines) in &why {
                for l in lines {
                    tracing::warn!(
                        "skipping a Kubernetes object; everything else keeps serving: {l}"
                    );
                }
            }
            loaded.resources.retain(|r| {
                !(from_cluster(&r.origin.file) && bad.contains(r.origin.file.as_str()))
            });
            skipped.extend(why);
            findings = analyze(&loaded, &mesh);
        }
        if has_errors(&findings) {
            return Err(reject(
                findings
                    .iter()
                    .filter(|f| f.severity == Severity::Error)
                    .map(finding_line)
                    .collect(),
            ));
        }
        let kube_objects = loaded
            .resources
            .iter()
            .filter(|r| from_cluster(&r.origin.file))
            .count();
        let files: BTreeSet<String> = loaded
            .resources
            .iter()
            .filter(|r| !from_cluster(&r.origin.file))
            .map(|r| r.origin.file.clone())
            .collect();
        Ok(Generation {
            number,
            resources: Arc::new(loaded.resources),
            mesh: Arc::new(mesh),
            files: files.into_iter().collect(),
            findings,
            applied_at: SystemTime::now(),
            skipped,
            kube_objects,
        })
    }

    /// True when every source has something to give: the cluster has
    /// been listed once (files are always ready).
    pub fn ready(&self) -> bool {
        self.kube.as_ref().is_none_or(KubeStore::synced)
    }

    /// What to compare to notice a change: the files' fingerprint mixed
    /// with the cluster store's version.
    pub fn fingerprint(&self, paths: &[PathBuf]) -> u64 {
        let files = if paths.is_empty() {
            0
        } else {
            fingerprint(paths)
        };
        let kube = self.kube.as_ref().map_or(0, KubeStore::version);
        files ^ kube.rotate_left(32) ^ u64::from(self.ready())
    }

    /// True when the directory can be read (checked once at start, so a
    /// typo in `--config` fails fast instead of serving nothing).
    pub fn check_readable(&self) -> Result<(), String> {
        if let Some(d) = &self.dir {
            readable(d)?;
        }
        if let Some(m) = &self.mesh_config {
            readable(m)?;
        }
        Ok(())
    }
}

/// True for a resource (or finding) from the Kubernetes API.
fn from_cluster(file: &str) -> bool {
    file.starts_with(CLUSTER_ORIGIN)
}

fn readable(p: &Path) -> Result<(), String> {
    std::fs::metadata(p).map(|_| ()).map_err(|e| e.to_string())
}
