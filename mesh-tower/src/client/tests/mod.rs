//! Tests of the routing stage with scripted inner services on tokio's
//! paused clock: the inner service records the [`Upstream`] and request it
//! got and answers as the test scripts.

mod faults;
mod retries;
mod routing;
mod timeouts;

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode, Uri};
use http_body_util::BodyExt;
use mesh_core::config::MeshConfig;
use mesh_core::model::{Client, Model};
use tokio::sync::watch;
use tower::util::BoxCloneService;
use tower::{Layer, ServiceExt};

use super::replay::Replay;
use super::rng;
use super::{layer, BoxClient, ClientOptions};
use crate::body::{self, BoxError, MeshBody};
use crate::upstream::Upstream;

pub(crate) const BASE: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: default}
spec:
  selector: {app: reviews}
  ports: [{name: http, port: 9080}]
---
apiVersion: v1
kind: Service
metadata: {name: ratings, namespace: default}
spec:
  selector: {app: ratings}
  ports: [{name: grpc, port: 9090}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: default}
spec:
  host: reviews
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
"#;

/// The model for `BASE` plus `yaml`, for a client in namespace `default`.
pub(crate) fn model(yaml: &str) -> Arc<Model> {
    model_from(BASE, yaml)
}

/// The model for `base` plus `yaml`.
pub(crate) fn model_from(base: &str, yaml: &str) -> Arc<Model> {
    let text = format!("{base}\n---\n{yaml}");
    let r = mesh_core::config::load_str(&text, "test.yaml");
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    Arc::new(mesh_core::compile::compile(
        &r.resources,
        &MeshConfig::default(),
        &Client::new("default", Default::default()),
    ))
}

/// A VirtualService for `reviews` with the given `http:` rules.
pub(crate) fn reviews_vs(http: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: reviews, namespace: default}}\nspec:\n  hosts: [reviews]\n  http:\n{http}"
    )
}

/// What the inner service saw of one attempt.
#[derive(Debug, Clone)]
pub(crate) struct Seen {
    pub upstream: Upstream,
    pub uri: Uri,
    pub headers: HeaderMap,
    pub at: tokio::time::Instant,
}

/// The record of an inner service.
#[derive(Debug, Clone, Default)]
pub(crate) struct Log(Arc<Mutex<Vec<Seen>>>);

impl Log {
    pub fn all(&self) -> Vec<Seen> {
        self.0.lock().unwrap().clone()
    }
    pub fn len(&self) -> usize {
        self.0.lock().unwrap().len()
    }
}

/// An inner service recording every request, answering with `f(n, req)`
/// where `n` counts calls from 0.
pub(crate) fn scripted<F, Fut>(f: F) -> (BoxClient, Log)
where
    F: Fn(usize, Request<MeshBody>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<Response<MeshBody>, BoxError>> + Send + 'static,
{
    let log = Log::default();
    let l = log.clone();
    let count = Arc::new(AtomicUsize::new(0));
    let svc = tower::service_fn(move |req: Request<MeshBody>| {
        let n = count.fetch_add(1, Ordering::SeqCst);
        let upstream = req
            .extensions()
            .get::<Upstream>()
            .cloned()
            .expect("routing sets Upstream");
        l.0.lock().unwrap().push(Seen {
            upstream,
            uri: req.uri().clone(),
            headers: req.headers().clone(),
            at: tokio::time::Instant::now(),
        });
        f(n, req)
    });
    (BoxCloneService::new(svc), log)
}

/// An inner service that always answers 200 "ok".
pub(crate) fn ok_service() -> (BoxClient, Log) {
    scripted(|_, _| async { Ok(status(200)) })
}

/// A response with `code` and body "ok".
pub(crate) fn status(code: u16) -> Response<MeshBody> {
    let mut r = Response::new(body::full("ok"));
    *r.status_mut() = StatusCode::from_u16(code).unwrap();
    r
}

/// A gRPC response whose `grpc-status` is in the trailers.
pub(crate) fn grpc_trailers(code: u32) -> Response<MeshBody> {
    let mut t = HeaderMap::new();
    t.insert("grpc-status", code.into());
    let replay = Replay {
        data: Bytes::from_static(b"\0\0\0\0\0"),
        trailers: Some(t),
    };
    let mut r = Response::new(replay.body());
    r.headers_mut()
        .insert("content-type", "application/grpc".parse().unwrap());
    r
}

/// The full client stack around `inner` for `model`.
pub(crate) fn stack(model: Arc<Model>, options: ClientOptions, inner: BoxClient) -> BoxClient {
    let (_tx, rx) = watch::channel(model);
    BoxCloneService::new(layer(rx, options).layer(inner))
}

/// A GET for `uri`.
pub(crate) fn get(uri: &str) -> Request<MeshBody> {
    Request::builder().uri(uri).body(body::empty()).unwrap()
}

/// A gRPC POST for `uri`.
pub(crate) fn grpc(uri: &str) -> Request<MeshBody> {
    Request::builder()
        .method("POST")
        .uri(uri)
        .header("content-type", "application/grpc")
        .body(body::full(Bytes::from_static(b"\0\0\0\0\0")))
        .unwrap()
}

/// Sends `req` through `svc`.
pub(crate) async fn send(svc: &BoxClient, req: Request<MeshBody>) -> Response<MeshBody> {
    svc.clone().oneshot(req).await.expect("the stack answers")
}

/// The body and trailers of a response.
pub(crate) async fn read(resp: Response<MeshBody>) -> (Bytes, Option<HeaderMap>) {
    let c = resp.into_body().collect().await.unwrap();
    let t = c.trailers().cloned();
    (c.to_bytes(), t)
}

/// The response flag of a response, if any.
pub(crate) fn flag(resp: &Response<MeshBody>) -> Option<&str> {
    resp.headers()
        .get(crate::RESPONSE_FLAGS_HEADER)
        .and_then(|v| v.to_str().ok())
}
