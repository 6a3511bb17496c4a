//! RouteConfigurations (RDS): one per outbound `host:port`, one virtual
//! host, one Envoy route per match block of each compiled route (Envoy
//! routes have a single match; istiod expands the same way).

use envoy_types::pb::envoy::config::core::v3::{
    data_source::Specifier, header_value_option::HeaderAppendAction, DataSource, HeaderValue,
    HeaderValueOption, RuntimeFractionalPercent,
};
use envoy_types::pb::envoy::config::route::v3::{
    query_parameter_matcher::QueryParameterMatchSpecifier,
    redirect_action::{PathRewriteSpecifier, RedirectResponseCode, SchemeRewriteSpecifier},
    retry_policy::{
        retry_host_predicate, retry_priority, RetryBackOff, RetryHostPredicate, RetryPriority,
    },
    route::Action as EnvoyAction,
    route_action::{
        hash_policy::{self, PolicySpecifier},
        ClusterSpecifier, HashPolicy, HostRewriteSpecifier, MaxStreamDuration, RequestMirrorPolicy,
    },
    route_match::PathSpecifier,
    weighted_cluster::ClusterWeight,
    DirectResponseAction, QueryParameterMatcher, RedirectAction, RetryPolicy as EnvoyRetryPolicy,
    Route as EnvoyRoute, RouteAction, RouteConfiguration, RouteMatch, VirtualHost, WeightedCluster,
};
use envoy_types::pb::envoy::extensions::filters::common::fault::v3::{
    fault_delay::FaultDelaySecifier, FaultDelay,
};
use envoy_types::pb::envoy::extensions::filters::http::fault::v3::{
    fault_abort::ErrorType, FaultAbort, HttpFault,
};
use envoy_types::pb::envoy::extensions::retry::host::previous_hosts::v3::PreviousHostsPredicate;
use envoy_types::pb::envoy::extensions::retry::priority::previous_priorities::v3::PreviousPrioritiesConfig;
use envoy_types::pb::envoy::r#type::matcher::v3::{RegexMatchAndSubstitute, RegexMatcher};
use envoy_types::pb::envoy::r#type::v3::{fractional_percent::DenominatorType, FractionalPercent};
use mesh_core::config::kube::Protocol;
use mesh_core::model::{cluster_name, Model, OutboundService};
use mesh_core::retry::{RetryOrigin, RetryPolicy};
use mesh_core::route::matcher::{HeaderMatcher, MatchBlock, StrMatcher};

use crate::matcher::{encode_header, encode_string};
use mesh_core::route::model::{Action, Fault, HeaderOps, Mirror, Route};
use serde_json::{json, Map, Value};

use super::{mesh_metadata, FAULT_FILTER};
use crate::types::{any, dur, u32v};

/// The pattern a regex rewrite uses to replace the whole path (how a `uri`
/// rewrite is expressed when the match block matched the path by regex).
pub const WHOLE_PATH: &str = "^.*$";

/// The name istiod's gRPC generator gives the route configuration of a
/// service port: its default cluster's name, `outbound|port||host` (the
/// listener names it in `rds.route_config_name`).
pub fn route_config_name(host: &str, port: u16) -> String {
    cluster_name(host, port, None)
}

/// The route configuration of outbound service `name` (`host:port`), named
/// [`route_config_name`]; its virtual host is named `host:port`.
pub fn route_configuration(name: &str, svc: &OutboundService, model: &Model) -> RouteConfiguration {
    route_configuration_for(name, svc, model, false)
}

