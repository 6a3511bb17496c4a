//! Validation of [`VirtualService`] with Istio's rules (istiod's
//! `ValidateVirtualService`), every message saying what is wrong and how to
//! fix it. Paths are YAML paths (`spec.http[0].route[1].weight`).

use crate::config::common::{check_percent, StringMatch};
use crate::config::validate::{check_port, check_regex, each, field, Issues, Validate};
use crate::retry::{grpc_status_code, parse_retry_on};

use super::names::*;
use super::*;

/// Largest direct response body Istio accepts (1 MiB).
const MAX_DIRECT_RESPONSE_BODY: usize = 1024 * 1024;
/// Longest regex Istio accepts (Envoy's RE2 program size limit, approximated).
const MAX_REGEX_LEN: usize = 1024;
/// Methods a CORS policy may allow.
const CORS_METHODS: [&str; 9] = [
    "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "CONNECT", "OPTIONS", "TRACE",
];

impl Validate for VirtualService {
    fn validate(&self, path: &str, issues: &mut Issues) {
        let delegate = self.is_delegate();
        if delegate {
            if !self.gateways.is_empty() {
                issues.push(
                    field(path, "gateways"),
                    "a delegate VirtualService (one without hosts) must not list gateways; the gateways of the root VirtualService that delegates to it apply",
                );
            }
            if !self.tls.is_empty() {
                issues.push(
                    field(path, "tls"),
                    "a delegate VirtualService (one without hosts) cannot have tls routes; add hosts to make it a regular VirtualService",
                );
            }
            if !self.tcp.is_empty() {
                issues.push(
                    field(path, "tcp"),
                    "a delegate VirtualService (one without hosts) cannot have tcp routes; add hosts to make it a regular VirtualService",
                );
            }
        }
        let gateways_path = field(path, "gateways");
        check_gateway_names(&self.gateways, &gateways_path, issues);
        let to_mesh = self.applies_to_mesh();

        if to_mesh {
            for (i, rule) in self.http.iter().enumerate() {
                for (j, m) in rule.matches.iter().enumerate() {
                    for (kind, map) in [
                        ("headers", &m.headers),
                        ("withoutHeaders", &m.without_headers),
                    ] {
                        for key in map.keys().filter(|k| k.starts_with("@request.auth.claims")) {
                            issues.push(
                                format!("{path}.http[{i}].match[{j}].{kind}.{key}"),
                                "JWT claim based routing (@request.auth.claims...) only works on gateways; bind the VirtualService to a gateway or match on a header instead",
                            );
                        }
                    }
                }
            }
        }

        let hosts_path = field(path, "hosts");
        let mut all_valid = true;
        for (i, h) in self.hosts.iter().enumerate() {
            let p = format!("{hosts_path}[{i}]");
            if h.parse::<std::net::IpAddr>().is_ok() {
                continue;
            }
            if let Err(e) = validate_wildcard_host(h) {
                issues.push(&p, e);
                all_valid = false;
            } else if to_mesh && h == "*" {
                issues.push(
                    &p,
                    "wildcard host * is not allowed for a VirtualService that applies to the mesh; name the service hosts, or bind the VirtualService to a gateway only",
                );
                all_valid = false;
            }
        }
        if all_valid {
            for i in 0..self.hosts.len() {
                for j in i + 1..self.hosts.len() {
                    let (a, b) = (&self.hosts[i], &self.hosts[j]);
                    if hosts_overlap(a, b) {
                        issues.push(
                            format!("{hosts_path}[{j}]"),
                            format!("duplicate hosts in virtual service: {a} and {b} overlap; list each host once"),
                        );
                    }
                }
            }
        }

        if self.http.is_empty() && self.tcp.is_empty() && self.tls.is_empty() {
            issues.push(
                path,
                "http, tcp or tls routes are required in a VirtualService; add at least one rule",
            );
        }
        for (i, rule) in self.http.iter().enumerate() {
            validate_http_route(rule, delegate, &format!("{path}.http[{i}]"), issues);
        }
        for (i, rule) in self.tls.iter().enumerate() {
            validate_tls_route(rule, self, &format!("{path}.tls[{i}]"), issues);
        }
        each(&self.tcp, &field(path, "tcp"), issues);
        check_export_to(&self.export_to, &field(path, "exportTo"), issues);
    }
}

