//! Where an app's request is going, before the mesh routes it: the
//! authority an explicit-proxy request names, or the mesh service a
//! per-upstream port stands for. The SDK's client stack routes on the
//! request's authority, so capture only has to put the right one there.

use http::header::{self, HeaderValue};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Method, Request, Uri};
use std::net::SocketAddr;

/// Why a request cannot be sent on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaptureError(pub String);

impl std::fmt::Display for CaptureError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A request sent to a per-upstream port (`9080=reviews:9080`): it is for
/// `authority`, whatever `Host` the app wrote (usually `127.0.0.1:9080`).
pub fn to_upstream<B>(req: &mut Request<B>, authority: &Authority) -> Result<(), CaptureError> {
    let pq = req
        .uri()
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    *req.uri_mut() = Uri::builder()
        .scheme(Scheme::HTTP)
        .authority(authority.clone())
        .path_and_query(pq)
        .build()
        .map_err(|e| CaptureError(format!("cannot address {authority}: {e}")))?;
    set_host(req, authority);
    Ok(())
}

/// A request to the explicit proxy (`HTTP_PROXY`): absolute-form
/// (`GET http://reviews:9080/x`) names its destination; origin-form uses
/// `Host`, as when the app was pointed at the proxy port directly.
/// (`CONNECT` is tunnelled by the outbound side, not routed.)
pub fn from_proxy<B>(req: &mut Request<B>) -> Result<(), CaptureError> {
    if req.method() == Method::CONNECT {
        // Tunnels are the outbound side's; a CONNECT here is a caller bug.
        return Err(CaptureError(
            "CONNECT is a tunnel, not a request to route".into(),
        ));
    }
    if let Some(a) = req.uri().authority().cloned() {
        if req.uri().scheme() == Some(&Scheme::HTTPS) {
            return Err(CaptureError(format!(
                "{} is an https:// URL: a proxy cannot see inside TLS; send http:// and let the mesh originate TLS (DestinationRule tls)",
                req.uri()
            )));
        }
        set_host(req, &a);
        return Ok(());
    }
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .ok_or_else(|| CaptureError("the request names no destination: send an absolute URL (http://host:port/path) or a Host header".into()))?;
    let authority: Authority = host
        .parse()
        .map_err(|e| CaptureError(format!("Host {host:?} is not an authority: {e}")))?;
    to_upstream(req, &authority)
}

/// A request the app sent to `dst` that iptables redirected to the
/// capture port: the `Host` names the service (with `dst`'s port when it
/// names none, as a sidecar's per-port listener routes); without a `Host`
/// the destination address itself is the authority (passthrough under
/// `ALLOW_ANY`).
pub fn from_original_dst<B>(req: &mut Request<B>, dst: SocketAddr) -> Result<(), CaptureError> {
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_string);
    let authority = match host {
        Some(h) if h.contains(':') && !h.ends_with(']') => h,
        Some(h) => format!("{h}:{}", dst.port()),
        None => dst.to_string(),
    };
    let authority: Authority = authority
        .parse()
        .map_err(|e| CaptureError(format!("Host {authority:?} is not an authority: {e}")))?;
    to_upstream(req, &authority)
}

fn set_host<B>(req: &mut Request<B>, authority: &Authority) {
    if let Ok(v) = HeaderValue::from_str(authority.as_str()) {
        req.headers_mut().insert(header::HOST, v);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn an_upstream_port_names_its_service_whatever_the_app_wrote() {
        let mut req = Request::get("/reviews/1?x=1")
            .header("host", "127.0.0.1:9080")
            .body(())
            .unwrap();
        to_upstream(&mut req, &"reviews:9080".parse().unwrap()).unwrap();
        assert_eq!(req.uri(), "http://reviews:9080/reviews/1?x=1");
        assert_eq!(req.headers()["host"], "reviews:9080");
    }

    #[test]
    fn captured_requests_route_by_host_on_the_dialed_port() {
        let dst: SocketAddr = "10.96.0.10:9080".parse().unwrap();
        let mut req = Request::get("/r")
            .header("host", "ratings")
            .body(())
            .unwrap();
        from_original_dst(&mut req, dst).unwrap();
        assert_eq!(req.uri(), "http://ratings:9080/r");
        let mut req = Request::get("/r")
            .header("host", "ratings:8080")
            .body(())
            .unwrap();
        from_original_dst(&mut req, dst).unwrap();
        assert_eq!(req.uri(), "http://ratings:8080/r");
        let mut req = Request::get("/r").body(()).unwrap();
        from_original_dst(&mut req, dst).unwrap();
        assert_eq!(req.uri(), "http://10.96.0.10:9080/r");
    }

    #[test]
    fn proxy_requests_use_the_absolute_url_or_the_host() {
        let mut req = Request::get("http://ratings:9080/r").body(()).unwrap();
        from_proxy(&mut req).unwrap();
        assert_eq!(req.uri(), "http://ratings:9080/r");
        assert_eq!(req.headers()["host"], "ratings:9080");

        let mut req = Request::get("/r")
            .header("host", "ratings:9080")
            .body(())
            .unwrap();
        from_proxy(&mut req).unwrap();
        assert_eq!(req.uri(), "http://ratings:9080/r");

        let mut req = Request::get("/r").body(()).unwrap();
        assert!(from_proxy(&mut req).unwrap_err().0.contains("absolute URL"));
        let mut req = Request::get("https://x/").body(()).unwrap();
        assert!(from_proxy(&mut req).unwrap_err().0.contains("https://"));
    }
}
