use serde_json::json;

use super::compile::*;
use super::matcher::*;
use super::model::*;
use super::*;
use crate::config::common::Labels;
use crate::config::networking::virtual_service::VirtualService;
use crate::host::DEFAULT_DOMAIN_SUFFIX as SUFFIX;
use crate::model::Client;
use crate::retry::RetryOrigin;

fn vs(v: serde_json::Value) -> VirtualService {
    serde_json::from_value(v).expect("fixture deserializes")
}

fn client(ns: &str, labels: &[(&str, &str)]) -> Client {
    let labels: Labels = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Client::new(ns, labels)
}

struct Fixture(Vec<(String, String, VirtualService)>);

impl Fixture {
    fn new(items: &[(&str, &str, serde_json::Value)]) -> Self {
        Self(
            items
                .iter()
                .map(|(ns, name, v)| (ns.to_string(), name.to_string(), vs(v.clone())))
                .collect(),
        )
    }
    fn refs(&self) -> Vec<VsRef<'_>> {
        self.0
            .iter()
            .map(|(ns, name, spec)| VsRef {
                namespace: ns,
                name,
                spec,
            })
            .collect()
    }
    fn table(&self, c: &Client, host: &str, port: Option<u16>) -> RouteTable {
        compile_route_table(&self.refs(), c, host, port, SUFFIX)
    }
}

fn one(v: serde_json::Value) -> RouteTable {
    Fixture::new(&[("default", "vs", v)]).table(&client("default", &[]), "reviews", Some(9080))
}

fn dest(host: &str) -> serde_json::Value {
    json!([{"destination": {"host": host}}])
}

fn get(path: &str) -> RequestInfo<'_> {
    RequestInfo::get(path)
}

fn routed_index(t: &RouteTable, r: &RequestInfo<'_>) -> Option<usize> {
    t.route(r).and_then(|r| r.rule_index)
}

#[test]
fn rules_in_order_first_match_wins() {
    let t = one(json!({
        "hosts": ["reviews"],
        "http": [
            {"match": [{"uri": {"prefix": "/api"}}], "route": dest("a")},
            {"match": [{"uri": {"prefix": "/api/v2"}}], "route": dest("b")},
            {"route": dest("c")}
        ]
    }));
    assert_eq!(routed_index(&t, &get("/api/v2/x")), Some(0));
    assert_eq!(routed_index(&t, &get("/other")), Some(2));
}

#[test]
fn fields_in_a_block_are_anded_blocks_ored() {
    let t = one(json!({
        "hosts": ["reviews"],
        "http": [
            {"match": [
                {"uri": {"prefix": "/a"}, "method": {"exact": "POST"}},
                {"headers": {"x-canary": {"exact": "1"}}}
            ], "route": dest("a")}
        ]
    }));
    let post = RequestInfo {
        method: "POST",
        ..get("/a/1")
    };
    assert_eq!(routed_index(&t, &post), Some(0));
    assert_eq!(routed_index(&t, &get("/a/1")), None, "GET fails the AND");
    let h = [("X-Canary", "1")];
    let canary = RequestInfo {
        headers: &h,
        ..get("/zzz")
    };
    assert_eq!(routed_index(&t, &canary), Some(0), "second block ORed");
    assert_eq!(t.route_with_match(&canary).map(|(_, m)| m), Some(Some(1)));
}

#[test]
fn prefix_is_a_raw_string_prefix() {
    let t = one(json!({"hosts": ["reviews"], "http": [
        {"match": [{"uri": {"prefix": "/v2"}}], "route": dest("a")}]}));
    assert!(t.route(&get("/v2example")).is_some());
    assert!(t.route(&get("/v2/x")).is_some());
    assert!(t.route(&get("/v1")).is_none());
}

