//! Engine tests: Istio's semantics one by one, selection, and a bypass corpus
//! through normalization and the engine.

use std::net::IpAddr;

use super::*;
use crate::config::common::Labels;
use crate::config::load::load_str;
use crate::config::security::authorization_policy::Action;
use crate::config::Resource;

/// A policy document in namespace `default` (unless `ns/name` is given).
fn ap(name: &str, spec: &str) -> String {
    let (ns, name) = name.split_once('/').unwrap_or(("default", name));
    let spec = spec
        .lines()
        .map(|l| format!("  {l}"))
        .collect::<Vec<_>>()
        .join("\n");
    format!(
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata:\n  name: {name}\n  namespace: {ns}\nspec:\n{spec}\n---\n"
    )
}

fn resources(docs: &[String]) -> Vec<Resource> {
    let r = load_str(&docs.concat(), "test.yaml");
    assert!(r.errors.is_empty(), "config errors: {:#?}", r.errors);
    r.resources
}

fn set_mode(docs: &[String], mode: Normalization) -> PolicySet {
    PolicySet::compile(&resources(docs), mode)
}

fn set(docs: &[String]) -> PolicySet {
    set_mode(docs, Normalization::Base)
}

fn get(path: &str) -> Request {
    let mut r = Request::http("GET", path);
    r.port = 8080;
    r.host = "svc.default.svc.cluster.local".into();
    r
}

fn ip(s: &str) -> Option<IpAddr> {
    s.parse().ok()
}

fn allowed(s: &PolicySet, r: &Request) -> bool {
    s.evaluate(r).decision == Verdict::Allow
}

// ---------------------------------------------------------------- precedence

#[test]
fn no_policies_allow_everything() {
    let d = set(&[]).evaluate(&get("/x"));
    assert_eq!(d.decision, Verdict::Allow);
    assert_eq!(d.policy, None);
    assert!(d.reason.contains("no ALLOW policy applies"), "{}", d.reason);
}

#[test]
fn empty_spec_denies_all_and_empty_rule_allows_all() {
    let s = set(&[ap("allow-nothing", "{}")]);
    let d = s.evaluate(&get("/x"));
    assert_eq!(d.decision, Verdict::Deny);
    assert!(
        d.reason.contains("1 ALLOW policy applies")
            && d.reason.contains("default/allow-nothing has no rules"),
        "{}",
        d.reason
    );

    let s = set(&[ap("allow-nothing", "{}"), ap("allow-all", "rules: [{}]")]);
    let d = s.evaluate(&get("/x"));
    assert_eq!(d.decision, Verdict::Allow);
    assert_eq!(d.policy.as_deref(), Some("default/allow-all"));
    assert_eq!(d.rule_index, Some(0));
    assert!(d.reason.contains("matches every request"), "{}", d.reason);
    // And on TCP too: an empty rule has no HTTP-only field.
    assert!(allowed(&s, &Request::tcp(5432)));
}

#[test]
fn empty_deny_policy_denies_nothing() {
    let s = set(&[ap("d", "action: DENY")]);
    assert!(allowed(&s, &get("/x")));
}

#[test]
fn deny_wins_over_allow() {
    let s = set(&[
        ap("allow-all", "rules: [{}]"),
        ap(
            "deny-admin",
            "action: DENY\nrules:\n- to: [{operation: {paths: [\"/admin*\"]}}]",
        ),
    ]);
    let d = s.evaluate(&get("/admin/users"));
    assert_eq!(d.decision, Verdict::Deny);
    assert_eq!(d.policy.as_deref(), Some("default/deny-admin"));
    assert_eq!(d.action, Some(Action::Deny));
    assert_eq!(d.rule_index, Some(0));
    assert_eq!(
        d.reason,
        "denied by DENY policy default/deny-admin rule 0: path /admin/users matched paths[\"/admin*\"]"
    );
    assert!(allowed(&s, &get("/public")));
}

#[test]
fn allow_policies_must_match_one() {
    let s = set(&[
        ap("a", "rules:\n- to: [{operation: {paths: [\"/a\"]}}]"),
        ap("b", "rules:\n- to: [{operation: {methods: [\"POST\"]}}]\n- to: [{operation: {paths: [\"/b\"]}}]"),
    ]);
    let d = s.evaluate(&get("/b"));
    assert_eq!(d.decision, Verdict::Allow);
    assert_eq!(d.policy.as_deref(), Some("default/b"));
    assert_eq!(d.rule_index, Some(1));
    assert!(
        d.reason
            .starts_with("allowed by ALLOW policy default/b rule 1"),
        "{}",
        d.reason
    );
    let d = s.evaluate(&get("/c"));
    assert_eq!(d.decision, Verdict::Deny);
    assert_eq!(d.policy, None);
    assert!(
        d.reason.starts_with("denied: 2 ALLOW policies apply to this workload (default/a, default/b) and none matched"),
        "{}",
        d.reason
    );
}

