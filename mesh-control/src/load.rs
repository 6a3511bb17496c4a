//! Turning the directory into a config generation: load, validate,
//! analyze. A version with any error (a YAML/schema problem or an analyzer
//! finding of severity error) is a [`Rejection`] that says file, line, field
//! and fix for each problem; it never replaces the generation being served.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use mesh_core::analyze::{analyze, has_errors, Finding, Severity};
use mesh_core::config::load::{load_mesh_config, load_paths};
use mesh_core::config::{MeshConfig, Resource};
use serde::Serialize;

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
    /// The Istio YAML directory.
    pub dir: PathBuf,
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
        let loaded = load_paths(&[&self.dir]).map_err(|e| {
            reject(vec![format!(
                "{e}; check that the directory exists and is readable"
            )])
        })?;
        let findings = analyze(&loaded, &mesh);
        if has_errors(&findings) {
            return Err(reject(
                findings
                    .iter()
                    .filter(|f| f.severity == Severity::Error)
                    .map(finding_line)
                    .collect(),
            ));
        }
        let files: BTreeSet<String> = loaded
            .resources
            .iter()
            .map(|r| r.origin.file.clone())
            .collect();
        Ok(Generation {
            number,
            resources: Arc::new(loaded.resources),
            mesh: Arc::new(mesh),
            files: files.into_iter().collect(),
            findings,
            applied_at: SystemTime::now(),
        })
    }

    /// True when the directory can be read (checked once at start, so a
    /// typo in `--config` fails fast instead of serving nothing).
    pub fn check_readable(&self) -> Result<(), String> {
        readable(&self.dir)?;
        if let Some(m) = &self.mesh_config {
            readable(m)?;
        }
        Ok(())
    }
}

fn readable(p: &Path) -> Result<(), String> {
    std::fs::metadata(p).map(|_| ()).map_err(|e| e.to_string())
}
