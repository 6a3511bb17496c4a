//! One AuthorizationPolicy compiled for evaluation: every value parsed into a
//! matcher once, every field turned into a condition on one attribute.
//!
//! A rule is `any(from) AND any(to) AND all(when)`; a `from`/`to` entry is
//! the AND of its fields; a field is the OR of its values, negated for the
//! `notX` forms. A condition on an absent attribute (no principal on a
//! plaintext connection, a missing header, a missing claim) does not match,
//! so its `notX` form does match: `notPrincipals: ["*"]` matches plaintext
//! requests, exactly as Envoy's RBAC `not_id` does.

use std::net::IpAddr;
use std::sync::Arc;

use ipnet::IpNet;

use super::matcher::{PathMatch, StrMatch};
use super::request::Request;
use crate::config::security::authorization_policy::{Action, AuthorizationPolicy};
use crate::config::Resource;
use crate::spiffe;

/// The request attribute a condition reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Attr {
    Principal,
    Namespace,
    RequestPrincipal,
    SourceIp,
    RemoteIp,
    DestinationIp,
    Port,
    Host,
    Method,
    Path,
    Header(String),
    Claim(Vec<String>),
    Audiences,
    Presenter,
    Sni,
    FilterMetadata,
}

impl Attr {
    pub(crate) fn http_only(&self) -> bool {
        matches!(
            self,
            Attr::RequestPrincipal
                | Attr::Host
                | Attr::Method
                | Attr::Path
                | Attr::Header(_)
                | Attr::Claim(_)
                | Attr::Audiences
                | Attr::Presenter
        )
    }
}

/// Parsed values of one field.
#[derive(Debug, Clone)]
pub(crate) enum Values {
    Str(Vec<StrMatch>),
    Host(Vec<StrMatch>),
    Path(Vec<PathMatch>),
    Ip(Vec<IpNet>),
    Port(Vec<u16>),
    /// `(namespace, service account)` pairs.
    ServiceAccount(Vec<(String, String)>),
}

impl Values {
    pub(crate) fn is_empty(&self) -> bool {
        match self {
            Values::Str(v) | Values::Host(v) => v.is_empty(),
            Values::Path(v) => v.is_empty(),
            Values::Ip(v) => v.is_empty(),
            Values::Port(v) => v.is_empty(),
            Values::ServiceAccount(v) => v.is_empty(),
        }
    }
}

/// One field (or one `when` values/notValues list).
#[derive(Debug, Clone)]
pub(crate) struct Cond {
    pub attr: Attr,
    pub values: Values,
    pub negate: bool,
    pub http_only: bool,
    /// The field as written (`paths`, `notPrincipals`, `request.headers[x] notValues`).
    pub field: String,
    /// The values as written, for explanations.
    pub raw: Vec<String>,
}

/// What the engine knows about a request, computed once per evaluation.
pub(crate) struct Ctx<'a> {
    pub req: &'a Request,
    /// The normalized path (HTTP only).
    pub path: Option<&'a str>,
    /// The peer principal without `spiffe://`, when present and non-empty.
    pub principal: Option<&'a str>,
    /// Namespace and service account of the peer.
    pub ns_sa: Option<(&'a str, &'a str)>,
    pub tcp: bool,
}

impl<'a> Ctx<'a> {
    pub fn new(req: &'a Request, path: Option<&'a str>) -> Self {
        let principal = req
            .source_principal
            .as_deref()
            .map(spiffe::strip_scheme)
            .filter(|p| !p.is_empty());
        Self {
            req,
            path,
            principal,
            ns_sa: principal.and_then(spiffe::ns_and_sa),
            tcp: req.protocol == super::request::Protocol::Tcp,
        }
    }
}

fn opt_str(v: &Option<String>) -> Option<&str> {
    v.as_deref().filter(|s| !s.is_empty())
}

impl Cond {
    /// True when the field holds for the request (negation included).
    pub fn eval(&self, ctx: &Ctx<'_>) -> bool {
        self.hit(ctx) != self.negate
    }

