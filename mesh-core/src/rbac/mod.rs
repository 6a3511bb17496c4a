//! Envoy's RBAC (`envoy.config.rbac.v3`) as plain data, and its evaluation
//! with Envoy's semantics, as a stock gRPC server (gRFC A41) applies it.
//!
//! Two users: the authorization engine lowers its compiled policies to
//! these filters ([`crate::authz::lower`]), which the control plane
//! encodes for stock gRPC servers; and an SDK fed by an xDS server that
//! does not send our own policy metadata decodes the RBAC filters of its
//! inbound listeners into these types and enforces them
//! ([`crate::authz::PolicySet::from_rbac`]). A property test holds the two
//! meanings equal: for every policy and request, the engine's decision is
//! the decision of its lowered filters evaluated here.
//!
//! Semantics (Envoy's and A41's):
//! - A policy matches when any permission and any principal match; an
//!   empty list matches nothing.
//! - A filter with ALLOW rules denies a request no policy matches; one with
//!   DENY rules denies a request some policy matches; a filter without
//!   enforced rules decides nothing. `shadow_rules` are evaluated for
//!   reports only, never enforced. Every filter must let a request through.
//! - `not` is plain negation: `not(authenticated)` matches plaintext.
//! - `authenticated` never matches plaintext; with a `principal_name` it
//!   matches the peer's URI SAN (SPIFFE id); without, any mTLS peer.
//! - A header match reads the joined value of a repeated header, with the
//!   pseudo-headers `:method`, `:authority` (alias `host`) and `:path`.
//! - `url_path` matches the path without query, after normalization.
//!
//! What this module is not: it does not know Istio's policy syntax (see
//! [`crate::authz`]), and it does not read protobuf (mesh-xds does).

mod eval;
#[cfg(test)]
mod tests;

use ipnet::IpNet;
use serde::Serialize;

use crate::matcher::{HeaderMatcher, StringMatcher};

pub use eval::{evaluate, Attributes, Outcome, Shadow};

/// A filter's action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Action {
    /// Requests no policy matches are denied.
    Allow,
    /// Requests a policy matches are denied.
    Deny,
    /// Matches are reported, nothing is denied (Envoy's LOG).
    Log,
}

/// One `RBAC` message: an action and named policies.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Rbac {
    /// What a match means.
    pub action: Action,
    /// The policies by name, in name order (Envoy's map, made stable).
    pub policies: Vec<(String, Policy)>,
}

/// One policy: any permission AND any principal.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct Policy {
    /// ORed; empty matches nothing.
    pub permissions: Vec<Permission>,
    /// ORed; empty matches nothing.
    pub principals: Vec<Principal>,
}

/// What the request does (Envoy's `Permission`).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Permission {
    /// Always.
    Any,
    /// All of them.
    And(Vec<Permission>),
    /// One of them.
    Or(Vec<Permission>),
    /// The negation.
    Not(Box<Permission>),
    /// A request header (pseudo-headers included).
    Header(HeaderMatcher),
    /// The path without query.
    UrlPath(StringMatcher),
    /// The address the connection was made to.
    DestinationIp(IpNet),
    /// The port the connection was made to.
    DestinationPort(u16),
    /// A port in `[start, end)`.
    DestinationPortRange(u16, u16),
    /// The TLS server name of the connection.
    RequestedServerName(StringMatcher),
}

/// Who sends it (Envoy's `Principal`).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Principal {
    /// Always.
    Any,
    /// All of them.
    And(Vec<Principal>),
    /// One of them.
    Or(Vec<Principal>),
    /// The negation.
    Not(Box<Principal>),
    /// An mTLS peer, optionally with a matching URI SAN.
    Authenticated(Option<StringMatcher>),
    /// The address of the direct peer.
    DirectRemoteIp(IpNet),
    /// The original client address (XFF/PROXY protocol; else the peer).
    RemoteIp(IpNet),
    /// A request header.
    Header(HeaderMatcher),
    /// The path without query.
    UrlPath(StringMatcher),
}

impl Permission {
    /// A permission that never matches (`not any`), which every RBAC
    /// implementation evaluates.
    pub fn never() -> Self {
        Permission::Not(Box::new(Permission::Any))
    }
}

impl Principal {
    /// A principal that never matches (`not any`).
    pub fn never() -> Self {
        Principal::Not(Box::new(Principal::Any))
    }
}

/// One RBAC HTTP (or network) filter instance.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Filter {
    /// The filter's name in the chain (`envoy.filters.http.rbac`, ...).
    pub name: String,
    /// Enforced rules; `None` enforces nothing.
    pub rules: Option<Rbac>,
    /// Rules evaluated and reported only (dry-run).
    pub shadow: Option<Rbac>,
}
