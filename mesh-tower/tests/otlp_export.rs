//! OTLP span export against a real OTLP/gRPC receiver on loopback: what
//! arrives (ids, parent links, attributes, resource), batching, flushing
//! on shutdown, and that an unreachable collector costs `record` nothing.

use std::borrow::Cow;
use std::time::{Duration, SystemTime};

use mesh_core::trace::{SpanId, TraceContext, TraceId};
use mesh_test_support::otlp::{OtlpReceiver, SpanKind as Received};
use mesh_tower::telemetry::otlp::{
    AttrValue, FinishedSpan, OtlpConfig, OtlpExporter, SpanKind, SpanStatus,
};

/// Generous bound for anything that should take milliseconds.
const WAIT: Duration = Duration::from_secs(20);

fn config(endpoint: String) -> OtlpConfig {
    OtlpConfig {
        // Long enough that only batch size, flush or shutdown export.
        scheduled_delay: Duration::from_secs(3600),
        ..OtlpConfig::new(endpoint, "reviews.default")
    }
}

fn span(name: &'static str, kind: SpanKind, ctx: &TraceContext) -> FinishedSpan {
    let start = SystemTime::now();
    FinishedSpan {
        name: Cow::Borrowed(name),
        kind,
        trace_id: ctx.trace_id,
        span_id: ctx.span_id,
        parent_span_id: ctx.parent_span_id,
        tracestate: ctx.tracestate.clone(),
        start,
        end: start + Duration::from_millis(3),
        attributes: vec![
            ("http.method".into(), "GET".into()),
            ("http.status_code".into(), AttrValue::Int(200)),
            ("istio.canonical_service".into(), "reviews".into()),
        ],
        status: SpanStatus::Unset,
    }
}

