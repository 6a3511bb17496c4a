//! [`MeshMetrics`]: the workload's Prometheus registry, holding the mesh's
//! Istio metrics and whatever the application registers beside them, and
//! the `/stats/prometheus` handler that serves them (the path and
//! format Istio's sidecars scrape at, so existing scrape configs, Kiali and
//! the Grafana dashboards work unchanged).

use std::convert::Infallible;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{header, Request, Response, StatusCode};
use mesh_core::exposition::{
    openmetrics_to_classic, wants_openmetrics, CLASSIC_CONTENT_TYPE, OPENMETRICS_CONTENT_TYPE,
};
use mesh_core::sync::LockExt;
use prometheus_client::registry::Registry;

use super::metrics::RequestMetrics;
use super::tcp::TcpMetrics;
use crate::body::{full, MeshBody};

/// The path Istio's sidecars serve merged metrics at.
pub const STATS_PATH: &str = "/stats/prometheus";

/// A workload's metrics registry. Clones share it.
///
/// ```
/// use prometheus_client::metrics::counter::Counter;
/// let metrics = mesh_tower::telemetry::MeshMetrics::new();
/// let orders: Counter = Counter::default();
/// metrics.register("shop_orders", "Orders placed.", orders.clone());
/// orders.inc();
/// assert!(metrics.render().contains("shop_orders_total 1"));
/// ```
#[derive(Clone)]
pub struct MeshMetrics {
    inner: Arc<Inner>,
}

struct Inner {
    registry: Mutex<Registry>,
    requests: Arc<RequestMetrics>,
    tcp: Arc<TcpMetrics>,
}

impl fmt::Debug for MeshMetrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MeshMetrics")
            .field("requests", &self.inner.requests)
            .finish()
    }
}

impl Default for MeshMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl MeshMetrics {
    /// An empty registry with the Istio request metrics in it.
    pub fn new() -> Self {
        let requests = Arc::new(RequestMetrics::default());
        let tcp = Arc::new(TcpMetrics::default());
        let mut registry = Registry::default();
        registry.register_collector(Box::new(requests.clone()));
        registry.register_collector(Box::new(tcp.clone()));
        MeshMetrics {
            inner: Arc::new(Inner {
                registry: Mutex::new(registry),
                requests,
                tcp,
            }),
        }
    }

    /// Adds an application metric (any prometheus-client metric), served
    /// next to the mesh's.
    pub fn register<N, H, M>(&self, name: N, help: H, metric: M)
    where
        N: Into<String>,
        H: Into<String>,
        M: prometheus_client::registry::Metric,
    {
        self.inner.registry.locked().register(name, help, metric);
    }

    /// Runs `f` on the registry, for what [`MeshMetrics::register`] does
    /// not cover (units, sub-registries with a prefix, collectors).
    pub fn with_registry<R>(&self, f: impl FnOnce(&mut Registry) -> R) -> R {
        f(&mut self.inner.registry.locked())
    }

    /// The exposition in the classic Prometheus text format.
    pub fn render(&self) -> String {
        openmetrics_to_classic(&self.render_openmetrics())
    }

    /// The exposition as OpenMetrics text.
    pub fn render_openmetrics(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.inner.registry.locked());
        out
    }

    /// A ready handler for [`STATS_PATH`]: any request gets the exposition,
    /// OpenMetrics when the `Accept` header asks for it. Mount it on the
    /// app's router or serve it on its own port.
    pub fn handler(&self) -> StatsHandler {
        StatsHandler {
            metrics: self.clone(),
        }
    }

    /// Serves [`STATS_PATH`] (HTTP/1.1 and HTTP/2) on `listener` until the
    /// returned task is dropped or aborted, as a sidecar's merged metrics
    /// port (15020) does; any other path is 404.
    pub fn serve(&self, listener: tokio::net::TcpListener) -> tokio::task::JoinHandle<()> {
        let handler = self.handler();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let handler = handler.clone();
                tokio::spawn(async move {
                    let svc =
                        hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                            let resp = if req.uri().path() == STATS_PATH {
                                handler.respond(&req)
                            } else {
                                let mut r = Response::new(full("try /stats/prometheus\n"));
                                *r.status_mut() = StatusCode::NOT_FOUND;
                                r
                            };
                            std::future::ready(Ok::<_, Infallible>(resp))
                        });
                    let _ = hyper_util::server::conn::auto::Builder::new(
                        hyper_util::rt::TokioExecutor::new(),
                    )
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                    .await;
                });
            }
        })
    }

    pub(crate) fn requests(&self) -> &RequestMetrics {
        &self.inner.requests
    }

    pub(crate) fn tcp(&self) -> &TcpMetrics {
        &self.inner.tcp
    }
}

/// The `/stats/prometheus` service from [`MeshMetrics::handler`].
#[derive(Debug, Clone)]
pub struct StatsHandler {
    metrics: MeshMetrics,
}

impl StatsHandler {
    /// The response to `req`.
    pub fn respond<B>(&self, req: &Request<B>) -> Response<MeshBody> {
        let accept = req.headers().get_all(header::ACCEPT);
        let (ty, body) = if wants_openmetrics(accept.iter().filter_map(|v| v.to_str().ok())) {
            (OPENMETRICS_CONTENT_TYPE, self.metrics.render_openmetrics())
        } else {
            (CLASSIC_CONTENT_TYPE, self.metrics.render())
        };
        let mut resp = Response::new(full(Bytes::from(body)));
        *resp.status_mut() = StatusCode::OK;
        resp.headers_mut()
            .insert(header::CONTENT_TYPE, header::HeaderValue::from_static(ty));
        resp
    }
}

impl<B> tower::Service<Request<B>> for StatsHandler {
    type Response = Response<MeshBody>;
    type Error = Infallible;
    type Future = std::future::Ready<Result<Response<MeshBody>, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        std::future::ready(Ok(self.respond(&req)))
    }
}
