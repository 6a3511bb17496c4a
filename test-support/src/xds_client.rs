//! Helpers for tests of the ADS client (`mesh_xds::client::XdsClient`)
//! against a real server: node info, fast settings, the model a server
//! holds, and waits for the client's model or status.

use std::net::SocketAddr;
use std::time::Duration;

use mesh_core::model::Model;
use mesh_xds::client::{XdsClient, XdsClientConfig, XdsStatus};
use mesh_xds::encode::{encode, EncodeOptions};
use mesh_xds::node::NodeInfo;
use mesh_xds::server::{Snapshot, SnapshotCache};

/// A loopback address nobody listens on (bound, then released).
pub fn free_addr() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

/// Node info for a workload in `ns` with `labels`.
pub fn node_info(ns: &str, labels: &[(&str, &str)]) -> NodeInfo {
    NodeInfo {
        namespace: Some(ns.to_string()),
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..NodeInfo::default()
    }
}

/// Puts `model`, encoded as the control plane would, in `cache` for
/// `node_id`; returns the type URLs that changed.
pub fn serve_model(cache: &SnapshotCache, node_id: &str, model: &Model) -> Vec<String> {
    cache.set_snapshot(
        node_id,
        Snapshot::from_resources(&encode(model, &EncodeOptions::default())),
    )
}

/// Fast settings for loopback tests.
pub fn config(servers: Vec<String>, node: NodeInfo) -> XdsClientConfig {
    let mut c = XdsClientConfig::new(servers, node);
    c.backoff_base = Duration::from_millis(50);
    c.backoff_max = Duration::from_millis(200);
    c.connect_timeout = Duration::from_secs(1);
    c.primary_retry = Duration::from_millis(200);
    c
}

/// The model as JSON, the form in which two models are compared (a model
/// holds prebuilt matchers, so it has no `PartialEq`).
pub fn json(m: &Model) -> serde_json::Value {
    serde_json::to_value(m).unwrap()
}

/// The parts xDS carries (client-side listeners, routes, clusters,
/// endpoints), plus who the model is for and the mesh settings. The inbound
/// policy is compiled where the config is and not decoded from the
/// server-side listeners' RBAC.
pub fn outbound_json(m: &Model) -> serde_json::Value {
    let mut v = json(m);
    v.as_object_mut().unwrap().remove("inbound");
    v
}

/// Waits until the client's model equals `want` (all but the inbound policy).
pub async fn wait_for_model(client: &XdsClient, want: &Model, what: &str) {
    let want = outbound_json(want);
    let mut rx = client.model();
    let res = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if outbound_json(&rx.borrow_and_update()) == want {
                return;
            }
            rx.changed().await.unwrap();
        }
    })
    .await;
    if res.is_err() {
        let got = json(&client.current());
        panic!(
            "{what}: model not reached in 10s; status {:?}\n got outbound {:?}",
            client.status(),
            got["outbound"]
                .as_object()
                .map(|o| o.keys().collect::<Vec<_>>())
        );
    }
}

/// Waits until `f` holds for the client's status.
pub async fn wait_status(client: &XdsClient, what: &str, f: impl Fn(&XdsStatus) -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let s = client.status();
        if f(&s) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not reached in 10s; status {s:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// True once the client, disconnected, has tried its server again and
/// failed to connect (not just lost the stream).
pub fn reconnect_failed(s: &XdsStatus) -> bool {
    s.connected.is_none()
        && s.last_error
            .as_deref()
            .is_some_and(|e| e.starts_with("connect to "))
}
