//! `ads-load`: an out-of-process ADS load generator for control planes.
//!
//! It plays a fleet of proxyless gRPC clients (SotW or Delta ADS streams
//! multiplexed over a few HTTP/2 connections, each walking LDS -> RDS ->
//! CDS -> EDS and ACKing everything), against a control plane it starts as
//! a child process (meshd, or istiod's `pilot-discovery` run without
//! Kubernetes), so the server's RSS and CPU are read from its own process
//! in `/proc`. It reports the time until every client is configured, CPU
//! seconds and RSS for the initial push, and the same for one
//! VirtualService edit; `--server both` runs meshd then istiod on the same
//! generated YAML and prints meshd / istiod ratios.
//!
//! Rooms: [`config`] writes the Istio YAML (and the edit), [`kube`] the
//! Kubernetes objects of a scale run (as JSON for the API and as files),
//! [`client`] is
//! one simulated client, [`fleet`] runs N of them and collects when each is
//! configured or has taken the edit, [`server`] starts and samples the
//! control plane process, [`run`] ties one measurement together and
//! [`report`] prints it.
//!
//! Not here: any xDS semantics checks (the clients only follow names), and
//! talking to a Kubernetes API server: the scale bench
//! (`benches/kube_scale/`) does that with the test harness, which this
//! library never depends on.
#![forbid(unsafe_code)]

pub mod client;
pub mod config;
pub mod fleet;
pub mod istiod;
pub mod kube;
pub mod report;
pub mod run;
pub mod server;

/// What went wrong in a load run.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// A file or process operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The control plane did not start or died.
    #[error("{0}")]
    Server(String),
    /// A change to the config (a request to an API server) failed.
    #[error("making the change: {0}")]
    Change(String),
    /// A connection to the control plane failed.
    #[error("connecting to {addr}: {source}")]
    Connect {
        /// The xDS address.
        addr: String,
        /// The cause.
        source: tonic::transport::Error,
    },
}

impl LoadError {
    pub(crate) fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            what: what.into(),
            source,
        }
    }
}
