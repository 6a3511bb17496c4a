//! The timeout layer: the route timeout over the whole request, retries and
//! backoff included.
//!
//! The route's `timeout` applies (none by default, as in Istio; `0s` also
//! means none), else the stack's default. A gRPC request's `grpc-timeout`
//! header bounds it too: the smaller wins. On expiry the request is dropped
//! (cancelling the attempt in flight) and answered with 504 and flag UT, or
//! `DEADLINE_EXCEEDED` for gRPC. The per-try timeout belongs to the retry
//! layer.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::future::Either;
use http::{HeaderMap, Request, Response};
use pin_project_lite::pin_project;
use tower::{Layer, Service};

use crate::body::{BoxError, MeshBody};
use crate::error::{MeshError, ResponseFlag};

use super::call::{CallRef, Via};
use super::deadline::Timer;
use super::routed::{self, Routed};

/// Adds the route timeout in front of a service.
#[derive(Debug, Clone, Copy, Default)]
pub struct TimeoutLayer {
    default: Option<Duration>,
}

impl TimeoutLayer {
    /// A timeout layer; `default` applies to routes without a timeout.
    pub fn new(default: Option<Duration>) -> Self {
        Self { default }
    }
}

impl<S> Layer<S> for TimeoutLayer {
    type Service = TimeoutService<S>;
    fn layer(&self, inner: S) -> TimeoutService<S> {
        TimeoutService {
            inner,
            default: self.default,
        }
    }
}

/// The timeout stage (see the module docs).
#[derive(Debug, Clone)]
pub struct TimeoutService<S> {
    inner: S,
    default: Option<Duration>,
}

/// Parses a `grpc-timeout` value (`<up to 8 digits><unit>`, unit one of
/// `H M S m u n`); `None` when absent or malformed (gRPC ignores it then).
pub fn grpc_timeout(headers: &HeaderMap) -> Option<Duration> {
    let v = headers.get("grpc-timeout")?.to_str().ok()?;
    let (digits, unit) = v.split_at(v.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.saturating_mul(3600)),
        "M" => Duration::from_secs(n.saturating_mul(60)),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

impl<S> Service<Request<MeshBody>> for TimeoutService<S>
where
    S: Service<Request<MeshBody>, Response = Response<MeshBody>, Error = BoxError>,
    S::Future: Send + 'static,
{
    type Response = Response<MeshBody>;
    type Error = BoxError;
    type Future = Either<S::Future, TimeoutFuture<S::Future>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<MeshBody>) -> Self::Future {
        timeout_call(Via::Ready(&mut self.inner), self.default, req)
    }
}

impl<S> CallRef for TimeoutService<S>
where
    S: CallRef,
    S::Future: Send + 'static,
{
    fn call_ref(&self, req: Request<MeshBody>) -> Self::Future {
        timeout_call(Via::Shared(&self.inner, S::call_ref), self.default, req)
    }
}

fn timeout_call<S>(
    via: Via<'_, S>,
    default: Option<Duration>,
    req: Request<MeshBody>,
) -> Either<S::Future, TimeoutFuture<S::Future>>
where
    S: Service<Request<MeshBody>, Response = Response<MeshBody>, Error = BoxError>,
{
    let routed = routed::of(&req);
    let grpc = routed.is_some_and(|r| r.grpc);
    let route_timeout = routed
        .and_then(Routed::route)
        .and_then(|r| r.timeout)
        .map(|d| d.get())
        .or(default)
        .filter(|d| !d.is_zero());
    let grpc_deadline = if grpc {
        grpc_timeout(req.headers())
    } else {
        None
    };
    let (timeout, from_grpc) = match (route_timeout, grpc_deadline) {
        (Some(r), Some(g)) if g < r => (g, true),
        (Some(r), _) => (r, false),
        (None, Some(g)) => (g, true),
        (None, None) => return Either::Left(via.call(req)),
    };
    Either::Right(TimeoutFuture {
        timer: Timer::after(timeout),
        inner: via.call(req),
        timeout,
        from_grpc,
        grpc,
    })
}

pin_project! {
    /// The response future of a request with a timeout: the inner
    /// response, or 504 / `DEADLINE_EXCEEDED` (flag UT) on expiry. The
    /// deadline is kept by this thread's [`deadline`](super::deadline)
    /// list rather than a tokio timer of its own.
    pub struct TimeoutFuture<F> {
        #[pin]
        inner: F,
        timer: Timer,
        timeout: Duration,
        from_grpc: bool,
        grpc: bool,
    }
}

impl<F> Future for TimeoutFuture<F>
where
    F: Future<Output = Result<Response<MeshBody>, BoxError>>,
{
    type Output = Result<Response<MeshBody>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(r) = this.inner.poll(cx) {
            return Poll::Ready(r);
        }
        if this.timer.expired(cx) {
            return Poll::Ready(Ok(expired(*this.timeout, *this.from_grpc, *this.grpc)));
        }
        Poll::Pending
    }
}

/// The answer of a request whose deadline passed.
#[cold]
#[inline(never)]
fn expired(timeout: Duration, from_grpc: bool, grpc: bool) -> Response<MeshBody> {
    MeshError::new(
        ResponseFlag::UpstreamRequestTimeout,
        if from_grpc {
            format!("upstream request timeout: grpc-timeout {timeout:?} expired")
        } else {
            format!("upstream request timeout: route timeout {timeout:?} expired")
        },
    )
    .into_response(grpc)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_grpc_timeout() {
        let mut h = HeaderMap::new();
        assert_eq!(grpc_timeout(&h), None);
        h.insert("grpc-timeout", "250m".parse().unwrap());
        assert_eq!(grpc_timeout(&h), Some(Duration::from_millis(250)));
        h.insert("grpc-timeout", "2S".parse().unwrap());
        assert_eq!(grpc_timeout(&h), Some(Duration::from_secs(2)));
        h.insert("grpc-timeout", "1H".parse().unwrap());
        assert_eq!(grpc_timeout(&h), Some(Duration::from_secs(3600)));
        h.insert("grpc-timeout", "123456789m".parse().unwrap());
        assert_eq!(grpc_timeout(&h), None);
        h.insert("grpc-timeout", "10x".parse().unwrap());
        assert_eq!(grpc_timeout(&h), None);
    }
}
