//! Compiles VirtualServices into the [`RouteTable`] one client uses for one
//! destination `host:port`.
//!
//! Selection of the VirtualService for a host: among the VirtualServices
//! that apply to the client (bound to `mesh` for a mesh client, or to one of
//! the client's gateways), one whose hosts contain the host exactly wins over
//! wildcards, a longer wildcard over a shorter one, and among equals the
//! first in `(namespace, name)` order (Istio uses the oldest by creation
//! time, which local files do not have). A VirtualService bound only to
//! gateways does not apply to mesh clients. `exportTo` and Sidecar
//! visibility are applied by the caller; [`exported_to`] helps.
//!
//! Inside the VirtualService, match blocks are kept only when they apply to
//! the client: `sourceLabels` all carried by the client, `sourceNamespace`
//! equal to the client's, `gateways` of the block (else of the
//! VirtualService) including the client, and `port` equal to the table's
//! port. A rule whose blocks are all dropped is dropped. Destination hosts
//! resolve against the VirtualService's namespace. With no VirtualService,
//! the table has one default route to the host itself with Istio's default
//! retry policy and no timeout.

use std::collections::HashMap;

use crate::config::common::selector_matches;
use crate::config::networking::virtual_service::{
    self as vs, HttpMatchRequest, HttpRoute, VirtualService, MESH_GATEWAY,
};
use crate::config::resource::Resource;
use crate::host::{fqdn, host_matches};
use crate::model::Client;
use crate::retry::{grpc_status_code, RetryPolicy};

use super::delegate::merge_delegate_rule;
use super::matcher::{HeaderMatcher, MatchBlock, StrMatcher, StringMatcher};
use super::model::*;

/// A VirtualService with the metadata compilation needs.
#[derive(Debug, Clone, Copy)]
pub struct VsRef<'a> {
    /// Namespace of the resource.
    pub namespace: &'a str,
    /// Name of the resource.
    pub name: &'a str,
    /// The spec.
    pub spec: &'a VirtualService,
}

impl<'a> VsRef<'a> {
    /// The VirtualService of a loaded resource, if it is one.
    pub fn from_resource(r: &'a Resource) -> Option<Self> {
        r.virtual_service().map(|spec| Self {
            namespace: &r.meta.namespace,
            name: &r.meta.name,
            spec,
        })
    }

    /// `namespace/name`.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

/// The VirtualServices among `resources`, sorted by `(namespace, name)`.
pub fn virtual_services<'a>(resources: impl IntoIterator<Item = &'a Resource>) -> Vec<VsRef<'a>> {
    let mut v: Vec<VsRef<'a>> = resources
        .into_iter()
        .filter_map(VsRef::from_resource)
        .collect();
    v.sort_by(|a, b| (a.namespace, a.name).cmp(&(b.namespace, b.name)));
    v
}

/// Istio's `exportTo` rule: visible to `namespace` when `exportTo` is empty
/// or lists `*`, `.` (for the VirtualService's own namespace) or `namespace`.
pub fn exported_to(vs: &VsRef<'_>, namespace: &str) -> bool {
    let e = &vs.spec.export_to;
    e.is_empty()
        || e.iter()
            .any(|x| x == "*" || x == namespace || (x == "." && vs.namespace == namespace))
}

/// True when a gateway list (empty meaning `mesh`) applies to the client.
/// Short gateway names resolve against `ns` (the VirtualService's namespace).
pub fn gateways_apply(gateways: &[String], ns: &str, client: &Client) -> bool {
    if gateways.is_empty() {
        return client.is_mesh();
    }
    gateways.iter().any(|g| {
        if g == MESH_GATEWAY {
            return client.is_mesh();
        }
        let full = if g.contains('/') {
            g.clone()
        } else {
            format!("{ns}/{g}")
        };
        client.gateways.iter().any(|c| *c == full || c == g)
    })
}

/// The VirtualService that routes `host` (fully qualified) for `client`.
pub fn select_virtual_service<'a>(
    vss: &[VsRef<'a>],
    client: &Client,
    host: &str,
    domain_suffix: &str,
) -> Option<VsRef<'a>> {
    VsIndex::new(vss, client, domain_suffix).select(host)
}