/// [`route_configuration`], for a proxyless gRPC client when
/// `proxyless_grpc` (see [`super::EncodeOptions::proxyless_grpc`]): gRPC
/// cannot follow a redirect or take a direct response, and grpc-js-xds
/// NACKs a whole RouteConfiguration holding one, so such a route is sent
/// as a route whose every call the fault filter aborts: the direct
/// response's status, or UNAVAILABLE for a redirect (what grpcio answers
/// istiod's "inappropriate action"). Calls it matches fail, as the route
/// means them to, instead of falling through to the next route.
pub fn route_configuration_for(
    name: &str,
    svc: &OutboundService,
    model: &Model,
    proxyless_grpc: bool,
) -> RouteConfiguration {
    let mut routes = Vec::new();
    let mut refusing = Vec::new();
    for (i, r) in svc.routes.routes.iter().enumerate() {
        let encoded = encode_route(i, r, svc, model);
        if proxyless_grpc && !matches!(r.action, Action::Forward(_)) {
            refusing.push(routes.len());
            routes.extend(encoded.into_iter().map(|er| refusing_route(er, r)));
        } else {
            routes.extend(encoded);
        }
    }
    // The aborted routes name a cluster the other routes already use (one
    // the client holds anyway; no call ever reaches it), else the
    // service's default cluster.
    let target = routes
        .iter()
        .find_map(|r| match &r.action {
            Some(EnvoyAction::Route(RouteAction {
                cluster_specifier: Some(ClusterSpecifier::Cluster(c)),
                ..
            })) => Some(c.clone()),
            Some(EnvoyAction::Route(RouteAction {
                cluster_specifier: Some(ClusterSpecifier::WeightedClusters(w)),
                ..
            })) => w.clusters.first().map(|c| c.name.clone()),
            _ => None,
        })
        .unwrap_or_else(|| cluster_name(&svc.host, svc.port, None));
    for i in refusing {
        if let Some(EnvoyAction::Route(ra)) = &mut routes[i].action {
            ra.cluster_specifier = Some(ClusterSpecifier::Cluster(target.clone()));
        }
    }
    RouteConfiguration {
        name: route_config_name(&svc.host, svc.port),
        virtual_hosts: vec![VirtualHost {
            name: name.to_string(),
            domains: domains(&svc.host, svc.port, model),
            routes,
            metadata: service_metadata(svc),
            ..Default::default()
        }],
        validate_clusters: Some(envoy_types::pb::google::protobuf::BoolValue { value: false }),
        ..Default::default()
    }
}

/// A redirect or direct-response route as one a stock gRPC client can
/// take: every call aborted (its cluster is set by the caller).
fn refusing_route(mut er: EnvoyRoute, r: &Route) -> EnvoyRoute {
    const UNAVAILABLE: u32 = 14;
    let error_type = match &r.action {
        Action::DirectResponse(d) => ErrorType::HttpStatus(u32::from(d.status)),
        _ => ErrorType::GrpcStatus(UNAVAILABLE),
    };
    er.action = Some(EnvoyAction::Route(RouteAction::default()));
    er.typed_per_filter_config.insert(
        FAULT_FILTER.to_string(),
        any(&HttpFault {
            abort: Some(FaultAbort {
                percentage: Some(percent(100.0)),
                error_type: Some(error_type),
                ..Default::default()
            }),
            ..Default::default()
        }),
    );
    er
}

/// What the virtual host's metadata says about the service and its table.
fn service_metadata(
    svc: &OutboundService,
) -> Option<envoy_types::pb::envoy::config::core::v3::Metadata> {
    let t = &svc.routes;
    let mut md = Map::new();
    md.insert("host".into(), json!(svc.host));
    md.insert("port".into(), json!(svc.port));
    md.insert("protocol".into(), json!(svc.protocol.as_str()));
    md.insert("mesh_external".into(), json!(svc.mesh_external));
    md.insert("table_host".into(), json!(t.host));
    if let Some(p) = t.port {
        md.insert("table_port".into(), json!(p));
    }
    if let Some(vs) = &t.virtual_service {
        md.insert("virtual_service".into(), json!(vs));
    }
    if !t.warnings.is_empty() {
        md.insert("warnings".into(), json!(t.warnings));
    }
    mesh_metadata(md)
}

