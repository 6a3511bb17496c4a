//! Extraction precedence and injection, across formats.

use std::collections::BTreeMap;

use super::*;

const TRACE_W3C: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const SPAN_W3C: &str = "00f067aa0ba902b7";
const TRACE_B3: &str = "80f198ee56343ba864fe8b2a57d3eff7";
const SPAN_B3: &str = "e457b5a2e4d86bd1";
const PARENT_B3: &str = "05e3ac9a4f6e3b90";

/// A header map as a test writes it: each name with its lines.
fn headers(pairs: &[(&'static str, &'static str)]) -> BTreeMap<&'static str, Vec<&'static str>> {
    let mut map: BTreeMap<&'static str, Vec<&'static str>> = BTreeMap::new();
    for (k, v) in pairs {
        map.entry(k).or_default().push(v);
    }
    map
}

fn run(p: Precedence, pairs: &[(&'static str, &'static str)]) -> Extracted {
    let map = headers(pairs);
    extract(p, |n| map.get(n).into_iter().flatten().copied())
}

fn traceparent() -> String {
    format!("00-{TRACE_W3C}-{SPAN_W3C}-01")
}

fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

#[test]
fn nothing_extracted_from_no_headers() {
    assert_eq!(run(Precedence::B3First, &[]), Extracted::None);
    assert_eq!(
        run(Precedence::B3First, &[("tracestate", "a=b")]),
        Extracted::None
    );
}

#[test]
fn w3c_alone() {
    let tp = leak(traceparent());
    let e = run(
        Precedence::B3First,
        &[
            ("traceparent", tp),
            ("tracestate", "rojo=1"),
            ("tracestate", "congo=2"),
        ],
    );
    let Extracted::Parent(ctx, Format::W3c) = e else {
        panic!("{e:?}")
    };
    assert_eq!(ctx.trace_id.to_string(), TRACE_W3C);
    assert_eq!(ctx.span_id.to_string(), SPAN_W3C);
    assert_eq!(ctx.sampled, Some(true));
    // Several tracestate lines are combined in order.
    assert_eq!(ctx.tracestate.as_deref(), Some("rojo=1,congo=2"));
}

#[test]
fn invalid_tracestate_is_dropped_but_traceparent_kept() {
    let tp = leak(traceparent());
    let e = run(
        Precedence::W3cFirst,
        &[("traceparent", tp), ("tracestate", "BAD")],
    );
    assert_eq!(e.parent().unwrap().tracestate, None);
}

#[test]
fn b3_single_beats_b3_multi_beats_w3c_by_default() {
    let tp = leak(traceparent());
    let single = leak(format!("{TRACE_B3}-{SPAN_B3}-0-{PARENT_B3}"));
    let all = [
        ("traceparent", tp),
        ("b3", single),
        ("x-b3-traceid", "1111111111111111"),
        ("x-b3-spanid", "2222222222222222"),
        ("x-b3-sampled", "1"),
    ];
    let e = run(Precedence::B3First, &all);
    let Extracted::Parent(ctx, Format::B3Single) = &e else {
        panic!("{e:?}")
    };
    assert_eq!(ctx.trace_id.to_string(), TRACE_B3);
    assert_eq!(ctx.parent_span_id.unwrap().to_string(), PARENT_B3);
    assert_eq!(e.sampled(), Some(false));

    let e = run(Precedence::B3First, &all[2..]);
    let Extracted::Parent(ctx, Format::B3Multi) = &e else {
        panic!("{e:?}")
    };
    assert_eq!(ctx.trace_id.to_string(), "00000000000000001111111111111111");

    let e = run(Precedence::W3cFirst, &all);
    assert!(matches!(e, Extracted::Parent(_, Format::W3c)));
}

#[test]
fn malformed_header_falls_through_to_the_next_format() {
    let tp = leak(traceparent());
    let e = run(
        Precedence::B3First,
        &[("b3", "garbage"), ("traceparent", tp)],
    );
    assert!(matches!(e, Extracted::Parent(_, Format::W3c)));
    let e = run(
        Precedence::W3cFirst,
        &[
            ("traceparent", "00-zz"),
            ("x-b3-traceid", TRACE_B3),
            ("x-b3-spanid", SPAN_B3),
        ],
    );
    let Extracted::Parent(ctx, Format::B3Multi) = &e else {
        panic!("{e:?}")
    };
    assert_eq!(ctx.sampled, None);
    // Everything malformed: a new trace.
    let e = run(
        Precedence::B3First,
        &[("b3", "x"), ("traceparent", "00-zz")],
    );
    assert_eq!(e, Extracted::None);
}

#[test]
fn sampling_only_b3() {
    let e = run(Precedence::B3First, &[("b3", "0")]);
    assert_eq!(
        e,
        Extracted::SamplingOnly {
            sampled: false,
            debug: false
        }
    );
    assert_eq!(e.sampled(), Some(false));
    assert_eq!(e.parent(), None);
    let e = run(Precedence::B3First, &[("x-b3-flags", "1")]);
    assert_eq!(
        e,
        Extracted::SamplingOnly {
            sampled: true,
            debug: true
        }
    );
    // A W3C parent wins over a B3 decision without ids only with W3cFirst.
    let tp = leak(traceparent());
    let e = run(Precedence::B3First, &[("b3", "0"), ("traceparent", tp)]);
    assert!(matches!(e, Extracted::SamplingOnly { .. }));
    let e = run(Precedence::W3cFirst, &[("b3", "0"), ("traceparent", tp)]);
    assert!(matches!(e, Extracted::Parent(_, Format::W3c)));
}

