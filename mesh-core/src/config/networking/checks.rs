//! Checks shared by the networking kinds in this crate's slice
//! (DestinationRule, Gateway, ServiceEntry, WorkloadEntry, Sidecar): host
//! names, IP addresses, label maps, `exportTo` lists, port names and the
//! protocol names Istio knows.
//!
//! These mirror the helpers Istio's validation uses, so that what Istio
//! rejects is rejected here with the same reasoning. They only check
//! syntax; whether a host exists is the analyzer's business.

use crate::config::kube::Protocol;
use std::collections::BTreeSet;
use std::net::IpAddr;

use crate::config::common::Labels;
use crate::config::validate::{is_dns1123_label, Issues};

/// Prefix Istio uses for Unix domain socket addresses.
pub(crate) const UNIX_PREFIX: &str = "unix://";

/// True when an optional string is present and non-empty (proto3 treats an
/// empty string like an unset one).
pub(crate) fn is_set(v: &Option<String>) -> bool {
    v.as_deref().is_some_and(|s| !s.is_empty())
}

/// The protocol names Istio accepts, for error messages.
pub(crate) const KNOWN_PROTOCOLS: &str =
    "HTTP, HTTPS, HTTP2, GRPC, GRPC-WEB, HTTP_PROXY, TCP, TLS, UDP, MONGO, MYSQL or REDIS";

/// A protocol name Istio supports on a port, or `None`. One protocol enum
/// serves the whole crate: Kubernetes port names, ServiceEntry, Gateway and
/// Sidecar ports all parse into [`Protocol`].
pub(crate) fn known_protocol(s: &str) -> Option<Protocol> {
    Some(Protocol::parse(s)).filter(|p| !p.is_unknown())
}

/// Checks a port protocol name. An empty protocol is allowed only when
/// `required` is false (Istio then sniffs the protocol).
pub(crate) fn check_protocol(protocol: &str, required: bool, path: &str, issues: &mut Issues) {
    if protocol.is_empty() {
        if required {
            issues.push(
                path,
                format!("protocol is required; use one of {KNOWN_PROTOCOLS}"),
            );
        }
    } else if known_protocol(protocol).is_none() {
        issues.push(
            path,
            format!("unsupported protocol {protocol:?}; use one of {KNOWN_PROTOCOLS}"),
        );
    }
}

/// Checks a port name: a DNS-1123 label such as `http` or `grpc-web`.
pub(crate) fn check_port_name(name: &str, path: &str, issues: &mut Issues) {
    if name.is_empty() {
        issues.push(
            path,
            "port name is required; use a lowercase name such as \"http\" or \"tcp-db\"",
        );
    } else if !is_dns1123_label(name) {
        issues.push(
            path,
            format!("port name {name:?} is not a valid DNS-1123 label; use lowercase letters, digits and '-' (at most 63 characters)"),
        );
    }
}

/// True when `s` is an IPv4 or IPv6 address.
pub(crate) fn is_ip(s: &str) -> bool {
    s.parse::<IpAddr>().is_ok()
}

/// Checks an IP address or a CIDR block (`10.0.0.0/8`, `2001:db8::/32`).
pub(crate) fn check_ip_or_cidr(s: &str, path: &str, issues: &mut Issues) {
    let ok = if s.contains('/') {
        s.parse::<ipnet::IpNet>().is_ok()
    } else {
        is_ip(s)
    };
    if !ok {
        issues.push(
            path,
            format!(
                "{s:?} is not a valid IP address or CIDR block; use e.g. 10.0.0.1 or 10.0.0.0/16"
            ),
        );
    }
}

/// Checks an IP address to bind to.
pub(crate) fn check_bind_ip(s: &str, path: &str, issues: &mut Issues) {
    if !is_ip(s) {
        issues.push(
            path,
            format!("bind address {s:?} is not a valid IP address; use e.g. 0.0.0.0 or 127.0.0.1, or unix:///path for a Unix socket"),
        );
    }
}