#[test]
fn audit_never_changes_the_decision() {
    let audit = ap(
        "audit",
        "action: AUDIT\nrules:\n- to: [{operation: {paths: [\"/x\"]}}]",
    );
    let d = set(std::slice::from_ref(&audit)).evaluate(&get("/x"));
    assert_eq!(d.decision, Verdict::Allow);
    assert_eq!(d.policy, None, "an AUDIT policy is not an ALLOW policy");
    assert_eq!(
        d.audit,
        vec![RuleRef {
            policy: "default/audit".into(),
            rule_index: 0
        }]
    );
    let d = set(&[audit.clone(), ap("deny-x", "action: DENY\nrules: [{}]")]).evaluate(&get("/x"));
    assert_eq!(d.decision, Verdict::Deny);
    assert_eq!(d.audit.len(), 1);
    assert!(set(&[audit]).evaluate(&get("/y")).audit.is_empty());
}

#[test]
fn custom_is_reported_for_the_caller() {
    let custom = ap(
        "ext",
        "action: CUSTOM\nprovider: {name: opa}\nrules:\n- to: [{operation: {paths: [\"/api*\"]}}]",
    );
    let s = set(std::slice::from_ref(&custom));
    let d = s.evaluate(&get("/api/v1"));
    assert_eq!(d.decision, Verdict::Allow);
    assert_eq!(d.action, Some(Action::Custom));
    assert_eq!(d.policy.as_deref(), Some("default/ext"));
    assert_eq!(d.custom_provider.as_deref(), Some("opa"));
    assert!(!d.is_allowed());
    assert_eq!(d.with_provider_answer(false), Verdict::Deny);
    assert_eq!(d.with_provider_answer(true), Verdict::Allow);
    assert!(d.reason.contains("provider \"opa\""), "{}", d.reason);
    // Not matching: no provider call.
    let d = s.evaluate(&get("/other"));
    assert_eq!(d.custom_provider, None);
    assert!(d.is_allowed());
    // A DENY still denies, whatever the provider says.
    let s = set(&[custom, ap("deny", "action: DENY\nrules: [{}]")]);
    let d = s.evaluate(&get("/api/v1"));
    assert_eq!(d.decision, Verdict::Deny);
    assert_eq!(d.policy.as_deref(), Some("default/deny"));
    assert_eq!(d.custom_provider, None);
    assert_eq!(d.with_provider_answer(true), Verdict::Deny);
}

// ---------------------------------------------------------------- sources

fn allow_from(source: &str) -> PolicySet {
    set(&[ap("p", &format!("rules:\n- from:\n  - source: {source}"))])
}

#[test]
fn principals_with_and_without_spiffe() {
    for policy in [
        "{principals: [\"cluster.local/ns/a/sa/b\"]}",
        "{principals: [\"spiffe://cluster.local/ns/a/sa/b\"]}",
    ] {
        let s = allow_from(policy);
        for peer in [
            "spiffe://cluster.local/ns/a/sa/b",
            "cluster.local/ns/a/sa/b",
        ] {
            assert!(
                allowed(&s, &get("/").with_principal(peer)),
                "{policy} {peer}"
            );
        }
        assert!(!allowed(
            &s,
            &get("/").with_principal("spiffe://cluster.local/ns/a/sa/c")
        ));
        assert!(!allowed(&s, &get("/")), "plaintext");
    }
    let s = allow_from("{principals: [\"cluster.local/ns/a/*\"]}");
    assert!(allowed(
        &s,
        &get("/").with_principal("spiffe://cluster.local/ns/a/sa/x")
    ));
    assert!(!allowed(
        &s,
        &get("/").with_principal("spiffe://cluster.local/ns/ab/sa/x")
    ));
    let s = allow_from("{principals: [\"*/sa/admin\"]}");
    assert!(allowed(
        &s,
        &get("/").with_principal("spiffe://td/ns/q/sa/admin")
    ));
    assert!(!allowed(
        &s,
        &get("/").with_principal("spiffe://td/ns/q/sa/user")
    ));
}

#[test]
fn star_principal_means_any_mtls_peer() {
    let s = allow_from("{principals: [\"*\"]}");
    assert!(allowed(
        &s,
        &get("/").with_principal("spiffe://cluster.local/ns/a/sa/b")
    ));
    let d = s.evaluate(&get("/"));
    assert_eq!(d.decision, Verdict::Deny, "plaintext has no principal");
    // The classic "deny plaintext" policy.
    let s = set(&[ap(
        "deny-plaintext",
        "action: DENY\nrules:\n- from: [{source: {notPrincipals: [\"*\"]}}]",
    )]);
    let d = s.evaluate(&get("/"));
    assert_eq!(d.decision, Verdict::Deny);
    assert!(
        d.reason
            .contains("(no principal: plaintext) matched none of notPrincipals[\"*\"]"),
        "{}",
        d.reason
    );
    assert!(allowed(
        &s,
        &get("/").with_principal("spiffe://cluster.local/ns/a/sa/b")
    ));
}

#[test]
fn not_principals() {
    let s = set(&[ap(
        "d",
        "action: DENY\nrules:\n- from: [{source: {notPrincipals: [\"cluster.local/ns/a/sa/b\"]}}]",
    )]);
    assert!(allowed(
        &s,
        &get("/").with_principal("spiffe://cluster.local/ns/a/sa/b")
    ));
    assert!(!allowed(
        &s,
        &get("/").with_principal("spiffe://cluster.local/ns/a/sa/c")
    ));
    assert!(
        !allowed(&s, &get("/")),
        "absent principal is 'not' anything"
    );
}

