//! Why the shim could not start: each error names the flag or file and
//! the fix.

use std::net::SocketAddr;

/// A start-up failure.
#[derive(Debug, thiserror::Error)]
pub enum ShimError {
    /// A listener could not bind.
    #[error("cannot listen on {addr} for the {role} port: {source}; free the port or pass --{role}-port with another (0 picks one)")]
    Bind {
        /// Which listener.
        role: &'static str,
        /// Where.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The mesh (config, certificate) could not be built.
    #[error(transparent)]
    Mesh(#[from] mesh_tower::source::SourceError),
    /// The flags do not describe a runnable shim.
    #[error("{0}")]
    Usage(String),
    /// The file-mounted certificates could not be read.
    #[error("--cert-dir {dir}: {source}; it must hold cert-chain.pem, key.pem and root-cert.pem")]
    CertDir {
        /// The directory.
        dir: String,
        /// Why.
        source: mesh_ca::Error,
    },
}
