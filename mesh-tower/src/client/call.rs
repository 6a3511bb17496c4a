//! Calling the inner service from inside `async` blocks.
//!
//! Holding an inner service's future across an `.await` in an `async` block
//! trips a rustc limitation (the `Send` bound on `S::Future` is not seen as
//! general enough over the elided lifetime of `BoxError`), so the layers box
//! the inner future at the call site, outside the generator.

use futures_util::future::BoxFuture;
use http::{Request, Response};
use tower::{Service, ServiceExt};

use crate::body::{BoxError, MeshBody};

/// A boxed response future.
pub type ResponseFuture = BoxFuture<'static, Result<Response<MeshBody>, BoxError>>;

/// `svc.call(req)`, boxed.
pub fn call<S>(svc: &mut S, req: Request<MeshBody>) -> ResponseFuture
where
    S: Service<Request<MeshBody>, Response = Response<MeshBody>, Error = BoxError>,
    S::Future: Send + 'static,
{
    Box::pin(svc.call(req))
}

/// `svc.oneshot(req)` (wait until ready, then call), boxed.
pub fn oneshot<S>(svc: S, req: Request<MeshBody>) -> ResponseFuture
where
    S: Service<Request<MeshBody>, Response = Response<MeshBody>, Error = BoxError> + Send + 'static,
    S::Future: Send + 'static,
{
    Box::pin(svc.oneshot(req))
}