#[tokio::test]
async fn spans_arrive_with_ids_parents_attributes_and_service_name() {
    let rx = OtlpReceiver::start().await;
    let exporter = OtlpExporter::start(
        config(rx.endpoint()).with_resource_attribute("service.namespace", "default"),
    )
    .unwrap();

    // A server span whose parent came from the caller, and the client span
    // of the call it makes.
    let remote = TraceContext {
        tracestate: Some("rojo=00f067aa0ba902b7".into()),
        ..TraceContext::root(
            0x4bf9_2f35_77b3_4da6_a3ce_929d_0e0e_4736,
            0x00f0_67aa_0ba9_02b7,
            true,
        )
    };
    let server_ctx = remote.child(0x1111, true);
    let client_ctx = server_ctx.child(0x2222, true);
    exporter.record(span("inbound", SpanKind::Server, &server_ctx));
    let mut client = span("outbound", SpanKind::Client, &client_ctx);
    client.status = SpanStatus::Error("UF".into());
    exporter.record(client);
    exporter.force_flush().await;

    let got = rx.wait_for(2, WAIT).await;
    assert_eq!(got.len(), 2);
    let server = got.iter().find(|s| s.name == "inbound").unwrap();
    let client = got.iter().find(|s| s.name == "outbound").unwrap();
    assert_eq!(server.kind, Received::Server);
    assert_eq!(client.kind, Received::Client);
    for s in [server, client] {
        assert_eq!(s.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(s.service_name.as_deref(), Some("reviews.default"));
        assert_eq!(s.resource["service.namespace"], "default");
        assert_eq!(s.scope, "mesh-tower");
        assert_eq!(s.attributes["http.method"], "GET");
        assert_eq!(s.attributes["http.status_code"], "200");
        assert_eq!(s.attributes["istio.canonical_service"], "reviews");
        assert_eq!(s.trace_state, "rojo=00f067aa0ba902b7");
        assert_eq!(s.end_unix_nanos - s.start_unix_nanos, 3_000_000);
    }
    assert_eq!(server.span_id_hex(), "0000000000001111");
    assert_eq!(
        server.parent_span_id_hex().as_deref(),
        Some("00f067aa0ba902b7")
    );
    assert_eq!(client.span_id_hex(), "0000000000002222");
    assert_eq!(
        client.parent_span_id_hex().as_deref(),
        Some("0000000000001111")
    );
    assert_eq!(client.status_message, "UF");
    assert_eq!((exporter.exported(), exporter.dropped()), (2, 0));
    exporter.shutdown().await;
}

#[tokio::test]
async fn a_root_span_has_no_parent() {
    let rx = OtlpReceiver::start().await;
    let exporter = OtlpExporter::start(config(rx.endpoint())).unwrap();
    exporter.record(span(
        "root",
        SpanKind::Server,
        &TraceContext::root(9, 8, true),
    ));
    exporter.force_flush().await;
    let got = rx.wait_for(1, WAIT).await;
    assert_eq!(got[0].parent_span_id, None);
    assert_eq!(got[0].trace_id_hex(), format!("{:032x}", 9));
}

#[tokio::test]
async fn a_full_batch_goes_in_one_export_without_a_flush() {
    let rx = OtlpReceiver::start().await;
    let exporter = OtlpExporter::start(OtlpConfig {
        max_batch_size: 5,
        ..config(rx.endpoint())
    })
    .unwrap();
    let root = TraceContext::root(1, 1, true);
    for i in 0..5 {
        exporter.record(span(
            "batched",
            SpanKind::Client,
            &root.child(100 + i, true),
        ));
    }
    let got = rx.wait_for(5, WAIT).await;
    assert_eq!(rx.requests(), 1, "five spans, one export request");
    assert!(got.iter().all(|s| s.request == 0));
    // Four more stay queued (no full batch, no timer) until shutdown.
    for i in 0..4 {
        exporter.record(span("tail", SpanKind::Client, &root.child(200 + i, true)));
    }
    exporter.shutdown().await;
    let got = rx.spans();
    assert_eq!(got.len(), 9);
    assert_eq!(rx.requests(), 2);
    assert_eq!((exporter.exported(), exporter.dropped()), (9, 0));
}

#[tokio::test]
async fn the_scheduled_delay_exports_a_partial_batch() {
    let rx = OtlpReceiver::start().await;
    let exporter = OtlpExporter::start(OtlpConfig {
        scheduled_delay: Duration::from_millis(50),
        ..config(rx.endpoint())
    })
    .unwrap();
    let root = TraceContext::root(2, 2, true);
    for i in 0..3 {
        exporter.record(span("timed", SpanKind::Server, &root.child(i + 1, true)));
    }
    // No flush, no shutdown: only the timer sends them.
    rx.wait_for(3, WAIT).await;
    // The receiver stores spans before it answers; the count follows the answer.
    mesh_test_support::wait::until("3 spans counted as exported", || exporter.exported() == 3)
        .await;
}

#[tokio::test]
async fn shutdown_flushes_and_later_spans_are_dropped() {
    let rx = OtlpReceiver::start().await;
    let exporter = OtlpExporter::start(config(rx.endpoint())).unwrap();
    let root = TraceContext::root(3, 3, true);
    for i in 0..3 {
        exporter.record(span("flushed", SpanKind::Server, &root.child(i + 1, true)));
    }
    tokio::time::timeout(WAIT, exporter.shutdown())
        .await
        .unwrap();
    // Shutdown returned after the export: the receiver already has them.
    assert_eq!(rx.spans().len(), 3);
    exporter.record(span("late", SpanKind::Server, &root));
    assert_eq!((exporter.exported(), exporter.dropped()), (3, 1));
    // Flushing or shutting down again is harmless.
    exporter.force_flush().await;
    exporter.shutdown().await;
}

#[tokio::test]
async fn dropping_every_handle_exports_what_is_queued() {
    let rx = OtlpReceiver::start().await;
    let exporter = OtlpExporter::start(config(rx.endpoint())).unwrap();
    let clone = exporter.clone();
    clone.record(span(
        "orphan",
        SpanKind::Client,
        &TraceContext::root(4, 4, true),
    ));
    drop(exporter);
    drop(clone);
    rx.wait_for(1, WAIT).await;
}

#[tokio::test]
async fn an_unreachable_collector_never_blocks_record_and_counts_every_drop() {
    // A port that was just free and is now closed: connections are refused.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = closed.local_addr().unwrap();
    drop(closed);
    let exporter = OtlpExporter::start(OtlpConfig {
        timeout: Duration::from_millis(500),
        max_batch_size: 10,
        max_queue_size: 100,
        scheduled_delay: Duration::from_millis(20),
        ..OtlpConfig::new(format!("http://{addr}"), "lonely")
    })
    .unwrap();

    const N: u64 = 10_000;
    let handle = exporter.clone();
    let ctx = TraceContext {
        span_id: SpanId::from_random(1),
        ..TraceContext::root(TraceId::from_random(5).to_u128(), 1, true)
    };
    let recording = tokio::task::spawn_blocking(move || {
        for _ in 0..N {
            handle.record(span("lost", SpanKind::Client, &ctx));
        }
    });
    // A blocking `record` would hold this far past the bound.
    tokio::time::timeout(WAIT, recording)
        .await
        .expect("10 000 records against a dead collector must not block")
        .unwrap();
    // The queue holds 100 at most, so most were dropped on the spot.
    assert!(
        exporter.dropped() >= N - 100 - 10,
        "dropped {}",
        exporter.dropped()
    );

    // Shutdown gives up after one failed export, so it ends promptly too,
    // and then every span is accounted for.
    tokio::time::timeout(WAIT, exporter.shutdown())
        .await
        .expect("shutdown against a dead collector is bounded");
    assert_eq!(exporter.exported(), 0);
    assert_eq!(exporter.dropped(), N);
}