#[test]
fn namespaces_come_from_the_principal() {
    let s = allow_from("{namespaces: [\"prod\", \"team-*\"]}");
    assert!(allowed(
        &s,
        &get("/").with_principal("spiffe://cluster.local/ns/prod/sa/x")
    ));
    assert!(allowed(
        &s,
        &get("/").with_principal("spiffe://cluster.local/ns/team-a/sa/x")
    ));
    assert!(!allowed(
        &s,
        &get("/").with_principal("spiffe://cluster.local/ns/dev/sa/x")
    ));
    assert!(!allowed(&s, &get("/")));
    let s = allow_from("{notNamespaces: [\"dev\"]}");
    assert!(allowed(
        &s,
        &get("/").with_principal("spiffe://cluster.local/ns/prod/sa/x")
    ));
    assert!(!allowed(
        &s,
        &get("/").with_principal("spiffe://cluster.local/ns/dev/sa/x")
    ));
    assert!(allowed(&s, &get("/")), "plaintext is not in dev");
}

#[test]
fn service_accounts_ignore_trust_domain() {
    let s = allow_from("{serviceAccounts: [\"prod/api\", \"local-sa\"]}");
    assert!(allowed(
        &s,
        &get("/").with_principal("spiffe://cluster.local/ns/prod/sa/api")
    ));
    assert!(allowed(
        &s,
        &get("/").with_principal("spiffe://other.td/ns/prod/sa/api")
    ));
    // `local-sa` is in the policy's namespace (default).
    assert!(allowed(
        &s,
        &get("/").with_principal("spiffe://cluster.local/ns/default/sa/local-sa")
    ));
    assert!(!allowed(
        &s,
        &get("/").with_principal("spiffe://cluster.local/ns/prod/sa/local-sa")
    ));
    assert!(!allowed(&s, &get("/")));
    let s = allow_from("{notServiceAccounts: [\"prod/api\"]}");
    assert!(!allowed(
        &s,
        &get("/").with_principal("spiffe://cluster.local/ns/prod/sa/api")
    ));
    assert!(allowed(
        &s,
        &get("/").with_principal("spiffe://cluster.local/ns/prod/sa/web")
    ));
}

#[test]
fn request_principals() {
    let s = allow_from("{requestPrincipals: [\"https://issuer.example.com/alice\"]}");
    let mut r = get("/");
    r.request_principal = Some("https://issuer.example.com/alice".into());
    assert!(allowed(&s, &r));
    r.request_principal = Some("https://issuer.example.com/bob".into());
    assert!(!allowed(&s, &r));
    let s = allow_from("{requestPrincipals: [\"*\"]}");
    assert!(allowed(&s, &r));
    assert!(!allowed(&s, &get("/")), "no JWT");
    let s = allow_from("{notRequestPrincipals: [\"*\"]}");
    assert!(!allowed(&s, &r));
    assert!(allowed(&s, &get("/")));
}

#[test]
fn ip_blocks_vs_remote_ip_blocks() {
    let mut r = get("/");
    r.source_ip = ip("10.0.0.7");
    r.remote_ip = ip("203.0.113.9");
    assert!(allowed(&allow_from("{ipBlocks: [\"10.0.0.0/24\"]}"), &r));
    assert!(!allowed(
        &allow_from("{ipBlocks: [\"203.0.113.0/24\"]}"),
        &r
    ));
    assert!(allowed(
        &allow_from("{remoteIpBlocks: [\"203.0.113.9\"]}"),
        &r
    ));
    assert!(!allowed(
        &allow_from("{remoteIpBlocks: [\"10.0.0.0/8\"]}"),
        &r
    ));
    assert!(!allowed(&allow_from("{notIpBlocks: [\"10.0.0.7\"]}"), &r));
    assert!(allowed(
        &allow_from("{notRemoteIpBlocks: [\"10.0.0.7\"]}"),
        &r
    ));
    // Without X-Forwarded-For the remote address is the peer.
    r.remote_ip = None;
    assert!(allowed(
        &allow_from("{remoteIpBlocks: [\"10.0.0.0/8\"]}"),
        &r
    ));
    let mut v6 = get("/");
    v6.source_ip = ip("2001:db8::1");
    assert!(allowed(&allow_from("{ipBlocks: [\"2001:db8::/32\"]}"), &v6));
    assert!(!allowed(&allow_from("{ipBlocks: [\"10.0.0.0/8\"]}"), &v6));
}

#[test]
fn source_fields_are_anded_and_sources_ored() {
    let s = set(&[ap(
        "p",
        "rules:\n- from:\n  - source: {namespaces: [\"a\"], ipBlocks: [\"10.0.0.0/8\"]}\n  - source: {principals: [\"td/ns/b/sa/x\"]}",
    )]);
    let mut r = get("/").with_principal("spiffe://td/ns/a/sa/x");
    r.source_ip = ip("10.1.1.1");
    assert!(allowed(&s, &r));
    r.source_ip = ip("192.168.1.1");
    assert!(!allowed(&s, &r), "namespace ok but ip not: AND");
    let r = get("/").with_principal("spiffe://td/ns/b/sa/x");
    assert!(allowed(&s, &r), "second source: OR");
}

// ---------------------------------------------------------------- operations

