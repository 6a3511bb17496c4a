//! Envoy v3 xDS for the mesh.
//!
//! - [`encode`](mod@encode): the compiled [`mesh_core::model::Model`] of one client as the
//!   Envoy v3 resources istiod's proxyless-gRPC generator sends (client-side
//!   `api_listener` listeners named `host:port`, RouteConfigurations, EDS
//!   clusters, ClusterLoadAssignments, and server-side inbound listeners with
//!   RBAC filters for stock gRPC servers and the compiled inbound policy in
//!   their metadata for our SDK).
//! - [`decode`]: the reverse, for the resources we encode.
//! - [`server`]: an ADS server (State of the World and Delta, with
//!   make-before-break ordering per client ACK) and a CSDS server over a
//!   snapshot cache keyed by node id, with server events for the control
//!   plane; and [`node`] for reading Istio node metadata.
//! - [`telemetry_policy`]: a workload's compiled Telemetry API policy as a
//!   reserved listener meshd sends only to SDK nodes.
//! - [`bootstrap`]: the gRPC xDS bootstrap JSON a stock proxyless gRPC
//!   client reads (`meshctl bootstrap grpc`, `mesh-shim agent`).
//! - [`client`]: the ADS client the SDK uses (SotW, reconnect and fallback,
//!   last-known-good, does-not-exist timer, on-disk cache) publishing a
//!   model on a `watch` channel.
//!
//! Not here: compiling models (that is `mesh-core`'s job; the control plane
//! calls it per node).

#![forbid(unsafe_code)]

pub mod bootstrap;
pub mod client;
pub mod decode;
pub mod encode;
mod inbound_policy;
pub mod matcher;
pub mod node;
pub mod server;
pub mod telemetry_policy;
pub mod types;

pub use encode::{encode, EncodeOptions, Resources};
pub use envoy_types::pb;