fn validate_http_route(r: &HttpRoute, in_delegate: bool, path: &str, issues: &mut Issues) {
    // Conflicts between actions.
    if r.delegate.is_some() {
        if in_delegate {
            issues.push(
                field(path, "delegate"),
                "a delegate VirtualService cannot delegate again; only one level of delegation is supported",
            );
        }
        if r.redirect.is_some() {
            issues.push(
                field(path, "redirect"),
                "a rule with delegate must not also redirect; move the redirect into the delegate VirtualService",
            );
        }
        if !r.route.is_empty() {
            issues.push(
                field(path, "route"),
                "a rule with delegate must not also have route destinations; move them into the delegate VirtualService",
            );
        }
        if r.direct_response.is_some() {
            issues.push(
                field(path, "directResponse"),
                "a rule with delegate must not also have directResponse; move it into the delegate VirtualService",
            );
        }
    } else if r.redirect.is_some() {
        if !r.route.is_empty() {
            issues.push(
                field(path, "redirect"),
                "an HTTP rule cannot have both route and redirect; keep one",
            );
        }
        if r.fault.is_some() {
            issues.push(
                field(path, "fault"),
                "an HTTP rule cannot have both fault and redirect; remove the fault",
            );
        }
        if r.rewrite.is_some() {
            issues.push(
                field(path, "rewrite"),
                "an HTTP rule cannot have both rewrite and redirect; a redirect already sets the new uri/authority",
            );
        }
        if r.direct_response.is_some() {
            issues.push(
                field(path, "directResponse"),
                "an HTTP rule cannot have both directResponse and redirect; keep one",
            );
        }
    } else if r.direct_response.is_some() {
        if !r.route.is_empty() {
            issues.push(
                field(path, "directResponse"),
                "an HTTP rule cannot have both route and directResponse; keep one",
            );
        }
        if r.fault.is_some() {
            issues.push(
                field(path, "fault"),
                "an HTTP rule cannot have both fault and directResponse; remove the fault",
            );
        }
        if r.rewrite.is_some() {
            issues.push(
                field(path, "rewrite"),
                "an HTTP rule cannot have both rewrite and directResponse; remove the rewrite",
            );
        }
    } else if r.route.is_empty() {
        issues.push(
            path,
            "an HTTP rule needs route, redirect, directResponse or delegate; add route destinations",
        );
    }
    if r.mirror.is_some() && !r.mirrors.is_empty() {
        issues.push(
            field(path, "mirrors"),
            "an HTTP rule cannot have both mirror and mirrors; move the mirror into mirrors",
        );
    }

    for (j, m) in r.matches.iter().enumerate() {
        m.validate(&format!("{path}.match[{j}]"), issues);
    }
    if let Some(h) = &r.headers {
        check_headers(h, &field(path, "headers"), issues);
    }
    if let Some(c) = &r.cors_policy {
        c.validate(&field(path, "corsPolicy"), issues);
    }
    if let Some(f) = &r.fault {
        f.validate(&field(path, "fault"), issues);
    }
    if let Some(p) = r.mirror_percent {
        if p > 100 {
            issues.push(
                field(path, "mirrorPercent"),
                format!("mirrorPercent {p} is above 100; use 0-100 (better: mirrorPercentage)"),
            );
        }
    }
    if let Some(p) = &r.mirror_percentage {
        p.validate(&field(path, "mirrorPercentage"), issues);
    }
    if let Some(m) = &r.mirror {
        m.validate(&field(path, "mirror"), issues);
    }
    for (i, m) in r.mirrors.iter().enumerate() {
        let p = format!("{path}.mirrors[{i}]");
        m.destination.validate(&field(&p, "destination"), issues);
        if let Some(pc) = &m.percentage {
            pc.validate(&field(&p, "percentage"), issues);
        }
    }
    if let Some(rd) = &r.redirect {
        rd.validate(&field(path, "redirect"), issues);
    }
    if let Some(d) = &r.direct_response {
        d.validate(&field(path, "directResponse"), issues);
    }
    if let Some(rt) = &r.retries {
        rt.validate(&field(path, "retries"), issues);
    }
    if let Some(rw) = &r.rewrite {
        rw.validate(&field(path, "rewrite"), issues);
    }
    check_authority_rewrite(r, path, issues);
    check_weights(
        r.route.iter().map(|d| d.weight),
        &field(path, "route"),
        issues,
    );
    for (i, d) in r.route.iter().enumerate() {
        let p = format!("{path}.route[{i}]");
        d.destination.validate(&field(&p, "destination"), issues);
        if let Some(h) = &d.headers {
            check_headers(h, &field(&p, "headers"), issues);
        }
    }
    if let Some(t) = r.timeout {
        t.check_ms(&field(path, "timeout"), issues);
    }
}

