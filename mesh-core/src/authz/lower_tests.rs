//! The engine and its lowered RBAC filters decide alike: a property test
//! over generated policies and requests, plus the cases the issue that
//! brought this module named (templates with notPaths in a DENY rule,
//! dry-run, `spiffe://` principals, namespace wildcards, host case).

use std::net::IpAddr;

use proptest::prelude::*;
use serde_json::{json, Value};

use super::lower::{attributes, peer_uri, Effect};
use super::*;
use crate::config::security::authorization_policy::AuthorizationPolicy;
use crate::rbac;

fn policy(name: &str, spec: Value, dry_run: bool) -> CompiledPolicy {
    let spec: AuthorizationPolicy =
        serde_json::from_value(spec.clone()).unwrap_or_else(|e| panic!("{spec}: {e}"));
    CompiledPolicy::from_spec("default", name, &spec, dry_run)
}

/// The engine's verdict (a CUSTOM provider counts as refusing, as a stock
/// server must) and the lowered filters' verdict; `None` when the path is
/// one an HTTP server rejects before authorization.
/// What a stock server did with a request.
#[derive(Debug)]
struct Stock {
    allowed: bool,
    /// Per filter with shadow rules: would they allow it.
    shadow: Vec<bool>,
}

fn both(set: &PolicySet, req: &Request) -> Option<(bool, Stock)> {
    both_for(set, req, StockServer::Grpc)
}

fn both_for(set: &PolicySet, req: &Request, server: StockServer) -> Option<(bool, Stock)> {
    let check = set.check(req);
    let engine = check.verdict == Verdict::Allow && check.custom_provider.is_none();
    let path = if req.protocol == Protocol::Http {
        match normalize(&req.path, set.normalization()) {
            Ok(p) => Some(p),
            Err(_) => {
                assert!(!engine, "a path normalization rejects must be denied");
                return None;
            }
        }
    } else {
        None
    };
    let lowered = set.lower_for(req.protocol, server);
    let peer = peer_uri(req);
    let attrs = attributes(req, path.as_deref(), peer.as_deref());
    let out = rbac::evaluate(&lowered.filters, &attrs);
    let stock = Stock {
        allowed: out.allowed,
        shadow: out.shadow.iter().map(|s| s.allowed).collect(),
    };
    Some((engine, stock))
}

fn set(policies: Vec<CompiledPolicy>) -> PolicySet {
    PolicySet::from_compiled(policies, Normalization::Base)
}

fn http(method: &str, path: &str, principal: Option<&str>) -> Request {
    let mut r = Request::http(method, path);
    r.port = 8080;
    r.host = "cart.shop.svc.cluster.local".into();
    r.source_principal = principal.map(str::to_string);
    r.source_ip = "10.1.2.3".parse().ok();
    r
}

#[test]
fn deny_template_with_not_paths_is_enforced() {
    let s = set(vec![policy(
        "deny-cart",
        json!({"action": "DENY", "rules": [{"to": [{"operation": {
            "paths": ["/shop.Cart/{*}"], "notPaths": ["/shop.Cart/Get"]}}]}]}),
        false,
    )]);
    for (path, allowed) in [
        ("/shop.Cart/Add", false),
        ("/shop.Cart/Get", true),
        ("/shop.Cart/a/b", true),
        ("/shop.Other/Add", true),
    ] {
        let (engine, out) = both(&s, &http("POST", path, None)).unwrap();
        assert_eq!(engine, allowed, "{path}");
        assert_eq!(out.allowed, allowed, "{path}: {out:?}");
    }
}

#[test]
fn dry_run_deny_is_shadow_only() {
    let s = set(vec![policy(
        "deny-all",
        json!({"action": "DENY", "rules": [{}]}),
        true,
    )]);
    let (engine, out) = both(&s, &http("GET", "/", None)).unwrap();
    assert!(engine && out.allowed, "{out:?}");
    assert_eq!(out.shadow.len(), 1);
    assert!(!out.shadow[0], "the shadow rules would deny");
    let lowered = s.lower(Protocol::Http);
    assert!(lowered.filters.iter().all(|f| f.rules.is_some()));
}

