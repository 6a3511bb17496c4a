//! Helpers shared by the endpoint-stage loopback tests: a hyper backend
//! (HTTP/1.1 and h2c) that answers with its own address, a model of one
//! service over given endpoints, and a request already routed to it.
#![allow(dead_code, missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use mesh_core::config::common::Labels;
use mesh_core::config::MeshConfig;
use mesh_core::model::{Client, Model};
use mesh_tower::balance::Endpoints;
use mesh_tower::{body, MeshError, ServedBy, Upstream};

pub const HOST: &str = "svc.example.com";
pub const CLUSTER: &str = "outbound|80||svc.example.com";

pub struct Backend {
    pub addr: SocketAddr,
    pub status: Arc<AtomicU16>,
    pub delay_ms: Arc<AtomicU64>,
    pub hits: Arc<AtomicUsize>,
    pub accepts: Arc<AtomicUsize>,
}

pub async fn backend() -> Backend {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let status = Arc::new(AtomicU16::new(200));
    let delay_ms = Arc::new(AtomicU64::new(0));
    let hits = Arc::new(AtomicUsize::new(0));
    let accepts = Arc::new(AtomicUsize::new(0));
    let (s, d, h, acc) = (
        status.clone(),
        delay_ms.clone(),
        hits.clone(),
        accepts.clone(),
    );
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            acc.fetch_add(1, Ordering::SeqCst);
            let (s, d, h) = (s.clone(), d.clone(), h.clone());
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<hyper::body::Incoming>| {
                    let (s, d, h) = (s.clone(), d.clone(), h.clone());
                    async move {
                        h.fetch_add(1, Ordering::SeqCst);
                        let delay = d.load(Ordering::SeqCst);
                        if delay > 0 {
                            tokio::time::sleep(Duration::from_millis(delay)).await;
                        }
                        let host = req
                            .headers()
                            .get(http::header::HOST)
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("")
                            .to_string();
                        let mut r = Response::new(Full::new(Bytes::from(addr.to_string())));
                        *r.status_mut() = StatusCode::from_u16(s.load(Ordering::SeqCst)).unwrap();
                        r.headers_mut().insert("x-host", host.parse().unwrap());
                        r.headers_mut()
                            .insert("x-version", format!("{:?}", req.version()).parse().unwrap());
                        Ok::<_, Infallible>(r)
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Backend {
        addr,
        status,
        delay_ms,
        hits,
        accepts,
    }
}

pub fn endpoint_yaml(addr: SocketAddr, locality: &str) -> String {
    format!(
        "  - address: 127.0.0.1\n    ports: {{http: {}}}\n    locality: {locality}\n",
        addr.port()
    )
}

pub fn model_with(
    eps: &[(SocketAddr, &str)],
    protocol: &str,
    traffic_policy: &str,
    labels: &[(&str, &str)],
) -> Arc<Model> {
    let mut yaml = format!(
        "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: svc, namespace: default}}
spec:
  hosts: [{HOST}]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{name: http, number: 80, protocol: {protocol}}}]
  endpoints:
"
    );
    for (a, loc) in eps {
        yaml.push_str(&endpoint_yaml(*a, loc));
    }
    yaml.push_str(&format!(
        "---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: svc, namespace: default}}
spec:
  host: {HOST}
  trafficPolicy:
{traffic_policy}"
    ));
    let loaded = mesh_core::config::load_str(&yaml, "t.yaml");
    assert!(loaded.errors.is_empty(), "{:?}", loaded.errors);
    let labels: Labels = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let m = mesh_core::compile::compile(
        &loaded.resources,
        &MeshConfig::default(),
        &Client::new("default", labels),
    );
    assert!(m.clusters.contains_key(CLUSTER), "{:?}", m.clusters.keys());
    Arc::new(m)
}

pub fn model(backends: &[&Backend], traffic_policy: &str) -> Arc<Model> {
    let eps: Vec<(SocketAddr, &str)> = backends.iter().map(|b| (b.addr, "r1/z1/s1")).collect();
    model_with(&eps, "HTTP", traffic_policy, &[])
}

pub fn request(model: &Arc<Model>, headers: &[(&str, &str)]) -> Request<mesh_tower::MeshBody> {
    let mut b = Request::builder().uri(format!("http://{HOST}/hello"));
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let mut req = b.body(body::empty()).unwrap();
    req.extensions_mut().insert(Upstream {
        cluster: CLUSTER.into(),
        host: HOST.into(),
        port: 80,
        subset: None,
        model: model.clone().into(),
        attempt: 1,
        tried: Default::default(),
        routed: None,
    });
    req
}

pub struct Answer {
    pub status: StatusCode,
    pub served_by: SocketAddr,
    pub headers: http::HeaderMap,
}

pub async fn send(ep: &Endpoints, req: Request<mesh_tower::MeshBody>) -> Result<Answer, MeshError> {
    let fut = tower::Service::call(&mut ep.clone(), req);
    match tokio::time::timeout(Duration::from_secs(5), fut).await {
        Err(_) => panic!("request took over 5s"),
        Ok(Err(e)) => Err(MeshError::find(e.as_ref()).cloned().expect("a MeshError")),
        Ok(Ok(resp)) => {
            let served_by = resp.extensions().get::<ServedBy>().expect("ServedBy").0;
            let status = resp.status();
            let headers = resp.headers().clone();
            let body = resp.into_body().collect().await.unwrap().to_bytes();
            assert_eq!(body, served_by.to_string().as_bytes());
            Ok(Answer {
                status,
                served_by,
                headers,
            })
        }
    }
}
