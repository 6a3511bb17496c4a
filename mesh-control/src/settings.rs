//! meshd's settings: [`MeshdConfig`] (what the library takes) and the
//! optional `meshd.yaml` settings file the binary reads under its flags and
//! environment variables.
//!
//! Precedence, highest first: command-line flag, environment variable
//! (`MESHD_*`), settings file, built-in default.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::error::{MeshdError, Result};

/// Everything meshd needs to run.
#[derive(Debug, Clone)]
pub struct MeshdConfig {
    /// The directory of Istio YAML (walked recursively), if files are a
    /// source.
    pub config_dir: Option<PathBuf>,
    /// The Kubernetes API server to read config and endpoints from, if
    /// Kubernetes is a source (`--source kubernetes`). Both may be set:
    /// files and cluster objects then serve together.
    pub kubernetes: Option<crate::kube::KubeSettings>,
    /// How long start waits for the first list of every kind from the API
    /// server before serving without it (meshd stays not ready until the
    /// lists complete).
    pub kube_sync_timeout: Duration,
    /// meshd's own namespace in the cluster (istiod's `istio-system`):
    /// where the CA Secret and the leader Lease live.
    pub kube_namespace: String,
    /// How long a leader's Lease lasts without renewal: the longest the
    /// leader's writes (status, root ConfigMaps) pause when it dies.
    pub kube_lease: Duration,
    /// How often the leader rewrites every `istio-ca-root-cert`, restoring
    /// one that was deleted or edited.
    pub kube_resync: Duration,
    /// A MeshConfig file (`meshConfig` of Istio's install), if any.
    pub mesh_config: Option<PathBuf>,
    /// Where the xDS + CA gRPC server listens (plaintext, like istiod's 15010).
    pub xds_addr: SocketAddr,
    /// Where the same xDS + CA services are served over TLS (istiod's
    /// 15012), callers authenticated by mesh client certificate,
    /// bootstrap token or (with a Kubernetes source) service account token;
    /// `None` serves plaintext only.
    pub secure_xds_addr: Option<SocketAddr>,
    /// Where `/healthz`, `/ready`, `/metrics` and `/debug/*` are served.
    pub http_addr: SocketAddr,
    /// Where the admission webhooks are served over TLS (istiod's 15017,
    /// `POST /validate` and `POST /inject`), with the same serving
    /// certificate as the TLS xDS port; `None` does not serve it.
    pub webhook_addr: Option<SocketAddr>,
    /// What the mutating webhook (`POST /inject` on the webhook port)
    /// injects into pods that join the mesh.
    pub inject: crate::kube::inject::InjectConfig,
    /// Where the CA keeps its root (`root-cert.pem`/`root-key.pem`, created on
    /// first start) or a plugged-in CA (`ca-cert.pem`, `ca-key.pem`, ...).
    /// `None`: a temporary directory that lives as long as meshd.
    pub ca_dir: Option<PathBuf>,
    /// The bootstrap token file (`{"tokens": [...]}`) the CA accepts.
    pub ca_tokens: Option<PathBuf>,
    /// With a Kubernetes source, the audiences a pod's service account
    /// token must be for to authenticate to the CA and the TLS xDS port
    /// (Istio's `TOKEN_AUDIENCES`; checked by TokenReview). Default
    /// `["istio-ca"]`; empty means the default.
    pub token_audiences: Vec<String>,
    /// Trust domain of issued identities, and of the mesh when the
    /// MeshConfig does not set one.
    pub trust_domain: String,
    /// How often the directory is checked for changes.
    pub poll_interval: Duration,
    /// Quiet time after the last change before a config is applied
    /// (Istio's `PILOT_DEBOUNCE_AFTER`).
    pub debounce: Duration,
    /// Longest a steady stream of changes can delay applying
    /// (`PILOT_DEBOUNCE_MAX`).
    pub debounce_max: Duration,
}

impl MeshdConfig {
    /// Like [`MeshdConfig::new`], with the Kubernetes API as the only
    /// source.
    pub fn kubernetes(settings: crate::kube::KubeSettings) -> Self {
        let mut c = Self::new(PathBuf::new());
        c.config_dir = None;
        c.kubernetes = Some(settings);
        c.webhook_addr = Some(c.http_addr);
        c
    }

    /// Defaults for tests and embedding: loopback port 0 for xDS, TLS xDS
    /// and HTTP (read the bound ports from the handle), CA in a temporary directory,
    /// trust domain `cluster.local`, 100 ms poll and debounce.
    pub fn new(config_dir: impl Into<PathBuf>) -> Self {
        let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
        Self {
            config_dir: Some(config_dir.into()),
            kubernetes: None,
            kube_sync_timeout: Duration::from_secs(30),
            kube_namespace: "istio-system".to_string(),
            kube_lease: Duration::from_secs(15),
            kube_resync: Duration::from_secs(60),
            mesh_config: None,
            xds_addr: loopback,
            secure_xds_addr: Some(loopback),
            http_addr: loopback,
            webhook_addr: None,
            inject: Default::default(),
            ca_dir: None,
            ca_tokens: None,
            token_audiences: vec![crate::kube::tokenreview::DEFAULT_AUDIENCE.to_string()],
            trust_domain: "cluster.local".to_string(),
            poll_interval: Duration::from_millis(100),
            debounce: Duration::from_millis(100),
            debounce_max: Duration::from_secs(10),
        }
    }
}

