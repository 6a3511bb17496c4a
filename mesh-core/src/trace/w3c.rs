//! W3C Trace Context (<https://www.w3.org/TR/trace-context/>): the
//! `traceparent` and `tracestate` headers, parsed and formatted.
//!
//! Parsing follows the spec's processing model: version `00` must be
//! exactly 55 characters; a higher version is parsed as far as version 00
//! reaches (the 55 characters must be followed by the end or a `-`) and
//! only the sampled flag is read; version `ff`, upper-case hex and all-zero
//! ids are invalid. `tracestate` is validated against the spec's grammar and
//! dropped whole when invalid (32 members at most, unique keys), since a
//! vendor must not propagate a tracestate it could not parse.
//!
//! Not here: which header wins when several formats are present
//! ([`super::extract`]).

use super::id::{SpanId, TraceId};

/// The `traceparent` header.
pub const TRACEPARENT: &str = "traceparent";
/// The `tracestate` header.
pub const TRACESTATE: &str = "tracestate";

/// Length of a version-00 `traceparent`: `2 + 1 + 32 + 1 + 16 + 1 + 2`.
const TRACEPARENT_LEN: usize = 55;
/// Most list members a valid `tracestate` may have.
const TRACESTATE_MAX_MEMBERS: usize = 32;

/// The fields of a valid `traceparent`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Traceparent {
    /// The trace the remote span belongs to.
    pub trace_id: TraceId,
    /// The remote (parent) span.
    pub parent_id: SpanId,
    /// The `sampled` trace flag.
    pub sampled: bool,
}

/// Parses a `traceparent` value; `None` when it is invalid and must be
/// ignored (the trace restarts).
pub fn parse_traceparent(value: &str) -> Option<Traceparent> {
    // Optional whitespace around a field value is not part of it (RFC 9110).
    let v = value.trim_matches([' ', '\t']);
    if v.len() < TRACEPARENT_LEN || !v.is_ascii() {
        return None;
    }
    let version = u8::from_str_radix(lower_hex(&v[0..2])?, 16).ok()?;
    if version == 0xff {
        return None;
    }
    // Version 00 has exactly four fields; a future version may append
    // more after a dash, which this parser skips.
    if version == 0 && v.len() != TRACEPARENT_LEN {
        return None;
    }
    if v.len() > TRACEPARENT_LEN && v.as_bytes()[TRACEPARENT_LEN] != b'-' {
        return None;
    }
    let b = v.as_bytes();
    if b[2] != b'-' || b[35] != b'-' || b[52] != b'-' {
        return None;
    }
    let trace_id = TraceId::parse_hex(&v[3..35], false, true)?;
    let parent_id = SpanId::parse_hex(&v[36..52], true)?;
    let flags = u8::from_str_radix(lower_hex(&v[53..55])?, 16).ok()?;
    Some(Traceparent {
        trace_id,
        parent_id,
        sampled: flags & 0x01 == 0x01,
    })
}

/// Formats a version-00 `traceparent` for the span `span_id`.
pub fn format_traceparent(trace_id: TraceId, span_id: SpanId, sampled: bool) -> String {
    let mut s = String::with_capacity(55);
    s.push_str("00-");
    super::id::push_hex(&mut s, &trace_id.0);
    s.push('-');
    super::id::push_hex(&mut s, &span_id.0);
    s.push_str(if sampled { "-01" } else { "-00" });
    s
}

/// `s` when it is lower-case hex only.
fn lower_hex(s: &str) -> Option<&str> {
    s.bytes()
        .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
        .then_some(s)
}

/// Validates and normalizes a `tracestate` built from one or more header
/// lines (callers join several lines with `,` first, as RFC 9110 combines
/// repeated fields). Empty members and whitespace around members go;
/// `None` when nothing valid is left or any member is invalid.
pub fn parse_tracestate(value: &str) -> Option<String> {
    let mut out = String::with_capacity(value.len());
    let mut keys: Vec<&str> = Vec::new();
    for member in value.split(',') {
        let member = member.trim_matches([' ', '\t']);
        if member.is_empty() {
            continue;
        }
        let (key, val) = member.split_once('=')?;
        if !valid_key(key) || !valid_value(val) || keys.contains(&key) {
            return None;
        }
        keys.push(key);
        if keys.len() > TRACESTATE_MAX_MEMBERS {
            return None;
        }
        if !out.is_empty() {
            out.push(',');
        }
        out.push_str(member);
    }
    (!out.is_empty()).then_some(out)
}

