//! The mirror layer: Istio's `mirror`/`mirrors` with `mirrorPercentage`.
//!
//! For each mirror of the matched route, a share of requests is copied and
//! sent fire-and-forget, on a spawned task, through a clone of the endpoint
//! service: the main request never waits for the copy and never sees its
//! result. As in Envoy, the copy's authority gets a `-shadow` suffix on the
//! host (`reviews:9080` becomes `reviews-shadow:9080`) and its response is
//! dropped. Only a body that can be buffered (up to the configured limit)
//! is mirrored; a larger or streaming body is sent to the main destination
//! only. The copy is bounded by the route timeout when the route has one.

use std::task::{Context, Poll};

use futures_util::future::{BoxFuture, Either};
use http::{HeaderValue, Request, Response, Uri};
use mesh_core::fault::hit;
use mesh_core::model::Model;
use mesh_core::route::model::Mirror;
use tower::{Layer, Service};

use crate::body::{BoxError, MeshBody};
use crate::handle::Handle;
use crate::upstream::Upstream;

use super::replay::Replay;
use super::tee::{prepare, Prepared, Tee};

/// The body copy a mirror sends.
enum BodyCopy {
    Now(Replay),
    Later(Tee),
}
use super::call::{CallRef, Via};
use super::rng;
use super::routed::Routed;
use super::target;

/// Adds mirroring in front of a service; `sink` (normally the endpoint
/// stage) sends the copies.
#[derive(Debug, Clone)]
pub struct MirrorLayer<M> {
    sink: M,
    body_limit: usize,
}

impl<M> MirrorLayer<M> {
    /// A mirror layer sending copies through `sink`, mirroring only bodies
    /// of at most `body_limit` bytes.
    pub fn new(sink: M, body_limit: usize) -> Self {
        Self { sink, body_limit }
    }
}

impl<S, M: Clone> Layer<S> for MirrorLayer<M> {
    type Service = MirrorService<S, M>;
    fn layer(&self, inner: S) -> MirrorService<S, M> {
        MirrorService {
            inner,
            sink: self.sink.clone(),
            body_limit: self.body_limit,
        }
    }
}

/// The mirror stage (see the module docs).
#[derive(Debug, Clone)]
pub struct MirrorService<S, M> {
    inner: S,
    sink: M,
    body_limit: usize,
}

/// Appends `-shadow` to the host of an authority, keeping the port.
pub fn shadow_authority(raw: &str) -> String {
    let a = target::split_authority(raw, 0);
    let mut out = String::with_capacity(raw.len() + 7);
    if a.host.contains(':') {
        out.push('[');
        out.push_str(a.host);
        out.push_str("-shadow]");
    } else {
        out.push_str(a.host);
        out.push_str("-shadow");
    }
    if a.explicit_port {
        out.push(':');
        out.push_str(&a.port.to_string());
    }
    out
}

/// The copy of `parts` for `mirror`, with a fresh first-attempt upstream.
fn shadow_request(
    parts: &Request<()>,
    body: &Replay,
    mirror: &Mirror,
    routed: &Routed,
    model: &Handle<Model>,
) -> Request<MeshBody> {
    let mut req = Request::new(body.body());
    *req.method_mut() = parts.method().clone();
    *req.version_mut() = parts.version();
    *req.headers_mut() = parts.headers().clone();
    let mut uri = parts.uri().clone().into_parts();
    if let Some(a) = &uri.authority {
        if let Ok(a) = shadow_authority(a.as_str()).parse() {
            uri.authority = Some(a);
        }
    }
    if let Ok(u) = Uri::from_parts(uri) {
        *req.uri_mut() = u;
    }
    if let Some(h) = parts
        .headers()
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
    {
        if let Ok(v) = HeaderValue::from_str(&shadow_authority(h)) {
            req.headers_mut().insert(http::header::HOST, v);
        }
    }
    let port = mirror.port.unwrap_or(routed.port);
    req.extensions_mut().insert(super::names::upstream(
        &mirror.host,
        port,
        mirror.subset.as_deref(),
        model,
    ));
    req
}

impl<S, M> Service<Request<MeshBody>> for MirrorService<S, M>
where
    S: Service<Request<MeshBody>, Response = Response<MeshBody>, Error = BoxError>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    M: Service<Request<MeshBody>, Response = Response<MeshBody>, Error = BoxError>
        + Clone
        + Send
        + 'static,
    M::Future: Send + 'static,
{
    type Response = Response<MeshBody>;
    type Error = BoxError;
    type Future = MirrorFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<MeshBody>) -> Self::Future {
        mirror_call(
            Via::Ready(&mut self.inner),
            &self.sink,
            self.body_limit,
            req,
        )
    }
}