#[test]
fn regex_is_a_full_match_on_the_path_without_query() {
    let t = one(json!({"hosts": ["reviews"], "http": [
        {"match": [{"uri": {"regex": "/v2.*"}}], "route": dest("a")},
        {"match": [{"uri": {"exact": "/exact"}}], "route": dest("b")}]}));
    assert!(t.route(&get("/v2/anything")).is_some());
    assert!(
        t.route(&get("/xv2")).is_none(),
        "regex must match the whole path"
    );
    assert_eq!(
        routed_index(&t, &get("/exact?x=1")),
        Some(1),
        "query is not part of the path"
    );
    assert!(t.route(&get("/exact/")).is_none());
}

#[test]
fn ignore_uri_case() {
    let t = one(json!({"hosts": ["reviews"], "http": [
        {"match": [{"uri": {"prefix": "/API"}, "ignoreUriCase": true}], "route": dest("a")},
        {"match": [{"uri": {"exact": "/Login"}, "ignoreUriCase": true}], "route": dest("b")},
        {"match": [{"uri": {"regex": "/re.*"}, "ignoreUriCase": true}], "route": dest("c")}]}));
    assert_eq!(routed_index(&t, &get("/api/x")), Some(0));
    assert_eq!(routed_index(&t, &get("/LOGIN")), Some(1));
    assert_eq!(
        routed_index(&t, &get("/RE/x")),
        None,
        "regex stays case-sensitive"
    );
    let t = one(json!({"hosts": ["reviews"], "http": [
        {"match": [{"uri": {"prefix": "/API"}}], "route": dest("a")}]}));
    assert!(t.route(&get("/api")).is_none());
}

#[test]
fn headers_exact_prefix_regex_present() {
    let t = one(json!({"hosts": ["reviews"], "http": [
        {"match": [{"headers": {"end-user": {"exact": "jason"}}}], "route": dest("a")},
        {"match": [{"headers": {"x-ver": {"prefix": "v2"}}}], "route": dest("b")},
        {"match": [{"headers": {"x-id": {"regex": "[0-9]+"}}}], "route": dest("c")},
        {"match": [{"headers": {"x-debug": {}}}], "route": dest("d")}]}));
    let case = |h: &[(&'static str, &'static str)]| -> Option<usize> {
        let v: Vec<(&str, &str)> = h.to_vec();
        routed_index(
            &t,
            &RequestInfo {
                headers: &v,
                ..get("/")
            },
        )
    };
    assert_eq!(case(&[("end-user", "jason")]), Some(0));
    assert_eq!(
        case(&[("End-User", "jason")]),
        Some(0),
        "header names are case-insensitive"
    );
    assert_eq!(
        case(&[("end-user", "Jason")]),
        None,
        "values are case-sensitive"
    );
    assert_eq!(case(&[("x-ver", "v2.1")]), Some(1));
    assert_eq!(case(&[("x-id", "123")]), Some(2));
    assert_eq!(case(&[("x-id", "12a")]), None);
    assert_eq!(
        case(&[("x-debug", "")]),
        Some(3),
        "{{}} means present, any value"
    );
    assert_eq!(case(&[]), None, "absent header never matches");
}

#[test]
fn without_headers() {
    let t = one(json!({"hosts": ["reviews"], "http": [
        {"match": [{"withoutHeaders": {"x-internal": {}}}], "route": dest("a")},
        {"match": [{"withoutHeaders": {"x-env": {"exact": "prod"}}}], "route": dest("b")}]}));
    assert_eq!(
        routed_index(&t, &get("/")),
        Some(0),
        "absent header satisfies withoutHeaders {{}}"
    );
    // A request without x-env matches `withoutHeaders: {x-env: {exact:
    // prod}}`: istiod sets treat_missing_header_as_empty, so Envoy reads
    // the missing header as "" and "" is not "prod".
    let h = [("x-internal", "1")];
    assert_eq!(
        routed_index(
            &t,
            &RequestInfo {
                headers: &h,
                ..get("/")
            }
        ),
        Some(1),
        "absent header satisfies withoutHeaders with a value match"
    );
    let h = [("x-internal", "1"), ("x-env", "dev")];
    assert_eq!(
        routed_index(
            &t,
            &RequestInfo {
                headers: &h,
                ..get("/")
            }
        ),
        Some(1)
    );
    let h = [("x-internal", "1"), ("x-env", "prod")];
    assert_eq!(
        routed_index(
            &t,
            &RequestInfo {
                headers: &h,
                ..get("/")
            }
        ),
        None
    );
}

