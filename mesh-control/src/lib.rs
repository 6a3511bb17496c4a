//! `meshd`, the bundled control plane (istiod's counterpart): watches a
//! directory of Istio YAML and/or a Kubernetes API server, validates and analyzes every change, compiles
//! it per connected client and serves it over Envoy v3 ADS (with CSDS for
//! `meshctl proxy-config`), hosts the CA (Istio's
//! `IstioCertificateService`) on the same gRPC port, serves both again over
//! TLS on a second port (istiod's 15012) to authenticated callers, and serves
//! health, Prometheus metrics and debug views over HTTP.
//!
//! ```no_run
//! # async fn run() -> Result<(), mesh_control::MeshdError> {
//! use mesh_control::{Meshd, MeshdConfig};
//! // Loopback, ports chosen by the OS, CA in a temporary directory.
//! let meshd = Meshd::start(MeshdConfig::new("config/")).await?;
//! println!("xDS at {}, HTTP at {}", meshd.xds_addr(), meshd.http_addr());
//! meshd.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! Modules: [`settings`] (flags, env, settings file), [`kube`] (the
//! Kubernetes source), [`load`] (a config generation or a rejection), [`watch`] (polling and debouncing),
//! [`controller`] (per-node compilation and pushes), [`compile`] (one
//! client identity's snapshot), [`autoreg`] (workload auto-registration),
//! [`converge`] (convergence time), [`metrics`], [`http`] and [`debug`]
//! (the HTTP port), [`tap`] and [`events`] (what the ADS server reports),
//! [`secure`] (the TLS port's authentication and node admission).
//!
//! Not here: the xDS protocol itself (`mesh_xds::server`), compilation
//! rules (`mesh_core::compile`), the CA's signing (`mesh_ca`).
#![forbid(unsafe_code)]

pub mod autoreg;
pub mod compile;
pub mod controller;
pub mod converge;
pub mod debug;
pub mod error;
pub mod events;
pub mod http;
pub mod kube;
pub mod load;
mod meshd;
pub mod metrics;
pub mod secure;
pub mod settings;
pub mod tap;
pub mod watch;

pub use controller::Controller;
pub use error::{MeshdError, Result};
pub use load::{Generation, Rejection};
pub use meshd::{Meshd, MeshdHandle};
pub use settings::{MeshdConfig, SettingsFile};
