//! The Telemetry API (telemetry.istio.io/v1) as the SDK applies it, on a
//! real SDK client and server over mesh mTLS: metric overrides (disable
//! per metric and mode, tagOverrides UPSERT with CEL and REMOVE), access
//! logs (a provider's file and format, a CEL filter, MeshConfig's
//! accessLogFile/accessLogEncoding), tracing (spans at a real OTLP
//! receiver with parent links, the app's context continued, sampling,
//! custom tags, an unreachable collector that costs requests nothing),
//! and live edits, with an invalid resource leaving the last good policy
//! in place.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Empty};
use mesh_test_support::otlp::{OtlpReceiver, SpanKind};
use mesh_test_support::telemetry::{sample, Pair, REVIEWS};

fn telemetry(name: &str, ns: &str, spec: &str) -> String {
    format!(
        "apiVersion: telemetry.istio.io/v1\nkind: Telemetry\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n{spec}---\n"
    )
}

/// Waits until `path` holds `n` lines (bounded), and returns them.
async fn lines(path: &std::path::Path, n: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<String> = text.lines().map(str::to_string).collect();
        if lines.len() >= n || Instant::now() > deadline {
            return lines;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metric_overrides_disable_per_mode_and_rewrite_tags_with_cel() {
    let spec = "  metrics:
  - providers: [{name: prometheus}]
    overrides:
    - match: {metric: REQUEST_COUNT, mode: CLIENT}
      disabled: true
    - match: {metric: REQUEST_DURATION, mode: SERVER}
      tagOverrides:
        request_host: {value: request.host}
        source_principal: {operation: REMOVE}
";
    let pair = Pair::start(&telemetry("metrics", "default", spec), None).await;
    for _ in 0..2 {
        assert_eq!(pair.get("/ok").await.0, 200);
    }
    let client = pair.client.metrics().render();
    assert!(
        !client.contains("istio_requests_total{"),
        "REQUEST_COUNT is off for clients: {client}"
    );
    assert_eq!(
        sample(
            &client,
            "istio_request_duration_milliseconds_count",
            &[("reporter", "source")]
        ),
        Some(2.0),
        "{client}"
    );
    let server = pair.server.metrics().render();
    // Requests keep the standard labels...
    assert_eq!(
        sample(
            &server,
            "istio_requests_total",
            &[(
                "source_principal",
                "spiffe://cluster.local/ns/default/sa/productpage"
            )]
        ),
        Some(2.0),
        "{server}"
    );
    // ...while the server's duration has its own: one added from CEL, one
    // removed.
    let duration = server
        .lines()
        .find(|l| l.starts_with("istio_request_duration_milliseconds_count{"))
        .unwrap();
    assert!(
        duration.contains(&format!("request_host=\"{REVIEWS}:9080\"")),
        "{duration}"
    );
    assert!(!duration.contains("source_principal="), "{duration}");
    assert!(duration.ends_with(" 2"), "{duration}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_logs_follow_the_provider_and_its_cel_filter() {
    let logs = tempfile::tempdir().unwrap();
    let file = logs.path().join("access.log");
    let mesh_config = format!(
        "extensionProviders:
- name: failures
  envoyFileAccessLog:
    path: {}
    logFormat:
      labels: {{code: \"%RESPONSE_CODE%\", path: \"%REQ(:PATH)%\", id: \"%REQ(X-REQUEST-ID)%\"}}
",
        file.display()
    );
    // In the root namespace: the whole mesh.
    let spec = "  accessLogging:
  - providers: [{name: failures}]
    filter: {expression: response.code >= 400}
";
    let pair = Pair::start(&telemetry("logs", "istio-system", spec), Some(&mesh_config)).await;
    assert_eq!(pair.get("/ok").await.0, 200);
    assert_eq!(pair.get("/fail").await.0, 503);
    assert_eq!(pair.get("/ok").await.0, 200);
    // One line from each side, for the failure only.
    let got = lines(&file, 2).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let got2 = lines(&file, 3).await;
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(got2.len(), 2, "only failures are logged: {got2:?}");
    let ids: Vec<String> = got
        .iter()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            assert_eq!(v["code"], 503, "{l}");
            assert_eq!(v["path"], "/fail", "{l}");
            v["id"].as_str().unwrap().to_string()
        })
        .collect();
    // The request id the client made is the one the server logged.
    assert_eq!(ids[0], ids[1]);
    assert_eq!(ids[0].len(), 36, "a UUID: {}", ids[0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mesh_config_access_log_file_writes_istios_json_keys() {
    let logs = tempfile::tempdir().unwrap();
    let file = logs.path().join("mesh.log");
    let mesh_config = format!(
        "accessLogFile: {}\naccessLogEncoding: JSON\n",
        file.display()
    );
    let pair = Pair::start("", Some(&mesh_config)).await;
    assert_eq!(pair.get("/ok?x=1").await.0, 200);
    let got = lines(&file, 2).await;
    assert_eq!(got.len(), 2, "{got:?}");
    for line in &got {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        for key in [
            "start_time",
            "method",
            "path",
            "protocol",
            "response_code",
            "response_flags",
            "response_code_details",
            "bytes_received",
            "bytes_sent",
            "duration",
            "upstream_host",
            "upstream_cluster",
            "request_id",
            "authority",
            "downstream_remote_address",
        ] {
            assert!(v.get(key).is_some(), "{key} missing: {line}");
        }
        assert_eq!(v["response_code"], 200);
        assert_eq!(v["path"], "/ok?x=1");
        assert_eq!(v["method"], "GET");
    }
    // The client names the upstream cluster, the server the inbound one.
    assert!(
        got.iter().any(|l| l.contains("outbound|9080||reviews")),
        "{got:?}"
    );
    assert!(got.iter().any(|l| l.contains("inbound|")), "{got:?}");
}

fn tracing_mesh_config(port: u16) -> String {
    format!(
        "extensionProviders:
- name: otel
  opentelemetry: {{service: 127.0.0.1, port: {port}}}
defaultProviders:
  tracing: [otel]
"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_arrive_linked_and_the_apps_context_is_continued() {
    let receiver = OtlpReceiver::start().await;
    let port: u16 = receiver
        .endpoint()
        .rsplit(':')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let spec = "  tracing:
  - randomSamplingPercentage: 100
    customTags:
      team: {literal: {value: checkout}}
      tenant: {header: {name: x-tenant, defaultValue: none}}
";
    let pair = Pair::start(
        &telemetry("traces", "default", spec),
        Some(&tracing_mesh_config(port)),
    )
    .await;
    // The app's own span: the mesh continues it.
    let app_trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let app_span = "00f067aa0ba902b7";
    let resp = pair
        .client
        .http_client()
        .request(
            Request::get(format!("http://{REVIEWS}:9080/ok"))
                .header("traceparent", format!("00-{app_trace}-{app_span}-01"))
                .header("x-tenant", "acme")
                .body(Empty::<Bytes>::new())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body = String::from_utf8(
        resp.into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec(),
    )
    .unwrap();
    // Flush instead of waiting for the batch delay.
    for t in [pair.client.telemetry(), pair.server.telemetry()] {
        for (_, e) in t.exporters() {
            e.force_flush().await;
        }
    }
    let spans = receiver.wait_for(2, Duration::from_secs(10)).await;
    let client = spans.iter().find(|s| s.kind == SpanKind::Client).unwrap();
    let server = spans.iter().find(|s| s.kind == SpanKind::Server).unwrap();
    assert_eq!(client.trace_id_hex(), app_trace);
    assert_eq!(server.trace_id_hex(), app_trace);
    assert_eq!(client.parent_span_id_hex().as_deref(), Some(app_span));
    assert_eq!(
        server.parent_span_id_hex(),
        Some(client.span_id_hex()),
        "the server span is the client span's child"
    );
    // The app behind the server sees the server span as its parent.
    assert!(
        body.contains(&format!(
            "traceparent=00-{app_trace}-{}-01",
            server.span_id_hex()
        )),
        "{body}"
    );
    assert_eq!(client.name, format!("{REVIEWS}:9080/*"));
    assert_eq!(client.service_name.as_deref(), Some("productpage.default"));
    assert_eq!(server.service_name.as_deref(), Some("reviews.default"));
    assert_eq!(
        client.attributes.get("team").map(String::as_str),
        Some("checkout")
    );
    assert_eq!(
        client.attributes.get("tenant").map(String::as_str),
        Some("acme")
    );
    assert_eq!(
        client
            .attributes
            .get("http.status_code")
            .map(String::as_str),
        Some("200")
    );
    assert_eq!(
        client.attributes.get("guid:x-request-id"),
        server.attributes.get("guid:x-request-id"),
        "one request id end to end"
    );
    assert!(client.attributes.contains_key("guid:x-request-id"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sampling_follows_the_percentage_unless_the_parent_decided() {
    let receiver = OtlpReceiver::start().await;
    let port: u16 = receiver
        .endpoint()
        .rsplit(':')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let spec = "  tracing:\n  - randomSamplingPercentage: 0\n";
    let pair = Pair::start(
        &telemetry("traces", "default", spec),
        Some(&tracing_mesh_config(port)),
    )
    .await;
    for _ in 0..20 {
        assert_eq!(pair.get("/ok").await.0, 200);
    }
    // A parent that sampled wins over 0%.
    let trace = "0af7651916cd43dd8448eb211c80319c";
    let resp = pair
        .client
        .http_client()
        .request(
            Request::get(format!("http://{REVIEWS}:9080/ok"))
                .header("traceparent", format!("00-{trace}-b7ad6b7169203331-01"))
                .body(Empty::<Bytes>::new())
                .unwrap(),
        )
        .await
        .unwrap();
    let body = String::from_utf8(
        resp.into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec(),
    )
    .unwrap();
    // Unsampled requests still carry a context (sampled flag 00).
    assert!(body.contains(&format!("traceparent=00-{trace}-")), "{body}");
    for t in [pair.client.telemetry(), pair.server.telemetry()] {
        for (_, e) in t.exporters() {
            e.force_flush().await;
        }
    }
    let spans = receiver.wait_for(2, Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let spans_later = receiver.spans();
    assert_eq!(spans.len(), 2);
    assert_eq!(spans_later.len(), 2, "nothing else was sampled");
    assert!(spans.iter().all(|s| s.trace_id_hex() == trace));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_collector_never_holds_or_fails_a_request() {
    // A port nothing listens on.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let spec = "  tracing:\n  - randomSamplingPercentage: 100\n";
    let pair = Pair::start(
        &telemetry("traces", "default", spec),
        Some(&tracing_mesh_config(port)),
    )
    .await;
    let client = pair.client.http_client();
    let uri = format!("http://{REVIEWS}:9080/ok");
    tokio::time::timeout(Duration::from_secs(30), async {
        for _ in 0..300 {
            let (status, _, _) = mesh_test_support::sdk::get(&client, &uri).await;
            assert_eq!(status, 200);
        }
    })
    .await
    .expect("requests are never held by span export");
    for (_, e) in pair.client.telemetry().exporters() {
        tokio::time::timeout(Duration::from_secs(30), e.force_flush())
            .await
            .unwrap();
    }
    let dropped: u64 = pair
        .client
        .telemetry()
        .exporters()
        .iter()
        .map(|(_, e)| e.dropped())
        .sum();
    assert!(
        dropped > 0,
        "spans that could not go are counted as dropped"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_telemetry_edit_applies_live_and_an_invalid_one_keeps_the_last_good() {
    let pair = Pair::start("", None).await;
    assert_eq!(pair.get("/ok").await.0, 200);
    let count = |m: &mesh_tower::Mesh| {
        sample(
            &m.metrics().render(),
            "istio_requests_total",
            &[("reporter", "destination"), ("response_code", "200")],
        )
        .unwrap_or(0.0)
    };
    assert_eq!(count(&pair.server), 1.0);
    // Metrics off for servers.
    let off = telemetry(
        "quiet",
        "default",
        "  metrics:\n  - overrides:\n    - match: {mode: SERVER}\n      disabled: true\n",
    );
    let path = pair.dir.join("telemetry.yaml");
    std::fs::write(&path, &off).unwrap();
    let mut rx = pair.server.model();
    tokio::time::timeout(Duration::from_secs(10), async {
        while rx.borrow_and_update().telemetry.server.metrics.enabled {
            rx.changed().await.unwrap();
        }
    })
    .await
    .expect("the edit applies");
    assert_eq!(pair.get("/ok").await.0, 200);
    assert_eq!(count(&pair.server), 1.0, "not counted while disabled");
    // A filter that is not CEL: rejected, the last good policy stays.
    let bad = telemetry(
        "quiet",
        "default",
        "  accessLogging:\n  - filter: {expression: \"response.code >=\"}\n",
    );
    let rejected = pair.server.source_status().unwrap().rejected;
    std::fs::write(&path, &bad).unwrap();
    tokio::time::timeout(Duration::from_secs(10), async {
        while pair.server.source_status().unwrap().rejected == rejected {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the bad edit is rejected");
    let err = pair.server.source_status().unwrap().last_error.unwrap();
    assert!(err.contains("filter.expression"), "{err}");
    assert!(err.contains("telemetry.yaml"), "{err}");
    assert_eq!(pair.get("/ok").await.0, 200);
    assert_eq!(count(&pair.server), 1.0, "still disabled");
    // Removed: counted again.
    std::fs::remove_file(&path).unwrap();
    tokio::time::timeout(Duration::from_secs(10), async {
        while !rx.borrow_and_update().telemetry.server.metrics.enabled {
            rx.changed().await.unwrap();
        }
    })
    .await
    .unwrap();
    assert_eq!(pair.get("/ok").await.0, 200);
    assert_eq!(count(&pair.server), 2.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disabled_span_reporting_sends_no_span_and_leaves_the_context_alone() {
    let receiver = OtlpReceiver::start().await;
    let port: u16 = receiver
        .endpoint()
        .rsplit(':')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let spec = "  tracing:\n  - randomSamplingPercentage: 100\n    disableSpanReporting: true\n";
    let pair = Pair::start(
        &telemetry("traces", "default", spec),
        Some(&tracing_mesh_config(port)),
    )
    .await;
    let parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let resp = pair
        .client
        .http_client()
        .request(
            Request::get(format!("http://{REVIEWS}:9080/ok"))
                .header("traceparent", parent)
                .body(Empty::<Bytes>::new())
                .unwrap(),
        )
        .await
        .unwrap();
    let body = String::from_utf8(
        resp.into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec(),
    )
    .unwrap();
    // istiod configures no tracer at all then: the app's context passes
    // through as it was, and no exporter is ever started.
    assert!(body.contains(&format!("traceparent={parent}")), "{body}");
    assert!(pair.client.telemetry().exporters().is_empty());
    assert!(pair.server.telemetry().exporters().is_empty());
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(receiver.spans().is_empty());
}
