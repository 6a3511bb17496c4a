//! Which outbound service a request is for: the authority (URI authority or
//! `Host` header) resolved against the model's `host:port` services.
//!
//! Short names are resolved by mesh-core's one resolver
//! ([`mesh_core::host::candidates`], through [`Model::resolve_outbound`]) as
//! Kubernetes DNS search paths would resolve them from the client's
//! namespace (`reviews`, `reviews.prod`, `reviews.prod.svc`), the same way
//! `meshctl x route` and meshd's short-name listeners do; a missing port
//! defaults by scheme (80 for http, 443 for https). ServiceEntry wildcard
//! hosts (`*.example.com`) match one or more leading labels. The lookup
//! reuses a per-thread key buffer, so a hit costs a `BTreeMap` search and no
//! allocation.

use std::cell::RefCell;

use http::Request;
use mesh_core::model::{Model, OutboundService};

/// The destination a request names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Authority<'a> {
    /// Host as sent (no port, no brackets around IPv6).
    pub host: &'a str,
    /// Port as sent, else the scheme's default.
    pub port: u16,
    /// True when the request carried an explicit port.
    pub explicit_port: bool,
    /// The authority exactly as sent (`host[:port]`).
    pub raw: &'a str,
}

/// The request's scheme: the URI's, else `http`.
pub fn scheme<B>(req: &Request<B>) -> &str {
    req.uri().scheme_str().unwrap_or("http")
}

/// The authority of a request: the URI's, else the `Host` header; `None`
/// when the request names no host.
pub fn authority<B>(req: &Request<B>) -> Option<Authority<'_>> {
    let raw = match req.uri().authority() {
        Some(a) => a.as_str(),
        None => req.headers().get(http::header::HOST)?.to_str().ok()?,
    };
    Some(split_authority(raw, default_port(req)))
}

/// The port a request for its scheme goes to when it names none.
pub fn default_port<B>(req: &Request<B>) -> u16 {
    if scheme(req).eq_ignore_ascii_case("https") {
        443
    } else {
        80
    }
}

/// Splits `host[:port]` (IPv6 in brackets), dropping any userinfo.
// Byte scans: this runs on every request, and the authority is ASCII
// wherever it matters (a non-ASCII byte is never a delimiter in UTF-8).
pub fn split_authority(raw: &str, default_port: u16) -> Authority<'_> {
    let bytes = raw.as_bytes();
    let start = bytes.iter().rposition(|b| *b == b'@').map_or(0, |i| i + 1);
    let hostport = raw.get(start..).unwrap_or(raw);
    let hp = hostport.as_bytes();
    let (host, port) = if hp.first() == Some(&b'[') {
        match hp.iter().position(|b| *b == b']') {
            Some(close) => (
                hostport.get(1..close).unwrap_or(""),
                hostport
                    .get(close + 1..)
                    .and_then(|t| t.strip_prefix(':'))
                    .and_then(parse_port),
            ),
            None => (hostport.get(1..).unwrap_or(""), None),
        }
    } else {
        match hp.iter().rposition(|b| *b == b':') {
            Some(colon) => match hostport.get(colon + 1..).and_then(parse_port) {
                Some(p) => (hostport.get(..colon).unwrap_or(""), Some(p)),
                None => (hostport, None),
            },
            None => (hostport, None),
        }
    };
    Authority {
        host,
        port: port.unwrap_or(default_port),
        explicit_port: port.is_some(),
        raw,
    }
}

/// A port: 1 to 5 ASCII digits, at most 65535.
fn parse_port(s: &str) -> Option<u16> {
    if s.is_empty() || s.len() > 5 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n = s.bytes().fold(0u32, |n, b| n * 10 + u32::from(b - b'0'));
    u16::try_from(n).ok()
}

thread_local! {
    static KEY: RefCell<String> = RefCell::new(String::with_capacity(128));
}

/// The outbound service for `host:port`: [`Model::resolve_outbound`] (the
/// name as given, then its search-path expansion from the client's
/// namespace, then wildcard hosts), with this thread's key buffer.
pub fn resolve<'m>(model: &'m Model, host: &str, port: u16) -> Option<&'m OutboundService> {
    KEY.with(|k| model.resolve_outbound(host, port, &mut k.borrow_mut()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_authorities() {
        let a = split_authority("reviews:9080", 80);
        assert_eq!((a.host, a.port, a.explicit_port), ("reviews", 9080, true));
        let a = split_authority("example.com", 443);
        assert_eq!(
            (a.host, a.port, a.explicit_port),
            ("example.com", 443, false)
        );
        let a = split_authority("[::1]:8080", 80);
        assert_eq!((a.host, a.port), ("::1", 8080));
        let a = split_authority("user@h:81", 80);
        assert_eq!((a.host, a.port), ("h", 81));
        let a = split_authority("h:99999", 80);
        assert_eq!((a.host, a.port, a.explicit_port), ("h:99999", 80, false));
        let a = split_authority("h:", 80);
        assert_eq!((a.host, a.port), ("h:", 80));
        let a = split_authority("[::1]", 443);
        assert_eq!((a.host, a.port, a.explicit_port), ("::1", 443, false));
    }
}