/// Checks the path of a Unix domain socket (after `unix://`): absolute and
/// naming a file, or an abstract socket starting with `@`.
pub(crate) fn unix_path_error(addr: &str) -> Option<String> {
    if addr.is_empty() {
        return Some("the Unix socket path is empty; write unix:///absolute/path".into());
    }
    if addr.starts_with('@') {
        return None;
    }
    if !addr.starts_with('/') || addr.ends_with('/') {
        return Some(format!(
            "{addr:?} is not an absolute path to a file; write unix:///absolute/path"
        ));
    }
    None
}

/// Why a fully qualified domain name is invalid, if it is. Wildcards are
/// not allowed. A trailing dot is.
pub(crate) fn fqdn_error(host: &str) -> Option<String> {
    if host.is_empty() {
        return Some("the host name is empty".into());
    }
    if host.len() > 255 {
        return Some(format!("host name {host:?} is longer than 255 characters"));
    }
    labels_error(host, host)
}

/// Why a host that may start with a `*.` wildcard is invalid, if it is.
/// `*` alone is accepted; partial wildcards such as `*foo.com` or
/// `foo.*.com` are not.
pub(crate) fn wildcard_domain_error(host: &str) -> Option<String> {
    if host.is_empty() {
        return Some("the host name is empty".into());
    }
    if host.len() > 255 {
        return Some(format!("host name {host:?} is longer than 255 characters"));
    }
    let (first, rest) = match host.split_once('.') {
        Some((f, r)) => (f, Some(r)),
        None => (host, None),
    };
    if first == "*" {
        return rest.and_then(|r| labels_error(r, host));
    }
    if host.contains('*') {
        return Some(format!(
            "partial wildcard in host {host:?}; a wildcard may only be a whole leading label, as in *.example.com"
        ));
    }
    labels_error(host, host)
}

/// Checks every dot-separated label of `domain` (part of `whole`).
fn labels_error(domain: &str, whole: &str) -> Option<String> {
    let parts: Vec<&str> = domain.split('.').collect();
    let last = parts.len() - 1;
    if parts[last].parse::<u64>().is_ok() {
        return Some(format!(
            "host {whole:?} ends in an all-numeric label {:?}; IP addresses are not host names here",
            parts[last]
        ));
    }
    for (i, label) in parts.iter().enumerate() {
        if i == last && label.is_empty() && i > 0 {
            return None; // `example.com.`
        }
        if !is_dns1123_label(label) {
            return Some(format!(
                "host {whole:?} has an invalid label {label:?}; labels are lowercase letters, digits and '-', 1-63 characters, not starting or ending with '-'"
            ));
        }
    }
    None
}

/// Who writes a `namespace/host` entry: Gateway servers or Sidecar egress
/// listeners. They differ in what the namespace part and the host part may be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HostOwner {
    /// `Gateway.servers[].hosts`: `ns/` is optional, IP addresses allowed.
    Gateway,
    /// `Sidecar.egress[].hosts`: `ns/` is required and may be `~`.
    Sidecar,
}

/// Checks a `namespace/dnsName` host entry as Gateway servers and Sidecar
/// egress listeners use them.
pub(crate) fn check_namespaced_host(
    entry: &str,
    owner: HostOwner,
    path: &str,
    issues: &mut Issues,
) {
    let Some((ns, host)) = entry.split_once('/') else {
        match owner {
            HostOwner::Gateway => check_host_part(entry, owner, path, issues),
            HostOwner::Sidecar => issues.push(
                path,
                format!("egress host {entry:?} must be of the form namespace/dnsName; write e.g. \"./{entry}\" (this namespace), \"*/{entry}\" (any namespace) or \"istio-system/*\""),
            ),
        }
        return;
    };
    if ns.is_empty() || host.is_empty() {
        issues.push(
            path,
            format!("host {entry:?} has an empty namespace or DNS name; write namespace/dnsName, e.g. \"./*\" or \"prod/*.example.com\""),
        );
        return;
    }
    let special_ns = match owner {
        HostOwner::Gateway => matches!(ns, "*" | "."),
        HostOwner::Sidecar => matches!(ns, "*" | "." | "~"),
    };
    if !special_ns && !is_dns1123_label(ns) {
        let allowed = match owner {
            HostOwner::Gateway => "\"*\", \".\"",
            HostOwner::Sidecar => "\"*\", \".\", \"~\"",
        };
        issues.push(
            path,
            format!("invalid namespace {ns:?} in host {entry:?}; use {allowed} or a namespace name (DNS-1123 label)"),
        );
    }
    check_host_part(host, owner, path, issues);
}

