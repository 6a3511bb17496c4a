//! The demo's telemetry as Istio users consume it: a real Prometheus
//! (Debian's `prometheus`, on loopback) scrapes every demo workload's
//! `/stats/prometheus` each second while demo traffic runs, and the
//! queries Kiali's graph and Istio's Grafana dashboards send find the
//! demo's edges, rates, error codes and latencies. Each workload's
//! exposition also goes through `promtool check metrics`.
//!
//! The PromQL below is copied from its sources, with only the template
//! values filled in:
//!
//! - Kiali, `graph/telemetry/istio/istio.go` (`buildNamespaceTrafficMap`,
//!   sidecar mode: `util.GetReporter` gives `reporter="..."`), for
//!   namespace `default` and Kiali's default graph duration of 1m, which
//!   it writes as `[60s]`; and `appender/security_policy.go` (the edge's
//!   mTLS share and principals).
//! - Istio's `manifests/addons/dashboards`: the mesh dashboard
//!   (`istio-mesh-dashboard.gen.json`, from `lib/queries.libsonnet`) and
//!   the service dashboard (`istio-service-dashboard.json`). Grafana's
//!   `$__rate_interval` is `max($__interval + scrape interval, 4 x scrape
//!   interval)`; with the datasource's default scrape interval (15s) it is
//!   `1m`, which is what the tests put in.
//!
//! Needs Debian's `prometheus` package (`apt-get install prometheus`,
//! done by `scripts/test.sh`); without it the tests fail saying so.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use mesh_examples::mesh_demo::{exercise, Demo};
use mesh_test_support::prometheus::{get, promtool_check, Prometheus, PromtoolReport, Series};
use mesh_tower::telemetry::STATS_PATH;

/// Kiali's group-by for request edges (`istio.go`).
const KIALI_GROUP_BY: &str = "source_cluster,source_workload_namespace,source_workload,source_canonical_service,source_canonical_revision,destination_cluster,destination_service_namespace,destination_service,destination_service_name,destination_workload_namespace,destination_workload,destination_canonical_service,destination_canonical_revision,request_protocol,response_code,grpc_response_status,response_flags";

/// Kiali's group-by for the security policy appender.
const KIALI_SECURITY_GROUP_BY: &str = "source_cluster,source_workload_namespace,source_workload,source_canonical_service,source_canonical_revision,source_principal,destination_cluster,destination_service_namespace,destination_service_name,destination_workload_namespace,destination_workload,destination_canonical_service,destination_canonical_revision,destination_principal,connection_security_policy";

/// Kiali's namespace graph query 0: requests into the namespace's
/// services that never reached a workload (source telemetry).
fn kiali_incoming_unserviced(ns: &str) -> String {
    format!(
        r#"sum(rate(istio_requests_total{{reporter="source",source_workload_namespace!="{ns}",destination_workload_namespace="unknown",destination_workload="unknown",destination_service=~"^.+\\.{ns}\\..+$"}} [60s])) by ({KIALI_GROUP_BY}) > 0"#
    )
}

/// Kiali's namespace graph query 2: the namespace's incoming requests
/// (destination telemetry).
fn kiali_incoming(ns: &str) -> String {
    format!(
        r#"sum(rate(istio_requests_total{{reporter="destination",destination_workload_namespace="{ns}"}} [60s])) by ({KIALI_GROUP_BY}) > 0"#
    )
}

/// Kiali's namespace graph query 3: the namespace's outgoing requests
/// (source telemetry).
fn kiali_outgoing(ns: &str) -> String {
    format!(
        r#"sum(rate(istio_requests_total{{reporter="source",source_workload_namespace="{ns}"}} [60s])) by ({KIALI_GROUP_BY}) > 0"#
    )
}

/// Kiali's security policy appender, requests from inside the namespace.
fn kiali_security(ns: &str) -> String {
    format!(
        r#"(sum(rate(istio_requests_total{{reporter="destination",source_workload_namespace="{ns}"}}[60s])) by ({KIALI_SECURITY_GROUP_BY}) > 0)"#
    )
}

