//! Locally generated failures, typed and mapped to responses.
//!
//! Like Envoy, every failure the mesh produces itself (rather than passing
//! on from the upstream) carries a response flag, in the error value and in
//! the [`RESPONSE_FLAGS_HEADER`] response header, with a reason a person can
//! act on. gRPC requests get a trailers-only gRPC error instead of an HTTP
//! status, so tonic clients see `UNAVAILABLE`, `DEADLINE_EXCEEDED`, etc.

use std::fmt;

use http::{HeaderValue, Response, StatusCode};

use crate::body::{self, MeshBody};

/// The response header carrying the flag of a locally generated response.
pub const RESPONSE_FLAGS_HEADER: &str = "x-mesh-response-flags";

/// The header carrying the reason of a locally generated response.
pub const RESPONSE_REASON_HEADER: &str = "x-mesh-response-reason";

/// Envoy's response flags, for the failures the mesh generates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ResponseFlag {
    /// NR: no route for the request (unknown host under REGISTRY_ONLY, or no
    /// rule of the VirtualService matched).
    NoRoute,
    /// UH: the cluster has no healthy endpoint.
    NoHealthyUpstream,
    /// UO: a connection-pool limit (circuit breaker) overflowed.
    UpstreamOverflow,
    /// UF: connecting to the upstream failed.
    UpstreamConnectionFailure,
    /// URX: retries were exhausted (attempts or retry budget).
    UpstreamRetryLimitExceeded,
    /// UT: the route or per-try timeout expired.
    UpstreamRequestTimeout,
    /// DI: the request was delayed by fault injection.
    DelayInjected,
    /// FI: the request was aborted by fault injection.
    FaultInjected,
    /// RL: a local rate limit refused the request.
    RateLimited,
    /// UR: the upstream reset the stream.
    UpstreamRemoteReset,
    /// DPE: the downstream request was malformed.
    DownstreamProtocolError,
    /// UAEX: an external authorizer denied the request.
    UnauthorizedExternalService,
    /// RBAC: an authorization policy denied the request (Envoy logs this
    /// as the `rbac_access_denied` details).
    RbacAccessDenied,
    /// UAuth: JWT authentication failed (a present but invalid token).
    JwtAuthenticationFailed,
}

