//! Request path normalization before authorization, as Istio configures
//! Envoy for each MeshConfig `pathNormalization` mode.
//!
//! The order is Envoy's (`maybeNormalizePath`): the fragment is dropped,
//! then (DECODE_AND_MERGE_SLASHES only) `%2F`/`%5C` are decoded, then the
//! RFC 3986 canonicalization of `normalize_path`, then slashes are merged.
//! The query is never normalized and never part of the matched path.
//!
//! `normalize_path` (BASE) does, in one pass with no double decoding:
//! - decode percent-encoded unreserved characters (`A-Z a-z 0-9 - . _ ~`),
//!   leaving other escapes (`%2F`, `%5C`, `%25`, ...) untouched;
//! - turn `\` into `/`;
//! - percent-encode characters that may not appear raw in a path (controls,
//!   space, `"`, `<`, `>`, `` ` ``, `{`, `}`, DEL and non-ASCII bytes);
//! - resolve `.` and `..` segments (never above the root);
//! - keep `//`.
//!
//! A `%00` anywhere in the path is rejected with 400 by Envoy in every mode;
//! so is a raw NUL (Envoy's codecs refuse it) and a path that does not
//! start with `/`.
//!
//! One rule is ours: an escape is not decoded when the character it gives
//! would complete a new escape with what precedes it (`%%32e` would become
//! `%2e`). Normalizing twice must give what normalizing once gave, or a
//! backend that normalizes the forwarded path again (`%2e` to `.`) would
//! serve a path the policy never saw.
//!
//! Matching is case-sensitive in every mode: `/ADMIN` is not `/admin`.

use std::borrow::Cow;

/// MeshConfig `pathNormalization.normalization`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Normalization {
    /// No normalization: policies see the path as received (minus query and
    /// fragment). Bypassable with `/./`, `/../`, `//`, `%2F` and friends.
    None,
    /// RFC 3986 normalization plus backslash to slash (Istio's default).
    #[default]
    Base,
    /// BASE, then runs of `/` merged into one.
    MergeSlashes,
    /// `%2F`/`%5C` decoded first, then BASE, then slashes merged.
    DecodeAndMergeSlashes,
}

impl Normalization {
    /// The MeshConfig spelling (`NONE`, `BASE`, `MERGE_SLASHES`, `DECODE_AND_MERGE_SLASHES`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "NONE",
            Self::Base => "BASE",
            Self::MergeSlashes => "MERGE_SLASHES",
            Self::DecodeAndMergeSlashes => "DECODE_AND_MERGE_SLASHES",
        }
    }

    /// Every mode, weakest first.
    pub const ALL: [Normalization; 4] = [
        Self::None,
        Self::Base,
        Self::MergeSlashes,
        Self::DecodeAndMergeSlashes,
    ];
}

/// A path Envoy would reject with 400 before authorization runs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// `%00` (an encoded NUL) or a raw NUL in the path.
    #[error(
        "the path contains a NUL (%00 or raw); Envoy rejects it with 400 before authorization"
    )]
    EncodedNul,
    /// The path is empty or does not start with `/`.
    #[error(
        "the path {0:?} does not start with '/'; Envoy rejects it with 400 before authorization"
    )]
    NotAbsolute(String),
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn must_escape(b: u8) -> bool {
    b <= 0x20 || b >= 0x7f || matches!(b, b'"' | b'<' | b'>' | b'`' | b'{' | b'}')
}

/// True when pushing `c` after `buf` would form a percent-escape that was
/// not there before (`%` + `2` + decoded `e`).
fn completes_escape(buf: &[u8], c: u8) -> bool {
    if !c.is_ascii_hexdigit() {
        return false;
    }
    match buf {
        [.., b'%'] => true,
        [.., b'%', h] => h.is_ascii_hexdigit(),
        _ => false,
    }
}

