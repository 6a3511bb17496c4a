//! Distributed-trace context, decided without I/O: which parent a request
//! carries, the context to send upstream, the sampling decision, new ids
//! and the `x-request-id`.
//!
//! Formats ([`w3c`], [`b3`]):
//!
//! - W3C Trace Context: `traceparent`, `tracestate`.
//! - Zipkin B3: the single `b3` header and the multi `x-b3-*` headers.
//!
//! **Extraction** ([`extract`]) reads every format and picks one, in the
//! order of [`Precedence`]. The default, [`Precedence::B3First`], is
//! Envoy's only mode that reads both families, the Zipkin tracer with
//! `trace_context_option: USE_B3_WITH_W3C_PROPAGATION` (Envoy 1.36, Istio
//! 1.28): B3 first (the single `b3` header before the multi headers, as
//! Envoy's Zipkin extractor has always done), W3C `traceparent` as the
//! fallback. [`Precedence::W3cFirst`] puts `traceparent` first, for
//! deployments where the OpenTelemetry provider (W3C only in Envoy) is
//! the source of truth. A malformed header counts as absent and the next
//! format is tried (Envoy instead drops tracing for that request when a
//! B3 header is malformed; we keep the trace). `tracestate` is kept only
//! with a valid `traceparent` of the same trace, as the W3C processing
//! model requires.
//!
//! **Injection** ([`inject`]) writes both families, as Envoy's Zipkin
//! tracer does with `USE_B3_WITH_W3C_PROPAGATION`: `traceparent`
//! (+ `tracestate` when there is one) and the B3 multi headers. For
//! reference, Envoy's OpenTelemetry tracer writes only `traceparent` and
//! `tracestate`, and its Zipkin tracer in the default `USE_B3` mode only
//! `x-b3-traceid`, `x-b3-spanid`, `x-b3-parentspanid` (when the span has a
//! parent) and `x-b3-sampled`. We also remove a stale single `b3` header,
//! which would otherwise outrank the fresh multi headers at the next hop.
//!
//! **Sampling** is in [`sampling`], the request id in [`request_id`].
//!
//! Not here: header maps (callers pass closures, so this crate stays free
//! of `http`), random generators (callers pass numbers), span timing and
//! export (mesh-tower's `telemetry`).

pub mod b3;
mod id;
pub mod request_id;
pub mod sampling;
pub mod w3c;

pub use id::{SpanId, TraceId};
pub use request_id::{ensure_request_id, request_id_sampling_value, uuid_v4, X_REQUEST_ID};
pub use sampling::{decide, SamplingDecision, SamplingReason, X_ENVOY_FORCE_TRACE};

use b3::{B3Context, B3Multi, B3Sampling, B3};

/// Every header [`inject`] writes or removes.
pub const PROPAGATION_HEADERS: [&str; 8] = [
    w3c::TRACEPARENT,
    w3c::TRACESTATE,
    b3::X_B3_TRACE_ID,
    b3::X_B3_SPAN_ID,
    b3::X_B3_PARENT_SPAN_ID,
    b3::X_B3_SAMPLED,
    b3::X_B3_FLAGS,
    b3::B3,
];

/// A span's place in a trace, as propagated between services.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceContext {
    /// The trace.
    pub trace_id: TraceId,
    /// The span: the remote parent when extracted, our span when injected.
    pub span_id: SpanId,
    /// That span's own parent, which only B3 carries.
    pub parent_span_id: Option<SpanId>,
    /// The sampling decision; `None` defers it to the receiver.
    pub sampled: Option<bool>,
    /// B3 debug (`d` / `x-b3-flags: 1`); implies sampled.
    pub debug: bool,
    /// The validated W3C `tracestate`, passed on unchanged.
    pub tracestate: Option<String>,
}

impl TraceContext {
    /// The context of a new root span: a fresh trace from `trace_random`,
    /// the span from `span_random`.
    pub fn root(trace_random: u128, span_random: u64, sampled: bool) -> Self {
        Self {
            trace_id: TraceId::from_random(trace_random),
            span_id: SpanId::from_random(span_random),
            parent_span_id: None,
            sampled: Some(sampled),
            debug: false,
            tracestate: None,
        }
    }

