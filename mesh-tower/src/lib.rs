//! `mesh-tower`: the SDK a Rust service adds to be part of the mesh with no
//! sidecar. Tower layers execute the compiled [`mesh_core::model::Model`]:
//!
//! - [`client`]: outbound routing, traffic splitting, header operations,
//!   rewrites and redirects, mirroring, fault injection, timeouts and retries;
//! - [`balance`]: picking an endpoint of a cluster (load balancing, outlier
//!   detection, connection-pool limits) and sending the request to it;
//! - [`server`]: the inbound stack (mTLS and peer identity, JWT, authorization,
//!   local rate limits);
//! - [`telemetry`]: Istio's standard metrics and access logs, from both
//!   sides;
//! - [`tls`]: client-side TLS origination (auto-mTLS, DestinationRule
//!   `SIMPLE`/`MUTUAL`/`ISTIO_MUTUAL`);
//! - [`gateway`]: Istio Gateway serving (ingress/egress), listeners per
//!   Gateway port in front of the client stack.
//!
//! Every layer reads the model from a [`ModelRx`] watch channel, so a new
//! config applies to the next request while in-flight requests finish on the
//! one they started with. Every locally generated failure is a typed
//! [`MeshError`] carrying an Envoy-style [`ResponseFlag`].
//!
//! # Cargo features
//!
//! - `xds` (default): mesh mode, the model from a control plane
//!   (`Mesh::xds`), with the `mesh-xds` client.
//! - `ca` (default): workload certificates from the mesh CA
//!   (`MeshBuilder::ca`), over Istio's gRPC certificate service.
//!
//! With `default-features = false` the SDK runs local mode (YAML compiled
//! in the process) with certificates from files or any
//! `mesh_ca::CertificateProvider`, and builds without either.
#![forbid(unsafe_code)]

pub mod balance;
pub mod body;
pub mod client;
pub mod error;
pub mod gateway;
pub mod grpc;
mod handle;
pub mod mesh;
pub mod server;
pub mod source;
pub mod telemetry;
mod thread_cache;
pub mod tls;
pub mod upstream;

use std::sync::Arc;

pub use balance::{Answer, Resolve, ResolveFuture, SystemResolver};
pub use body::{BoxError, MeshBody};
pub use error::{MeshError, ResponseFlag, RESPONSE_FLAGS_HEADER};
#[cfg(feature = "xds")]
pub use mesh::Xds;
pub use mesh::{Local, Mesh, MeshBuilder, MeshClient, MeshGuard, ResponseFuture};
#[cfg(feature = "ca")]
pub use source::ca::CaOptions;
pub use upstream::{ServedBy, Upstream};

/// The compiled model as layers receive it: a watch channel whose value is
/// swapped whole on every config change.
pub type ModelRx = tokio::sync::watch::Receiver<Arc<mesh_core::model::Model>>;