/// Mesh dashboard, "Traffic Volume".
const MESH_VOLUME: &str = r#"round(sum (rate(istio_requests_total{reporter=~"source|waypoint"}[$__rate_interval])), 0.01)"#;
/// Mesh dashboard, "Success Rate".
const MESH_SUCCESS: &str = r#"sum (rate(istio_requests_total{reporter=~"source|waypoint",response_code!~"5.."}[$__rate_interval])) / sum (rate(istio_requests_total{reporter=~"source|waypoint"}[$__rate_interval]))"#;
/// Mesh dashboard, "4xxs".
const MESH_4XX: &str = r#"round(sum (rate(istio_requests_total{reporter=~"source|waypoint",response_code=~"4.."}[$__rate_interval])), 0.01)or vector(0)"#;
/// Mesh dashboard, "5xxs".
const MESH_5XX: &str = r#"round(sum (rate(istio_requests_total{reporter=~"source|waypoint",response_code=~"5.."}[$__rate_interval])), 0.01)or vector(0)"#;
/// Mesh dashboard, "HTTP/gRPC Workloads" table: requests.
const MESH_WORKLOAD_REQUESTS: &str = r#"label_join(sum by (destination_workload,destination_workload_namespace,destination_service) (rate(istio_requests_total{reporter=~"source|waypoint"}[$__rate_interval])), "destination_workload_var", ".", "destination_workload", "destination_workload_namespace")"#;
/// Mesh dashboard, "HTTP/gRPC Workloads" table: P99 latency.
const MESH_WORKLOAD_P99: &str = r#"label_join(histogram_quantile(0.99, sum by (le,destination_workload,destination_workload_namespace) (rate(istio_request_duration_milliseconds_bucket{reporter=~"source|waypoint"}[$__rate_interval]))), "destination_workload_var", ".", "destination_workload", "destination_workload_namespace")"#;
/// Mesh dashboard, "HTTP/gRPC Workloads" table: success rate.
const MESH_WORKLOAD_SUCCESS: &str = r#"label_join(sum by (destination_workload,destination_workload_namespace) (rate(istio_requests_total{reporter=~"source|waypoint",response_code!~"5.."}[$__rate_interval]))/sum by (destination_workload,destination_workload_namespace) (rate(istio_requests_total{reporter=~"source|waypoint"}[$__rate_interval])), "destination_workload_var", ".", "destination_workload", "destination_workload_namespace")"#;

/// Service dashboard, "Client Request Volume".
const SERVICE_VOLUME: &str = r#"round(sum(irate(istio_requests_total{reporter=~"$qrep",destination_service="$service"}[$__rate_interval])), 0.001)"#;
/// Service dashboard, "Client Success Rate (non-5xx responses)".
const SERVICE_SUCCESS: &str = r#"sum(irate(istio_requests_total{reporter=~"$qrep",destination_service="$service",response_code!~"5.*"}[$__rate_interval])) / (sum(irate(istio_requests_total{reporter=~"$qrep",destination_service="$service"}[$__rate_interval])) or on () vector(1))"#;
/// Service dashboard, "Client Request Duration", P99 (in seconds).
const SERVICE_P99: &str = r#"(histogram_quantile(0.99, sum(irate(istio_request_duration_milliseconds_bucket{reporter=~"$qrep",destination_service="$service"}[$__rate_interval])) by (le)) / 1000) or histogram_quantile(0.99, sum(irate(istio_request_duration_seconds_bucket{reporter=~"$qrep",destination_service="$service"}[$__rate_interval])) by (le))"#;

const SERVICE: &str = "reviews.default.svc.cluster.local";

/// A dashboard expression with Grafana's variables filled in.
fn grafana(expr: &str, qrep: &str) -> String {
    expr.replace("$__rate_interval", "1m")
        .replace("$qrep", qrep)
        .replace("$service", SERVICE)
}

/// (source workload, destination workload, response code) of each series.
fn edges(series: &[Series]) -> BTreeSet<(String, String, String)> {
    series
        .iter()
        .map(|s| {
            (
                s.label("source_workload").to_string(),
                s.label("destination_workload").to_string(),
                s.label("response_code").to_string(),
            )
        })
        .collect()
}

/// The demo's edges: v1 always answers, v2 also fails.
fn demo_edges() -> BTreeSet<(String, String, String)> {
    [
        ("reviews-v1", "200"),
        ("reviews-v2", "200"),
        ("reviews-v2", "503"),
    ]
    .into_iter()
    .map(|(d, c)| ("productpage-v1".to_string(), d.to_string(), c.to_string()))
    .collect()
}

/// Every label Kiali reads off an edge series, as the demo's workloads
/// must fill it.
fn assert_kiali_edge(s: &Series) {
    let version = s
        .label("destination_workload")
        .trim_start_matches("reviews-");
    let want = [
        ("source_cluster", "Kubernetes"),
        ("source_workload_namespace", "default"),
        ("source_workload", "productpage-v1"),
        ("source_canonical_service", "productpage"),
        ("source_canonical_revision", "v1"),
        ("destination_cluster", "Kubernetes"),
        ("destination_service_namespace", "default"),
        ("destination_service", SERVICE),
        ("destination_service_name", "reviews"),
        ("destination_workload_namespace", "default"),
        ("destination_canonical_service", "reviews"),
        ("destination_canonical_revision", version),
        ("request_protocol", "http"),
        ("response_flags", "-"),
        // Istio leaves it empty for plain HTTP: Prometheus drops the label.
        ("grpc_response_status", ""),
    ];
    for (k, v) in want {
        assert_eq!(s.label(k), v, "{k} of {s:?}");
    }
    assert!(s.value > 0.0 && s.value.is_finite(), "{s:?}");
}

