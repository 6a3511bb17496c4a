//! RouteConfiguration -> compiled route table.

use envoy_types::pb::envoy::config::core::v3::{
    data_source::Specifier, header_value_option::HeaderAppendAction, HeaderValueOption,
};
use envoy_types::pb::envoy::config::route::v3::{
    query_parameter_matcher::QueryParameterMatchSpecifier,
    redirect_action::{PathRewriteSpecifier, RedirectResponseCode, SchemeRewriteSpecifier},
    route::Action as EnvoyAction,
    route_action::{ClusterSpecifier, HostRewriteSpecifier},
    route_match::PathSpecifier,
    RetryPolicy as EnvoyRetryPolicy, Route as EnvoyRoute, RouteAction, RouteConfiguration,
};
use envoy_types::pb::envoy::extensions::filters::common::fault::v3::fault_delay::FaultDelaySecifier;
use envoy_types::pb::envoy::extensions::filters::http::fault::v3::{
    fault_abort::ErrorType, HttpFault,
};
use envoy_types::pb::envoy::r#type::matcher::v3::StringMatcher as EnvoyStringMatcher;
use envoy_types::pb::envoy::r#type::v3::{fractional_percent::DenominatorType, FractionalPercent};
use mesh_core::config::common::Duration;
use mesh_core::config::kube::Protocol;
use mesh_core::config::networking::virtual_service::HttpBody;
use mesh_core::retry::{RetryOn, RetryOrigin, RetryPolicy, DEFAULT_BACKOFF_BASE};
use mesh_core::route::matcher::{FullRegex, MatchBlock, StrMatcher, StringMatcher};
use mesh_core::route::model::{
    AbortFault, Action, DelayFault, DelegateOrigin, Destination, DirectResponse, Fault, HeaderOps,
    Mirror, Redirect, RegexRewrite, Rewrite, Route, RouteTable, WeightedDestinations,
};
use serde_json::{Map, Value};

use super::{mesh_md, parse_cluster_name, DecodeError};
use crate::encode::route::WHOLE_PATH;
use crate::encode::FAULT_FILTER;
use crate::types::{from_dur, unany};

type Md = Map<String, Value>;

fn s(md: &Md, k: &str) -> Option<String> {
    md.get(k).and_then(Value::as_str).map(str::to_string)
}

fn n(md: &Md, k: &str) -> Option<u64> {
    md.get(k).and_then(Value::as_u64)
}

/// Decodes a route configuration into (host, port, protocol, mesh_external,
/// table).
pub fn decode_route_configuration(
    rc: &RouteConfiguration,
) -> Result<(String, u16, Protocol, bool, RouteTable), DecodeError> {
    let vh = rc
        .virtual_hosts
        .first()
        .ok_or_else(|| DecodeError::Missing {
            resource: rc.name.clone(),
            field: "virtual_hosts",
        })?;
    let md = mesh_md(vh.metadata.as_ref()).unwrap_or_default();
    // `outbound|port||host` (istiod) or `host:port`.
    let (name_host, name_port) = match parse_cluster_name(&rc.name) {
        (h, Some(p), _) => (h, p),
        _ => rc
            .name
            .rsplit_once(':')
            .and_then(|(h, p)| Some((h.to_string(), p.parse::<u16>().ok()?)))
            .unwrap_or_else(|| (rc.name.clone(), 0)),
    };
    let host = s(&md, "host").unwrap_or(name_host);
    let port = n(&md, "port")
        .and_then(|p| u16::try_from(p).ok())
        .unwrap_or(name_port);
    let protocol = s(&md, "protocol").map_or(Protocol::Http, |p| Protocol::parse(&p));
    let mesh_external = md
        .get("mesh_external")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let mut routes: Vec<Route> = Vec::new();
    let mut last_index: Option<u64> = None;
    for er in &vh.routes {
        let rmd = mesh_md(er.metadata.as_ref()).unwrap_or_default();
        let index = n(&rmd, "route");
        let block = decode_match(er, &rmd, &rc.name)?;
        if index.is_some() && index == last_index {
            if let (Some(r), Some(b)) = (routes.last_mut(), block) {
                r.matches.push(b);
            }
            continue;
        }
        last_index = index;
        routes.push(decode_route(er, &rmd, block, port, &rc.name)?);
    }
    let table = RouteTable {
        host: s(&md, "table_host").unwrap_or_else(|| host.clone()),
        port: n(&md, "table_port").and_then(|p| u16::try_from(p).ok()),
        virtual_service: s(&md, "virtual_service"),
        routes,
        warnings: md
            .get("warnings")
            .and_then(|w| serde_json::from_value(w.clone()).ok())
            .unwrap_or_default(),
    };
    Ok((host, port, protocol, mesh_external, table))
}

