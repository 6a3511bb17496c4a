//! rustls configuration for mesh mTLS.
//!
//! TLS 1.3 only, ALPN `h2` and `http/1.1`, the `ring` provider. Both sides
//! verify the peer's chain against the trust bundle *and* its SPIFFE URI SAN
//! (trust domain, optionally the exact identity) instead of DNS names.
//! Certificates and roots come from `tokio::sync::watch` channels, read on
//! every handshake: a rotation affects new handshakes only, so established
//! connections keep running.
//!
//! Not here: deciding *which* peers may call what (authorization) or
//! whether a port requires mTLS (PeerAuthentication); those live in
//! `mesh-tower` and use [`peer::peer_identity`] as input.

pub mod config;
pub mod peer;
pub mod policy;
pub mod resolver;
pub mod verifier;

pub use config::{
    client_config, control_plane_client_config, server_config, ClientAuth, ALPN_H2, ALPN_HTTP11,
};
pub use peer::{client_peer_identity, peer_identity, server_peer_identity};
pub use policy::{PeerIdentityError, PeerPolicy};
pub use resolver::CertResolver;
pub use verifier::{ControlPlaneVerifier, MeshClientVerifier, MeshServerVerifier};
