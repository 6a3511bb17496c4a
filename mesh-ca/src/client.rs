//! Workload side of the CA API: calls
//! `IstioCertificateService/CreateCertificate` over TLS with a fresh key and
//! CSR, authenticating with the current certificate (renewal) and/or a
//! bootstrap token.
//!
//! Each call opens its own connection: certificates are fetched rarely, and
//! a new handshake is the only way to present the *current* client
//! certificate. The CA server is verified with standard hostname checks
//! against `server_name` and the configured roots.

use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tonic::transport::{Endpoint, Uri};

use crate::bundle::TrustBundle;
use crate::error::{Error, Result};
use crate::proto::{
    IstioCertificateRequest, IstioCertificateResponse, IstioCertificateServiceClient,
};
use crate::rotation::CertificateFetcher;
use crate::spiffe::SpiffeId;
use crate::workload::WorkloadCertificate;

/// Where the CA is and how to talk to it.
#[derive(Debug, Clone)]
pub struct CaClientConfig {
    /// `host:port` of the CA (e.g. `meshd.mesh-system.svc:15012`).
    pub address: String,
    /// The DNS name the CA's serving certificate must carry.
    pub server_name: String,
    /// Roots that verify the CA's serving certificate (the mesh root,
    /// distributed out of band like Istio's `istio-ca-root-cert`).
    pub ca_roots: TrustBundle,
    /// Bootstrap token sent as `authorization: Bearer <token>`, if any.
    pub token: Option<String>,
    /// Lifetime to request; `None` leaves it to the CA.
    pub requested_ttl: Option<Duration>,
    /// Connect and request timeout (10s).
    pub timeout: Duration,
}

impl CaClientConfig {
    /// A config with no token, the CA's default TTL and a 10s timeout.
    pub fn new(
        address: impl Into<String>,
        server_name: impl Into<String>,
        ca_roots: TrustBundle,
    ) -> Self {
        CaClientConfig {
            address: address.into(),
            server_name: server_name.into(),
            ca_roots,
            token: None,
            requested_ttl: None,
            timeout: Duration::from_secs(10),
        }
    }
}

/// A client of the mesh CA.
#[derive(Debug, Clone)]
pub struct CaClient {
    config: CaClientConfig,
}

impl CaClient {
    /// A client for `config`.
    pub fn new(config: CaClientConfig) -> Self {
        CaClient { config }
    }

    fn tls_config(
        &self,
        client_cert: Option<Arc<WorkloadCertificate>>,
    ) -> Result<rustls::ClientConfig> {
        let trust = watch::channel(Arc::new(self.config.ca_roots.clone())).1;
        crate::tls::control_plane_client_config(client_cert.map(|c| watch::channel(c).1), trust)
    }

    /// Sends one `CreateCertificate` request. `client_cert`, when given, is
    /// presented as the TLS client certificate.
    pub async fn create_certificate(
        &self,
        request: IstioCertificateRequest,
        client_cert: Option<Arc<WorkloadCertificate>>,
    ) -> Result<IstioCertificateResponse> {
        let address = self.config.address.clone();
        let connect_err = |detail: String| Error::Connect {
            address: address.clone(),
            detail,
        };
        let tls = Arc::new(self.tls_config(client_cert)?);
        let name = ServerName::try_from(self.config.server_name.clone()).map_err(|e| {
            Error::Config(format!("CA server name {:?}: {e}", self.config.server_name))
        })?;
        let target = address.clone();
        let connector = tower::service_fn(move |_: Uri| {
            let tls = tls.clone();
            let name = name.clone();
            let target = target.clone();
            async move {
                let tcp = TcpStream::connect(target.as_str()).await?;
                let stream = tokio_rustls::TlsConnector::from(tls)
                    .connect(name, tcp)
                    .await?;
                Ok::<_, std::io::Error>(TokioIo::new(stream))
            }
        });
        let channel = Endpoint::from_shared(format!("http://{address}"))
            .map_err(|e| connect_err(format!("bad address: {e}")))?
            .connect_timeout(self.config.timeout)
            .timeout(self.config.timeout)
            .connect_with_connector(connector)
            .await
            .map_err(|e| {
                let mut detail = error_chain(&e);
                if has_certificate_error(&e) {
                    detail.push_str(&format!(
                        "; the CA's certificate must chain to the configured roots (the mesh root, \
                         meshd's <ca_dir>/root-cert.pem) and name {:?}",
                        self.config.server_name
                    ));
                }
                connect_err(detail)
            })?;
        let mut request = tonic::Request::new(request);
        if let Some(token) = &self.config.token {
            let value = format!("Bearer {token}").parse().map_err(|_| {
                Error::Config("bootstrap token has characters not allowed in metadata".into())
            })?;
            request.metadata_mut().insert("authorization", value);
        }
        let response = IstioCertificateServiceClient::new(channel)
            .create_certificate(request)
            .await?;
        Ok(response.into_inner())
    }

    /// Generates a key and CSR for `identity`, asks the CA to sign it and
    /// returns the ready-to-use certificate. Fails if the CA issued another
    /// identity than `identity`.
    pub async fn fetch_certificate(
        &self,
        identity: &SpiffeId,
        current: Option<Arc<WorkloadCertificate>>,
    ) -> Result<WorkloadCertificate> {
        let key_csr = crate::csr::generate(identity)?;
        let request = IstioCertificateRequest {
            csr: key_csr.csr_pem,
            validity_duration: self
                .config
                .requested_ttl
                .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
                .unwrap_or(0),
            metadata: None,
        };
        let response = self.create_certificate(request, current).await?;
        let roots = response.root_cert.as_ref().map(|r| r.ca_cert.as_slice());
        let cert = WorkloadCertificate::from_ca_response(&response.cert_chain, roots, key_csr.key)?;
        if cert.identity() != identity {
            return Err(Error::Policy(format!(
                "the CA issued {} but this workload is {identity}",
                cert.identity()
            )));
        }
        Ok(cert)
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// Whether the handshake failed on the server's certificate (rustls's
/// error sits inside an `io::Error` somewhere in the chain).
fn has_certificate_error(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(err) = cur {
        let tls = err
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
            .or_else(|| err.downcast_ref::<rustls::Error>());
        if matches!(tls, Some(rustls::Error::InvalidCertificate(_))) {
            return true;
        }
        cur = err.source();
    }
    false
}

impl CertificateFetcher for CaClient {
    async fn fetch(
        &self,
        identity: &SpiffeId,
        current: Option<Arc<WorkloadCertificate>>,
    ) -> Result<WorkloadCertificate> {
        // Present the current certificate only while it is still valid;
        // an expired one would fail the handshake and hide the token path.
        let current = current.filter(|c| c.is_valid_at(std::time::SystemTime::now()));
        let renewing = current.is_some();
        match self.fetch_certificate(identity, current).await {
            // Renewal by certificate failed (e.g. its root is no longer
            // trusted): fall back to the bootstrap token when there is one.
            Err(e) if renewing && self.config.token.is_some() => {
                tracing::warn!(error = %e, "renewal with the current certificate failed; trying the bootstrap token");
                self.fetch_certificate(identity, None).await
            }
            other => other,
        }
    }
}