fn regex(r: &str, res: &str) -> Result<FullRegex, DecodeError> {
    FullRegex::new(r).map_err(|e| DecodeError::invalid(res, format!("bad regex {r:?}: {e}")))
}

fn str_matcher(m: &EnvoyStringMatcher, res: &str) -> Result<StringMatcher, DecodeError> {
    crate::matcher::decode_string(m).map_err(|e| DecodeError::invalid(res, e))
}

fn decode_match(er: &EnvoyRoute, md: &Md, res: &str) -> Result<Option<MatchBlock>, DecodeError> {
    let Some(m) = &er.r#match else {
        return Ok(None);
    };
    let mut b = MatchBlock {
        name: s(md, "block_name"),
        port: n(md, "port").and_then(|p| u16::try_from(p).ok()),
        ..Default::default()
    };
    let ignore_case = m.case_sensitive.as_ref().is_some_and(|c| !c.value);
    let uri = match &m.path_specifier {
        Some(PathSpecifier::Prefix(p)) if p == "/" || p.is_empty() => None,
        Some(PathSpecifier::Prefix(p)) => Some(StrMatcher::Prefix(p.clone())),
        Some(PathSpecifier::Path(p)) => Some(StrMatcher::Exact(p.clone())),
        Some(PathSpecifier::SafeRegex(r)) => Some(StrMatcher::Regex(regex(&r.regex, res)?)),
        None => None,
        Some(_) => return Err(DecodeError::invalid(res, "unsupported path match")),
    };
    b.uri = uri.map(|matcher| StringMatcher {
        matcher,
        ignore_case,
    });
    for h in &m.headers {
        let h = crate::matcher::decode_header(h).map_err(|e| DecodeError::invalid(res, e))?;
        // Plain pseudo-header matches have fields of their own; anything
        // else (inverted, missing-as-empty) stays a header match, which
        // reads pseudo-headers the same way.
        let plain = !h.invert && !h.treat_missing_as_empty;
        match h.name.as_str() {
            ":method" if plain => b.method = Some(h.value),
            ":authority" if plain => b.authority = Some(h.value),
            ":scheme" if plain => b.scheme = Some(h.value),
            _ => b.headers.push(h),
        }
    }
    for q in &m.query_parameters {
        let v = match &q.query_parameter_match_specifier {
            Some(QueryParameterMatchSpecifier::StringMatch(sm)) => str_matcher(sm, res)?,
            Some(QueryParameterMatchSpecifier::PresentMatch(true)) | None => {
                StringMatcher::new(StrMatcher::Present)
            }
            Some(QueryParameterMatchSpecifier::PresentMatch(false)) => {
                return Err(DecodeError::invalid(
                    res,
                    format!(
                        "query parameter {}: present_match false is not supported",
                        q.name
                    ),
                ))
            }
        };
        b.query_params.push((q.name.clone(), v));
    }
    let has_match = md.get("has_match").and_then(Value::as_bool) == Some(true);
    Ok(if b.is_catch_all() && b.name.is_none() && !has_match {
        None
    } else {
        Some(b)
    })
}

/// A fraction as a 0-100 percentage.
pub fn percentage(f: Option<&FractionalPercent>) -> f64 {
    let Some(f) = f else { return 0.0 };
    let denom = match DenominatorType::try_from(f.denominator).unwrap_or(DenominatorType::Hundred) {
        DenominatorType::Hundred => 100.0,
        DenominatorType::TenThousand => 10_000.0,
        DenominatorType::Million => 1_000_000.0,
    };
    f64::from(f.numerator) * 100.0 / denom
}

fn header_ops(add: &[HeaderValueOption], remove: &[String]) -> HeaderOps {
    let mut ops = HeaderOps {
        remove: remove.to_vec(),
        ..Default::default()
    };
    for o in add {
        let Some(h) = &o.header else { continue };
        let kv = (h.key.clone(), h.value.clone());
        #[allow(deprecated)]
        let append = o.append.as_ref().map(|a| a.value);
        let overwrite = match append {
            Some(a) => !a,
            None => o.append_action == HeaderAppendAction::OverwriteIfExistsOrAdd as i32,
        };
        if overwrite {
            ops.set.push(kv);
        } else {
            ops.add.push(kv);
        }
    }
    ops
}

fn dest(cluster: &str, weight: u32, req: HeaderOps, resp: HeaderOps) -> Destination {
    let (host, port, subset) = parse_cluster_name(cluster);
    Destination {
        host,
        subset,
        port,
        weight,
        request_headers: req,
        response_headers: resp,
    }
}

