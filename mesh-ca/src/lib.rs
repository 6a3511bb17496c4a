//! Certificate authority and SPIFFE workload identity for the mesh.
//!
//! * [`ca`] / [`ca_store`]: a CA that creates or loads its root (or a
//!   plugged-in intermediate) and signs workload CSRs with the SPIFFE URI SAN
//!   `spiffe://<trust-domain>/ns/<ns>/sa/<sa>`.
//! * [`server`]: Istio's `istio.v1.auth.IstioCertificateService` gRPC API,
//!   authenticating callers by bootstrap token or by their current mesh
//!   certificate.
//! * [`client`], [`csr`], [`rotation`], [`files`]: the workload side: key and
//!   CSR generation, fetching from the CA, rotation before expiry and the
//!   `cert-chain.pem` / `key.pem` / `root-cert.pem` directory layout.
//! * [`local`]: the serving certificate of a server the CA's own process
//!   runs (meshd's TLS port), issued in process and rotated.
//! * [`tls`]: rustls client and server configs for mesh mTLS that verify the
//!   peer's SPIFFE identity and reload certificates and roots without
//!   dropping live connections.
//!
//! Not here: PeerAuthentication, JWT and authorization enforcement (the
//! inbound layers of `mesh-tower`).
#![forbid(unsafe_code)]

pub mod bundle;
pub mod ca;
pub mod ca_store;
#[cfg(feature = "grpc")]
pub mod client;
pub mod crypto;
pub mod csr;
pub mod error;
pub mod files;
mod fsutil;
pub mod local;
#[cfg(feature = "grpc")]
pub mod proto;
pub mod rotation;
#[cfg(feature = "grpc")]
pub mod server;
pub mod spiffe;
pub mod tls;
pub mod tokens;
pub mod workload;
pub mod x509;

pub use bundle::TrustBundle;
pub use ca::{CaConfig, CertificateAuthority, IssuedCertificate};
#[cfg(feature = "grpc")]
pub use client::{CaClient, CaClientConfig};
pub use error::{Error, Result};
pub use local::LocalIssuer;
pub use rotation::{CertificateFetcher, CertificateProvider, RotationConfig};
#[cfg(feature = "grpc")]
pub use server::CaService;
pub use spiffe::SpiffeId;
pub use tokens::{TokenStore, TokenVerifier};
pub use workload::WorkloadCertificate;
