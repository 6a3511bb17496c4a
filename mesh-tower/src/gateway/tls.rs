//! rustls server configs for the Gateway servers that terminate TLS,
//! built from the files they name and rebuilt when those files change.
//!
//! - SIMPLE presents `serverCertificate`/`privateKey`;
//! - MUTUAL also requires a client certificate that chains to
//!   `caCertificates` (OPTIONAL_MUTUAL verifies one only if sent);
//! - ISTIO_MUTUAL presents the workload's mesh certificate and requires a
//!   mesh client certificate of the trust domain (needs the mesh's
//!   identity).
//!
//! A config is cached per server settings; the files' modification times
//! are compared again at most once a second, so a renewed certificate
//! (cert-manager, a remounted secret) applies to the next handshakes
//! without a restart and without a `stat` per connection. A file that
//! cannot be read refuses the connection with an error naming the server,
//! field and file (fail closed).

use mesh_core::sync::LockExt;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use mesh_ca::tls::{ClientAuth, PeerPolicy};
use mesh_core::model::gateway::{GatewayServer, ServerTls, ServerTlsMode, TlsVersion};
use mesh_core::model::Model;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::PrivateKeyDer;
use rustls::server::WebPkiClientVerifier;
use rustls::ServerConfig;

use crate::server::TlsSource;
use crate::tls::roots;

/// How long a built config is used before its files are looked at again.
const FILE_RECHECK: Duration = Duration::from_secs(1);

/// More distinct server settings than this and the cache starts over.
const CACHE_LIMIT: usize = 256;

/// Why a server's TLS cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum ServerTlsError {
    /// A file named by the Gateway is unusable.
    #[error("{server}: tls.{field} {path}: {detail}")]
    File {
        /// The server (`namespace/name servers[i]`).
        server: String,
        /// The Gateway field naming the file.
        field: &'static str,
        /// The path.
        path: String,
        /// What is wrong with it.
        detail: String,
    },
    /// ISTIO_MUTUAL without a workload certificate.
    #[error("{server}: tls.mode ISTIO_MUTUAL needs the gateway's mesh identity; build the Mesh with an identity or a CA")]
    NoIdentity {
        /// The server.
        server: String,
    },
    /// rustls refused the settings.
    #[error("{server}: {detail}")]
    Config {
        /// The server.
        server: String,
        /// rustls' reason.
        detail: String,
    },
    /// The server does not terminate TLS.
    #[error("{server}: not a terminating TLS server")]
    NotTerminating {
        /// The server.
        server: String,
    },
}

struct Entry {
    tls: ServerTls,
    trust: Option<PeerPolicy>,
    stamps: Vec<Option<SystemTime>>,
    checked: tokio::time::Instant,
    config: Arc<ServerConfig>,
}

/// Server configs by server TLS settings (clone it freely).
#[derive(Clone, Default)]
pub struct ServerConfigs {
    identity: Option<TlsSource>,
    cache: Arc<Mutex<Vec<Entry>>>,
}

impl std::fmt::Debug for ServerConfigs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerConfigs")
            .field("identity", &self.identity.is_some())
            .finish_non_exhaustive()
    }
}

impl ServerConfigs {
    /// Configs presenting `identity` for ISTIO_MUTUAL servers (none: those
    /// servers refuse connections).
    pub fn new(identity: Option<TlsSource>) -> Self {
        ServerConfigs {
            identity,
            cache: Arc::default(),
        }
    }