fn decode_route(
    er: &EnvoyRoute,
    md: &Md,
    block: Option<MatchBlock>,
    port: u16,
    res: &str,
) -> Result<Route, DecodeError> {
    let _ = port;
    let mut r = Route {
        virtual_service: s(md, "virtual_service"),
        rule_index: n(md, "rule_index").and_then(|i| usize::try_from(i).ok()),
        delegate: md.get("delegate").and_then(|d| {
            Some(DelegateOrigin {
                virtual_service: d.get("virtual_service")?.as_str()?.to_string(),
                rule_index: usize::try_from(d.get("rule_index")?.as_u64()?).ok()?,
            })
        }),
        name: s(md, "name").or_else(|| (!er.name.is_empty()).then(|| er.name.clone())),
        matches: block.into_iter().collect(),
        action: Action::Forward(WeightedDestinations::new(Vec::new())),
        rewrite: None,
        request_headers: header_ops(&er.request_headers_to_add, &er.request_headers_to_remove),
        response_headers: header_ops(&er.response_headers_to_add, &er.response_headers_to_remove),
        mirrors: Vec::new(),
        retries: RetryPolicy::disabled(),
        timeout: None,
        fault: None,
        cors: md
            .get("cors")
            .and_then(|c| serde_json::from_value(c.clone()).ok()),
    };
    if let Some(a) = er.typed_per_filter_config.get(FAULT_FILTER) {
        let f: HttpFault = unany(a).ok_or_else(|| DecodeError::invalid(res, "bad fault config"))?;
        r.fault = Some(Fault {
            delay: f
                .delay
                .as_ref()
                .and_then(|d| match &d.fault_delay_secifier {
                    Some(FaultDelaySecifier::FixedDelay(t)) => Some(DelayFault {
                        delay: Duration(from_dur(t)),
                        percentage: percentage(d.percentage.as_ref()),
                    }),
                    _ => None,
                }),
            abort: f.abort.as_ref().map(|a| AbortFault {
                http_status: match a.error_type {
                    Some(ErrorType::HttpStatus(h)) => u16::try_from(h).ok(),
                    _ => None,
                },
                grpc_status: match a.error_type {
                    Some(ErrorType::GrpcStatus(g)) => Some(g),
                    _ => None,
                },
                percentage: percentage(a.percentage.as_ref()),
            }),
        });
    }
    match &er.action {
        Some(EnvoyAction::Route(ra)) => {
            decode_route_action(&mut r, ra, md, res)?;
        }
        Some(EnvoyAction::Redirect(rd)) => {
            let code = match RedirectResponseCode::try_from(rd.response_code) {
                Ok(RedirectResponseCode::Found) => 302,
                Ok(RedirectResponseCode::SeeOther) => 303,
                Ok(RedirectResponseCode::TemporaryRedirect) => 307,
                Ok(RedirectResponseCode::PermanentRedirect) => 308,
                _ => 301,
            };
            r.action = Action::Redirect(Redirect {
                uri: match &rd.path_rewrite_specifier {
                    Some(PathRewriteSpecifier::PathRedirect(p)) => Some(p.clone()),
                    Some(PathRewriteSpecifier::PrefixRewrite(p)) => Some(p.clone()),
                    _ => None,
                },
                authority: (!rd.host_redirect.is_empty()).then(|| rd.host_redirect.clone()),
                port: (rd.port_redirect != 0)
                    .then(|| u16::try_from(rd.port_redirect).ok())
                    .flatten(),
                derive_port: md
                    .get("derive_port")
                    .and_then(|d| serde_json::from_value(d.clone()).ok()),
                scheme: match &rd.scheme_rewrite_specifier {
                    Some(SchemeRewriteSpecifier::SchemeRedirect(s)) => Some(s.clone()),
                    Some(SchemeRewriteSpecifier::HttpsRedirect(true)) => Some("https".into()),
                    _ => None,
                },
                code,
            });
        }
        Some(EnvoyAction::DirectResponse(d)) => {
            r.action = Action::DirectResponse(DirectResponse {
                status: u16::try_from(d.status).unwrap_or(500),
                body: d.body.as_ref().and_then(|b| match &b.specifier {
                    Some(Specifier::InlineString(s)) => Some(HttpBody {
                        string: Some(s.clone()),
                        bytes: None,
                    }),
                    Some(Specifier::InlineBytes(b)) => Some(HttpBody {
                        string: None,
                        bytes: Some(String::from_utf8_lossy(b).into_owned()),
                    }),
                    _ => None,
                }),
            });
        }
        _ => {
            return Err(DecodeError::invalid(
                res,
                format!("route {:?} has no supported action", er.name),
            ))
        }
    }
    if md.get("retry_default").and_then(Value::as_bool) == Some(true) {
        if matches!(r.action, Action::Forward(_)) {
            r.retries.origin = RetryOrigin::Default;
        } else {
            // Redirects and direct responses carry no retry policy in Envoy;
            // the compiled route still holds Istio's default.
            r.retries = RetryPolicy::istio_default();
        }
    }
    Ok(r)
}