    /// True when one of the values matches the attribute (before negation).
    fn hit(&self, ctx: &Ctx<'_>) -> bool {
        let req = ctx.req;
        let strs =
            |v: Option<&str>, m: &[StrMatch]| v.is_some_and(|v| m.iter().any(|m| m.matches(v)));
        // An IPv4 peer on a dual-stack socket arrives as `::ffff:a.b.c.d`;
        // an IPv4 block still covers it.
        let ips = |ip: Option<IpAddr>, nets: &[IpNet]| {
            ip.is_some_and(|ip| {
                let canonical = ip.to_canonical();
                nets.iter()
                    .any(|n| n.contains(&ip) || n.contains(&canonical))
            })
        };
        match (&self.attr, &self.values) {
            (Attr::Principal, Values::Str(m)) => strs(ctx.principal, m),
            (Attr::Principal, Values::ServiceAccount(list)) => ctx
                .ns_sa
                .is_some_and(|(ns, sa)| list.iter().any(|(n, s)| n == ns && s == sa)),
            (Attr::Namespace, Values::Str(m)) => strs(ctx.ns_sa.map(|(ns, _)| ns), m),
            (Attr::RequestPrincipal, Values::Str(m)) => strs(opt_str(&req.request_principal), m),
            (Attr::SourceIp, Values::Ip(n)) => ips(req.source_ip, n),
            (Attr::RemoteIp, Values::Ip(n)) => ips(req.effective_remote_ip(), n),
            (Attr::DestinationIp, Values::Ip(n)) => ips(req.destination_ip, n),
            (Attr::Port, Values::Port(p)) => p.contains(&req.port),
            (Attr::Host, Values::Host(m)) => {
                !req.host.is_empty() && m.iter().any(|m| m.matches_ignore_case(&req.host))
            }
            (Attr::Method, Values::Str(m)) => strs(Some(req.method.as_str()), m),
            (Attr::Path, Values::Path(m)) => {
                ctx.path.is_some_and(|p| m.iter().any(|m| m.matches(p)))
            }
            (Attr::Header(name), Values::Str(m)) => req
                .header(name)
                .is_some_and(|v| m.iter().any(|m| m.matches(&v))),
            (Attr::Claim(path), Values::Str(m)) => match req.claim(path) {
                Some(serde_json::Value::String(s)) => m.iter().any(|m| m.matches(s)),
                Some(serde_json::Value::Array(items)) => items
                    .iter()
                    .filter_map(|i| i.as_str())
                    .any(|s| m.iter().any(|m| m.matches(s))),
                _ => false,
            },
            (Attr::Audiences, Values::Str(m)) => {
                req.audiences.iter().any(|a| m.iter().any(|m| m.matches(a)))
            }
            (Attr::Presenter, Values::Str(m)) => strs(opt_str(&req.presenter), m),
            (Attr::Sni, Values::Str(m)) => strs(opt_str(&req.sni), m),
            (Attr::FilterMetadata, _) => false,
            // Combinations the compiler never builds.
            _ => false,
        }
    }