    /// The context of a new span whose parent is `self` (same trace, the
    /// parent's tracestate and debug flag, a new span id from
    /// `span_random`, the given decision).
    pub fn child(&self, span_random: u64, sampled: bool) -> Self {
        Self {
            trace_id: self.trace_id,
            span_id: SpanId::from_random(span_random),
            parent_span_id: Some(self.span_id),
            sampled: Some(sampled),
            debug: self.debug && sampled,
            tracestate: self.tracestate.clone(),
        }
    }
}

/// Which format wins when a request carries several.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Precedence {
    /// `b3`, then `x-b3-*`, then `traceparent` (Envoy's Zipkin tracer with
    /// `USE_B3_WITH_W3C_PROPAGATION`).
    #[default]
    B3First,
    /// `traceparent`, then `b3`, then `x-b3-*`.
    W3cFirst,
}

/// The format a context was read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `traceparent` (+ `tracestate`).
    W3c,
    /// The single `b3` header.
    B3Single,
    /// The `x-b3-*` headers.
    B3Multi,
}

/// What a request carried.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Extracted {
    /// No valid trace header: start a new trace.
    #[default]
    None,
    /// A decision without ids (`b3: 0`, a lone `x-b3-sampled`): start a new
    /// trace that follows it (`debug` for `d` / `x-b3-flags: 1`).
    SamplingOnly {
        /// The decision.
        sampled: bool,
        /// B3 debug.
        debug: bool,
    },
    /// A remote parent.
    Parent(TraceContext, Format),
}

impl Extracted {
    /// The parent's sampling decision, for [`sampling::decide`].
    pub fn sampled(&self) -> Option<bool> {
        match self {
            Self::None => None,
            Self::SamplingOnly { sampled, .. } => Some(*sampled),
            Self::Parent(ctx, _) => ctx.sampled,
        }
    }

    /// The remote parent, when there is one.
    pub fn parent(&self) -> Option<&TraceContext> {
        match self {
            Self::Parent(ctx, _) => Some(ctx),
            _ => None,
        }
    }
}

