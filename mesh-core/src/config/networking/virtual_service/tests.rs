use serde_json::json;

use super::*;
use crate::config::validate::{Issues, Validate};

fn errors(v: serde_json::Value) -> Vec<(String, String)> {
    let vs: VirtualService = serde_json::from_value(v).expect("fixture deserializes");
    let mut issues = Issues::new();
    vs.validate("spec", &mut issues);
    issues
        .into_errors()
        .into_iter()
        .map(|e| (e.path, e.message))
        .collect()
}

fn base_rule() -> serde_json::Value {
    json!({"route": [{"destination": {"host": "reviews"}}]})
}

fn with_rule(rule: serde_json::Value) -> serde_json::Value {
    json!({"hosts": ["reviews"], "http": [rule]})
}

/// Asserts exactly one error, at `path`, whose message contains `needle`.
#[track_caller]
fn one_error(v: serde_json::Value, path: &str, needle: &str) {
    let e = errors(v);
    assert_eq!(e.len(), 1, "{e:#?}");
    assert_eq!(e[0].0, path, "{e:#?}");
    assert!(e[0].1.contains(needle), "{e:#?}");
}

#[test]
fn valid_full_example_has_no_errors() {
    let v = json!({
        "hosts": ["reviews", "reviews.prod.svc.cluster.local"],
        "gateways": ["mesh", "istio-system/ingress"],
        "exportTo": ["."],
        "http": [{
            "name": "r1",
            "match": [{"name": "m", "uri": {"prefix": "/api"}, "ignoreUriCase": true,
                       "headers": {"end-user": {"exact": "jason"}, "x-any": {}},
                       "withoutHeaders": {"x-skip": {"regex": "*"}},
                       "queryParams": {"v": {"regex": "[0-9]+"}},
                       "method": {"exact": "GET"}, "port": 9080,
                       "sourceLabels": {"app": "productpage"}, "sourceNamespace": "default",
                       "statPrefix": "api"}],
            "route": [
                {"destination": {"host": "reviews", "subset": "v1", "port": {"number": 9080}}, "weight": 90,
                 "headers": {"request": {"set": {"x-a": "1"}}}},
                {"destination": {"host": "reviews", "subset": "v2"}, "weight": 10}],
            "rewrite": {"uri": "/v1/api", "authority": "reviews.internal"},
            "timeout": "10s",
            "retries": {"attempts": 3, "perTryTimeout": "2s", "retryOn": "5xx,gateway-error,503,unavailable",
                        "retryRemoteLocalities": true, "retryIgnorePreviousHosts": false, "backoff": "50ms"},
            "mirrors": [{"destination": {"host": "shadow"}, "percentage": {"value": 5.0}}],
            "corsPolicy": {"allowOrigins": [{"exact": "https://a.example"}], "allowMethods": ["GET", "POST"],
                           "allowHeaders": ["x-a"], "exposeHeaders": ["*"], "maxAge": "24h",
                           "allowCredentials": true, "unmatchedPreflights": "IGNORE"},
            "headers": {"request": {"add": {"x-b": "2"}, "remove": ["x-c"]},
                        "response": {"set": {"x-d": "3"}}}
        }, {
            "match": [{"uri": {"exact": "/teapot"}}],
            "directResponse": {"status": 418, "body": {"string": "I'm a teapot"}}
        }, {
            "match": [{"uri": {"exact": "/old"}}],
            "redirect": {"uri": "/new", "derivePort": "FROM_REQUEST_PORT", "scheme": "https", "redirectCode": 308}
        }, {
            "fault": {"delay": {"fixedDelay": "5s", "percentage": {"value": 10}},
                      "abort": {"grpcStatus": "UNAVAILABLE", "percentage": {"value": 1}}},
            "route": [{"destination": {"host": "reviews"}}]
        }],
        "tcp": [{"match": [{"port": 3306, "destinationSubnets": ["10.0.0.0/8"]}],
                 "route": [{"destination": {"host": "mysql"}}]}],
        "tls": [{"match": [{"sniHosts": ["reviews.prod.svc.cluster.local"], "port": 443}],
                 "route": [{"destination": {"host": "reviews"}}]}]
    });
    assert_eq!(errors(v), vec![]);
}

#[test]
fn unknown_fields_are_rejected() {
    let r: Result<VirtualService, _> =
        serde_json::from_value(json!({"hosts": ["a"], "http": [{"rout": []}]}));
    assert!(r.is_err());
}