    /// The config for `server` of `model`, from the cache unless its files
    /// changed.
    pub fn config(
        &self,
        model: &Model,
        server: &GatewayServer,
    ) -> Result<Arc<ServerConfig>, ServerTlsError> {
        let label = server.label();
        let tls = match &server.tls {
            Some(t) if t.mode != ServerTlsMode::Passthrough => t,
            _ => return Err(ServerTlsError::NotTerminating { server: label }),
        };
        let trust = (tls.mode == ServerTlsMode::IstioMutual).then(|| {
            PeerPolicy::new(model.mesh.trust_domain.clone())
                .with_aliases(model.mesh.trust_domain_aliases.iter().cloned())
        });
        let now = tokio::time::Instant::now();
        {
            let mut cache = self.cache.locked();
            if let Some(e) = cache.iter_mut().find(|e| e.tls == *tls && e.trust == trust) {
                if now.duration_since(e.checked) < FILE_RECHECK {
                    return Ok(e.config.clone());
                }
                if stamps(tls) == e.stamps {
                    e.checked = now;
                    return Ok(e.config.clone());
                }
            }
        }
        // Built outside the lock: it reads files.
        let stamps = stamps(tls);
        let config = Arc::new(self.build(&label, tls, trust.clone())?);
        let mut cache = self.cache.locked();
        cache.retain(|e| !(e.tls == *tls && e.trust == trust));
        if cache.len() >= CACHE_LIMIT {
            cache.clear();
        }
        cache.push(Entry {
            tls: tls.clone(),
            trust,
            stamps,
            checked: now,
            config: config.clone(),
        });
        Ok(config)
    }

    fn build(
        &self,
        server: &str,
        tls: &ServerTls,
        trust: Option<PeerPolicy>,
    ) -> Result<ServerConfig, ServerTlsError> {
        let config_err = |e: rustls::Error| ServerTlsError::Config {
            server: server.to_string(),
            detail: e.to_string(),
        };
        if let Some(policy) = trust {
            let Some(id) = &self.identity else {
                return Err(ServerTlsError::NoIdentity {
                    server: server.to_string(),
                });
            };
            return mesh_ca::tls::server_config(
                id.certificates(),
                id.trust_bundle(),
                policy,
                ClientAuth::Required,
            )
            .map_err(|e| ServerTlsError::Config {
                server: server.to_string(),
                detail: e.to_string(),
            });
        }
        let file_err = |field: &'static str, path: &str, detail: String| ServerTlsError::File {
            server: server.to_string(),
            field,
            path: path.to_string(),
            detail,
        };
        let (Some(cert_path), Some(key_path)) = (&tls.server_certificate, &tls.private_key) else {
            return Err(file_err(
                "serverCertificate",
                "",
                "a terminating server needs serverCertificate and privateKey".into(),
            ));
        };
        let chain = roots::read_certs(Path::new(cert_path))
            .map_err(|d| file_err("serverCertificate", cert_path, d))?;
        let key = PrivateKeyDer::from_pem_file(key_path)
            .map_err(|e| file_err("privateKey", key_path, format!("no usable PEM key: {e}")))?;
        let provider = mesh_ca::crypto::provider();
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&versions(tls))
            .map_err(config_err)?;
        let builder = match tls.mode {
            ServerTlsMode::Mutual | ServerTlsMode::OptionalMutual => {
                let ca = tls.ca_certificates.as_deref().unwrap_or_default();
                let roots = roots::roots_from_file(Path::new(ca))
                    .map_err(|d| file_err("caCertificates", ca, d))?;
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
                let verifier = if tls.mode == ServerTlsMode::OptionalMutual {
                    verifier.allow_unauthenticated()
                } else {
                    verifier
                };
                let verifier = verifier.build().map_err(|e| ServerTlsError::Config {
                    server: server.to_string(),
                    detail: format!("caCertificates {ca}: {e}"),
                })?;
                builder.with_client_cert_verifier(verifier)
            }
            _ => builder.with_no_client_auth(),
        };
        let mut config = builder.with_single_cert(chain, key).map_err(config_err)?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(config)
    }
}