/// Checks the DNS part of a `namespace/dnsName` entry.
fn check_host_part(host: &str, owner: HostOwner, path: &str, issues: &mut Issues) {
    if host != "*" && !host.contains('.') && !(owner == HostOwner::Gateway && is_ip(host)) {
        issues.push(
            path,
            format!("short host name {host:?} is not allowed here; use the fully qualified name, e.g. {host}.<namespace>.svc.cluster.local"),
        );
        return;
    }
    if let Some(why) = wildcard_domain_error(host) {
        if !(owner == HostOwner::Gateway && is_ip(host)) {
            issues.push(path, why);
        }
    }
}

/// Checks Kubernetes-style labels (keys `[prefix/]name`, values of at most
/// 63 characters of `[A-Za-z0-9._-]` starting and ending alphanumerically).
pub(crate) fn check_labels(labels: &Labels, path: &str, issues: &mut Issues) {
    for (k, v) in labels {
        let p = format!("{path}.{k}");
        if let Some(why) = label_key_error(k) {
            issues.push(&p, why);
        }
        if !is_label_value(v) {
            issues.push(
                &p,
                format!("label value {v:?} is invalid; use at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit"),
            );
        }
    }
}

fn is_label_value(v: &str) -> bool {
    v.len() <= 63
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && v.bytes().next().is_none_or(|b| b.is_ascii_alphanumeric())
        && v.bytes().last().is_none_or(|b| b.is_ascii_alphanumeric())
}

fn label_key_error(k: &str) -> Option<String> {
    let (prefix, name) = match k.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, k),
    };
    if name.is_empty() || !is_label_value(name) {
        return Some(format!(
            "label key {k:?} is invalid; the name part must be 1-63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit"
        ));
    }
    if let Some(p) = prefix {
        let ok = !p.is_empty() && p.len() <= 253 && p.split('.').all(is_dns1123_label);
        if !ok {
            return Some(format!(
                "label key {k:?} has an invalid prefix {p:?}; the prefix must be a lowercase DNS subdomain such as app.kubernetes.io"
            ));
        }
    }
    None
}

/// What kind of resource an `exportTo` list belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ExportToOwner {
    /// DestinationRule; `with_selector` when it has a `workloadSelector`.
    DestinationRule {
        /// The DestinationRule has a workload selector.
        with_selector: bool,
    },
    /// ServiceEntry, which may also use `~` (visible to no one else).
    ServiceEntry,
}

