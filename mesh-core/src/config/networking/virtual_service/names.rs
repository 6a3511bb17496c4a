//! Name checks shared by VirtualService validation: hosts, header names,
//! gateways, namespaces, labels, subnets and `exportTo`.

use std::collections::BTreeMap;

use crate::config::validate::{field, Issues};

use super::Headers;

pub(super) fn is_authority_header(name: &str) -> bool {
    name.eq_ignore_ascii_case(":authority") || name.eq_ignore_ascii_case("host")
}

/// True when `name` is a valid HTTP header name (an RFC 7230 token).
pub fn is_valid_header_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

pub(super) fn check_header_match_name(name: &str, path: &str, issues: &mut Issues) {
    if name.starts_with("@request.auth.claims") {
        return;
    }
    // Pseudo-headers such as `:authority` may be matched.
    let bare = name.strip_prefix(':').unwrap_or(name);
    if !is_valid_header_name(bare) {
        issues.push(
            path,
            format!("{name:?} is not a valid header name; use letters, digits and '-' (for example x-user-id)"),
        );
    }
}

/// Header operations: names must be valid and not internal (`:`-prefixed or
/// `host`), except that request `set`/`add` may set the authority.
pub(super) fn check_headers(h: &Headers, path: &str, issues: &mut Issues) {
    for (dir, ops, allow_authority) in [
        ("request", &h.request, true),
        ("response", &h.response, false),
    ] {
        let Some(ops) = ops else { continue };
        let p = field(path, dir);
        for (kind, map) in [("set", &ops.set), ("add", &ops.add)] {
            for (name, value) in map {
                let fp = format!("{}.{name}", field(&p, kind));
                check_op_name(name, allow_authority, &fp, issues);
                if value.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0) {
                    issues.push(&fp, "header value contains a line break or NUL; remove it");
                }
            }
        }
        for (i, name) in ops.remove.iter().enumerate() {
            check_op_name(name, false, &format!("{p}.remove[{i}]"), issues);
        }
    }
}

pub(super) fn check_op_name(name: &str, allow_authority: bool, path: &str, issues: &mut Issues) {
    if allow_authority && is_authority_header(name) {
        return;
    }
    if name.starts_with(':') || name.eq_ignore_ascii_case("host") {
        issues.push(
            path,
            format!("header {name:?} cannot be modified: names starting with ':' and 'host' are internal (use rewrite.authority to change the host)"),
        );
    } else if !is_valid_header_name(name) {
        issues.push(
            path,
            format!("{name:?} is not a valid header name; use letters, digits and '-'"),
        );
    }
}

/// True when the SNI host (maybe a wildcard) is within the VS host pattern.
pub(super) fn sni_subset_of(sni: &str, host: &str) -> bool {
    if host == "*" || sni.eq_ignore_ascii_case(host) {
        return true;
    }
    match (sni.strip_prefix('*'), host.strip_prefix('*')) {
        (Some(s), Some(h)) => {
            s.len() >= h.len() && s.to_ascii_lowercase().ends_with(&h.to_ascii_lowercase())
        }
        (None, Some(_)) => crate::host::host_matches(host, sni),
        _ => false,
    }
}

pub(super) fn check_subnets(subnets: &[String], path: &str, issues: &mut Issues) {
    for (i, s) in subnets.iter().enumerate() {
        if s.parse::<ipnet::IpNet>().is_err() && s.parse::<std::net::IpAddr>().is_err() {
            issues.push(
                format!("{path}[{i}]"),
                format!(
                    "{s:?} is not an IP address or CIDR block; write e.g. 10.0.0.0/8 or 10.1.2.3"
                ),
            );
        }
    }
}

pub(super) fn check_labels(labels: &BTreeMap<String, String>, path: &str, issues: &mut Issues) {
    for (k, v) in labels {
        let p = format!("{path}.{k}");
        if k.is_empty() || k.len() > 317 {
            issues.push(&p, "label key must be 1-317 characters");
        }
        if v.len() > 63
            || !v
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
        {
            issues.push(
                &p,
                format!(
                    "label value {v:?} is invalid; use at most 63 letters, digits, '-', '_' or '.'"
                ),
            );
        }
    }
}

pub(super) fn check_namespace(ns: &str, path: &str, issues: &mut Issues) {
    if !is_dns1123_label(ns) {
        issues.push(
            path,
            format!("{ns:?} is not a valid namespace name; use lowercase letters, digits and '-'"),
        );
    }
}

