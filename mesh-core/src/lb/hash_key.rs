//! Where the consistent-hash key of a request comes from, and the cookie
//! Envoy generates when a hashed cookie is missing.

use std::time::Duration;

use super::hash::xxh64;
use crate::config::networking::destination_rule::ConsistentHashLb;

/// The request attribute a consistent-hash balancer hashes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashSource {
    /// A request header (values of repeated headers are joined by `,`).
    Header(String),
    /// A cookie; when it is absent and `ttl` is set, one is generated.
    Cookie {
        /// Cookie name.
        name: String,
        /// Path of a generated cookie.
        path: Option<String>,
        /// Lifetime of a generated cookie (`Some(0)`: a session cookie).
        ttl: Option<Duration>,
        /// Extra `name=value` attributes of a generated cookie.
        attributes: Vec<(String, Option<String>)>,
    },
    /// The client's IP address.
    SourceIp,
    /// A query parameter.
    QueryParameter(String),
}

impl HashSource {
    /// The key source of an Istio `consistentHash`, if it names one.
    pub fn from_istio(ch: &ConsistentHashLb) -> Option<Self> {
        if let Some(h) = &ch.http_header_name {
            return Some(Self::Header(h.to_ascii_lowercase()));
        }
        if let Some(c) = &ch.http_cookie {
            return Some(Self::Cookie {
                name: c.name.clone(),
                path: c.path.clone(),
                ttl: c.ttl.map(|d| d.get()),
                attributes: c
                    .attributes
                    .iter()
                    .map(|a| (a.name.clone(), a.value.clone()))
                    .collect(),
            });
        }
        if ch.use_source_ip == Some(true) {
            return Some(Self::SourceIp);
        }
        ch.http_query_parameter_name
            .as_ref()
            .map(|q| Self::QueryParameter(q.clone()))
    }
}

/// The hash of a key value (XXH64, seed 0, as Envoy).
pub fn hash_key(value: &[u8]) -> u64 {
    xxh64(value, 0)
}

/// The value of cookie `name` in a `Cookie` header.
pub fn find_cookie<'a>(cookie_header: &'a str, name: &str) -> Option<&'a str> {
    cookie_header.split(';').find_map(|kv| {
        let (k, v) = kv.trim().split_once('=')?;
        (k == name).then(|| v.trim_matches('"'))
    })
}

/// The value of query parameter `name` in a query string, not decoded:
/// Envoy hashes the raw value.
pub fn find_query_param<'a>(query: &'a str, name: &str) -> Option<&'a str> {
    crate::matcher::uri::query_param_raw(query, name)
}

/// A cookie to generate: its value is the hex of a hash of `seed` (Envoy
/// hashes the downstream address; callers pass something unique per
/// client), and the returned `Set-Cookie` value carries the TTL as
/// `Max-Age` (omitted for a session cookie, `ttl` 0), the path and
/// `HttpOnly`, as Envoy writes it.
pub fn generate_cookie(
    name: &str,
    seed: &[u8],
    path: Option<&str>,
    ttl: Duration,
    attributes: &[(String, Option<String>)],
) -> (String, String) {
    let value = format!("{:016x}", xxh64(seed, 0));
    let mut set = format!("{name}=\"{value}\"");
    if !ttl.is_zero() {
        set.push_str(&format!("; Max-Age={}", ttl.as_secs()));
    }
    if let Some(p) = path.filter(|p| !p.is_empty()) {
        set.push_str(&format!("; Path={p}"));
    }
    for (k, v) in attributes {
        match v {
            Some(v) => set.push_str(&format!("; {k}={v}")),
            None => set.push_str(&format!("; {k}")),
        }
    }
    set.push_str("; HttpOnly");
    (value, set)
}
