//! What the inbound side knows about a connection: addresses, whether it is
//! mTLS, and the verified SPIFFE identity of the peer.
//!
//! Both types travel as request extensions: [`ConnectionInfo`] on every
//! request accepted by [`crate::server::Server`], [`PeerIdentity`] only on
//! requests that arrived over mTLS (absent for plaintext), so an
//! application reads the caller's identity with
//! `req.extensions().get::<PeerIdentity>()`.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

use mesh_ca::SpiffeId;

/// The verified SPIFFE identity of an mTLS peer.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PeerIdentity {
    id: SpiffeId,
    uri: Arc<str>,
}

impl PeerIdentity {
    /// Wraps a verified identity.
    pub fn new(id: SpiffeId) -> Self {
        let uri = Arc::from(id.to_string());
        PeerIdentity { id, uri }
    }

    /// The SPIFFE id.
    pub fn id(&self) -> &SpiffeId {
        &self.id
    }

    /// The id as a `spiffe://...` URI (what authorization matches
    /// `principals` against).
    pub fn uri(&self) -> &str {
        &self.uri
    }

    /// The URI, shared (telemetry keys its series by it).
    pub fn uri_arc(&self) -> Arc<str> {
        self.uri.clone()
    }
}

impl fmt::Display for PeerIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.uri)
    }
}

/// One accepted connection as the inbound layers see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionInfo {
    /// The direct peer (`source.ip`).
    pub peer_addr: SocketAddr,
    /// The local address the connection was made to (`destination.ip`).
    pub local_addr: SocketAddr,
    /// The workload port policies are looked up with (the listener's port
    /// unless configured otherwise).
    pub port: u16,
    /// The verified peer identity; `None` for plaintext.
    pub identity: Option<PeerIdentity>,
    /// The SNI the client sent, for TLS connections.
    pub sni: Option<String>,
}

impl ConnectionInfo {
    /// True when the connection is mTLS.
    pub fn is_mtls(&self) -> bool {
        self.identity.is_some()
    }
}
