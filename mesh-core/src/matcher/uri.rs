//! The parts of a request target every matcher agrees on: where the path
//! ends, how a query parameter is found, and how `%XX` is decoded.

use std::borrow::Cow;

/// Splits `path?query#fragment` into path and query (empty when absent);
/// the fragment is dropped.
#[inline]
pub fn split_query(target: &str) -> (&str, &str) {
    match target.bytes().position(|b| b == b'?' || b == b'#') {
        None => (target, ""),
        Some(i) if target.as_bytes()[i] == b'#' => (&target[..i], ""),
        Some(i) => {
            let rest = &target[i + 1..];
            (&target[..i], rest.split_once('#').map_or(rest, |(q, _)| q))
        }
    }
}

/// The path of a request target: everything before the first `?` or `#`.
#[inline]
pub fn path_only(target: &str) -> &str {
    split_query(target).0
}

/// The raw (still percent-encoded) value of query parameter `name`, first
/// occurrence; a parameter without `=` has the empty value.
pub fn query_param_raw<'q>(query: &'q str, name: &str) -> Option<&'q str> {
    query
        .split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| kv.split_once('=').unwrap_or((kv, "")))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// The value of query parameter `name` (first occurrence), percent-decoded,
/// as Envoy's route query matchers see it.
pub fn query_param<'q>(query: &'q str, name: &str) -> Option<Cow<'q, str>> {
    query_param_raw(query, name).map(percent_decode)
}

/// The value of one hex digit.
#[inline]
pub fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// The byte `%XX` at the start of `bytes` stands for, if it is one.
#[inline]
pub fn percent_byte(bytes: &[u8]) -> Option<u8> {
    match bytes {
        [b'%', h, l, ..] => Some(hex_value(*h)? * 16 + hex_value(*l)?),
        _ => None,
    }
}

/// Decodes every `%XX`; a `%` not followed by two hex digits stays as it
/// is, and bytes that do not form UTF-8 become U+FFFD.
pub fn percent_decode(s: &str) -> Cow<'_, str> {
    if !s.contains('%') {
        return Cow::Borrowed(s);
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if let Some(c) = percent_byte(&b[i..]) {
            out.push(c);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    Cow::Owned(String::from_utf8_lossy(&out).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split() {
        assert_eq!(split_query("/a?b=1#f"), ("/a", "b=1"));
        assert_eq!(split_query("/a#f?x"), ("/a", ""));
        assert_eq!(split_query("/a"), ("/a", ""));
        assert_eq!(path_only("/a?x"), "/a");
    }

    #[test]
    fn params() {
        assert_eq!(query_param("a=1&b=x%20y", "b").as_deref(), Some("x y"));
        assert_eq!(query_param("a&b=2", "a").as_deref(), Some(""));
        assert_eq!(query_param("a=1&a=2", "a").as_deref(), Some("1"));
        assert_eq!(query_param("A=1", "a"), None);
        assert_eq!(query_param_raw("b=x%20y", "b"), Some("x%20y"));
    }

    #[test]
    fn decode() {
        assert_eq!(percent_decode("%41%2f%zz%4"), "A/%zz%4");
        assert_eq!(percent_decode("%41"), "A");
        assert_eq!(percent_decode("%ff"), "\u{fffd}");
    }
}
