//! Istio's request metrics from both ends of a real call: an SDK client
//! (`reporter="source"`) calling an SDK server (`reporter="destination"`)
//! over mesh mTLS on loopback. Each end learns the other's workload
//! through the peer metadata exchange, the server labels the caller with
//! its verified principal, the exchange headers never reach the app or
//! the caller, and `/stats/prometheus` serves it all with the app's own
//! metrics beside.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Empty};
use mesh_test_support::telemetry::{sample, Pair, REVIEWS};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_ends_report_istio_metrics_with_each_others_workload() {
    let pair = Pair::start("", None).await;
    for _ in 0..3 {
        let (status, body) = pair.get("/ok").await;
        assert_eq!(status, 200, "{body}");
        assert!(
            body.starts_with("leaked=false"),
            "the app never sees the exchange: {body}"
        );
    }
    let resp = pair
        .client
        .http_client()
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
    let body_len = resp.into_body().collect().await.unwrap().to_bytes().len();

    let source = pair.client.metrics().render();
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
        sample(&source, "istio_response_bytes_sum", &ok("source", "503")),
        Some(body_len as f64),
        "{source}"
    );
    // A client cannot tell how the server saw its connection.
    assert!(source.contains("connection_security_policy=\"unknown\""));

    // The server reports the same calls, naming the caller by its
    // verified certificate.
    let dest = pair.server.metrics().render();
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

/// A destination outside the mesh behind a mesh service name never
/// answers the exchange: the client stops sending its metadata on every
/// request after a few tries, and asks again only now and then.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_is_not_sent_on_every_request_to_a_peer_that_never_answers() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    let carried = Arc::new(AtomicUsize::new(0));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = carried.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let seen = seen.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: hyper::Request<_>| {
                    if req.headers().contains_key("x-envoy-peer-metadata") {
                        seen.fetch_add(1, Ordering::Relaxed);
                    }
                    async {
                        Ok::<_, std::convert::Infallible>(hyper::Response::new(
                            http_body_util::Full::new(Bytes::from_static(b"ok")),
                        ))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("mesh.yaml"),
        mesh_test_support::configs::service_entry(REVIEWS, 9080, port, "MESH_INTERNAL", ""),
    )
    .unwrap();
    let mesh = mesh_tower::Mesh::local(dir.path())
        .namespace("default")
        .build()
        .await
        .unwrap();
    let client = mesh.http_client();
    for _ in 0..200 {
        let (status, _, _) =
            mesh_test_support::sdk::get(&client, &format!("http://{REVIEWS}:9080/")).await;
        assert_eq!(status, 200);
    }
    let n = carried.load(Ordering::Relaxed);
    // Each worker thread tries a few times on its own.
    assert!(n >= 16, "the exchange was tried: {n}");
    assert!(
        n <= 2 * 17,
        "then it stopped: {n} of 200 requests carried it"
    );
    // The requests are still counted, with the destination unknown.
    let text = mesh.metrics().render();
    assert_eq!(
        sample(
            &text,
            "istio_requests_total",
            &[
                ("destination_workload", "unknown"),
                ("response_code", "200")
            ]
        ),
        Some(200.0),
        "{text}"
    );
}