/// The TLS versions a server accepts: 1.2 and 1.3 unless narrowed.
fn versions(tls: &ServerTls) -> Vec<&'static rustls::SupportedProtocolVersion> {
    let min = tls.min_version.unwrap_or(TlsVersion::V1_2);
    let max = tls.max_version.unwrap_or(TlsVersion::V1_3);
    [
        (TlsVersion::V1_2, &rustls::version::TLS12),
        (TlsVersion::V1_3, &rustls::version::TLS13),
    ]
    .into_iter()
    .filter(|(v, _)| (min..=max).contains(v))
    .map(|(_, r)| r)
    .collect()
}

/// Modification times of the files a server's TLS names.
fn stamps(tls: &ServerTls) -> Vec<Option<SystemTime>> {
    [
        &tls.server_certificate,
        &tls.private_key,
        &tls.ca_certificates,
    ]
    .into_iter()
    .map(|p| {
        p.as_deref()
            .and_then(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
    })
    .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use mesh_core::config::kube::Protocol;
    use mesh_core::config::MeshConfig;
    use mesh_core::model::gateway::ServerHost;
    use mesh_core::model::Client;

    fn write_cert(dir: &Path, name: &str) {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec![name.to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        std::fs::write(dir.join("cert.pem"), cert.pem()).unwrap();
        std::fs::write(dir.join("key.pem"), key.serialize_pem()).unwrap();
    }

    fn server(dir: &Path, mode: ServerTlsMode) -> GatewayServer {
        let path = |n: &str| Some(dir.join(n).display().to_string());
        GatewayServer {
            gateway: "istio-system/gw".into(),
            index: 0,
            port_name: "https".into(),
            protocol: Protocol::Https,
            hosts: vec![ServerHost::parse("*", "istio-system")],
            tls: Some(ServerTls {
                mode,
                server_certificate: path("cert.pem"),
                private_key: path("key.pem"),
                ca_certificates: None,
                min_version: None,
                max_version: None,
            }),
            https_redirect: false,
            http_routes: None,
            tls_routes: Vec::new(),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn renewed_files_apply_after_the_recheck_interval() {
        let dir = tempfile::tempdir().unwrap();
        write_cert(dir.path(), "a.example.com");
        let model = mesh_core::compile::compile(&[], &MeshConfig::default(), &Client::default());
        let s = server(dir.path(), ServerTlsMode::Simple);
        let configs = ServerConfigs::new(None);
        let first = configs.config(&model, &s).unwrap();
        assert!(Arc::ptr_eq(&first, &configs.config(&model, &s).unwrap()));
        // Renewed on disk: not looked at within the interval...
        write_cert(dir.path(), "a.example.com");
        assert!(Arc::ptr_eq(&first, &configs.config(&model, &s).unwrap()));
        // ... and picked up after it.
        tokio::time::advance(FILE_RECHECK).await;
        let second = configs.config(&model, &s).unwrap();
        assert!(!Arc::ptr_eq(&first, &second));
        // Unchanged files keep the config after another interval.
        tokio::time::advance(FILE_RECHECK).await;
        assert!(Arc::ptr_eq(&second, &configs.config(&model, &s).unwrap()));
    }

    #[tokio::test]
    async fn unusable_files_and_missing_identity_refuse_with_the_field_and_path() {
        let dir = tempfile::tempdir().unwrap();
        let model = mesh_core::compile::compile(&[], &MeshConfig::default(), &Client::default());
        let configs = ServerConfigs::new(None);
        let err = configs
            .config(&model, &server(dir.path(), ServerTlsMode::Simple))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("istio-system/gw servers[0]")
                && err.contains("tls.serverCertificate")
                && err.contains("cert.pem"),
            "{err}"
        );
        let err = configs
            .config(&model, &server(dir.path(), ServerTlsMode::IstioMutual))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("ISTIO_MUTUAL needs the gateway's mesh identity"),
            "{err}"
        );
        let err = configs
            .config(&model, &server(dir.path(), ServerTlsMode::Passthrough))
            .unwrap_err();
        assert!(matches!(err, ServerTlsError::NotTerminating { .. }));
    }
}
