//! Certificate verifiers for mesh mTLS: chain to the current trust bundle
//! (read from a `watch` channel on every handshake, so a rotated bundle
//! applies to new connections only), then the SPIFFE identity against a
//! [`PeerPolicy`]. DNS names are never checked between workloads: mesh
//! identities are URIs. The control plane is the exception
//! ([`ControlPlaneVerifier`]): it is verified by the name it was dialed
//! with, as istiod is, so no workload certificate (which carries no DNS
//! name) can stand in for it.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, OtherError, SignatureScheme,
};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use tokio::sync::watch;

use crate::bundle::{TrustBundle, Usage};
use crate::spiffe::SpiffeId;
use crate::tls::policy::{PeerIdentityError, PeerPolicy};
use crate::x509;

/// Shared chain + identity verification.
#[derive(Debug, Clone)]
struct Core {
    trust: watch::Receiver<Arc<TrustBundle>>,
    policy: PeerPolicy,
    algs: WebPkiSupportedAlgorithms,
}

fn pki_error(e: webpki::Error) -> rustls::Error {
    use webpki::Error as W;
    let ce = match e {
        W::CertExpired { .. } => CertificateError::Expired,
        W::CertNotValidYet { .. } => CertificateError::NotValidYet,
        W::UnknownIssuer => CertificateError::UnknownIssuer,
        W::InvalidSignatureForPublicKey => CertificateError::BadSignature,
        W::CertRevoked => CertificateError::Revoked,
        W::BadDer | W::BadDerTime => CertificateError::BadEncoding,
        other => CertificateError::Other(OtherError(Arc::new(other))),
    };
    rustls::Error::InvalidCertificate(ce)
}

fn identity_error(e: PeerIdentityError) -> rustls::Error {
    rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(e))))
}

impl Core {
    fn new(trust: watch::Receiver<Arc<TrustBundle>>, policy: PeerPolicy) -> Self {
        Core {
            trust,
            policy,
            algs: crate::crypto::provider().signature_verification_algorithms,
        }
    }

    fn verify(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
        usage: Usage,
    ) -> Result<SpiffeId, rustls::Error> {
        let bundle = self.trust.borrow().clone();
        bundle
            .verify(end_entity, intermediates, now, usage)
            .map_err(pki_error)?;
        let id = x509::spiffe_id(end_entity)
            .map_err(|e| identity_error(PeerIdentityError::NoIdentity(e.to_string())))?;
        self.policy.check(&id).map_err(identity_error)?;
        Ok(id)
    }

    fn tls12(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algs)
    }

    fn tls13(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algs)
    }
}

/// Verifies a server's certificate (used by mesh clients).
#[derive(Debug, Clone)]
pub struct MeshServerVerifier {
    core: Core,
}

impl MeshServerVerifier {
    /// Verifies against the bundle in `trust` and checks `policy`.
    pub fn new(trust: watch::Receiver<Arc<TrustBundle>>, policy: PeerPolicy) -> Self {
        MeshServerVerifier {
            core: Core::new(trust, policy),
        }
    }
}

impl ServerCertVerifier for MeshServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.core
            .verify(end_entity, intermediates, now, Usage::ServerAuth)
            .map(|_| ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.core.tls12(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.core.tls13(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.core.algs.supported_schemes()
    }
}

/// Verifies a client's certificate (used by mesh servers).
#[derive(Debug, Clone)]
pub struct MeshClientVerifier {
    core: Core,
    mandatory: bool,
}

impl MeshClientVerifier {
    /// Verifies against the bundle in `trust` and checks `policy`. With
    /// `mandatory` false, clients without a certificate are let through
    /// (the application then sees no peer identity).
    pub fn new(
        trust: watch::Receiver<Arc<TrustBundle>>,
        policy: PeerPolicy,
        mandatory: bool,
    ) -> Self {
        MeshClientVerifier {
            core: Core::new(trust, policy),
            mandatory,
        }
    }
}

impl ClientCertVerifier for MeshClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        self.mandatory
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.core
            .verify(end_entity, intermediates, now, Usage::ClientAuth)
            .map(|_| ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.core.tls12(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.core.tls13(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.core.algs.supported_schemes()
    }
}

/// Verifies the control plane's serving certificate (meshd's TLS port, the
/// CA): it must chain to the current bundle of `trust` and carry the name
/// (DNS name or IP address) the client dialed. Workload certificates carry
/// only a SPIFFE URI, so a workload cannot pose as the control plane.
#[derive(Debug, Clone)]
pub struct ControlPlaneVerifier {
    trust: watch::Receiver<Arc<TrustBundle>>,
    algs: WebPkiSupportedAlgorithms,
}

impl ControlPlaneVerifier {
    /// Verifies against the bundle in `trust` (read on every handshake).
    pub fn new(trust: watch::Receiver<Arc<TrustBundle>>) -> Self {
        ControlPlaneVerifier {
            trust,
            algs: crate::crypto::provider().signature_verification_algorithms,
        }
    }
}

impl ServerCertVerifier for ControlPlaneVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let bundle = self.trust.borrow().clone();
        bundle
            .verify(end_entity, intermediates, now, Usage::ServerAuth)
            .map_err(pki_error)?;
        webpki::EndEntityCert::try_from(end_entity)
            .and_then(|cert| cert.verify_is_valid_for_subject_name(server_name))
            .map_err(|e| match e {
                webpki::Error::CertNotValidForName(_) => {
                    rustls::Error::InvalidCertificate(CertificateError::NotValidForName)
                }
                other => pki_error(other),
            })?;
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