/// The authority may be rewritten in one place only.
fn check_authority_rewrite(r: &HttpRoute, path: &str, issues: &mut Issues) {
    let mut count = usize::from(r.rewrite.as_ref().is_some_and(|rw| rw.authority.is_some()));
    if let Some(req) = r.headers.as_ref().and_then(|h| h.request.as_ref()) {
        count += req
            .set
            .keys()
            .chain(req.add.keys())
            .filter(|k| is_authority_header(k))
            .count();
    }
    if count > 1 {
        issues.push(
            field(path, "headers"),
            "the authority is set more than once (rewrite.authority and/or a host/:authority header operation); set it in one place",
        );
    }
}

/// Istio's weight rules: no negative weight, and with several destinations
/// the total must be positive (zero weights are dropped when compiling).
/// Current Istio does not require a total of 100: weights are relative.
fn check_weights(weights: impl Iterator<Item = i32>, path: &str, issues: &mut Issues) {
    let mut total: i64 = 0;
    let mut n = 0;
    for (i, w) in weights.enumerate() {
        n += 1;
        if w < 0 {
            issues.push(
                format!("{path}[{i}].weight"),
                format!("weight {w} is negative; use 0 (no traffic) or a positive share"),
            );
        }
        total += i64::from(w.max(0));
    }
    if n > 1 && total == 0 {
        issues.push(
            path,
            "the total weight of the destinations is 0, so no destination would get traffic; give at least one destination a positive weight",
        );
    }
}

impl Validate for HttpMatchRequest {
    fn validate(&self, path: &str, issues: &mut Issues) {
        for (name, m) in &self.headers {
            let p = format!("{}.{name}", field(path, "headers"));
            check_header_match_name(name, &p, issues);
            check_string_match(m, &p, false, issues);
        }
        for (name, m) in &self.without_headers {
            let p = format!("{}.{name}", field(path, "withoutHeaders"));
            check_header_match_name(name, &p, issues);
            // `regex: "*"` is Istio's spelling of "present" here.
            if m.regex.as_deref() != Some("*") {
                check_string_match(m, &p, false, issues);
            }
        }
        if let Some(u) = &self.uri {
            // An empty uri prefix is allowed (Envoy: match everything).
            check_string_match(u, &field(path, "uri"), true, issues);
        }
        for (name, m) in [
            ("scheme", &self.scheme),
            ("method", &self.method),
            ("authority", &self.authority),
        ] {
            if let Some(m) = m {
                check_string_match(m, &field(path, name), false, issues);
            }
        }
        for (name, m) in &self.query_params {
            check_string_match(
                m,
                &format!("{}.{name}", field(path, "queryParams")),
                false,
                issues,
            );
        }
        if let Some(port) = self.port {
            check_port(port, &field(path, "port"), issues);
        }
        check_labels(&self.source_labels, &field(path, "sourceLabels"), issues);
        check_gateway_names(&self.gateways, &field(path, "gateways"), issues);
        if let Some(ns) = &self.source_namespace {
            check_namespace(ns, &field(path, "sourceNamespace"), issues);
        }
    }
}

fn check_string_match(m: &StringMatch, path: &str, allow_empty_prefix: bool, issues: &mut Issues) {
    m.validate(path, issues);
    if !allow_empty_prefix && m.exact.is_none() && m.prefix.as_deref() == Some("") {
        issues.push(
            field(path, "prefix"),
            "prefix string match must not be empty; use {} to match any value that is present",
        );
    }
    if let Some(re) = &m.regex {
        if re.is_empty() {
            issues.push(
                field(path, "regex"),
                "regex string match must not be empty; use {} to match any value, or prefix/exact",
            );
        } else if re.len() > MAX_REGEX_LEN {
            issues.push(
                field(path, "regex"),
                format!(
                    "regex is {} characters long; the limit is {MAX_REGEX_LEN}, simplify it",
                    re.len()
                ),
            );
        }
    }
}

