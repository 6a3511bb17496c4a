//! Compiled policies lowered to Envoy RBAC filters with the same meaning,
//! as a stock gRPC server (gRFC A41) can evaluate them.
//!
//! The layout is istiod's for proxyless gRPC: a DENY filter
//! ([`HTTP_DENY_FILTER`]) before an ALLOW filter ([`HTTP_ALLOW_FILTER`]),
//! one RBAC policy per rule named `namespace-name-index`, `from` entries as
//! principals and `to` entries as permissions (ORed across entries, ANDed
//! within one), `when` conditions ANDed into each: source conditions into
//! every principal, the others into every permission.
//!
//! Where we differ from istiod, on purpose, so that a stock server decides
//! exactly as [`PolicySet::check`] does:
//! - Matchers mirror the engine: principals as the peer's SPIFFE URI (a
//!   `spiffe://` in the policy is not doubled), namespaces and service
//!   accounts as anchored regexes over the SPIFFE path (wildcards kept),
//!   hosts case-insensitive, path templates as `url_path` regexes (gRPC
//!   servers cannot evaluate `uri_template`; C-core NACKs it).
//! - Dry-run policies are `shadow_rules`, never enforced (istiod enforces
//!   them on gRPC servers). A filter always has enforced `rules` (grpc-js
//!   NACKs a filter without): ALLOW policies that are all dry-run get rules
//!   that deny nothing.
//! - ALLOW policies that apply but cannot match (`spec: {}`) still send the
//!   ALLOW filter, which denies everything, as the engine does; istiod
//!   drops it and lets everything through.
//! - CUSTOM policies cannot call their provider from a stock server; their
//!   rules are enforced as DENY rules (fail closed). AUDIT policies are not
//!   sent (gRPC has no LOG action; grpc-js NACKs it).
//!
//! What a stock gRPC server cannot evaluate (JWT attributes, the TLS server
//! name, headers gRPC rewrites or hides) fails closed as istiod does for
//! values it cannot translate: an ALLOW rule using it is dropped, a DENY
//! rule loses the condition (so it denies more). Each such change is a
//! [`Note`] naming the policy, rule and reason.

use serde::Serialize;

use super::engine::PolicySet;
use super::matcher::{PathMatch, StrMatch};
use super::policy::{Attr, Clause, CompiledPolicy, CompiledRule, Cond, Values};
use super::request::Protocol;
use crate::config::security::authorization_policy::Action;
use crate::matcher::{FullRegex, HeaderMatcher, StrMatcher, StringMatcher};
use crate::rbac::{self, Filter, Permission, Policy, Principal, Rbac};

/// Name of the RBAC HTTP filter holding ALLOW policies (istiod's name).
pub const HTTP_ALLOW_FILTER: &str = "envoy.filters.http.rbac";
/// Name of the RBAC HTTP filter holding DENY policies (istiod's name).
pub const HTTP_DENY_FILTER: &str = "envoy.filters.http.rbac.DENY";

/// Which stock gRPC server will evaluate the filters: they differ in what
/// they can see.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum StockServer {
    /// gRPC C-core (Python, C++, Ruby, ...), grpc-go and grpc-java: gRFC
    /// A41 as written.
    #[default]
    Grpc,
    /// Node's grpc-js-xds. Its server listens on every address of the port
    /// (dual-stack), so an IPv4 client arrives as `::ffff:a.b.c.d`: IPv4
    /// blocks never match it and an IPv6 block crashes the server while
    /// parsing that address. IP conditions are therefore not sent to it.
    GrpcJs,
}

impl StockServer {
    /// The server a node's `user_agent_name` names (`gRPC Node Pure JS`
    /// for grpc-js); A41's reading for anything else.
    pub fn from_user_agent(user_agent: &str) -> Self {
        if user_agent.contains("Node") {
            StockServer::GrpcJs
        } else {
            StockServer::Grpc
        }
    }
}

/// What lowering did to a rule a stock gRPC server cannot evaluate as is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Effect {
    /// An ALLOW rule left out: it allows nothing on a stock server.
    Dropped,
    /// A DENY (or CUSTOM) rule sent without a condition: it denies more.
    Widened,
    /// A CUSTOM rule sent as a DENY rule: the provider cannot be asked.
    DeniedWithoutProvider,
    /// A policy not sent at all (AUDIT: nothing to enforce).
    NotSent,
}

/// One change lowering made, for logs and `meshctl x authz`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Note {
    /// `namespace/name`.
    pub policy: String,
    /// The rule index, when the note is about one rule.
    pub rule: Option<usize>,
    /// What was done.
    pub effect: Effect,
    /// Why, naming the field.
    pub reason: String,
}

