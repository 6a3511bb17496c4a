//! [`MeshClient`]: the outbound client a [`super::Mesh`] hands out.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use crate::balance::Endpoints;
use crate::body::{boxed, BoxError, MeshBody};
use crate::client::call::CallRef;
use crate::client::ClientService;

use super::MeshGuard;

/// The outbound HTTP client of a workload, running the whole client stack
/// (routing, splits, retries, timeouts, faults, mirrors, load balancing,
/// outlier detection, connection-pool limits). Clone it freely: clones
/// share connection pools, balancer and outlier state, and retry budgets.
///
/// Use [`MeshClient::request`], or it as a `tower::Service` for any
/// `http::Request<B>` whose body yields `Bytes`. Its future is a named,
/// `Send + 'static` type, so it can be awaited inside `tokio::spawn`.
///
/// # Readiness and backpressure
///
/// `poll_ready` is always ready, on purpose. One client serves every
/// destination, while limits are per destination (a DestinationRule's
/// `connectionPool` caps one cluster's connections, pending and
/// concurrent requests): readiness is asked before the request, and so
/// before anyone knows which cluster it goes to, so a full `ratings` pool
/// must not hold back a request to `reviews`. A request over a limit
/// fails at once with 503 and the `UO` response flag, as Istio's circuit
/// breaking does, and one that waits for a pooled connection waits in the
/// call, bounded by `maxPendingRequests` and the route's timeout. To shed
/// load before the mesh, put a `tower::limit::ConcurrencyLimit` or
/// `tower::load_shed` layer around the client.
#[derive(Clone)]
pub struct MeshClient {
    pub(super) inner: ClientService<Endpoints>,
    pub(super) _guard: MeshGuard,
}

type StackFuture = <ClientService<Endpoints> as tower::Service<http::Request<MeshBody>>>::Future;

pin_project_lite::pin_project! {
    /// The future of a [`MeshClient`] call: the stack's own future, held
    /// as it is (no allocation of its own).
    pub struct ResponseFuture {
        #[pin]
        inner: StackFuture,
    }
}

impl Future for ResponseFuture {
    type Output = Result<http::Response<MeshBody>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.project().inner.poll(cx)
    }
}

impl std::fmt::Debug for ResponseFuture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl std::fmt::Debug for MeshClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MeshClient").finish_non_exhaustive()
    }
}

impl MeshClient {
    /// Sends a request through the mesh. Locally generated failures (no
    /// route, overflow, timeout, ...) come back as responses carrying
    /// `x-mesh-response-flags`; `Err` means the request could not be
    /// answered at all.
    pub fn request<B>(&self, req: http::Request<B>) -> ResponseFuture
    where
        B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        // The stack is called as it is, not cloned per request: see
        // `CallRef`.
        let inner = self.inner.call_ref(req.map(boxed));
        ResponseFuture { inner }
    }
}

impl<B> tower::Service<http::Request<B>> for MeshClient
where
    B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Response = http::Response<MeshBody>;
    type Error = BoxError;
    type Future = ResponseFuture;

    /// Always ready: see the type's docs on backpressure.
    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> ResponseFuture {
        self.request(req)
    }
}
