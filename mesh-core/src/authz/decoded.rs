//! Authorization from RBAC filters an xDS server sent, for an SDK server
//! fed by a control plane that does not send our compiled policy (istiod,
//! any Envoy v3 server): the filters are enforced with Envoy's semantics
//! ([`crate::rbac`]), per port, and whatever could not be understood
//! denies its port.

use std::collections::BTreeMap;

use serde::Serialize;

use super::engine::{Check, Decision, Verdict};
use super::lower::{attributes, peer_uri};
use super::path::{normalize, Normalization};
use super::request::Request;
use crate::config::security::authorization_policy::Action;
use crate::rbac::{self, Filter};

/// What one port enforces.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PortRbac {
    /// The RBAC filters of the port's listener, in chain order.
    Filters {
        /// The listener they came from.
        listener: String,
        /// The filters.
        filters: Vec<Filter>,
    },
    /// Every request is denied: the listener had something the SDK could
    /// not understand, so it cannot know what the server meant to allow.
    Deny {
        /// The listener (or `*` for ports without one).
        listener: String,
        /// What could not be understood.
        reason: String,
    },
}

impl PortRbac {
    fn listener(&self) -> &str {
        match self {
            PortRbac::Filters { listener, .. } | PortRbac::Deny { listener, .. } => listener,
        }
    }
}

/// The RBAC of every inbound listener, by port.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RbacPorts {
    /// Per port with a listener.
    pub ports: BTreeMap<u16, PortRbac>,
    /// For ports without a listener: what every listener agrees on, else
    /// deny (the server did not say what such a port allows).
    pub other: PortRbac,
}

impl RbacPorts {
    /// From each listener's port and RBAC.
    pub fn new(ports: BTreeMap<u16, PortRbac>) -> Self {
        let mut filters = ports.values().filter_map(|p| match p {
            PortRbac::Filters { filters, .. } => Some(filters),
            PortRbac::Deny { .. } => None,
        });
        let first = filters.next();
        let agreed = first.filter(|f| {
            !ports.is_empty()
                && ports
                    .values()
                    .all(|p| matches!(p, PortRbac::Filters { filters, .. } if filters == *f))
        });
        let other = match agreed {
            Some(f) => PortRbac::Filters {
                listener: "*".to_string(),
                filters: f.clone(),
            },
            None => PortRbac::Deny {
                listener: "*".to_string(),
                reason: format!(
                    "no inbound listener for this port, and the listeners for ports {:?} do not agree on one policy",
                    ports.keys().collect::<Vec<_>>()
                ),
            },
        };
        Self { ports, other }
    }

    /// The RBAC for a port.
    pub fn port(&self, port: u16) -> &PortRbac {
        self.ports.get(&port).unwrap_or(&self.other)
    }

    /// The names of every enforced RBAC policy, for display.
    pub fn policy_names(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .ports
            .values()
            .chain(std::iter::once(&self.other))
            .filter_map(|p| match p {
                PortRbac::Filters { filters, .. } => Some(filters),
                PortRbac::Deny { .. } => None,
            })
            .flatten()
            .filter_map(|f| f.rules.as_ref())
            .flat_map(|r| r.policies.iter().map(|(n, _)| n.clone()))
            .collect();
        out.sort();
        out.dedup();
        out
    }

    /// The fast verdict, as [`super::PolicySet::check`].
    pub(crate) fn check(&self, req: &Request, mode: Normalization) -> Check<'_> {
        let deny = |policy| Check {
            verdict: Verdict::Deny,
            policy,
            rule_index: None,
            custom_provider: None,
        };
        let filters = match self.port(req.port) {
            PortRbac::Deny { .. } => return deny(None),
            PortRbac::Filters { filters, .. } => filters,
        };
        let path = match http_path(req, mode) {
            Ok(p) => p,
            Err(_) => return deny(None),
        };
        let peer = peer_uri(req);
        let out = rbac::evaluate(filters, &attributes(req, path.as_deref(), peer.as_deref()));
        Check {
            verdict: if out.allowed {
                Verdict::Allow
            } else {
                Verdict::Deny
            },
            policy: out.policy,
            rule_index: None,
            custom_provider: None,
        }
    }

    /// The explained decision, as [`super::PolicySet::evaluate`].
    pub(crate) fn evaluate(&self, req: &Request, mode: Normalization) -> Decision {
        let port = self.port(req.port);
        let decision = |verdict, policy: Option<&str>, action, reason| Decision {
            decision: verdict,
            policy: policy.map(str::to_string),
            action,
            rule_index: None,
            reason,
            custom_provider: None,
            audit: Vec::new(),
            dry_run: None,
            normalized_path: None,
        };
        let filters = match port {
            PortRbac::Deny { listener, reason } => {
                return decision(
                    Verdict::Deny,
                    None,
                    None,
                    format!(
                        "denied: port {} has no authorization the mesh understands (inbound listener {listener}: {reason})",
                        req.port
                    ),
                )
            }
            PortRbac::Filters { filters, .. } => filters,
        };
        let path = match http_path(req, mode) {
            Ok(p) => p,
            Err(e) => {
                return decision(
                    Verdict::Deny,
                    None,
                    None,
                    format!("rejected before authorization: {e}"),
                )
            }
        };
        let peer = peer_uri(req);
        let out = rbac::evaluate(filters, &attributes(req, path.as_deref(), peer.as_deref()));
        let action = out.action.map(|a| match a {
            rbac::Action::Allow => Action::Allow,
            rbac::Action::Deny | rbac::Action::Log => Action::Deny,
        });
        let listener = port.listener();
        let reason = match (out.allowed, out.filter, out.policy) {
            (true, _, Some(p)) => format!(
                "allowed by RBAC policy {p} of inbound listener {listener} (from the xDS server's RBAC filters)"
            ),
            (true, _, None) => format!(
                "allowed: no RBAC filter of inbound listener {listener} refused the request"
            ),
            (false, f, Some(p)) => format!(
                "denied by RBAC policy {p} in filter {} of inbound listener {listener}",
                f.unwrap_or("?")
            ),
            (false, f, None) => format!(
                "denied: no ALLOW policy of RBAC filter {} of inbound listener {listener} matched",
                f.unwrap_or("?")
            ),
        };
        let mut d = decision(
            if out.allowed {
                Verdict::Allow
            } else {
                Verdict::Deny
            },
            out.policy,
            action,
            reason,
        );
        d.normalized_path = path.map(|p| p.into_owned());
        d
    }
}

fn http_path(
    req: &Request,
    mode: Normalization,
) -> Result<Option<std::borrow::Cow<'_, str>>, super::PathError> {
    if req.protocol == super::Protocol::Http {
        normalize(&req.path, mode).map(Some)
    } else {
        Ok(None)
    }
}
