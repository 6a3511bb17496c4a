//! A real OTLP/gRPC trace receiver on loopback, standing in for an
//! OpenTelemetry collector: it serves the collector's `TraceService` on
//! `127.0.0.1:0`, decodes every span it is sent (with its resource's
//! `service.name`) and lets a test wait for them.
//!
//! Not a collector: no processing, no forwarding, no OTLP/HTTP, no logs or
//! metrics; it always answers success.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
pub use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use tokio::sync::Notify;
use tokio_stream::wrappers::TcpListenerStream;

/// One span as the receiver decoded it.
#[derive(Debug, Clone, PartialEq)]
pub struct ReceivedSpan {
    /// The resource's `service.name`.
    pub service_name: Option<String>,
    /// All resource attributes, values as text.
    pub resource: BTreeMap<String, String>,
    /// The instrumentation scope's name.
    pub scope: String,
    /// The span name.
    pub name: String,
    /// The span kind.
    pub kind: SpanKind,
    /// The trace id (16 bytes; empty or short ids are kept as sent).
    pub trace_id: Vec<u8>,
    /// The span id.
    pub span_id: Vec<u8>,
    /// The parent span id; `None` for a root span (empty on the wire).
    pub parent_span_id: Option<Vec<u8>>,
    /// The W3C tracestate.
    pub trace_state: String,
    /// Attributes, values as text (strings unquoted).
    pub attributes: BTreeMap<String, String>,
    /// Status code.
    pub status: StatusCode,
    /// Status message.
    pub status_message: String,
    /// Start, Unix nanoseconds.
    pub start_unix_nanos: u64,
    /// End, Unix nanoseconds.
    pub end_unix_nanos: u64,
    /// Which export request (0-based, in arrival order) carried it.
    pub request: usize,
}

impl ReceivedSpan {
    /// The trace id in lowercase hex.
    pub fn trace_id_hex(&self) -> String {
        hex(&self.trace_id)
    }

    /// The span id in lowercase hex.
    pub fn span_id_hex(&self) -> String {
        hex(&self.span_id)
    }

    /// The parent span id in lowercase hex.
    pub fn parent_span_id_hex(&self) -> Option<String> {
        self.parent_span_id.as_deref().map(hex)
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|b| format!("{b:02x}")).collect()
}

#[derive(Default)]
struct Received {
    spans: Vec<ReceivedSpan>,
    requests: usize,
}

#[derive(Clone, Default)]
struct Collector {
    received: Arc<Mutex<Received>>,
    arrived: Arc<Notify>,
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let req = request.into_inner();
        {
            let mut received = self.received.lock().unwrap();
            let index = received.requests;
            received.requests += 1;
            for rs in req.resource_spans {
                let resource = attributes(rs.resource.map(|r| r.attributes).unwrap_or_default());
                let service_name = resource.get("service.name").cloned();
                for ss in rs.scope_spans {
                    let scope = ss.scope.map(|s| s.name).unwrap_or_default();
                    for span in ss.spans {
                        let status = span.status.clone().unwrap_or_default();
                        received.spans.push(ReceivedSpan {
                            service_name: service_name.clone(),
                            resource: resource.clone(),
                            scope: scope.clone(),
                            kind: span.kind(),
                            name: span.name,
                            trace_id: span.trace_id,
                            span_id: span.span_id,
                            parent_span_id: Some(span.parent_span_id).filter(|p| !p.is_empty()),
                            trace_state: span.trace_state,
                            attributes: attributes(span.attributes),
                            status: status.code(),
                            status_message: status.message,
                            start_unix_nanos: span.start_time_unix_nano,
                            end_unix_nanos: span.end_time_unix_nano,
                            request: index,
                        });
                    }
                }
            }
        }
        self.arrived.notify_waiters();
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

fn attributes(kvs: Vec<KeyValue>) -> BTreeMap<String, String> {
    kvs.into_iter()
        .map(|kv| (kv.key, kv.value.map(text).unwrap_or_default()))
        .collect()
}

fn text(v: AnyValue) -> String {
    match v.value {
        Some(any_value::Value::StringValue(s)) => s,
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        other => format!("{other:?}"),
    }
}

/// The receiver: serves until dropped.
pub struct OtlpReceiver {
    addr: SocketAddr,
    collector: Collector,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl OtlpReceiver {
    /// Starts serving on a free loopback port (call inside a tokio runtime).
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the OTLP receiver on loopback");
        let addr = listener.local_addr().unwrap();
        let collector = Collector::default();
        let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let service = TraceServiceServer::new(collector.clone());
        tokio::spawn(async move {
            let serve = tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async {
                    let _ = stop_rx.await;
                });
            let _ = serve.await;
        });
        Self {
            addr,
            collector,
            stop: Some(stop),
        }
    }

    /// Its endpoint for an OTLP/gRPC exporter: `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every span received so far, in arrival order.
    pub fn spans(&self) -> Vec<ReceivedSpan> {
        self.collector.received.lock().unwrap().spans.clone()
    }

    /// How many export requests arrived.
    pub fn requests(&self) -> usize {
        self.collector.received.lock().unwrap().requests
    }

    /// Waits until at least `n` spans arrived and returns all of them;
    /// panics, saying how many came, when `timeout` passes first.
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> Vec<ReceivedSpan> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            // Registered before the check, so an export between the check
            // and the wait still wakes it.
            let arrived = self.collector.arrived.notified();
            let spans = self.spans();
            if spans.len() >= n {
                return spans;
            }
            if tokio::time::timeout_at(deadline, arrived).await.is_err() {
                panic!(
                    "OTLP receiver: {} span(s) within {timeout:?}, wanted {n}: {:?}",
                    spans.len(),
                    spans.iter().map(|s| &s.name).collect::<Vec<_>>()
                );
            }
        }
    }
}

impl Drop for OtlpReceiver {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}