#[test]
fn hosts_are_required_except_for_delegates() {
    // A delegate VS (no hosts) is fine with http rules only.
    assert!(errors(json!({"http": [base_rule()]})).is_empty());
    one_error(
        json!({"gateways": ["gw"], "http": [base_rule()]}),
        "spec.gateways",
        "delegate",
    );
    one_error(
        json!({"tcp": [{"route": [{"destination": {"host": "a"}}]}]}),
        "spec.tcp",
        "delegate",
    );
    one_error(json!({"hosts": ["reviews"]}), "spec", "http, tcp or tls");
}

#[test]
fn host_rules() {
    one_error(
        json!({"hosts": ["*"], "http": [base_rule()]}),
        "spec.hosts[0]",
        "not allowed",
    );
    assert!(errors(json!({"hosts": ["*"], "gateways": ["gw"], "http": [base_rule()]})).is_empty());
    one_error(
        json!({"hosts": ["bad_host"], "http": [base_rule()]}),
        "spec.hosts[0]",
        "not a valid DNS name",
    );
    one_error(
        json!({"hosts": ["a.example.com", "*.example.com"], "http": [base_rule()]}),
        "spec.hosts[1]",
        "duplicate",
    );
    assert!(errors(json!({"hosts": ["10.0.0.1"], "http": [base_rule()]})).is_empty());
}

#[test]
fn weights() {
    let two = |a: i32, b: i32| {
        with_rule(json!({"route": [
            {"destination": {"host": "a"}, "weight": a},
            {"destination": {"host": "b"}, "weight": b}]}))
    };
    assert!(errors(two(90, 10)).is_empty());
    assert!(
        errors(two(100, 0)).is_empty(),
        "zero weights are allowed (dropped)"
    );
    assert!(
        errors(two(1, 1)).is_empty(),
        "Istio no longer requires a total of 100"
    );
    one_error(two(0, 0), "spec.http[0].route", "total weight");
    let e = errors(two(-1, 50));
    assert_eq!(e.len(), 1);
    assert_eq!(e[0].0, "spec.http[0].route[0].weight");
    assert!(errors(with_rule(
        json!({"route": [{"destination": {"host": "a"}, "weight": 0}]})
    ))
    .is_empty());
}

#[test]
fn action_exclusivity() {
    let dest = json!([{"destination": {"host": "a"}}]);
    one_error(
        with_rule(json!({"route": dest, "redirect": {"uri": "/x"}})),
        "spec.http[0].redirect",
        "both route and redirect",
    );
    one_error(
        with_rule(json!({"route": dest, "directResponse": {"status": 200}})),
        "spec.http[0].directResponse",
        "both route and directResponse",
    );
    one_error(
        with_rule(json!({"redirect": {"uri": "/x"}, "rewrite": {"uri": "/y"}})),
        "spec.http[0].rewrite",
        "rewrite and redirect",
    );
    one_error(
        with_rule(json!({"redirect": {"uri": "/x"}, "directResponse": {"status": 200}})),
        "spec.http[0].directResponse",
        "directResponse and redirect",
    );
    one_error(
        with_rule(json!({"delegate": {"name": "d"}, "route": dest})),
        "spec.http[0].route",
        "delegate",
    );
    one_error(
        with_rule(json!({"timeout": "1s"})),
        "spec.http[0]",
        "needs route",
    );
    one_error(
        json!({"http": [{"delegate": {"name": "x"}}]}),
        "spec.http[0].delegate",
        "cannot delegate again",
    );
    one_error(
        with_rule(
            json!({"route": dest, "mirror": {"host": "m"}, "mirrors": [{"destination": {"host": "n"}}]}),
        ),
        "spec.http[0].mirrors",
        "both mirror and mirrors",
    );
}

#[test]
fn rewrite_rules() {
    let dest = json!([{"destination": {"host": "a"}}]);
    one_error(
        with_rule(
            json!({"route": dest, "rewrite": {"uri": "/a", "uriRegexRewrite": {"match": "a", "rewrite": "b"}}}),
        ),
        "spec.http[0].rewrite.uriRegexRewrite",
        "only one of uri or uriRegexRewrite",
    );
    one_error(
        with_rule(json!({"route": dest, "rewrite": {}})),
        "spec.http[0].rewrite",
        "must set",
    );
    one_error(
        with_rule(
            json!({"route": dest, "rewrite": {"uriRegexRewrite": {"match": "(", "rewrite": "b"}}}),
        ),
        "spec.http[0].rewrite.uriRegexRewrite.match",
        "RE2",
    );
    one_error(
        with_rule(json!({"route": dest, "rewrite": {"authority": "x"},
                          "headers": {"request": {"set": {"host": "y"}}}})),
        "spec.http[0].headers",
        "authority is set more than once",
    );
}

