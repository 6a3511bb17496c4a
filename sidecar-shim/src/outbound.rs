//! The app's own requests into the SDK's client stack: routing, splits,
//! retries, timeouts, faults, outlier detection, mTLS origination and
//! `reporter="source"` telemetry are all the SDK's, for every listener.
//!
//! - the explicit proxy port (`HTTP_PROXY=http://127.0.0.1:15001`);
//! - one port per upstream (`--upstream 9080=reviews:9080`), for apps whose
//!   HTTP client cannot use a proxy.

use std::future::Future;
use std::time::Duration;

use http::uri::Authority;
use http::{Request, Response, StatusCode};
use mesh_tower::body::MeshBody;
use mesh_tower::server::{strip_hop_by_hop, PlainServer};
use mesh_tower::{Mesh, MeshClient, MeshError, ResponseFlag};
use tokio::net::TcpListener;

use crate::capture::{self, CaptureError};

/// The outbound side: shared by all outbound listeners, so they share
/// connection pools, balancers and outlier state.
#[derive(Debug, Clone)]
pub struct Outbound {
    client: MeshClient,
    header_timeout: Duration,
    drain_timeout: Duration,
}

impl Outbound {
    /// The outbound side of `mesh`.
    pub fn new(mesh: &Mesh, header_timeout: Duration, drain_timeout: Duration) -> Self {
        Outbound {
            client: mesh.http_client(),
            header_timeout,
            drain_timeout,
        }
    }

    fn server(&self, name: &'static str) -> PlainServer {
        PlainServer::new(name)
            .header_timeout(self.header_timeout)
            .drain_timeout(self.drain_timeout)
    }

    /// Serves the explicit proxy port until `signal`.
    pub async fn serve_proxy(self, listener: TcpListener, signal: impl Future<Output = ()>) {
        let client = self.client.clone();
        let svc = tower::service_fn(move |mut req: Request<MeshBody>| {
            let captured = capture::from_proxy(&mut req);
            send(client.clone(), req, captured)
        });
        self.server("outbound")
            .serve_with_shutdown(listener, svc, signal)
            .await;
    }

    /// Serves a per-upstream port for `authority` until `signal`.
    pub async fn serve_upstream(
        self,
        listener: TcpListener,
        authority: String,
        signal: impl Future<Output = ()>,
    ) {
        let authority: Authority = match authority.parse() {
            Ok(a) => a,
            Err(e) => {
                tracing::error!(%authority, error = %e, "upstream is not an authority; listener not served");
                return;
            }
        };
        let client = self.client.clone();
        let svc = tower::service_fn(move |mut req: Request<MeshBody>| {
            let captured = capture::to_upstream(&mut req, &authority);
            send(client.clone(), req, captured)
        });
        self.server("upstream")
            .serve_with_shutdown(listener, svc, signal)
            .await;
    }
}

async fn send(
    client: MeshClient,
    mut req: Request<MeshBody>,
    captured: Result<(), CaptureError>,
) -> Result<Response<MeshBody>, mesh_tower::BoxError> {
    if let Err(e) = captured {
        let grpc = mesh_tower::error::is_grpc(&req);
        return Ok(MeshError::new(ResponseFlag::NoRoute, e.0)
            .with_status(StatusCode::BAD_REQUEST)
            .into_response(grpc));
    }
    strip_hop_by_hop(req.headers_mut());
    let mut resp = client.request(req).await?;
    strip_hop_by_hop(resp.headers_mut());
    Ok(resp)
}