/// The domains of the virtual host: the host and the short names this
/// model's client may dial it by ([`mesh_core::host::short_names`], the
/// names the SDK and `meshctl x route` resolve to it: `name.ns`,
/// `name.ns.svc`, and `name` when the client is in the same namespace),
/// each also with the port.
pub fn domains(host: &str, port: u16, model: &Model) -> Vec<String> {
    let shorts =
        mesh_core::host::short_names(host, &model.client.namespace, &model.mesh.domain_suffix);
    std::iter::once(host)
        .chain(shorts)
        .flat_map(|n| [format!("{n}:{port}"), n.to_string()])
        .collect()
}

fn encode_route(index: usize, r: &Route, svc: &OutboundService, model: &Model) -> Vec<EnvoyRoute> {
    let blocks: Vec<Option<&MatchBlock>> = if r.matches.is_empty() {
        vec![None]
    } else {
        r.matches.iter().map(Some).collect()
    };
    let grpc = matches!(svc.protocol, Protocol::Grpc | Protocol::GrpcWeb);
    blocks
        .into_iter()
        .enumerate()
        .map(|(bi, block)| {
            let mut md = Map::new();
            md.insert("route".into(), json!(index));
            md.insert("block".into(), json!(bi));
            if let Some(vs) = &r.virtual_service {
                md.insert("virtual_service".into(), json!(vs));
            }
            if let Some(i) = r.rule_index {
                md.insert("rule_index".into(), json!(i));
            }
            if let Some(d) = &r.delegate {
                md.insert("delegate".into(), json!(d));
            }
            if let Some(n) = &r.name {
                md.insert("name".into(), json!(n));
            }
            if let Some(b) = block {
                md.insert("has_match".into(), json!(true));
                if let Some(n) = &b.name {
                    md.insert("block_name".into(), json!(n));
                }
                if let Some(p) = b.port {
                    md.insert("port".into(), json!(p));
                }
            }
            if r.retries.origin == RetryOrigin::Default {
                md.insert("retry_default".into(), json!(true));
            }
            if let Some(c) = &r.cors {
                md.insert(
                    "cors".into(),
                    serde_json::to_value(c).unwrap_or(Value::Null),
                );
            }
            if let Action::Redirect(rd) = &r.action {
                if let Some(d) = &rd.derive_port {
                    md.insert(
                        "derive_port".into(),
                        serde_json::to_value(d).unwrap_or(Value::Null),
                    );
                }
            }
            let mut er = EnvoyRoute {
                name: r.name.clone().unwrap_or_default(),
                r#match: Some(encode_match(block)),
                metadata: mesh_metadata(md),
                request_headers_to_add: header_adds(&r.request_headers),
                request_headers_to_remove: r.request_headers.remove.clone(),
                response_headers_to_add: header_adds(&r.response_headers),
                response_headers_to_remove: r.response_headers.remove.clone(),
                ..Default::default()
            };
            if let Some(f) = &r.fault {
                er.typed_per_filter_config
                    .insert(FAULT_FILTER.to_string(), any(&encode_fault(f)));
            }
            er.action = Some(match &r.action {
                Action::Forward(_) => EnvoyAction::Route(route_action(r, block, svc, model, grpc)),
                Action::Redirect(rd) => EnvoyAction::Redirect(RedirectAction {
                    host_redirect: rd.authority.clone().unwrap_or_default(),
                    port_redirect: rd.port.map(u32::from).unwrap_or(0),
                    response_code: redirect_code(rd.code) as i32,
                    scheme_rewrite_specifier: rd
                        .scheme
                        .clone()
                        .map(SchemeRewriteSpecifier::SchemeRedirect),
                    path_rewrite_specifier: rd.uri.clone().map(PathRewriteSpecifier::PathRedirect),
                    ..Default::default()
                }),
                Action::DirectResponse(d) => EnvoyAction::DirectResponse(DirectResponseAction {
                    status: u32::from(d.status),
                    body: d.body.as_ref().and_then(|b| {
                        let spec = if let Some(s) = &b.string {
                            Specifier::InlineString(s.clone())
                        } else {
                            Specifier::InlineBytes(b.bytes.clone()?.into_bytes())
                        };
                        Some(DataSource {
                            specifier: Some(spec),
                            ..Default::default()
                        })
                    }),
                    ..Default::default()
                }),
            });
            er
        })
        .collect()
}