#[test]
fn query_params() {
    let t = one(json!({"hosts": ["reviews"], "http": [
        {"match": [{"queryParams": {"v": {"exact": "2"}}}], "route": dest("a")},
        {"match": [{"queryParams": {"debug": {}}}], "route": dest("b")},
        {"match": [{"queryParams": {"name": {"regex": "a b"}}}], "route": dest("c")}]}));
    assert_eq!(routed_index(&t, &get("/p?x=1&v=2")), Some(0));
    assert_eq!(routed_index(&t, &get("/p?v=3")), None);
    assert_eq!(routed_index(&t, &get("/p?debug")), Some(1));
    assert_eq!(
        routed_index(&t, &get("/p?name=a%20b")),
        Some(2),
        "values are percent-decoded"
    );
    assert_eq!(routed_index(&t, &get("/p")), None);
}

#[test]
fn method_authority_scheme_port() {
    let t = one(json!({"hosts": ["reviews"], "http": [
        {"match": [{"method": {"exact": "DELETE"}}], "route": dest("a")},
        {"match": [{"authority": {"prefix": "reviews.prod"}}], "route": dest("b")},
        {"match": [{"scheme": {"exact": "https"}}], "route": dest("c")}]}));
    assert_eq!(
        routed_index(
            &t,
            &RequestInfo {
                method: "DELETE",
                ..get("/")
            }
        ),
        Some(0)
    );
    assert_eq!(
        routed_index(
            &t,
            &RequestInfo {
                authority: "reviews.prod:9080",
                ..get("/")
            }
        ),
        Some(1)
    );
    assert_eq!(
        routed_index(
            &t,
            &RequestInfo {
                scheme: "https",
                ..get("/")
            }
        ),
        Some(2)
    );
    assert_eq!(routed_index(&t, &get("/")), None);

    // Port filters rules when compiling for a port.
    let f = Fixture::new(&[(
        "default",
        "vs",
        json!({"hosts": ["reviews"], "http": [
        {"match": [{"port": 9080}], "route": dest("a")},
        {"match": [{"port": 8080}], "route": dest("b")}]}),
    )]);
    let c = client("default", &[]);
    let t = f.table(&c, "reviews", Some(8080));
    assert_eq!(t.routes.len(), 1);
    assert_eq!(routed_index(&t, &get("/")), Some(1));
    // Without a table port, the request port decides.
    let t = f.table(&c, "reviews", None);
    assert_eq!(
        routed_index(
            &t,
            &RequestInfo {
                port: Some(9080),
                ..get("/")
            }
        ),
        Some(0)
    );
    assert_eq!(
        routed_index(
            &t,
            &RequestInfo {
                port: Some(8080),
                ..get("/")
            }
        ),
        Some(1)
    );
}

#[test]
fn source_labels_namespace_and_gateways_filter_per_client() {
    let f = Fixture::new(&[(
        "default",
        "vs",
        json!({"hosts": ["reviews"], "http": [
        {"match": [{"sourceLabels": {"app": "productpage", "version": "v1"}}], "route": dest("a")},
        {"match": [{"sourceNamespace": "team-b"}], "route": dest("b")},
        {"match": [{"gateways": ["istio-system/ingress"]}], "route": dest("c")},
        {"route": dest("d")}]}),
    )]);
    let pp = client(
        "default",
        &[("app", "productpage"), ("version", "v1"), ("x", "y")],
    );
    assert_eq!(
        routed_index(&f.table(&pp, "reviews", None), &get("/")),
        Some(0)
    );
    let other = client("default", &[("app", "productpage")]);
    assert_eq!(
        routed_index(&f.table(&other, "reviews", None), &get("/")),
        Some(3)
    );
    let b = client("team-b", &[]);
    let t = f.table(&b, "reviews.default.svc.cluster.local", None);
    assert_eq!(routed_index(&t, &get("/")), Some(1));
    // The gateway-only block never applies to a mesh client.
    assert!(f
        .table(&other, "reviews", None)
        .routes
        .iter()
        .all(|r| r.rule_index != Some(2)));
    // ... but does to the gateway (the VS itself must be bound to it too).
    let f = Fixture::new(&[(
        "default",
        "vs",
        json!({"hosts": ["reviews"],
        "gateways": ["mesh", "istio-system/ingress"], "http": [
        {"match": [{"gateways": ["istio-system/ingress"]}], "route": dest("c")},
        {"route": dest("d")}]}),
    )]);
    let mut gw = client("istio-system", &[]);
    gw.gateways = vec!["istio-system/ingress".into()];
    assert_eq!(
        routed_index(
            &f.table(&gw, "reviews.default.svc.cluster.local", None),
            &get("/")
        ),
        Some(0)
    );
    assert_eq!(
        routed_index(&f.table(&other, "reviews", None), &get("/")),
        Some(1)
    );
}