/// `simple-key` or `tenant-id@system-id`.
fn valid_key(key: &str) -> bool {
    let rest = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit() || b"_-*/".contains(&c);
    match key.split_once('@') {
        None => {
            let b = key.as_bytes();
            !b.is_empty()
                && b.len() <= 256
                && b[0].is_ascii_lowercase()
                && b.iter().all(|&c| rest(c))
        }
        Some((tenant, system)) => {
            let (t, s) = (tenant.as_bytes(), system.as_bytes());
            !t.is_empty()
                && t.len() <= 241
                && (t[0].is_ascii_lowercase() || t[0].is_ascii_digit())
                && t.iter().all(|&c| rest(c))
                && !s.is_empty()
                && s.len() <= 14
                && s[0].is_ascii_lowercase()
                && s.iter().all(|&c| rest(c))
        }
    }
}

/// Up to 256 printable ASCII characters but `,` and `=`, not ending in a
/// space.
fn valid_value(val: &str) -> bool {
    let b = val.as_bytes();
    !b.is_empty()
        && b.len() <= 256
        && b.iter()
            .all(|&c| (0x20..=0x7e).contains(&c) && c != b',' && c != b'=')
        && b[b.len() - 1] != b' '
}

#[cfg(test)]
mod tests {
    use super::*;

    const TP: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

    #[test]
    fn traceparent_round_trip() {
        let p = parse_traceparent(TP).unwrap();
        assert_eq!(p.trace_id.to_string(), "0af7651916cd43dd8448eb211c80319c");
        assert_eq!(p.parent_id.to_string(), "b7ad6b7169203331");
        assert!(p.sampled);
        assert_eq!(format_traceparent(p.trace_id, p.parent_id, p.sampled), TP);
        let unsampled = TP.replace("-01", "-00");
        let p = parse_traceparent(&unsampled).unwrap();
        assert!(!p.sampled);
        assert_eq!(
            format_traceparent(p.trace_id, p.parent_id, false),
            unsampled
        );
    }

    #[test]
    fn only_the_sampled_bit_is_read_from_flags() {
        assert!(
            parse_traceparent(&TP.replace("-01", "-03"))
                .unwrap()
                .sampled
        );
        assert!(
            !parse_traceparent(&TP.replace("-01", "-fe"))
                .unwrap()
                .sampled
        );
        assert!(parse_traceparent(&format!(" {TP}\t")).is_some());
    }

    #[test]
    fn malformed_traceparent_is_rejected() {
        let bad = [
            "",
            "00",
            &TP[..54],
            &format!("{TP}-extra"),            // 00 has no extra fields
            &format!("{TP}0"),                 // nor extra characters
            &TP.replace("00-", "ff-"),         // forbidden version
            &TP.replace("00-0af7", "0g-0af7"), // non-hex version
            &TP.replace("0af7651916cd43dd8448eb211c80319c", &"0".repeat(32)), // zero trace id
            &TP.replace("b7ad6b7169203331", "0000000000000000"), // zero parent id
            &TP.replace("0af7", "0AF7"),       // upper case
            &TP.replace("-01", "-0g"),
            &TP.replace("-b7ad", "_b7ad"),
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-1",
            "00-0af7651916cd43dd8448eb211c8031-9cb7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01é",
        ];
        for v in bad {
            assert_eq!(parse_traceparent(v), None, "{v:?} must be rejected");
        }
    }

    #[test]
    fn future_versions_parse_the_version_00_prefix() {
        let v = TP.replace("00-", "cc-");
        assert!(parse_traceparent(&v).unwrap().sampled);
        let p = parse_traceparent(&format!("{v}-what-the-future-holds")).unwrap();
        assert_eq!(p.parent_id.to_string(), "b7ad6b7169203331");
        // A longer future header must still put a dash after the flags.
        assert_eq!(parse_traceparent(&format!("{v}x")), None);
    }

    #[test]
    fn tracestate_is_validated_and_normalized() {
        assert_eq!(
            parse_tracestate("rojo=00f067aa0ba902b7, ,congo=t61rcWkgMzE,").as_deref(),
            Some("rojo=00f067aa0ba902b7,congo=t61rcWkgMzE")
        );
        assert_eq!(
            parse_tracestate("fw529a3039@dt=FW4;0;0, 1tenant@sys=x").as_deref(),
            Some("fw529a3039@dt=FW4;0;0,1tenant@sys=x")
        );
        assert_eq!(parse_tracestate(""), None);
        assert_eq!(parse_tracestate(" , "), None);
        for bad in [
            "novalue",
            "Upper=1",
            "1digit=1",
            "k=",
            "k=a=b",
            "k=1,k=2",
            "t@toolongsystemid=1",
            "k=\u{7f}",
            "@sys=1",
        ] {
            assert_eq!(parse_tracestate(bad), None, "{bad:?} must be rejected");
        }
        let members: Vec<String> = (0..32).map(|i| format!("k{i}=v")).collect();
        assert!(parse_tracestate(&members.join(",")).is_some());
        let too_many: Vec<String> = (0..33).map(|i| format!("k{i}=v")).collect();
        assert_eq!(parse_tracestate(&too_many.join(",")), None);
    }
}
