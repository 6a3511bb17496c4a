//! Harness of the interop tests: stock proxyless gRPC clients and servers
//! (Python `grpcio`, Node `@grpc/grpc-js-xds`) run against our real ADS
//! server, fed by Istio YAML, with bootstraps from `meshctl bootstrap grpc`.
//!
//! - [`control`]: the control plane the clients talk to (one function to
//!   swap for `meshd` once it exists).
//! - [`backend`]: real gRPC backends on loopback (tonic, byte handlers, no
//!   codegen) whose replies name the backend.
//! - [`clients`]: finding Python/Node, writing bootstraps, running the
//!   client scripts under `tests/interop/` with a timeout and reading their
//!   JSON report.
//!
//! Not here: any gRPC client logic of ours. The clients are plain stock
//! libraries configured only by `GRPC_XDS_BOOTSTRAP`.

#![forbid(unsafe_code)]

pub mod authz_corpus;
pub mod backend;
pub mod checks;
pub mod clients;
pub mod control;
pub mod istiod;
pub mod mtls;
pub mod scenario;
pub mod server_side;

pub use backend::{Backend, Behavior};
pub use clients::{Lang, Report, Tool};
pub use control::ControlPlane;

/// What went wrong setting up or running an interop scenario.
#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    /// The YAML directory did not load or validate.
    #[error("config {dir}: {message}; fix the YAML the test wrote")]
    Config {
        /// The directory.
        dir: String,
        /// The loader's errors.
        message: String,
    },
    /// A socket or process operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// `meshctl bootstrap grpc` refused the flags.
    #[error("meshctl bootstrap grpc: {0}")]
    Bootstrap(String),
    /// A client or server script misbehaved (exit status, timeout, output).
    #[error("{script}: {message}")]
    Script {
        /// Which script.
        script: String,
        /// What it did, with its stderr tail.
        message: String,
    },
}

impl HarnessError {
    pub(crate) fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            what: what.into(),
            source,
        }
    }
}