impl ResponseFlag {
    /// The short form Envoy prints (`NR`, `UH`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            ResponseFlag::NoRoute => "NR",
            ResponseFlag::NoHealthyUpstream => "UH",
            ResponseFlag::UpstreamOverflow => "UO",
            ResponseFlag::UpstreamConnectionFailure => "UF",
            ResponseFlag::UpstreamRetryLimitExceeded => "URX",
            ResponseFlag::UpstreamRequestTimeout => "UT",
            ResponseFlag::DelayInjected => "DI",
            ResponseFlag::FaultInjected => "FI",
            ResponseFlag::RateLimited => "RL",
            ResponseFlag::UpstreamRemoteReset => "UR",
            ResponseFlag::DownstreamProtocolError => "DPE",
            ResponseFlag::UnauthorizedExternalService => "UAEX",
            ResponseFlag::RbacAccessDenied => "RBAC",
            ResponseFlag::JwtAuthenticationFailed => "UAuth",
        }
    }

    /// The HTTP status Envoy answers with for this flag.
    pub fn default_status(self) -> StatusCode {
        match self {
            ResponseFlag::NoRoute => StatusCode::NOT_FOUND,
            ResponseFlag::UpstreamRequestTimeout => StatusCode::GATEWAY_TIMEOUT,
            ResponseFlag::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            ResponseFlag::RbacAccessDenied | ResponseFlag::UnauthorizedExternalService => {
                StatusCode::FORBIDDEN
            }
            ResponseFlag::JwtAuthenticationFailed => StatusCode::UNAUTHORIZED,
            ResponseFlag::DownstreamProtocolError => StatusCode::BAD_REQUEST,
            ResponseFlag::FaultInjected => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The gRPC status code for this flag (`grpc-status`).
    pub fn grpc_status(self) -> u32 {
        match self {
            ResponseFlag::UpstreamRequestTimeout => 4, // DEADLINE_EXCEEDED
            ResponseFlag::RbacAccessDenied | ResponseFlag::UnauthorizedExternalService => 7, // PERMISSION_DENIED
            ResponseFlag::JwtAuthenticationFailed => 16, // UNAUTHENTICATED
            ResponseFlag::RateLimited => 14,             // UNAVAILABLE, as gRPC maps HTTP 429
            ResponseFlag::NoRoute => 14,
            ResponseFlag::DownstreamProtocolError => 13, // INTERNAL
            _ => 14,                                     // UNAVAILABLE
        }
    }
}

impl fmt::Display for ResponseFlag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A failure the mesh generated itself.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{flag}: {reason}")]
pub struct MeshError {
    /// What kind of failure.
    pub flag: ResponseFlag,
    /// The HTTP status to answer with.
    pub status: StatusCode,
    /// Why, in words a person can act on.
    pub reason: String,
    /// For fault aborts: the gRPC status the fault names, if any.
    pub grpc_status: Option<u32>,
}

impl MeshError {
    /// A failure with the flag's default status.
    pub fn new(flag: ResponseFlag, reason: impl Into<String>) -> Self {
        Self {
            flag,
            status: flag.default_status(),
            reason: reason.into(),
            grpc_status: None,
        }
    }

    /// The same failure with another HTTP status.
    pub fn with_status(mut self, status: StatusCode) -> Self {
        self.status = status;
        self
    }

    /// The same failure with an explicit gRPC status.
    pub fn with_grpc_status(mut self, code: u32) -> Self {
        self.grpc_status = Some(code);
        self
    }

    /// Finds a `MeshError` in a boxed error chain.
    pub fn find<'a>(err: &'a (dyn std::error::Error + 'static)) -> Option<&'a MeshError> {
        let mut cur: Option<&'a (dyn std::error::Error + 'static)> = Some(err);
        while let Some(e) = cur {
            if let Some(m) = e.downcast_ref::<MeshError>() {
                return Some(m);
            }
            cur = e.source();
        }
        None
    }

    /// The response for this failure: an HTTP status with a text body, or,
    /// when `grpc` is true, a trailers-only gRPC error (HTTP 200 with
    /// `grpc-status` and `grpc-message` headers) as gRPC clients expect.
    pub fn into_response(&self, grpc: bool) -> Response<MeshBody> {
        let mut resp = if grpc {
            let mut r = Response::new(body::empty());
            let code = self.grpc_status.unwrap_or_else(|| self.flag.grpc_status());
            let headers = r.headers_mut();
            headers.insert(
                http::header::CONTENT_TYPE,
                HeaderValue::from_static("application/grpc"),
            );
            headers.insert("grpc-status", HeaderValue::from(code));
            if let Ok(v) = HeaderValue::from_str(&percent_encode_grpc_message(&self.reason)) {
                headers.insert("grpc-message", v);
            }
            r
        } else {
            let mut r = Response::new(body::full(format!("{}\n", self.reason)));
            *r.status_mut() = self.status;
            r.headers_mut().insert(
                http::header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain"),
            );
            r
        };
        let headers = resp.headers_mut();
        headers.insert(
            RESPONSE_FLAGS_HEADER,
            HeaderValue::from_static(self.flag.as_str()),
        );
        if let Ok(v) = HeaderValue::from_str(&self.reason) {
            headers.insert(RESPONSE_REASON_HEADER, v);
        }
        resp
    }
}

/// True when a request is gRPC (content-type `application/grpc*`).
pub fn is_grpc<B>(req: &http::Request<B>) -> bool {
    req.headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/grpc"))
}

/// gRPC's `grpc-message` is percent-encoded (RFC 3986 unreserved kept).
fn percent_encode_grpc_message(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if (0x20..=0x7e).contains(&b) && b != b'%' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_and_grpc_mappings() {
        let e = MeshError::new(
            ResponseFlag::UpstreamRequestTimeout,
            "route timeout 1s expired",
        );
        let r = e.into_response(false);
        assert_eq!(r.status(), StatusCode::GATEWAY_TIMEOUT);
        assert_eq!(r.headers()[RESPONSE_FLAGS_HEADER], "UT");
        let g = e.into_response(true);
        assert_eq!(g.status(), StatusCode::OK);
        assert_eq!(g.headers()["grpc-status"], "4");
        let nr = MeshError::new(ResponseFlag::NoRoute, "no route")
            .with_status(StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            nr.into_response(false).status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
    }

    #[test]
    fn finds_mesh_error_in_chain() {
        let e: Box<dyn std::error::Error + Send + Sync> = Box::new(MeshError::new(
            ResponseFlag::UpstreamOverflow,
            "max connections 1",
        ));
        assert_eq!(
            MeshError::find(e.as_ref()).map(|m| m.flag),
            Some(ResponseFlag::UpstreamOverflow)
        );
    }
}