#[test]
fn b3_parent_keeps_tracestate_of_the_same_trace_only() {
    let same_tp = leak(format!("00-{TRACE_B3}-{SPAN_W3C}-01"));
    let other_tp = leak(traceparent());
    let b3 = leak(format!("{TRACE_B3}-{SPAN_B3}-1"));
    let e = run(
        Precedence::B3First,
        &[("b3", b3), ("traceparent", same_tp), ("tracestate", "k=v")],
    );
    assert_eq!(e.parent().unwrap().tracestate.as_deref(), Some("k=v"));
    let e = run(
        Precedence::B3First,
        &[("b3", b3), ("traceparent", other_tp), ("tracestate", "k=v")],
    );
    assert_eq!(e.parent().unwrap().tracestate, None);
}

#[test]
fn only_the_first_line_of_single_valued_headers_counts() {
    let tp = leak(traceparent());
    let e = run(
        Precedence::W3cFirst,
        &[("traceparent", tp), ("traceparent", "00-zz")],
    );
    assert!(e.parent().is_some());
}

fn injected(ctx: &TraceContext) -> BTreeMap<&'static str, Option<String>> {
    let mut out = BTreeMap::new();
    inject(ctx, |k, v| {
        assert!(out.insert(k, v).is_none(), "{k} written twice");
    });
    assert_eq!(out.len(), PROPAGATION_HEADERS.len());
    out
}

#[test]
fn inject_writes_w3c_and_b3_multi_and_removes_b3_single() {
    let parent = TraceContext {
        tracestate: Some("rojo=1".into()),
        ..TraceContext::root(0x4bf9_2f35_77b3_4da6_a3ce_929d_0e0e_4736, 0xaa, true)
    };
    let child = parent.child(0x00f0_67aa_0ba9_02b7, true);
    let h = injected(&child);
    let get = |k: &str| h[k].as_deref();
    assert_eq!(get("traceparent"), Some(traceparent().as_str()));
    assert_eq!(get("tracestate"), Some("rojo=1"));
    assert_eq!(get("x-b3-traceid"), Some(TRACE_W3C));
    assert_eq!(get("x-b3-spanid"), Some(SPAN_W3C));
    assert_eq!(get("x-b3-parentspanid"), Some("00000000000000aa"));
    assert_eq!(get("x-b3-sampled"), Some("1"));
    assert_eq!(get("x-b3-flags"), None);
    assert_eq!(get("b3"), None);
}

#[test]
fn inject_then_extract_round_trips_in_both_orders() {
    let ctx = TraceContext {
        tracestate: Some("congo=t61rcWkgMzE".into()),
        ..TraceContext::root(7, 9, false).child(11, false)
    };
    let h: Vec<(&'static str, &'static str)> = injected(&ctx)
        .into_iter()
        .filter_map(|(k, v)| Some((k, leak(v?))))
        .collect();
    assert_eq!(run(Precedence::B3First, &h).parent(), Some(&ctx));
    // W3C has no field for the parent's parent.
    let w3c = TraceContext {
        parent_span_id: None,
        ..ctx.clone()
    };
    assert_eq!(run(Precedence::W3cFirst, &h).parent(), Some(&w3c));
}

#[test]
fn inject_debug_and_undecided() {
    let debug = TraceContext {
        debug: true,
        sampled: Some(true),
        ..TraceContext::root(1, 2, true)
    };
    let h = injected(&debug);
    assert_eq!(h["x-b3-flags"].as_deref(), Some("1"));
    assert_eq!(h["x-b3-sampled"], None);
    assert!(h["traceparent"].as_deref().unwrap().ends_with("-01"));
    let e = run(
        Precedence::B3First,
        &[
            ("x-b3-traceid", leak(h["x-b3-traceid"].clone().unwrap())),
            ("x-b3-spanid", leak(h["x-b3-spanid"].clone().unwrap())),
            ("x-b3-flags", "1"),
        ],
    );
    assert!(e.parent().unwrap().debug);
    assert_eq!(e.sampled(), Some(true));

    let undecided = TraceContext {
        sampled: None,
        ..TraceContext::root(1, 2, true)
    };
    let h = injected(&undecided);
    assert_eq!(h["x-b3-sampled"], None);
    assert!(h["traceparent"].as_deref().unwrap().ends_with("-00"));
    // 64-bit trace ids go back out in 16 digits.
    assert_eq!(h["x-b3-traceid"].as_deref(), Some("0000000000000001"));
    assert_eq!(h["traceparent"].as_deref().unwrap().len(), 55);
}

#[test]
fn b3_single_formatting_of_a_context() {
    let ctx = TraceContext::root(u128::MAX, 2, true).child(3, true);
    assert_eq!(
        format_b3_single(&ctx),
        format!("{}-0000000000000003-1-0000000000000002", "f".repeat(32))
    );
    let back = run(Precedence::B3First, &[("b3", leak(format_b3_single(&ctx)))]);
    assert_eq!(back.parent(), Some(&ctx));
}

#[test]
fn child_keeps_trace_and_links_parent() {
    let root = TraceContext::root(5, 6, true);
    let child = root.child(0, false);
    assert_eq!(child.trace_id, root.trace_id);
    assert_eq!(child.parent_span_id, Some(root.span_id));
    assert_eq!(child.span_id.to_u64(), 1); // zero randomness still gives a valid id
    assert_eq!(child.sampled, Some(false));
}

#[test]
fn w3c_injection_writes_only_w3c_and_drops_a_stale_tracestate() {
    let mut set = BTreeMap::new();
    let ctx = TraceContext::root(7, 8, true);
    inject_w3c(&ctx, |name, value| {
        set.insert(name, value);
    });
    assert_eq!(set.len(), 2, "{set:?}");
    assert!(set["traceparent"]
        .as_deref()
        .unwrap()
        .ends_with("-0000000000000008-01"));
    assert_eq!(set["tracestate"], None, "removed when the context has none");
}
