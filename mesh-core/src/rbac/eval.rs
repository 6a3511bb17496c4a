//! Evaluating RBAC filters against one request's attributes.

use std::net::IpAddr;

use serde::Serialize;

use super::{Action, Filter, Permission, Policy, Principal, Rbac};
use crate::matcher::HeaderSource;

/// What an RBAC filter can read of a request or connection.
#[derive(Clone, Copy)]
pub struct Attributes<'a> {
    /// Request headers, answering the pseudo-headers `:method`,
    /// `:authority` and `:path` too; an empty set for a TCP connection.
    pub headers: &'a dyn HeaderSource,
    /// The path without query, normalized; `None` for a TCP connection.
    pub url_path: Option<&'a str>,
    /// The mTLS peer's URI SAN (its SPIFFE id); `None` for plaintext.
    pub peer: Option<&'a str>,
    /// The direct peer address.
    pub direct_remote_ip: Option<IpAddr>,
    /// The original client address (the peer's when nothing says else).
    pub remote_ip: Option<IpAddr>,
    /// The address the connection was made to.
    pub destination_ip: Option<IpAddr>,
    /// The port the connection was made to.
    pub destination_port: u16,
    /// The TLS server name; `None` without one.
    pub sni: Option<&'a str>,
}

impl std::fmt::Debug for Attributes<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Attributes")
            .field("url_path", &self.url_path)
            .field("peer", &self.peer)
            .field("direct_remote_ip", &self.direct_remote_ip)
            .field("destination_port", &self.destination_port)
            .finish_non_exhaustive()
    }
}

fn ip_in(net: &ipnet::IpNet, ip: Option<IpAddr>) -> bool {
    ip.is_some_and(|ip| net.contains(&ip))
}

impl Permission {
    /// True when the permission holds for the request.
    pub fn matches(&self, a: &Attributes<'_>) -> bool {
        match self {
            Permission::Any => true,
            Permission::And(list) => list.iter().all(|p| p.matches(a)),
            Permission::Or(list) => list.iter().any(|p| p.matches(a)),
            Permission::Not(p) => !p.matches(a),
            Permission::Header(h) => h.matches(a.headers),
            Permission::UrlPath(m) => a.url_path.is_some_and(|p| m.matches(p)),
            Permission::DestinationIp(n) => ip_in(n, a.destination_ip),
            Permission::DestinationPort(p) => *p == a.destination_port,
            Permission::DestinationPortRange(start, end) => {
                (*start..*end).contains(&a.destination_port)
            }
            Permission::RequestedServerName(m) => m.matches(a.sni.unwrap_or("")),
        }
    }
}

impl Principal {
    /// True when the principal holds for the request.
    pub fn matches(&self, a: &Attributes<'_>) -> bool {
        match self {
            Principal::Any => true,
            Principal::And(list) => list.iter().all(|p| p.matches(a)),
            Principal::Or(list) => list.iter().any(|p| p.matches(a)),
            Principal::Not(p) => !p.matches(a),
            Principal::Authenticated(None) => a.peer.is_some(),
            Principal::Authenticated(Some(m)) => a.peer.is_some_and(|p| m.matches(p)),
            Principal::DirectRemoteIp(n) => ip_in(n, a.direct_remote_ip),
            Principal::RemoteIp(n) => ip_in(n, a.remote_ip),
            Principal::Header(h) => h.matches(a.headers),
            Principal::UrlPath(m) => a.url_path.is_some_and(|p| m.matches(p)),
        }
    }
}

impl Policy {
    /// Any permission and any principal.
    pub fn matches(&self, a: &Attributes<'_>) -> bool {
        self.permissions.iter().any(|p| p.matches(a))
            && self.principals.iter().any(|p| p.matches(a))
    }
}

impl Rbac {
    /// The name of the first policy (in name order) that matches.
    pub fn first_match(&self, a: &Attributes<'_>) -> Option<&str> {
        self.policies
            .iter()
            .find(|(_, p)| p.matches(a))
            .map(|(n, _)| n.as_str())
    }

    /// Whether these rules let the request through, and the policy that
    /// decided (the matching one; none for ALLOW rules nothing matched).
    pub fn decide(&self, a: &Attributes<'_>) -> (bool, Option<&str>) {
        let hit = self.first_match(a);
        match self.action {
            Action::Allow => (hit.is_some(), hit),
            Action::Deny => (hit.is_none(), hit),
            Action::Log => (true, hit),
        }
    }
}

/// What dry-run (shadow) rules would have decided.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Shadow<'f> {
    /// The filter holding them.
    pub filter: &'f str,
    /// Whether they would let the request through.
    pub allowed: bool,
    /// The policy that decided, if one matched.
    pub policy: Option<&'f str>,
}

/// The result of running a request through a chain of RBAC filters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Outcome<'f> {
    /// Every filter let the request through.
    pub allowed: bool,
    /// The filter that refused it.
    pub filter: Option<&'f str>,
    /// The deciding policy: the DENY policy that matched, or the ALLOW
    /// policy that let it through in the last ALLOW filter.
    pub policy: Option<&'f str>,
    /// The action of the deciding rules.
    pub action: Option<Action>,
    /// Dry-run results, per filter that has shadow rules and was reached.
    pub shadow: Vec<Shadow<'f>>,
}

/// Runs the request through `filters` in order, as an HTTP connection
/// manager does: the first filter that refuses ends the chain.
pub fn evaluate<'f>(filters: &'f [Filter], a: &Attributes<'_>) -> Outcome<'f> {
    let mut out = Outcome {
        allowed: true,
        filter: None,
        policy: None,
        action: None,
        shadow: Vec::new(),
    };
    for f in filters {
        if let Some(s) = &f.shadow {
            let (allowed, policy) = s.decide(a);
            out.shadow.push(Shadow {
                filter: &f.name,
                allowed,
                policy,
            });
        }
        let Some(rules) = &f.rules else { continue };
        let (allowed, policy) = rules.decide(a);
        if rules.action != Action::Log && policy.is_some() {
            out.policy = policy;
            out.action = Some(rules.action);
        }
        if !allowed {
            out.allowed = false;
            out.filter = Some(&f.name);
            if policy.is_none() {
                out.policy = None;
                out.action = Some(rules.action);
            }
            return out;
        }
    }
    out
}