/// Checks an `exportTo` list: `.`, `*`, namespace names (and `~` for
/// ServiceEntries), no duplicates, `*` and `~` alone.
pub(crate) fn check_export_to(
    list: &[String],
    owner: ExportToOwner,
    path: &str,
    issues: &mut Issues,
) {
    let mut seen = BTreeSet::new();
    for (i, e) in list.iter().enumerate() {
        let p = format!("{path}[{i}]");
        if !seen.insert(e.as_str()) {
            issues.push(
                &p,
                format!("duplicate exportTo entry {e:?}; list each namespace once"),
            );
            continue;
        }
        let ok = match e.as_str() {
            "." | "*" => true,
            "~" => owner == ExportToOwner::ServiceEntry,
            ns => is_dns1123_label(ns),
        };
        if !ok {
            let allowed = if owner == ExportToOwner::ServiceEntry {
                "\".\" (this namespace), \"*\" (all), \"~\" (none) or a namespace name"
            } else {
                "\".\" (this namespace), \"*\" (all) or a namespace name"
            };
            issues.push(&p, format!("invalid exportTo entry {e:?}; use {allowed}"));
        }
    }
    if list.len() > 1 && seen.contains("*") {
        issues.push(
            path,
            "exportTo mixes \"*\" with other entries; \"*\" already exports to every namespace, so list it alone",
        );
    }
    if list.len() > 1 && seen.contains("~") {
        issues.push(
            path,
            "exportTo mixes \"~\" (export to no one) with other entries; use \"~\" alone or drop it",
        );
    }
    if owner
        == (ExportToOwner::DestinationRule {
            with_selector: true,
        })
        && !list.is_empty()
    {
        // Istio: a DestinationRule with a workload selector may only be
        // exported to its own namespace. Without knowing the namespace here,
        // "*" and several distinct entries are certainly wrong.
        if seen.contains("*") || seen.len() > 1 {
            issues.push(
                path,
                "a DestinationRule with workloadSelector applies only in its own namespace; set exportTo to [\".\"] or remove it",
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcard_domains() {
        assert!(wildcard_domain_error("*").is_none());
        assert!(wildcard_domain_error("*.example.com").is_none());
        assert!(wildcard_domain_error("reviews").is_none());
        assert!(wildcard_domain_error("example.com.").is_none());
        assert!(wildcard_domain_error("*foo.com").is_some());
        assert!(wildcard_domain_error("foo.*.com").is_some());
        assert!(wildcard_domain_error("Foo.com").is_some());
        assert!(wildcard_domain_error("1.2.3.4").is_some());
        assert!(wildcard_domain_error("").is_some());
        assert!(fqdn_error("*.example.com").is_some());
        assert!(fqdn_error("api.example.com").is_none());
    }

    #[test]
    fn namespaced_hosts() {
        let mut issues = Issues::new();
        for ok in [
            "./*",
            "*/*",
            "~/*",
            "prod/*.example.com",
            "istio-system/api.example.com",
        ] {
            check_namespaced_host(ok, HostOwner::Sidecar, "h", &mut issues);
        }
        for ok in ["*.example.com", "prod/*", "10.0.0.1", "*"] {
            check_namespaced_host(ok, HostOwner::Gateway, "h", &mut issues);
        }
        assert!(issues.is_empty(), "{:?}", issues.errors());
        check_namespaced_host(
            "reviews.prod.svc.cluster.local",
            HostOwner::Sidecar,
            "h",
            &mut issues,
        );
        check_namespaced_host("./reviews", HostOwner::Sidecar, "h", &mut issues);
        check_namespaced_host("~/x.example.com", HostOwner::Gateway, "h", &mut issues);
        check_namespaced_host("Prod/*", HostOwner::Sidecar, "h", &mut issues);
        check_namespaced_host("/*", HostOwner::Sidecar, "h", &mut issues);
        check_namespaced_host("*/*foo.com", HostOwner::Sidecar, "h", &mut issues);
        assert_eq!(issues.errors().len(), 6, "{:?}", issues.errors());
    }

    #[test]
    fn labels_and_export_to() {
        let mut issues = Issues::new();
        let good: Labels = [
            ("app".to_string(), "reviews".to_string()),
            ("app.kubernetes.io/name".to_string(), "".to_string()),
        ]
        .into();
        check_labels(&good, "l", &mut issues);
        assert!(issues.is_empty());
        let bad: Labels = [
            ("-app".to_string(), "x".to_string()),
            ("ok".to_string(), "bad value".to_string()),
            ("Bad_Prefix/x".to_string(), "x".to_string()),
        ]
        .into();
        check_labels(&bad, "l", &mut issues);
        assert_eq!(issues.errors().len(), 3);

        let mut issues = Issues::new();
        let l = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        check_export_to(
            &l(&[".", "prod"]),
            ExportToOwner::ServiceEntry,
            "e",
            &mut issues,
        );
        check_export_to(&l(&["~"]), ExportToOwner::ServiceEntry, "e", &mut issues);
        assert!(issues.is_empty());
        let dr = ExportToOwner::DestinationRule {
            with_selector: false,
        };
        check_export_to(&l(&["~"]), dr, "e", &mut issues);
        check_export_to(&l(&["*", "prod"]), dr, "e", &mut issues);
        check_export_to(&l(&["a", "a"]), dr, "e", &mut issues);
        let drs = ExportToOwner::DestinationRule {
            with_selector: true,
        };
        check_export_to(&l(&["*"]), drs, "e", &mut issues);
        assert_eq!(issues.errors().len(), 4, "{:?}", issues.errors());
    }
}