#[test]
fn match_rules() {
    let m = |block: serde_json::Value| {
        with_rule(json!({"match": [block], "route": [{"destination": {"host": "a"}}]}))
    };
    one_error(
        m(json!({"uri": {"regex": "(unclosed"}})),
        "spec.http[0].match[0].uri.regex",
        "RE2",
    );
    one_error(
        m(json!({"uri": {"exact": "/a", "prefix": "/b"}})),
        "spec.http[0].match[0].uri",
        "only one of",
    );
    assert!(
        errors(m(json!({"uri": {"prefix": ""}}))).is_empty(),
        "empty uri prefix allowed"
    );
    one_error(
        m(json!({"method": {"prefix": ""}})),
        "spec.http[0].match[0].method.prefix",
        "must not be empty",
    );
    one_error(
        m(json!({"headers": {"bad header": {"exact": "x"}}})),
        "spec.http[0].match[0].headers.bad header",
        "not a valid header name",
    );
    one_error(
        m(json!({"port": 70000})),
        "spec.http[0].match[0].port",
        "out of range",
    );
    one_error(
        m(json!({"sourceNamespace": "Bad_NS"})),
        "spec.http[0].match[0].sourceNamespace",
        "namespace",
    );
    one_error(
        m(json!({"gateways": ["ns/"]})),
        "spec.http[0].match[0].gateways[0]",
        "namespace and name",
    );
    one_error(
        m(json!({"headers": {"@request.auth.claims.group": {"exact": "admin"}}})),
        "spec.http[0].match[0].headers.@request.auth.claims.group",
        "JWT",
    );
    one_error(
        m(json!({"queryParams": {"q": {"regex": ""}}})),
        "spec.http[0].match[0].queryParams.q.regex",
        "must not be empty",
    );
}

#[test]
fn retry_rules() {
    let r = |retries: serde_json::Value| {
        with_rule(json!({"route": [{"destination": {"host": "a"}}], "retries": retries}))
    };
    assert!(
        errors(r(json!({"attempts": 0}))).is_empty(),
        "attempts 0 disables"
    );
    one_error(
        r(json!({"attempts": -1})),
        "spec.http[0].retries.attempts",
        "negative",
    );
    one_error(
        r(json!({"retryOn": "5xx"})),
        "spec.http[0].retries.attempts",
        "attempts is 0",
    );
    one_error(
        r(json!({"attempts": 2, "retryOn": "5xx,bogus"})),
        "spec.http[0].retries.retryOn",
        "\"bogus\"",
    );
    one_error(
        r(json!({"attempts": 2, "retryOn": "5xx, reset"})),
        "spec.http[0].retries.retryOn",
        "no spaces",
    );
    one_error(
        r(json!({"attempts": 2, "retryOn": "600"})),
        "spec.http[0].retries.retryOn",
        "600",
    );
    one_error(
        r(json!({"attempts": 2, "perTryTimeout": "500us"})),
        "spec.http[0].retries.perTryTimeout",
        "1ms",
    );
    assert!(errors(r(json!({"attempts": 2, "retryOn": "retriable-4xx,409,cancelled,deadline-exceeded,internal,resource-exhausted,reset-before-request,envoy-ratelimited,retriable-headers,http3-post-connect-failure,refused-stream,connect-failure,retriable-status-codes"}))).is_empty());
}

#[test]
fn fault_rules() {
    let f = |fault: serde_json::Value| {
        with_rule(json!({"route": [{"destination": {"host": "a"}}], "fault": fault}))
    };
    one_error(f(json!({})), "spec.http[0].fault", "abort and/or a delay");
    one_error(
        f(json!({"abort": {"httpStatus": 700}})),
        "spec.http[0].fault.abort.httpStatus",
        "200-599",
    );
    one_error(
        f(json!({"abort": {"httpStatus": 503, "grpcStatus": "UNAVAILABLE"}})),
        "spec.http[0].fault.abort",
        "only one of",
    );
    one_error(
        f(json!({"abort": {"grpcStatus": "NOPE"}})),
        "spec.http[0].fault.abort.grpcStatus",
        "not supported",
    );
    one_error(
        f(json!({"abort": {"httpStatus": 503, "percentage": {"value": 101}}})),
        "spec.http[0].fault.abort.percentage.value",
        "out of range",
    );
    one_error(
        f(json!({"delay": {"exponentialDelay": "1s"}})),
        "spec.http[0].fault.delay.exponentialDelay",
        "not supported",
    );
    one_error(
        f(json!({"delay": {"fixedDelay": "0s"}})),
        "spec.http[0].fault.delay.fixedDelay",
        "1ms",
    );
    one_error(
        with_rule(json!({"redirect": {"uri": "/x"}, "fault": {"abort": {"httpStatus": 500}}})),
        "spec.http[0].fault",
        "fault and redirect",
    );
}

