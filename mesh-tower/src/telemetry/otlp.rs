//! Span export to an OpenTelemetry collector over OTLP/gRPC.
//!
//! The telemetry layer hands each finished span to [`OtlpExporter::record`],
//! which never blocks and never fails: the span goes into a bounded queue,
//! or is dropped and counted when the queue is full (a slow or unreachable
//! collector must cost the request path nothing). A task on the caller's
//! tokio runtime batches the queue ([`OtlpConfig::max_batch_size`] spans,
//! or whatever is queued every [`OtlpConfig::scheduled_delay`]) and
//! exports each batch with `opentelemetry-otlp`'s tonic `SpanExporter`,
//! one export at a time, each bounded by [`OtlpConfig::timeout`]; a batch
//! whose export fails is dropped and counted. [`OtlpExporter::exported`]
//! and [`OtlpExporter::dropped`] say what happened to every span.
//!
//! Why our own batching task rather than the SDK's `BatchSpanProcessor`:
//! the SDK's processor runs a dedicated OS thread that drives exports with
//! `futures_executor::block_on`, its tokio-runtime variant is behind an
//! experimental feature, and it keeps its dropped-span count private (it
//! only logs it); we need the counters, want exports on the runtime the
//! SDK already runs on, and get finished spans with no SDK `Tracer` behind
//! them. The defaults are the SDK's batch defaults (queue 2048, batch 512,
//! delay 5 s, which is also Envoy's OpenTelemetry flush interval) and the
//! OTLP exporter's 10 s timeout.
//!
//! Not here: what a span contains or when it starts and ends (the
//! telemetry layer), propagation and sampling (`mesh_core::trace`).

use std::borrow::Cow;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use mesh_core::trace::{SpanId, TraceId};
use opentelemetry::trace::{
    SpanContext, SpanId as OtelSpanId, SpanKind as OtelKind, Status, TraceFlags,
    TraceId as OtelTraceId, TraceState,
};
use opentelemetry::{InstrumentationScope, KeyValue, Value};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanExporter as _, SpanLinks};
use opentelemetry_sdk::Resource;
use tokio::sync::{mpsc, oneshot};

/// Where and how spans are exported.
#[derive(Debug, Clone)]
pub struct OtlpConfig {
    /// The collector's OTLP/gRPC endpoint, `http://host:port`.
    pub endpoint: String,
    /// The resource's `service.name`.
    pub service_name: String,
    /// More resource attributes (Istio's OpenTelemetry provider adds e.g.
    /// `service.namespace`, `service.version`, `service.instance.id`).
    pub resource_attributes: Vec<(Cow<'static, str>, AttrValue)>,
    /// Bound on one export, retries included.
    pub timeout: Duration,
    /// Most spans in one export request.
    pub max_batch_size: usize,
    /// Most spans waiting for export; more are dropped.
    pub max_queue_size: usize,
    /// How often a partial batch is exported.
    pub scheduled_delay: Duration,
}

impl OtlpConfig {
    /// A config with the default limits.
    pub fn new(endpoint: impl Into<String>, service_name: impl Into<String>) -> Self {
        Self {
            endpoint: endpoint.into(),
            service_name: service_name.into(),
            resource_attributes: Vec::new(),
            timeout: Duration::from_secs(10),
            max_batch_size: 512,
            max_queue_size: 2048,
            scheduled_delay: Duration::from_secs(5),
        }
    }

    /// Adds a resource attribute.
    pub fn with_resource_attribute(
        mut self,
        key: impl Into<Cow<'static, str>>,
        value: impl Into<AttrValue>,
    ) -> Self {
        self.resource_attributes.push((key.into(), value.into()));
        self
    }
}

/// An attribute value.
#[derive(Debug, Clone, PartialEq)]
pub enum AttrValue {
    /// Text.
    String(Cow<'static, str>),
    /// A signed integer.
    Int(i64),
    /// A boolean.
    Bool(bool),
    /// A float.
    Float(f64),
}

impl From<&'static str> for AttrValue {
    fn from(s: &'static str) -> Self {
        Self::String(Cow::Borrowed(s))
    }
}

impl From<String> for AttrValue {
    fn from(s: String) -> Self {
        Self::String(Cow::Owned(s))
    }
}

impl From<Cow<'static, str>> for AttrValue {
    fn from(s: Cow<'static, str>) -> Self {
        Self::String(s)
    }
}