#[test]
fn gateway_only_virtual_service_does_not_apply_to_mesh() {
    let f = Fixture::new(&[(
        "default",
        "vs",
        json!({"hosts": ["reviews"],
        "gateways": ["ingress"], "http": [{"route": dest("elsewhere")}]}),
    )]);
    let t = f.table(&client("default", &[]), "reviews", Some(9080));
    assert_eq!(t.virtual_service, None);
    assert_eq!(
        t.routes[0].destinations()[0].host,
        "reviews.default.svc.cluster.local"
    );
}

#[test]
fn short_hosts_resolve_against_the_vs_namespace() {
    let f = Fixture::new(&[(
        "prod",
        "vs",
        json!({"hosts": ["reviews"], "http": [
        {"route": [{"destination": {"host": "reviews", "subset": "v2", "port": {"number": 9080}}}]}]}),
    )]);
    // The client in another namespace must use the FQDN or the prod short host.
    let c = client("default", &[]);
    let t = f.table(&c, "reviews", None);
    assert_eq!(
        t.virtual_service, None,
        "reviews from default is reviews.default..."
    );
    let t = f.table(&c, "reviews.prod.svc.cluster.local", None);
    assert_eq!(t.virtual_service.as_deref(), Some("prod/vs"));
    let d = &t.routes[0].destinations()[0];
    assert_eq!(d.host, "reviews.prod.svc.cluster.local");
    assert_eq!(d.subset.as_deref(), Some("v2"));
    assert_eq!(d.port, Some(9080));
}

#[test]
fn exact_host_beats_wildcard_and_ties_go_by_namespace_name() {
    let f = Fixture::new(&[
        (
            "a",
            "wild",
            json!({"hosts": ["*.example.com"], "http": [{"route": dest("w.example.com")}]}),
        ),
        (
            "b",
            "exact",
            json!({"hosts": ["api.example.com"], "http": [{"route": dest("e.example.com")}]}),
        ),
        (
            "c",
            "exact2",
            json!({"hosts": ["api.example.com"], "http": [{"route": dest("x.example.com")}]}),
        ),
    ]);
    let c = client("default", &[]);
    assert_eq!(
        f.table(&c, "api.example.com", None)
            .virtual_service
            .as_deref(),
        Some("b/exact")
    );
    assert_eq!(
        f.table(&c, "web.example.com", None)
            .virtual_service
            .as_deref(),
        Some("a/wild")
    );
}

#[test]
fn zero_weights_dropped_and_lone_destination_gets_100() {
    let t = one(json!({"hosts": ["reviews"], "http": [{"route": [
        {"destination": {"host": "reviews", "subset": "v1"}, "weight": 100},
        {"destination": {"host": "reviews", "subset": "v2"}, "weight": 0}]}]}));
    let d = t.routes[0].destinations();
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].subset.as_deref(), Some("v1"));
    let t = one(json!({"hosts": ["reviews"], "http": [{"route": [
        {"destination": {"host": "reviews"}, "weight": 7}]}]}));
    assert_eq!(t.routes[0].destinations()[0].weight, 100);
    let t = one(json!({"hosts": ["reviews"], "http": [{"route": [
        {"destination": {"host": "reviews"}}]}]}));
    assert_eq!(t.routes[0].destinations()[0].weight, 100);
}

