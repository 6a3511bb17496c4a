//! `x-request-id`: kept when the request has one, otherwise a new random
//! UUID (version 4, RFC 9562) made from randomness the caller supplies, as
//! Envoy's UUID request-id extension does for requests that arrive
//! without one. Also the integer Envoy samples on when Istio's
//! `useRequestIdForTraceSampling` is on.
//!
//! Not here: Envoy's packing of the trace reason into the UUID's version
//! digit (`pack_trace_reason`); the sampling decision lives in
//! [`super::sampling`] and travels in the trace headers.

use std::fmt::Write as _;

/// The `x-request-id` header.
pub const X_REQUEST_ID: &str = "x-request-id";

/// A version-4 UUID in its 36-character form, from 128 random bits (the
/// six version and variant bits are overwritten).
pub fn uuid_v4(random: u128) -> String {
    let v = (random & !(0xf << 76) & !(0b11 << 62)) | (0x4 << 76) | (0b10 << 62);
    let mut hex = String::with_capacity(32);
    super::id::push_hex(&mut hex, &v.to_be_bytes());
    let mut s = String::with_capacity(36);
    for (i, range) in [0..8, 8..12, 12..16, 16..20, 20..32]
        .into_iter()
        .enumerate()
    {
        if i > 0 {
            s.push('-');
        }
        let _ = s.write_str(&hex[range]);
    }
    s
}

/// The `x-request-id` to set: `None` keeps the request's own (any
/// non-empty value, as Envoy keeps it), `Some` is a new one to write.
pub fn ensure_request_id(existing: Option<&str>, random: u128) -> Option<String> {
    match existing.map(|v| v.trim_matches([' ', '\t'])) {
        Some(v) if !v.is_empty() => None,
        _ => Some(uuid_v4(random)),
    }
}

/// The number Envoy's UUID extension derives from a request id to sample
/// on (its last eight hex digits, random in v4 and v7 UUIDs), so every hop
/// that sees the same id makes the same decision. `None` when the id is
/// not a UUID-length string ending in hex; callers then use fresh
/// randomness.
pub fn request_id_sampling_value(request_id: &str) -> Option<u64> {
    let tail = request_id.get(28..36).filter(|_| request_id.len() == 36)?;
    u64::from_str_radix(tail, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuid_v4_shape() {
        let u = uuid_v4(u128::MAX);
        assert_eq!(u, "ffffffff-ffff-4fff-bfff-ffffffffffff");
        let u = uuid_v4(0);
        assert_eq!(u, "00000000-0000-4000-8000-000000000000");
        let u = uuid_v4(0x0123_4567_89ab_cdef_0123_4567_89ab_cdef);
        assert_eq!(u, "01234567-89ab-4def-8123-456789abcdef");
        assert_eq!(u.len(), 36);
    }

    #[test]
    fn existing_request_id_is_kept() {
        assert_eq!(ensure_request_id(Some("abc"), 7), None);
        assert_eq!(
            ensure_request_id(None, 0).as_deref(),
            Some("00000000-0000-4000-8000-000000000000")
        );
        assert!(ensure_request_id(Some(" "), 1).is_some());
    }

    #[test]
    fn sampling_value_is_the_uuid_tail() {
        let u = uuid_v4(0x0123_4567_89ab_cdef_0123_4567_89ab_cdef);
        assert_eq!(request_id_sampling_value(&u), Some(0x89ab_cdef));
        assert_eq!(request_id_sampling_value("short"), None);
        assert_eq!(request_id_sampling_value(&"z".repeat(36)), None);
    }
}
