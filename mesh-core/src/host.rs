//! Host names as Istio resolves them, in one place for every caller.
//!
//! Two different questions, two functions:
//!
//! - [`fqdn`]: a host *written in a resource* (a VirtualService's `hosts`,
//!   a DestinationRule's `host`): a dotless name is relative to the
//!   resource's namespace, anything with a dot is taken as written.
//! - [`candidates`] (with [`expand`] and [`short_names`]): a host *dialled by
//!   a client*, as Kubernetes DNS search paths resolve it from the client's
//!   namespace: `reviews` is `reviews.<ns>.svc.<suffix>`, `reviews.bookinfo`
//!   is `reviews.bookinfo.svc.<suffix>`, `reviews.bookinfo.svc` is
//!   `reviews.bookinfo.svc.<suffix>`, whatever namespace the client is in.
//!   The SDK's service lookup ([`crate::model::Model::resolve_outbound`]),
//!   `meshctl x route` and the short-name listeners and virtual-host
//!   domains meshd sends all go through them, so they cannot disagree.
//!
//! Not here: which services exist (the model or registry decides that).

use std::fmt;

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

/// One name a dialled host may stand for: pieces that, joined, spell it.
/// Borrowed from the dialled name, namespace and suffix, so trying
/// candidates allocates nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate<'a>([&'a str; 5]);

impl<'a> Candidate<'a> {
    /// The pieces, in order (trailing ones may be empty).
    pub fn parts(&self) -> &[&'a str; 5] {
        &self.0
    }

    /// Appends the name to `out` in lowercase (host names are
    /// case-insensitive; the model's keys are lowercase).
    pub fn write_lowercase(&self, out: &mut String) {
        let start = out.len();
        for p in self.0 {
            out.push_str(p);
        }
        if let Some(tail) = out.get_mut(start..) {
            tail.make_ascii_lowercase();
        }
    }

    /// True when the candidate spells `name`, ignoring ASCII case.
    pub fn eq_ignore_case(&self, name: &str) -> bool {
        self.0
            .iter()
            .try_fold(name, |rest, p| strip_prefix_ignore_case(rest, p))
            .is_some_and(str::is_empty)
    }
}

impl fmt::Display for Candidate<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|p| f.write_str(p))
    }
}

/// The name as dialled without a trailing dot, and whether it had one (an
/// absolute name, which DNS never expands).
fn absolute(host: &str) -> (&str, bool) {
    match host.strip_suffix('.') {
        Some(h) => (h, true),
        None => (host, false),
    }
}

/// The search-path expansion of a name a client in `namespace` dials:
/// `name` -> `name.<ns>.svc.<suffix>`, `name.ns` -> `name.ns.svc.<suffix>`,
/// `name.ns.svc` -> `name.ns.svc.<suffix>`; `None` for anything else (a
/// fully qualified or external name, an absolute name ending in `.`, a
/// wildcard).
pub fn expand<'a>(
    host: &'a str,
    namespace: &'a str,
    domain_suffix: &'a str,
) -> Option<Candidate<'a>> {
    let (host, absolute) = absolute(host);
    if absolute || host.is_empty() || host.starts_with('*') {
        return None;
    }
    let parts = match host.bytes().filter(|b| *b == b'.').count() {
        0 => [host, ".", namespace, ".svc.", domain_suffix],
        1 => [host, ".svc.", domain_suffix, "", ""],
        2 if strip_suffix_ignore_case(host, ".svc").is_some() => [host, ".", domain_suffix, "", ""],
        _ => return None,
    };
    Some(Candidate(parts))
}

/// The names a client in `namespace` may mean by dialling `host`, in the
/// order they are tried: the name as written (less a trailing dot), its
/// [`expand`]sion, then the wildcard hosts that cover the name as written
/// (`*.b.c`, then `*.c`, for `a.b.c`). The first one that names a known
/// service is the one meant.
pub fn candidates<'a>(
    host: &'a str,
    namespace: &'a str,
    domain_suffix: &'a str,
) -> impl Iterator<Item = Candidate<'a>> + 'a {
    let (bare, _) = absolute(host);
    let wildcards = std::iter::successors(bare.split_once('.').map(|(_, t)| t), |rest| {
        rest.split_once('.').map(|(_, t)| t)
    })
    .map(|tail| Candidate(["*.", tail, "", "", ""]));
    std::iter::once(Candidate([bare, "", "", "", ""]))
        .chain(expand(host, namespace, domain_suffix))
        .chain(wildcards)
}

/// The first of [`candidates`] for which `found` gives an answer.
pub fn resolve<'a, T>(
    host: &'a str,
    namespace: &'a str,
    domain_suffix: &'a str,
    found: impl FnMut(Candidate<'a>) -> Option<T>,
) -> Option<T> {
    candidates(host, namespace, domain_suffix).find_map(found)
}

/// The shorter names a client in `namespace` can dial for the fully
/// qualified `host`: each leading part of it whose [`expand`]sion is
/// `host`, shortest first. For `reviews.bookinfo.svc.cluster.local`:
/// `reviews` (from `bookinfo` only), `reviews.bookinfo`,
/// `reviews.bookinfo.svc`; none for a host outside `.svc.<suffix>`.
pub fn short_names<'a>(host: &'a str, namespace: &str, domain_suffix: &str) -> Vec<&'a str> {
    host.match_indices('.')
        .filter_map(|(i, _)| host.get(..i))
        .filter(|short| {
            expand(short, namespace, domain_suffix).is_some_and(|c| c.eq_ignore_case(host))
        })
        .collect()
}