/// A tiny xorshift64* generator for reproducible statistics.
struct XorShift(u64);
impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

#[test]
fn weighted_pick_follows_weights() {
    let t = one(json!({"hosts": ["reviews"], "http": [{"route": [
        {"destination": {"host": "reviews", "subset": "v1"}, "weight": 70},
        {"destination": {"host": "reviews", "subset": "v2"}, "weight": 20},
        {"destination": {"host": "reviews", "subset": "v3"}, "weight": 10}]}]}));
    let route = &t.routes[0];
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
    let n = 100_000u32;
    let mut counts = [0u32; 3];
    for _ in 0..n {
        let d = route.pick(rng.next()).expect("a destination");
        let i = match d.subset.as_deref() {
            Some("v1") => 0,
            Some("v2") => 1,
            _ => 2,
        };
        counts[i] += 1;
    }
    // Expected share p with n draws: stddev = sqrt(n p (1-p)); allow 5 sigma.
    for (i, p) in [0.7f64, 0.2, 0.1].iter().enumerate() {
        let expected = f64::from(n) * p;
        let sigma = (f64::from(n) * p * (1.0 - p)).sqrt();
        let got = f64::from(counts[i]);
        assert!(
            (got - expected).abs() < 5.0 * sigma,
            "dest {i}: {got} vs {expected}"
        );
    }
}

#[test]
fn default_route_when_no_virtual_service() {
    let t = Fixture::new(&[]).table(&client("default", &[]), "ratings", Some(9080));
    assert_eq!(t.virtual_service, None);
    assert_eq!(t.routes.len(), 1);
    let r = t
        .route(&get("/anything"))
        .expect("default route matches all");
    let d = r.pick(12345).expect("destination");
    assert_eq!(d.host, "ratings.default.svc.cluster.local");
    assert_eq!(d.port, Some(9080));
    assert_eq!(d.weight, 100);
    assert_eq!(r.timeout, None);
    assert_eq!(r.retries.origin, RetryOrigin::Default);
    assert_eq!(r.retries.attempts, 2);
}

#[test]
fn route_carries_actions_and_policies() {
    let t = one(json!({"hosts": ["reviews"], "http": [
        {"name": "main", "match": [{"uri": {"prefix": "/old"}}],
         "rewrite": {"uri": "/new", "authority": "new.svc"},
         "timeout": "10s",
         "retries": {"attempts": 3, "perTryTimeout": "2s", "retryOn": "5xx"},
         "mirror": {"host": "shadow"}, "mirrorPercentage": {"value": 25.0},
         "headers": {"request": {"set": {"X-A": "1"}, "remove": ["x-b"]}, "response": {"add": {"x-c": "2"}}},
         "route": [{"destination": {"host": "reviews"}, "headers": {"request": {"set": {"x-d": "3"}}}}]},
        {"match": [{"uri": {"exact": "/go"}}], "redirect": {"uri": "/gone", "redirectCode": 302}},
        {"match": [{"uri": {"exact": "/teapot"}}], "directResponse": {"status": 418, "body": {"string": "short and stout"}}},
        {"match": [{"uri": {"prefix": "/f"}}], "fault": {"abort": {"httpStatus": 503}, "delay": {"fixedDelay": "1s", "percentage": {"value": 50}}}, "route": dest("reviews")}
    ]}));
    let r = t.route(&get("/old/page?q=1")).expect("route");
    assert_eq!(r.name.as_deref(), Some("main"));
    assert_eq!(r.timeout.map(|d| d.to_string()), Some("10s".into()));
    assert_eq!(r.retries.attempts, 3);
    assert_eq!(r.mirrors[0].host, "shadow.default.svc.cluster.local");
    assert_eq!(r.mirrors[0].percentage, 25.0);
    assert_eq!(
        r.request_headers.set,
        vec![("x-a".to_string(), "1".to_string())]
    );
    assert_eq!(r.destinations()[0].request_headers.set[0].0, "x-d");
    let rw = r.rewrite.as_ref().expect("rewrite");
    let (_, m) = t.route_with_match(&get("/old/page?q=1")).expect("route");
    assert_eq!(
        rw.rewrite_path(r, m, "/old/page?q=1").as_deref(),
        Some("/new/page?q=1")
    );
    match &t.route(&get("/go")).expect("redirect").action {
        Action::Redirect(rd) => assert_eq!((rd.uri.as_deref(), rd.code), (Some("/gone"), 302)),
        a => panic!("{a:?}"),
    }
    match &t.route(&get("/teapot")).expect("direct").action {
        Action::DirectResponse(d) => assert_eq!(d.status, 418),
        a => panic!("{a:?}"),
    }
    let f = t
        .route(&get("/f"))
        .and_then(|r| r.fault.clone())
        .expect("fault");
    let abort = f.abort.expect("abort");
    assert_eq!(abort.http_status, Some(503));
    assert_eq!(abort.percentage, 0.0, "a missing percentage means 0%");
    assert_eq!(f.delay.map(|d| d.percentage), Some(50.0));
}

