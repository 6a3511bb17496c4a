//! Authorization decision bench: one request against 50 realistic policies
//! (10 DENY, 40 ALLOW; principals, namespaces, methods, paths, headers),
//! side by side with two baselines measured in the same run:
//!
//! - `hand_written`: the same 50 policies as plain structs checked with
//!   `if`s (no normalization, no explanation), the floor for this work;
//! - `engine_check_1_policy`: the engine with a single matching ALLOW policy.
//!
//! The engine is measured twice: `check` (the verdict only, what the server
//! layer calls per request) and `evaluate` (with the explanation
//! `meshctl x authz` prints).
//!
//! At the end it prints nanoseconds per decision and the ratios.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::Criterion;
use mesh_core::authz::{Normalization, PolicySet, Request, Verdict};
use mesh_core::config::load_str;

const POLICIES: usize = 50;
const DENIES: usize = 10;

/// 10 DENY then 40 ALLOW policies, all in namespace `shop`.
fn policies_yaml() -> String {
    let mut y = String::new();
    for i in 0..POLICIES {
        let spec = if i < DENIES {
            format!(
                "  action: DENY\n  rules:\n  - from:\n    - source: {{notNamespaces: [\"shop\", \"ops{i}\"]}}\n    to:\n    - operation: {{paths: [\"/internal/svc{i}/*\"]}}\n  - when:\n    - key: \"request.headers[x-debug-{i}]\"\n      values: [\"*\"]\n"
            )
        } else {
            format!(
                "  rules:\n  - from:\n    - source: {{principals: [\"cluster.local/ns/ns{i}/sa/sa{i}\", \"cluster.local/ns/ns{i}/sa/batch-*\"]}}\n    to:\n    - operation: {{methods: [\"GET\", \"HEAD\"], paths: [\"/api/v{i}/*\", \"/health\"]}}\n    - operation: {{methods: [\"POST\"], paths: [\"/api/v{i}/orders\"]}}\n    when:\n    - key: \"request.headers[x-tenant]\"\n      values: [\"t{i}\", \"t{i}-*\"]\n"
            )
        };
        y.push_str(&format!(
            "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata:\n  name: p{i:02}\n  namespace: shop\nspec:\n{spec}---\n"
        ));
    }
    y
}

/// The request: allowed by the 38th ALLOW policy, after every DENY is checked.
fn request() -> Request {
    let mut r = Request::http("GET", "/api/v47/items?page=2");
    r.port = 8080;
    r.host = "shop.example.com".into();
    r.source_principal = Some("spiffe://cluster.local/ns/ns47/sa/sa47".into());
    r.headers = vec![
        ("user-agent".into(), "curl/8".into()),
        ("accept".into(), "*/*".into()),
        ("x-tenant".into(), "t47".into()),
    ];
    r
}

/// The same policies as plain data, checked by hand.
struct Hand {
    deny: bool,
    idx: usize,
}

fn hand_policies() -> Vec<Hand> {
    (0..POLICIES)
        .map(|idx| Hand {
            deny: idx < DENIES,
            idx,
        })
        .collect()
}

/// Hand-written checks with the strings precomputed, as a person would write
/// them for these 50 policies: no path normalization, no explanation.
struct HandData {
    policies: Vec<Hand>,
    deny_paths: Vec<String>,
    deny_ns: Vec<String>,
    deny_headers: Vec<String>,
    allow_principals: Vec<String>,
    allow_sa_prefix: Vec<String>,
    allow_prefix: Vec<String>,
    allow_orders: Vec<String>,
    allow_tenant: Vec<String>,
    allow_tenant_prefix: Vec<String>,
}

impl HandData {
    fn new() -> Self {
        let r = 0..POLICIES;
        Self {
            policies: hand_policies(),
            deny_paths: r.clone().map(|i| format!("/internal/svc{i}/")).collect(),
            deny_ns: r.clone().map(|i| format!("ops{i}")).collect(),
            deny_headers: r.clone().map(|i| format!("x-debug-{i}")).collect(),
            allow_principals: r
                .clone()
                .map(|i| format!("cluster.local/ns/ns{i}/sa/sa{i}"))
                .collect(),
            allow_sa_prefix: r
                .clone()
                .map(|i| format!("cluster.local/ns/ns{i}/sa/batch-"))
                .collect(),
            allow_prefix: r.clone().map(|i| format!("/api/v{i}/")).collect(),
            allow_orders: r.clone().map(|i| format!("/api/v{i}/orders")).collect(),
            allow_tenant: r.clone().map(|i| format!("t{i}")).collect(),
            allow_tenant_prefix: r.map(|i| format!("t{i}-")).collect(),
        }
    }