impl std::fmt::Display for Note {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let what = match self.effect {
            Effect::Dropped => "dropped (allows nothing on stock gRPC servers)",
            Effect::Widened => "widened (denies more on stock gRPC servers)",
            Effect::DeniedWithoutProvider => "enforced as DENY on stock gRPC servers",
            Effect::NotSent => "not sent to stock gRPC servers",
        };
        match self.rule {
            Some(r) => write!(f, "{} rule {r} {what}: {}", self.policy, self.reason),
            None => write!(f, "{} {what}: {}", self.policy, self.reason),
        }
    }
}

/// The RBAC filters for one port, and what lowering changed.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct Lowered {
    /// The filters, in chain order (DENY, then ALLOW).
    pub filters: Vec<Filter>,
    /// Rules a stock server cannot evaluate exactly, and what was done.
    pub notes: Vec<Note>,
}

impl Lowered {
    /// True when a stock server decides every request exactly as the
    /// engine does.
    pub fn is_exact(&self) -> bool {
        self.notes.iter().all(|n| n.effect == Effect::NotSent)
    }
}

/// The RBAC policy name istiod gives rule `index` of policy `ns/name`.
pub fn rule_name(policy: &str, index: usize) -> String {
    format!("{}-{index}", policy.replacen('/', "-", 1))
}

impl PolicySet {
    /// The RBAC filters that give a stock gRPC server this set's decisions
    /// on a port served as `protocol` (network RBAC semantics for TCP).
    pub fn lower(&self, protocol: Protocol) -> Lowered {
        self.lower_for(protocol, StockServer::Grpc)
    }

    /// [`PolicySet::lower`] for one kind of stock server.
    pub fn lower_for(&self, protocol: Protocol, server: StockServer) -> Lowered {
        lower(self.policies(), protocol, server)
    }
}

fn lower(policies: &[CompiledPolicy], protocol: Protocol, server: StockServer) -> Lowered {
    let tcp = protocol == Protocol::Tcp;
    let mut notes = Vec::new();
    let mut deny = Vec::new();
    let mut deny_shadow = Vec::new();
    let mut allow = Vec::new();
    let mut allow_shadow = Vec::new();
    let (mut any_deny, mut any_allow, mut enforced_allow) = (false, false, false);
    for p in policies {
        let (list, as_action) = match (p.action, p.dry_run) {
            (Action::Audit, _) => {
                notes.push(Note {
                    policy: p.name.clone(),
                    rule: None,
                    effect: Effect::NotSent,
                    reason: "AUDIT policies only log; gRPC servers have no RBAC LOG action"
                        .to_string(),
                });
                continue;
            }
            (Action::Custom, true) => continue,
            (Action::Custom, false) => {
                any_deny = true;
                notes.push(Note {
                    policy: p.name.clone(),
                    rule: None,
                    effect: Effect::DeniedWithoutProvider,
                    reason: format!(
                        "a stock gRPC server cannot ask the CUSTOM provider {:?}, so requests its rules match are denied",
                        p.provider.as_deref().unwrap_or("")
                    ),
                });
                (&mut deny, Action::Deny)
            }
            (Action::Deny, false) => {
                any_deny = true;
                (&mut deny, Action::Deny)
            }
            (Action::Deny, true) => {
                any_deny = true;
                (&mut deny_shadow, Action::Deny)
            }
            (Action::Allow, false) => {
                any_allow = true;
                enforced_allow = true;
                (&mut allow, Action::Allow)
            }
            (Action::Allow, true) => {
                any_allow = true;
                (&mut allow_shadow, Action::Allow)
            }
        };
        for (i, rule) in p.rules.iter().enumerate() {
            let mut rule_notes = Vec::new();
            if let Some(policy) = lower_rule(rule, as_action, tcp, server, &mut rule_notes) {
                list.push((rule_name(&p.name, i), policy));
            }
            notes.extend(rule_notes.into_iter().map(|(effect, reason)| Note {
                policy: p.name.clone(),
                rule: Some(i),
                effect,
                reason,
            }));
        }
    }
    let rbac = |action, policies: Vec<(String, Policy)>| Rbac { action, policies };
    let mut filters = Vec::new();
    if any_deny {
        filters.push(Filter {
            name: HTTP_DENY_FILTER.to_string(),
            rules: Some(rbac(rbac::Action::Deny, deny)),
            shadow: (!deny_shadow.is_empty()).then(|| rbac(rbac::Action::Deny, deny_shadow)),
        });
    }
    if any_allow {
        let rules = if enforced_allow {
            rbac(rbac::Action::Allow, allow)
        } else {
            // Only dry-run ALLOW policies: enforce nothing.
            rbac(rbac::Action::Deny, Vec::new())
        };
        filters.push(Filter {
            name: HTTP_ALLOW_FILTER.to_string(),
            rules: Some(rules),
            shadow: (!allow_shadow.is_empty()).then(|| rbac(rbac::Action::Allow, allow_shadow)),
        });
    }
    Lowered { filters, notes }
}

