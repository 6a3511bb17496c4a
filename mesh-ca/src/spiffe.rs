//! SPIFFE workload identities of the form
//! `spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>`, the only
//! identity shape the mesh issues and accepts (the one Istio uses).
//!
//! The implementation is `mesh_core::spiffe`, re-exported here so the CA,
//! the TLS verifiers, authorization and the SDK share one type: parsing and
//! formatting, SPIFFE character rules, and comparison across trust-domain
//! aliases. What an identity may do is decided elsewhere (authorization).

pub use mesh_core::spiffe::{validate_trust_domain, SpiffeError, SpiffeId, SCHEME};

/// Why a string is not an acceptable SPIFFE identity (mesh-core's
/// [`SpiffeError`], under the name this crate used before).
pub type SpiffeIdError = SpiffeError;
