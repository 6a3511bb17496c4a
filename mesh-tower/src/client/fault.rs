//! The fault layer: Istio's fault injection (delay and abort by percentage),
//! decided by [`mesh_core::fault::decide`].
//!
//! **Deliberate difference from Istio.** The stack places this layer *inside*
//! the retry loop, so the fault is decided again for every attempt and a
//! route may carry faults *and* retries/timeouts that all work: an abort of
//! 50% with `attempts: 3` shows whether retries mask it, and a delay longer
//! than `perTryTimeout` exercises the timeout. Istio (Envoy's fault filter
//! runs before the router) applies the fault once per request and ignores
//! retries and timeouts on faulted routes.
//!
//! An abort answers locally with flag FI (the HTTP status the fault names,
//! or a gRPC status for gRPC requests); a delay waits, then forwards, and
//! marks the response with flag DI.

use std::task::{Context, Poll};

use futures_util::future::{BoxFuture, Either};
use http::{HeaderValue, Request, Response, StatusCode};
use mesh_core::fault::{decide, grpc_status_for_http, Abort};
use tower::{Layer, Service};

use crate::body::{BoxError, MeshBody};
use crate::error::{MeshError, ResponseFlag, RESPONSE_FLAGS_HEADER};

use super::call::{CallRef, Via};
use super::rng;
use super::routed::{self, Routed};

/// Adds fault injection in front of a service.
#[derive(Debug, Clone, Copy, Default)]
pub struct FaultLayer;

impl<S> Layer<S> for FaultLayer {
    type Service = FaultService<S>;
    fn layer(&self, inner: S) -> FaultService<S> {
        FaultService { inner }
    }
}

/// The fault stage (see the module docs).
#[derive(Debug, Clone)]
pub struct FaultService<S> {
    inner: S,
}

/// The response of an abort fault.
pub fn abort_response(abort: &Abort, grpc: bool) -> Response<MeshBody> {
    let status = abort
        .http_status
        .and_then(|s| StatusCode::from_u16(s).ok())
        .unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
    let mut err = MeshError::new(
        ResponseFlag::FaultInjected,
        format!(
            "fault filter abort ({})",
            match (abort.grpc_status, abort.http_status) {
                (Some(g), _) if grpc || abort.http_status.is_none() => format!("grpc-status {g}"),
                (_, Some(h)) => format!("HTTP {h}"),
                _ => "HTTP 503".to_string(),
            }
        ),
    )
    .with_status(status);
    let grpc_status = abort
        .grpc_status
        .or_else(|| abort.http_status.map(grpc_status_for_http));
    if let Some(g) = grpc_status {
        err = err.with_grpc_status(g);
    }
    // A gRPC-only abort answers gRPC-style even to a request that does not
    // say it is gRPC: there is no HTTP status to use.
    err.into_response(grpc || abort.http_status.is_none())
}

type FaultFuture<F> = Either<F, BoxFuture<'static, Result<Response<MeshBody>, BoxError>>>;

impl<S> Service<Request<MeshBody>> for FaultService<S>
where
    S: Service<Request<MeshBody>, Response = Response<MeshBody>, Error = BoxError>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Response = Response<MeshBody>;
    type Error = BoxError;
    type Future = FaultFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<MeshBody>) -> Self::Future {
        fault_call(Via::Ready(&mut self.inner), req)
    }
}

impl<S> CallRef for FaultService<S>
where
    S: CallRef + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    fn call_ref(&self, req: Request<MeshBody>) -> Self::Future {
        fault_call(Via::Shared(&self.inner, S::call_ref), req)
    }
}

fn fault_call<S>(via: Via<'_, S>, req: Request<MeshBody>) -> FaultFuture<S::Future>
where
    S: Service<Request<MeshBody>, Response = Response<MeshBody>, Error = BoxError>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let routed = routed::of(&req);
    let grpc = routed.is_some_and(|r| r.grpc);
    let decision = routed
        .and_then(Routed::route)
        .and_then(|r| r.fault.as_ref())
        .map(|f| decide(f, rng::next_f64(), rng::next_f64()))
        .filter(|d| !d.is_none());
    let Some(decision) = decision else {
        return Either::Left(via.call(req));
    };
    let inner = via.owned();
    Either::Right(Box::pin(async move {
        if let Some(d) = decision.delay {
            tokio::time::sleep(d).await;
        }
        if let Some(a) = decision.abort {
            let mut resp = abort_response(&a, grpc);
            if decision.delay.is_some() {
                resp.headers_mut()
                    .insert(RESPONSE_FLAGS_HEADER, HeaderValue::from_static("DI,FI"));
            }
            return Ok(resp);
        }
        let mut resp = super::call::oneshot(inner, req).await?;
        if !resp.headers().contains_key(RESPONSE_FLAGS_HEADER) {
            resp.headers_mut().insert(
                RESPONSE_FLAGS_HEADER,
                HeaderValue::from_static(ResponseFlag::DelayInjected.as_str()),
            );
        }
        Ok(resp)
    }))
}
