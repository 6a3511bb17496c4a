//! The request attributes authorization looks at, as the inbound side knows
//! them after mTLS and JWT authentication.

use std::borrow::Cow;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

/// How the destination port is served.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// HTTP/1.1, HTTP/2 or gRPC: every attribute is available.
    #[default]
    Http,
    /// Opaque TCP: only connection attributes (identities, IPs, ports, SNI).
    Tcp,
}

/// One request (or, for TCP, one connection) to authorize.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Request {
    /// HTTP or TCP.
    pub protocol: Protocol,
    /// HTTP method (`GET`); Envoy rejects methods not in upper case.
    pub method: String,
    /// The raw `:path`, query and fragment included; normalized by the engine.
    pub path: String,
    /// The `:authority`/`Host`, port included when the client sent one.
    pub host: String,
    /// Request headers; names are matched case-insensitively, repeated
    /// headers are joined with `,` as Envoy does.
    pub headers: Vec<(String, String)>,
    /// The destination port of the connection.
    pub port: u16,
    /// The mTLS peer identity (SPIFFE URI or principal form); `None` when the
    /// connection is plaintext.
    pub source_principal: Option<String>,
    /// Address of the direct peer (`source.ip`, `ipBlocks`).
    pub source_ip: Option<IpAddr>,
    /// Address of the original client from X-Forwarded-For or the PROXY
    /// protocol (`remote.ip`, `remoteIpBlocks`); defaults to `source_ip`.
    pub remote_ip: Option<IpAddr>,
    /// The address the connection was made to (`destination.ip`).
    pub destination_ip: Option<IpAddr>,
    /// The JWT identity `<iss>/<sub>`; `None` without a validated JWT.
    pub request_principal: Option<String>,
    /// The validated JWT payload (`null` without one).
    pub claims: serde_json::Value,
    /// The JWT `aud` values.
    pub audiences: Vec<String>,
    /// The JWT `azp`.
    pub presenter: Option<String>,
    /// The TLS SNI of the connection.
    pub sni: Option<String>,
}

impl Request {
    /// An HTTP request with a method and a path; everything else empty.
    pub fn http(method: &str, path: &str) -> Self {
        Self {
            method: method.to_string(),
            path: path.to_string(),
            ..Self::default()
        }
    }

    /// A TCP connection to `port`.
    pub fn tcp(port: u16) -> Self {
        Self {
            protocol: Protocol::Tcp,
            port,
            ..Self::default()
        }
    }

    /// Sets the mTLS peer identity.
    pub fn with_principal(mut self, principal: &str) -> Self {
        self.source_principal = Some(principal.to_string());
        self
    }

    /// Adds a header.
    pub fn with_header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    /// The value of a header (name case-insensitive), repeated headers joined
    /// with `,`; `None` when absent. The pseudo-headers `:method`, `:path`
    /// and `:authority` read the request's own fields, as Envoy's header
    /// map has them.
    pub fn header(&self, name: &str) -> Option<Cow<'_, str>> {
        let pseudo = |v: &str| (!v.is_empty()).then_some(());
        match name {
            ":method" => return pseudo(&self.method).map(|_| Cow::Borrowed(self.method.as_str())),
            ":path" => return pseudo(&self.path).map(|_| Cow::Borrowed(self.path.as_str())),
            ":authority" => return pseudo(&self.host).map(|_| Cow::Borrowed(self.host.as_str())),
            _ => {}
        }
        crate::matcher::join_values(
            self.headers
                .iter()
                .filter(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str()),
        )
    }

    /// The original client address: `remote_ip`, else the direct peer.
    pub fn effective_remote_ip(&self) -> Option<IpAddr> {
        self.remote_ip.or(self.source_ip)
    }

    /// A claim by path (`["groups"]`, `["a", "b"]` for `claims[a][b]`).
    pub fn claim(&self, path: &[String]) -> Option<&serde_json::Value> {
        let mut v = &self.claims;
        for p in path {
            v = v.as_object()?.get(p)?;
        }
        Some(v)
    }
}

impl crate::matcher::HeaderSource for Request {
    fn header(&self, name: &str) -> Option<Cow<'_, str>> {
        Request::header(self, name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_join_and_ignore_case() {
        let r = Request::http("GET", "/")
            .with_header("X-A", "1")
            .with_header("x-a", "2")
            .with_header("b", "3");
        assert_eq!(r.header("x-A").as_deref(), Some("1,2"));
        assert_eq!(r.header("B").as_deref(), Some("3"));
        assert_eq!(r.header("c"), None);
        assert_eq!(r.header(":method").as_deref(), Some("GET"));
        assert_eq!(r.header(":authority"), None, "no host");
    }

    #[test]
    fn claims_nested() {
        let mut r = Request::http("GET", "/");
        r.claims = serde_json::json!({"a": {"b": "x"}, "groups": ["g1"]});
        assert_eq!(
            r.claim(&["a".into(), "b".into()]),
            Some(&serde_json::json!("x"))
        );
        assert_eq!(r.claim(&["a".into(), "c".into()]), None);
        assert_eq!(r.claim(&["groups".into(), "x".into()]), None);
    }
}