fn allow_to(op: &str) -> PolicySet {
    set(&[ap("p", &format!("rules:\n- to:\n  - operation: {op}"))])
}

#[test]
fn hosts_are_case_insensitive_with_wildcards() {
    let s = allow_to("{hosts: [\"Api.Example.com\", \"*.internal\", \"admin.*\"]}");
    let h = |host: &str| {
        let mut r = get("/");
        r.host = host.into();
        r
    };
    assert!(allowed(&s, &h("api.example.COM")));
    assert!(allowed(&s, &h("x.y.INTERNAL")));
    assert!(allowed(&s, &h("admin.example.org")));
    assert!(!allowed(&s, &h("example.com")));
    // The port is part of the host when the client sends it (Istio advises
    // listing `host:*` as well).
    assert!(!allowed(&s, &h("api.example.com:8080")));
    assert!(allowed(
        &allow_to("{hosts: [\"api.example.com\", \"api.example.com:*\"]}"),
        &h("api.example.com:8080")
    ));
    let s = allow_to("{notHosts: [\"*.internal\"]}");
    assert!(!allowed(&s, &h("a.INTERNAL")));
    assert!(allowed(&s, &h("a.example.com")));
}

#[test]
fn ports_and_methods() {
    let s = allow_to("{ports: [\"8080\", \"9090\"], methods: [\"GET\", \"HEAD\"]}");
    assert!(allowed(&s, &get("/")));
    let mut r = get("/");
    r.port = 7070;
    assert!(!allowed(&s, &r));
    let mut r = get("/");
    r.method = "POST".into();
    assert!(!allowed(&s, &r));
    r.method = "get".into();
    assert!(!allowed(&s, &r), "methods are case-sensitive");
    let s = allow_to("{notPorts: [\"8080\"], notMethods: [\"DELETE\"]}");
    assert!(!allowed(&s, &get("/")));
    let mut r = get("/");
    r.port = 81;
    assert!(allowed(&s, &r));
    r.method = "DELETE".into();
    assert!(!allowed(&s, &r));
}

#[test]
fn path_forms() {
    let s = allow_to(
        "{paths: [\"/exact\", \"/prefix/*\", \"*.png\", \"/api/{*}/items\", \"/files/{**}\"]}",
    );
    for (p, ok) in [
        ("/exact", true),
        ("/exact/", false),
        ("/exactly", false),
        ("/prefix/", true),
        ("/prefix/a/b", true),
        ("/prefix", false),
        ("/img/logo.png", true),
        ("/logo.png.txt", false),
        ("/api/v1/items", true),
        ("/api/v1/v2/items", false),
        ("/api/items", false),
        ("/files/", true),
        ("/files/a/b/c", true),
        ("/files", false),
        ("/exact?x=1", true),
        ("/exact#top", true),
        ("/EXACT", false),
    ] {
        assert_eq!(allowed(&s, &get(p)), ok, "{p}");
    }
    let any = allow_to("{paths: [\"*\"]}");
    assert!(allowed(&any, &get("/anything")));
    let not = allow_to("{notPaths: [\"/private*\"]}");
    assert!(allowed(&not, &get("/public")));
    assert!(!allowed(&not, &get("/private/x")));
    assert!(
        !allowed(&not, &get("/private?x")),
        "query stripped before notPaths too"
    );
}

#[test]
fn operations_ored_rules_ored() {
    let s = set(&[ap(
        "p",
        "rules:\n- to:\n  - operation: {methods: [\"GET\"], paths: [\"/r*\"]}\n  - operation: {methods: [\"POST\"], paths: [\"/w\"]}\n- from: [{source: {namespaces: [\"admin\"]}}]",
    )]);
    assert!(allowed(&s, &get("/read")));
    let mut r = get("/w");
    assert!(!allowed(&s, &r), "GET /w matches neither operation");
    r.method = "POST".into();
    assert!(allowed(&s, &r));
    let r = get("/anything").with_principal("spiffe://td/ns/admin/sa/x");
    assert!(allowed(&s, &r), "second rule");
}

// ---------------------------------------------------------------- conditions

fn allow_when(cond: &str) -> PolicySet {
    set(&[ap("p", &format!("rules:\n- when:\n  - {cond}"))])
}

#[test]
fn when_request_headers() {
    let s = allow_when("{key: \"request.headers[X-Tenant]\", values: [\"acme\", \"beta-*\"]}");
    assert!(allowed(&s, &get("/").with_header("x-tenant", "acme")));
    assert!(allowed(&s, &get("/").with_header("X-TENANT", "beta-1")));
    assert!(!allowed(&s, &get("/").with_header("x-tenant", "other")));
    assert!(!allowed(&s, &get("/")));
    // Repeated headers are joined with a comma before matching.
    assert!(!allowed(
        &s,
        &get("/")
            .with_header("x-tenant", "acme")
            .with_header("x-tenant", "x")
    ));
    let s = allow_when("{key: \"request.headers[x-tenant]\", values: [\"acme,*\"]}");
    assert!(allowed(
        &s,
        &get("/")
            .with_header("x-tenant", "acme")
            .with_header("x-tenant", "x")
    ));
    let s = allow_when("{key: \"request.headers[x-debug]\", notValues: [\"*\"]}");
    assert!(allowed(&s, &get("/")), "absent header is not present");
    assert!(!allowed(&s, &get("/").with_header("x-debug", "1")));
}