/// Background traffic, as a user's load would be, until `stop`.
fn load(demo: &Demo, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<u32> {
    let client = demo.client();
    tokio::spawn(async move {
        let mut sent = 0;
        while !stop.load(Ordering::Relaxed) {
            exercise(&client, 10).await.expect("demo traffic");
            sent += 10;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        sent
    })
}

/// Prometheus scrapes the demo; Kiali's graph and Istio's dashboards
/// find productpage -> reviews v1/v2 with both reporters, mTLS and
/// principals, v2's 503s, the success rates and a finite p99.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kiali_and_istio_dashboard_queries_see_the_demo() {
    let demo = Demo::start().await.unwrap();
    let targets = demo.metrics_targets();
    let prom = Prometheus::start(&targets).await;

    // The demo's traffic, then v2 goes bad under steady load.
    demo.rollout().await.unwrap();
    demo.v2_faults.set(true);
    let stop = Arc::new(AtomicBool::new(false));
    let load = load(&demo, stop.clone());

    // Every workload scraped, and two scrapes of each edge seen (rate()
    // needs two samples).
    let within = Duration::from_secs(30);
    let up = prom
        .query_until(r#"up{job="mesh"} == 1"#, within, |s| {
            s.len() == targets.len()
        })
        .await;
    assert_eq!(up.len(), 3, "{up:?}");
    let outgoing = prom
        .query_until(&kiali_outgoing("default"), within, |s| {
            edges(s) == demo_edges()
        })
        .await;
    // irate() reads the last two samples: wait until they hold v2's 503s.
    for qrep in ["destination", "source"] {
        prom.query_until(&grafana(SERVICE_SUCCESS, qrep), within, |s| {
            s.len() == 1 && s[0].value < 1.0
        })
        .await;
    }

    // Kiali: the same three edges from both ends, every label filled.
    for s in &outgoing {
        assert_kiali_edge(s);
    }
    // Each workload is its own scrape target: the destination side's
    // second sample of an edge may land a scrape after the source side's.
    let incoming = prom
        .query_until(&kiali_incoming("default"), within, |s| {
            edges(s) == demo_edges()
        })
        .await;
    for s in &incoming {
        assert_kiali_edge(s);
    }
    // Every request reached a workload: no dangling service edges.
    let unserviced = prom.query(&kiali_incoming_unserviced("default")).await;
    assert!(unserviced.is_empty(), "{unserviced:#?}");
    // mTLS on both edges, each end named by its SPIFFE identity.
    let security = prom.query(&kiali_security("default")).await;
    let dests: BTreeSet<&str> = security
        .iter()
        .map(|s| s.label("destination_workload"))
        .collect();
    assert_eq!(dests, BTreeSet::from(["reviews-v1", "reviews-v2"]));
    for s in &security {
        assert_eq!(s.label("connection_security_policy"), "mutual_tls", "{s:?}");
        assert_eq!(
            s.label("source_principal"),
            "spiffe://cluster.local/ns/default/sa/productpage",
            "{s:?}"
        );
        assert_eq!(
            s.label("destination_principal"),
            "spiffe://cluster.local/ns/default/sa/reviews",
            "{s:?}"
        );
    }

    // The mesh dashboard: volume, success rate, 5xx but no 4xx.
    let one = |s: Vec<Series>, what: &str| {
        assert_eq!(s.len(), 1, "{what}: {s:?}");
        s[0].value
    };
    let volume = one(prom.query(&grafana(MESH_VOLUME, "")).await, "volume");
    assert!(volume > 0.0, "traffic volume {volume}");
    let success = one(prom.query(&grafana(MESH_SUCCESS, "")).await, "success");
    assert!(success > 0.5 && success < 1.0, "success rate {success}");
    let e5xx = one(prom.query(&grafana(MESH_5XX, "")).await, "5xx");
    assert!(e5xx > 0.0, "5xx rate {e5xx}");
    let e4xx = one(prom.query(&grafana(MESH_4XX, "")).await, "4xx");
    assert_eq!(e4xx, 0.0);

    // Its workload table: one row per reviews version.
    let by_workload = |s: &[Series]| -> Vec<(String, f64)> {
        let mut rows: Vec<(String, f64)> = s
            .iter()
            .map(|s| (s.label("destination_workload_var").to_string(), s.value))
            .collect();
        rows.sort_by(|a, b| a.0.cmp(&b.0));
        rows
    };
    let requests = prom.query(&grafana(MESH_WORKLOAD_REQUESTS, "")).await;
    let rows = by_workload(&requests);
    let names: Vec<&str> = rows.iter().map(|r| r.0.as_str()).collect();
    assert_eq!(
        names,
        ["reviews-v1.default", "reviews-v2.default"],
        "{requests:?}"
    );
    assert!(rows.iter().all(|r| r.1 > 0.0), "{rows:?}");
    assert!(requests
        .iter()
        .all(|s| s.label("destination_service") == SERVICE));
    let p99 = by_workload(&prom.query(&grafana(MESH_WORKLOAD_P99, "")).await);
    assert_eq!(p99.len(), 2, "{p99:?}");
    for (w, ms) in &p99 {
        // Loopback calls: well under Envoy's 1 s bucket, never +Inf.
        assert!(
            ms.is_finite() && *ms > 0.0 && *ms < 1000.0,
            "{w} p99 {ms} ms"
        );
    }
    let ok = by_workload(&prom.query(&grafana(MESH_WORKLOAD_SUCCESS, "")).await);
    assert_eq!(ok.len(), 2, "{ok:?}");
    assert_eq!(ok[0].1, 1.0, "reviews-v1 never fails: {ok:?}");
    assert!(
        ok[1].1 > 0.5 && ok[1].1 < 1.0,
        "reviews-v2 fails some: {ok:?}"
    );

    // The service dashboard for reviews, as each reporter saw it.
    for qrep in ["destination", "source"] {
        let v = one(prom.query(&grafana(SERVICE_VOLUME, qrep)).await, qrep);
        assert!(v > 0.0, "{qrep} request volume {v}");
        let ok = one(prom.query(&grafana(SERVICE_SUCCESS, qrep)).await, qrep);
        assert!(ok > 0.0 && ok < 1.0, "{qrep} success rate {ok}");
        let p99 = one(prom.query(&grafana(SERVICE_P99, qrep)).await, qrep);
        assert!(
            p99.is_finite() && p99 > 0.0 && p99 < 1.0,
            "{qrep} p99 {p99} s"
        );
    }

    println!(
        "prometheus saw {volume} req/s, success rate {success:.3}, 5xx {e5xx} req/s, \
         p99 per workload {p99:?} ms, success per workload {ok:?}"
    );
    stop.store(true, Ordering::Relaxed);
    assert!(load.await.unwrap() > 0);
    drop(prom);
    demo.shutdown().await;
}