    /// Describes the attribute's value in this request, for reasons.
    pub fn describe_value(&self, ctx: &Ctx<'_>) -> String {
        let req = ctx.req;
        let show = |v: Option<String>, what: &str| v.unwrap_or_else(|| format!("(no {what})"));
        match &self.attr {
            Attr::Principal => show(
                ctx.principal.map(|p| format!("principal {p}")),
                "principal: plaintext",
            ),
            Attr::Namespace => show(
                ctx.ns_sa.map(|(ns, _)| format!("source namespace {ns}")),
                "source namespace: plaintext or not an Istio identity",
            ),
            Attr::RequestPrincipal => show(
                opt_str(&req.request_principal).map(|p| format!("request principal {p}")),
                "request principal: no validated JWT",
            ),
            Attr::SourceIp => show(req.source_ip.map(|i| format!("source ip {i}")), "source ip"),
            Attr::RemoteIp => show(
                req.effective_remote_ip().map(|i| format!("remote ip {i}")),
                "remote ip",
            ),
            Attr::DestinationIp => show(
                req.destination_ip.map(|i| format!("destination ip {i}")),
                "destination ip",
            ),
            Attr::Port => format!("port {}", req.port),
            Attr::Host => format!("host {:?}", req.host),
            Attr::Method => format!("method {}", req.method),
            Attr::Path => show(ctx.path.map(|p| format!("path {p}")), "path"),
            Attr::Header(n) => show(
                req.header(n).map(|v| format!("header {n}: {v}")),
                &format!("header {n}"),
            ),
            Attr::Claim(p) => show(
                req.claim(p).map(|v| format!("claim {}={v}", p.join("."))),
                &format!("claim {}", p.join(".")),
            ),
            Attr::Audiences => format!("audiences {:?}", req.audiences),
            Attr::Presenter => show(
                opt_str(&req.presenter).map(|p| format!("presenter {p}")),
                "presenter",
            ),
            Attr::Sni => show(opt_str(&req.sni).map(|s| format!("sni {s}")), "sni"),
            Attr::FilterMetadata => "(no filter metadata in this mesh)".to_string(),
        }
    }

    /// `value matched paths["/a*"]` or `value matched none of notPaths[...]`.
    pub fn explain(&self, ctx: &Ctx<'_>) -> String {
        if ctx.tcp && self.http_only {
            return format!("{} ignored on a TCP port", self.field);
        }
        let value = self.describe_value(ctx);
        if self.negate {
            format!("{value} matched none of {}{:?}", self.field, self.raw)
        } else {
            format!("{value} matched {}{:?}", self.field, self.raw)
        }
    }
}

/// The AND of fields of one `from` source, one `to` operation, or all `when`s.
#[derive(Debug, Clone, Default)]
pub(crate) struct Clause {
    pub conds: Vec<Cond>,
}

impl Clause {
    /// On TCP, HTTP-only fields are skipped (the caller has already refused
    /// ALLOW rules that contain any).
    pub fn eval(&self, ctx: &Ctx<'_>) -> bool {
        self.conds
            .iter()
            .all(|c| (ctx.tcp && c.http_only) || c.eval(ctx))
    }

    pub fn explain(&self, ctx: &Ctx<'_>) -> Vec<String> {
        self.conds.iter().map(|c| c.explain(ctx)).collect()
    }
}

/// A compiled rule.
#[derive(Debug, Clone, Default)]
pub(crate) struct CompiledRule {
    /// ORed; empty means any source.
    pub from: Vec<Clause>,
    /// ORed; empty means any operation.
    pub to: Vec<Clause>,
    /// ANDed conditions.
    pub when: Clause,
    /// The rule uses an HTTP-only field somewhere.
    pub has_http_only: bool,
    /// Why the rule can never match (an invalid value in an ALLOW rule).
    pub never: Option<String>,
}

impl CompiledRule {
    pub fn matches(&self, ctx: &Ctx<'_>, action: Action) -> bool {
        if self.never.is_some() {
            return false;
        }
        if ctx.tcp && self.has_http_only && action == Action::Allow {
            return false;
        }
        (self.from.is_empty() || self.from.iter().any(|c| c.eval(ctx)))
            && (self.to.is_empty() || self.to.iter().any(|c| c.eval(ctx)))
            && self.when.eval(ctx)
    }

    /// Why a matching rule matched, e.g. `path /admin matched paths["/admin*"]`.
    pub fn explain(&self, ctx: &Ctx<'_>) -> String {
        let mut parts = Vec::new();
        if let Some(c) = self.from.iter().find(|c| c.eval(ctx)) {
            parts.extend(c.explain(ctx));
        }
        if let Some(c) = self.to.iter().find(|c| c.eval(ctx)) {
            parts.extend(c.explain(ctx));
        }
        parts.extend(self.when.explain(ctx));
        if parts.is_empty() {
            "the rule is empty and matches every request".to_string()
        } else {
            parts.join(" and ")
        }
    }
}

