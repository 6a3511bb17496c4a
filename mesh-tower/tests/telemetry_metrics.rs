//! Istio's request metrics from both ends of a real call: an SDK client
//! (`reporter="source"`) calling an SDK server (`reporter="destination"`)
//! over mesh mTLS on loopback. Each end learns the other's workload
//! through the peer metadata exchange, the server labels the caller with
//! its verified principal, the exchange headers never reach the app or
//! the caller, and `/stats/prometheus` serves it all with the app's own
//! metrics beside.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::convert::Infallible;
use std::path::Path;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Empty};
use mesh_test_support::configs::service_entry;
use mesh_test_support::identity::{ca_in, issue, TD};
use mesh_test_support::sdk::get;
use mesh_tower::body::{full, MeshBody};
use mesh_tower::server::TlsSource;
use mesh_tower::Mesh;
use tokio::net::TcpListener;

const REVIEWS: &str = "reviews.default.svc.cluster.local";

async fn app(req: Request<MeshBody>) -> Result<Response<MeshBody>, Infallible> {
    let leaked = req.headers().contains_key("x-envoy-peer-metadata");
    let mut resp = Response::new(full(format!("leaked={leaked}")));
    if req.uri().path() == "/fail" {
        *resp.status_mut() = http::StatusCode::SERVICE_UNAVAILABLE;
    }
    Ok(resp)
}

async fn build(
    dir: &Path,
    yaml: &str,
    name: &str,
    app: &str,
    version: &str,
    id: TlsSource,
) -> Mesh {
    std::fs::write(dir.join("mesh.yaml"), yaml).unwrap();
    Mesh::local(dir)
        .namespace("default")
        .labels([("app", app), ("version", version)])
        .workload_name(name)
        .service_account(app)
        .identity(id)
        .build()
        .await
        .unwrap()
}