impl From<i64> for AttrValue {
    fn from(v: i64) -> Self {
        Self::Int(v)
    }
}

impl From<bool> for AttrValue {
    fn from(v: bool) -> Self {
        Self::Bool(v)
    }
}

impl From<f64> for AttrValue {
    fn from(v: f64) -> Self {
        Self::Float(v)
    }
}

impl From<AttrValue> for Value {
    fn from(v: AttrValue) -> Self {
        match v {
            AttrValue::String(s) => Value::from(s),
            AttrValue::Int(i) => Value::I64(i),
            AttrValue::Bool(b) => Value::Bool(b),
            AttrValue::Float(f) => Value::F64(f),
        }
    }
}

/// Which side of a call a span describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpanKind {
    /// The outbound request (`reporter=source`).
    Client,
    /// The inbound request (`reporter=destination`); its parent, when it
    /// has one, came from the caller's headers, so it is marked remote.
    Server,
}

/// How the span's operation ended.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum SpanStatus {
    /// Not set (Envoy leaves most spans unset).
    #[default]
    Unset,
    /// Succeeded.
    Ok,
    /// Failed, with a description.
    Error(Cow<'static, str>),
}

/// A finished (and sampled) span, as the telemetry layer built it.
#[derive(Debug, Clone, PartialEq)]
pub struct FinishedSpan {
    /// The operation name.
    pub name: Cow<'static, str>,
    /// Client or server.
    pub kind: SpanKind,
    /// The trace.
    pub trace_id: TraceId,
    /// This span.
    pub span_id: SpanId,
    /// Its parent; `None` for a root span.
    pub parent_span_id: Option<SpanId>,
    /// The W3C tracestate it propagated, if any.
    pub tracestate: Option<String>,
    /// When it started.
    pub start: SystemTime,
    /// When it ended.
    pub end: SystemTime,
    /// Its attributes.
    pub attributes: Vec<(Cow<'static, str>, AttrValue)>,
    /// How it ended.
    pub status: SpanStatus,
}

/// Why an exporter could not start.
#[derive(Debug, thiserror::Error)]
pub enum OtlpError {
    /// Started outside a tokio runtime.
    #[error(
        "the OTLP exporter must be started inside a tokio runtime (its batching task runs there)"
    )]
    NoRuntime,
    /// A limit is zero.
    #[error("OTLP exporter: {0} must be at least 1")]
    ZeroLimit(&'static str),
    /// `opentelemetry-otlp` refused the endpoint or settings.
    #[error(
        "OTLP exporter for endpoint {endpoint:?}: {source}; check that it is http://host:port"
    )]
    Build {
        /// The configured endpoint.
        endpoint: String,
        /// What opentelemetry-otlp said.
        source: opentelemetry_otlp::ExporterBuildError,
    },
}

#[derive(Debug, Default)]
struct Counters {
    exported: AtomicU64,
    dropped: AtomicU64,
}

enum Control {
    Flush(oneshot::Sender<()>),
    Shutdown(oneshot::Sender<()>),
}

/// The exporter handle: cheap to clone, every clone feeds the same queue.
#[derive(Debug, Clone)]
pub struct OtlpExporter {
    spans: mpsc::Sender<FinishedSpan>,
    control: mpsc::Sender<Control>,
    counters: Arc<Counters>,
}

