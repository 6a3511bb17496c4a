//! Builders for the rustls `ServerConfig` and `ClientConfig` of mesh mTLS.
//!
//! Session resumption is disabled on both sides: a resumed session skips
//! certificate exchange, so a rotated certificate or trust bundle would not
//! apply to the new connection, and the peer identity would be the one from
//! the original handshake.

use std::sync::Arc;

use rustls::client::Resumption;
use rustls::server::NoServerSessionStorage;
use rustls::{ClientConfig, ServerConfig};
use tokio::sync::watch;

use crate::bundle::TrustBundle;
use crate::error::Result;
use crate::tls::policy::PeerPolicy;
use crate::tls::resolver::CertResolver;
use crate::tls::verifier::{ControlPlaneVerifier, MeshClientVerifier, MeshServerVerifier};
use crate::workload::WorkloadCertificate;

/// ALPN id of HTTP/2.
pub const ALPN_H2: &[u8] = b"h2";
/// ALPN id of HTTP/1.1.
pub const ALPN_HTTP11: &[u8] = b"http/1.1";

/// Whether a server requires client certificates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// Mutual TLS: a client without a valid mesh certificate is refused.
    Required,
    /// Clients may omit the certificate; one that is presented must verify.
    Optional,
}

fn alpn() -> Vec<Vec<u8>> {
    vec![ALPN_H2.to_vec(), ALPN_HTTP11.to_vec()]
}

/// A TLS 1.3 server config that presents the current certificate of
/// `certs` and verifies clients against `trust` and `policy`.
pub fn server_config(
    certs: watch::Receiver<Arc<WorkloadCertificate>>,
    trust: watch::Receiver<Arc<TrustBundle>>,
    policy: PeerPolicy,
    client_auth: ClientAuth,
) -> Result<ServerConfig> {
    let verifier = MeshClientVerifier::new(trust, policy, client_auth == ClientAuth::Required);
    let mut config = ServerConfig::builder_with_provider(crate::crypto::provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(Arc::new(verifier))
        .with_cert_resolver(Arc::new(CertResolver::new(certs)));
    config.alpn_protocols = alpn();
    config.session_storage = Arc::new(NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
    Ok(config)
}

/// A TLS 1.3 client config that verifies servers against `trust` and
/// `policy` (pin server identities with
/// [`PeerPolicy::expect_identities`]) and presents the current certificate
/// of `certs`, if given.
pub fn client_config(
    certs: Option<watch::Receiver<Arc<WorkloadCertificate>>>,
    trust: watch::Receiver<Arc<TrustBundle>>,
    policy: PeerPolicy,
) -> Result<ClientConfig> {
    let builder = ClientConfig::builder_with_provider(crate::crypto::provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(MeshServerVerifier::new(trust, policy)));
    let mut config = match certs {
        Some(certs) => builder.with_client_cert_resolver(Arc::new(CertResolver::new(certs))),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = alpn();
    config.resumption = Resumption::disabled();
    Ok(config)
}

/// A TLS 1.3 client config for the control plane (meshd's TLS port: xDS and
/// the CA): verifies the server by chain to `trust` and by the name it is
/// dialed with ([`ControlPlaneVerifier`]), presents the current certificate
/// of `certs` if given, and offers only `h2` (gRPC).
pub fn control_plane_client_config(
    certs: Option<watch::Receiver<Arc<WorkloadCertificate>>>,
    trust: watch::Receiver<Arc<TrustBundle>>,
) -> Result<ClientConfig> {
    let builder = ClientConfig::builder_with_provider(crate::crypto::provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(ControlPlaneVerifier::new(trust)));
    let mut config = match certs {
        Some(certs) => builder.with_client_cert_resolver(Arc::new(CertResolver::new(certs))),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    config.resumption = Resumption::disabled();
    Ok(config)
}