impl Validate for Destination {
    fn validate(&self, path: &str, issues: &mut Issues) {
        let hp = field(path, "host");
        if self.host == "*" {
            issues.push(
                &hp,
                "destination host * is invalid; name the service to send traffic to",
            );
        } else if self.host.parse::<std::net::IpAddr>().is_err() {
            if let Err(e) = validate_wildcard_host(&self.host) {
                issues.push(&hp, e);
            }
        }
        if let Some(s) = &self.subset {
            if !is_dns1123_label(s) {
                issues.push(
                    field(path, "subset"),
                    format!("subset name {s:?} is invalid; use a DNS-1123 label (lowercase letters, digits, '-') as defined in the DestinationRule"),
                );
            }
        }
        if let Some(p) = &self.port {
            p.validate(&field(path, "port"), issues);
        }
    }
}

impl Validate for HttpRetry {
    fn validate(&self, path: &str, issues: &mut Issues) {
        if self.attempts < 0 {
            issues.push(
                field(path, "attempts"),
                format!(
                    "attempts {} is negative; use 0 to disable retries or a positive count",
                    self.attempts
                ),
            );
        }
        if self.attempts == 0
            && (self.per_try_timeout.is_some()
                || self.retry_on.is_some()
                || self.retry_remote_localities.is_some())
        {
            issues.push(
                field(path, "attempts"),
                "retry settings are given but attempts is 0 (retries disabled); set attempts to the number of retries wanted",
            );
        }
        if let Some(t) = self.per_try_timeout {
            t.check_ms(&field(path, "perTryTimeout"), issues);
        }
        if let Some(b) = self.backoff {
            b.check_ms(&field(path, "backoff"), issues);
        }
        if let Some(on) = &self.retry_on {
            if let Err(bad) = parse_retry_on(on) {
                for b in bad {
                    issues.push(
                        field(path, "retryOn"),
                        format!("{b:?} is not a valid retryOn condition; use a comma-separated list (no spaces) of 5xx, gateway-error, reset, reset-before-request, connect-failure, envoy-ratelimited, retriable-4xx, refused-stream, retriable-status-codes, retriable-headers, http3-post-connect-failure, cancelled, deadline-exceeded, internal, resource-exhausted, unavailable or HTTP status codes (100-599)"),
                    );
                }
            }
        }
    }
}

impl Validate for HttpRedirect {
    fn validate(&self, path: &str, issues: &mut Issues) {
        if self.uri.is_none()
            && self.authority.is_none()
            && self.port.is_none()
            && self.derive_port.is_none()
            && self.scheme.is_none()
        {
            issues.push(
                path,
                "redirect must set uri, authority, scheme or port; otherwise it would redirect to the same URL",
            );
        }
        if self.port.is_some() && self.derive_port.is_some() {
            issues.push(
                field(path, "derivePort"),
                "port and derivePort are exclusive; keep one",
            );
        }
        if let Some(c) = self.redirect_code {
            if !(300..=399).contains(&c) {
                issues.push(
                    field(path, "redirectCode"),
                    format!(
                        "{c} is not a redirect code; use a 3xx code such as 301, 302, 307 or 308"
                    ),
                );
            }
        }
        if let Some(s) = &self.scheme {
            if s != "http" && s != "https" {
                issues.push(
                    field(path, "scheme"),
                    format!("redirect scheme {s:?} is invalid; use \"http\" or \"https\""),
                );
            }
        }
        if let Some(p) = self.port {
            check_port(p, &field(path, "port"), issues);
        }
    }
}

impl Validate for HttpDirectResponse {
    fn validate(&self, path: &str, issues: &mut Issues) {
        check_http_status(self.status, &field(path, "status"), issues);
        if let Some(b) = &self.body {
            let bp = field(path, "body");
            match (&b.string, &b.bytes) {
                (Some(_), Some(_)) => {
                    issues.push(&bp, "body may set only one of string or bytes; keep one")
                }
                (None, None) => issues.push(&bp, "body must set string or bytes (or be left out)"),
                _ => {}
            }
            let size = b
                .string
                .as_ref()
                .or(b.bytes.as_ref())
                .map_or(0, String::len);
            if size > MAX_DIRECT_RESPONSE_BODY {
                issues.push(
                    &bp,
                    format!("direct response body is {size} bytes; it must be less than 1MB, serve large bodies from a service"),
                );
            }
        }
    }
}

