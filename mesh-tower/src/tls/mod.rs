//! Client-side TLS origination: the connector that turns the TCP stream
//! to an endpoint into plaintext, TLS or mesh mTLS as the DestinationRule
//! and auto-mTLS decide ([`origination`]).
//!
//! [`TlsConnector`] wraps another [`Connector`] (TCP by default). Mesh mTLS
//! (`ISTIO_MUTUAL`, explicit or automatic) presents the workload
//! certificate of a [`TlsSource`] and verifies the server's SPIFFE
//! identity: the endpoint's service account when the registry knows it
//! (or the DestinationRule's `subjectAltNames`), else any identity of the
//! trust domain and its aliases. The certificate and trust bundle are read
//! from their `watch` channels at every handshake, so a rotation applies
//! to new connections while pooled ones keep the session they negotiated.
//! `SIMPLE`/`MUTUAL` use the files the DestinationRule names ([`files`]).
//!
//! ALPN offers exactly the protocol the pool speaks (`h2` for HTTP/2
//! pools, `http/1.1` otherwise), so TLS never negotiates something the
//! pool would not send.
//!
//! A failed handshake is an `io::Error` holding a [`TlsError`] that names
//! the endpoint, the expected identity and the TLS error; the endpoint
//! stage turns it into a `UF` connect failure.

pub mod error;
pub mod files;
pub mod origination;
pub mod roots;

use mesh_core::sync::LockExt;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use mesh_ca::tls::{PeerPolicy, ALPN_H2, ALPN_HTTP11};
use mesh_ca::SpiffeId;
use rustls::pki_types::ServerName;
use rustls::ClientConfig;

pub use error::TlsError;
pub use origination::{decide, istio_sni, Origination};

use crate::balance::{BoxIo, ConnectFuture, ConnectTarget, Connector, TcpConnector};
use crate::server::TlsSource;
use crate::ModelRx;
use mesh_core::config::networking::destination_rule::ClientTlsSettings;

/// More cached configs than this and the cache starts over (identities
/// come and go with the registry).
const CACHE_LIMIT: usize = 1024;

/// Mesh configs by (trust domains, expected identities, HTTP/2).
type MeshKey = (Vec<String>, Vec<String>, bool);
/// How long a file config is used before its files' modification times
/// are looked at again: new connections do not each stat the files.
const FILE_RECHECK: Duration = Duration::from_secs(1);

/// A config built from a DestinationRule's files.
struct FileEntry {
    settings: ClientTlsSettings,
    http2: bool,
    /// The files' modification times when it was built.
    stamps: Vec<Option<SystemTime>>,
    /// When they were last compared.
    checked: tokio::time::Instant,
    config: Arc<ClientConfig>,
}

#[derive(Default)]
struct Cache {
    mesh: HashMap<MeshKey, Arc<ClientConfig>>,
    /// Few entries (one per distinct DestinationRule TLS setting): found
    /// by comparing settings, no key string built per connection.
    files: Vec<FileEntry>,
}

/// Opens plaintext, TLS or mesh mTLS connections, per endpoint.
#[derive(Clone)]
pub struct TlsConnector {
    inner: Arc<dyn Connector>,
    identity: Option<TlsSource>,
    model: Option<ModelRx>,
    auto_mtls: bool,
    cache: Arc<Mutex<Cache>>,
}

impl std::fmt::Debug for TlsConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsConnector")
            .field("identity", &self.identity.is_some())
            .field("auto_mtls", &self.auto_mtls)
            .finish_non_exhaustive()
    }
}

impl Default for TlsConnector {
    fn default() -> Self {
        Self::new()
    }
}

impl TlsConnector {
    /// Over TCP, without a mesh identity (DestinationRule `SIMPLE`/`MUTUAL`
    /// only), auto-mTLS on.
    pub fn new() -> Self {
        TlsConnector {
            inner: Arc::new(TcpConnector),
            identity: None,
            model: None,
            auto_mtls: true,
            cache: Arc::default(),
        }
    }

    /// Opens the underlying streams with `inner` instead of TCP.
    pub fn over(mut self, inner: impl Connector) -> Self {
        self.inner = Arc::new(inner);
        self
    }

    /// The workload certificate and trust bundle for mesh mTLS.
    pub fn identity(mut self, identity: TlsSource) -> Self {
        self.identity = Some(identity);
        self
    }

    /// MeshConfig's `enableAutoMtls` (default true).
    pub fn auto_mtls(mut self, on: bool) -> Self {
        self.auto_mtls = on;
        self
    }

    /// Reads the trust domain and its aliases from the model (without it,
    /// the trust domain of the workload's own certificate, no aliases).
    pub fn model(mut self, model: ModelRx) -> Self {
        self.model = Some(model);
        self
    }

    fn trust_domains(&self, identity: &TlsSource) -> (String, Vec<String>) {
        match &self.model {
            Some(m) => {
                let m = m.borrow();
                (
                    m.mesh.trust_domain.clone(),
                    m.mesh.trust_domain_aliases.clone(),
                )
            }
            None => (
                identity
                    .certificates()
                    .borrow()
                    .identity()
                    .trust_domain()
                    .to_string(),
                Vec::new(),
            ),
        }
    }

