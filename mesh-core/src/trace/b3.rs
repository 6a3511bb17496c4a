//! Zipkin's B3 propagation (<https://github.com/openzipkin/b3-propagation>):
//! the single `b3` header and the multi `x-b3-*` headers, parsed and
//! formatted.
//!
//! - Trace ids are 32 or 16 hex digits; a 64-bit id is left-padded to 128
//!   bits on the way in and written back in 16 digits on the way out, so a
//!   64-bit-only Zipkin peer sees the id it sent.
//! - Single header: `{trace}-{span}`, `{trace}-{span}-{sampling}` or
//!   `{trace}-{span}-{sampling}-{parent}`, sampling one of `0` (deny),
//!   `1` (accept), `d` (debug); a lone `0`, `1` or `d` is a decision with no
//!   context.
//! - Multi headers: `x-b3-sampled` `1`/`0` (and the pre-spec `true`/`false`,
//!   which the spec asks readers to accept, as Envoy does), `x-b3-flags: 1`
//!   is debug and wins over `x-b3-sampled`.
//! - Hex digits are accepted in either case, as Envoy's Zipkin extractor
//!   does; zero ids and wrong lengths are rejected.
//!
//! Not here: precedence among formats ([`super::extract`]).

use super::id::{SpanId, TraceId};

/// The single `b3` header.
pub const B3: &str = "b3";
/// `x-b3-traceid`.
pub const X_B3_TRACE_ID: &str = "x-b3-traceid";
/// `x-b3-spanid`.
pub const X_B3_SPAN_ID: &str = "x-b3-spanid";
/// `x-b3-parentspanid`.
pub const X_B3_PARENT_SPAN_ID: &str = "x-b3-parentspanid";
/// `x-b3-sampled`.
pub const X_B3_SAMPLED: &str = "x-b3-sampled";
/// `x-b3-flags` (`1` means debug).
pub const X_B3_FLAGS: &str = "x-b3-flags";

/// A B3 sampling state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum B3Sampling {
    /// `0`: do not sample.
    Deny,
    /// `1`: sample.
    Accept,
    /// `d` / `x-b3-flags: 1`: sample and force past any collector limit.
    Debug,
}

impl B3Sampling {
    /// Whether the span is sampled.
    pub fn sampled(self) -> bool {
        self != Self::Deny
    }
}

/// Identifiers carried by B3.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct B3Context {
    /// The trace (64-bit ids left-padded).
    pub trace_id: TraceId,
    /// The remote span.
    pub span_id: SpanId,
    /// That span's parent, when sent.
    pub parent_span_id: Option<SpanId>,
    /// The sampling state; `None` defers the decision to the receiver.
    pub sampling: Option<B3Sampling>,
}

/// What a valid B3 header (or header set) carried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum B3 {
    /// A sampling decision without identifiers (`b3: 0`, or `x-b3-sampled`
    /// without ids): the receiver starts a new trace with that decision.
    SamplingOnly(B3Sampling),
    /// A full context.
    Context(B3Context),
}

fn single_flag(s: &str) -> Option<B3Sampling> {
    match s {
        "0" => Some(B3Sampling::Deny),
        "1" => Some(B3Sampling::Accept),
        "d" => Some(B3Sampling::Debug),
        _ => None,
    }
}

/// Parses the single `b3` header; `None` when malformed.
pub fn parse_single(value: &str) -> Option<B3> {
    let v = value.trim_matches([' ', '\t']);
    if v.len() == 1 {
        return single_flag(v).map(B3::SamplingOnly);
    }
    let mut parts = v.split('-');
    let trace_id = TraceId::parse_hex(parts.next()?, true, false)?;
    let span_id = SpanId::parse_hex(parts.next()?, false)?;
    // A parent is only allowed after a sampling state (the spec's grammar).
    let sampling = match parts.next() {
        Some(s) => Some(single_flag(s)?),
        None => None,
    };
    let parent_span_id = match parts.next() {
        Some(p) => Some(SpanId::parse_hex(p, false)?),
        None => None,
    };
    if parts.next().is_some() {
        return None;
    }
    Some(B3::Context(B3Context {
        trace_id,
        span_id,
        parent_span_id,
        sampling,
    }))
}