#[test]
fn regex_rewrite_uses_group_references() {
    let rr = RegexRewrite::new("^/service/([^/]+)(/.*)$", "\\2/instance/\\1").expect("regex");
    let rw = Rewrite {
        uri: None,
        authority: None,
        uri_regex: Some(rr),
    };
    let r = default_route("h", None);
    assert_eq!(
        rw.rewrite_path(&r, None, "/service/foo/v1/api").as_deref(),
        Some("/v1/api/instance/foo")
    );
}

#[test]
fn delegate_merges_matches_and_inherits_fields() {
    let f = Fixture::new(&[
        (
            "default",
            "root",
            json!({"hosts": ["reviews"], "http": [
            {"match": [{"uri": {"prefix": "/productpage"}}], "timeout": "5s",
             "delegate": {"name": "child", "namespace": "team"}},
            {"route": dest("fallback")}]}),
        ),
        (
            "team",
            "child",
            json!({"http": [
            {"match": [{"uri": {"prefix": "/productpage/v2"}}], "route": dest("v2")},
            {"match": [{"uri": {"prefix": "/other"}}], "route": dest("conflict")},
            {"route": dest("v1")}]}),
        ),
    ]);
    let t = f.table(&client("default", &[]), "reviews", None);
    let r = t.route(&get("/productpage/v2/x")).expect("route");
    assert_eq!(
        r.destinations()[0].host,
        "v2.team.svc.cluster.local",
        "delegate resolves in its namespace"
    );
    assert_eq!(r.rule_index, Some(0));
    assert_eq!(r.delegate.as_ref().map(|d| d.rule_index), Some(0));
    assert_eq!(
        r.timeout.map(|d| d.to_string()),
        Some("5s".into()),
        "inherited from root"
    );
    let r = t.route(&get("/productpage/v1")).expect("route");
    assert_eq!(r.destinations()[0].host, "v1.team.svc.cluster.local");
    // The conflicting delegate rule is dropped; /other goes to the fallback.
    let r = t.route(&get("/other")).expect("route");
    assert_eq!(r.rule_index, Some(1));
    assert!(t.warnings.iter().any(|w| w.contains("conflict")));
}

#[test]
fn missing_delegate_is_skipped_with_a_warning() {
    let t = one(json!({"hosts": ["reviews"], "http": [
        {"delegate": {"name": "nope"}}, {"route": dest("b")}]}));
    assert_eq!(routed_index(&t, &get("/")), Some(1));
    assert_eq!(t.warnings.len(), 1);
}