#[test]
fn when_values_and_not_values_together() {
    let s = allow_when("{key: \"request.headers[v]\", values: [\"a*\"], notValues: [\"ab\"]}");
    assert!(allowed(&s, &get("/").with_header("v", "ac")));
    assert!(!allowed(&s, &get("/").with_header("v", "ab")));
    assert!(!allowed(&s, &get("/").with_header("v", "b")));
}

#[test]
fn when_ip_port_sni_keys() {
    let mut r = get("/");
    r.source_ip = ip("10.0.0.1");
    r.remote_ip = ip("198.51.100.2");
    r.destination_ip = ip("10.9.9.9");
    r.sni = Some("api.example.com".into());
    assert!(allowed(
        &allow_when("{key: source.ip, values: [\"10.0.0.0/8\"]}"),
        &r
    ));
    assert!(!allowed(
        &allow_when("{key: source.ip, values: [\"198.51.100.2\"]}"),
        &r
    ));
    assert!(allowed(
        &allow_when("{key: remote.ip, values: [\"198.51.100.0/24\"]}"),
        &r
    ));
    assert!(allowed(
        &allow_when("{key: destination.ip, values: [\"10.9.9.9\"]}"),
        &r
    ));
    assert!(!allowed(
        &allow_when("{key: destination.ip, notValues: [\"10.9.0.0/16\"]}"),
        &r
    ));
    assert!(allowed(
        &allow_when("{key: destination.port, values: [\"8080\"]}"),
        &r
    ));
    assert!(!allowed(
        &allow_when("{key: destination.port, values: [\"80\"]}"),
        &r
    ));
    assert!(allowed(
        &allow_when("{key: connection.sni, values: [\"*.example.com\"]}"),
        &r
    ));
    assert!(!allowed(
        &allow_when("{key: connection.sni, values: [\"*.example.com\"]}"),
        &get("/")
    ));
}

#[test]
fn when_source_identity_keys() {
    let r = get("/").with_principal("spiffe://cluster.local/ns/prod/sa/api");
    assert!(allowed(
        &allow_when("{key: source.namespace, values: [\"prod\"]}"),
        &r
    ));
    assert!(!allowed(
        &allow_when("{key: source.namespace, values: [\"dev\"]}"),
        &r
    ));
    assert!(allowed(
        &allow_when("{key: source.principal, values: [\"cluster.local/ns/prod/sa/api\"]}"),
        &r
    ));
    assert!(allowed(
        &allow_when("{key: source.principal, values: [\"spiffe://cluster.local/ns/prod/*\"]}"),
        &r
    ));
    assert!(!allowed(
        &allow_when("{key: source.principal, values: [\"*\"]}"),
        &get("/")
    ));
}

#[test]
fn when_jwt_keys_and_nested_claims() {
    let mut r = get("/");
    r.request_principal = Some("iss.example.com/alice".into());
    r.audiences = vec!["svc-a".into(), "svc-b".into()];
    r.presenter = Some("client-1".into());
    r.claims = serde_json::json!({
        "iss": "iss.example.com",
        "groups": ["dev", "admin"],
        "realm": {"roles": ["editor"], "tier": "gold"},
        "level": 3,
        "verified": true
    });
    let yes = |c: &str| assert!(allowed(&allow_when(c), &r), "{c}");
    let no = |c: &str| assert!(!allowed(&allow_when(c), &r), "{c}");
    yes("{key: request.auth.principal, values: [\"iss.example.com/*\"]}");
    no("{key: request.auth.principal, values: [\"other/alice\"]}");
    yes("{key: request.auth.audiences, values: [\"svc-b\"]}");
    no("{key: request.auth.audiences, values: [\"svc-c\"]}");
    yes("{key: request.auth.presenter, values: [\"client-1\"]}");
    yes("{key: \"request.auth.claims[iss]\", values: [\"iss.example.com\"]}");
    yes("{key: \"request.auth.claims[groups]\", values: [\"admin\"]}");
    no("{key: \"request.auth.claims[groups]\", values: [\"ops\"]}");
    yes("{key: \"request.auth.claims[realm][roles]\", values: [\"edit*\"]}");
    yes("{key: \"request.auth.claims[realm][tier]\", values: [\"gold\"]}");
    no("{key: \"request.auth.claims[realm][missing]\", values: [\"*\"]}");
    yes("{key: \"request.auth.claims[realm][missing]\", notValues: [\"*\"]}");
    // Only strings and lists of strings match.
    no("{key: \"request.auth.claims[level]\", values: [\"3\"]}");
    no("{key: \"request.auth.claims[verified]\", values: [\"true\"]}");
    no("{key: \"request.auth.claims[realm]\", values: [\"*\"]}");
    // Without a JWT nothing JWT-related is present.
    assert!(!allowed(
        &allow_when("{key: \"request.auth.claims[iss]\", values: [\"*\"]}"),
        &get("/")
    ));
}

#[test]
fn when_experimental_filter_metadata_is_absent() {
    let c = "{key: \"experimental.envoy.filters.network.mysql_proxy[db.table]\", values: [\"*\"]}";
    assert!(!allowed(&allow_when(c), &get("/")));
    let c =
        "{key: \"experimental.envoy.filters.network.mysql_proxy[db.table]\", notValues: [\"x\"]}";
    assert!(allowed(&allow_when(c), &get("/")));
}

