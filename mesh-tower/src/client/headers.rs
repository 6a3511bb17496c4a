//! Request and response header operations of a route (`headers.request` /
//! `headers.response` of an Istio HTTP rule and of its destinations).
//!
//! Order as Envoy evaluates a header parser: removals first, then `set`
//! (overwrite) and `add` (append). Destination-level operations run before
//! the route's, so a route-level `set` of the same header wins, as in Envoy
//! with `most_specific_header_mutations_wins` left false. Invalid names or
//! values (which validation reports) are skipped.

use http::{HeaderMap, HeaderName, HeaderValue};
use mesh_core::route::model::HeaderOps;

/// Applies `ops` to `headers`.
pub fn apply(ops: &HeaderOps, headers: &mut HeaderMap) {
    if ops.is_empty() {
        return;
    }
    for name in &ops.remove {
        if let Ok(n) = HeaderName::from_bytes(name.as_bytes()) {
            headers.remove(n);
        }
    }
    for (name, value) in &ops.set {
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            headers.insert(n, v);
        }
    }
    for (name, value) in &ops.add {
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            headers.append(n, v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remove_then_set_then_add() {
        let mut h = HeaderMap::new();
        h.insert("x-a", HeaderValue::from_static("1"));
        h.insert("x-gone", HeaderValue::from_static("1"));
        let ops = HeaderOps {
            set: vec![("x-a".into(), "2".into())],
            add: vec![("x-b".into(), "3".into()), ("x-b".into(), "4".into())],
            remove: vec!["x-gone".into()],
        };
        apply(&ops, &mut h);
        assert_eq!(h["x-a"], "2");
        assert_eq!(h.get_all("x-b").iter().count(), 2);
        assert!(h.get("x-gone").is_none());
    }
}