/// Envoy's redirect code enum for an HTTP status (301 for unknown codes).
pub fn redirect_code(code: u16) -> RedirectResponseCode {
    match code {
        302 => RedirectResponseCode::Found,
        303 => RedirectResponseCode::SeeOther,
        307 => RedirectResponseCode::TemporaryRedirect,
        308 => RedirectResponseCode::PermanentRedirect,
        _ => RedirectResponseCode::MovedPermanently,
    }
}

fn encode_match(block: Option<&MatchBlock>) -> RouteMatch {
    let mut m = RouteMatch {
        path_specifier: Some(PathSpecifier::Prefix("/".to_string())),
        ..Default::default()
    };
    let Some(b) = block else { return m };
    if let Some(u) = &b.uri {
        m.path_specifier = Some(match &u.matcher {
            StrMatcher::Exact(p) => PathSpecifier::Path(p.clone()),
            StrMatcher::Prefix(p) => PathSpecifier::Prefix(p.clone()),
            StrMatcher::Regex(r) => PathSpecifier::SafeRegex(regex(r.as_str())),
            // A compiled VirtualService never has these paths; a decoded
            // one keeps its meaning as a regex.
            StrMatcher::Suffix(p) => {
                PathSpecifier::SafeRegex(regex(&format!(".*{}", regex::escape(p))))
            }
            StrMatcher::Contains(p) => {
                PathSpecifier::SafeRegex(regex(&format!(".*{}.*", regex::escape(p))))
            }
            StrMatcher::Present => PathSpecifier::Prefix("/".to_string()),
        });
        if u.ignore_case {
            m.case_sensitive = Some(envoy_types::pb::google::protobuf::BoolValue { value: false });
        }
    }
    for (name, sm) in [
        (":method", &b.method),
        (":authority", &b.authority),
        (":scheme", &b.scheme),
    ] {
        if let Some(sm) = sm {
            m.headers
                .push(encode_header(&HeaderMatcher::new(name, sm.clone())));
        }
    }
    for h in &b.headers {
        m.headers.push(encode_header(h));
    }
    for (name, sm) in &b.query_params {
        m.query_parameters.push(QueryParameterMatcher {
            name: name.clone(),
            query_parameter_match_specifier: Some(match sm.matcher {
                StrMatcher::Present => QueryParameterMatchSpecifier::PresentMatch(true),
                _ => QueryParameterMatchSpecifier::StringMatch(encode_string(sm)),
            }),
        });
    }
    m
}

fn regex(r: &str) -> RegexMatcher {
    crate::matcher::regex_matcher(r)
}

fn header_adds(ops: &HeaderOps) -> Vec<HeaderValueOption> {
    let one = |(k, v): &(String, String), action: HeaderAppendAction| HeaderValueOption {
        header: Some(HeaderValue {
            key: k.clone(),
            value: v.clone(),
            ..Default::default()
        }),
        append_action: action as i32,
        ..Default::default()
    };
    ops.set
        .iter()
        .map(|kv| one(kv, HeaderAppendAction::OverwriteIfExistsOrAdd))
        .chain(
            ops.add
                .iter()
                .map(|kv| one(kv, HeaderAppendAction::AppendIfExistsOrAdd)),
        )
        .collect()
}

/// A 0-100 percentage as a per-million fraction (what istiod sends).
pub fn percent(p: f64) -> FractionalPercent {
    let n = (p.clamp(0.0, 100.0) * 10_000.0).round();
    FractionalPercent {
        // Clamped to 0..=1_000_000 above.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        numerator: n as u32,
        denominator: DenominatorType::Million as i32,
    }
}

