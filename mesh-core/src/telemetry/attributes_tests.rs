//! Tests of the attribute vocabulary as CEL sees it.

use std::borrow::Cow;

use super::*;
use crate::telemetry::CelExpr;

struct Upper;

impl HeaderLookup for Upper {
    fn header(&self, name: &str) -> Option<Cow<'_, str>> {
        (name == "user-agent").then(|| Cow::Owned("curl/8".to_string()))
    }
}

fn eval(e: &str, a: &Attributes<'_>) -> String {
    CelExpr::compile(e).unwrap().tag_value(a)
}

#[test]
fn headers_are_case_insensitive_and_joined() {
    let pairs = [("Accept", "a"), ("accept", "b"), ("Referer", "r")];
    let h = Headers::Pairs(&pairs);
    assert_eq!(h.get("accept").as_deref(), Some("a,b"));
    assert_eq!(h.get("REFERER").as_deref(), Some("r"));
    assert_eq!(h.get("none"), None);
    let a = Attributes {
        request: Request {
            headers: h,
            ..Request::default()
        },
        ..Attributes::default()
    };
    assert_eq!(eval("request.headers['ACCEPT']", &a), "a,b");
    assert_eq!(eval("request.referer", &a), "r");
}

#[test]
fn derived_request_attributes() {
    let pairs = [("x-request-id", "rid-1"), ("user-agent", "ua")];
    let mut a = Attributes {
        request: Request {
            path: Some("/p?q=1"),
            headers: Headers::Pairs(&pairs),
            ..Request::default()
        },
        ..Attributes::default()
    };
    assert_eq!(eval("request.id", &a), "rid-1");
    assert_eq!(eval("request.useragent", &a), "ua");
    assert_eq!(eval("request.url_path", &a), "/p");
    assert_eq!(eval("request.path", &a), "/p?q=1");
    a.request.id = Some("explicit");
    assert_eq!(eval("request.id", &a), "explicit");
}

#[test]
fn every_group_resolves() {
    let lookup = Upper;
    let fs = [("upstream_peer", "reviews-v2")];
    let a = Attributes {
        request: Request {
            headers: Headers::Lookup(&lookup),
            method: Some("POST"),
            scheme: Some("https"),
            protocol: Some("HTTP/2"),
            total_size: Some(99),
            ..Request::default()
        },
        response: Response {
            code: Some(404),
            code_details: Some("route_not_found"),
            flags: Some(16),
            grpc_status: Some(5),
            size: Some(7),
            total_size: Some(70),
            ..Response::default()
        },
        connection: Connection {
            mtls: Some(false),
            requested_server_name: Some("outbound_.9080_._.reviews"),
            id: Some(42),
        },
        source: Peer {
            address: Some("10.0.0.1"),
            port: Some(40000),
        },
        destination: Peer {
            address: Some("10.0.0.2"),
            port: Some(9080),
        },
        upstream: Peer {
            address: Some("10.0.0.3"),
            port: Some(15006),
        },
        filter_state: &fs,
    };
    for (expr, want) in [
        ("request.useragent", "curl/8"),
        ("request.headers['User-Agent']", "curl/8"),
        ("request.method", "POST"),
        ("request.scheme", "https"),
        ("request.protocol", "HTTP/2"),
        ("request.total_size", "99"),
        ("response.code", "404"),
        ("response.code_details", "route_not_found"),
        ("response.flags", "16"),
        ("response.grpc_status", "5"),
        ("response.size + response.total_size", "77"),
        ("connection.mtls", "false"),
        (
            "connection.requested_server_name",
            "outbound_.9080_._.reviews",
        ),
        ("connection.id", "42"),
        ("source.address", "10.0.0.1"),
        ("source.port", "40000"),
        ("destination.address", "10.0.0.2"),
        ("upstream.port", "15006"),
        ("filter_state['upstream_peer']", "reviews-v2"),
        ("has(request.host)", "false"),
        ("has(request.method)", "true"),
    ] {
        assert_eq!(eval(expr, &a), want, "{expr}");
    }
}
