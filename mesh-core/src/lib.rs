//! `mesh-core`: the sans-IO brain of the mesh.
//!
//! It owns everything that decides and nothing that does I/O on the network:
//! the Istio configuration model ([`config`]) with loading and validation that
//! point at file, line and field; the service [`registry`]; the per-client
//! compiled data-plane [`model`] built by [`compile`]; the pure engines that
//! the SDK, the shim, the control plane and the CLI all share ([`route`],
//! [`authz`], [`retry`], [`trace`], the Telemetry policy and its CEL in
//! [`telemetry`]); and the [`analyze`]r that flags the configurations behind
//! most Istio outages. No tokio, no sockets: every decision here is a
//! function or a state machine that tests can drive directly.
#![forbid(unsafe_code)]

pub mod analyze;
pub mod authz;
pub mod compile;
pub mod config;
#[cfg(feature = "schema")]
pub mod crd;
pub mod exposition;
pub mod fault;
pub mod host;
pub mod lb;
pub mod matcher;
pub mod model;
pub mod outlier;
pub mod rbac;
pub mod registry;
pub mod retry;
pub mod route;
pub mod spiffe;
pub mod sync;
pub mod telemetry;
pub mod trace;