    fn decide(&self, req: &Request) -> Verdict {
        let path = req.path.split(['?', '#']).next().unwrap_or("");
        let principal = req
            .source_principal
            .as_deref()
            .map(|p| p.strip_prefix("spiffe://").unwrap_or(p));
        let ns = principal.and_then(|p| p.split('/').nth(2));
        let header = |name: &str| {
            req.headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
        };
        for p in self.policies.iter().filter(|p| p.deny) {
            let i = p.idx;
            let from = !matches!(ns, Some(n) if n == "shop" || n == self.deny_ns[i]);
            if from && path.starts_with(self.deny_paths[i].as_str()) {
                return Verdict::Deny;
            }
            if header(&self.deny_headers[i]).is_some_and(|v| !v.is_empty()) {
                return Verdict::Deny;
            }
        }
        let tenant = header("x-tenant");
        for p in self.policies.iter().filter(|p| !p.deny) {
            let i = p.idx;
            let from = principal.is_some_and(|pr| {
                pr == self.allow_principals[i] || pr.starts_with(self.allow_sa_prefix[i].as_str())
            });
            let to = ((req.method == "GET" || req.method == "HEAD")
                && (path.starts_with(self.allow_prefix[i].as_str()) || path == "/health"))
                || (req.method == "POST" && path == self.allow_orders[i]);
            let when = tenant.is_some_and(|t| {
                t == self.allow_tenant[i] || t.starts_with(self.allow_tenant_prefix[i].as_str())
            });
            if from && to && when {
                return Verdict::Allow;
            }
        }
        Verdict::Deny
    }
}

fn one_policy_yaml() -> String {
    "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata:\n  name: only\n  namespace: shop\nspec:\n  rules:\n  - from:\n    - source: {principals: [\"cluster.local/ns/ns47/sa/sa47\"]}\n    to:\n    - operation: {methods: [\"GET\"], paths: [\"/api/v47/*\"]}\n    when:\n    - key: \"request.headers[x-tenant]\"\n      values: [\"t47\"]\n".to_string()
}

fn build(yaml: &str) -> PolicySet {
    let loaded = load_str(yaml, "bench.yaml");
    assert!(loaded.errors.is_empty(), "{:?}", loaded.errors);
    PolicySet::compile(&loaded.resources, Normalization::Base)
}

/// Mean nanoseconds per call of `f`, measured over ~`budget`.
fn ns_per_call(budget: Duration, mut f: impl FnMut()) -> f64 {
    let mut iters: u64 = 1_000;
    loop {
        let start = Instant::now();
        for _ in 0..iters {
            f();
        }
        let elapsed = start.elapsed();
        if elapsed >= budget || iters >= 1 << 30 {
            return elapsed.as_nanos() as f64 / iters as f64;
        }
        iters *= 2;
    }
}

fn main() {
    let engine = build(&policies_yaml());
    let one = build(&one_policy_yaml());
    let hand = HandData::new();
    let req = request();

    // The three must agree, or the comparison means nothing.
    let d = engine.evaluate(&req);
    assert_eq!(d.decision, Verdict::Allow, "{}", d.reason);
    assert_eq!(d.policy.as_deref(), Some("shop/p47"));
    assert_eq!(hand.decide(&req), Verdict::Allow);
    assert_eq!(one.evaluate(&req).decision, Verdict::Allow);
    let mut denied = req.clone();
    denied.headers[2].1 = "t3".into();
    assert_eq!(engine.evaluate(&denied).decision, Verdict::Deny);
    assert_eq!(hand.decide(&denied), Verdict::Deny);

    let mut c = Criterion::default()
        .measurement_time(Duration::from_secs(2))
        .warm_up_time(Duration::from_millis(500))
        .configure_from_args();
    {
        let mut g = c.benchmark_group("authz");
        g.bench_function("engine_check_50_policies", |b| {
            b.iter(|| black_box(engine.check(black_box(&req)).verdict))
        });
        g.bench_function("engine_explained_50_policies", |b| {
            b.iter(|| black_box(engine.evaluate(black_box(&req))))
        });
        g.bench_function("hand_written_50_policies", |b| {
            b.iter(|| black_box(hand.decide(black_box(&req))))
        });
        g.bench_function("engine_check_1_policy", |b| {
            b.iter(|| black_box(one.check(black_box(&req)).verdict))
        });
        g.finish();
    }
    c.final_summary();

    // Our own side-by-side figures, printed whatever criterion's output mode.
    let budget = Duration::from_millis(700);
    let e = ns_per_call(budget, || {
        black_box(engine.check(black_box(&req)).verdict);
    });
    let x = ns_per_call(budget, || {
        black_box(engine.evaluate(black_box(&req)));
    });
    let h = ns_per_call(budget, || {
        black_box(hand.decide(black_box(&req)));
    });
    let o = ns_per_call(budget, || {
        black_box(one.check(black_box(&req)).verdict);
    });
    println!();
    println!("authz decision, 50 policies (10 DENY + 40 ALLOW, match in the 38th ALLOW):");
    println!("  engine check (hot path)   {e:>9.1} ns/decision");
    println!(
        "  hand-written baseline     {h:>9.1} ns/decision   engine/hand-written = {:.2}x",
        e / h
    );
    println!(
        "  engine check, 1 policy    {o:>9.1} ns/decision   engine(50)/engine(1) = {:.2}x",
        e / o
    );
    println!(
        "  engine evaluate+explain   {x:>9.1} ns/decision   explained/check = {:.2}x",
        x / e
    );
}
