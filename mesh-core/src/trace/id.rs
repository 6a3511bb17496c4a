//! Trace and span identifiers: fixed-size byte arrays, lowercase hex on the
//! wire, built from randomness the caller supplies (mesh-core owns no
//! generator). Not here: which header carries them ([`super::w3c`],
//! [`super::b3`]).

use std::fmt;

/// A 128-bit trace id. All zeros is invalid in every format we speak, so
/// the constructors never produce it.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TraceId(pub [u8; 16]);

/// A 64-bit span id. All zeros is invalid, as for [`TraceId`].
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SpanId(pub [u8; 8]);

impl TraceId {
    /// A new trace id from a random `u128`; zero (one draw in 2^128) maps
    /// to 1 so the id is always valid.
    pub fn from_random(random: u128) -> Self {
        Self(random.max(1).to_be_bytes())
    }

    /// The id as a big-endian integer.
    pub fn to_u128(self) -> u128 {
        u128::from_be_bytes(self.0)
    }

    /// True for the invalid all-zero id.
    pub fn is_zero(self) -> bool {
        self.0 == [0; 16]
    }

    /// True when the upper 64 bits are zero: a B3 64-bit trace id padded
    /// to 128 bits, which B3 writes back in its 16-digit form.
    pub fn is_64bit(self) -> bool {
        self.0[..8] == [0; 8]
    }

    /// Parses 32 hex digits (or 16, left-padded with zeros, when
    /// `allow_64bit`); `None` for any other length, a non-hex digit or
    /// zero. `lowercase_only` follows W3C's ABNF; B3 readers are lenient.
    pub(crate) fn parse_hex(s: &str, allow_64bit: bool, lowercase_only: bool) -> Option<Self> {
        let mut out = [0u8; 16];
        match s.len() {
            32 => decode_hex(s, &mut out, lowercase_only)?,
            16 if allow_64bit => decode_hex(s, &mut out[8..], lowercase_only)?,
            _ => return None,
        }
        let id = Self(out);
        (!id.is_zero()).then_some(id)
    }
}

impl SpanId {
    /// A new span id from a random `u64`; zero maps to 1.
    pub fn from_random(random: u64) -> Self {
        Self(random.max(1).to_be_bytes())
    }

    /// The id as a big-endian integer.
    pub fn to_u64(self) -> u64 {
        u64::from_be_bytes(self.0)
    }

    /// True for the invalid all-zero id.
    pub fn is_zero(self) -> bool {
        self.0 == [0; 8]
    }

    /// Parses exactly 16 hex digits; `None` when malformed or zero.
    pub(crate) fn parse_hex(s: &str, lowercase_only: bool) -> Option<Self> {
        if s.len() != 16 {
            return None;
        }
        let mut out = [0u8; 8];
        decode_hex(s, &mut out, lowercase_only)?;
        let id = Self(out);
        (!id.is_zero()).then_some(id)
    }
}

/// Decodes `s` (exactly `2 * out.len()` digits) into `out`.
fn decode_hex(s: &str, out: &mut [u8], lowercase_only: bool) -> Option<()> {
    let b = s.as_bytes();
    if b.len() != out.len() * 2 {
        return None;
    }
    for (i, o) in out.iter_mut().enumerate() {
        *o = (nibble(b[2 * i], lowercase_only)? << 4) | nibble(b[2 * i + 1], lowercase_only)?;
    }
    Some(())
}

fn nibble(c: u8, lowercase_only: bool) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' if !lowercase_only => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Appends `bytes` as lowercase hex. Ids are written into headers on
/// every traced request, and the formatter's per-byte `{:02x}` costs
/// several times this table lookup.
pub(crate) fn push_hex(out: &mut String, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
}

fn write_hex(f: &mut fmt::Formatter<'_>, bytes: &[u8]) -> fmt::Result {
    let mut s = String::with_capacity(bytes.len() * 2);
    push_hex(&mut s, bytes);
    f.write_str(&s)
}

/// Lowercase hex, 32 digits.
impl fmt::Display for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_hex(f, &self.0)
    }
}

impl fmt::Debug for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TraceId({self})")
    }
}

/// Lowercase hex, 16 digits.
impl fmt::Display for SpanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_hex(f, &self.0)
    }
}

impl fmt::Debug for SpanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SpanId({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_from_randomness_are_never_zero() {
        assert_eq!(TraceId::from_random(0).to_u128(), 1);
        assert_eq!(SpanId::from_random(0).to_u64(), 1);
        assert_eq!(TraceId::from_random(u128::MAX).to_u128(), u128::MAX);
        assert_eq!(SpanId::from_random(42).to_u64(), 42);
    }

    #[test]
    fn hex_round_trip_and_padding() {
        let t = TraceId::from_random(0x0af7651916cd43dd8448eb211c80319c);
        assert_eq!(t.to_string(), "0af7651916cd43dd8448eb211c80319c");
        assert_eq!(TraceId::parse_hex(&t.to_string(), false, true), Some(t));
        let short = TraceId::parse_hex("8448eb211c80319c", true, true).unwrap();
        assert_eq!(short.to_string(), "00000000000000008448eb211c80319c");
        assert!(short.is_64bit());
        assert_eq!(TraceId::parse_hex("8448eb211c80319c", false, true), None);
        let s = SpanId::from_random(0xb7ad6b7169203331);
        assert_eq!(s.to_string(), "b7ad6b7169203331");
        assert_eq!(SpanId::parse_hex("b7ad6b7169203331", true), Some(s));
    }

    #[test]
    fn malformed_hex_is_rejected() {
        assert_eq!(SpanId::parse_hex("0000000000000000", true), None);
        assert_eq!(SpanId::parse_hex("b7ad6b716920333", true), None);
        assert_eq!(SpanId::parse_hex("b7ad6b716920333g", true), None);
        assert_eq!(SpanId::parse_hex("B7AD6B7169203331", true), None);
        assert!(SpanId::parse_hex("B7AD6B7169203331", false).is_some());
        assert_eq!(TraceId::parse_hex(&"0".repeat(32), true, true), None);
        assert_eq!(TraceId::parse_hex("+7ad6b7169203331", true, false), None);
    }
}
