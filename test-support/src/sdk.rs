//! The SDK (`mesh_tower::Mesh`) under test: the workload it runs as, a
//! control plane's publishing step for it, and a GET through its client.

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Empty};
use mesh_core::config::MeshConfig;
use mesh_core::model::Client;
use mesh_tower::source::xds::node_info;
use mesh_xds::client::default_node_id;
use mesh_xds::encode::{encode, EncodeOptions};
use mesh_xds::server::{Snapshot, SnapshotCache};

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

/// What the control plane does for `client`'s node: compile `yaml`,
/// encode, put the snapshot in `cache`.
pub fn publish(cache: &SnapshotCache, yaml: &str, client: &Client) {
    let loaded = mesh_core::config::load_str(yaml, "mesh.yaml");
    assert!(loaded.errors.is_empty(), "{:?}", loaded.errors);
    let model = mesh_core::compile::compile(&loaded.resources, &MeshConfig::default(), client);
    cache.set_snapshot(
        &default_node_id(&node_info(client)),
        Snapshot::from_resources(&encode(&model, &EncodeOptions::default())),
    );
}

/// Status, `x-mesh-response-flags` and body of a GET of `uri` through
/// `client`.
pub async fn get(client: &mesh_tower::MeshClient, uri: &str) -> (u16, String, String) {
    let resp = client
        .request(Request::get(uri).body(Empty::<Bytes>::new()).unwrap())
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let flags = resp
        .headers()
        .get(mesh_tower::RESPONSE_FLAGS_HEADER)
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, flags, String::from_utf8_lossy(&body).into_owned())
}

/// A plaintext ADS server over `cache` on loopback; its URL for
/// `Mesh::xds`.
pub async fn ads_server(cache: SnapshotCache) -> String {
    let addr = crate::ads::serve_tcp(mesh_xds::server::AdsServer::new(cache)).await;
    format!("http://{}", addr.socket())
}