/// Normalizes the path of a raw `:path` (query and fragment removed) the way
/// Envoy does under `mode`. Returns the input slice when nothing changes.
pub fn normalize(raw: &str, mode: Normalization) -> Result<Cow<'_, str>, PathError> {
    let path = crate::matcher::uri::path_only(raw);
    if !path.starts_with('/') {
        return Err(PathError::NotAbsolute(path.to_string()));
    }
    let bytes = path.as_bytes();
    let merge = matches!(
        mode,
        Normalization::MergeSlashes | Normalization::DecodeAndMergeSlashes
    );
    // Fast path: nothing any mode would touch.
    let mut needs_work = false;
    for (i, &b) in bytes.iter().enumerate() {
        let next = bytes.get(i + 1).copied();
        if b == b'%' {
            if bytes.get(i + 1..i + 3) == Some(b"00") {
                return Err(PathError::EncodedNul);
            }
            needs_work = true;
        } else if b == 0 {
            return Err(PathError::EncodedNul);
        } else if b == b'\\'
            || must_escape(b)
            || (b == b'/' && next == Some(b'.'))
            || (merge && b == b'/' && next == Some(b'/'))
        {
            needs_work = true;
        }
    }
    if !needs_work || mode == Normalization::None {
        return Ok(Cow::Borrowed(path));
    }

    // Pass 1: escapes, backslashes.
    let decode_slashes = mode == Normalization::DecodeAndMergeSlashes;
    let mut buf: Vec<u8> = Vec::with_capacity(bytes.len() + 8);
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'%' {
            if let Some(c) = crate::matcher::uri::percent_byte(&bytes[i..]) {
                if decode_slashes && (c == b'/' || c == b'\\') {
                    buf.push(b'/');
                } else if is_unreserved(c) && !completes_escape(&buf, c) {
                    buf.push(c);
                } else {
                    buf.extend_from_slice(&bytes[i..i + 3]);
                }
                i += 3;
                continue;
            }
            buf.push(b'%');
        } else if b == b'\\' {
            buf.push(b'/');
        } else if must_escape(b) {
            const HEX: &[u8; 16] = b"0123456789ABCDEF";
            buf.extend_from_slice(&[b'%', HEX[(b >> 4) as usize], HEX[(b & 15) as usize]]);
        } else {
            buf.push(b);
        }
        i += 1;
    }

    // Pass 2: dot segments (RFC 3986 5.2.4), never above the root.
    let parts: Vec<&[u8]> = buf[1..].split(|&b| b == b'/').collect();
    let last = parts.len() - 1;
    let mut segs: Vec<&[u8]> = Vec::with_capacity(parts.len());
    for (n, seg) in parts.into_iter().enumerate() {
        match seg {
            b"." => {
                if n == last {
                    segs.push(b"");
                }
            }
            b".." => {
                segs.pop();
                if n == last {
                    segs.push(b"");
                }
            }
            s => segs.push(s),
        }
    }

    // Pass 3: join, merging runs of slashes if asked. Every byte is ASCII
    // after pass 1, so pushing bytes as chars is exact.
    let mut out = String::with_capacity(buf.len());
    out.push('/');
    for (n, seg) in segs.iter().enumerate() {
        if n > 0 {
            out.push('/');
        }
        for &b in seg.iter() {
            out.push(b as char);
        }
    }
    if merge {
        let mut merged = String::with_capacity(out.len());
        for c in out.chars() {
            if !(c == '/' && merged.ends_with('/')) {
                merged.push(c);
            }
        }
        out = merged;
    }
    Ok(Cow::Owned(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn n(raw: &str, mode: Normalization) -> String {
        match normalize(raw, mode) {
            Ok(p) => p.into_owned(),
            Err(e) => format!("ERR {e}"),
        }
    }

    #[test]
    fn base_examples_from_istio_docs() {
        let b = Normalization::Base;
        assert_eq!(n("/a/../b", b), "/b");
        assert_eq!(n("/some%2fdata/%61%62%63", b), "/some%2fdata/abc");
        assert_eq!(n("/some\\data", b), "/some/data");
        assert_eq!(n("/public/./data/abc/../xyz", b), "/public/data/xyz");
        assert_eq!(n("/some//data///abc", b), "/some//data///abc");
        assert_eq!(n("/foo?v=1", b), "/foo");
        assert_eq!(n("/%2d%2E%5f%7e%30%41%7A", b), "/-._~0Az");
        assert_eq!(n("/a%20b", b), "/a%20b");
        assert_eq!(n("/a b", b), "/a%20b");
        assert_eq!(n("/caf\u{e9}", b), "/caf%C3%A9");
        assert_eq!(n("/%zz%4", b), "/%zz%4");
        // No double decoding.
        assert_eq!(n("/%252e%252e/x", b), "/%252e%252e/x");
        // Encoded dots are dot segments.
        assert_eq!(n("/a/%2e%2E/b", b), "/b");
        assert_eq!(n("/a/.%2e/b", b), "/b");
    }

    #[test]
    fn dot_segments_at_edges() {
        let b = Normalization::Base;
        assert_eq!(n("/..", b), "/");
        assert_eq!(n("/../../x", b), "/x");
        assert_eq!(n("/a/b/..", b), "/a/");
        assert_eq!(n("/a/.", b), "/a/");
        assert_eq!(n("/a/..b/c", b), "/a/..b/c");
        assert_eq!(n("/", b), "/");
        assert_eq!(n("/a//../b", b), "/a/b");
    }

    #[test]
    fn modes() {
        let raw = "/a//b/%2F..%5c/c\\d?x=/../#f";
        assert_eq!(n(raw, Normalization::None), "/a//b/%2F..%5c/c\\d");
        assert_eq!(n(raw, Normalization::Base), "/a//b/%2F..%5c/c/d");
        assert_eq!(n(raw, Normalization::MergeSlashes), "/a/b/%2F..%5c/c/d");
        // %2F and %5C decode to slashes, then `..` removes `b`... but the
        // empty segment between the two decoded slashes is what `..` pops.
        assert_eq!(n(raw, Normalization::DecodeAndMergeSlashes), "/a/b/c/d");
        assert_eq!(n("/x%2fy", Normalization::DecodeAndMergeSlashes), "/x/y");
        assert_eq!(n("/x%5Cy", Normalization::DecodeAndMergeSlashes), "/x/y");
        assert_eq!(
            n("/a/%2F../b", Normalization::DecodeAndMergeSlashes),
            "/a/b"
        );
        assert_eq!(n("//a///b/", Normalization::MergeSlashes), "/a/b/");
    }

    #[test]
    fn rejections() {
        for mode in Normalization::ALL {
            assert!(matches!(
                normalize("/a%00b", mode),
                Err(PathError::EncodedNul)
            ));
            assert!(matches!(
                normalize("a/b", mode),
                Err(PathError::NotAbsolute(_))
            ));
            assert!(matches!(
                normalize("", mode),
                Err(PathError::NotAbsolute(_))
            ));
            assert!(matches!(
                normalize("?x", mode),
                Err(PathError::NotAbsolute(_))
            ));
        }
    }

    /// Found by the `path` fuzz target: decoding must not assemble a new
    /// escape that a second normalization (the backend's) would decode.
    #[test]
    fn decoded_characters_never_complete_an_escape() {
        for mode in [Normalization::Base, Normalization::DecodeAndMergeSlashes] {
            assert_eq!(n("/%%32e/admin", mode), "/%%32e/admin");
            assert_eq!(n("/%2%65/admin", mode), "/%2%65/admin");
            assert_eq!(n("/%%32%65", mode), "/%%32e");
            // Escapes that complete nothing still decode.
            assert_eq!(n("/%41%2e%2e/x", mode), "/A../x");
        }
        for mode in Normalization::ALL {
            assert_eq!(
                normalize("/a\0b", mode),
                Err(PathError::EncodedNul),
                "a raw NUL is refused like %00"
            );
        }
    }

    #[test]
    fn borrowed_when_clean() {
        assert!(matches!(
            normalize("/api/v1/items?x=1", Normalization::DecodeAndMergeSlashes),
            Ok(Cow::Borrowed("/api/v1/items"))
        ));
    }

    fn path_strategy() -> impl Strategy<Value = String> {
        let piece = prop_oneof![
            Just("/".to_string()),
            Just("//".to_string()),
            Just(".".to_string()),
            Just("..".to_string()),
            Just("/./".to_string()),
            Just("/../".to_string()),
            Just("\\".to_string()),
            Just("%2F".to_string()),
            Just("%2f".to_string()),
            Just("%5C".to_string()),
            Just("%2e".to_string()),
            Just("%25".to_string()),
            Just("%41".to_string()),
            Just("%".to_string()),
            Just("%32".to_string()),
            Just("%65".to_string()),
            Just("2".to_string()),
            Just("\u{0}".to_string()),
            Just(" ".to_string()),
            Just("é".to_string()),
            "[a-z]{1,3}",
        ];
        proptest::collection::vec(piece, 0..12).prop_map(|v| format!("/{}", v.concat()))
    }

    proptest! {
        #[test]
        fn idempotent_and_no_dot_segments(p in path_strategy()) {
            for mode in [Normalization::Base, Normalization::MergeSlashes, Normalization::DecodeAndMergeSlashes] {
                let once = normalize(&p, mode).map(|c| c.into_owned());
                let Ok(once) = once else { continue };
                let twice = normalize(&once, mode).map(|c| c.into_owned());
                prop_assert_eq!(Ok(once.clone()), twice, "mode {:?}", mode);
                prop_assert!(once.starts_with('/'));
                prop_assert!(once.split('/').all(|s| s != ".." && s != "."), "{} -> {}", p, once);
                prop_assert!(!once.contains('\\'));
                prop_assert!(once.is_ascii());
                if mode != Normalization::Base {
                    prop_assert!(!once.contains("//"), "{} -> {}", p, once);
                }
                if mode == Normalization::DecodeAndMergeSlashes {
                    let lower = once.to_ascii_lowercase();
                    prop_assert!(!lower.contains("%2f") && !lower.contains("%5c"), "{} -> {}", p, once);
                }
            }
        }
    }
}
