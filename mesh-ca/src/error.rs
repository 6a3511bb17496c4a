//! The crate's error type. Every variant says what failed and, where it
//! helps, which file or peer was involved and what to do about it.

use std::path::PathBuf;

use crate::spiffe::SpiffeIdError;

/// Errors from the CA, the workload-certificate client and the TLS builders.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file or directory could not be read or written.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done ("reading", "writing", "creating directory").
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// PEM text or a certificate in it could not be used.
    #[error("invalid certificate material in {what}: {detail}")]
    Certificate {
        /// Where the material came from (a file path or "CA response").
        what: String,
        /// What is wrong with it.
        detail: String,
    },
    /// A private key could not be parsed or does not match its certificate.
    #[error("invalid private key in {what}: {detail}")]
    Key {
        /// Where the key came from.
        what: String,
        /// What is wrong with it.
        detail: String,
    },
    /// A certificate signing request is malformed or its signature is bad.
    #[error("invalid certificate signing request: {0}")]
    Csr(String),
    /// A SPIFFE identity is malformed.
    #[error(transparent)]
    Identity(#[from] SpiffeIdError),
    /// The CA was asked for something its configuration forbids.
    #[error("CA policy: {0}")]
    Policy(String),
    /// Configuration values are inconsistent or out of range.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// Certificate or CSR generation failed inside rcgen.
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
    /// rustls refused a configuration or key.
    #[error("TLS setup failed: {0}")]
    Tls(#[from] rustls::Error),
    /// The CA could not be reached or the connection broke.
    #[error("cannot reach the CA at {address}: {detail}")]
    Connect {
        /// The CA address.
        address: String,
        /// What went wrong.
        detail: String,
    },
    /// The CA answered with a gRPC error.
    #[cfg(feature = "grpc")]
    #[error("the CA refused the request: {0}")]
    Rpc(#[from] tonic::Status),
}

impl Error {
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
        source: std::io::Error,
    ) -> Self {
        Error::Io {
            action,
            path: path.into(),
            source,
        }
    }

    pub(crate) fn cert(what: impl Into<String>, detail: impl Into<String>) -> Self {
        Error::Certificate {
            what: what.into(),
            detail: detail.into(),
        }
    }

    pub(crate) fn key(what: impl Into<String>, detail: impl Into<String>) -> Self {
        Error::Key {
            what: what.into(),
            detail: detail.into(),
        }
    }
}

/// Shorthand for results in this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