/// Formats the single `b3` header. A parent is written only with a
/// sampling state, since the grammar has no place for it otherwise.
pub fn format_single(ctx: &B3Context) -> String {
    let mut s = format!("{}-{}", trace_hex(ctx.trace_id), ctx.span_id);
    if let Some(sampling) = ctx.sampling {
        s.push('-');
        s.push(match sampling {
            B3Sampling::Deny => '0',
            B3Sampling::Accept => '1',
            B3Sampling::Debug => 'd',
        });
        if let Some(parent) = ctx.parent_span_id {
            s.push('-');
            s.push_str(&parent.to_string());
        }
    }
    s
}

/// The values of the multi headers, each the first line received.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct B3Multi<'a> {
    /// `x-b3-traceid`.
    pub trace_id: Option<&'a str>,
    /// `x-b3-spanid`.
    pub span_id: Option<&'a str>,
    /// `x-b3-parentspanid`.
    pub parent_span_id: Option<&'a str>,
    /// `x-b3-sampled`.
    pub sampled: Option<&'a str>,
    /// `x-b3-flags`.
    pub flags: Option<&'a str>,
}

/// Parses the multi headers; `None` when none is present or the ids are
/// malformed (an id without its partner, a bad parent).
pub fn parse_multi(h: &B3Multi<'_>) -> Option<B3> {
    fn trim(v: Option<&str>) -> Option<&str> {
        v.map(|v| v.trim_matches([' ', '\t']))
    }
    let sampling = if trim(h.flags) == Some("1") {
        Some(B3Sampling::Debug)
    } else {
        match trim(h.sampled) {
            Some("1" | "true") => Some(B3Sampling::Accept),
            Some("0" | "false") => Some(B3Sampling::Deny),
            // Anything else is no decision, left to the receiver.
            _ => None,
        }
    };
    match (trim(h.trace_id), trim(h.span_id)) {
        (None, None) => sampling.map(B3::SamplingOnly),
        (Some(t), Some(s)) => {
            let parent_span_id = match trim(h.parent_span_id) {
                None | Some("") => None,
                Some(p) => Some(SpanId::parse_hex(p, false)?),
            };
            Some(B3::Context(B3Context {
                trace_id: TraceId::parse_hex(t, true, false)?,
                span_id: SpanId::parse_hex(s, false)?,
                parent_span_id,
                sampling,
            }))
        }
        _ => None,
    }
}

