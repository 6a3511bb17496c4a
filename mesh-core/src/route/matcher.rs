//! Compiled request matchers and the request view they run against.
//!
//! Matching follows Envoy as Istio configures it: string matches are exact,
//! raw string prefix (`/v2` matches `/v2example`) or RE2 regex matched
//! against the whole value; the path is matched without its query string;
//! `ignoreUriCase` makes uri exact and prefix matches ASCII
//! case-insensitive (regex stays case-sensitive, as Istio documents);
//! header names are case-insensitive. The hot path does not allocate except
//! to percent-decode a query parameter value that contains `%`.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};

use regex::Regex;
use serde::{Serialize, Serializer};

/// The request attributes route matching looks at.
#[derive(Clone, Copy)]
pub struct RequestInfo<'a> {
    /// HTTP method (`GET`).
    pub method: &'a str,
    /// Path with the query string (`/api/v1?x=1`).
    pub path: &'a str,
    /// Authority or Host header, as sent.
    pub authority: &'a str,
    /// `http` or `https`.
    pub scheme: &'a str,
    /// Listener (destination) port, when known.
    pub port: Option<u16>,
    /// Request headers.
    pub headers: &'a dyn HeaderSource,
}

impl std::fmt::Debug for RequestInfo<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestInfo")
            .field("method", &self.method)
            .field("path", &self.path)
            .field("authority", &self.authority)
            .field("scheme", &self.scheme)
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

impl<'a> RequestInfo<'a> {
    /// A GET request for `path` with no headers, for tests and simulators.
    pub fn get(path: &'a str) -> Self {
        Self {
            method: "GET",
            path,
            authority: "",
            scheme: "http",
            port: None,
            headers: &NO_HEADERS,
        }
    }

    /// The path without its query string.
    pub fn path_only(&self) -> &'a str {
        split_query(self.path).0
    }

    /// The value of a header (lowercase name), pseudo-headers included.
    #[inline]
    pub fn header(&self, name: &str) -> Option<&'a str> {
        if !name.starts_with(':') && name != "host" {
            return self.headers.header(name);
        }
        match name {
            ":authority" | "host" if !self.authority.is_empty() => Some(self.authority),
            ":method" => Some(self.method),
            ":path" => Some(self.path),
            ":scheme" => Some(self.scheme),
            _ => self.headers.header(name),
        }
    }
}

/// Request headers as the matcher reads them. Implementations compare names
/// case-insensitively and return the first value of a repeated header.
pub trait HeaderSource {
    /// The value of header `name` (given in lowercase).
    fn header(&self, name: &str) -> Option<&str>;
}

/// An empty header set.
pub const NO_HEADERS: [(&str, &str); 0] = [];

impl<const N: usize> HeaderSource for [(&str, &str); N] {
    fn header(&self, name: &str) -> Option<&str> {
        self.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| *v)
    }
}

impl HeaderSource for Vec<(&str, &str)> {
    fn header(&self, name: &str) -> Option<&str> {
        self.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| *v)
    }
}

impl HeaderSource for Vec<(String, String)> {
    fn header(&self, name: &str) -> Option<&str> {
        self.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

impl HeaderSource for BTreeMap<String, String> {
    fn header(&self, name: &str) -> Option<&str> {
        self.get(name).map(String::as_str).or_else(|| {
            self.iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
        })
    }
}

impl HeaderSource for HashMap<String, String> {
    fn header(&self, name: &str) -> Option<&str> {
        self.get(name).map(String::as_str).or_else(|| {
            self.iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
        })
    }
}

/// A regex that must match the whole value (Envoy's `safe_regex`).
#[derive(Debug, Clone)]
pub struct FullRegex {
    source: String,
    re: Regex,
}

impl FullRegex {
    /// Compiles `pattern` anchored at both ends.
    pub fn new(pattern: &str) -> Result<Self, regex::Error> {
        Ok(Self {
            source: pattern.to_string(),
            re: Regex::new(&format!("^(?:{pattern})$"))?,
        })
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// True when the whole of `s` matches.
    pub fn is_match(&self, s: &str) -> bool {
        self.re.is_match(s)
    }
}

impl PartialEq for FullRegex {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

impl Serialize for FullRegex {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.source)
    }
}

/// A compiled string match.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StrMatcher {
    /// Equal.
    Exact(String),
    /// Starts with (raw string prefix).
    Prefix(String),
    /// Whole-value RE2 regex.
    Regex(FullRegex),
    /// Any value, as long as it is present.
    Present,
}

impl StrMatcher {
    /// Compiles a config string match. `{}` becomes [`StrMatcher::Present`].
    pub fn compile(m: &crate::config::common::StringMatch) -> Result<Self, regex::Error> {
        use crate::config::common::StringMatchKind as K;
        Ok(match m.kind() {
            K::Exact(s) => StrMatcher::Exact(s.to_string()),
            K::Prefix(s) => StrMatcher::Prefix(s.to_string()),
            K::Regex(s) => StrMatcher::Regex(FullRegex::new(s)?),
            K::Present => StrMatcher::Present,
        })
    }