/// The value of the series of `metric` whose labels contain every one of
/// `labels`, from a classic text exposition.
fn sample(text: &str, metric: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|l| l.starts_with(&format!("{metric}{{")))
        .find(|l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_ends_report_istio_metrics_with_each_others_workload() {
    let pki = tempfile::tempdir().unwrap();
    let ca = ca_in(pki.path(), TD);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let yaml = service_entry(
        REVIEWS,
        9080,
        port,
        "MESH_INTERNAL",
        "    labels: {security.istio.io/tlsMode: istio}\n    serviceAccount: reviews\n",
    );

    let server_dir = tempfile::tempdir().unwrap();
    let server_mesh = build(
        server_dir.path(),
        &yaml,
        "reviews-v2",
        "reviews",
        "v2",
        TlsSource::fixed(issue(&ca, "reviews")),
    )
    .await;
    let server = server_mesh.server(server_mesh.tls_source().unwrap());
    tokio::spawn(server.serve(listener, tower::service_fn(app)));

    let client_dir = tempfile::tempdir().unwrap();
    let client_mesh = build(
        client_dir.path(),
        &yaml,
        "productpage-v1",
        "productpage",
        "v1",
        TlsSource::fixed(issue(&ca, "productpage")),
    )
    .await;
    let client = client_mesh.http_client();
    for _ in 0..3 {
        let (status, flags, body) = get(&client, &format!("http://{REVIEWS}:9080/ok")).await;
        assert_eq!(status, 200, "{flags} {body}");
        assert_eq!(body, "leaked=false", "the app never sees the exchange");
    }
    let resp = client
        .request(
            Request::get(format!("http://{REVIEWS}:9080/fail"))
                .body(Empty::<Bytes>::new())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), 503);
    assert!(
        !resp.headers().contains_key("x-envoy-peer-metadata"),
        "the caller never sees the exchange"
    );
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body.len(), "leaked=false".len());

    let source = client_mesh.metrics().render();
    let common = [
        ("source_workload", "productpage-v1"),
        ("source_canonical_service", "productpage"),
        ("source_canonical_revision", "v1"),
        ("source_workload_namespace", "default"),
        ("source_app", "productpage"),
        ("source_version", "v1"),
        ("source_cluster", "Kubernetes"),
        ("destination_workload", "reviews-v2"),
        ("destination_workload_namespace", "default"),
        ("destination_app", "reviews"),
        ("destination_version", "v2"),
        ("destination_service", REVIEWS),
        ("destination_service_name", "reviews"),
        ("destination_service_namespace", "default"),
        ("destination_canonical_service", "reviews"),
        ("destination_canonical_revision", "v2"),
        ("request_protocol", "http"),
        ("response_flags", "-"),
    ];
    let ok = |reporter: &'static str, code: &'static str| {
        let mut l = common.to_vec();
        l.push(("reporter", reporter));
        l.push(("response_code", code));
        l
    };
    assert_eq!(
        sample(&source, "istio_requests_total", &ok("source", "200")),
        Some(3.0),
        "{source}"
    );
    assert_eq!(
        sample(&source, "istio_requests_total", &ok("source", "503")),
        Some(1.0),
        "{source}"
    );
    assert_eq!(
        sample(
            &source,
            "istio_request_duration_milliseconds_count",
            &ok("source", "200")
        ),
        Some(3.0),
        "{source}"
    );
    // Envoy's buckets, the last one +Inf.
    assert!(source.contains("le=\"0.5\""), "{source}");
    assert!(source.contains("le=\"3600000.0\""), "{source}");
    assert_eq!(
        sample(&source, "istio_response_bytes_sum", &ok("source", "200")),
        Some(3.0 * "leaked=false".len() as f64),
        "{source}"
    );
    // A client cannot tell how the server saw its connection.
    assert!(source.contains("connection_security_policy=\"unknown\""));

    // The server reports the same calls, naming the caller by its
    // verified certificate.
    let dest = server_mesh.metrics().render();
    let mut l = ok("destination", "200");
    l.push((
        "source_principal",
        "spiffe://cluster.local/ns/default/sa/productpage",
    ));
    l.push((
        "destination_principal",
        "spiffe://cluster.local/ns/default/sa/reviews",
    ));
    l.push(("connection_security_policy", "mutual_tls"));
    assert_eq!(
        sample(&dest, "istio_requests_total", &l),
        Some(3.0),
        "{dest}"
    );
    assert_eq!(
        sample(&dest, "istio_requests_total", &ok("destination", "503")),
        Some(1.0),
        "{dest}"
    );
    // Labels come in Istio's order.
    let line = dest
        .lines()
        .find(|l| l.starts_with("istio_requests_total{"))
        .unwrap();
    let names: Vec<&str> = line
        .split(['{', ','])
        .skip(1)
        .filter_map(|kv| kv.split_once('=').map(|(k, _)| k))
        .collect();
    assert_eq!(names.first(), Some(&"reporter"));
    assert_eq!(names.last(), Some(&"connection_security_policy"));
    assert_eq!(names.len(), 25, "{line}");
}

#[tokio::test]
async fn the_stats_handler_serves_mesh_and_app_metrics_in_both_formats() {
    use prometheus_client::metrics::counter::Counter;
    use tower::ServiceExt;
    let metrics = mesh_tower::telemetry::MeshMetrics::new();
    let orders: Counter = Counter::default();
    metrics.register("shop_orders", "Orders placed.", orders.clone());
    orders.inc_by(2);
    let handler = metrics.handler();
    let classic = handler
        .clone()
        .oneshot(Request::get("/stats/prometheus").body(()).unwrap())
        .await
        .unwrap();
    assert_eq!(
        classic.headers()["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    let text = classic.into_body().collect().await.unwrap().to_bytes();
    let text = String::from_utf8_lossy(&text);
    assert!(text.contains("# TYPE shop_orders_total counter"), "{text}");
    assert!(text.contains("shop_orders_total 2"), "{text}");
    assert!(!text.contains("# EOF"));
    let om = handler
        .oneshot(
            Request::get("/stats/prometheus")
                .header("accept", "application/openmetrics-text; version=1.0.0")
                .body(())
                .unwrap(),
        )
        .await
        .unwrap();
    let text = om.into_body().collect().await.unwrap().to_bytes();
    assert!(String::from_utf8_lossy(&text).ends_with("# EOF\n"));
}
