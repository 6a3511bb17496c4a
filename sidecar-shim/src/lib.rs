//! `mesh-shim`: the mesh for workloads not written in Rust. It runs beside
//! the app as Istio's sidecar would, and is only a composition of
//! `mesh-tower`'s rooms: the SDK's client stack for what the app sends, its
//! inbound stack for what the app receives, its telemetry for both. It has
//! no routing, authorization, retry or TLS logic of its own; a behaviour it
//! lacks is added to mesh-tower first, so SDK and shim users get the same.
//!
//! - [`config`]: flags and `MESH_SHIM_*` variables;
//! - [`app`]: builds the mesh and the listeners, runs until drained;
//! - [`inbound`]: mesh traffic (mTLS, JWT, authorization, rate limits,
//!   telemetry) to the app on 127.0.0.1, HTTP and opaque TCP;
//! - [`outbound`] and [`capture`]: the app's own requests, by explicit
//!   proxy or per-upstream port, into the SDK's client stack;
//! - [`admin`]: admin, merged metrics and readiness ports;
//! - [`gateway`]: `mesh-shim gateway`, the ingress/egress gateway;
//! - [`wait`]: `mesh-shim wait`, for `mesh-shim wait && exec app`;
//! - [`iptables`]: `mesh-shim iptables`, the transparent capture rules;
//! - [`agent`]: `mesh-shim agent`, the proxyless gRPC agent (bootstrap
//!   and certificate files for stock gRPC);
//! - [`launch`]: starting the binary and reading back its ports.
#![forbid(unsafe_code)]

pub mod admin;
pub mod agent;
pub mod app;
pub mod capture;
pub mod config;
pub mod error;
pub mod gateway;
pub mod inbound;
pub mod iptables;
pub mod launch;
pub mod logging;
pub mod outbound;
pub mod wait;

pub use error::ShimError;