/// Gateway references: `mesh`, `name`, `namespace/name` or the legacy FQDN form.
pub(super) fn check_gateway_names(gateways: &[String], path: &str, issues: &mut Issues) {
    for (i, g) in gateways.iter().enumerate() {
        let p = format!("{path}[{i}]");
        match g.split_once('/') {
            Some((ns, name)) => {
                if ns.is_empty() || name.is_empty() {
                    issues.push(
                        &p,
                        "gateway reference needs both namespace and name: <namespace>/<name>",
                    );
                } else {
                    if !is_dns1123_label(ns) {
                        issues.push(
                            &p,
                            format!("invalid gateway namespace {ns:?}; use a DNS-1123 label"),
                        );
                    }
                    if !is_dns1123_label(name) {
                        issues.push(
                            &p,
                            format!("invalid gateway name {name:?}; use a DNS-1123 label"),
                        );
                    }
                }
            }
            None => {
                if validate_wildcard_host(g).is_err() || g.starts_with('*') {
                    issues.push(
                        &p,
                        format!(
                            "invalid gateway name {g:?}; use mesh, <name> or <namespace>/<name>"
                        ),
                    );
                }
            }
        }
    }
}

pub(super) fn check_export_to(export_to: &[String], path: &str, issues: &mut Issues) {
    let mut seen = std::collections::BTreeSet::new();
    for (i, e) in export_to.iter().enumerate() {
        let p = format!("{path}[{i}]");
        if !seen.insert(e.as_str()) {
            issues.push(
                &p,
                format!("duplicate exportTo entry {e:?}; list each once"),
            );
        }
        if e != "." && e != "*" && e != "~" && !is_dns1123_label(e) {
            issues.push(
                &p,
                format!("exportTo entry {e:?} is invalid; use \".\" (this namespace), \"*\" (all) or a namespace name"),
            );
        }
    }
    if seen.contains("~") && export_to.len() > 1 {
        issues.push(
            path,
            "\"~\" (export to none) cannot be combined with other entries",
        );
    }
    if seen.contains("*") && export_to.len() > 1 {
        issues.push(
            path,
            "\"*\" already exports everywhere; remove the other entries",
        );
    }
}

/// A lowercase DNS-1123 label.
pub(super) fn is_dns1123_label(s: &str) -> bool {
    crate::config::validate::is_dns1123_label(s)
}

/// Checks a host as Istio's `ValidateWildcardDomain` does: at most 255
/// characters, an optional leading `*` or `*.` wildcard, then DNS labels
/// (letters, digits, `-`; a trailing dot allowed). Returns a message on error.
pub fn validate_wildcard_host(host: &str) -> Result<(), String> {
    if host.is_empty() {
        return Err("host must not be empty; write a service name such as reviews or reviews.default.svc.cluster.local".into());
    }
    if host.len() > 255 {
        return Err(format!("host {host:?} is longer than 255 characters"));
    }
    if host == "*" {
        return Ok(());
    }
    let rest = if let Some(r) = host.strip_prefix("*.") {
        r
    } else if let Some(r) = host.strip_prefix('*') {
        r
    } else {
        host
    };
    let rest = rest.strip_suffix('.').unwrap_or(rest);
    if rest.is_empty() {
        return Err(format!("host {host:?} has no domain after the wildcard"));
    }
    for label in rest.split('.') {
        let ok = !label.is_empty()
            && label.len() <= 63
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-');
        if !ok {
            return Err(format!(
                "host {host:?} is not a valid DNS name: label {label:?} must be 1-63 letters, digits or '-', not starting or ending with '-' (a wildcard is only allowed as a leading '*.')"
            ));
        }
    }
    Ok(())
}

/// True when two host patterns can match a common host.
pub(super) fn hosts_overlap(a: &str, b: &str) -> bool {
    let (a, b) = (a.to_ascii_lowercase(), b.to_ascii_lowercase());
    if a == b {
        return true;
    }
    match (a.strip_prefix('*'), b.strip_prefix('*')) {
        (Some(sa), Some(sb)) => sa.ends_with(sb) || sb.ends_with(sa),
        (Some(_), None) => crate::host::host_matches(&a, &b),
        (None, Some(_)) => crate::host::host_matches(&b, &a),
        (None, None) => false,
    }
}
