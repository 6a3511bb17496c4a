//! End to end over loopback: the routing stage in front of a minimal
//! endpoint stage (first endpoint of the chosen cluster, hyper-util's legacy
//! client) talking to a real hyper HTTP/1.1 server. The real endpoint stage
//! replaces the minimal one later.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, Uri};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::{TokioExecutor, TokioIo};
use mesh_core::config::MeshConfig;
use mesh_core::model::Client as MeshClient;
use mesh_tower::body::{self, BoxError, MeshBody};
use mesh_tower::client::{self, ClientOptions};
use mesh_tower::{MeshError, ResponseFlag, Upstream};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tower::{Layer, ServiceExt};

/// A server failing its first request with 503, then echoing what it got.
async fn server() -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let count = Arc::new(AtomicUsize::new(0));
    let c = count.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let c = c.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let n = c.fetch_add(1, Ordering::SeqCst);
                    async move {
                        let path = req.uri().path().to_string();
                        let tag = req
                            .headers()
                            .get("x-tag")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("")
                            .to_string();
                        let body = req.into_body().collect().await.unwrap().to_bytes();
                        let mut resp = Response::new(Full::new(Bytes::from(format!(
                            "{path} {tag} {}",
                            body.len()
                        ))));
                        if n == 0 {
                            *resp.status_mut() = http::StatusCode::SERVICE_UNAVAILABLE;
                        }
                        Ok::<_, Infallible>(resp)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    (addr, count)
}

/// The minimal endpoint stage: the first endpoint of the Upstream's cluster.
fn endpoint_stage() -> impl tower::Service<
    Request<MeshBody>,
    Response = Response<MeshBody>,
    Error = BoxError,
    Future = impl std::future::Future<Output = Result<Response<MeshBody>, BoxError>> + Send,
> + Clone
       + Send
       + 'static {
    let http: Client<HttpConnector, MeshBody> =
        Client::builder(TokioExecutor::new()).build(HttpConnector::new());
    tower::service_fn(move |mut req: Request<MeshBody>| {
        let http = http.clone();
        async move {
            let up = req
                .extensions()
                .get::<Upstream>()
                .cloned()
                .ok_or("no Upstream")?;
            let ep = up
                .model()
                .clusters
                .get(&*up.cluster)
                .and_then(|c| c.endpoints.first())
                .ok_or_else(|| MeshError::new(ResponseFlag::NoHealthyUpstream, "no endpoint"))?;
            let pq = req
                .uri()
                .path_and_query()
                .map_or("/", |p| p.as_str())
                .to_string();
            *req.uri_mut() = format!("http://{}:{}{pq}", ep.address, ep.port).parse::<Uri>()?;
            let resp = http.request(req).await?;
            Ok::<_, BoxError>(resp.map(body::boxed))
        }
    })
}

#[tokio::test]
async fn request_flows_end_to_end_with_retry_and_rewrite() {
    let (addr, count) = server().await;
    let yaml = format!(
        r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: backend, namespace: default}}
spec:
  hosts: [backend.example]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: 80, name: http, protocol: HTTP}}]
  endpoints: [{{address: 127.0.0.1, ports: {{http: {port}}}}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: backend, namespace: default}}
spec:
  hosts: [backend.example]
  http:
  - match: [{{uri: {{prefix: /old/}}}}]
    rewrite: {{uri: /new/}}
    headers: {{request: {{set: {{x-tag: routed}}}}}}
    retries: {{attempts: 2, retryOn: 5xx}}
    timeout: 5s
    route: [{{destination: {{host: backend.example}}}}]
"#,
        port = addr.port()
    );
    let loaded = mesh_core::config::load_str(&yaml, "loopback.yaml");
    assert!(loaded.errors.is_empty(), "{:?}", loaded.errors);
    let model = mesh_core::compile::compile(
        &loaded.resources,
        &MeshConfig::default(),
        &MeshClient::new("default", Default::default()),
    );
    let (_tx, rx) = watch::channel(Arc::new(model));
    let stack = client::layer(rx, ClientOptions::default()).layer(endpoint_stage());
    let req = Request::builder()
        .method("POST")
        .uri("http://backend.example/old/thing")
        .body(body::full("hello"))
        .unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(10), stack.oneshot(req))
        .await
        .expect("answers within 10s")
        .expect("no error");
    assert_eq!(resp.status(), 200);
    let text = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(text, "/new/thing routed 5");
    assert_eq!(count.load(Ordering::SeqCst), 2, "the 503 was retried");
}

/// A server always answering `code`.
async fn fixed_server(code: u16) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |_req: Request<Incoming>| async move {
                    let mut resp = Response::new(Full::new(Bytes::from_static(b"x")));
                    *resp.status_mut() = http::StatusCode::from_u16(code).unwrap();
                    Ok::<_, Infallible>(resp)
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn retries_move_to_another_endpoint_with_the_real_endpoint_stage() {
    let bad = fixed_server(503).await;
    let good = fixed_server(200).await;
    let yaml = format!(
        r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: backend, namespace: default}}
spec:
  hosts: [backend.example]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: 80, name: http, protocol: HTTP}}]
  endpoints:
  - {{address: 127.0.0.1, ports: {{http: {bad}}}}}
  - {{address: 127.0.0.1, ports: {{http: {good}}}}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: backend, namespace: default}}
spec:
  hosts: [backend.example]
  http:
  - retries: {{attempts: 2, retryOn: 5xx}}
    route: [{{destination: {{host: backend.example}}}}]
"#,
        bad = bad.port(),
        good = good.port()
    );
    let loaded = mesh_core::config::load_str(&yaml, "loopback.yaml");
    assert!(loaded.errors.is_empty(), "{:?}", loaded.errors);
    let model = mesh_core::compile::compile(
        &loaded.resources,
        &MeshConfig::default(),
        &MeshClient::new("default", Default::default()),
    );
    let (_tx, rx) = watch::channel(Arc::new(model));
    let stack =
        client::layer(rx, ClientOptions::default()).boxed(mesh_tower::balance::Endpoints::new());
    for _ in 0..20 {
        let req = Request::builder()
            .uri("http://backend.example/")
            .body(body::empty())
            .unwrap();
        let resp = tokio::time::timeout(Duration::from_secs(10), stack.clone().oneshot(req))
            .await
            .expect("answers within 10s")
            .expect("no error");
        assert_eq!(
            resp.status(),
            200,
            "a retry avoids the endpoint that failed"
        );
    }
}
