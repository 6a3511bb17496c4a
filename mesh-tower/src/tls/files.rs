//! rustls client configs for a DestinationRule's `SIMPLE` and `MUTUAL`
//! modes, built from the files it names.
//!
//! The server's chain is verified against `caCertificates` (the system
//! bundle when unset). Its name is then checked against
//! `subjectAltNames` when given (any of them: DNS names and IPs as in
//! hostname verification, `scheme://` entries against URI SANs), else
//! against the SNI (`sni`, default the service host), which is what
//! Istio's client-side certificate verification does. `insecureSkipVerify`
//! skips both. `MUTUAL` presents `clientCertificate` with `privateKey`.
//! `credentialName` (a Kubernetes secret) and `caCrl` are not supported and
//! refuse the connection rather than silently weakening it.

use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

use mesh_core::config::networking::destination_rule::{ClientTlsMode, ClientTlsSettings};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{verify_server_cert_signed_by_trust_anchor, verify_server_name};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, OtherError, RootCertStore,
    SignatureScheme,
};

use super::error::TlsError;
use super::roots;

/// The server presented none of the names a DestinationRule asked for.
#[derive(Debug, thiserror::Error)]
#[error("the server certificate carries none of the subjectAltNames {expected:?} (it has DNS {dns:?}, URI {uri:?})")]
pub struct SanMismatch {
    /// What the DestinationRule asked for.
    pub expected: Vec<String>,
    /// The certificate's DNS SANs.
    pub dns: Vec<String>,
    /// The certificate's URI SANs.
    pub uri: Vec<String>,
}

/// Verifies servers for `SIMPLE`/`MUTUAL`.
#[derive(Debug)]
struct FileVerifier {
    roots: Option<Arc<RootCertStore>>,
    sans: Vec<String>,
    algs: WebPkiSupportedAlgorithms,
}

impl FileVerifier {
    fn check_sans(&self, end_entity: &CertificateDer<'_>, cert: &ParsedCertificate<'_>) -> bool {
        let uris = mesh_ca::x509::cert_info(end_entity)
            .map(|i| i.uri_sans)
            .unwrap_or_default();
        self.sans.iter().any(|san| {
            if san.contains("://") {
                uris.iter().any(|u| u == san)
            } else {
                ServerName::try_from(san.as_str())
                    .is_ok_and(|name| verify_server_name(cert, &name).is_ok())
            }
        })
    }
}

impl ServerCertVerifier for FileVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(roots) = &self.roots else {
            // insecureSkipVerify.
            return Ok(ServerCertVerified::assertion());
        };
        let cert = ParsedCertificate::try_from(end_entity)?;
        verify_server_cert_signed_by_trust_anchor(&cert, roots, intermediates, now, self.algs.all)?;
        if self.sans.is_empty() {
            verify_server_name(&cert, server_name)?;
        } else if !self.check_sans(end_entity, &cert) {
            let info = mesh_ca::x509::cert_info(end_entity).ok();
            let e = SanMismatch {
                expected: self.sans.clone(),
                dns: info
                    .as_ref()
                    .map(|i| i.dns_sans.clone())
                    .unwrap_or_default(),
                uri: info.map(|i| i.uri_sans).unwrap_or_default(),
            };
            return Err(rustls::Error::InvalidCertificate(CertificateError::Other(
                OtherError(Arc::new(e)),
            )));
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algs.supported_schemes()
    }
}

/// Modification times of the files a config was built from, so a
/// replaced certificate (cert-manager, a mounted secret) is picked up by
/// the next connection.
pub(crate) fn file_stamps(s: &ClientTlsSettings) -> Vec<Option<SystemTime>> {
    [&s.ca_certificates, &s.client_certificate, &s.private_key]
        .into_iter()
        .map(|p| {
            p.as_deref()
                .and_then(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
        })
        .collect()
}

/// Builds the client config for a `SIMPLE`/`MUTUAL` DestinationRule.
pub(crate) fn client_config(
    cluster: &str,
    s: &ClientTlsSettings,
    alpn: &[u8],
) -> Result<ClientConfig, TlsError> {
    let unsupported = |detail: &str| TlsError::Unsupported {
        cluster: cluster.to_string(),
        detail: detail.to_string(),
    };
    if s.credential_name.is_some() {
        return Err(unsupported("credentialName needs a Kubernetes secret source, which this client does not have; use clientCertificate, privateKey and caCertificates files"));
    }
    if s.ca_crl.is_some() {
        return Err(unsupported(
            "caCrl is not supported; remove it (connections are refused rather than sent without revocation checks)",
        ));
    }
    let file_err = |field: &'static str, path: &str, detail: String| TlsError::File {
        cluster: cluster.to_string(),
        field,
        path: path.into(),
        detail,
    };
    let roots = if s.insecure_skip_verify == Some(true) {
        None
    } else {
        Some(Arc::new(match &s.ca_certificates {
            Some(path) => roots::roots_from_file(Path::new(path))
                .map_err(|d| file_err("caCertificates", path, d))?,
            None => roots::system_roots().map_err(|looked| TlsError::NoRoots {
                cluster: cluster.to_string(),
                looked,
            })?,
        }))
    };
    let provider = mesh_ca::crypto::provider();
    let verifier = FileVerifier {
        roots,
        sans: s.subject_alt_names.clone(),
        algs: provider.signature_verification_algorithms,
    };
    let config_err = |e: rustls::Error| TlsError::Config {
        cluster: cluster.to_string(),
        detail: e.to_string(),
    };
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(config_err)?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier));
    let mut config = if s.mode == Some(ClientTlsMode::Mutual) {
        let (Some(cert_path), Some(key_path)) = (&s.client_certificate, &s.private_key) else {
            return Err(unsupported(
                "MUTUAL needs clientCertificate and privateKey (files with the PEM certificate chain and key)",
            ));
        };
        let chain = roots::read_certs(Path::new(cert_path))
            .map_err(|d| file_err("clientCertificate", cert_path, d))?;
        let key = PrivateKeyDer::from_pem_file(key_path)
            .map_err(|e| file_err("privateKey", key_path, format!("no usable PEM key: {e}")))?;
        builder
            .with_client_auth_cert(chain, key)
            .map_err(config_err)?
    } else {
        builder.with_no_client_auth()
    };
    config.alpn_protocols = vec![alpn.to_vec()];
    Ok(config)
}
