//! Spans as Istio's proxies make them: a client span per outbound request
//! and a server span per inbound one, named `<service>:<port>/*`, with
//! Envoy's and Istio's tags, sampled per the Telemetry API (a parent's
//! decision wins, else `randomSamplingPercentage`), and propagated in W3C
//! `traceparent`/`tracestate` and B3 headers. The context a request
//! arrives with is continued, never replaced: the server hands the app a
//! request whose headers (and [`TraceContext`] extension) name the server
//! span, and the client continues whatever context the app's request
//! carries. `x-request-id` is added when absent.
//!
//! Spans go to the OpenTelemetry provider the policy names, over OTLP
//! (`super::otlp`); recording never blocks and never fails a request.
//!
//! Not here: when a request is traced at all (the policy, [`super::plan`]).

use std::borrow::Cow;
use std::time::SystemTime;

use http::{HeaderMap, HeaderName, HeaderValue};
use mesh_core::config::mesh_config::providers::ExtensionProvider;
use mesh_core::telemetry::{TracingPolicy, TracingProvider};
use mesh_core::trace::{self, Extracted, Format, Precedence, TraceContext};

use super::otlp::{AttrValue, FinishedSpan, OtlpConfig, OtlpExporter, SpanKind, SpanStatus};
use super::record::{Outcome, Pending};
use super::{Reporter, Telemetry};
use crate::client::rng::next_u64;

