//! Rules and match blocks a VirtualService can never use because an earlier
//! rule already takes every request they would match (for the analyzer's
//! `vs-unreachable-rule`).
//!
//! A block is shadowed by an earlier block that "covers" it: every condition
//! of the earlier block is implied by the later one (no condition at all,
//! `uri: {prefix: "/"}` alone, the same exact/regex, a prefix that the later
//! prefix or exact path starts with, the same or fewer header, query,
//! method, authority, scheme, port and source conditions). A rule without
//! match blocks covers everything after it.

use crate::config::common::{selector_matches, StringMatch, StringMatchKind};
use crate::config::networking::virtual_service::{HttpMatchRequest, VirtualService};

/// `(rule_index, match_index, shadowed_by_rule_index)`: `match_index` is
/// `None` when the whole rule is unreachable.
pub type Unreachable = (usize, Option<usize>, usize);

/// The unreachable http rules and match blocks of `vs`, in order.
pub fn unreachable_rules(vs: &VirtualService) -> Vec<Unreachable> {
    let mut out = Vec::new();
    let empty = HttpMatchRequest::default();
    for (i, rule) in vs.http.iter().enumerate() {
        let blocks: Vec<&HttpMatchRequest> = if rule.matches.is_empty() {
            vec![&empty]
        } else {
            rule.matches.iter().collect()
        };
        let mut shadowed: Vec<(usize, usize)> = Vec::new();
        for (j, b) in blocks.iter().enumerate() {
            let by = vs.http[..i].iter().enumerate().find_map(|(k, earlier)| {
                let covers = if earlier.matches.is_empty() {
                    true
                } else {
                    earlier.matches.iter().any(|a| covers(a, b))
                };
                covers.then_some(k)
            });
            if let Some(k) = by {
                shadowed.push((j, k));
            }
        }
        if !shadowed.is_empty() && shadowed.len() == blocks.len() {
            let by = shadowed.iter().map(|(_, k)| *k).max().unwrap_or(0);
            out.push((i, None, by));
        } else {
            out.extend(shadowed.into_iter().map(|(j, k)| (i, Some(j), k)));
        }
    }
    out
}

/// True when every request matching `b` also matches `a`.
pub fn covers(a: &HttpMatchRequest, b: &HttpMatchRequest) -> bool {
    let uri_ok = match (&a.uri, &b.uri) {
        (None, _) => true,
        (Some(au), _) if is_match_all_uri(au) => true,
        (Some(au), Some(bu)) => {
            if a.ignore_uri_case {
                str_covers_ci(au, bu)
            } else {
                !b.ignore_uri_case && str_covers(au, bu)
            }
        }
        (Some(_), None) => false,
    };
    uri_ok
        && opt_covers(&a.method, &b.method)
        && opt_covers(&a.authority, &b.authority)
        && opt_covers(&a.scheme, &b.scheme)
        && a.headers
            .iter()
            .all(|(k, am)| b.headers.get(k).is_some_and(|bm| str_covers(am, bm)))
        && a.query_params
            .iter()
            .all(|(k, am)| b.query_params.get(k).is_some_and(|bm| str_covers(am, bm)))
        && a.without_headers
            .iter()
            .all(|(k, am)| b.without_headers.get(k) == Some(am))
        && (a.port.is_none() || a.port == b.port)
        && selector_matches(&a.source_labels, &b.source_labels)
        && (a.source_namespace.is_none() || a.source_namespace == b.source_namespace)
        && (a.gateways.is_empty() && b.gateways.is_empty() || a.gateways == b.gateways)
}

fn is_match_all_uri(m: &StringMatch) -> bool {
    matches!(m.kind(), StringMatchKind::Present)
        || matches!(m.kind(), StringMatchKind::Prefix(p) if p.is_empty() || p == "/")
}

fn opt_covers(a: &Option<StringMatch>, b: &Option<StringMatch>) -> bool {
    match (a, b) {
        (None, _) => true,
        (Some(a), Some(b)) => str_covers(a, b),
        (Some(a), None) => matches!(a.kind(), StringMatchKind::Present),
    }
}

fn str_covers(a: &StringMatch, b: &StringMatch) -> bool {
    use StringMatchKind as K;
    match (a.kind(), b.kind()) {
        (K::Present, _) => true,
        (K::Prefix(p), K::Prefix(q) | K::Exact(q)) => q.starts_with(p),
        (K::Exact(e), K::Exact(f)) => e == f,
        (K::Regex(r), K::Regex(s)) => r == s,
        (K::Regex(r), K::Exact(e)) => {
            crate::route::matcher::FullRegex::new(r).is_ok_and(|re| re.is_match(e))
        }
        _ => false,
    }
}

fn str_covers_ci(a: &StringMatch, b: &StringMatch) -> bool {
    use StringMatchKind as K;
    match (a.kind(), b.kind()) {
        (K::Prefix(p), K::Prefix(q) | K::Exact(q)) => q
            .as_bytes()
            .get(..p.len())
            .is_some_and(|h| h.eq_ignore_ascii_case(p.as_bytes())),
        (K::Exact(e), K::Exact(f)) => e.eq_ignore_ascii_case(f),
        _ => str_covers(a, b),
    }
}
