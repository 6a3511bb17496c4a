//! Why meshd could not start or an operation failed, in words that name
//! what failed, where, and what to do about it.

use std::net::SocketAddr;
use std::path::PathBuf;

/// An error starting or running meshd.
#[derive(Debug, thiserror::Error)]
pub enum MeshdError {
    /// A listening socket could not be bound.
    #[error("cannot listen for {what} on {addr}: {source}; pick a free port (0 lets the OS choose) or stop whatever holds it")]
    Bind {
        /// Which server (`xDS/CA gRPC`, `HTTP`).
        what: &'static str,
        /// The address asked for.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The config directory cannot be read at all.
    #[error("cannot read the config directory {path}: {detail}; pass an existing directory with --config")]
    ConfigDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        detail: String,
    },
    /// The CA could not be loaded or created.
    #[error("CA in {dir}: {source}")]
    Ca {
        /// The CA directory.
        dir: PathBuf,
        /// What mesh-ca said.
        #[source]
        source: mesh_ca::Error,
    },
    /// The Kubernetes source cannot start (no config, unreachable API).
    #[error("Kubernetes: {0}")]
    Kubernetes(String),
    /// A settings file or flag is wrong.
    #[error("{0}")]
    Settings(String),
    /// Some other I/O failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// Why it failed.
        #[source]
        source: std::io::Error,
    },
}

/// Result with [`MeshdError`].
pub type Result<T, E = MeshdError> = std::result::Result<T, E>;