fn check_http_status(status: u32, path: &str, issues: &mut Issues) {
    if !(200..=599).contains(&status) {
        issues.push(
            path,
            format!("HTTP status {status} is not in range 200-599"),
        );
    }
}

impl Validate for HttpRewrite {
    fn validate(&self, path: &str, issues: &mut Issues) {
        if self.uri.is_some() && self.uri_regex_rewrite.is_some() {
            issues.push(
                field(path, "uriRegexRewrite"),
                "rewrite may set only one of uri or uriRegexRewrite; keep one",
            );
        }
        if self.uri.is_none() && self.uri_regex_rewrite.is_none() && self.authority.is_none() {
            issues.push(
                path,
                "rewrite must set uri, uriRegexRewrite or authority; remove the empty rewrite",
            );
        }
        if let Some(rr) = &self.uri_regex_rewrite {
            let p = field(path, "uriRegexRewrite");
            if rr.pattern.is_empty() || rr.rewrite.is_empty() {
                issues.push(&p, "uriRegexRewrite needs both match and rewrite");
            }
            if !rr.pattern.is_empty() {
                check_regex(&rr.pattern, &field(&p, "match"), issues);
            }
        }
    }
}

impl Validate for HttpFaultInjection {
    fn validate(&self, path: &str, issues: &mut Issues) {
        if self.abort.is_none() && self.delay.is_none() {
            issues.push(path, "fault injection must have an abort and/or a delay");
        }
        if let Some(a) = &self.abort {
            let p = field(path, "abort");
            if let Some(pc) = &a.percentage {
                pc.validate(&field(&p, "percentage"), issues);
            }
            let set = [
                a.http_status.is_some(),
                a.grpc_status.is_some(),
                a.http2_error.is_some(),
            ]
            .iter()
            .filter(|b| **b)
            .count();
            if set > 1 {
                issues.push(
                    &p,
                    "abort may set only one of httpStatus, grpcStatus or http2Error",
                );
            }
            if let Some(s) = a.http_status {
                let fp = field(&p, "httpStatus");
                if !(200..=599).contains(&s) {
                    issues.push(fp, format!("HTTP status {s} is not in range 200-599"));
                }
            }
            if let Some(g) = &a.grpc_status {
                if grpc_status_code(g).is_none() {
                    issues.push(
                        field(&p, "grpcStatus"),
                        format!("gRPC status {g:?} is not supported; use a status name such as UNAVAILABLE, NOT_FOUND or INTERNAL"),
                    );
                }
            }
            if a.http2_error.is_some() {
                issues.push(
                    field(&p, "http2Error"),
                    "HTTP/2 error abort is not supported; use httpStatus or grpcStatus",
                );
            }
        }
        if let Some(d) = &self.delay {
            let p = field(path, "delay");
            if let Some(pc) = &d.percentage {
                pc.validate(&field(&p, "percentage"), issues);
            }
            if let Some(pc) = d.percent {
                check_percent(f64::from(pc), &field(&p, "percent"), issues);
            }
            if let Some(t) = d.fixed_delay {
                t.check_ms(&field(&p, "fixedDelay"), issues);
            }
            if d.exponential_delay.is_some() {
                issues.push(
                    field(&p, "exponentialDelay"),
                    "exponentialDelay is not supported; use fixedDelay",
                );
            } else if d.fixed_delay.is_none() {
                issues.push(&p, "delay needs fixedDelay");
            }
        }
    }
}