/// A lowered condition: a permission or a principal.
enum Leaf {
    Perm(Permission),
    Id(Principal),
}

/// One rule as an RBAC policy; `None` when it can never match (an ALLOW
/// rule with an invalid value, with an HTTP-only field on TCP, or with a
/// condition a stock server cannot evaluate).
fn lower_rule(
    rule: &CompiledRule,
    action: Action,
    tcp: bool,
    server: StockServer,
    notes: &mut Vec<(Effect, String)>,
) -> Option<Policy> {
    if rule.never.is_some() || (tcp && rule.has_http_only && action == Action::Allow) {
        return None;
    }
    let allow = action == Action::Allow;
    let mut ok = true;
    let mut lower_clause = |c: &Clause, notes: &mut Vec<(Effect, String)>| -> Vec<Leaf> {
        let mut out = Vec::new();
        for cond in &c.conds {
            if tcp && cond.http_only {
                continue;
            }
            match lower_cond(cond, server) {
                Ok(leaf) => out.push(leaf),
                Err(why) if allow => {
                    ok = false;
                    notes.push((Effect::Dropped, format!("{}: {why}", cond.field)));
                }
                Err(why) => notes.push((Effect::Widened, format!("{}: {why}", cond.field))),
            }
        }
        out
    };
    let from: Vec<Vec<Leaf>> = rule.from.iter().map(|c| lower_clause(c, notes)).collect();
    let to: Vec<Vec<Leaf>> = rule.to.iter().map(|c| lower_clause(c, notes)).collect();
    let when = lower_clause(&rule.when, notes);
    if !ok {
        return None;
    }
    let (when_perms, when_ids) = split(when);
    let principals = if from.is_empty() {
        vec![and_ids(when_ids.clone())]
    } else {
        from.into_iter()
            .map(|leaves| {
                let (perms, mut ids) = split(leaves);
                // A `from` entry only holds source fields.
                debug_assert!(perms.is_empty());
                ids.extend(when_ids.iter().cloned());
                and_ids(ids)
            })
            .collect()
    };
    let permissions = if to.is_empty() {
        vec![and_perms(when_perms.clone())]
    } else {
        to.into_iter()
            .map(|leaves| {
                let (mut perms, ids) = split(leaves);
                debug_assert!(ids.is_empty());
                perms.extend(when_perms.iter().cloned());
                and_perms(perms)
            })
            .collect()
    };
    Some(Policy {
        permissions,
        principals,
    })
}

fn split(leaves: Vec<Leaf>) -> (Vec<Permission>, Vec<Principal>) {
    let mut perms = Vec::new();
    let mut ids = Vec::new();
    for l in leaves {
        match l {
            Leaf::Perm(p) => perms.push(p),
            Leaf::Id(i) => ids.push(i),
        }
    }
    (perms, ids)
}

fn and_perms(mut list: Vec<Permission>) -> Permission {
    match list.len() {
        0 => Permission::Any,
        1 => list.remove(0),
        _ => Permission::And(list),
    }
}

fn or_perms(mut list: Vec<Permission>) -> Permission {
    match list.len() {
        0 => Permission::never(),
        1 => list.remove(0),
        _ => Permission::Or(list),
    }
}

fn and_ids(mut list: Vec<Principal>) -> Principal {
    match list.len() {
        0 => Principal::Any,
        1 => list.remove(0),
        _ => Principal::And(list),
    }
}

fn or_ids(mut list: Vec<Principal>) -> Principal {
    match list.len() {
        0 => Principal::never(),
        1 => list.remove(0),
        _ => Principal::Or(list),
    }
}

/// Headers a stock gRPC server rewrites, hides or refuses to match, so a
/// condition on them would not mean what it means to the engine.
fn grpc_opaque_header(name: &str) -> Option<&'static str> {
    if name.starts_with("grpc-") || name == ":scheme" {
        Some("gRPC servers refuse RBAC on :scheme and grpc-* headers (C-core NACKs the listener)")
    } else if name.ends_with("-bin") {
        Some("gRPC servers match binary (-bin) metadata in base64 or not at all")
    } else if matches!(name, "te" | "content-type" | "host" | "user-agent") {
        Some("gRPC servers hide or rewrite this header (te, content-type, host, user-agent)")
    } else {
        None
    }
}

