//! Compiled request matchers and the request view they run against.
//!
//! Matching follows Envoy as Istio configures it, through the shared
//! [`crate::matcher`] types: string matches are exact, raw string prefix
//! (`/v2` matches `/v2example`) or RE2 regex matched against the whole
//! value; the path is matched without its query string; `ignoreUriCase`
//! makes uri exact and prefix matches ASCII case-insensitive (regex stays
//! case-sensitive, as Istio documents); method, authority and scheme are
//! header matches on the pseudo-headers, so an absent authority matches
//! nothing; header names are case-insensitive and a repeated header reads
//! as its values joined with `,`. The hot path does not allocate except to
//! percent-decode a query parameter value that contains `%` or to join a
//! repeated header.

use std::borrow::Cow;

use serde::Serialize;

pub use crate::matcher::uri::{query_param, split_query};
pub use crate::matcher::{
    FullRegex, HeaderMatcher, HeaderSource, StrMatcher, StringMatcher, NO_HEADERS,
};

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

    /// The value of a header (lowercase name), pseudo-headers included; an
    /// empty authority reads as absent.
    #[inline]
    pub fn header(&self, name: &str) -> Option<Cow<'a, str>> {
        if !name.starts_with(':') && name != "host" {
            return self.headers.header(name);
        }
        match name {
            ":authority" | "host" if !self.authority.is_empty() => {
                Some(Cow::Borrowed(self.authority))
            }
            ":method" => Some(Cow::Borrowed(self.method)),
            ":path" => Some(Cow::Borrowed(self.path)),
            ":scheme" => Some(Cow::Borrowed(self.scheme)),
            _ => self.headers.header(name),
        }
    }
}

/// A pseudo-header condition: like a header match, nothing matches an
/// empty (absent) value.
#[inline]
fn pseudo(m: &StringMatcher, value: &str) -> bool {
    !value.is_empty() && m.matches(value)
}

/// One compiled match block: every condition set must hold.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct MatchBlock {
    /// Name of the block.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Path condition (`ignore_case` from `ignoreUriCase`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uri: Option<StringMatcher>,
    /// Scheme condition.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scheme: Option<StringMatcher>,
    /// Method condition.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub method: Option<StringMatcher>,
    /// Authority condition.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub authority: Option<StringMatcher>,
    /// Header conditions (`headers` and `withoutHeaders`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<HeaderMatcher>,
    /// Query parameter conditions ([`StrMatcher::Present`] for a
    /// parameter that only has to be there).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub query_params: Vec<(String, StringMatcher)>,
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
            if !pseudo(m, req.method) {
                return false;
            }
        }
        if let Some(m) = &self.authority {
            if !pseudo(m, req.authority) {
                return false;
            }
        }
        if let Some(m) = &self.scheme {
            if !pseudo(m, req.scheme) {
                return false;
            }
        }
        if let (Some(want), Some(got)) = (self.port, req.port) {
            if want != got {
                return false;
            }
        }
        if !self
            .headers
            .iter()
            .all(|h| h.matches_value(req.header(&h.name).as_deref()))
        {
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
