//! Helpers shared by the `sdk_xds*` integration tests: a loopback backend,
//! the workload, and a control plane made of a real ADS server over a
//! snapshot cache (included with `#[path]`; compiled on its own it has no
//! tests).
#![allow(dead_code, missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::Full;
use mesh_core::config::MeshConfig;
use mesh_core::model::Client;
use mesh_tower::source::xds::node_info;
use mesh_xds::client::default_node_id;
use mesh_xds::encode::{encode, EncodeOptions};
use mesh_xds::server::{AdsServer, Snapshot, SnapshotCache};

/// A hyper HTTP/1.1 server answering every request with `name`.
pub async fn backend(name: &'static str) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |_req| async move {
                    Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from(name))))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

/// The `app: web` workload in `default`, with service account `sa`.
pub fn workload(sa: Option<&str>) -> Client {
    let mut c = Client::new(
        "default",
        [("app".to_string(), "web".to_string())]
            .into_iter()
            .collect(),
    );
    c.service_account = sa.map(str::to_string);
    c
}

/// What the control plane does per node: compile, encode, snapshot.
pub fn publish(cache: &SnapshotCache, yaml: &str, client: &Client) {
    let loaded = mesh_core::config::load_str(yaml, "mesh.yaml");
    assert!(loaded.errors.is_empty(), "{:?}", loaded.errors);
    let model = mesh_core::compile::compile(&loaded.resources, &MeshConfig::default(), client);
    cache.set_snapshot(
        &default_node_id(&node_info(client)),
        Snapshot::from_resources(&encode(&model, &EncodeOptions::default())),
    );
}

/// A plaintext ADS server over `cache` on loopback; its URL.
pub async fn ads_server(cache: SnapshotCache) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let incoming = futures_util::stream::unfold(listener, |l| async move {
        Some((l.accept().await.map(|(s, _)| s), l))
    });
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(AdsServer::new(cache).into_service())
            .serve_with_incoming(incoming),
    );
    format!("http://{addr}")
}
