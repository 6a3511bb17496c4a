//! Istio's Telemetry API as a compiled, per-workload policy.
//!
//! Given every Telemetry resource, the MeshConfig and one workload,
//! [`policy_for`] computes what istiod would configure on that workload's
//! proxy, direction by direction (client = outbound, server = inbound):
//! which standard metrics are on and how their tags change, where spans go
//! and how often, and which access logs are written with which filter. CEL
//! expressions are compiled once here ([`CelExpr`]) and evaluated per request
//! against [`Attributes`].
//!
//! Pure: no I/O, no clock. The serde types and field validation stay in
//! [`crate::config::telemetry`]; emitting metrics, spans and log lines is the
//! SDK's job (mesh-tower's `telemetry/`).

pub mod attributes;
pub mod cel;

pub use attributes::{Attributes, Connection, HeaderLookup, Headers, Peer, Request, Response};
pub use cel::{CelError, CelExpr, UNKNOWN_TAG_VALUE};