fn perm_header(name: &str, value: StringMatcher) -> Permission {
    Permission::Header(HeaderMatcher::new(name, value))
}

fn lower_cond(c: &Cond, server: StockServer) -> Result<Leaf, String> {
    if server == StockServer::GrpcJs
        && matches!(
            c.attr,
            Attr::SourceIp | Attr::RemoteIp | Attr::DestinationIp
        )
    {
        return Err(
            "grpc-js-xds servers listen dual-stack and see IPv4 clients as ::ffff:a.b.c.d, so IP blocks never match them (and IPv6 blocks crash the server)"
                .to_string(),
        );
    }
    fn all<T, U>(items: &[T], f: impl Fn(&T) -> Result<U, String>) -> Result<Vec<U>, String> {
        items.iter().map(f).collect()
    }
    let leaf = match (&c.attr, &c.values) {
        (Attr::Principal, Values::Str(list)) => {
            Leaf::Id(or_ids(all(list, |m| Ok(authenticated(principal_uri(m)?)))?))
        }
        (Attr::Principal, Values::ServiceAccount(list)) => Leaf::Id(or_ids(all(list, |(ns, sa)| {
            Ok(authenticated(spiffe_path(
                &regex::escape(ns),
                &regex::escape(sa),
            )?))
        })?)),
        (Attr::Namespace, Values::Str(list)) => {
            let mut ids = Vec::new();
            for ns in list.iter().filter_map(segment_pattern) {
                ids.push(authenticated(spiffe_path(&ns, "[^/]+")?));
            }
            Leaf::Id(or_ids(ids))
        }
        (Attr::SourceIp, Values::Ip(nets)) => Leaf::Id(or_ids(
            with_mapped(nets).map(Principal::DirectRemoteIp).collect(),
        )),
        (Attr::RemoteIp, Values::Ip(nets)) => {
            Leaf::Id(or_ids(with_mapped(nets).map(Principal::RemoteIp).collect()))
        }
        (Attr::DestinationIp, Values::Ip(nets)) => Leaf::Perm(or_perms(
            with_mapped(nets).map(Permission::DestinationIp).collect(),
        )),
        (Attr::Port, Values::Port(ports)) => Leaf::Perm(or_perms(
            ports.iter().map(|p| Permission::DestinationPort(*p)).collect(),
        )),
        (Attr::Host, Values::Host(list)) => Leaf::Perm(or_perms(all(list, |m| {
            Ok(perm_header(
                ":authority",
                StringMatcher {
                    ignore_case: true,
                    ..istio_value(m)?
                },
            ))
        })?)),
        (Attr::Method, Values::Str(list)) => Leaf::Perm(or_perms(all(list, |m| {
            Ok(perm_header(":method", istio_value(m)?))
        })?)),
        (Attr::Path, Values::Path(list)) => Leaf::Perm(or_perms(all(list, |m| {
            Ok(Permission::UrlPath(match m {
                PathMatch::Str(s) => istio_value(s)?,
                PathMatch::Template(re) => StringMatcher::new(StrMatcher::Regex(re.clone())),
            }))
        })?)),
        (Attr::Header(name), Values::Str(list)) => {
            if let Some(why) = grpc_opaque_header(name) {
                return Err(why.to_string());
            }
            Leaf::Perm(or_perms(all(list, |m| Ok(perm_header(name, istio_value(m)?)))?))
        }
        (Attr::RequestPrincipal | Attr::Claim(_) | Attr::Audiences | Attr::Presenter, _) => {
            return Err(
                "stock gRPC servers do not validate JWTs, so request principals and claims are unknown to them"
                    .to_string(),
            )
        }
        (Attr::Sni, _) => {
            return Err("gRPC servers do not expose the TLS server name to RBAC".to_string())
        }
        // Absent in this mesh: the values never match.
        (Attr::FilterMetadata, _) => Leaf::Perm(Permission::never()),
        (attr, values) => {
            return Err(format!(
                "no RBAC form for {attr:?} with {values:?} (a bug: please report it)"
            ))
        }
    };
    Ok(if c.negate {
        match leaf {
            Leaf::Perm(p) => Leaf::Perm(Permission::Not(Box::new(p))),
            Leaf::Id(i) => Leaf::Id(Principal::Not(Box::new(i))),
        }
    } else {
        leaf
    })
}

