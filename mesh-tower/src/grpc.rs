//! tonic over the mesh: a [`GrpcChannel`] that any generated tonic client
//! accepts (`FooClient::new(channel)`), sending every call through a mesh
//! client stack instead of tonic's own transport.
//!
//! The channel fixes the authority (`reviews.default.svc.cluster.local:9080`)
//! the way `Channel::from_static` does; routing, retries, timeouts, load
//! balancing and mTLS then come from the mesh, per call. Errors the mesh
//! generates itself arrive as trailers-only gRPC responses, so tonic clients
//! see `Status` codes (`UNAVAILABLE`, `DEADLINE_EXCEEDED`, ...), never
//! transport errors.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::uri::{Authority, Scheme, Uri};
use tower::Service;

use crate::body::{boxed, BoxError, MeshBody};

/// A tonic-compatible channel to one authority over a mesh client stack.
#[derive(Debug, Clone)]
pub struct GrpcChannel<S> {
    inner: S,
    authority: Authority,
}

impl<S> GrpcChannel<S> {
    /// A channel to `authority` (`host:port`) over `inner`.
    pub fn new(inner: S, authority: Authority) -> Self {
        Self { inner, authority }
    }

    /// The authority calls are addressed to.
    pub fn authority(&self) -> &Authority {
        &self.authority
    }
}

impl<S> Service<http::Request<tonic::body::Body>> for GrpcChannel<S>
where
    S: Service<http::Request<MeshBody>, Response = http::Response<MeshBody>, Error = BoxError>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Response = http::Response<MeshBody>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        let (mut parts, body) = req.into_parts();
        let path_and_query = parts.uri.path_and_query().cloned();
        let mut uri = Uri::builder()
            .scheme(Scheme::HTTP)
            .authority(self.authority.clone());
        if let Some(pq) = path_and_query {
            uri = uri.path_and_query(pq);
        }
        match uri.build() {
            Ok(u) => parts.uri = u,
            Err(e) => return Box::pin(async move { Err(e.into()) }),
        }
        parts.version = http::Version::HTTP_2;
        let req = http::Request::from_parts(parts, boxed(body));
        // Take the service that was driven to readiness, leave a fresh clone.
        let clone = self.inner.clone();
        let mut ready = std::mem::replace(&mut self.inner, clone);
        Box::pin(ready.call(req))
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::HealthCheckRequest;
    use tower::ServiceExt;

    use super::*;

    async fn health_server() -> SocketAddr {
        let (reporter, service) = tonic_health::server::health_reporter();
        reporter
            .set_service_status("reviews", tonic_health::ServingStatus::Serving)
            .await;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(tokio_stream_from(listener))
                .await
                .unwrap();
        });
        addr
    }

    fn tokio_stream_from(
        listener: tokio::net::TcpListener,
    ) -> impl futures_util::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
        futures_util::stream::unfold(listener, |l| async move {
            let r = l.accept().await.map(|(s, _)| s);
            Some((r, l))
        })
    }

    #[tokio::test]
    async fn tonic_client_calls_through_a_mesh_style_stack() {
        let addr = health_server().await;
        // A stand-in for the mesh stack: plain HTTP/2 to the authority.
        let h2 = Client::builder(TokioExecutor::new())
            .http2_only(true)
            .build_http::<MeshBody>();
        let inner = tower::service_fn(move |req: http::Request<MeshBody>| {
            let h2 = h2.clone();
            async move {
                let resp = h2.request(req).await.map_err(BoxError::from)?;
                Ok::<_, BoxError>(resp.map(boxed))
            }
        });
        let channel = GrpcChannel::new(inner.boxed_clone(), addr.to_string().parse().unwrap());
        let mut client = HealthClient::new(channel);
        let resp = client
            .check(HealthCheckRequest {
                service: "reviews".into(),
            })
            .await
            .unwrap();
        assert_eq!(resp.into_inner().status, ServingStatus::Serving as i32);
        let missing = client
            .check(HealthCheckRequest {
                service: "nope".into(),
            })
            .await
            .unwrap_err();
        assert_eq!(missing.code(), tonic::Code::NotFound);
    }

    #[tokio::test]
    async fn mesh_errors_reach_tonic_as_status_codes() {
        let inner = tower::service_fn(|_req: http::Request<MeshBody>| async {
            let e = crate::MeshError::new(
                crate::ResponseFlag::UpstreamRequestTimeout,
                "route timeout 1s",
            );
            Ok::<_, BoxError>(e.into_response(true))
        });
        let channel = GrpcChannel::new(inner.boxed_clone(), "reviews:9080".parse().unwrap());
        let err = HealthClient::new(channel)
            .check(HealthCheckRequest::default())
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::DeadlineExceeded);
        assert_eq!(err.message(), "route timeout 1s");
    }
}