/// The VirtualServices that apply to one client, indexed by host: exact
/// hosts in a map, wildcards in a list. Built once per compile, so a model
/// with a thousand services finds each one's VirtualService by lookup
/// instead of scanning (and normalizing) every VirtualService's hosts.
#[derive(Debug)]
pub struct VsIndex<'a> {
    /// Lowercase exact host -> (its pattern length, the VirtualService).
    exact: HashMap<String, Vec<VsRef<'a>>>,
    /// Wildcard patterns (lowercase, `*` or `*.suffix`).
    wildcards: Vec<(String, VsRef<'a>)>,
}

impl<'a> VsIndex<'a> {
    /// Indexes the VirtualServices of `vss` that apply to `client`
    /// (delegates and those bound to other gateways left out).
    pub fn new(vss: &[VsRef<'a>], client: &Client, domain_suffix: &str) -> Self {
        let mut exact: HashMap<String, Vec<VsRef<'a>>> = HashMap::new();
        let mut wildcards = Vec::new();
        for v in vss {
            if v.spec.is_delegate() || !gateways_apply(&v.spec.gateways, v.namespace, client) {
                continue;
            }
            for h in &v.spec.hosts {
                let pattern = fqdn(h, v.namespace, domain_suffix);
                if pattern.starts_with('*') {
                    wildcards.push((pattern, *v));
                } else {
                    exact.entry(pattern).or_default().push(*v);
                }
            }
        }
        Self { exact, wildcards }
    }

    /// The VirtualService that routes `host` (fully qualified): an exact
    /// host beats a wildcard, a longer wildcard a shorter one, and among
    /// equals the first by namespace and name.
    pub fn select(&self, host: &str) -> Option<VsRef<'a>> {
        let lower = host.to_ascii_lowercase();
        let exact = self
            .exact
            .get(&lower)
            .into_iter()
            .flatten()
            .map(|v| (2u8, lower.len(), *v));
        let wild = self
            .wildcards
            .iter()
            .filter(|(p, _)| host_matches(p, host))
            .map(|(p, v)| (1u8, p.len(), *v));
        let mut best: Option<(u8, usize, VsRef<'a>)> = None;
        for (rank, len, v) in exact.chain(wild) {
            let better = match &best {
                None => true,
                Some((r, l, b)) => {
                    (rank, len) > (*r, *l)
                        || ((rank, len) == (*r, *l)
                            && (v.namespace, v.name) < (b.namespace, b.name))
                }
            };
            if better {
                best = Some((rank, len, v));
            }
        }
        best.map(|(_, _, v)| v)
    }
}

/// Compiles the route table `client` uses for `host` (short names resolve
/// against the client's namespace) and `port`.
pub fn compile_route_table(
    vss: &[VsRef<'_>],
    client: &Client,
    host: &str,
    port: Option<u16>,
    domain_suffix: &str,
) -> RouteTable {
    let index = VsIndex::new(vss, client, domain_suffix);
    compile_route_table_in(&index, vss, client, host, port, domain_suffix)
}

/// [`compile_route_table`] with the client's [`VsIndex`] built already
/// (by whoever compiles many hosts for one client).
pub fn compile_route_table_in(
    index: &VsIndex<'_>,
    vss: &[VsRef<'_>],
    client: &Client,
    host: &str,
    port: Option<u16>,
    domain_suffix: &str,
) -> RouteTable {
    let host = fqdn(host, &client.namespace, domain_suffix);
    let Some(v) = index.select(&host) else {
        return RouteTable {
            routes: vec![default_route(&host, port)],
            host,
            port,
            virtual_service: None,
            warnings: Vec::new(),
        };
    };
    let mut warnings = Vec::new();
    let routes = compile_http_routes(v, vss, client, port, domain_suffix, &mut warnings);
    RouteTable {
        host,
        port,
        virtual_service: Some(v.key()),
        routes,
        warnings,
    }
}

/// The route used when no VirtualService applies: everything to the host
/// itself, Istio's default retries, no timeout.
pub fn default_route(host: &str, port: Option<u16>) -> Route {
    Route {
        virtual_service: None,
        rule_index: None,
        delegate: None,
        name: None,
        matches: Vec::new(),
        action: Action::Forward(WeightedDestinations::new(vec![Destination {
            host: host.to_string(),
            subset: None,
            port,
            weight: 100,
            request_headers: HeaderOps::default(),
            response_headers: HeaderOps::default(),
        }])),
        rewrite: None,
        request_headers: HeaderOps::default(),
        response_headers: HeaderOps::default(),
        mirrors: Vec::new(),
        retries: RetryPolicy::istio_default(),
        timeout: None,
        fault: None,
        cors: None,
    }
}

/// Compiles the http rules of one VirtualService for a client and port,
/// resolving delegates among `all`.
pub fn compile_http_routes(
    v: VsRef<'_>,
    all: &[VsRef<'_>],
    client: &Client,
    port: Option<u16>,
    domain_suffix: &str,
    warnings: &mut Vec<String>,
) -> Vec<Route> {
    http_routes(v, all, client, port, port, domain_suffix, warnings)
}

/// [`compile_http_routes`] for a gateway listener on `listener_port`: match
/// blocks with a `port` must name the listener's, and a destination without
/// a port keeps none (the caller picks the service's port; the listener's
/// port says nothing about the destination's).
pub fn compile_gateway_http_routes(
    v: VsRef<'_>,
    all: &[VsRef<'_>],
    client: &Client,
    listener_port: u16,
    domain_suffix: &str,
    warnings: &mut Vec<String>,
) -> Vec<Route> {
    http_routes(
        v,
        all,
        client,
        Some(listener_port),
        None,
        domain_suffix,
        warnings,
    )
}

#[allow(clippy::too_many_arguments)]
fn http_routes(
    v: VsRef<'_>,
    all: &[VsRef<'_>],
    client: &Client,
    port: Option<u16>,
    dest_port: Option<u16>,
    domain_suffix: &str,
    warnings: &mut Vec<String>,
) -> Vec<Route> {
    let mut out = Vec::with_capacity(v.spec.http.len());
    for (i, rule) in v.spec.http.iter().enumerate() {
        if let Some(d) = &rule.delegate {
            let ns = d.namespace.as_deref().unwrap_or(v.namespace);
            let Some(dv) = all
                .iter()
                .find(|x| x.namespace == ns && x.name == d.name && x.spec.is_delegate())
            else {
                warnings.push(format!(
                    "{}: http[{i}] delegates to {ns}/{} which does not exist or has hosts; the rule is skipped",
                    v.key(),
                    d.name
                ));
                continue;
            };
            for (j, drule) in dv.spec.http.iter().enumerate() {
                if drule.delegate.is_some() {
                    warnings.push(format!(
                        "{}: http[{j}] delegates again; nested delegation is not supported, the rule is skipped",
                        dv.key()
                    ));
                    continue;
                }
                let Some(merged) = merge_delegate_rule(rule, drule) else {
                    warnings.push(format!(
                        "{}: http[{j}] matches conflict with {} http[{i}]; the rule is skipped",
                        dv.key(),
                        v.key()
                    ));
                    continue;
                };
                // Gateways and sources come from the root's VirtualService.
                if let Some(mut r) = compile_rule(
                    &merged,
                    v,
                    dv.namespace,
                    i,
                    client,
                    (port, dest_port),
                    domain_suffix,
                    warnings,
                ) {
                    r.delegate = Some(DelegateOrigin {
                        virtual_service: dv.key(),
                        rule_index: j,
                    });
                    out.push(r);
                }
            }
            continue;
        }
        if let Some(r) = compile_rule(
            rule,
            v,
            v.namespace,
            i,
            client,
            (port, dest_port),
            domain_suffix,
            warnings,
        ) {
            out.push(r);
        }
    }
    out
}

/// True when a match block applies to the client and port (source
/// conditions are decided here, not per request).
pub fn block_applies(
    m: &HttpMatchRequest,
    vs_gateways: &[String],
    vs_ns: &str,
    client: &Client,
    port: Option<u16>,
) -> bool {
    let gateways = if m.gateways.is_empty() {
        vs_gateways
    } else {
        &m.gateways
    };
    gateways_apply(gateways, vs_ns, client)
        && selector_matches(&m.source_labels, &client.labels)
        && m.source_namespace
            .as_ref()
            .is_none_or(|ns| *ns == client.namespace)
        && match (m.port, port) {
            (Some(want), Some(p)) => want == u32::from(p),
            _ => true,
        }
}

#[allow(clippy::too_many_arguments)]
fn compile_rule(
    rule: &HttpRoute,
    v: VsRef<'_>,
    dest_ns: &str,
    index: usize,
    client: &Client,
    (port, default_port): (Option<u16>, Option<u16>),
    suffix: &str,
    warnings: &mut Vec<String>,
) -> Option<Route> {
    let mut matches = Vec::with_capacity(rule.matches.len());
    for (j, m) in rule.matches.iter().enumerate() {
        if !block_applies(m, &v.spec.gateways, v.namespace, client, port) {
            continue;
        }
        match compile_block(m) {
            Ok(b) => matches.push(b),
            Err(e) => warnings.push(format!(
                "{}: http[{index}].match[{j}] has an invalid regex ({e}); the block is skipped",
                v.key()
            )),
        }
    }
    if !rule.matches.is_empty() && matches.is_empty() {
        return None;
    }
    let action = if let Some(r) = &rule.redirect {
        Action::Redirect(Redirect {
            uri: r.uri.clone(),
            authority: r.authority.clone(),
            port: r.port.and_then(|p| u16::try_from(p).ok()),
            derive_port: r.derive_port,
            scheme: r.scheme.clone(),
            code: r
                .redirect_code
                .and_then(|c| u16::try_from(c).ok())
                .unwrap_or(301),
        })
    } else if let Some(d) = &rule.direct_response {
        Action::DirectResponse(DirectResponse {
            status: u16::try_from(d.status).unwrap_or(500),
            body: d.body.clone(),
        })
    } else {
        let lone = rule.route.len() == 1;
        let dests = rule
            .route
            .iter()
            .map(|d| Destination {
                host: fqdn(&d.destination.host, dest_ns, suffix),
                subset: d.destination.subset.clone(),
                port: dest_port(&d.destination, default_port),
                weight: if lone {
                    100
                } else {
                    d.weight.max(0).unsigned_abs()
                },
                request_headers: header_ops(d.headers.as_ref().and_then(|h| h.request.as_ref())),
                response_headers: header_ops(d.headers.as_ref().and_then(|h| h.response.as_ref())),
            })
            .collect();
        Action::Forward(WeightedDestinations::new(dests))
    };
    let rewrite = match &rule.rewrite {
        None => None,
        Some(rw) => {
            let uri_regex = match &rw.uri_regex_rewrite {
                None => None,
                Some(rr) => match RegexRewrite::new(&rr.pattern, &rr.rewrite) {
                    Ok(r) => Some(r),
                    Err(e) => {
                        warnings.push(format!(
                            "{}: http[{index}].rewrite.uriRegexRewrite has an invalid regex ({e}); ignored",
                            v.key()
                        ));
                        None
                    }
                },
            };
            Some(Rewrite {
                uri: rw.uri.clone(),
                authority: rw.authority.clone(),
                uri_regex,
            })
        }
    };
    let mut mirrors = Vec::new();
    if let Some(m) = &rule.mirror {
        let percentage = rule
            .mirror_percentage
            .map(|p| p.value)
            .or(rule.mirror_percent.map(f64::from))
            .unwrap_or(100.0);
        mirrors.push(mirror(m, percentage, dest_ns, default_port, suffix));
    }
    for m in &rule.mirrors {
        let percentage = m.percentage.map_or(100.0, |p| p.value);
        mirrors.push(mirror(
            &m.destination,
            percentage,
            dest_ns,
            default_port,
            suffix,
        ));
    }
    Some(Route {
        virtual_service: Some(v.key()),
        rule_index: Some(index),
        delegate: None,
        name: rule.name.clone(),
        matches,
        action,
        rewrite,
        request_headers: header_ops(rule.headers.as_ref().and_then(|h| h.request.as_ref())),
        response_headers: header_ops(rule.headers.as_ref().and_then(|h| h.response.as_ref())),
        mirrors,
        retries: RetryPolicy::from_config(rule.retries.as_ref()),
        timeout: rule.timeout,
        fault: rule.fault.as_ref().map(fault),
        cors: rule.cors_policy.clone(),
    })
}

/// The destination's port, else the port the request was for (Istio also
/// uses the service's only port; the registry-aware caller may refine it).
fn dest_port(d: &vs::Destination, port: Option<u16>) -> Option<u16> {
    d.port
        .and_then(|p| u16::try_from(p.number).ok())
        .filter(|p| *p != 0)
        .or(port)
}

fn mirror(
    d: &vs::Destination,
    percentage: f64,
    ns: &str,
    port: Option<u16>,
    suffix: &str,
) -> Mirror {
    Mirror {
        host: fqdn(&d.host, ns, suffix),
        subset: d.subset.clone(),
        port: dest_port(d, port),
        percentage,
    }
}

fn fault(f: &vs::HttpFaultInjection) -> Fault {
    Fault {
        delay: f.delay.as_ref().and_then(|d| {
            d.fixed_delay.map(|delay| DelayFault {
                delay,
                percentage: d
                    .percentage
                    .map(|p| p.value)
                    .or(d.percent.map(f64::from))
                    .unwrap_or(0.0),
            })
        }),
        abort: f.abort.as_ref().and_then(|a| {
            let http_status = a.http_status.and_then(|s| u16::try_from(s).ok());
            let grpc_status = a.grpc_status.as_deref().and_then(grpc_status_code);
            (http_status.is_some() || grpc_status.is_some()).then(|| AbortFault {
                http_status,
                grpc_status,
                percentage: a.percentage.map_or(0.0, |p| p.value),
            })
        }),
    }
}

fn header_ops(ops: Option<&vs::HeaderOperations>) -> HeaderOps {
    let Some(ops) = ops else {
        return HeaderOps::default();
    };
    HeaderOps {
        set: ops
            .set
            .iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
            .collect(),
        add: ops
            .add
            .iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
            .collect(),
        remove: ops.remove.iter().map(|k| k.to_ascii_lowercase()).collect(),
    }
}

/// Compiles one match block's request conditions (source conditions are
/// handled by [`block_applies`]).
pub fn compile_block(m: &HttpMatchRequest) -> Result<MatchBlock, regex::Error> {
    let compile =
        |s: &crate::config::common::StringMatch| StrMatcher::compile(s).map(StringMatcher::new);
    let opt = |s: &Option<crate::config::common::StringMatch>| s.as_ref().map(compile).transpose();
    let mut headers = Vec::with_capacity(m.headers.len() + m.without_headers.len());
    for (name, sm) in &m.headers {
        headers.push(HeaderMatcher::new(name, compile(sm)?));
    }
    for (name, sm) in &m.without_headers {
        // `*` is not a regex here: istiod reads it as "present".
        let value = if sm.regex.as_deref() == Some("*") {
            StrMatcher::Present.into()
        } else {
            compile(sm)?
        };
        headers.push(HeaderMatcher::without(name, value));
    }
    let mut query_params = Vec::with_capacity(m.query_params.len());
    for (k, sm) in &m.query_params {
        query_params.push((k.clone(), compile(sm)?));
    }
    Ok(MatchBlock {
        name: m.name.clone(),
        uri: m
            .uri
            .as_ref()
            .map(|u| {
                StrMatcher::compile(u).map(|matcher| StringMatcher {
                    matcher,
                    ignore_case: m.ignore_uri_case,
                })
            })
            .transpose()?,
        scheme: opt(&m.scheme)?,
        method: opt(&m.method)?,
        authority: opt(&m.authority)?,
        headers,
        query_params,
        port: m.port.and_then(|p| u16::try_from(p).ok()),
    })
}
