//! A scripted State-of-the-World ADS client: the test sends each request
//! (subscribe, ACK, NACK) and reads each response itself.

use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::{
    aggregated_discovery_service_client::AggregatedDiscoveryServiceClient, DiscoveryRequest,
    DiscoveryResponse,
};
use envoy_types::pb::google::rpc::Status as RpcStatus;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::Address;

/// How long the server must stay quiet for [`Client::silent`]: virtual
/// time on a paused clock (see the module docs of [`super`]).
pub const SILENCE: Duration = Duration::from_millis(300);

/// One SotW stream; every request carries `node`.
pub struct Client {
    node: Node,
    tx: mpsc::Sender<DiscoveryRequest>,
    rx: tonic::Streaming<DiscoveryResponse>,
}

impl Client {
    /// Opens a stream to `addr` as `node`.
    pub async fn connect(addr: &Address, node: Node) -> Self {
        let mut ads = AggregatedDiscoveryServiceClient::new(addr.channel().await);
        let (tx, rx) = mpsc::channel(16);
        let rx = ads
            .stream_aggregated_resources(ReceiverStream::new(rx))
            .await
            .unwrap()
            .into_inner();
        Self { node, tx, rx }
    }

    /// Sends `request` as is, but for the node.
    pub async fn send_raw(&self, request: DiscoveryRequest) {
        let request = DiscoveryRequest {
            node: Some(self.node.clone()),
            ..request
        };
        self.tx.send(request).await.unwrap();
    }

    /// Asks for `names` of `type_url` (empty: wildcard); with `last`, it
    /// also ACKs that response (its version and nonce).
    pub async fn send(&self, type_url: &str, names: &[&str], last: Option<&DiscoveryResponse>) {
        self.send_raw(DiscoveryRequest {
            type_url: type_url.into(),
            resource_names: names.iter().map(|s| s.to_string()).collect(),
            version_info: last.map(|r| r.version_info.clone()).unwrap_or_default(),
            response_nonce: last.map(|r| r.nonce.clone()).unwrap_or_default(),
            ..Default::default()
        })
        .await;
    }

    /// ACKs `r`, still subscribed to `names`.
    pub async fn ack(&self, r: &DiscoveryResponse, names: &[&str]) {
        self.send(&r.type_url, names, Some(r)).await;
    }

    /// NACKs `r` with `message`, still subscribed to `names`, for a
    /// client that accepted nothing of that type before (empty version).
    pub async fn nack(&self, r: &DiscoveryResponse, names: &[&str], message: &str) {
        self.send_raw(DiscoveryRequest {
            type_url: r.type_url.clone(),
            resource_names: names.iter().map(|s| s.to_string()).collect(),
            response_nonce: r.nonce.clone(),
            error_detail: Some(RpcStatus {
                code: 3,
                message: message.into(),
                details: vec![],
            }),
            ..Default::default()
        })
        .await;
    }

    /// The next response; panics when none comes within 10 s.
    pub async fn recv(&mut self) -> DiscoveryResponse {
        tokio::time::timeout(Duration::from_secs(10), self.rx.message())
            .await
            .expect("a response in time")
            .unwrap()
            .expect("the stream is open")
    }

    /// The next response, or `None` once the server stayed quiet for
    /// [`SILENCE`].
    pub async fn recv_unless_silent(&mut self) -> Option<DiscoveryResponse> {
        match tokio::time::timeout(SILENCE, self.rx.message()).await {
            Ok(m) => Some(m.unwrap().expect("the stream is open")),
            Err(_) => None,
        }
    }

    /// Asserts the server sends nothing more (for [`SILENCE`]).
    pub async fn silent(&mut self) {
        if let Some(r) = self.recv_unless_silent().await {
            panic!(
                "unexpected response: {} version {} with {} resources",
                r.type_url,
                r.version_info,
                r.resources.len()
            );
        }
    }
}
