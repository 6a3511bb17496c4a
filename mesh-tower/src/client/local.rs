//! Answers a route gives without forwarding: redirects and direct responses.
//!
//! A redirect builds the `Location` as Envoy's redirect action does for the
//! fields Istio sets: `scheme` replaces the scheme, `authority` the host,
//! `port` (or `derivePort: FROM_REQUEST_PORT`, which Istio compiles to the
//! request's port) the port, and `uri` the whole path while keeping the
//! original query unless the new uri has its own. A port that is the
//! default of the resulting scheme is left out, so does
//! `derivePort: FROM_PROTOCOL_DEFAULT`.

use http::{HeaderValue, Response, StatusCode};
use mesh_core::config::networking::virtual_service::RedirectPortSelection;
use mesh_core::route::model::{DirectResponse, Redirect};

use crate::body::{self, MeshBody};

use super::target::{split_authority, Authority};

/// The `Location` of a redirect for a request with `scheme`, authority `auth`
/// and `path_and_query`.
pub fn location(r: &Redirect, scheme: &str, auth: &Authority<'_>, path_and_query: &str) -> String {
    let new_scheme = r.scheme.as_deref().unwrap_or(scheme);
    let default_port = if new_scheme.eq_ignore_ascii_case("https") {
        443
    } else {
        80
    };
    let (host, host_port) = match r.authority.as_deref() {
        Some(a) => {
            let s = split_authority(a, default_port);
            (s.host, s.explicit_port.then_some(s.port))
        }
        None => (
            auth.host,
            // A scheme change drops the original port (it belonged to the
            // old scheme), as Envoy's https_redirect/scheme_redirect do.
            (auth.explicit_port && r.scheme.is_none()).then_some(auth.port),
        ),
    };
    let port = match (r.port, r.derive_port) {
        (Some(p), _) => Some(p),
        (None, Some(RedirectPortSelection::FromRequestPort)) => Some(auth.port),
        (None, Some(RedirectPortSelection::FromProtocolDefault)) => None,
        (None, None) => host_port,
    }
    .filter(|p| *p != default_port);
    let (orig_path, orig_query) = match path_and_query.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (path_and_query, None),
    };
    let mut out = String::with_capacity(64);
    out.push_str(new_scheme);
    out.push_str("://");
    if host.contains(':') {
        out.push('[');
        out.push_str(host);
        out.push(']');
    } else {
        out.push_str(host);
    }
    if let Some(p) = port {
        out.push(':');
        out.push_str(&p.to_string());
    }
    match r.uri.as_deref() {
        Some(u) => {
            out.push_str(u);
            if !u.contains('?') {
                if let Some(q) = orig_query {
                    out.push('?');
                    out.push_str(q);
                }
            }
        }
        None => {
            out.push_str(if orig_path.is_empty() { "/" } else { orig_path });
            if let Some(q) = orig_query {
                out.push('?');
                out.push_str(q);
            }
        }
    }
    out
}

/// The redirect response.
pub fn redirect_response(
    r: &Redirect,
    scheme: &str,
    auth: &Authority<'_>,
    path_and_query: &str,
) -> Response<MeshBody> {
    let mut resp = Response::new(body::empty());
    *resp.status_mut() = StatusCode::from_u16(r.code).unwrap_or(StatusCode::MOVED_PERMANENTLY);
    if let Ok(v) = HeaderValue::from_str(&location(r, scheme, auth, path_and_query)) {
        resp.headers_mut().insert(http::header::LOCATION, v);
    }
    resp
}

/// The fixed response of a `directResponse` rule.
pub fn direct_response(d: &DirectResponse) -> Response<MeshBody> {
    let bytes: Option<Vec<u8>> = d.body.as_ref().and_then(|b| match (&b.string, &b.bytes) {
        (Some(s), _) => Some(s.clone().into_bytes()),
        (None, Some(b64)) => base64_decode(b64),
        (None, None) => None,
    });
    let mut resp = match bytes {
        Some(b) => {
            let mut r = Response::new(body::full(b));
            r.headers_mut().insert(
                http::header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain"),
            );
            r
        }
        None => Response::new(body::empty()),
    };
    *resp.status_mut() = StatusCode::from_u16(d.status).unwrap_or(StatusCode::OK);
    resp
}

/// Standard base64 (padding optional); `None` on invalid input.
fn base64_decode(s: &str) -> Option<Vec<u8>> {
    fn val(c: u8) -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            _ => return None,
        } as u32)
    }
    let clean: Vec<u8> = s
        .bytes()
        .filter(|c| !c.is_ascii_whitespace() && *c != b'=')
        .collect();
    let mut out = Vec::with_capacity(clean.len() * 3 / 4);
    for chunk in clean.chunks(4) {
        let mut acc = 0u32;
        for (i, c) in chunk.iter().enumerate() {
            acc |= val(*c)? << (18 - 6 * i);
        }
        match chunk.len() {
            4 => out.extend_from_slice(&[(acc >> 16) as u8, (acc >> 8) as u8, acc as u8]),
            3 => out.extend_from_slice(&[(acc >> 16) as u8, (acc >> 8) as u8]),
            2 => out.push((acc >> 16) as u8),
            _ => return None,
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn redirect() -> Redirect {
        Redirect {
            uri: None,
            authority: None,
            port: None,
            derive_port: None,
            scheme: None,
            code: 301,
        }
    }

    #[test]
    fn locations() {
        let auth = split_authority("web.example.com:8080", 80);
        let r = Redirect {
            uri: Some("/v2".into()),
            ..redirect()
        };
        assert_eq!(
            location(&r, "http", &auth, "/v1/x?a=1"),
            "http://web.example.com:8080/v2?a=1"
        );
        let r = Redirect {
            scheme: Some("https".into()),
            ..redirect()
        };
        assert_eq!(
            location(&r, "http", &auth, "/p"),
            "https://web.example.com/p"
        );
        let r = Redirect {
            authority: Some("new.example.com".into()),
            port: Some(9443),
            uri: Some("/n?b=2".into()),
            ..redirect()
        };
        assert_eq!(
            location(&r, "http", &auth, "/p?a=1"),
            "http://new.example.com:9443/n?b=2"
        );
        let r = Redirect {
            derive_port: Some(RedirectPortSelection::FromRequestPort),
            scheme: Some("https".into()),
            ..redirect()
        };
        assert_eq!(
            location(&r, "http", &auth, "/"),
            "https://web.example.com:8080/"
        );
        let r = Redirect {
            derive_port: Some(RedirectPortSelection::FromProtocolDefault),
            ..redirect()
        };
        assert_eq!(location(&r, "http", &auth, "/"), "http://web.example.com/");
    }

    #[test]
    fn base64() {
        assert_eq!(base64_decode("aGVsbG8=").as_deref(), Some(&b"hello"[..]));
        assert_eq!(base64_decode("aGk").as_deref(), Some(&b"hi"[..]));
        assert_eq!(base64_decode("!!"), None);
    }
}
