//! `meshctl x route`: which route a request takes and why, computed with the
//! same compiler and engine the SDK runs.

use serde::Serialize;

use crate::config::common::Duration;
use crate::model::Client;
use crate::retry::RetryPolicy;

use super::compile::{compile_route_table, VsRef};
use super::matcher::RequestInfo;
use super::model::{Action, Fault, Mirror, Redirect, Rewrite};

/// A request to explain.
#[derive(Debug, Clone, Default)]
pub struct ExplainRequest {
    /// Destination host, short (resolved against the client's namespace) or
    /// fully qualified.
    pub host: String,
    /// Destination port.
    pub port: Option<u16>,
    /// Method; `GET` when empty.
    pub method: String,
    /// Path with query; `/` when empty.
    pub path: String,
    /// Request headers.
    pub headers: Vec<(String, String)>,
}

/// The answer, printed as JSON by `meshctl x route`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RouteExplanation {
    /// The VirtualService that routes the host (`ns/name`), or null.
    pub virtual_service: Option<String>,
    /// Index of the http rule that matched, or null.
    pub route_index: Option<usize>,
    /// Name of that rule, or null.
    pub route_name: Option<String>,
    /// Where the request goes: zero weights omitted, a lone destination has
    /// weight 100.
    pub destinations: Vec<ExplainedDestination>,
    /// The route's rewrite, or null.
    pub rewrite: Option<Rewrite>,
    /// The route's redirect, or null.
    pub redirect: Option<Redirect>,
    /// The route's timeout, or null (no timeout).
    pub timeout: Option<Duration>,
    /// The effective retry policy (Istio's default when the rule has none,
    /// marked `"origin": "default"`), or null when retries are disabled.
    pub retries: Option<RetryPolicy>,
    /// The route's fault injection, or null.
    pub fault: Option<Fault>,
    /// The route's mirrors, or null.
    pub mirror: Option<Vec<Mirror>>,
    /// Why nothing matched, or what answers instead of a destination.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// One destination in an explanation.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ExplainedDestination {
    /// Fully qualified host.
    pub host: String,
    /// Subset (omitted when none).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subset: Option<String>,
    /// Port, or null.
    pub port: Option<u16>,
    /// Weight.
    pub weight: u32,
}

/// Explains how `client` routes `req` given the visible VirtualServices.
pub fn explain(
    vss: &[VsRef<'_>],
    client: &Client,
    req: &ExplainRequest,
    domain_suffix: &str,
) -> RouteExplanation {
    let table = compile_route_table(vss, client, &req.host, req.port, domain_suffix);
    let method = if req.method.is_empty() {
        "GET"
    } else {
        &req.method
    };
    let path = if req.path.is_empty() { "/" } else { &req.path };
    let authority = match req.port {
        Some(p) => format!("{}:{p}", req.host),
        None => req.host.clone(),
    };
    let info = RequestInfo {
        method,
        path,
        authority: &authority,
        scheme: "http",
        port: req.port,
        headers: &req.headers,
    };
    let Some(route) = table.route(&info) else {
        let vs = table.virtual_service.clone().unwrap_or_default();
        let mut reason = format!(
            "no http rule of {vs} matches {method} {path} (checked {} rule(s) that apply to this client); the request would fail with 404 (NR)",
            table.routes.len()
        );
        for w in &table.warnings {
            reason.push_str("; ");
            reason.push_str(w);
        }
        return RouteExplanation {
            virtual_service: table.virtual_service,
            route_index: None,
            route_name: None,
            destinations: Vec::new(),
            rewrite: None,
            redirect: None,
            timeout: None,
            retries: None,
            fault: None,
            mirror: None,
            reason: Some(reason),
        };
    };
    let destinations = route
        .destinations()
        .iter()
        .map(|d| ExplainedDestination {
            host: d.host.clone(),
            subset: d.subset.clone(),
            port: d.port,
            weight: d.weight,
        })
        .collect::<Vec<_>>();
    let reason = match &route.action {
        Action::DirectResponse(d) => Some(format!(
            "the route answers directly with status {} (directResponse); nothing is forwarded",
            d.status
        )),
        Action::Redirect(r) => Some(format!(
            "the route answers with a {} redirect; nothing is forwarded",
            r.code
        )),
        Action::Forward(w) if w.destinations.is_empty() => Some(
            "the route has no destination with a positive weight; the request would fail with 503"
                .to_string(),
        ),
        Action::Forward(_) => None,
    };
    RouteExplanation {
        virtual_service: route.virtual_service.clone(),
        route_index: route.rule_index,
        route_name: route.name.clone(),
        destinations,
        rewrite: route.rewrite.clone(),
        redirect: match &route.action {
            Action::Redirect(r) => Some(r.clone()),
            _ => None,
        },
        timeout: route.timeout,
        retries: route.retries.enabled().then(|| route.retries.clone()),
        fault: route.fault.clone(),
        mirror: (!route.mirrors.is_empty()).then(|| route.mirrors.clone()),
        reason,
    }
}