impl Validate for CorsPolicy {
    fn validate(&self, path: &str, issues: &mut Issues) {
        for (i, o) in self.allow_origins.iter().enumerate() {
            let p = format!("{path}.allowOrigins[{i}]");
            let v = o.exact.as_ref().or(o.prefix.as_ref()).or(o.regex.as_ref());
            if v.is_none_or(|s| s.is_empty()) {
                issues.push(
                    &p,
                    "an allowed origin needs a non-empty exact, prefix or regex",
                );
            }
            o.validate(&p, issues);
        }
        for (i, m) in self.allow_methods.iter().enumerate() {
            if !CORS_METHODS.contains(&m.as_str()) {
                issues.push(
                    format!("{path}.allowMethods[{i}]"),
                    format!(
                        "{m:?} is not a supported HTTP method; use one of {}",
                        CORS_METHODS.join(", ")
                    ),
                );
            }
        }
        for (kind, list) in [
            ("allowHeaders", &self.allow_headers),
            ("exposeHeaders", &self.expose_headers),
        ] {
            for (i, h) in list.iter().enumerate() {
                if h != "*" && !is_valid_header_name(h) {
                    issues.push(
                        format!("{path}.{kind}[{i}]"),
                        format!(
                            "{h:?} is not a valid header name; use letters, digits and '-' or *"
                        ),
                    );
                }
            }
        }
        if let Some(a) = self.max_age {
            let p = field(path, "maxAge");
            a.check_ms(&p, issues);
            if a.get().subsec_nanos() != 0 {
                issues.push(p, "maxAge is accurate only to seconds; use whole seconds");
            }
        }
    }
}

impl Validate for TcpRoute {
    fn validate(&self, path: &str, issues: &mut Issues) {
        for (i, m) in self.matches.iter().enumerate() {
            let p = format!("{path}.match[{i}]");
            check_subnets(
                &m.destination_subnets,
                &field(&p, "destinationSubnets"),
                issues,
            );
            if let Some(port) = m.port {
                check_port(port, &field(&p, "port"), issues);
            }
            check_labels(&m.source_labels, &field(&p, "sourceLabels"), issues);
            check_gateway_names(&m.gateways, &field(&p, "gateways"), issues);
            if let Some(ns) = &m.source_namespace {
                check_namespace(ns, &field(&p, "sourceNamespace"), issues);
            }
        }
        check_route_destinations(&self.route, path, "TCP", issues);
    }
}

fn validate_tls_route(r: &TlsRoute, vs: &VirtualService, path: &str, issues: &mut Issues) {
    if r.matches.is_empty() {
        issues.push(
            path,
            "a TLS route needs at least one match with sniHosts; add match: [{sniHosts: [...]}]",
        );
    }
    for (i, m) in r.matches.iter().enumerate() {
        let p = format!("{path}.match[{i}]");
        if m.sni_hosts.is_empty() {
            issues.push(
                field(&p, "sniHosts"),
                "a TLS match needs at least one SNI host",
            );
        }
        for (j, sni) in m.sni_hosts.iter().enumerate() {
            let sp = format!("{p}.sniHosts[{j}]");
            if sni.parse::<std::net::IpAddr>().is_ok() {
                continue;
            }
            if let Err(e) = validate_wildcard_host(sni) {
                issues.push(&sp, e);
            } else if !vs.hosts.iter().any(|h| sni_subset_of(sni, h)) {
                issues.push(
                    &sp,
                    format!("SNI host {sni:?} is not covered by any of the VirtualService hosts [{}]; add it to hosts or fix the SNI", vs.hosts.join(", ")),
                );
            }
        }
        check_subnets(
            &m.destination_subnets,
            &field(&p, "destinationSubnets"),
            issues,
        );
        if let Some(port) = m.port {
            check_port(port, &field(&p, "port"), issues);
        }
        check_labels(&m.source_labels, &field(&p, "sourceLabels"), issues);
        check_gateway_names(&m.gateways, &field(&p, "gateways"), issues);
        if let Some(ns) = &m.source_namespace {
            check_namespace(ns, &field(&p, "sourceNamespace"), issues);
        }
    }
    check_route_destinations(&r.route, path, "TLS", issues);
}

fn check_route_destinations(
    route: &[RouteDestination],
    path: &str,
    kind: &str,
    issues: &mut Issues,
) {
    let rp = field(path, "route");
    if route.is_empty() {
        issues.push(
            &rp,
            format!("a {kind} rule needs route destinations; add route: [{{destination: {{host: ...}}}}]"),
        );
    }
    check_weights(route.iter().map(|d| d.weight), &rp, issues);
    for (i, d) in route.iter().enumerate() {
        d.destination
            .validate(&format!("{rp}[{i}].destination"), issues);
    }
}