#[test]
fn unreachable_rules_are_found() {
    let v = vs(json!({"hosts": ["reviews"], "http": [
        {"match": [{"uri": {"prefix": "/api"}}], "route": dest("a")},
        {"match": [{"uri": {"prefix": "/api/v2"}}, {"uri": {"prefix": "/web"}}], "route": dest("b")},
        {"match": [{"uri": {"exact": "/api/x"}, "headers": {"h": {"exact": "1"}}}], "route": dest("c")},
        {"match": [{"uri": {"prefix": "/"}}], "route": dest("d")},
        {"route": dest("e")},
        {"match": [{"uri": {"prefix": "/z"}}], "route": dest("f")}]}));
    let u = unreachable_rules(&v);
    assert_eq!(
        u,
        vec![(1, Some(0), 0), (2, None, 0), (4, None, 3), (5, None, 3)]
    );
    let v = vs(json!({"hosts": ["reviews"], "http": [
        {"match": [{"headers": {"x": {"exact": "1"}}}], "route": dest("a")},
        {"match": [{"uri": {"prefix": "/api"}}], "route": dest("b")},
        {"route": dest("c")}]}));
    assert!(unreachable_rules(&v).is_empty());
}

#[test]
fn explain_reports_the_route() {
    let f = Fixture::new(&[(
        "default",
        "reviews",
        json!({"hosts": ["reviews"], "http": [
        {"name": "jason", "match": [{"headers": {"end-user": {"exact": "jason"}}}],
         "route": [{"destination": {"host": "reviews", "subset": "v2"}}]},
        {"match": [{"uri": {"prefix": "/api"}}], "route": [
            {"destination": {"host": "reviews", "subset": "v1"}, "weight": 90},
            {"destination": {"host": "reviews", "subset": "v3"}, "weight": 10},
            {"destination": {"host": "reviews", "subset": "v4"}, "weight": 0}]}]}),
    )]);
    let c = client("default", &[]);
    let req = ExplainRequest {
        host: "reviews".into(),
        port: Some(9080),
        headers: vec![("end-user".into(), "jason".into())],
        ..Default::default()
    };
    let e = explain(&f.refs(), &c, &req, SUFFIX);
    let v = serde_json::to_value(&e).expect("json");
    assert_eq!(v["virtual_service"], "default/reviews");
    assert_eq!(v["route_index"], 0);
    assert_eq!(v["route_name"], "jason");
    assert_eq!(
        v["destinations"],
        json!([{"host": "reviews.default.svc.cluster.local", "subset": "v2", "port": 9080, "weight": 100}])
    );
    assert_eq!(v["retries"]["origin"], "default");
    for k in ["rewrite", "redirect", "timeout", "fault", "mirror"] {
        assert!(v[k].is_null(), "{k}");
    }
    let keys: Vec<&String> = v
        .as_object()
        .map(|o| o.keys().collect())
        .unwrap_or_default();
    assert_eq!(keys.len(), 10, "{keys:?}");

    let req = ExplainRequest {
        host: "reviews".into(),
        path: "/api/x".into(),
        ..Default::default()
    };
    let v = serde_json::to_value(explain(&f.refs(), &c, &req, SUFFIX)).expect("json");
    assert_eq!(v["route_index"], 1);
    assert_eq!(
        v["destinations"].as_array().map(Vec::len),
        Some(2),
        "zero weight omitted"
    );
    assert!(v["destinations"][0]["port"].is_null());

    let req = ExplainRequest {
        host: "reviews".into(),
        path: "/nothing".into(),
        ..Default::default()
    };
    let e = explain(&f.refs(), &c, &req, SUFFIX);
    assert_eq!(e.virtual_service.as_deref(), Some("default/reviews"));
    assert_eq!(e.route_index, None);
    assert!(e.destinations.is_empty());
    assert!(e.reason.as_deref().is_some_and(|r| r.contains("404")));

    let req = ExplainRequest {
        host: "ratings".into(),
        ..Default::default()
    };
    let e = explain(&f.refs(), &c, &req, SUFFIX);
    assert_eq!(e.virtual_service, None);
    assert_eq!(e.destinations[0].host, "ratings.default.svc.cluster.local");
    assert_eq!(e.destinations[0].weight, 100);
}

