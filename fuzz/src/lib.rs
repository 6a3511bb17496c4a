//! The fuzz targets, as plain functions over bytes.
//!
//! Each target feeds untrusted input to one parser the mesh exposes to
//! the outside, as the real code path does, and checks what must hold
//! whatever the input (a panic is the finding):
//!
//! - [`yaml`]: Istio YAML through the loader, the analyzer, the compiler
//!   and our own xDS encoding, which our own decoder must accept.
//! - [`xds`]: control-plane responses (SotW, Delta) and cache files through
//!   the xDS client's state machine and model building.
//! - [`jwt`]: bearer tokens through decoding, claim checks and signature
//!   verification; a token that verifies stops verifying when any byte of
//!   its signature changes.
//! - [`path`]: request paths through every normalization mode; the result
//!   is normalized (no dot segments, no backslashes, merged slashes where
//!   asked) and normalizing it again changes nothing, since a backend that
//!   normalizes again must see the path the policy saw.
//! - [`inbound`]: a request's method, URI and headers through path
//!   normalization, attribute extraction, token lookup and authorization,
//!   where the engine and the RBAC filters stock servers get must agree.
//!
//! `fuzz/harness` wraps each in a libFuzzer target; `tests/regressions.rs`
//! runs each over its seeds and over every input that once crashed it
//! (`fuzz/regressions/<target>/`).

mod inbound;
pub mod jwt;
mod path;
pub mod seeds;
mod xds;
mod yaml;

pub use inbound::inbound;
pub use jwt::jwt;
pub use path::path;
pub use xds::xds;
pub use yaml::yaml;

/// A fuzz target: takes any bytes, panics on a finding.
pub type Target = fn(&[u8]);

/// Every target by name (the harness's binary names).
pub const TARGETS: &[(&str, Target)] = &[
    ("yaml", yaml),
    ("xds", xds),
    ("jwt", jwt),
    ("path", path),
    ("inbound", inbound),
];
