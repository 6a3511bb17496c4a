//! Delegation: merging a root rule (`http[i].delegate`) with the rules of the
//! delegate VirtualService, as istiod does. Each delegate match block is
//! combined with each root block; a pair whose conditions conflict is
//! dropped (the delegate's uri must lie within the root's: same exact, or a
//! prefix/exact starting with the root's prefix; other fields must agree
//! when both set). Fields the delegate rule leaves unset (rewrite, timeout,
//! retries, fault, mirror, cors, headers) are inherited from the root rule.

use crate::config::common::{StringMatch, StringMatchKind};
use crate::config::networking::virtual_service::{HttpMatchRequest, HttpRoute};

/// The delegate rule as it applies under `root`, or `None` when every pair
/// of match blocks conflicts.
pub fn merge_delegate_rule(root: &HttpRoute, delegate: &HttpRoute) -> Option<HttpRoute> {
    let matches = merge_matches(&root.matches, &delegate.matches)?;
    let mut out = delegate.clone();
    out.matches = matches;
    out.name = match (&root.name, &delegate.name) {
        (Some(r), Some(d)) => Some(format!("{r}-{d}")),
        (r, d) => d.clone().or_else(|| r.clone()),
    };
    macro_rules! inherit {
        ($($f:ident),*) => { $( if out.$f.is_none() { out.$f = root.$f.clone(); } )* };
    }
    inherit!(
        rewrite,
        timeout,
        retries,
        fault,
        mirror,
        mirror_percent,
        mirror_percentage,
        cors_policy,
        headers
    );
    if out.mirrors.is_empty() && out.mirror.is_none() {
        out.mirrors = root.mirrors.clone();
    }
    Some(out)
}

fn merge_matches(
    root: &[HttpMatchRequest],
    delegate: &[HttpMatchRequest],
) -> Option<Vec<HttpMatchRequest>> {
    if root.is_empty() {
        return Some(delegate.to_vec());
    }
    if delegate.is_empty() {
        return Some(root.to_vec());
    }
    let merged: Vec<HttpMatchRequest> = root
        .iter()
        .flat_map(|r| delegate.iter().filter_map(move |d| merge_match(r, d)))
        .collect();
    (!merged.is_empty()).then_some(merged)
}

fn merge_match(root: &HttpMatchRequest, d: &HttpMatchRequest) -> Option<HttpMatchRequest> {
    let mut out = d.clone();
    match (&root.uri, &d.uri) {
        (Some(r), None) => {
            out.uri = Some(r.clone());
            out.ignore_uri_case = root.ignore_uri_case;
        }
        (Some(r), Some(dm)) if !uri_within(r, dm) => return None,
        _ => {}
    }
    for (out_f, root_f) in [
        (&mut out.scheme, &root.scheme),
        (&mut out.method, &root.method),
        (&mut out.authority, &root.authority),
    ] {
        match (root_f, &*out_f) {
            (Some(r), None) => *out_f = Some(r.clone()),
            (Some(r), Some(x)) if r != x => return None,
            _ => {}
        }
    }
    for (out_m, root_m) in [
        (&mut out.headers, &root.headers),
        (&mut out.query_params, &root.query_params),
        (&mut out.without_headers, &root.without_headers),
    ] {
        for (k, v) in root_m {
            match out_m.get(k) {
                Some(x) if x != v => return None,
                _ => {
                    out_m.insert(k.clone(), v.clone());
                }
            }
        }
    }
    for (k, v) in &root.source_labels {
        match out.source_labels.get(k) {
            Some(x) if x != v => return None,
            _ => {
                out.source_labels.insert(k.clone(), v.clone());
            }
        }
    }
    match (root.port, d.port) {
        (Some(r), Some(x)) if r != x => return None,
        (Some(r), None) => out.port = Some(r),
        _ => {}
    }
    match (&root.source_namespace, &d.source_namespace) {
        (Some(r), Some(x)) if r != x => return None,
        (Some(r), None) => out.source_namespace = Some(r.clone()),
        _ => {}
    }
    if out.gateways.is_empty() {
        out.gateways = root.gateways.clone();
    }
    out.name = match (&root.name, &d.name) {
        (Some(r), Some(x)) => Some(format!("{r}-{x}")),
        (r, x) => x.clone().or_else(|| r.clone()),
    };
    Some(out)
}

/// True when the delegate's uri match selects a subset of the root's.
fn uri_within(root: &StringMatch, d: &StringMatch) -> bool {
    match (root.kind(), d.kind()) {
        (StringMatchKind::Present, _) => true,
        (StringMatchKind::Prefix(p), StringMatchKind::Prefix(q) | StringMatchKind::Exact(q)) => {
            q.starts_with(p)
        }
        (StringMatchKind::Exact(e), StringMatchKind::Exact(f)) => e == f,
        (StringMatchKind::Regex(a), StringMatchKind::Regex(b)) => a == b,
        _ => false,
    }
}