// `total_weight` is deprecated in Envoy but gRPC clients of istiod's era
// still read it, and istiod still sends it.
#[allow(deprecated)]
fn route_action(
    r: &Route,
    block: Option<&MatchBlock>,
    svc: &OutboundService,
    model: &Model,
    grpc: bool,
) -> RouteAction {
    let dests = r.destinations();
    let name_of = |host: &str, port: Option<u16>, subset: Option<&str>| {
        cluster_name(host, port.unwrap_or(svc.port), subset)
    };
    let mut ra = RouteAction::default();
    let single = dests.len() == 1
        && dests[0].weight == 100
        && dests[0].request_headers.is_empty()
        && dests[0].response_headers.is_empty();
    ra.cluster_specifier = Some(if single {
        ClusterSpecifier::Cluster(name_of(
            &dests[0].host,
            dests[0].port,
            dests[0].subset.as_deref(),
        ))
    } else {
        ClusterSpecifier::WeightedClusters(WeightedCluster {
            clusters: dests
                .iter()
                .map(|d| ClusterWeight {
                    name: name_of(&d.host, d.port, d.subset.as_deref()),
                    weight: Some(u32v(d.weight)),
                    request_headers_to_add: header_adds(&d.request_headers),
                    request_headers_to_remove: d.request_headers.remove.clone(),
                    response_headers_to_add: header_adds(&d.response_headers),
                    response_headers_to_remove: d.response_headers.remove.clone(),
                    ..Default::default()
                })
                .collect(),
            total_weight: Some(u32v(
                u32::try_from(dests.iter().map(|d| u64::from(d.weight)).sum::<u64>())
                    .unwrap_or(u32::MAX),
            )),
            ..Default::default()
        })
    });
    // Timeouts: 0 disables Envoy's 15s default, as istiod sends for "none".
    let t = r.timeout.map(|t| t.get()).unwrap_or_default();
    ra.timeout = Some(dur(t));
    ra.max_stream_duration = Some(MaxStreamDuration {
        max_stream_duration: Some(dur(t)),
        grpc_timeout_header_max: grpc.then(|| dur(t)),
        ..Default::default()
    });
    if r.retries.attempts > 0 {
        ra.retry_policy = Some(retry_policy(&r.retries));
    }
    if let Some(rw) = &r.rewrite {
        if let Some(a) = &rw.authority {
            ra.host_rewrite_specifier = Some(HostRewriteSpecifier::HostRewriteLiteral(a.clone()));
        }
        if let Some(rr) = &rw.uri_regex {
            ra.regex_rewrite = Some(RegexMatchAndSubstitute {
                pattern: Some(regex(rr.pattern.0.as_str())),
                substitution: rr.substitution.clone(),
            });
        } else if let Some(u) = &rw.uri {
            let regex_match = block
                .and_then(|b| b.uri.as_ref())
                .is_some_and(|u| matches!(u.matcher, StrMatcher::Regex(_)));
            if regex_match {
                ra.regex_rewrite = Some(RegexMatchAndSubstitute {
                    pattern: Some(regex(WHOLE_PATH)),
                    substitution: u.clone(),
                });
            } else {
                ra.prefix_rewrite = u.clone();
            }
        }
    }
    ra.request_mirror_policies = r.mirrors.iter().map(|m| mirror(m, svc.port)).collect();
    ra.hash_policy = hash_policies(r, svc, model);
    ra
}

fn mirror(m: &Mirror, port: u16) -> RequestMirrorPolicy {
    RequestMirrorPolicy {
        cluster: cluster_name(&m.host, m.port.unwrap_or(port), m.subset.as_deref()),
        runtime_fraction: Some(RuntimeFractionalPercent {
            default_value: Some(percent(m.percentage)),
            runtime_key: String::new(),
        }),
        ..Default::default()
    }
}

