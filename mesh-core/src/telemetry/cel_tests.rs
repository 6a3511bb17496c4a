//! Tests of CEL compilation and of the filter / tag-value rules.

use std::time::{Duration, UNIX_EPOCH};

use super::*;
use crate::telemetry::attributes::{Connection, Headers, Peer, Request, Response};

fn attrs<'a>(headers: &'a [(&'a str, &'a str)], code: Option<u16>) -> Attributes<'a> {
    Attributes {
        request: Request {
            path: Some("/api/login?x=1"),
            host: Some("reviews.default.svc.cluster.local"),
            method: Some("GET"),
            headers: Headers::Pairs(headers),
            duration: Some(Duration::from_millis(1500)),
            time: Some(UNIX_EPOCH + Duration::from_secs(1_700_000_000)),
            size: Some(12),
            ..Request::default()
        },
        response: Response {
            code,
            ..Response::default()
        },
        connection: Connection {
            mtls: Some(true),
            ..Connection::default()
        },
        destination: Peer {
            address: Some("10.0.0.7"),
            port: Some(9080),
        },
        ..Attributes::default()
    }
}

#[test]
fn parse_errors_are_rejected() {
    for bad in ["response.code >=", "request.headers['x", "(", "a b"] {
        let e = CelExpr::compile(bad).unwrap_err();
        assert_eq!(e.expression, bad);
        assert!(!e.reason.is_empty());
    }
    assert!(CelExpr::compile("response.code >= 400").is_ok());
}

#[test]
fn filter_logs_only_on_true() {
    let f = CelExpr::compile("response.code >= 400").unwrap();
    assert!(f.filter(&attrs(&[], Some(503))));
    assert!(!f.filter(&attrs(&[], Some(200))));
    // No response code (e.g. a reset before headers): an error, not logged.
    assert!(!f.filter(&attrs(&[], None)));
    // Not a bool: not logged.
    assert!(!CelExpr::compile("response.code")
        .unwrap()
        .filter(&attrs(&[], Some(500))));
    // A missing header is an error: not logged.
    let h = CelExpr::compile("request.headers['x-user-type'] == 'dev'").unwrap();
    assert!(!h.filter(&attrs(&[], Some(200))));
    assert!(h.filter(&attrs(&[("X-User-Type", "dev")], Some(200))));
    // `in` and `has` do not fail on absence.
    let c = CelExpr::compile("'x-debug' in request.headers || !has(response.code)").unwrap();
    assert!(c.filter(&attrs(&[("x-debug", "1")], Some(200))));
    assert!(!c.filter(&attrs(&[], Some(200))));
    assert!(c.filter(&attrs(&[], None)));
}

#[test]
fn tag_values_print_or_unknown() {
    let a = attrs(&[("x-foo", "bar")], Some(201));
    let v = |e: &str| CelExpr::compile(e).unwrap().tag_value(&a);
    assert_eq!(v("request.host"), "reviews.default.svc.cluster.local");
    assert_eq!(v("request.headers['x-foo']"), "bar");
    assert_eq!(v("response.code"), "201");
    assert_eq!(v("string(destination.port)"), "9080");
    assert_eq!(v("'literal'"), "literal");
    assert_eq!(v("connection.mtls"), "true");
    assert_eq!(v("request.url_path"), "/api/login");
    assert_eq!(
        v("request.url_path.startsWith('/api') ? 'api' : 'other'"),
        "api"
    );
    assert_eq!(v("request.duration > duration('1s')"), "true");
    assert_eq!(
        v("request.time > timestamp('2020-01-01T00:00:00Z')"),
        "true"
    );
    // Failures give Istio's `unknown`.
    assert_eq!(v("request.headers['x-missing']"), UNKNOWN_TAG_VALUE);
    assert_eq!(v("request.scheme"), UNKNOWN_TAG_VALUE);
    assert_eq!(v("nosuchvar.x"), UNKNOWN_TAG_VALUE);
    assert_eq!(v("request.headers"), UNKNOWN_TAG_VALUE);
}

#[test]
fn keeps_source_for_equality_and_serialization() {
    let a = CelExpr::compile("request.host").unwrap();
    let b = CelExpr::compile("request.host").unwrap();
    assert_eq!(a, b);
    assert_ne!(a, CelExpr::compile("request.path").unwrap());
    assert_eq!(serde_json::to_string(&a).unwrap(), "\"request.host\"");
    assert_eq!(format!("{a:?}"), "CelExpr(\"request.host\")");
    assert_eq!(a.source(), "request.host");
}

#[test]
fn unparsable_expression_fails_closed() {
    let e = CelExpr::compile_or_failing("response.code >=");
    assert!(!e.filter(&attrs(&[], Some(500))));
    assert_eq!(e.tag_value(&attrs(&[], Some(500))), UNKNOWN_TAG_VALUE);
    assert_eq!(e.source(), "response.code >=");
    let ok = CelExpr::compile_or_failing("response.code >= 400");
    assert!(ok.filter(&attrs(&[], Some(500))));
}
