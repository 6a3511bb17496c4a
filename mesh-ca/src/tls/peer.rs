//! The verified SPIFFE identity of the other side of a finished handshake.
//!
//! Only meaningful on connections built with this crate's configs, whose
//! verifiers already checked the chain and the identity; these helpers just
//! read the leaf's SPIFFE URI SAN back.

use rustls::CommonState;
use rustls_pki_types::CertificateDer;

use crate::spiffe::SpiffeId;
use crate::tls::policy::PeerIdentityError;
use crate::x509;

/// The SPIFFE id of a peer certificate chain's leaf.
pub fn identity_from_chain(certs: &[CertificateDer<'_>]) -> Result<SpiffeId, PeerIdentityError> {
    let leaf = certs.first().ok_or(PeerIdentityError::NoCertificate)?;
    x509::spiffe_id(leaf).map_err(|e| PeerIdentityError::NoIdentity(e.to_string()))
}

/// The peer identity of a rustls connection (client or server side).
pub fn peer_identity(conn: &CommonState) -> Result<SpiffeId, PeerIdentityError> {
    identity_from_chain(
        conn.peer_certificates()
            .ok_or(PeerIdentityError::NoCertificate)?,
    )
}

/// The client's identity on an accepted tokio-rustls connection.
pub fn server_peer_identity<IO>(
    stream: &tokio_rustls::server::TlsStream<IO>,
) -> Result<SpiffeId, PeerIdentityError> {
    peer_identity(stream.get_ref().1)
}

/// The server's identity on a connected tokio-rustls connection.
pub fn client_peer_identity<IO>(
    stream: &tokio_rustls::client::TlsStream<IO>,
) -> Result<SpiffeId, PeerIdentityError> {
    peer_identity(stream.get_ref().1)
}