/// Envoy's retry policy for a compiled one (istiod's `ConvertPolicy` shape).
pub fn retry_policy(p: &RetryPolicy) -> EnvoyRetryPolicy {
    let mut rp = EnvoyRetryPolicy {
        retry_on: p.retry_on.to_string(),
        num_retries: Some(u32v(p.attempts)),
        retriable_status_codes: p
            .retriable_status_codes
            .iter()
            .map(|c| u32::from(*c))
            .collect(),
        per_try_timeout: p.per_try_timeout.map(|d| dur(d.get())),
        retry_back_off: Some(RetryBackOff {
            base_interval: Some(dur(p.backoff_base.get())),
            max_interval: Some(dur(p.backoff_max.get())),
        }),
        ..Default::default()
    };
    if p.retry_ignore_previous_hosts {
        rp.retry_host_predicate = vec![RetryHostPredicate {
            name: "envoy.retry_host_predicates.previous_hosts".to_string(),
            config_type: Some(retry_host_predicate::ConfigType::TypedConfig(any(
                &PreviousHostsPredicate {},
            ))),
        }];
        rp.host_selection_retry_max_attempts = 5;
    }
    if p.retry_remote_localities {
        rp.retry_priority = Some(RetryPriority {
            name: "envoy.retry_priorities.previous_priorities".to_string(),
            config_type: Some(retry_priority::ConfigType::TypedConfig(any(
                &PreviousPrioritiesConfig {
                    update_frequency: 2,
                },
            ))),
        });
    }
    rp
}

/// The HTTP fault filter's per-route config.
pub fn encode_fault(f: &Fault) -> HttpFault {
    HttpFault {
        delay: f.delay.as_ref().map(|d| FaultDelay {
            percentage: Some(percent(d.percentage)),
            fault_delay_secifier: Some(FaultDelaySecifier::FixedDelay(dur(d.delay.get()))),
        }),
        abort: f.abort.as_ref().map(|a| FaultAbort {
            percentage: Some(percent(a.percentage)),
            error_type: match (a.http_status, a.grpc_status) {
                (_, Some(g)) => Some(ErrorType::GrpcStatus(g)),
                (Some(h), None) => Some(ErrorType::HttpStatus(u32::from(h))),
                (None, None) => None,
            },
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Hash policies from the consistent-hash settings of the first destination
/// cluster that has them (gRPC's ring hash reads these, gRFC A42).
fn hash_policies(r: &Route, svc: &OutboundService, model: &Model) -> Vec<HashPolicy> {
    let ch = r.destinations().iter().find_map(|d| {
        model
            .cluster_for(&d.host, d.port.unwrap_or(svc.port), d.subset.as_deref())
            .and_then(|c| c.policy.load_balancer.as_ref())
            .and_then(|lb| lb.consistent_hash.as_ref())
    });
    let Some(ch) = ch else { return Vec::new() };
    let spec = if let Some(h) = &ch.http_header_name {
        PolicySpecifier::Header(hash_policy::Header {
            header_name: h.clone(),
            regex_rewrite: None,
        })
    } else if let Some(c) = &ch.http_cookie {
        PolicySpecifier::Cookie(hash_policy::Cookie {
            name: c.name.clone(),
            ttl: c.ttl.map(|t| dur(t.get())),
            path: c.path.clone().unwrap_or_default(),
            ..Default::default()
        })
    } else if ch.use_source_ip == Some(true) {
        PolicySpecifier::ConnectionProperties(hash_policy::ConnectionProperties { source_ip: true })
    } else if let Some(q) = &ch.http_query_parameter_name {
        PolicySpecifier::QueryParameter(hash_policy::QueryParameter { name: q.clone() })
    } else {
        return Vec::new();
    };
    vec![HashPolicy {
        policy_specifier: Some(spec),
        terminal: false,
    }]
}