#[test]
fn dry_run_allow_alone_enforces_nothing() {
    let s = set(vec![policy(
        "allow-none",
        json!({"rules": [{"from": [{"source": {"principals": ["nobody"]}}]}]}),
        true,
    )]);
    let (engine, out) = both(&s, &http("GET", "/", None)).unwrap();
    assert!(engine && out.allowed, "{out:?}");
    assert!(!out.shadow[0]);
}

#[test]
fn spiffe_principals_namespace_wildcards_and_host_case() {
    let s = set(vec![policy(
        "allow",
        json!({"rules": [
            {"from": [{"source": {"principals": ["spiffe://cluster.local/ns/a/sa/x"]}}]},
            {"from": [{"source": {"namespaces": ["prod-*"]}}]},
            {"to": [{"operation": {"hosts": ["Cart.Shop.svc.cluster.local"]}}],
             "from": [{"source": {"principals": ["*"]}}]}]}),
        false,
    )]);
    let cases = [
        (Some("spiffe://cluster.local/ns/a/sa/x"), "h", true),
        (Some("cluster.local/ns/prod-eu/sa/y"), "h", true),
        (Some("cluster.local/ns/prodx/sa/y"), "h", false),
        (
            Some("cluster.local/ns/b/sa/y"),
            "cart.shop.SVC.cluster.local",
            true,
        ),
        (None, "cart.shop.svc.cluster.local", false),
    ];
    for (p, host, allowed) in cases {
        let mut r = http("GET", "/", p);
        r.host = host.to_string();
        let (engine, out) = both(&s, &r).unwrap();
        assert_eq!(engine, allowed, "{p:?} {host}");
        assert_eq!(out.allowed, allowed, "{p:?} {host}: {out:?}");
    }
}

#[test]
fn what_grpc_cannot_see_fails_closed_with_a_note() {
    let allow = set(vec![policy(
        "jwt",
        json!({"rules": [{"from": [{"source": {"requestPrincipals": ["*"]}}]},
                         {"to": [{"operation": {"paths": ["/open"]}}]}]}),
        false,
    )]);
    let lowered = allow.lower(Protocol::Http);
    assert_eq!(lowered.notes.len(), 1);
    assert_eq!(lowered.notes[0].effect, Effect::Dropped);
    assert_eq!(lowered.notes[0].rule, Some(0));
    assert!(lowered.notes[0].to_string().contains("requestPrincipals"));
    let mut r = http("GET", "/x", None);
    r.request_principal = Some("iss/sub".into());
    let (engine, out) = both(&allow, &r).unwrap();
    assert!(
        engine && !out.allowed,
        "dropped ALLOW rule: denied by the stock server"
    );

    let deny = set(vec![policy(
        "deny-sni",
        json!({"action": "DENY", "rules": [{"to": [{"operation": {"paths": ["/admin"]}}],
            "when": [{"key": "connection.sni", "values": ["x"]}]}]}),
        false,
    )]);
    assert_eq!(deny.lower(Protocol::Http).notes[0].effect, Effect::Widened);
    let (engine, out) = both(&deny, &http("GET", "/admin", None)).unwrap();
    assert!(engine && !out.allowed, "widened DENY rule: denies more");
}

#[test]
fn empty_allow_policy_denies_everything() {
    let s = set(vec![policy("nothing", json!({}), false)]);
    let (engine, out) = both(&s, &http("GET", "/", None)).unwrap();
    assert!(!engine && !out.allowed);
}

// ------------------------------------------------------------- property test