#[test]
fn redirect_and_direct_response_rules() {
    one_error(
        with_rule(json!({"redirect": {}})),
        "spec.http[0].redirect",
        "must set",
    );
    one_error(
        with_rule(json!({"redirect": {"uri": "/a", "redirectCode": 200}})),
        "spec.http[0].redirect.redirectCode",
        "3xx",
    );
    one_error(
        with_rule(json!({"redirect": {"scheme": "ftp"}})),
        "spec.http[0].redirect.scheme",
        "http",
    );
    one_error(
        with_rule(json!({"redirect": {"port": 80, "derivePort": "FROM_PROTOCOL_DEFAULT"}})),
        "spec.http[0].redirect.derivePort",
        "exclusive",
    );
    one_error(
        with_rule(json!({"directResponse": {"status": 99}})),
        "spec.http[0].directResponse.status",
        "200-599",
    );
    one_error(
        with_rule(
            json!({"directResponse": {"status": 200, "body": {"string": "a", "bytes": "Yg=="}}}),
        ),
        "spec.http[0].directResponse.body",
        "only one",
    );
}

#[test]
fn misc_route_rules() {
    let dest = json!([{"destination": {"host": "a"}}]);
    one_error(
        with_rule(json!({"route": dest, "timeout": "1.5ms"})),
        "spec.http[0].timeout",
        "sub-millisecond",
    );
    one_error(
        with_rule(json!({"route": dest, "mirrorPercentage": {"value": 150}})),
        "spec.http[0].mirrorPercentage.value",
        "out of range",
    );
    one_error(
        with_rule(json!({"route": dest, "mirrorPercent": 101})),
        "spec.http[0].mirrorPercent",
        "above 100",
    );
    one_error(
        with_rule(json!({"route": [{"destination": {"host": "*"}}]})),
        "spec.http[0].route[0].destination.host",
        "invalid",
    );
    one_error(
        with_rule(json!({"route": [{"destination": {"host": "a", "subset": "V1"}}]})),
        "spec.http[0].route[0].destination.subset",
        "DNS-1123",
    );
    one_error(
        with_rule(json!({"route": dest, "headers": {"response": {"set": {":status": "200"}}}})),
        "spec.http[0].headers.response.set.:status",
        "cannot be modified",
    );
    one_error(
        with_rule(json!({"route": dest, "corsPolicy": {"allowMethods": ["FETCH"]}})),
        "spec.http[0].corsPolicy.allowMethods[0]",
        "not a supported HTTP method",
    );
    one_error(
        with_rule(json!({"route": dest, "corsPolicy": {"maxAge": "1500ms"}})),
        "spec.http[0].corsPolicy.maxAge",
        "seconds",
    );
}

#[test]
fn tls_tcp_and_export_rules() {
    one_error(
        json!({"hosts": ["a.example.com"], "tls": [{"route": [{"destination": {"host": "a"}}]}]}),
        "spec.tls[0]",
        "at least one match",
    );
    one_error(
        json!({"hosts": ["a.example.com"], "tls": [{"match": [{"sniHosts": ["b.example.com"]}],
                "route": [{"destination": {"host": "a"}}]}]}),
        "spec.tls[0].match[0].sniHosts[0]",
        "not covered",
    );
    one_error(
        json!({"hosts": ["a"], "tcp": [{"match": [{"destinationSubnets": ["10.0.0.0/33"]}],
                "route": [{"destination": {"host": "a"}}]}]}),
        "spec.tcp[0].match[0].destinationSubnets[0]",
        "CIDR",
    );
    one_error(
        json!({"hosts": ["a"], "tcp": [{}]}),
        "spec.tcp[0].route",
        "needs route",
    );
    one_error(
        json!({"hosts": ["a"], "exportTo": ["Bad!"], "http": [base_rule()]}),
        "spec.exportTo[0]",
        "invalid",
    );
}

#[test]
fn round_trips_through_json() {
    let v = json!({"hosts": ["a"], "http": [{"match": [{"uri": {"prefix": "/"}}],
        "route": [{"destination": {"host": "a"}, "weight": 100}],
        "rewrite": {"uriRegexRewrite": {"match": "^/a", "rewrite": "/b"}}}]});
    let parsed: VirtualService = serde_json::from_value(v.clone()).expect("parses");
    assert_eq!(serde_json::to_value(&parsed).expect("serializes"), v);
    assert_eq!(parsed.http[0].matches.len(), 1);
}