// ---------------------------------------------------------------- TCP

#[test]
fn tcp_allow_rules_with_http_fields_never_match() {
    let s = set(&[ap(
        "p",
        "rules:\n- to: [{operation: {ports: [\"5432\"], methods: [\"GET\"]}}]\n- when: [{key: \"request.headers[x]\", values: [\"*\"]}]",
    )]);
    let d = s.evaluate(&Request::tcp(5432));
    assert_eq!(d.decision, Verdict::Deny);
    assert!(
        d.reason
            .contains("2 ALLOW rule(s) never match on this TCP port"),
        "{}",
        d.reason
    );
    for field in [
        "hosts: [\"a\"]",
        "notHosts: [\"a\"]",
        "methods: [\"GET\"]",
        "notMethods: [\"GET\"]",
        "paths: [\"/a\"]",
        "notPaths: [\"/a\"]",
    ] {
        let s = allow_to(&format!("{{ports: [\"5432\"], {field}}}"));
        assert!(!allowed(&s, &Request::tcp(5432)), "{field}");
    }
    for src in [
        "{requestPrincipals: [\"*\"]}",
        "{notRequestPrincipals: [\"*\"]}",
    ] {
        assert!(!allowed(&allow_from(src), &Request::tcp(5432)), "{src}");
    }
    // Connection-level fields work on TCP.
    let s = allow_to("{ports: [\"5432\"]}");
    assert!(allowed(&s, &Request::tcp(5432)));
    assert!(!allowed(&s, &Request::tcp(5433)));
    let s = allow_from("{principals: [\"*\"]}");
    assert!(allowed(
        &s,
        &Request::tcp(1).with_principal("spiffe://td/ns/a/sa/b")
    ));
}

#[test]
fn tcp_deny_rules_drop_http_fields_and_deny_more() {
    // Istio's own example: DENY POST on 8080 denies all TCP on 8080.
    let s = set(&[ap(
        "d",
        "action: DENY\nrules:\n- to: [{operation: {methods: [\"POST\"], ports: [\"8080\"]}}]",
    )]);
    let d = s.evaluate(&Request::tcp(8080));
    assert_eq!(d.decision, Verdict::Deny);
    assert!(
        d.reason.contains("methods ignored on a TCP port"),
        "{}",
        d.reason
    );
    assert!(allowed(&s, &Request::tcp(9090)));
    let mut get8080 = get("/");
    get8080.port = 8080;
    assert!(allowed(&s, &get8080), "on HTTP the method still counts");
    // Without ports it denies every TCP connection.
    let s = set(&[ap(
        "d",
        "action: DENY\nrules:\n- to: [{operation: {paths: [\"/admin\"]}}]",
    )]);
    assert!(!allowed(&s, &Request::tcp(1)));
    // The non-HTTP part is kept.
    let s = set(&[ap(
        "d",
        "action: DENY\nrules:\n- from: [{source: {namespaces: [\"dev\"], requestPrincipals: [\"*\"]}}]",
    )]);
    assert!(!allowed(
        &s,
        &Request::tcp(1).with_principal("spiffe://td/ns/dev/sa/x")
    ));
    assert!(allowed(
        &s,
        &Request::tcp(1).with_principal("spiffe://td/ns/prod/sa/x")
    ));
}

// ---------------------------------------------------------------- dry-run

fn dry(name: &str, spec: &str) -> String {
    ap(name, spec).replacen(
        "metadata:\n",
        "metadata:\n  annotations: {\"istio.io/dry-run\": \"true\"}\n",
        1,
    )
}

#[test]
fn dry_run_policies_are_reported_not_enforced() {
    let s = set(&[dry("deny-all", "action: DENY\nrules: [{}]")]);
    assert!(s.policies()[0].dry_run);
    let d = s.evaluate(&get("/"));
    assert_eq!(d.decision, Verdict::Allow);
    let dr = d.dry_run.expect("dry-run result");
    assert_eq!(dr.decision, Verdict::Deny);
    assert_eq!(dr.policy.as_deref(), Some("default/deny-all"));
    assert_eq!(dr.action, Some(Action::Deny));

    // A dry-run ALLOW does not turn on deny-by-default.
    let s = set(&[dry(
        "only-admin",
        "rules:\n- from: [{source: {namespaces: [\"admin\"]}}]",
    )]);
    let d = s.evaluate(&get("/"));
    assert_eq!(d.decision, Verdict::Allow);
    assert_eq!(d.dry_run.map(|d| d.decision), Some(Verdict::Deny));

    // Without dry-run policies there is no dry-run section.
    assert!(set(&[ap("a", "rules: [{}]")])
        .evaluate(&get("/"))
        .dry_run
        .is_none());
}

// ---------------------------------------------------------------- output

