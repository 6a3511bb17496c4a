//! RBAC HTTP filters (gRFC A41) from the AuthorizationPolicies that apply to
//! a workload, shaped as istiod builds them: one filter for DENY policies
//! (`envoy.filters.http.rbac.DENY`), then one for ALLOW policies
//! (`envoy.filters.http.rbac`), each policy rule an Envoy policy named
//! `namespace-name-index`, `from` entries as principals and `to` entries as
//! permissions (ORed across entries, ANDed within one).
//!
//! Translated: principals, namespaces, ipBlocks/remoteIpBlocks, methods,
//! paths, ports, hosts and their `not` forms, plus `when` conditions on
//! request headers, source.ip, source.namespace, source.principal and
//! destination.port. A rule with anything else (request principals, JWT
//! claims) is dropped from an ALLOW filter (it could never be proven to
//! match) and loses the condition in a DENY filter (denying more), which is
//! what Istio does for conditions a proxy cannot evaluate. CUSTOM and AUDIT
//! policies are left out: proxyless gRPC has no ext_authz.
//!
//! One deliberate difference from istiod: when ALLOW policies apply but none
//! has a rule that can match (`spec: {}`, the deny-by-default idiom), we
//! still send the ALLOW filter with no policies, which denies everything as
//! Istio's semantics say; istiod's gRPC generator drops the empty filter and
//! so lets everything through.

use std::collections::BTreeMap;

use envoy_types::pb::envoy::config::core::v3::CidrRange;
use envoy_types::pb::envoy::config::rbac::v3::{
    permission, principal, rbac::Action as RbacAction, Permission, Policy, Principal, Rbac,
};
use envoy_types::pb::envoy::config::route::v3::{
    header_matcher::HeaderMatchSpecifier, HeaderMatcher,
};
use envoy_types::pb::envoy::extensions::filters::http::rbac::v3::Rbac as RbacFilter;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::HttpFilter;
use envoy_types::pb::envoy::r#type::matcher::v3::{
    path_matcher, string_matcher::MatchPattern, PathMatcher, RegexMatcher, StringMatcher,
};
use mesh_core::config::security::authorization_policy::{Action, Condition, Operation, Source};
use mesh_core::config::{Resource, Spec};

use super::listener::http_filter;
use super::{RBAC_DENY_FILTER, RBAC_FILTER};

