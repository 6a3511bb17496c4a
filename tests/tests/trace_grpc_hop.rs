//! Tracing across a stock gRPC hop: an SDK client (Telemetry tracing at
//! 100%, an OpenTelemetry provider at a real OTLP receiver) calls a stock
//! `grpcio` server, which answers with the trace headers it received.
//! The context the app started is continued by the SDK's client span,
//! and the stock server receives that span as its parent (in the W3C
//! form the app used) with the request id the span carries; the call is counted as
//! gRPC, with its messages and status.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http::Request;
use http_body_util::{BodyExt, Full};
use mesh_interop::{Lang, Tool};
use mesh_test_support::otlp::{OtlpReceiver, SpanKind};
use mesh_test_support::telemetry::sample;
use mesh_tower::Mesh;

const ECHO: &str = "echo.default.svc.cluster.local";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_span_is_the_stock_servers_parent() {
    let py = Tool::find(Lang::Python).unwrap();
    let receiver = OtlpReceiver::start().await;
    let otlp_port: u16 = receiver
        .endpoint()
        .rsplit(':')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let _server = py
        .spawn_server(
            "trace_echo_server",
            &dir.path().join("unused-bootstrap.json"),
            &["--port".into(), port.to_string()],
            Duration::from_secs(20),
        )
        .await
        .unwrap();
    let cfg = dir.path().join("mesh");
    std::fs::create_dir(&cfg).unwrap();
    std::fs::write(
        cfg.join("mesh.yaml"),
        format!(
            "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: echo, namespace: default}}
spec:
  hosts: [{ECHO}]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{name: grpc, number: 50051, protocol: GRPC}}]
  endpoints: [{{address: 127.0.0.1, ports: {{grpc: {port}}}}}]
---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {{name: traces, namespace: default}}
spec:
  tracing: [{{randomSamplingPercentage: 100}}]
"
        ),
    )
    .unwrap();
    let mesh_config = dir.path().join("mesh-config.yaml");
    std::fs::write(
        &mesh_config,
        format!(
            "extensionProviders:\n- name: otel\n  opentelemetry: {{service: 127.0.0.1, port: {otlp_port}}}\ndefaultProviders:\n  tracing: [otel]\n"
        ),
    )
    .unwrap();
    let mesh = Mesh::local(&cfg)
        .namespace("default")
        .labels([("app", "web"), ("version", "v1")])
        .workload_name("web-v1")
        .mesh_config(&mesh_config)
        .build()
        .await
        .unwrap();

    // One unary call, framed by hand; the app's own span is the parent.
    let app_trace = "5b8aa5a2d2c872e8321cf37308d69df2";
    let app_span = "051581bf3cb55c13";
    let mut frame = BytesMut::new();
    frame.put_u8(0);
    frame.put_u32(5);
    frame.put_slice(b"hello");
    let resp = mesh
        .http_client()
        .request(
            Request::post(format!("http://{ECHO}:50051/echo.Echo/Hello"))
                .version(http::Version::HTTP_2)
                .header("content-type", "application/grpc")
                .header("te", "trailers")
                .header("traceparent", format!("00-{app_trace}-{app_span}-01"))
                .body(Full::new(frame.freeze()))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let collected = resp.into_body().collect().await.unwrap();
    let trailers = collected.trailers().cloned().unwrap_or_default();
    assert_eq!(
        trailers.get("grpc-status").map(|v| v.to_str().unwrap()),
        Some("0")
    );
    let mut body: Bytes = collected.to_bytes();
    assert!(body.len() >= 5);
    body.advance(5);
    let seen = String::from_utf8(body.to_vec()).unwrap();

    for (_, e) in mesh.telemetry().exporters() {
        e.force_flush().await;
    }
    let spans = receiver.wait_for(1, Duration::from_secs(10)).await;
    let client = spans.iter().find(|s| s.kind == SpanKind::Client).unwrap();
    assert_eq!(client.trace_id_hex(), app_trace);
    assert_eq!(client.parent_span_id_hex().as_deref(), Some(app_span));
    assert_eq!(client.name, format!("{ECHO}:50051/*"));
    assert!(
        seen.contains(&format!(
            "traceparent=00-{app_trace}-{}-01",
            client.span_id_hex()
        )),
        "the stock server's parent is the client span: {seen}"
    );
    // A W3C caller gets W3C alone downstream, as from Envoy's
    // OpenTelemetry tracer.
    assert!(seen.contains("x-b3-spanid=-"), "{seen}");
    let id = client.attributes.get("guid:x-request-id").unwrap();
    assert!(seen.contains(&format!("x-request-id={id}")), "{seen}");
    assert_eq!(
        client
            .attributes
            .get("grpc.status_code")
            .map(String::as_str),
        Some("0")
    );

    // Counted as gRPC, one message each way.
    let text = mesh.metrics().render();
    let labels = [
        ("request_protocol", "grpc"),
        ("grpc_response_status", "0"),
        ("response_code", "200"),
        ("destination_service", ECHO),
    ];
    assert_eq!(
        sample(&text, "istio_requests_total", &labels),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "istio_request_messages_total", &labels),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "istio_response_messages_total", &labels),
        Some(1.0),
        "{text}"
    );
}
