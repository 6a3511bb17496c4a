//! Why a TLS origination failed. Each error names the endpoint (or file),
//! what was expected and what to change; the endpoint stage reports them
//! as connect failures (flag `UF`).

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;

use mesh_ca::tls::PeerIdentityError;

/// A client TLS failure.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// `ISTIO_MUTUAL` was asked for but this workload has no certificate.
    #[error("cluster {cluster} requires ISTIO_MUTUAL to {addr} but this workload has no mesh certificate; give the Mesh an identity (MeshBuilder::identity) or change the DestinationRule's tls.mode")]
    NoIdentity {
        /// The cluster.
        cluster: String,
        /// The endpoint.
        addr: SocketAddr,
    },
    /// A file named by the DestinationRule could not be read or used.
    #[error("DestinationRule tls of cluster {cluster}: {field} {path}: {detail}")]
    File {
        /// The cluster.
        cluster: String,
        /// `caCertificates`, `clientCertificate` or `privateKey`.
        field: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// The DestinationRule asks for something this client cannot do.
    #[error("DestinationRule tls of cluster {cluster}: {detail}")]
    Unsupported {
        /// The cluster.
        cluster: String,
        /// What and how to fix it.
        detail: String,
    },
    /// No CA bundle to verify a `SIMPLE`/`MUTUAL` server with.
    #[error("cluster {cluster}: no caCertificates in the DestinationRule and no system CA bundle found (looked at $SSL_CERT_FILE and {looked}); set tls.caCertificates")]
    NoRoots {
        /// The cluster.
        cluster: String,
        /// The paths tried.
        looked: String,
    },
    /// The server presented an identity other than the expected one.
    #[error("{mode} to upstream {addr} of cluster {cluster}: upstream presented {presented}, expected {}; check the endpoint's serviceAccount or the DestinationRule's subjectAltNames", expected.join(" or "))]
    WrongIdentity {
        /// The Istio TLS mode.
        mode: &'static str,
        /// The endpoint.
        addr: SocketAddr,
        /// The cluster.
        cluster: String,
        /// What it presented.
        presented: String,
        /// What was expected.
        expected: Vec<String>,
    },
    /// The TLS handshake failed for another reason.
    #[error(
        "{mode} handshake with upstream {addr} of cluster {cluster} ({expected}) failed: {source}"
    )]
    Handshake {
        /// The Istio TLS mode.
        mode: &'static str,
        /// The endpoint.
        addr: SocketAddr,
        /// The cluster.
        cluster: String,
        /// The SNI sent and what the server had to present.
        expected: String,
        /// The TLS error.
        source: io::Error,
    },
    /// The rustls configuration could not be built.
    #[error("cluster {cluster}: cannot build the TLS client config: {detail}")]
    Config {
        /// The cluster.
        cluster: String,
        /// The rustls or mesh-ca error.
        detail: String,
    },
}

impl From<TlsError> for io::Error {
    fn from(e: TlsError) -> Self {
        let kind = match &e {
            TlsError::Handshake { source, .. } => source.kind(),
            TlsError::WrongIdentity { .. } => io::ErrorKind::PermissionDenied,
            _ => io::ErrorKind::InvalidInput,
        };
        io::Error::new(kind, e)
    }
}

/// The peer-identity refusal inside a tokio-rustls handshake error, if the
/// handshake failed because of the SPIFFE identity.
pub(crate) fn identity_refusal(e: &io::Error) -> Option<&PeerIdentityError> {
    let rustls_err = e.get_ref()?.downcast_ref::<rustls::Error>()?;
    match rustls_err {
        rustls::Error::InvalidCertificate(rustls::CertificateError::Other(other)) => {
            other.0.downcast_ref::<PeerIdentityError>()
        }
        _ => None,
    }
}
