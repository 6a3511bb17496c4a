//! A killable ADS server on loopback and helpers for the ADS client tests.
#![allow(dead_code, missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use mesh_core::model::Model;
use mesh_xds::client::{XdsClient, XdsClientConfig};
use mesh_xds::encode::{encode, EncodeOptions};
use mesh_xds::node::NodeInfo;
use mesh_xds::server::{AdsServer, Snapshot, SnapshotCache};
use tokio_stream::wrappers::TcpListenerStream;

/// An ADS server in its own thread and runtime, so that killing it closes
/// every connection at once, as a crashed control plane would.
pub struct TestServer {
    pub addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TestServer {
    /// Serves `cache` on `addr` (port 0 for any).
    pub fn start(cache: SnapshotCache, addr: SocketAddr) -> Self {
        let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let sock = tokio::net::TcpSocket::new_v4().unwrap();
                sock.set_reuseaddr(true).unwrap();
                sock.bind(addr).unwrap();
                let listener = sock.listen(64).unwrap();
                addr_tx.send(listener.local_addr().unwrap()).unwrap();
                let serve = tonic::transport::Server::builder()
                    .add_service(AdsServer::new(cache).into_service())
                    .serve_with_incoming(TcpListenerStream::new(listener));
                tokio::select! {
                    _ = serve => {}
                    _ = stop_rx => {}
                }
            });
            // Dropping the runtime drops every connection task.
            drop(rt);
        });
        let addr = addr_rx.recv_timeout(Duration::from_secs(5)).unwrap();
        Self {
            addr,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    pub fn any(cache: SnapshotCache) -> Self {
        Self::start(cache, "127.0.0.1:0".parse().unwrap())
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn kill(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A loopback address nobody listens on (bound, then released).
pub fn free_addr() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

pub fn node(ns: &str, labels: &[(&str, &str)]) -> NodeInfo {
    NodeInfo {
        namespace: Some(ns.to_string()),
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..NodeInfo::default()
    }
}

/// Puts `model`, encoded as the control plane would, in `cache` for `node_id`.
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
pub async fn wait_status(
    client: &XdsClient,
    what: &str,
    f: impl Fn(&mesh_xds::client::XdsStatus) -> bool,
) {
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

pub fn arc(m: Model) -> Arc<Model> {
    Arc::new(m)
}