/// A traced request's span, until its response ends.
pub struct SpanState {
    ctx: TraceContext,
    name: String,
    start: SystemTime,
    exporter: OtlpExporter,
    request_id: Option<String>,
    tags: Vec<(Cow<'static, str>, AttrValue)>,
}

fn random_u128() -> u128 {
    (u128::from(next_u64()) << 64) | u128::from(next_u64())
}

/// The propagation headers as ready names, so a lookup hashes a known
/// name instead of parsing a string first (in `PROPAGATION_HEADERS`
/// order, then `x-request-id`).
static NAMES: [HeaderName; 9] = [
    HeaderName::from_static("traceparent"),
    HeaderName::from_static("tracestate"),
    HeaderName::from_static("x-b3-traceid"),
    HeaderName::from_static("x-b3-spanid"),
    HeaderName::from_static("x-b3-parentspanid"),
    HeaderName::from_static("x-b3-sampled"),
    HeaderName::from_static("x-b3-flags"),
    HeaderName::from_static("b3"),
    HeaderName::from_static("x-request-id"),
];

/// The ready name of a propagation header.
fn name(n: &'static str) -> HeaderName {
    NAMES
        .iter()
        .find(|h| h.as_str() == n)
        .cloned()
        .unwrap_or_else(|| HeaderName::from_static(n))
}

/// The trace context in `headers`, in Envoy's precedence (B3, then W3C).
pub fn extract(headers: &HeaderMap) -> Extracted {
    // Most requests carry none of the headers: eight misses, known names.
    if !NAMES[..8].iter().any(|n| headers.contains_key(n)) {
        return Extracted::None;
    }
    trace::extract(Precedence::B3First, |n| {
        headers
            .get_all(name(n))
            .iter()
            .filter_map(|v| v.to_str().ok())
    })
}

/// Writes `ctx` into `headers` (W3C and B3), replacing what was there.
pub fn inject(ctx: &TraceContext, headers: &mut HeaderMap) {
    trace::inject(ctx, setter(headers));
}

/// Writes `ctx` into `headers` as W3C only.
fn inject_w3c(ctx: &TraceContext, headers: &mut HeaderMap) {
    trace::inject_w3c(ctx, setter(headers));
}

fn setter(headers: &mut HeaderMap) -> impl FnMut(&'static str, Option<String>) + '_ {
    |n, value| {
        let name = name(n);
        match value.and_then(owned_value) {
            Some(v) => {
                headers.insert(name, v);
            }
            None => {
                headers.remove(name);
            }
        }
    }
}

/// Copies the trace context and request id of an inbound request onto
/// an outbound one the app makes while serving it, as Istio asks apps to
/// do, so the outbound call's span is a child of the inbound one.
pub fn propagate(inbound: &HeaderMap, outbound: &mut HeaderMap) {
    for name in &NAMES {
        for v in inbound.get_all(name) {
            outbound.append(name.clone(), v.clone());
        }
    }
}

/// A header value that takes `s`'s buffer instead of copying it.
fn owned_value(s: String) -> Option<HeaderValue> {
    HeaderValue::from_maybe_shared(bytes::Bytes::from(s)).ok()
}

/// Adds `x-request-id` when the request has none.
pub(super) fn ensure_request_id(headers: &mut HeaderMap) {
    let existing = headers.get(&NAMES[8]).and_then(|v| v.to_str().ok());
    if let Some(v) = trace::ensure_request_id(existing, random_u128()).and_then(owned_value) {
        headers.insert(NAMES[8].clone(), v);
    }
}

/// The request's `x-request-id`.
fn request_id(headers: &HeaderMap) -> Option<&str> {
    headers.get(&NAMES[8]).and_then(|v| v.to_str().ok())
}

/// Starts the span of a request under `policy`: decides sampling,
/// writes the new context into `headers` (and returns it for the
/// request's extensions), and returns the span to finish when it is
/// sampled and has somewhere to go.
pub(super) fn start(
    telemetry: &Telemetry,
    policy: &TracingPolicy,
    name: impl FnOnce() -> String,
    headers: &mut HeaderMap,
    app_context: Option<&TraceContext>,
) -> (TraceContext, Option<Box<SpanState>>) {
    let extracted = extract(headers);
    let parent = app_context.or(extracted.parent());
    let parent_sampled = app_context
        .and_then(|c| c.sampled)
        .or_else(|| extracted.sampled());
    let random = if policy.use_request_id_for_trace_sampling {
        request_id(headers)
            .and_then(trace::request_id_sampling_value)
            .unwrap_or_else(next_u64)
    } else {
        next_u64()
    };
    let decision = trace::decide(
        parent_sampled,
        false,
        policy.random_sampling_percentage,
        random,
    );
    let ctx = match parent {
        Some(p) => p.child(next_u64(), decision.sampled),
        None => TraceContext::root(random_u128(), next_u64(), decision.sampled),
    };
    // B3 goes on to a caller that spoke it; otherwise W3C alone, as
    // Envoy's OpenTelemetry tracer writes.
    if matches!(
        extracted,
        Extracted::Parent(_, Format::B3Single | Format::B3Multi)
    ) {
        inject(&ctx, headers);
    } else {
        inject_w3c(&ctx, headers);
    }
    if !decision.sampled {
        return (ctx, None);
    }
    let Some(exporter) = telemetry.exporter(policy) else {
        return (ctx, None);
    };
    let tags = custom_tags(policy, headers);
    (
        ctx.clone(),
        Some(Box::new(SpanState {
            ctx,
            name: name(),
            start: SystemTime::now(),
            exporter,
            request_id: request_id(headers).map(str::to_string),
            tags,
        })),
    )
}

fn custom_tags(policy: &TracingPolicy, headers: &HeaderMap) -> Vec<(Cow<'static, str>, AttrValue)> {
    policy
        .custom_tags
        .iter()
        .filter_map(|(name, tag)| {
            let value = if let Some(l) = &tag.literal {
                Some(l.value.clone())
            } else if let Some(e) = &tag.environment {
                std::env::var(&e.name)
                    .ok()
                    .or_else(|| e.default_value.clone())
            } else if let Some(h) = &tag.header {
                headers
                    .get(h.name.as_str())
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string)
                    .or_else(|| h.default_value.clone())
            } else {
                None
            }?;
            Some((Cow::Owned(name.clone()), AttrValue::from(value)))
        })
        .collect()
}

/// The OTLP endpoint of a tracing provider, when the SDK can export to it.
pub(super) fn endpoint(provider: &TracingProvider) -> Option<String> {
    let TracingProvider::Extension(p) = provider else {
        return None;
    };
    let ExtensionProvider {
        opentelemetry: Some(otel),
        ..
    } = p.as_ref()
    else {
        return None;
    };
    // `[<namespace>/]<hostname>`.
    let host = otel.service.rsplit('/').next().unwrap_or(&otel.service);
    Some(format!("http://{host}:{}", otel.port))
}

/// The exporter config for `endpoint`, with Istio's service name.
pub(super) fn config(telemetry: &Telemetry, endpoint: &str) -> OtlpConfig {
    let local = telemetry.local();
    OtlpConfig::new(
        endpoint,
        format!("{}.{}", local.canonical_service, local.namespace),
    )
}

impl SpanState {
    /// Ends the span and hands it to the exporter.
    pub(super) fn end(self, p: &Pending, o: &Outcome, request_bytes: u64) {
        let local = &p.telemetry.local;
        let mut attributes: Vec<(Cow<'static, str>, AttrValue)> = vec![
            ("component".into(), "proxy".into()),
            (
                "istio.canonical_service".into(),
                local.canonical_service.to_string().into(),
            ),
            (
                "istio.canonical_revision".into(),
                local.canonical_revision.to_string().into(),
            ),
            ("istio.namespace".into(), local.namespace.to_string().into()),
            ("http.status_code".into(), i64::from(o.code).into()),
            ("request_size".into(), (request_bytes as i64).into()),
            ("response_size".into(), (o.response_bytes as i64).into()),
            ("response_flags".into(), o.flags.as_str().to_string().into()),
            ("upstream_cluster".into(), p.service.to_string().into()),
        ];
        if let Some(a) = p.access.as_deref() {
            attributes.push(("http.method".into(), a.method.clone().into()));
            let url = format!(
                "{}://{}{}",
                a.scheme.as_deref().unwrap_or("http"),
                a.authority.as_deref().unwrap_or("-"),
                a.path
            );
            attributes.push(("http.url".into(), url.into()));
            attributes.push(("http.protocol".into(), a.protocol.into()));
            if let Some(ua) = a.header("user-agent") {
                attributes.push(("user_agent".into(), ua.into()));
            }
            if let Some(peer) = a.upstream_host.or(a.downstream_remote) {
                attributes.push(("peer.address".into(), peer.ip().to_string().into()));
            }
        }
        if let Some(id) = self.request_id {
            attributes.push(("guid:x-request-id".into(), id.into()));
        }
        if let Some(g) = o.grpc_status {
            attributes.push(("grpc.status_code".into(), i64::from(g).into()));
        }
        let failed = o.code == 0 || o.code >= 500;
        if failed {
            attributes.push(("error".into(), "true".into()));
        }
        attributes.extend(self.tags);
        self.exporter.record(FinishedSpan {
            name: self.name.into(),
            kind: match p.reporter {
                Reporter::Source => SpanKind::Client,
                Reporter::Destination => SpanKind::Server,
            },
            trace_id: self.ctx.trace_id,
            span_id: self.ctx.span_id,
            parent_span_id: self.ctx.parent_span_id,
            tracestate: self.ctx.tracestate.clone(),
            start: self.start,
            end: SystemTime::now(),
            attributes,
            status: if failed {
                SpanStatus::Error(format!("status {}", o.code).into())
            } else {
                SpanStatus::Unset
            },
        });
    }
}