    /// True when `value` matches.
    #[inline]
    pub fn matches(&self, value: &str) -> bool {
        match self {
            StrMatcher::Exact(e) => value == e,
            StrMatcher::Prefix(p) => value.starts_with(p.as_str()),
            StrMatcher::Regex(r) => r.is_match(value),
            StrMatcher::Present => true,
        }
    }

    /// Like [`StrMatcher::matches`] but exact and prefix compare ASCII
    /// case-insensitively (regex unchanged).
    #[inline]
    pub fn matches_ignore_case(&self, value: &str) -> bool {
        match self {
            StrMatcher::Exact(e) => value.eq_ignore_ascii_case(e),
            StrMatcher::Prefix(p) => value
                .as_bytes()
                .get(..p.len())
                .is_some_and(|head| head.eq_ignore_ascii_case(p.as_bytes())),
            other => other.matches(value),
        }
    }
}

/// The path match of a block.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UriMatcher {
    /// The match.
    pub matcher: StrMatcher,
    /// `ignoreUriCase`.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub ignore_case: bool,
}

impl UriMatcher {
    /// True when the path (without query) matches.
    #[inline]
    pub fn matches(&self, path: &str) -> bool {
        if self.ignore_case {
            self.matcher.matches_ignore_case(path)
        } else {
            self.matcher.matches(path)
        }
    }
}

/// A header condition. With `invert` (from `withoutHeaders`) the result is
/// inverted as Envoy's `invert_match` does: a missing header satisfies an
/// inverted match only when the match is "present" (`{}`); a missing header
/// never satisfies an inverted exact/prefix/regex match.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HeaderMatcher {
    /// Lowercase header name.
    pub name: String,
    /// The value match.
    pub matcher: StrMatcher,
    /// From `withoutHeaders`.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub invert: bool,
}

impl HeaderMatcher {
    /// Evaluates the condition against a request.
    #[inline]
    pub fn matches(&self, req: &RequestInfo<'_>) -> bool {
        match req.header(&self.name) {
            None => self.invert && self.matcher == StrMatcher::Present,
            Some(v) => self.matcher.matches(v) != self.invert,
        }
    }
}

/// One compiled match block: every condition set must hold.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct MatchBlock {
    /// Name of the block.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Path condition.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uri: Option<UriMatcher>,
    /// Scheme condition.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scheme: Option<StrMatcher>,
    /// Method condition.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub method: Option<StrMatcher>,
    /// Authority condition.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub authority: Option<StrMatcher>,
    /// Header conditions (`headers` and `withoutHeaders`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<HeaderMatcher>,
    /// Query parameter conditions.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub query_params: Vec<(String, StrMatcher)>,
    /// Listener port condition.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
}

impl MatchBlock {
    /// True when the request satisfies every condition of the block.
    #[inline]
    pub fn matches(&self, req: &RequestInfo<'_>) -> bool {
        let (path, query) = split_query(req.path);
        self.matches_split(req, path, query)
    }

    /// [`MatchBlock::matches`] with the path already split from its query
    /// (the table splits once per request, not once per block).
    #[inline]
    pub fn matches_split(&self, req: &RequestInfo<'_>, path: &str, query: &str) -> bool {
        if let Some(u) = &self.uri {
            if !u.matches(path) {
                return false;
            }
        }
        if let Some(m) = &self.method {
            if !m.matches(req.method) {
                return false;
            }
        }
        if let Some(m) = &self.authority {
            if !m.matches(req.authority) {
                return false;
            }
        }
        if let Some(m) = &self.scheme {
            if !m.matches(req.scheme) {
                return false;
            }
        }
        if let (Some(want), Some(got)) = (self.port, req.port) {
            if want != got {
                return false;
            }
        }
        if !self.headers.iter().all(|h| h.matches(req)) {
            return false;
        }
        self.query_params
            .iter()
            .all(|(name, m)| query_param(query, name).is_some_and(|v| m.matches(&v)))
    }

    /// True when the block has no condition at all (matches every request).
    pub fn is_catch_all(&self) -> bool {
        self.uri.is_none()
            && self.scheme.is_none()
            && self.method.is_none()
            && self.authority.is_none()
            && self.headers.is_empty()
            && self.query_params.is_empty()
            && self.port.is_none()
    }
}

/// Splits `path?query` into path and query (empty when absent). A fragment
/// is dropped.
#[inline]
pub fn split_query(path: &str) -> (&str, &str) {
    match path.bytes().position(|b| b == b'?' || b == b'#') {
        None => (path, ""),
        Some(i) if path.as_bytes()[i] == b'#' => (&path[..i], ""),
        Some(i) => {
            let rest = &path[i + 1..];
            (&path[..i], rest.split_once('#').map_or(rest, |(q, _)| q))
        }
    }
}

/// The value of query parameter `name` (first occurrence), percent-decoded.
/// A parameter without `=` has the empty value.
pub fn query_param<'q>(query: &'q str, name: &str) -> Option<Cow<'q, str>> {
    query
        .split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| kv.split_once('=').unwrap_or((kv, "")))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| percent_decode(v))
}

fn percent_decode(s: &str) -> Cow<'_, str> {
    if !s.contains('%') {
        return Cow::Borrowed(s);
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = |c: u8| (c as char).to_digit(16);
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    Cow::Owned(String::from_utf8_lossy(&out).into_owned())
}
