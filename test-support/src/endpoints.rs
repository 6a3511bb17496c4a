//! The endpoint stage (`mesh_tower::balance::Endpoints`) under test: the
//! model of one service over loopback backends, requests already routed
//! to it, and sending one.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, StatusCode};
use http_body_util::BodyExt;
use mesh_core::config::common::Labels;
use mesh_core::config::MeshConfig;
use mesh_core::model::{Client, Model};
use mesh_tower::balance::Endpoints;
use mesh_tower::{body, MeshError, ServedBy, Upstream};

use crate::backends::Backend;

/// The service's host.
pub const HOST: &str = "svc.example.com";
/// Its cluster.
pub const CLUSTER: &str = "outbound|80||svc.example.com";

/// One STATIC endpoint on 127.0.0.1 at `addr`'s port, in `locality`.
pub fn endpoint_yaml(addr: SocketAddr, locality: &str) -> String {
    format!(
        "  - address: 127.0.0.1\n    ports: {{http: {}}}\n    locality: {locality}\n",
        addr.port()
    )
}

/// The model of a client (`default`, `labels`) calling [`HOST`]: a
/// ServiceEntry over `eps` (address, locality) on a port of `protocol`,
/// and a DestinationRule with `traffic_policy` (indented YAML).
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

/// [`model_with`] over `backends`, all in one locality, HTTP.
pub fn model(backends: &[&Backend], traffic_policy: &str) -> Arc<Model> {
    let eps: Vec<(SocketAddr, &str)> = backends.iter().map(|b| (b.addr, "r1/z1/s1")).collect();
    model_with(&eps, "HTTP", traffic_policy, &[])
}

/// A request already routed to [`CLUSTER`] with `model`, as the routing
/// stage hands it to the endpoint stage.
pub fn request(model: &Arc<Model>, headers: &[(&str, &str)]) -> Request<mesh_tower::MeshBody> {
    let mut b = Request::builder().uri(format!("http://{HOST}/hello"));
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let mut req = b.body(body::empty()).unwrap();
    req.extensions_mut()
        .insert(Upstream::new(CLUSTER, HOST, 80, model.clone()));
    req
}

/// What a [`Backend`] answered.
pub struct Answer {
    /// The status.
    pub status: StatusCode,
    /// Which backend served it (from the `ServedBy` extension, checked
    /// against the body).
    pub served_by: SocketAddr,
    /// The response headers.
    pub headers: http::HeaderMap,
}

/// Sends `req` through `ep`; the answer, or the `MeshError` it failed
/// with. Panics when it takes over 5 s.
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