impl OtlpExporter {
    /// Starts the batching task on the current tokio runtime. Connecting is
    /// lazy: an unreachable collector is no error here, only dropped spans
    /// later.
    pub fn start(config: OtlpConfig) -> Result<Self, OtlpError> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(OtlpError::NoRuntime);
        }
        for (name, v) in [
            ("max_batch_size", config.max_batch_size),
            ("max_queue_size", config.max_queue_size),
        ] {
            if v == 0 {
                return Err(OtlpError::ZeroLimit(name));
            }
        }
        let mut exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(config.endpoint.clone())
            .with_timeout(config.timeout)
            .build()
            .map_err(|source| OtlpError::Build {
                endpoint: config.endpoint.clone(),
                source,
            })?;
        exporter.set_resource(&resource(&config));
        let (spans_tx, spans) = mpsc::channel(config.max_queue_size);
        let (control_tx, control) = mpsc::channel(4);
        let counters = Arc::new(Counters::default());
        let worker = Worker {
            exporter,
            spans,
            control,
            counters: counters.clone(),
            batch: Vec::with_capacity(config.max_batch_size),
            max_batch: config.max_batch_size,
            timeout: config.timeout,
            scope: InstrumentationScope::builder("mesh-tower")
                .with_version(env!("CARGO_PKG_VERSION"))
                .build(),
        };
        tokio::spawn(worker.run(config.scheduled_delay));
        Ok(Self {
            spans: spans_tx,
            control: control_tx,
            counters,
        })
    }

    /// Queues a finished span for export. Never blocks, never fails: when
    /// the queue is full or the exporter has shut down, the span is
    /// dropped and counted in [`dropped`](Self::dropped).
    pub fn record(&self, span: FinishedSpan) {
        if self.spans.try_send(span).is_err() {
            self.counters.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Spans the collector accepted.
    pub fn exported(&self) -> u64 {
        self.counters.exported.load(Ordering::Relaxed)
    }

    /// Spans lost: queue full, failed exports, or recorded after shutdown.
    pub fn dropped(&self) -> u64 {
        self.counters.dropped.load(Ordering::Relaxed)
    }

    /// Exports everything queued now, and returns when that is done (each
    /// export bounded by the timeout).
    pub async fn force_flush(&self) {
        let (done, wait) = oneshot::channel();
        if self.control.send(Control::Flush(done)).await.is_ok() {
            let _ = wait.await;
        }
    }

    /// Exports everything queued, stops the task and returns when it is
    /// gone. Spans recorded afterwards are dropped. Once one export fails
    /// during shutdown the rest is dropped without trying, so a dead
    /// collector delays shutdown by one timeout at most.
    pub async fn shutdown(&self) {
        let (done, wait) = oneshot::channel();
        if self.control.send(Control::Shutdown(done)).await.is_ok() {
            let _ = wait.await;
        }
    }
}

/// `service.name` plus the configured attributes.
fn resource(config: &OtlpConfig) -> Resource {
    Resource::builder_empty()
        .with_service_name(config.service_name.clone())
        .with_attributes(
            config
                .resource_attributes
                .iter()
                .map(|(k, v)| KeyValue::new(k.clone(), v.clone())),
        )
        .build()
}

/// The OpenTelemetry SDK's form of a span.
fn span_data(span: FinishedSpan, scope: &InstrumentationScope) -> SpanData {
    let trace_state = span
        .tracestate
        .as_deref()
        .and_then(|s| s.parse::<TraceState>().ok())
        .unwrap_or_default();
    SpanData {
        span_context: SpanContext::new(
            OtelTraceId::from_bytes(span.trace_id.0),
            OtelSpanId::from_bytes(span.span_id.0),
            TraceFlags::SAMPLED,
            false,
            trace_state,
        ),
        parent_span_id: span
            .parent_span_id
            .map_or(OtelSpanId::INVALID, |p| OtelSpanId::from_bytes(p.0)),
        parent_span_is_remote: span.kind == SpanKind::Server && span.parent_span_id.is_some(),
        span_kind: match span.kind {
            SpanKind::Client => OtelKind::Client,
            SpanKind::Server => OtelKind::Server,
        },
        name: span.name,
        start_time: span.start,
        end_time: span.end,
        attributes: span
            .attributes
            .into_iter()
            .map(|(k, v)| KeyValue::new(k, v))
            .collect(),
        dropped_attributes_count: 0,
        events: SpanEvents::default(),
        links: SpanLinks::default(),
        status: match span.status {
            SpanStatus::Unset => Status::Unset,
            SpanStatus::Ok => Status::Ok,
            SpanStatus::Error(d) => Status::error(d),
        },
        instrumentation_scope: scope.clone(),
    }
}

/// The batching task.
struct Worker {
    exporter: opentelemetry_otlp::SpanExporter,
    spans: mpsc::Receiver<FinishedSpan>,
    control: mpsc::Receiver<Control>,
    counters: Arc<Counters>,
    batch: Vec<SpanData>,
    max_batch: usize,
    timeout: Duration,
    scope: InstrumentationScope,
}

impl Worker {
    async fn run(mut self, delay: Duration) {
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + delay, delay);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                // Control first, so a flush is not starved by a busy queue.
                biased;
                ctl = self.control.recv() => match ctl {
                    Some(Control::Flush(done)) => {
                        self.drain(false).await;
                        let _ = done.send(());
                    }
                    Some(Control::Shutdown(done)) => {
                        self.spans.close();
                        self.drain(true).await;
                        let _ = done.send(());
                        return;
                    }
                    // Every handle is gone: export what is left and stop.
                    None => {
                        self.spans.close();
                        self.drain(true).await;
                        return;
                    }
                },
                span = self.spans.recv() => match span {
                    Some(span) => {
                        self.batch.push(span_data(span, &self.scope));
                        if self.batch.len() >= self.max_batch {
                            self.export().await;
                        }
                    }
                    None => {
                        self.drain(true).await;
                        return;
                    }
                },
                _ = tick.tick() => {
                    if !self.batch.is_empty() {
                        self.export().await;
                    }
                }
            }
        }
    }

    /// Exports the batch plus what is queued now (not what arrives
    /// meanwhile, so a flush ends under load). With `give_up`, the first
    /// failed export drops the rest.
    async fn drain(&mut self, give_up: bool) {
        let mut queued = self.spans.len();
        loop {
            while queued > 0 && self.batch.len() < self.max_batch {
                let Ok(span) = self.spans.try_recv() else {
                    queued = 0;
                    break;
                };
                queued -= 1;
                self.batch.push(span_data(span, &self.scope));
            }
            if self.batch.is_empty() {
                return;
            }
            if !self.export().await && give_up {
                let mut left = 0;
                while queued > 0 && self.spans.try_recv().is_ok() {
                    queued -= 1;
                    left += 1;
                }
                self.counters.dropped.fetch_add(left, Ordering::Relaxed);
                return;
            }
        }
    }

    /// Exports the batch; false when it was dropped.
    async fn export(&mut self) -> bool {
        let batch = std::mem::replace(&mut self.batch, Vec::with_capacity(self.max_batch));
        let n = batch.len() as u64;
        // opentelemetry-otlp bounds its retries by the same timeout; this
        // bounds the whole call, connection setup included.
        let ok = matches!(
            tokio::time::timeout(self.timeout, self.exporter.export(batch)).await,
            Ok(Ok(()))
        );
        let counter = if ok {
            &self.counters.exported
        } else {
            &self.counters.dropped
        };
        counter.fetch_add(n, Ordering::Relaxed);
        if !ok {
            tracing::debug!(spans = n, "OTLP export failed; spans dropped");
        }
        ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(kind: SpanKind, parent: Option<u64>) -> FinishedSpan {
        FinishedSpan {
            name: "GET /x".into(),
            kind,
            trace_id: TraceId::from_random(0xabc),
            span_id: SpanId::from_random(7),
            parent_span_id: parent.map(SpanId::from_random),
            tracestate: Some("k=v".into()),
            start: SystemTime::UNIX_EPOCH + Duration::from_secs(1),
            end: SystemTime::UNIX_EPOCH + Duration::from_secs(2),
            attributes: vec![("http.status_code".into(), 503i64.into())],
            status: SpanStatus::Error("UF".into()),
        }
    }

    #[test]
    fn span_data_carries_ids_kind_status_and_remote_parent() {
        let scope = InstrumentationScope::builder("t").build();
        let d = span_data(span(SpanKind::Server, Some(5)), &scope);
        assert_eq!(d.span_context.trace_id(), OtelTraceId::from(0xabc_u128));
        assert_eq!(d.span_context.span_id(), OtelSpanId::from(7_u64));
        assert_eq!(d.parent_span_id, OtelSpanId::from(5_u64));
        assert!(d.parent_span_is_remote);
        assert_eq!(d.span_kind, OtelKind::Server);
        assert_eq!(d.status, Status::error("UF"));
        assert_eq!(d.span_context.trace_state().header(), "k=v");
        assert_eq!(d.attributes, vec![KeyValue::new("http.status_code", 503)]);

        let d = span_data(span(SpanKind::Client, None), &scope);
        assert_eq!(d.parent_span_id, OtelSpanId::INVALID);
        assert!(!d.parent_span_is_remote);
        assert_eq!(d.span_kind, OtelKind::Client);
    }

    #[test]
    fn start_needs_a_runtime_and_limits() {
        let cfg = OtlpConfig::new("http://127.0.0.1:4317", "svc");
        assert!(matches!(
            OtlpExporter::start(cfg.clone()),
            Err(OtlpError::NoRuntime)
        ));
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let zero = OtlpConfig {
                max_batch_size: 0,
                ..cfg.clone()
            };
            assert!(matches!(
                OtlpExporter::start(zero),
                Err(OtlpError::ZeroLimit("max_batch_size"))
            ));
            assert!(OtlpExporter::start(cfg).is_ok());
        });
    }
}