#[test]
fn decision_json_fields() {
    let s = set(&[ap(
        "deny-admin",
        "action: DENY\nrules:\n- to: [{operation: {paths: [\"/admin*\"]}}]",
    )]);
    let v = serde_json::to_value(s.evaluate(&get("/admin"))).unwrap();
    assert_eq!(v["decision"], "DENY");
    assert_eq!(v["policy"], "default/deny-admin");
    assert_eq!(v["action"], "DENY");
    assert_eq!(v["rule_index"], 0);
    assert_eq!(
        v["reason"],
        "denied by DENY policy default/deny-admin rule 0: path /admin matched paths[\"/admin*\"]"
    );
    let v = serde_json::to_value(s.evaluate(&get("/ok"))).unwrap();
    assert_eq!(v["decision"], "ALLOW");
    assert!(v["policy"].is_null() && v["action"].is_null() && v["rule_index"].is_null());
}

#[test]
fn malformed_paths_are_rejected() {
    let s = set(&[]);
    let d = s.evaluate(&get("/a%00b"));
    assert_eq!(d.decision, Verdict::Deny);
    assert!(d.reason.contains("%00"), "{}", d.reason);
    assert_eq!(s.evaluate(&get("relative")).decision, Verdict::Deny);
}

#[test]
fn policy_set_is_shareable() {
    fn assert_send_sync<T: Send + Sync + Clone + 'static>() {}
    assert_send_sync::<PolicySet>();
}

#[test]
fn evaluation_order_is_by_namespace_and_name() {
    let s = set(&[
        ap("zeta", "action: DENY\nrules: [{}]"),
        ap("alpha", "action: DENY\nrules: [{}]"),
    ]);
    assert_eq!(
        s.evaluate(&get("/")).policy.as_deref(),
        Some("default/alpha")
    );
}

// ---------------------------------------------------------------- selection