/// The Kubernetes Service `(name, namespace)` a fully qualified
/// `name.ns.svc.<suffix>` host names; `None` for any other host.
pub fn service_of<'a>(host: &'a str, domain_suffix: &str) -> Option<(&'a str, &'a str)> {
    let head = strip_suffix_ignore_case(host, domain_suffix)?;
    let (name, ns) = strip_suffix_ignore_case(head, ".svc.")?.split_once('.')?;
    (!name.is_empty() && !ns.is_empty() && !ns.contains('.')).then_some((name, ns))
}

/// `s` without `prefix`, compared ignoring ASCII case.
fn strip_prefix_ignore_case<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    s.get(..prefix.len())
        .filter(|head| head.eq_ignore_ascii_case(prefix))
        .and_then(|_| s.get(prefix.len()..))
}

/// `s` without `suffix`, compared ignoring ASCII case.
fn strip_suffix_ignore_case<'a>(s: &'a str, suffix: &str) -> Option<&'a str> {
    let cut = s.len().checked_sub(suffix.len())?;
    s.get(cut..)
        .filter(|tail| tail.eq_ignore_ascii_case(suffix))
        .and_then(|_| s.get(..cut))
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

    const SUFFIX: &str = DEFAULT_DOMAIN_SUFFIX;

    fn all(host: &str, ns: &str) -> Vec<String> {
        candidates(host, ns, SUFFIX)
            .map(|c| c.to_string())
            .collect()
    }

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
    fn dialled_names_expand_as_kubernetes_search_paths() {
        let full = "reviews.bookinfo.svc.cluster.local";
        assert_eq!(all("reviews", "bookinfo")[1], full);
        // Whatever namespace the client is in.
        for ns in ["bookinfo", "default"] {
            assert_eq!(all("reviews.bookinfo", ns)[1], full);
            assert_eq!(all("reviews.bookinfo.svc", ns)[1], full);
            assert_eq!(
                all("Reviews.Bookinfo.SVC", ns)[1].to_ascii_lowercase(),
                full
            );
        }
        assert_eq!(
            all("reviews", "default")[1],
            "reviews.default.svc.cluster.local"
        );
        assert_eq!(
            all(full, "default"),
            [
                full,
                "*.bookinfo.svc.cluster.local",
                "*.svc.cluster.local",
                "*.cluster.local",
                "*.local"
            ]
        );
        // Absolute names and other names are not expanded.
        assert_eq!(all("reviews.", "default"), ["reviews"]);
        assert_eq!(
            all("a.example.com", "x"),
            ["a.example.com", "*.example.com", "*.com"]
        );
        assert_eq!(expand("*.example", "x", SUFFIX), None);
        assert_eq!(expand("", "x", SUFFIX), None);
        assert_eq!(expand("a.b.c", "x", SUFFIX), None);
    }

    #[test]
    fn resolve_takes_the_first_candidate_found() {
        let known = ["reviews.bookinfo.svc.cluster.local", "*.example.com"];
        let find = |h: &'static str, ns: &'static str| {
            resolve(h, ns, SUFFIX, |c| {
                known.iter().find(|k| c.eq_ignore_case(k)).copied()
            })
        };
        assert_eq!(find("reviews.bookinfo", "default"), Some(known[0]));
        assert_eq!(find("reviews", "bookinfo"), Some(known[0]));
        assert_eq!(find("reviews", "default"), None);
        assert_eq!(find("api.example.com", "default"), Some(known[1]));
        let mut buf = String::from("x:");
        expand("Reviews", "bookinfo", SUFFIX)
            .unwrap()
            .write_lowercase(&mut buf);
        assert_eq!(buf, "x:reviews.bookinfo.svc.cluster.local");
    }

    #[test]
    fn short_names_are_the_names_that_expand_to_the_host() {
        let full = "reviews.bookinfo.svc.cluster.local";
        assert_eq!(
            short_names(full, "bookinfo", SUFFIX),
            ["reviews", "reviews.bookinfo", "reviews.bookinfo.svc"]
        );
        assert_eq!(
            short_names(full, "default", SUFFIX),
            ["reviews.bookinfo", "reviews.bookinfo.svc"]
        );
        assert!(short_names("api.example.com", "default", SUFFIX).is_empty());
        assert!(short_names("a.b.ns.svc.cluster.local", "ns", SUFFIX).is_empty());
        for (h, ns) in [(full, "bookinfo"), (full, "default")] {
            for s in short_names(h, ns, SUFFIX) {
                assert_eq!(all(s, ns)[1], h);
            }
        }
    }

    #[test]
    fn services_of_kubernetes_hosts() {
        assert_eq!(
            service_of("reviews.bookinfo.svc.cluster.local", SUFFIX),
            Some(("reviews", "bookinfo"))
        );
        assert_eq!(service_of("reviews.bookinfo.svc.example.org", SUFFIX), None);
        assert_eq!(service_of("a.b.ns.svc.cluster.local", SUFFIX), None);
        assert_eq!(service_of("svc.cluster.local", SUFFIX), None);
        assert_eq!(service_of("cluster.local", SUFFIX), None);
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