/// Each block, and for an IPv4 block the same block in IPv4-mapped IPv6
/// (`::ffff:a.b.c.d`): the engine reads an IPv4 peer on a dual-stack
/// socket as IPv4, while RBAC compares address families strictly (a
/// grpc-js-xds server on `127.0.0.1` sees `::ffff:127.0.0.1`).
fn with_mapped(nets: &[ipnet::IpNet]) -> impl Iterator<Item = ipnet::IpNet> + '_ {
    nets.iter().flat_map(|n| {
        let mapped = match n {
            ipnet::IpNet::V4(v4) => {
                ipnet::Ipv6Net::new(v4.network().to_ipv6_mapped(), 96 + v4.prefix_len())
                    .ok()
                    .map(ipnet::IpNet::V6)
            }
            ipnet::IpNet::V6(_) => None,
        };
        std::iter::once(*n).chain(mapped)
    })
}

/// An Istio value (`*` any non-empty, `*x`, `x*`, exact) as Envoy's match.
fn istio_value(m: &StrMatch) -> Result<StringMatcher, String> {
    Ok(StringMatcher::new(match m {
        StrMatch::Exact(e) => StrMatcher::Exact(e.clone()),
        StrMatch::Prefix(p) => StrMatcher::Prefix(p.clone()),
        StrMatch::Suffix(s) => StrMatcher::Suffix(s.clone()),
        StrMatch::Present => StrMatcher::Regex(regex(".+")?),
    }))
}

fn regex(pattern: &str) -> Result<FullRegex, String> {
    FullRegex::new(pattern).map_err(|e| format!("regex {pattern:?} does not compile: {e}"))
}

fn authenticated(m: StringMatcher) -> Principal {
    Principal::Authenticated(Some(m))
}

/// The peer's URI SAN for a principal value (matched without scheme by the
/// engine, so the URI is `spiffe://` + the principal).
fn principal_uri(m: &StrMatch) -> Result<StringMatcher, String> {
    Ok(StringMatcher::new(match m {
        StrMatch::Exact(e) => StrMatcher::Exact(format!("spiffe://{e}")),
        StrMatch::Prefix(p) => StrMatcher::Prefix(format!("spiffe://{p}")),
        // A plain suffix could end inside the scheme; the regex cannot.
        StrMatch::Suffix(s) => {
            StrMatcher::Regex(regex(&format!("spiffe://.*{}", regex::escape(s)))?)
        }
        StrMatch::Present => StrMatcher::Regex(regex("spiffe://.+")?),
    }))
}

/// A regex over Istio's SPIFFE path, as the engine reads namespace and
/// service account (trust domain, namespace and account non-empty, no `/`).
fn spiffe_path(ns: &str, sa: &str) -> Result<StringMatcher, String> {
    Ok(StringMatcher::new(StrMatcher::Regex(regex(&format!(
        "spiffe://[^/]+/ns/{ns}/sa/{sa}"
    ))?)))
}

/// A regex for one SPIFFE path segment matching `m`; `None` when no
/// segment can (the value holds a `/`).
fn segment_pattern(m: &StrMatch) -> Option<String> {
    let lit = |s: &str| (!s.contains('/')).then(|| regex::escape(s));
    Some(match m {
        StrMatch::Exact(e) if e.is_empty() => return None,
        StrMatch::Exact(e) => lit(e)?,
        StrMatch::Prefix(p) if p.is_empty() => "[^/]+".to_string(),
        StrMatch::Prefix(p) => format!("{}[^/]*", lit(p)?),
        StrMatch::Suffix(s) if s.is_empty() => "[^/]+".to_string(),
        StrMatch::Suffix(s) => format!("[^/]*{}", lit(s)?),
        StrMatch::Present => "[^/]+".to_string(),
    })
}

/// The RBAC attributes of an engine request (`path` already normalized).
pub fn attributes<'a>(
    req: &'a super::Request,
    path: Option<&'a str>,
    peer_uri: Option<&'a str>,
) -> rbac::Attributes<'a> {
    let http = req.protocol == Protocol::Http;
    rbac::Attributes {
        headers: if http {
            req
        } else {
            &crate::matcher::NO_HEADERS
        },
        url_path: if http { path } else { None },
        peer: peer_uri,
        direct_remote_ip: req.source_ip,
        remote_ip: req.effective_remote_ip(),
        destination_ip: req.destination_ip,
        destination_port: req.port,
        sni: req.sni.as_deref().filter(|s| !s.is_empty()),
    }
}

/// The peer's URI SAN as the engine reads the request's principal.
pub fn peer_uri(req: &super::Request) -> Option<String> {
    req.source_principal
        .as_deref()
        .map(crate::spiffe::strip_scheme)
        .filter(|p| !p.is_empty())
        .map(|p| format!("spiffe://{p}"))
}