/// The trace id as B3 writes it: 16 digits for a padded 64-bit id.
pub fn trace_hex(trace_id: TraceId) -> String {
    let full = trace_id.to_string();
    if trace_id.is_64bit() {
        full[16..].to_string()
    } else {
        full
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T128: &str = "80f198ee56343ba864fe8b2a57d3eff7";
    const T64: &str = "64fe8b2a57d3eff7";
    const SPAN: &str = "e457b5a2e4d86bd1";
    const PARENT: &str = "05e3ac9a4f6e3b90";

    fn ctx(b: Option<B3>) -> B3Context {
        match b {
            Some(B3::Context(c)) => c,
            other => panic!("expected a context, got {other:?}"),
        }
    }

    #[test]
    fn single_header_round_trips() {
        for v in [
            format!("{T128}-{SPAN}-1-{PARENT}"),
            format!("{T128}-{SPAN}-0"),
            format!("{T128}-{SPAN}-d-{PARENT}"),
            format!("{T128}-{SPAN}"),
            format!("{T64}-{SPAN}-1"),
        ] {
            let c = ctx(parse_single(&v));
            assert_eq!(format_single(&c), v);
        }
    }

    #[test]
    fn single_header_fields() {
        let c = ctx(parse_single(&format!("{T64}-{SPAN}-d-{PARENT}")));
        assert_eq!(c.trace_id.to_string(), format!("{}{T64}", "0".repeat(16)));
        assert_eq!(c.span_id.to_string(), SPAN);
        assert_eq!(
            c.parent_span_id.map(|p| p.to_string()).as_deref(),
            Some(PARENT)
        );
        assert_eq!(c.sampling, Some(B3Sampling::Debug));
        assert!(B3Sampling::Debug.sampled());
        let c = ctx(parse_single(&format!("{T128}-{SPAN}")));
        assert_eq!(c.sampling, None);
        assert_eq!(c.parent_span_id, None);
    }

    #[test]
    fn single_header_sampling_only() {
        assert_eq!(parse_single("0"), Some(B3::SamplingOnly(B3Sampling::Deny)));
        assert_eq!(
            parse_single("1"),
            Some(B3::SamplingOnly(B3Sampling::Accept))
        );
        assert_eq!(parse_single("d"), Some(B3::SamplingOnly(B3Sampling::Debug)));
    }

    #[test]
    fn single_header_malformed_is_rejected() {
        for v in [
            String::new(),
            "x".into(),
            "true".into(),
            T128.to_string(),
            format!("{T128}-"),
            format!("{T128}-{SPAN}-"),
            format!("{T128}-{SPAN}-true"),
            format!("{T128}-{SPAN}-2"),
            format!("{T128}-{SPAN}-{PARENT}"), // parent without sampling
            format!("{T128}-{SPAN}-1-{PARENT}-1"),
            format!("{T128}-{SPAN}-1-abc"),
            format!("{}-{SPAN}-1", "0".repeat(32)),
            format!("{T128}-{}-1", "0".repeat(16)),
            format!("{}-{SPAN}", &T128[..20]), // neither 16 nor 32 digits
            format!("{T128}-{}", &SPAN[..15]),
            format!("{T128}-{SPAN}-1-{}", &PARENT[..15]),
        ] {
            assert_eq!(parse_single(&v), None, "{v:?} must be rejected");
        }
    }

    #[test]
    fn multi_headers() {
        let h = B3Multi {
            trace_id: Some(T128),
            span_id: Some(SPAN),
            parent_span_id: Some(PARENT),
            sampled: Some("1"),
            flags: None,
        };
        let c = ctx(parse_multi(&h));
        assert_eq!(c.trace_id.to_string(), T128);
        assert_eq!(c.sampling, Some(B3Sampling::Accept));
        assert_eq!(
            c.parent_span_id.map(|p| p.to_string()).as_deref(),
            Some(PARENT)
        );
        // Debug wins over sampled, legacy true/false is read.
        let debug = B3Multi {
            flags: Some("1"),
            sampled: Some("0"),
            ..h
        };
        assert_eq!(ctx(parse_multi(&debug)).sampling, Some(B3Sampling::Debug));
        let legacy = B3Multi {
            sampled: Some("false"),
            ..h
        };
        assert_eq!(ctx(parse_multi(&legacy)).sampling, Some(B3Sampling::Deny));
        let unknown = B3Multi {
            sampled: Some("yes"),
            ..h
        };
        assert_eq!(ctx(parse_multi(&unknown)).sampling, None);
        let empty_parent = B3Multi {
            parent_span_id: Some(""),
            ..h
        };
        assert_eq!(ctx(parse_multi(&empty_parent)).parent_span_id, None);
        let short = B3Multi {
            trace_id: Some(T64),
            ..h
        };
        assert!(ctx(parse_multi(&short)).trace_id.is_64bit());
    }

    #[test]
    fn multi_headers_sampling_only_and_malformed() {
        assert_eq!(parse_multi(&B3Multi::default()), None);
        let only = B3Multi {
            sampled: Some("0"),
            ..Default::default()
        };
        assert_eq!(parse_multi(&only), Some(B3::SamplingOnly(B3Sampling::Deny)));
        let good = B3Multi {
            trace_id: Some(T128),
            span_id: Some(SPAN),
            ..Default::default()
        };
        for bad in [
            B3Multi {
                span_id: None,
                ..good
            },
            B3Multi {
                trace_id: None,
                ..good
            },
            B3Multi {
                trace_id: Some("xyz"),
                ..good
            },
            B3Multi {
                span_id: Some(T128),
                ..good
            },
            B3Multi {
                parent_span_id: Some("nothex"),
                ..good
            },
            B3Multi {
                trace_id: Some("00000000000000000000000000000000"),
                ..good
            },
        ] {
            assert_eq!(parse_multi(&bad), None, "{bad:?} must be rejected");
        }
    }

    #[test]
    fn trace_id_written_in_its_width() {
        let long = TraceId::parse_hex(T128, true, true).unwrap();
        let short = TraceId::parse_hex(T64, true, true).unwrap();
        assert_eq!(trace_hex(long), T128);
        assert_eq!(trace_hex(short), T64);
    }
}
