//! Host names as Istio resolves them: short names are relative to the
//! namespace of the resource that wrote them, and `*` wildcards match
//! whole leading labels.

/// The default DNS suffix of in-cluster services.
pub const DEFAULT_DOMAIN_SUFFIX: &str = "cluster.local";

/// Resolves a host as written in a resource in `namespace` to its fully
/// qualified form: `reviews` becomes `reviews.<ns>.svc.<suffix>`; names with
/// a dot (`reviews.prod`, `example.com`) and wildcards other than a lone `*`
/// are left alone, as Istio does. `*` stays `*`.
pub fn fqdn(host: &str, namespace: &str, domain_suffix: &str) -> String {
    if host.contains('.') || host.starts_with('*') {
        host.to_ascii_lowercase()
    } else {
        format!(
            "{}.{namespace}.svc.{domain_suffix}",
            host.to_ascii_lowercase()
        )
    }
}

/// True when `pattern` (possibly `*` or `*.example.com`) matches the concrete
/// host `host`. Comparison is case-insensitive, as DNS is.
pub fn host_matches(pattern: &str, host: &str) -> bool {
    if pattern == "*" {
        return true;
    }
    if let Some(suffix) = pattern.strip_prefix('*') {
        // `*.example.com` matches `a.example.com` and `a.b.example.com`, not `example.com`.
        return host.len() > suffix.len()
            && host
                .get(host.len() - suffix.len()..)
                .is_some_and(|tail| tail.eq_ignore_ascii_case(suffix));
    }
    pattern.eq_ignore_ascii_case(host)
}

/// Splits `host:port` (the listener name form) into host and port.
pub fn split_host_port(s: &str) -> Option<(&str, u16)> {
    let (h, p) = s.rsplit_once(':')?;
    Some((h, p.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_names_resolve_in_namespace() {
        assert_eq!(
            fqdn("reviews", "default", DEFAULT_DOMAIN_SUFFIX),
            "reviews.default.svc.cluster.local"
        );
        assert_eq!(
            fqdn("reviews.prod", "default", "cluster.local"),
            "reviews.prod"
        );
        assert_eq!(fqdn("*", "default", "cluster.local"), "*");
        assert_eq!(
            fqdn("*.example.com", "default", "cluster.local"),
            "*.example.com"
        );
    }

    #[test]
    fn wildcards() {
        assert!(host_matches("*", "anything"));
        assert!(host_matches("*.example.com", "a.example.com"));
        assert!(host_matches("*.example.com", "A.b.Example.com"));
        assert!(!host_matches("*.example.com", "example.com"));
        assert!(host_matches(
            "Reviews.default.svc.cluster.local",
            "reviews.default.svc.cluster.local"
        ));
        assert_eq!(split_host_port("a.b:9080"), Some(("a.b", 9080)));
    }
}
