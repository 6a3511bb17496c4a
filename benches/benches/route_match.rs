//! Route matching: a VirtualService of 100 rules (prefix, exact, regex and
//! header matches) compiled by `mesh-core`, against a hand-written loop of
//! the same 100 conditions (`starts_with`/`==`/the same prebuilt regexes),
//! the floor any matcher has to pay. Requests hit an early, a middle and a
//! late rule, and no rule at all. Prints ns/op for both and the ratio.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::Criterion;
use mesh_core::config::common::StringMatch;
use mesh_core::config::networking::virtual_service::{
    Destination, HttpMatchRequest, HttpRoute, HttpRouteDestination, VirtualService,
};
use mesh_core::model::Client;
use mesh_core::route::matcher::FullRegex;
use mesh_core::route::{compile_route_table, RequestInfo, RouteTable, VsRef};

const RULES: usize = 100;

/// The hand-written equivalent of one rule.
enum Plain {
    Prefix(String),
    Exact(String),
    Regex(FullRegex),
    Header {
        prefix: String,
        name: &'static str,
        value: String,
    },
}

fn rule_match(i: usize) -> HttpMatchRequest {
    let mut m = HttpMatchRequest::default();
    match i % 4 {
        0 => m.uri = Some(StringMatch::prefix(format!("/svc{i}/"))),
        1 => m.uri = Some(StringMatch::exact(format!("/exact/{i}"))),
        2 => m.uri = Some(StringMatch::regex(format!("/re{i}/[a-z]+/[0-9]+"))),
        _ => {
            m.uri = Some(StringMatch::prefix("/h/"));
            m.headers =
                BTreeMap::from([("x-tenant".to_string(), StringMatch::exact(format!("t{i}")))]);
        }
    }
    m
}

fn plain(i: usize) -> Plain {
    match i % 4 {
        0 => Plain::Prefix(format!("/svc{i}/")),
        1 => Plain::Exact(format!("/exact/{i}")),
        2 => match FullRegex::new(&format!("/re{i}/[a-z]+/[0-9]+")) {
            Ok(r) => Plain::Regex(r),
            Err(e) => panic!("bench regex: {e}"),
        },
        _ => Plain::Header {
            prefix: "/h/".into(),
            name: "x-tenant",
            value: format!("t{i}"),
        },
    }
}

fn table() -> RouteTable {
    let spec = VirtualService {
        hosts: vec!["reviews".into()],
        http: (0..RULES)
            .map(|i| HttpRoute {
                matches: vec![rule_match(i)],
                route: vec![HttpRouteDestination {
                    destination: Destination {
                        host: format!("backend-{i}"),
                        ..Destination::default()
                    },
                    weight: 100,
                    headers: None,
                }],
                ..HttpRoute::default()
            })
            .collect(),
        ..VirtualService::default()
    };
    let vss = [VsRef {
        namespace: "default",
        name: "reviews",
        spec: &spec,
    }];
    compile_route_table(
        &vss,
        &Client::new("default", BTreeMap::new()),
        "reviews",
        Some(9080),
        "cluster.local",
    )
}

/// The floor: the same conditions as a plain loop.
fn plain_route(rules: &[Plain], path: &str, headers: &[(&str, &str)]) -> Option<usize> {
    let path = path.split_once('?').map_or(path, |(p, _)| p);
    rules.iter().position(|r| match r {
        Plain::Prefix(p) => path.starts_with(p.as_str()),
        Plain::Exact(e) => path == e,
        Plain::Regex(re) => re.is_match(path),
        Plain::Header {
            prefix,
            name,
            value,
        } => {
            path.starts_with(prefix.as_str())
                && headers
                    .iter()
                    .any(|(k, v)| k.eq_ignore_ascii_case(name) && v == value)
        }
    })
}

struct Case {
    name: &'static str,
    path: &'static str,
    headers: [(&'static str, &'static str); 2],
    expect: Option<usize>,
}

const CASES: [Case; 4] = [
    Case {
        name: "early",
        path: "/exact/1",
        headers: [("user-agent", "bench"), ("x-tenant", "none")],
        expect: Some(1),
    },
    Case {
        name: "middle",
        path: "/re50/abc/123",
        headers: [("user-agent", "bench"), ("x-tenant", "none")],
        expect: Some(50),
    },
    Case {
        name: "late",
        path: "/h/item",
        headers: [("user-agent", "bench"), ("x-tenant", "t99")],
        expect: Some(99),
    },
    Case {
        name: "none",
        path: "/nothing/here",
        headers: [("user-agent", "bench"), ("x-tenant", "none")],
        expect: None,
    },
];

fn engine(t: &RouteTable, c: &Case) -> Option<usize> {
    let req = RequestInfo {
        headers: &c.headers,
        ..RequestInfo::get(c.path)
    };
    t.route(&req).and_then(|r| r.rule_index)
}

/// ns per call of `f`, best of several short runs (for the closing table).
fn ns_per_op(mut f: impl FnMut()) -> f64 {
    let iters = 20_000u32;
    let mut best = f64::MAX;
    for _ in 0..15 {
        let start = Instant::now();
        for _ in 0..iters {
            f();
        }
        best = best.min(start.elapsed().as_nanos() as f64 / f64::from(iters));
    }
    best
}

fn main() {
    let t = table();
    let rules: Vec<Plain> = (0..RULES).map(plain).collect();
    for c in &CASES {
        assert_eq!(engine(&t, c), c.expect, "engine, case {}", c.name);
        assert_eq!(
            plain_route(&rules, c.path, &c.headers),
            c.expect,
            "baseline, case {}",
            c.name
        );
    }

    let mut crit = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .configure_from_args();
    let mut group = crit.benchmark_group("route_match_100_rules");
    for c in &CASES {
        group.bench_function(format!("mesh/{}", c.name), |b| {
            b.iter(|| engine(black_box(&t), black_box(c)))
        });
        group.bench_function(format!("baseline/{}", c.name), |b| {
            b.iter(|| plain_route(black_box(&rules), black_box(c.path), black_box(&c.headers)))
        });
    }
    group.finish();
    crit.final_summary();

    println!("\nroute_match (100 rules): ns/op, mesh engine vs hand-written loop");
    println!(
        "{:<8} {:>10} {:>10} {:>7}",
        "case", "mesh", "baseline", "ratio"
    );
    for c in &CASES {
        let m = ns_per_op(|| {
            black_box(engine(black_box(&t), black_box(c)));
        });
        let b = ns_per_op(|| {
            black_box(plain_route(
                black_box(&rules),
                black_box(c.path),
                black_box(&c.headers),
            ));
        });
        println!("{:<8} {:>10.1} {:>10.1} {:>6.2}x", c.name, m, b, m / b);
    }
}