/// A compiled AuthorizationPolicy.
#[derive(Debug, Clone)]
pub struct CompiledPolicy {
    /// `namespace/name`.
    pub name: String,
    /// The action.
    pub action: Action,
    /// The CUSTOM provider.
    pub provider: Option<String>,
    /// `istio.io/dry-run: "true"`: evaluated and reported, never enforced.
    pub dry_run: bool,
    /// Values that could not be used (normally caught by validation).
    pub warnings: Vec<String>,
    pub(crate) rules: Vec<CompiledRule>,
    // The spec it was compiled from, so a compiled model can be sent on
    // (xDS metadata) and recompiled to the same policy elsewhere.
    spec: Arc<AuthorizationPolicy>,
}

/// True when the resource carries `istio.io/dry-run` with a true value
/// (Go's `strconv.ParseBool` spellings).
pub fn is_dry_run(resource: &Resource) -> bool {
    resource
        .meta
        .annotations
        .get("istio.io/dry-run")
        .is_some_and(|v| matches!(v.as_str(), "true" | "True" | "TRUE" | "t" | "T" | "1"))
}

impl CompiledPolicy {
    /// Compiles one policy resource. Returns `None` when the resource is not
    /// an AuthorizationPolicy.
    pub fn compile(resource: &Resource) -> Option<Self> {
        let policy = resource.authorization_policy()?;
        Some(Self::from_spec(
            &resource.meta.namespace,
            &resource.meta.name,
            policy,
            is_dry_run(resource),
        ))
    }

    /// Compiles a policy spec.
    pub fn from_spec(namespace: &str, name: &str, p: &AuthorizationPolicy, dry_run: bool) -> Self {
        let mut b = super::compile::Builder {
            action: p.action,
            policy_ns: namespace,
            warnings: Vec::new(),
            never: None,
        };
        let mut rules = Vec::with_capacity(p.rules.len());
        for (i, r) in p.rules.iter().enumerate() {
            b.never = None;
            let from: Vec<Clause> = r.from.iter().map(|f| b.source(i, &f.source)).collect();
            let to: Vec<Clause> = r.to.iter().map(|t| b.operation(i, &t.operation)).collect();
            let mut when = Vec::new();
            for c in &r.when {
                b.condition(i, c, &mut when);
            }
            let when = Clause { conds: when };
            let has_http_only = from
                .iter()
                .chain(to.iter())
                .chain(std::iter::once(&when))
                .any(|c| c.conds.iter().any(|c| c.http_only));
            rules.push(CompiledRule {
                from,
                to,
                when,
                has_http_only,
                never: b.never.take(),
            });
        }
        Self {
            name: format!("{namespace}/{name}"),
            action: p.action,
            provider: p.provider.as_ref().map(|p| p.name.clone()),
            dry_run,
            warnings: b.warnings,
            rules,
            spec: Arc::new(p.clone()),
        }
    }

    /// The spec this policy was compiled from; with [`CompiledPolicy::name`]
    /// and [`CompiledPolicy::dry_run`], what [`CompiledPolicy::from_spec`]
    /// needs to compile it again.
    pub fn spec(&self) -> &AuthorizationPolicy {
        &self.spec
    }

    /// Number of rules.
    pub fn rule_count(&self) -> usize {
        self.rules.len()
    }

    /// The index of the first rule that matches, if any.
    pub(crate) fn first_match(&self, ctx: &Ctx<'_>) -> Option<usize> {
        self.rules.iter().position(|r| r.matches(ctx, self.action))
    }

    /// Rules that can never match on TCP because they use HTTP-only fields
    /// (ALLOW policies only).
    pub(crate) fn tcp_skipped_rules(&self) -> usize {
        if self.action != Action::Allow {
            return 0;
        }
        self.rules.iter().filter(|r| r.has_http_only).count()
    }
}