/// The one problem `promtool check metrics` (Prometheus 2.42, Debian
/// bookworm) finds in an SDK exposition: Istio's duration histogram is
/// in milliseconds. Its name is what Kiali and every Istio dashboard
/// query, so it stays; 2.42's `check metrics` has no `--lint` switch to
/// turn that check off.
const UNIT_LINT: &str =
    r#"istio_request_duration_milliseconds use base unit "seconds" instead of "milliseconds""#;

/// Each workload's `/stats/prometheus` parses, and promtool's lint flags
/// nothing but Istio's millisecond unit. Passing here means: exit code 3
/// (lint problems, not 1 = unparsable) with exactly [`UNIT_LINT`], and the
/// same exposition without that one histogram comes out clean (0).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expositions_pass_promtool_but_for_istios_millisecond_unit() {
    let demo = Demo::start().await.unwrap();
    demo.v2_faults.set(true);
    exercise(&demo.client(), 40).await.unwrap();
    for (name, addr) in demo.metrics_targets() {
        let (status, text) = get(addr, STATS_PATH, None).await.unwrap();
        assert_eq!(status, 200, "{name}: {text}");
        assert!(text.contains("istio_requests_total{"), "{name}: {text}");
        assert_eq!(
            promtool_check(&text),
            PromtoolReport {
                code: Some(3),
                problems: vec![UNIT_LINT.to_string()],
            },
            "{name}:\n{text}"
        );
        let without: String = text
            .lines()
            .filter(|l| !l.contains("istio_request_duration_milliseconds"))
            .map(|l| format!("{l}\n"))
            .collect();
        assert_eq!(
            promtool_check(&without),
            PromtoolReport {
                code: Some(0),
                problems: vec![],
            },
            "{name}:\n{without}"
        );
    }
    demo.shutdown().await;
}