fn labels(kv: &[(&str, &str)]) -> Labels {
    kv.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn selection_rules() {
    let res = resources(&[
        ap("istio-system/mesh-wide", "action: DENY\nrules: [{}]"),
        ap("istio-system/mesh-v1", "selector: {matchLabels: {version: v1}}\naction: AUDIT\nrules: [{}]"),
        ap("prod/ns-wide", "rules: [{}]"),
        ap("prod/api-only", "selector: {matchLabels: {app: api}}\nrules: [{}]"),
        ap("dev/dev-wide", "rules: [{}]"),
        ap(
            "prod/gw",
            "targetRefs: [{group: gateway.networking.k8s.io, kind: Gateway, name: ingress}]\nrules: [{}]",
        ),
    ]);
    let names = |w: &Workload| -> Vec<String> {
        select(&res, "istio-system", w)
            .iter()
            .map(|r| r.ns_name())
            .collect()
    };
    let api = Workload::new("prod", labels(&[("app", "api"), ("version", "v1")]));
    assert_eq!(
        names(&api),
        [
            "istio-system/mesh-v1",
            "istio-system/mesh-wide",
            "prod/api-only",
            "prod/ns-wide"
        ]
    );
    let web = Workload::new("prod", labels(&[("app", "web")]));
    assert_eq!(names(&web), ["istio-system/mesh-wide", "prod/ns-wide"]);
    let other = Workload::new("dev", labels(&[("version", "v1")]));
    assert_eq!(
        names(&other),
        [
            "dev/dev-wide",
            "istio-system/mesh-v1",
            "istio-system/mesh-wide"
        ]
    );
    // A different root namespace makes istio-system an ordinary namespace.
    assert_eq!(
        select(&res, "mesh-root", &web)
            .iter()
            .map(|r| r.ns_name())
            .collect::<Vec<_>>(),
        ["prod/ns-wide"]
    );
    // targetRef policies apply to the gateway only.
    let mut gw = Workload::new(
        "prod",
        labels(&[("gateway.networking.k8s.io/gateway-name", "ingress")]),
    );
    gw.targets.push(Target {
        kind: "Gateway".into(),
        name: "ingress".into(),
        namespace: "prod".into(),
    });
    assert!(names(&gw).contains(&"prod/gw".to_string()));
    assert!(!names(&api).contains(&"prod/gw".to_string()));
    gw.targets[0].namespace = "other".into();
    assert!(!names(&gw).contains(&"prod/gw".to_string()));

    let set = PolicySet::for_workload(&res, "istio-system", &web, Normalization::Base);
    let d = set.evaluate(&get("/"));
    assert_eq!(d.decision, Verdict::Deny);
    assert_eq!(d.policy.as_deref(), Some("istio-system/mesh-wide"));
}

// ---------------------------------------------------------------- bypass corpus

/// Requests aimed at `/admin` that a typical backend treats as `/admin`.
const ATTACKS: [&str; 13] = [
    "/admin",
    "//admin",
    "/%2Fadmin",
    "/%2fadmin",
    "/%5Cadmin",
    "/\\admin",
    "/./admin",
    "/foo/../admin",
    "/%61dmin",
    "/admin?x=1",
    "/admin#frag",
    "/admin/",
    "/foo/..%2Fadmin",
];

/// Which attacks get through a DENY on `/admin` in each mode, as
/// (NONE, BASE, MERGE_SLASHES, DECODE_AND_MERGE_SLASHES).
fn expected_bypass(attack: &str) -> [bool; 4] {
    match attack {
        "/admin" | "/admin?x=1" | "/admin#frag" | "/admin/" => [false; 4],
        // BASE turns `\` into `/` but keeps `//`.
        "//admin" | "/\\admin" => [true, true, false, false],
        "/%2Fadmin" | "/%2fadmin" | "/%5Cadmin" | "/foo/..%2Fadmin" => [true, true, true, false],
        "/./admin" | "/foo/../admin" | "/%61dmin" => [true, false, false, false],
        other => panic!("no expectation for {other}"),
    }
}

fn bypass_table(deny_paths: &str) -> Vec<(String, Normalization, bool)> {
    let doc = ap(
        "deny-admin",
        &format!("action: DENY\nrules:\n- to: [{{operation: {{paths: {deny_paths}}}}}]"),
    );
    let mut out = Vec::new();
    for mode in Normalization::ALL {
        let s = set_mode(std::slice::from_ref(&doc), mode);
        for a in ATTACKS {
            out.push((a.to_string(), mode, allowed(&s, &get(a))));
        }
    }
    out
}

#[test]
fn bypass_corpus_deny_prefix_and_exact() {
    for deny in ["[\"/admin*\"]", "[\"/admin\", \"/admin/*\"]"] {
        for (attack, mode, bypassed) in bypass_table(deny) {
            let idx = Normalization::ALL
                .iter()
                .position(|m| *m == mode)
                .unwrap_or(0);
            assert_eq!(
                bypassed,
                expected_bypass(&attack)[idx],
                "DENY {deny}: {attack} in {} ",
                mode.as_str()
            );
        }
        // The point of the analyzer warning: only DECODE_AND_MERGE_SLASHES
        // closes every variant.
        let count = |m: Normalization| {
            bypass_table(deny)
                .iter()
                .filter(|(_, mode, b)| *mode == m && *b)
                .count()
        };
        assert_eq!(count(Normalization::None), 9);
        assert_eq!(count(Normalization::Base), 6);
        assert_eq!(count(Normalization::MergeSlashes), 4);
        assert_eq!(count(Normalization::DecodeAndMergeSlashes), 0);
    }
}

#[test]
fn paths_are_case_sensitive_in_every_mode() {
    // Istio compares paths byte for byte: a case-insensitive backend needs
    // its own rule for /ADMIN (or an ALLOW list instead of a DENY list).
    let doc = ap(
        "deny-admin",
        "action: DENY\nrules:\n- to: [{operation: {paths: [\"/admin*\"]}}]",
    );
    for mode in Normalization::ALL {
        let s = set_mode(std::slice::from_ref(&doc), mode);
        assert!(allowed(&s, &get("/ADMIN")), "{}", mode.as_str());
        assert!(allowed(&s, &get("/%41DMIN")), "{}", mode.as_str());
    }
}

#[test]
fn bypass_corpus_allow_only() {
    // ALLOW /public/* only; each attack tries to reach /admin through it.
    let doc = ap(
        "public",
        "rules:\n- to: [{operation: {paths: [\"/public/*\"]}}]",
    );
    let cases: [(&str, [bool; 4]); 6] = [
        ("/public/../admin", [true, false, false, false]),
        ("/public/%2e%2e/admin", [true, false, false, false]),
        ("/public/..\\admin", [true, false, false, false]),
        ("/public/..%2fadmin", [true, true, true, false]),
        ("/public/..%5cadmin", [true, true, true, false]),
        ("/admin", [false, false, false, false]),
    ];
    for (i, mode) in Normalization::ALL.into_iter().enumerate() {
        let s = set_mode(std::slice::from_ref(&doc), mode);
        assert!(allowed(&s, &get("/public/index.html")));
        for (attack, expect) in cases {
            assert_eq!(
                allowed(&s, &get(attack)),
                expect[i],
                "{attack} in {}",
                mode.as_str()
            );
        }
    }
}

#[test]
fn normalized_path_is_reported() {
    let s = set_mode(&[], Normalization::DecodeAndMergeSlashes);
    let d = s.evaluate(&get("/a/%2F../b?q"));
    assert_eq!(d.normalized_path.as_deref(), Some("/a/b"));
}

#[test]
fn check_agrees_with_evaluate() {
    let s = set(&[
        ap("ext", "action: CUSTOM\nprovider: {name: opa}\nrules:\n- to: [{operation: {paths: [\"/api*\"]}}]"),
        ap("deny-admin", "action: DENY\nrules:\n- to: [{operation: {paths: [\"/admin*\"]}}]"),
        ap("allow", "rules:\n- from: [{source: {principals: [\"*\"]}}]\n- to: [{operation: {paths: [\"/public*\"]}}]"),
        dry("dry", "action: DENY\nrules: [{}]"),
    ]);
    let mut reqs: Vec<Request> = ATTACKS.iter().map(|a| get(a)).collect();
    reqs.extend([
        get("/api/x"),
        get("/api/x").with_principal("spiffe://td/ns/a/sa/b"),
        get("/public/x"),
        get("/a%00"),
        Request::tcp(9),
        Request::tcp(9).with_principal("spiffe://td/ns/a/sa/b"),
    ]);
    for r in &reqs {
        let d = s.evaluate(r);
        let c = s.check(r);
        assert_eq!(c.verdict, d.decision, "{}", r.path);
        assert_eq!(c.policy, d.policy.as_deref(), "{}", r.path);
        assert_eq!(c.rule_index, d.rule_index, "{}", r.path);
        assert_eq!(
            c.custom_provider,
            d.custom_provider.as_deref(),
            "{}",
            r.path
        );
    }
}