/// The RBAC filters for a server port (DENY first, then ALLOW; none when no
/// policy of that action applies).
pub fn rbac_filters(policies: &[Resource]) -> Vec<HttpFilter> {
    let mut out = Vec::new();
    for (action, envoy_action, filter_name) in [
        (Action::Deny, RbacAction::Deny, RBAC_DENY_FILTER),
        (Action::Allow, RbacAction::Allow, RBAC_FILTER),
    ] {
        let mut any_policy = false;
        let mut rules: BTreeMap<String, Policy> = BTreeMap::new();
        for r in policies {
            let Spec::AuthorizationPolicy(ap) = &r.spec else {
                continue;
            };
            if ap.action != action {
                continue;
            }
            any_policy = true;
            for (i, rule) in ap.rules.iter().enumerate() {
                let deny = action == Action::Deny;
                let mut ctx = Ctx { deny, ok: true };
                let perms = ctx.or_perm(rule.to.iter().map(|t| &t.operation), Ctx::operation);
                let mut ids = ctx.or_id(rule.from.iter().map(|f| &f.source), Ctx::source);
                let mut perm_conds = vec![perms];
                for c in &rule.when {
                    ctx.condition(c, &mut perm_conds, &mut ids);
                }
                if !ctx.ok {
                    continue;
                }
                rules.insert(
                    format!("{}-{}-{i}", r.meta.namespace, r.meta.name),
                    Policy {
                        permissions: vec![and_perm(perm_conds)],
                        principals: vec![ids],
                        ..Default::default()
                    },
                );
            }
        }
        if any_policy {
            out.push(http_filter(
                filter_name,
                &RbacFilter {
                    rules: Some(Rbac {
                        action: envoy_action as i32,
                        policies: rules.into_iter().collect(),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
            ));
        }
    }
    out
}

struct Ctx {
    deny: bool,
    ok: bool,
}

fn perm(rule: permission::Rule) -> Permission {
    Permission { rule: Some(rule) }
}

fn id(i: principal::Identifier) -> Principal {
    Principal {
        identifier: Some(i),
    }
}

fn and_perm(mut ps: Vec<Permission>) -> Permission {
    if ps.len() == 1 {
        return ps.remove(0);
    }
    perm(permission::Rule::AndRules(permission::Set { rules: ps }))
}

fn and_id(mut ps: Vec<Principal>) -> Principal {
    if ps.len() == 1 {
        return ps.remove(0);
    }
    id(principal::Identifier::AndIds(principal::Set { ids: ps }))
}

/// An Istio string value (`*`, `prefix*`, `*suffix`, exact) as a matcher.
fn istio_match(v: &str, prefix: &str) -> StringMatcher {
    let pattern = if v == "*" {
        MatchPattern::SafeRegex(RegexMatcher {
            regex: ".+".into(),
            ..Default::default()
        })
    } else if let Some(p) = v.strip_suffix('*') {
        MatchPattern::Prefix(format!("{prefix}{p}"))
    } else if let Some(s) = v.strip_prefix('*') {
        MatchPattern::Suffix(s.to_string())
    } else {
        MatchPattern::Exact(format!("{prefix}{v}"))
    };
    StringMatcher {
        match_pattern: Some(pattern),
        ignore_case: false,
    }
}

fn header(name: &str, v: &str) -> HeaderMatcher {
    HeaderMatcher {
        name: name.to_string(),
        header_match_specifier: Some(HeaderMatchSpecifier::StringMatch(istio_match(v, ""))),
        ..Default::default()
    }
}

fn cidr(v: &str) -> CidrRange {
    let (addr, len) = v.split_once('/').unwrap_or((v, ""));
    let len = len
        .parse()
        .unwrap_or(if addr.contains(':') { 128 } else { 32 });
    CidrRange {
        address_prefix: addr.to_string(),
        prefix_len: Some(crate::types::u32v(len)),
    }
}

impl Ctx {
    fn or_perm<'o, T: 'o>(
        &mut self,
        items: impl Iterator<Item = &'o T>,
        f: fn(&mut Self, &T) -> Permission,
    ) -> Permission {
        let rules: Vec<Permission> = items.map(|t| f(self, t)).collect();
        match rules.len() {
            0 => perm(permission::Rule::Any(true)),
            1 => rules
                .into_iter()
                .next()
                .unwrap_or_else(|| perm(permission::Rule::Any(true))),
            _ => perm(permission::Rule::OrRules(permission::Set { rules })),
        }
    }

    fn or_id<'o, T: 'o>(
        &mut self,
        items: impl Iterator<Item = &'o T>,
        f: fn(&mut Self, &T) -> Principal,
    ) -> Principal {
        let ids: Vec<Principal> = items.map(|t| f(self, t)).collect();
        match ids.len() {
            0 => id(principal::Identifier::Any(true)),
            1 => ids
                .into_iter()
                .next()
                .unwrap_or_else(|| id(principal::Identifier::Any(true))),
            _ => id(principal::Identifier::OrIds(principal::Set { ids })),
        }
    }

    fn unsupported(&mut self) {
        if !self.deny {
            self.ok = false;
        }
    }

    fn operation(&mut self, o: &Operation) -> Permission {
        let mut all = Vec::new();
        let mut field = |vals: &[String], not: bool, f: &dyn Fn(&str) -> Permission| {
            if vals.is_empty() {
                return;
            }
            let set = perm(permission::Rule::OrRules(permission::Set {
                rules: vals.iter().map(|v| f(v)).collect(),
            }));
            all.push(if not {
                perm(permission::Rule::NotRule(Box::new(set)))
            } else {
                set
            });
        };
        let method = |v: &str| perm(permission::Rule::Header(header(":method", v)));
        let host = |v: &str| perm(permission::Rule::Header(header(":authority", v)));
        let path = |v: &str| {
            perm(permission::Rule::UrlPath(PathMatcher {
                rule: Some(path_matcher::Rule::Path(istio_match(v, ""))),
            }))
        };
        let port = |v: &str| perm(permission::Rule::DestinationPort(v.parse().unwrap_or(0)));
        field(&o.methods, false, &method);
        field(&o.not_methods, true, &method);
        field(&o.paths, false, &path);
        field(&o.not_paths, true, &path);
        field(&o.ports, false, &port);
        field(&o.not_ports, true, &port);
        field(&o.hosts, false, &host);
        field(&o.not_hosts, true, &host);
        if all.is_empty() {
            return perm(permission::Rule::Any(true));
        }
        and_perm(all)
    }

    fn source(&mut self, s: &Source) -> Principal {
        let mut all = Vec::new();
        let mut field = |vals: &[String], not: bool, f: &dyn Fn(&str) -> Principal| {
            if vals.is_empty() {
                return;
            }
            let set = id(principal::Identifier::OrIds(principal::Set {
                ids: vals.iter().map(|v| f(v)).collect(),
            }));
            all.push(if not {
                id(principal::Identifier::NotId(Box::new(set)))
            } else {
                set
            });
        };
        let principal = |v: &str| {
            id(principal::Identifier::Authenticated(
                principal::Authenticated {
                    principal_name: Some(istio_match(v, "spiffe://")),
                },
            ))
        };
        let namespace = |v: &str| {
            id(principal::Identifier::Authenticated(
                principal::Authenticated {
                    principal_name: Some(StringMatcher {
                        match_pattern: Some(MatchPattern::SafeRegex(RegexMatcher {
                            regex: format!(".*/ns/{}/.*", regex::escape(v)),
                            ..Default::default()
                        })),
                        ignore_case: false,
                    }),
                },
            ))
        };
        let ip = |v: &str| id(principal::Identifier::DirectRemoteIp(cidr(v)));
        let remote = |v: &str| id(principal::Identifier::RemoteIp(cidr(v)));
        field(&s.principals, false, &principal);
        field(&s.not_principals, true, &principal);
        field(&s.namespaces, false, &namespace);
        field(&s.not_namespaces, true, &namespace);
        field(&s.ip_blocks, false, &ip);
        field(&s.not_ip_blocks, true, &ip);
        field(&s.remote_ip_blocks, false, &remote);
        field(&s.not_remote_ip_blocks, true, &remote);
        let unsupported = !s.request_principals.is_empty()
            || !s.not_request_principals.is_empty()
            || !s.service_accounts.is_empty()
            || !s.not_service_accounts.is_empty();
        if unsupported {
            self.unsupported();
        }
        if all.is_empty() {
            return id(principal::Identifier::Any(true));
        }
        and_id(all)
    }

    fn condition(&mut self, c: &Condition, perms: &mut Vec<Permission>, ids: &mut Principal) {
        let key = c.key.as_str();
        let values = |vals: &[String], f: &dyn Fn(&str) -> Permission| -> Option<Permission> {
            (!vals.is_empty()).then(|| {
                perm(permission::Rule::OrRules(permission::Set {
                    rules: vals.iter().map(|v| f(v)).collect(),
                }))
            })
        };
        let idvalues = |vals: &[String], f: &dyn Fn(&str) -> Principal| -> Option<Principal> {
            (!vals.is_empty()).then(|| {
                id(principal::Identifier::OrIds(principal::Set {
                    ids: vals.iter().map(|v| f(v)).collect(),
                }))
            })
        };
        let push_perm =
            |perms: &mut Vec<Permission>, yes: Option<Permission>, no: Option<Permission>| {
                perms.extend(yes);
                perms.extend(no.map(|n| perm(permission::Rule::NotRule(Box::new(n)))));
            };
        let mut push_id = |yes: Option<Principal>, no: Option<Principal>| {
            let mut list = vec![ids.clone()];
            list.extend(yes);
            list.extend(no.map(|n| id(principal::Identifier::NotId(Box::new(n)))));
            *ids = and_id(list);
        };
        if let Some(h) = key
            .strip_prefix("request.headers[")
            .and_then(|k| k.strip_suffix(']'))
        {
            let f = |v: &str| perm(permission::Rule::Header(header(&h.to_ascii_lowercase(), v)));
            push_perm(perms, values(&c.values, &f), values(&c.not_values, &f));
        } else if key == "destination.port" {
            let f = |v: &str| perm(permission::Rule::DestinationPort(v.parse().unwrap_or(0)));
            push_perm(perms, values(&c.values, &f), values(&c.not_values, &f));
        } else if key == "source.ip" {
            let f = |v: &str| id(principal::Identifier::DirectRemoteIp(cidr(v)));
            push_id(idvalues(&c.values, &f), idvalues(&c.not_values, &f));
        } else if key == "source.principal" {
            let f = |v: &str| {
                id(principal::Identifier::Authenticated(
                    principal::Authenticated {
                        principal_name: Some(istio_match(v, "spiffe://")),
                    },
                ))
            };
            push_id(idvalues(&c.values, &f), idvalues(&c.not_values, &f));
        } else if key == "source.namespace" {
            let f = |v: &str| {
                id(principal::Identifier::Authenticated(
                    principal::Authenticated {
                        principal_name: Some(StringMatcher {
                            match_pattern: Some(MatchPattern::SafeRegex(RegexMatcher {
                                regex: format!(".*/ns/{}/.*", regex::escape(v)),
                                ..Default::default()
                            })),
                            ignore_case: false,
                        }),
                    },
                ))
            };
            push_id(idvalues(&c.values, &f), idvalues(&c.not_values, &f));
        } else {
            self.unsupported();
        }
    }
}