/// A few fields of `fields`, each with one or two of its values: sparse
/// enough that rules match often.
fn fields(fields: Vec<(&'static str, &'static [&'static str])>) -> impl Strategy<Value = Value> {
    prop::sample::subsequence(fields, 0..=2)
        .prop_flat_map(|chosen| {
            chosen
                .into_iter()
                .map(|(name, vals)| {
                    prop::sample::subsequence(vals, 1..=2.min(vals.len()))
                        .prop_map(move |v| (name, v))
                })
                .collect::<Vec<_>>()
        })
        .prop_map(|pairs| {
            let mut obj = serde_json::Map::new();
            for (name, vals) in pairs {
                obj.insert(name.to_string(), json!(vals));
            }
            Value::Object(obj)
        })
}

const PRINCIPALS: &[&str] = &[
    "cluster.local/ns/a/sa/x",
    "spiffe://cluster.local/ns/a/sa/x",
    "cluster.local/ns/b/*",
    "*/sa/x",
    "*",
    "*x",
];
const NAMESPACES: &[&str] = &["a", "b", "prod-*", "*-1", "*", "a/b"];
const ACCOUNTS: &[&str] = &["a/x", "x", "prod-1/y"];
const IPS: &[&str] = &["10.0.0.0/8", "10.1.2.3", "192.168.0.0/16", "::1"];
const METHODS: &[&str] = &["GET", "POST", "G*", "*"];
const PATHS: &[&str] = &[
    "/a",
    "/a/*",
    "*/b",
    "/shop.Cart/{*}",
    "/api/{**}",
    "*",
    "/a/{*}/c",
];
const HOSTS: &[&str] = &["example.com", "*.example.com", "EXAMPLE.com:*", "*"];
const PORTS: &[&str] = &["8080", "9090"];
const JWT: &[&str] = &["iss/sub", "*"];

fn source() -> impl Strategy<Value = Value> {
    fields(vec![
        ("principals", PRINCIPALS),
        ("notPrincipals", PRINCIPALS),
        ("namespaces", NAMESPACES),
        ("notNamespaces", NAMESPACES),
        ("serviceAccounts", ACCOUNTS),
        ("notServiceAccounts", ACCOUNTS),
        ("ipBlocks", IPS),
        ("notIpBlocks", IPS),
        ("remoteIpBlocks", IPS),
        ("notRemoteIpBlocks", IPS),
        ("requestPrincipals", JWT),
        ("notRequestPrincipals", JWT),
    ])
}

fn operation() -> impl Strategy<Value = Value> {
    fields(vec![
        ("methods", METHODS),
        ("notMethods", METHODS),
        ("paths", PATHS),
        ("notPaths", PATHS),
        ("hosts", HOSTS),
        ("notHosts", HOSTS),
        ("ports", PORTS),
        ("notPorts", PORTS),
    ])
}

fn condition() -> impl Strategy<Value = Value> {
    let key = prop::sample::select(vec![
        ("request.headers[x-a]", &["v", "v*", "*", "*v"][..]),
        ("source.ip", IPS),
        ("remote.ip", IPS),
        ("destination.ip", IPS),
        ("destination.port", PORTS),
        ("source.namespace", NAMESPACES),
        ("source.principal", PRINCIPALS),
        ("request.auth.principal", JWT),
        ("connection.sni", &["x", "*"][..]),
        ("request.headers[grpc-x]", &["1"][..]),
        ("experimental.envoy.filters.a[b]", &["x"][..]),
    ]);
    (key, any::<u64>()).prop_map(|((k, vals), seed)| {
        let take = |shift: u32| -> Vec<&str> {
            vals.iter()
                .enumerate()
                .filter(|(i, _)| seed >> (shift + *i as u32) & 1 == 1)
                .map(|(_, v)| *v)
                .collect()
        };
        let (values, not_values) = (take(0), take(8));
        if values.is_empty() && not_values.is_empty() {
            json!({"key": k, "values": [vals[0]]})
        } else {
            json!({"key": k, "values": values, "notValues": not_values})
        }
    })
}

fn rule() -> impl Strategy<Value = Value> {
    (
        prop::collection::vec(source(), 0..=2),
        prop::collection::vec(operation(), 0..=2),
        prop::collection::vec(condition(), 0..=1),
    )
        .prop_map(|(from, to, when)| {
            json!({"from": from.into_iter().map(|s| json!({"source": s})).collect::<Vec<_>>(),
                   "to": to.into_iter().map(|o| json!({"operation": o})).collect::<Vec<_>>(),
                   "when": when})
        })
}

fn compiled_policy() -> impl Strategy<Value = CompiledPolicy> {
    (
        prop::sample::select(vec!["ALLOW", "DENY", "AUDIT", "CUSTOM"]),
        prop::collection::vec(rule(), 0..=2),
        any::<bool>(),
        0u32..1000,
    )
        .prop_map(|(action, rules, dry, n)| {
            let mut spec = json!({"action": action, "rules": rules});
            if action == "CUSTOM" {
                spec["provider"] = json!({"name": "ext"});
            }
            policy(&format!("p{n}"), spec, dry && n % 3 == 0)
        })
}

fn request() -> impl Strategy<Value = Request> {
    let opt = |v: &'static [&'static str]| {
        prop::sample::select(v).prop_map(|s| (!s.is_empty()).then(|| s.to_string()))
    };
    (
        (
            prop::sample::select(&["GET", "POST"][..]),
            prop::sample::select(
                &[
                    "/a",
                    "/a/x",
                    "/x/b",
                    "/shop.Cart/Add",
                    "/api/",
                    "/api/v1/x",
                    "/a/1/c",
                    "/b",
                    "/a?q=1",
                    "/A",
                    "/a/./b",
                    "/%2e%2e/a",
                ][..],
            ),
            prop::sample::select(&["example.com", "api.example.com", "EXAMPLE.COM:80", ""][..]),
            prop::sample::subsequence(
                &[("x-a", "v"), ("x-a", "vv"), ("X-A", ""), ("grpc-x", "1")][..],
                0..=2,
            ),
        ),
        (
            prop::sample::select(&[8080u16, 9090][..]),
            opt(&[
                "",
                "spiffe://cluster.local/ns/a/sa/x",
                "cluster.local/ns/prod-1/sa/y",
                "spiffe://cluster.local/ns/b/sa/z",
                "spiffe://other/ns/a/sa/x/extra",
                "spiffe://td/ns/a/b/sa/x",
            ]),
            prop::sample::select(&["10.1.2.3", "192.168.1.1", "::1", "::ffff:10.1.2.3"][..]),
            opt(&["", "10.9.9.9", "::ffff:192.168.0.9"]),
        ),
        (opt(&["", "iss/sub"]), opt(&["", "x"]), any::<bool>()),
    )
        .prop_map(
            |((m, p, h, hs), (port, principal, src, remote), (rp, sni, tcp))| {
                let mut r = if tcp {
                    Request::tcp(port)
                } else {
                    Request::http(m, p)
                };
                if !tcp {
                    r.host = h.to_string();
                    r.headers = hs
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect();
                    r.request_principal = rp;
                }
                r.port = port;
                r.source_principal = principal;
                r.source_ip = src.parse::<IpAddr>().ok();
                r.remote_ip = remote.and_then(|s| s.parse().ok());
                r.destination_ip = "10.0.0.5".parse().ok();
                r.sni = sni;
                r
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]

    /// Where lowering is exact, a stock server decides as the engine does;
    /// where it is not, it never allows what the engine denies.
    #[test]
    fn lowered_rbac_decides_as_the_engine(
        policies in prop::collection::vec(compiled_policy(), 0..=3),
        req in request(),
        js in any::<bool>(),
    ) {
        let s = set(policies);
        let server = if js { StockServer::GrpcJs } else { StockServer::Grpc };
        let Some((engine, out)) = both_for(&s, &req, server) else { return Ok(()) };
        let lowered = s.lower_for(req.protocol, server);
        if lowered.is_exact() {
            prop_assert_eq!(engine, out.allowed, "engine {} vs rbac {:?}\nfilters {:#?}", engine, out, lowered.filters);
        } else {
            prop_assert!(engine || !out.allowed, "rbac allowed what the engine denies: {:?}\nnotes {:?}", out, lowered.notes);
        }
    }
}