    fn mesh_config(
        &self,
        target: &ConnectTarget,
        identity: &TlsSource,
        expected: &[String],
    ) -> Result<Arc<ClientConfig>, TlsError> {
        let (td, aliases) = self.trust_domains(identity);
        let mut domains = aliases.clone();
        domains.insert(0, td.clone());
        let key = (domains, expected.to_vec(), target.http2);
        let mut cache = self.cache.locked();
        if let Some(c) = cache.mesh.get(&key) {
            return Ok(c.clone());
        }
        let config_err = |detail: String| TlsError::Config {
            cluster: target.cluster.clone(),
            detail,
        };
        let ids = expected
            .iter()
            .map(|e| {
                SpiffeId::parse(e).map_err(|err| {
                    config_err(format!(
                        "expected peer identity {e:?} is not a SPIFFE id: {err}"
                    ))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let policy = PeerPolicy::new(td)
            .with_aliases(aliases)
            .expect_identities(ids);
        let mut config = mesh_ca::tls::client_config(
            Some(identity.certificates()),
            identity.trust_bundle(),
            policy,
        )
        .map_err(|e| config_err(e.to_string()))?;
        config.alpn_protocols = vec![alpn(target.http2).to_vec()];
        let config = Arc::new(config);
        if cache.mesh.len() >= CACHE_LIMIT {
            cache.mesh.clear();
        }
        cache.mesh.insert(key, config.clone());
        Ok(config)
    }

    fn file_config(
        &self,
        target: &ConnectTarget,
        settings: &mesh_core::config::networking::destination_rule::ClientTlsSettings,
    ) -> Result<Arc<ClientConfig>, TlsError> {
        let now = tokio::time::Instant::now();
        let find = |files: &[FileEntry]| {
            files
                .iter()
                .position(|e| e.http2 == target.http2 && e.settings == *settings)
        };
        {
            let mut cache = self.cache.locked();
            if let Some(i) = find(&cache.files) {
                let e = &mut cache.files[i];
                if now.duration_since(e.checked) < FILE_RECHECK {
                    return Ok(e.config.clone());
                }
            }
        }
        // Outside the lock: stats (and, on a change, reads) the files.
        let stamps = files::file_stamps(settings);
        {
            let mut cache = self.cache.locked();
            if let Some(i) = find(&cache.files) {
                let e = &mut cache.files[i];
                if e.stamps == stamps {
                    e.checked = now;
                    return Ok(e.config.clone());
                }
            }
        }
        let config = Arc::new(files::client_config(
            &target.cluster,
            settings,
            alpn(target.http2),
        )?);
        let mut cache = self.cache.locked();
        if cache.files.len() >= CACHE_LIMIT {
            cache.files.clear();
        }
        if let Some(i) = find(&cache.files) {
            cache.files.remove(i);
        }
        cache.files.push(FileEntry {
            settings: settings.clone(),
            http2: target.http2,
            stamps,
            checked: now,
            config: config.clone(),
        });
        Ok(config)
    }

    /// The origination for `target` and, for TLS, the config and SNI.
    fn plan(
        &self,
        target: &ConnectTarget,
    ) -> Result<Option<(Origination, Arc<ClientConfig>, String)>, TlsError> {
        let how = decide(target, self.auto_mtls, self.identity.is_some());
        match &how {
            Origination::Plaintext => Ok(None),
            Origination::Files(settings) => {
                let config = self.file_config(target, settings)?;
                let sni = settings.sni.clone().unwrap_or_else(|| target.host.clone());
                Ok(Some((how.clone(), config, sni)))
            }
            Origination::IstioMutual { expected, sni, .. } => {
                let Some(identity) = &self.identity else {
                    return Err(TlsError::NoIdentity {
                        cluster: target.cluster.clone(),
                        addr: target.addr,
                    });
                };
                let config = self.mesh_config(target, identity, expected)?;
                let sni = sni.clone();
                Ok(Some((how, config, sni)))
            }
        }
    }
}

fn alpn(http2: bool) -> &'static [u8] {
    if http2 {
        ALPN_H2
    } else {
        ALPN_HTTP11
    }
}

/// The name rustls sends and checks: the SNI when it is a valid DNS name
/// or IP, else the endpoint IP (rustls refuses to send invalid names).
fn server_name(sni: &str, target: &ConnectTarget) -> ServerName<'static> {
    ServerName::try_from(sni.to_string())
        .unwrap_or_else(|_| ServerName::IpAddress(target.addr.ip().into()))
}

fn handshake_error(
    how: &Origination,
    target: &ConnectTarget,
    sni: &str,
    source: std::io::Error,
) -> TlsError {
    let mode = how.mode_name();
    let expected_ids = match how {
        Origination::IstioMutual { expected, .. } => expected.clone(),
        _ => Vec::new(),
    };
    if let Some(mesh_ca::tls::PeerIdentityError::NotExpected { peer, expected }) =
        error::identity_refusal(&source)
    {
        return TlsError::WrongIdentity {
            mode,
            addr: target.addr,
            cluster: target.cluster.clone(),
            presented: peer.to_string(),
            expected: expected.clone(),
        };
    }
    let expected = match how {
        Origination::IstioMutual { .. } if expected_ids.is_empty() => {
            "any identity of the trust domain".to_string()
        }
        Origination::IstioMutual { .. } => expected_ids.join(" or "),
        Origination::Files(s) if !s.subject_alt_names.is_empty() => {
            s.subject_alt_names.join(" or ")
        }
        _ => sni.to_string(),
    };
    TlsError::Handshake {
        mode,
        addr: target.addr,
        cluster: target.cluster.clone(),
        expected: format!("SNI {sni}, expected {expected}"),
        source,
    }
}

impl Connector for TlsConnector {
    fn connect(&self, target: ConnectTarget) -> ConnectFuture {
        let plan = self.plan(&target);
        let inner = self.inner.clone();
        Box::pin(async move {
            let plan = plan?;
            let io = inner.connect(target.clone()).await?;
            let Some((how, config, sni)) = plan else {
                return Ok(io);
            };
            let name = server_name(&sni, &target);
            match tokio_rustls::TlsConnector::from(config)
                .connect(name, io)
                .await
            {
                Ok(stream) => Ok(Box::new(stream) as BoxIo),
                Err(e) => Err(handshake_error(&how, &target, &sni, e).into()),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn istio_sni_is_sent_as_is() {
        let target = ConnectTarget {
            addr: "127.0.0.1:15006".parse().unwrap(),
            cluster: "outbound|9080||reviews.default.svc.cluster.local".into(),
            host: "reviews.default.svc.cluster.local".into(),
            identity: None,
            tls_mode: mesh_core::registry::TlsMode::Istio,
            keepalive: None,
            tls: None,
            http2: false,
        };
        let sni = istio_sni(&target.cluster, &target.host);
        match server_name(&sni, &target) {
            ServerName::DnsName(d) => assert_eq!(d.as_ref(), sni),
            other => panic!("SNI {sni} not usable: {other:?}"),
        }
        // A name rustls cannot send falls back to the endpoint IP.
        assert!(matches!(
            server_name("not a name", &target),
            ServerName::IpAddress(_)
        ));
    }

    fn ca_pem() -> String {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .self_signed(&rcgen::KeyPair::generate().unwrap())
            .unwrap()
            .pem()
    }

    /// New connections reuse a DestinationRule's file config without
    /// touching the files; a rewritten CA is picked up within
    /// `FILE_RECHECK`, not on the next connection and not never.
    #[tokio::test(start_paused = true)]
    async fn file_configs_are_reused_and_follow_rewritten_files() {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, ca_pem()).unwrap();
        let settings = ClientTlsSettings {
            mode: Some(mesh_core::config::networking::destination_rule::ClientTlsMode::Simple),
            ca_certificates: Some(ca.display().to_string()),
            ..Default::default()
        };
        let target = ConnectTarget {
            addr: "127.0.0.1:443".parse().unwrap(),
            cluster: "outbound|443||api.external.test".into(),
            host: "api.external.test".into(),
            identity: None,
            tls_mode: mesh_core::registry::TlsMode::Disabled,
            keepalive: None,
            tls: Some(Arc::new(settings.clone())),
            http2: false,
        };
        let tls = TlsConnector::new();
        let first = tls.file_config(&target, &settings).unwrap();
        assert!(Arc::ptr_eq(
            &first,
            &tls.file_config(&target, &settings).unwrap()
        ));
        // HTTP/2 offers a different ALPN: its own config.
        let h2 = ConnectTarget {
            http2: true,
            ..target.clone()
        };
        assert!(!Arc::ptr_eq(
            &first,
            &tls.file_config(&h2, &settings).unwrap()
        ));

        // A new CA, with a clearly later modification time.
        std::fs::write(&ca, ca_pem()).unwrap();
        let later = SystemTime::now() + Duration::from_secs(60);
        std::fs::File::options()
            .write(true)
            .open(&ca)
            .unwrap()
            .set_modified(later)
            .unwrap();
        tokio::time::advance(FILE_RECHECK / 2).await;
        assert!(
            Arc::ptr_eq(&first, &tls.file_config(&target, &settings).unwrap()),
            "files are not looked at again before FILE_RECHECK"
        );
        tokio::time::advance(FILE_RECHECK).await;
        let second = tls.file_config(&target, &settings).unwrap();
        assert!(!Arc::ptr_eq(&first, &second), "the rewritten CA is read");
        tokio::time::advance(FILE_RECHECK * 2).await;
        assert!(
            Arc::ptr_eq(&second, &tls.file_config(&target, &settings).unwrap()),
            "unchanged files keep the config"
        );

        // A CA file that is now broken fails the connection (closed), it
        // does not keep the old trust forever.
        std::fs::write(&ca, "not a certificate").unwrap();
        std::fs::File::options()
            .write(true)
            .open(&ca)
            .unwrap()
            .set_modified(later + Duration::from_secs(60))
            .unwrap();
        tokio::time::advance(FILE_RECHECK * 2).await;
        assert!(tls.file_config(&target, &settings).is_err());
    }
}