/// Reads the trace context of a request. `get(name)` returns the values of
/// the (lower-case) header `name` in order; single-valued headers use the
/// first, `tracestate` joins all (RFC 9110 field combination). With an
/// `http::HeaderMap`:
/// `extract(p, |n| map.get_all(n).iter().filter_map(|v| v.to_str().ok()))`.
pub fn extract<'h, F, I>(precedence: Precedence, get: F) -> Extracted
where
    F: Fn(&'static str) -> I,
    I: IntoIterator<Item = &'h str>,
{
    let first = |name| get(name).into_iter().next();
    let w3c = || {
        let parent = w3c::parse_traceparent(first(w3c::TRACEPARENT)?)?;
        Some(Extracted::Parent(
            TraceContext {
                trace_id: parent.trace_id,
                span_id: parent.parent_id,
                parent_span_id: None,
                sampled: Some(parent.sampled),
                debug: false,
                tracestate: tracestate(&get),
            },
            Format::W3c,
        ))
    };
    let single = || Some(from_b3(b3::parse_single(first(b3::B3)?)?, Format::B3Single));
    let multi = || {
        let h = B3Multi {
            trace_id: first(b3::X_B3_TRACE_ID),
            span_id: first(b3::X_B3_SPAN_ID),
            parent_span_id: first(b3::X_B3_PARENT_SPAN_ID),
            sampled: first(b3::X_B3_SAMPLED),
            flags: first(b3::X_B3_FLAGS),
        };
        Some(from_b3(b3::parse_multi(&h)?, Format::B3Multi))
    };
    let found = match precedence {
        Precedence::B3First => single().or_else(multi).or_else(w3c),
        Precedence::W3cFirst => w3c().or_else(single).or_else(multi),
    };
    let Some(mut found) = found else {
        return Extracted::None;
    };
    // A B3 parent keeps the tracestate of a traceparent naming the same
    // trace: both headers describe one trace, written by one hop.
    if let Extracted::Parent(ctx, Format::B3Single | Format::B3Multi) = &mut found {
        let same_trace = first(w3c::TRACEPARENT)
            .and_then(w3c::parse_traceparent)
            .is_some_and(|p| p.trace_id == ctx.trace_id);
        if same_trace {
            ctx.tracestate = tracestate(&get);
        }
    }
    found
}

/// All `tracestate` lines joined and validated.
fn tracestate<'h, F, I>(get: &F) -> Option<String>
where
    F: Fn(&'static str) -> I,
    I: IntoIterator<Item = &'h str>,
{
    let joined = get(w3c::TRACESTATE)
        .into_iter()
        .collect::<Vec<_>>()
        .join(",");
    w3c::parse_tracestate(&joined)
}

fn from_b3(parsed: B3, format: Format) -> Extracted {
    match parsed {
        B3::SamplingOnly(s) => Extracted::SamplingOnly {
            sampled: s.sampled(),
            debug: s == B3Sampling::Debug,
        },
        B3::Context(c) => Extracted::Parent(
            TraceContext {
                trace_id: c.trace_id,
                span_id: c.span_id,
                parent_span_id: c.parent_span_id,
                sampled: c.sampling.map(B3Sampling::sampled),
                debug: c.sampling == Some(B3Sampling::Debug),
                tracestate: None,
            },
            format,
        ),
    }
}

/// Writes `ctx` (the span the upstream request is a child of) into a
/// request: `set(name, Some(value))` sets a header, replacing any old
/// value, and `set(name, None)` removes one. Every name in
/// [`PROPAGATION_HEADERS`] is set or removed exactly once, so no stale
/// context survives. An undecided `sampled` is written as not sampled in
/// `traceparent` (W3C has no "defer") and omitted from B3.
pub fn inject(ctx: &TraceContext, mut set: impl FnMut(&'static str, Option<String>)) {
    let sampled = ctx.debug || ctx.sampled == Some(true);
    set(
        w3c::TRACEPARENT,
        Some(w3c::format_traceparent(ctx.trace_id, ctx.span_id, sampled)),
    );
    set(
        w3c::TRACESTATE,
        ctx.tracestate.clone().filter(|s| !s.is_empty()),
    );
    set(b3::X_B3_TRACE_ID, Some(b3::trace_hex(ctx.trace_id)));
    set(b3::X_B3_SPAN_ID, Some(ctx.span_id.to_string()));
    set(
        b3::X_B3_PARENT_SPAN_ID,
        ctx.parent_span_id.map(|p| p.to_string()),
    );
    // B3: debug implies accept, so x-b3-sampled is not sent with it.
    let b3_sampled = match (ctx.debug, ctx.sampled) {
        (true, _) | (false, None) => None,
        (false, Some(s)) => Some(if s { "1" } else { "0" }.to_string()),
    };
    set(b3::X_B3_SAMPLED, b3_sampled);
    set(b3::X_B3_FLAGS, ctx.debug.then(|| "1".to_string()));
    set(b3::B3, None);
}

/// Writes only W3C `traceparent` and `tracestate` (removing a stale
/// `tracestate`), as Envoy's OpenTelemetry tracer propagates: two header
/// writes instead of [`inject`]'s eight, for requests whose caller did not
/// speak B3.
pub fn inject_w3c(ctx: &TraceContext, mut set: impl FnMut(&'static str, Option<String>)) {
    let sampled = ctx.debug || ctx.sampled == Some(true);
    set(
        w3c::TRACEPARENT,
        Some(w3c::format_traceparent(ctx.trace_id, ctx.span_id, sampled)),
    );
    set(
        w3c::TRACESTATE,
        ctx.tracestate.clone().filter(|s| !s.is_empty()),
    );
}

/// The single `b3` header value for `ctx`, for peers that read only that
/// form (not written by [`inject`], which follows Envoy).
pub fn format_b3_single(ctx: &TraceContext) -> String {
    let sampling = match (ctx.debug, ctx.sampled) {
        (true, _) => Some(B3Sampling::Debug),
        (false, Some(true)) => Some(B3Sampling::Accept),
        (false, Some(false)) => Some(B3Sampling::Deny),
        (false, None) => None,
    };
    b3::format_single(&B3Context {
        trace_id: ctx.trace_id,
        span_id: ctx.span_id,
        parent_span_id: ctx.parent_span_id,
        sampling,
    })
}

#[cfg(test)]
mod tests;