impl<S, M> CallRef for MirrorService<S, M>
where
    S: CallRef + Clone + Send + 'static,
    S::Future: Send + 'static,
    M: Service<Request<MeshBody>, Response = Response<MeshBody>, Error = BoxError>
        + Clone
        + Send
        + 'static,
    M::Future: Send + 'static,
{
    fn call_ref(&self, req: Request<MeshBody>) -> Self::Future {
        mirror_call(
            Via::Shared(&self.inner, S::call_ref),
            &self.sink,
            self.body_limit,
            req,
        )
    }
}

type MirrorFuture<F> = Either<F, BoxFuture<'static, Result<Response<MeshBody>, BoxError>>>;

fn mirror_call<S, M>(
    via: Via<'_, S>,
    sink: &M,
    limit: usize,
    req: Request<MeshBody>,
) -> MirrorFuture<S::Future>
where
    S: Service<Request<MeshBody>, Response = Response<MeshBody>, Error = BoxError>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    M: Service<Request<MeshBody>, Response = Response<MeshBody>, Error = BoxError>
        + Clone
        + Send
        + 'static,
    M::Future: Send + 'static,
{
    let Some(up) = req.extensions().get::<Upstream>() else {
        return Either::Left(via.call(req));
    };
    let Some(routed) = up.routed.as_ref() else {
        return Either::Left(via.call(req));
    };
    let Some(route) = routed.route() else {
        return Either::Left(via.call(req));
    };
    if route.mirrors.is_empty() {
        return Either::Left(via.call(req));
    }
    let chosen: Vec<usize> = route
        .mirrors
        .iter()
        .enumerate()
        .filter(|(_, m)| hit(m.percentage, rng::next_f64()))
        .map(|(i, _)| i)
        .collect();
    if chosen.is_empty() {
        return Either::Left(via.call(req));
    }
    let routed = routed.clone();
    let model = up.model.clone();
    let timeout = route.timeout.map(|t| t.get()).filter(|t| !t.is_zero());
    let inner = via.owned();
    let sink = sink.clone();
    Either::Right(Box::pin(async move {
        let (parts, body) = req.into_parts();
        let mut template = Request::new(());
        *template.method_mut() = parts.method.clone();
        *template.uri_mut() = parts.uri.clone();
        *template.version_mut() = parts.version;
        *template.headers_mut() = parts.headers.clone();
        let (body, copy) = match prepare(body, limit)? {
            Prepared::TooLarge(b) => {
                tracing::debug!("request body larger than {limit} bytes: not mirrored");
                (b, None)
            }
            Prepared::Empty(b) => (b, Some(BodyCopy::Now(Replay::empty()))),
            Prepared::Complete(replay) => (replay.body(), Some(BodyCopy::Now(replay))),
            Prepared::Teed(b, tee) => (b, Some(BodyCopy::Later(tee))),
        };
        if let Some(copy) = copy {
            tokio::spawn(async move {
                // A streamed body is mirrored once it ended within the limit.
                let replay = match copy {
                    BodyCopy::Now(r) => r,
                    BodyCopy::Later(tee) => match tee.finished().await {
                        Some(r) => r,
                        None => return,
                    },
                };
                let Some(route) = routed.route() else {
                    return;
                };
                for m in chosen.iter().filter_map(|i| route.mirrors.get(*i)) {
                    let shadow = shadow_request(&template, &replay, m, &routed, &model);
                    let send = super::call::oneshot(sink.clone(), shadow);
                    tokio::spawn(async move {
                        let result = match timeout {
                            Some(t) => tokio::time::timeout(t, send).await.ok(),
                            None => Some(send.await),
                        };
                        if let Some(Err(e)) = result {
                            tracing::debug!("mirror request failed: {e}");
                        }
                    });
                }
            });
        }
        super::call::oneshot(inner, Request::from_parts(parts, body)).await
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shadow_hosts() {
        assert_eq!(shadow_authority("reviews:9080"), "reviews-shadow:9080");
        assert_eq!(shadow_authority("example.com"), "example.com-shadow");
        assert_eq!(shadow_authority("[::1]:80"), "[::1-shadow]:80");
    }
}