fn decode_route_action(
    r: &mut Route,
    ra: &RouteAction,
    md: &Md,
    res: &str,
) -> Result<(), DecodeError> {
    let _ = md;
    let dests = match &ra.cluster_specifier {
        Some(ClusterSpecifier::Cluster(c)) => {
            vec![dest(c, 100, HeaderOps::default(), HeaderOps::default())]
        }
        Some(ClusterSpecifier::WeightedClusters(wc)) => wc
            .clusters
            .iter()
            .map(|c| {
                dest(
                    &c.name,
                    c.weight.as_ref().map_or(0, |w| w.value),
                    header_ops(&c.request_headers_to_add, &c.request_headers_to_remove),
                    header_ops(&c.response_headers_to_add, &c.response_headers_to_remove),
                )
            })
            .collect(),
        _ => return Err(DecodeError::invalid(res, "route action without cluster")),
    };
    r.action = Action::Forward(WeightedDestinations::new(dests));
    r.timeout = ra
        .timeout
        .as_ref()
        .map(from_dur)
        .filter(|d| !d.is_zero())
        .map(Duration);
    r.retries = match &ra.retry_policy {
        Some(rp) => retry_policy(rp),
        None => RetryPolicy::disabled(),
    };
    let regex_match = r
        .matches
        .first()
        .and_then(|b| b.uri.as_ref())
        .is_some_and(|u| matches!(u.matcher, StrMatcher::Regex(_)));
    let mut rw = Rewrite {
        uri: (!ra.prefix_rewrite.is_empty()).then(|| ra.prefix_rewrite.clone()),
        authority: match &ra.host_rewrite_specifier {
            Some(HostRewriteSpecifier::HostRewriteLiteral(h)) => Some(h.clone()),
            _ => None,
        },
        uri_regex: None,
    };
    if let Some(rr) = &ra.regex_rewrite {
        let pattern = rr
            .pattern
            .as_ref()
            .map(|p| p.regex.as_str())
            .unwrap_or_default();
        if pattern == WHOLE_PATH && regex_match {
            rw.uri = Some(rr.substitution.clone());
        } else {
            rw.uri_regex = Some(
                RegexRewrite::new(pattern, &rr.substitution)
                    .map_err(|e| DecodeError::invalid(res, format!("bad regex rewrite: {e}")))?,
            );
        }
    }
    if rw.uri.is_some() || rw.authority.is_some() || rw.uri_regex.is_some() {
        r.rewrite = Some(rw);
    }
    r.mirrors = ra
        .request_mirror_policies
        .iter()
        .map(|m| {
            let (host, port, subset) = parse_cluster_name(&m.cluster);
            Mirror {
                host,
                subset,
                port,
                percentage: m
                    .runtime_fraction
                    .as_ref()
                    .map_or(100.0, |f| percentage(f.default_value.as_ref())),
            }
        })
        .collect();
    Ok(())
}

/// The compiled retry policy of an Envoy one.
pub fn retry_policy(rp: &EnvoyRetryPolicy) -> RetryPolicy {
    let retry_on = rp
        .retry_on
        .split(',')
        .filter_map(|s| RetryOn::from_name(s.trim()))
        .fold(RetryOn::NONE, |a, b| a | b);
    let base = rp
        .retry_back_off
        .as_ref()
        .and_then(|b| b.base_interval.as_ref())
        .map_or(DEFAULT_BACKOFF_BASE, from_dur);
    let max = rp
        .retry_back_off
        .as_ref()
        .and_then(|b| b.max_interval.as_ref())
        .map_or(base * 10, from_dur);
    RetryPolicy {
        attempts: rp.num_retries.as_ref().map_or(1, |n| n.value),
        retry_on,
        retriable_status_codes: rp
            .retriable_status_codes
            .iter()
            .filter_map(|c| u16::try_from(*c).ok())
            .collect(),
        per_try_timeout: rp.per_try_timeout.as_ref().map(|d| Duration(from_dur(d))),
        backoff_base: Duration(base),
        backoff_max: Duration(max),
        retry_ignore_previous_hosts: rp
            .retry_host_predicate
            .iter()
            .any(|p| p.name == "envoy.retry_host_predicates.previous_hosts"),
        retry_remote_localities: rp
            .retry_priority
            .as_ref()
            .is_some_and(|p| p.name == "envoy.retry_priorities.previous_priorities"),
        origin: RetryOrigin::Route,
    }
}