/// The `meshd.yaml` settings file: every field optional, camelCase, paths
/// relative to the file's directory.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SettingsFile {
    /// `config`: the Istio YAML directory.
    pub config: Option<PathBuf>,
    /// `meshConfig`: the MeshConfig file.
    pub mesh_config: Option<PathBuf>,
    /// `xdsAddr`.
    pub xds_addr: Option<SocketAddr>,
    /// `secureXdsAddr`: an address, or `off` (see [`parse_optional_addr`]).
    pub secure_xds_addr: Option<String>,
    /// `httpAddr`.
    pub http_addr: Option<SocketAddr>,
    /// `caDir`.
    pub ca_dir: Option<PathBuf>,
    /// `caTokens`.
    pub ca_tokens: Option<PathBuf>,
    /// `trustDomain`.
    pub trust_domain: Option<String>,
    /// `debounce`, such as `100ms` or `1s`.
    pub debounce: Option<String>,
    /// `pollInterval`, such as `500ms`.
    pub poll_interval: Option<String>,
}

impl SettingsFile {
    /// Reads and parses a settings file, resolving relative paths against
    /// its directory.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| MeshdError::Io {
            what: format!("reading settings file {}", path.display()),
            source: e,
        })?;
        let mut s = Self::parse(&text, &path.display().to_string())?;
        let base = path.parent().unwrap_or(Path::new("."));
        for p in [
            &mut s.config,
            &mut s.mesh_config,
            &mut s.ca_dir,
            &mut s.ca_tokens,
        ]
        .into_iter()
        .flatten()
        {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
        Ok(s)
    }

    /// Parses settings YAML; `file` names it in errors.
    pub fn parse(text: &str, file: &str) -> Result<Self> {
        let (docs, err) = mesh_core::config::yaml::parse_documents(text);
        if let Some(e) = err {
            return Err(MeshdError::Settings(format!("{file}: {e}")));
        }
        let Some(doc) = docs.into_iter().next() else {
            return Ok(Self::default());
        };
        if doc.value.is_null() {
            return Ok(Self::default());
        }
        serde_json::from_value(doc.value).map_err(|e| {
            MeshdError::Settings(format!(
                "{file}: {e}; known keys are config, meshConfig, xdsAddr, secureXdsAddr, httpAddr, caDir, caTokens, trustDomain, debounce, pollInterval"
            ))
        })
    }
}

/// Parses a listen address, or `off` for a port that is not served (what
/// `--secure-xds-addr` and `secureXdsAddr` accept).
pub fn parse_optional_addr(s: &str) -> Result<Option<SocketAddr>, String> {
    let s = s.trim();
    if s.eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    s.parse().map(Some).map_err(|e| {
        format!("{s:?} is not a listen address ({e}); write it like 127.0.0.1:15012, or off")
    })
}

/// Parses `250ms`, `2s` or `1m` (what the settings file and flags accept).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = s
        .find(|c: char| !c.is_ascii_digit())
        .map(|i| s.split_at(i))
        .unwrap_or((s, ""));
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration; write it like 100ms, 2s or 1m"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "s" | "" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        _ => Err(format!(
            "{s:?} has unknown unit {unit:?}; use ms, s or m (100ms, 2s, 1m)"
        )),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn settings_file_parses_and_rejects_unknown_keys() {
        let s = SettingsFile::parse(
            "config: conf\nxdsAddr: 127.0.0.1:15010\ntrustDomain: example.org\ndebounce: 250ms\n",
            "meshd.yaml",
        )
        .unwrap();
        assert_eq!(s.config.as_deref(), Some(Path::new("conf")));
        assert_eq!(s.xds_addr, Some("127.0.0.1:15010".parse().unwrap()));
        assert_eq!(s.trust_domain.as_deref(), Some("example.org"));
        assert_eq!(
            parse_duration(s.debounce.as_deref().unwrap()).unwrap(),
            Duration::from_millis(250)
        );
        let e = SettingsFile::parse("xdsadr: 1\n", "meshd.yaml").unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("meshd.yaml") && msg.contains("xdsadr") && msg.contains("xdsAddr"),
            "{msg}"
        );
    }

    #[test]
    fn secure_xds_addr_parses_or_turns_off() {
        let s = SettingsFile::parse("secureXdsAddr: 0.0.0.0:15012\n", "meshd.yaml").unwrap();
        assert_eq!(
            parse_optional_addr(s.secure_xds_addr.as_deref().unwrap()).unwrap(),
            Some("0.0.0.0:15012".parse().unwrap())
        );
        assert_eq!(parse_optional_addr("off").unwrap(), None);
        assert!(parse_optional_addr("15012").unwrap_err().contains("off"));
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("2s").unwrap(), Duration::from_secs(2));
        assert_eq!(parse_duration("1m").unwrap(), Duration::from_secs(60));
        assert!(parse_duration("fast").unwrap_err().contains("100ms"));
        assert!(parse_duration("3h").unwrap_err().contains("unknown unit"));
    }
}
