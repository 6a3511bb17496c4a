//! Which outbound service a request is for: the authority (URI authority or
//! `Host` header) resolved against the model's `host:port` services.
//!
//! Short names are resolved as Kubernetes DNS search paths would resolve
//! them from the client's namespace (`reviews`, `reviews.prod`,
//! `reviews.prod.svc`), and a missing port defaults by scheme (80 for http,
//! 443 for https). ServiceEntry wildcard hosts (`*.example.com`) match one
//! or more leading labels. The lookup reuses a per-thread key buffer, so a
//! hit costs a `BTreeMap` search and no allocation.

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

fn lookup<'m>(model: &'m Model, parts: &[&str], port: u16) -> Option<&'m OutboundService> {
    KEY.with(|k| {
        let mut k = k.borrow_mut();
        k.clear();
        for p in parts {
            k.push_str(p);
        }
        // Host names are case-insensitive; model keys are lowercase.
        k.make_ascii_lowercase();
        k.push(':');
        k.push_str(itoa(port, &mut [0u8; 5]));
        model.outbound.get(k.as_str())
    })
}

fn itoa(mut n: u16, buf: &mut [u8; 5]) -> &str {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 || i == 0 {
            break;
        }
    }
    std::str::from_utf8(&buf[i..]).unwrap_or("0")
}

/// The outbound service for `host:port`, trying the name as given, then the
/// namespace-relative expansions of a short name, then wildcard hosts.
pub fn resolve<'m>(model: &'m Model, host: &str, port: u16) -> Option<&'m OutboundService> {
    let host = host.strip_suffix('.').unwrap_or(host);
    if let Some(s) = lookup(model, &[host], port) {
        return Some(s);
    }
    let ns = model.client.namespace.as_str();
    let suffix = model.mesh.domain_suffix.as_str();
    let dots = host.bytes().filter(|b| *b == b'.').count();
    let found = match dots {
        0 => lookup(model, &[host, ".", ns, ".svc.", suffix], port),
        1 => lookup(model, &[host, ".svc.", suffix], port),
        2 if host.ends_with(".svc") => lookup(model, &[host, ".", suffix], port),
        _ => None,
    };
    if found.is_some() {
        return found;
    }
    // Wildcards: `*.b.c` then `*.c` for `a.b.c`.
    let mut rest = host;
    while let Some((_, tail)) = rest.split_once('.') {
        if let Some(s) = lookup(model, &["*.", tail], port) {
            return Some(s);
        }
        rest = tail;
    }
    None
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
        assert_eq!(itoa(0, &mut [0; 5]), "0");
        assert_eq!(itoa(65535, &mut [0; 5]), "65535");
    }
}
