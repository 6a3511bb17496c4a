//! The authorization engine: Istio AuthorizationPolicy semantics as a pure
//! function from (policies, request) to an explained decision.
//!
//! - [`select`](mod@select): which policies apply to a workload (root namespace,
//!   namespace, selector, targetRef).
//! - [`PolicySet`]: those policies compiled once (matchers prebuilt), cheap to
//!   clone and share across threads; [`PolicySet::evaluate`] gives a
//!   [`Decision`].
//! - [`path`]: path normalization per MeshConfig mode, applied before paths
//!   are matched.
//! - [`Request`]: the attributes a decision reads.
//! - [`lower`]: the compiled policies as Envoy RBAC filters with the same
//!   meaning, for stock gRPC servers (what they cannot evaluate fails
//!   closed, with a [`Note`] per rule); a property test holds the two equal.
//! - [`decoded`]: RBAC filters an xDS server sent, enforced per port with
//!   Envoy's semantics ([`PolicySet::from_rbac`]) when no compiled policy
//!   came with them.
//!
//! What this module is not: it does not authenticate (mTLS and JWT happen
//! before; their results arrive in the [`Request`]), it does not call CUSTOM
//! providers (it says which one to call), and it does not parse YAML (see
//! [`crate::config::security::authorization_policy`]).
//!
//! Semantics worth knowing, all Istio's:
//! - HTTP-only fields (`hosts`, `methods`, `paths`, `requestPrincipals`,
//!   `request.*` conditions and their `notX` forms) on a TCP port: an ALLOW
//!   rule using any of them never matches; a DENY/AUDIT/CUSTOM rule drops
//!   them and keeps the rest (so it matches more).
//! - A `notX` field on an absent attribute matches (no principal on a
//!   plaintext connection is "not in" any list).
//! - Paths are case-sensitive and matched without query or fragment, after
//!   normalization; hosts are case-insensitive and compared with the port if
//!   the client sent one (write `example.com:*` too, as Istio advises).
//! - JWT claims match when the claim is a string or a list containing a
//!   matching string; numbers, booleans and objects never match.

mod compile;
pub mod decoded;
pub mod engine;
pub mod key;
pub mod lower;
pub mod matcher;
pub mod path;
pub mod policy;
pub mod request;
pub mod select;

#[cfg(test)]
mod lower_tests;
#[cfg(test)]
mod tests;

pub use decoded::{PortRbac, RbacPorts};
pub use engine::{Check, Decision, DryRun, PolicySet, RuleRef, Verdict};
pub use lower::{Effect, Lowered, Note, StockServer, HTTP_ALLOW_FILTER, HTTP_DENY_FILTER};
pub use path::{normalize, Normalization, PathError};
pub use policy::{is_dry_run, CompiledPolicy};
pub use request::{Protocol, Request};
pub use select::{applies_to, select, Target, Workload};