#[test]
fn explain_omits_disabled_retries_and_shows_subsetless_destinations() {
    let f = Fixture::new(&[(
        "default",
        "r",
        json!({"hosts": ["reviews"], "http": [
        {"retries": {"attempts": 0}, "route": dest("reviews")}]}),
    )]);
    let e = explain(
        &f.refs(),
        &client("default", &[]),
        &ExplainRequest {
            host: "reviews".into(),
            ..Default::default()
        },
        SUFFIX,
    );
    let v = serde_json::to_value(&e).expect("json");
    assert!(v["retries"].is_null());
    assert!(v["destinations"][0].get("subset").is_none());
}

#[test]
fn exported_to_rules() {
    let spec = vs(json!({"hosts": ["a"], "exportTo": ["."], "http": [{"route": dest("a")}]}));
    let r = VsRef {
        namespace: "ns1",
        name: "a",
        spec: &spec,
    };
    assert!(exported_to(&r, "ns1"));
    assert!(!exported_to(&r, "ns2"));
    let spec = vs(json!({"hosts": ["a"], "http": [{"route": dest("a")}]}));
    assert!(exported_to(
        &VsRef {
            namespace: "ns1",
            name: "a",
            spec: &spec
        },
        "ns2"
    ));
}

#[test]
fn compiled_model_is_shareable() {
    fn assert_send_sync<T: Send + Sync + Clone + serde::Serialize>() {}
    assert_send_sync::<RouteTable>();
    fn assert_arc<T: Send + Sync>() {}
    assert_arc::<std::sync::Arc<RouteTable>>();
}

mod props {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn pick_always_returns_a_positive_weight(weights in proptest::collection::vec(0u32..1000, 1..8), rand in any::<u64>()) {
            let dests: Vec<Destination> = weights.iter().enumerate().map(|(i, w)| Destination {
                host: format!("h{i}"), subset: None, port: None, weight: *w,
                request_headers: HeaderOps::default(), response_headers: HeaderOps::default(),
            }).collect();
            let w = WeightedDestinations::new(dests);
            match w.pick(rand) {
                Some(d) => prop_assert!(d.weight > 0),
                None => prop_assert!(weights.iter().all(|w| *w == 0)),
            }
        }

        #[test]
        fn prefix_match_agrees_with_starts_with(prefix in "/[a-z]{0,4}", path in "/[a-z]{0,6}") {
            let t = one(json!({"hosts": ["reviews"], "http": [
                {"match": [{"uri": {"prefix": prefix.clone()}}], "route": dest("a")}]}));
            prop_assert_eq!(t.route(&get(&path)).is_some(), path.starts_with(&prefix));
        }
    }
}

#[test]
fn header_query_and_authority_missing_value_rules() {
    // Istio translates method/authority/scheme to header matches on the
    // pseudo-headers, so an absent authority matches nothing, not even
    // `{}`; a repeated header reads as its values joined with ","; query
    // values are percent-decoded and `{}` only needs the parameter.
    let t = one(json!({"hosts": ["reviews"], "http": [
        {"match": [{"authority": {}}], "route": dest("a")},
        {"match": [{"headers": {"x-tag": {"exact": "a,b"}}}], "route": dest("b")},
        {"match": [{"queryParams": {"q": {"exact": "x y"}}}], "route": dest("c")},
        {"match": [{"queryParams": {"flag": {}}}], "route": dest("d")}]}));
    assert_eq!(
        routed_index(&t, &get("/")),
        None,
        "no authority: {{}} does not match"
    );
    assert_eq!(
        routed_index(
            &t,
            &RequestInfo {
                authority: "reviews:9080",
                ..get("/")
            }
        ),
        Some(0)
    );
    let h = [("x-tag", "a"), ("X-Tag", "b")];
    assert_eq!(
        routed_index(
            &t,
            &RequestInfo {
                headers: &h,
                ..get("/")
            }
        ),
        Some(1),
        "repeated headers are joined with ','"
    );
    assert_eq!(routed_index(&t, &get("/p?q=x%20y")), Some(2));
    assert_eq!(routed_index(&t, &get("/p?q=x+y")), None, "+ is not a space");
    assert_eq!(routed_index(&t, &get("/p?flag")), Some(3));
    assert_eq!(
        routed_index(&t, &get("/p?Flag=1")),
        None,
        "names are case-sensitive"
    );
}
