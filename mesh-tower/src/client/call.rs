//! How the layers call their inner service: through a shared reference
//! ([`CallRef`], [`Via`]) on the hot path, and boxed ([`oneshot`]) from
//! inside `async` blocks.
//!
//! Holding an inner service's future across an `.await` in an `async` block
//! trips a rustc limitation (the `Send` bound on `S::Future` is not seen as
//! general enough over the elided lifetime of `BoxError`), so the rare paths
//! written as `async` blocks (fault delays, mirrors) box the inner future at
//! the call site, outside the generator.

use futures_util::future::BoxFuture;
use http::{Request, Response};
use tower::{Service, ServiceExt};

use crate::body::{BoxError, MeshBody};

/// A boxed response future.
pub type ResponseFuture = BoxFuture<'static, Result<Response<MeshBody>, BoxError>>;

/// `svc.oneshot(req)` (wait until ready, then call), boxed.
pub fn oneshot<S>(svc: S, req: Request<MeshBody>) -> ResponseFuture
where
    S: Service<Request<MeshBody>, Response = Response<MeshBody>, Error = BoxError> + Send + 'static,
    S::Future: Send + 'static,
{
    Box::pin(svc.oneshot(req))
}

/// A service of the client stack that can be called through a shared
/// reference, without `poll_ready` first: it is always ready and keeps no
/// state per call. The mesh's layers over its endpoint stage are, so
/// [`crate::MeshClient`] calls its stack as it is instead of cloning it
/// for every request (each clone and drop touches reference counts that
/// every thread shares).
pub trait CallRef:
    Service<Request<MeshBody>, Response = Response<MeshBody>, Error = BoxError>
{
    /// Like `call`, needing neither `&mut` nor readiness.
    fn call_ref(&self, req: Request<MeshBody>) -> Self::Future;
}

/// How a layer reaches its inner service for one request: the instance
/// its own `poll_ready` made ready (tower's `call`), or a shared one
/// ([`CallRef`]). Each layer's logic is written once over this.
pub enum Via<'a, S: Service<Request<MeshBody>>> {
    /// The ready instance.
    Ready(&'a mut S),
    /// A shared instance and its `call_ref`.
    Shared(&'a S, fn(&S, Request<MeshBody>) -> S::Future),
}

impl<S: Service<Request<MeshBody>>> Via<'_, S> {
    /// Calls the inner service now.
    pub fn call(self, req: Request<MeshBody>) -> S::Future {
        match self {
            Via::Ready(s) => s.call(req),
            Via::Shared(s, f) => f(s, req),
        }
    }
}

impl<S: Service<Request<MeshBody>> + Clone> Via<'_, S> {
    /// An instance to call later (after `poll_ready`): the ready one, a
    /// fresh clone left in its place.
    pub fn owned(self) -> S {
        match self {
            Via::Ready(s) => {
                let clone = s.clone();
                std::mem::replace(s, clone)
            }
            Via::Shared(s, _) => s.clone(),
        }
    }

    /// Calls the inner service now and keeps an instance for later calls.
    pub fn call_and_keep(self, req: Request<MeshBody>) -> (S::Future, S) {
        match self {
            Via::Ready(s) => {
                let clone = s.clone();
                let mut ready = std::mem::replace(s, clone);
                (ready.call(req), ready)
            }
            Via::Shared(s, f) => (f(s, req), s.clone()),
        }
    }
}
