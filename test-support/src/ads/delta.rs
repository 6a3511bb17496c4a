//! A scripted Delta (incremental) ADS client: the test subscribes, ACKs
//! and reads each response itself.

use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::{
    aggregated_discovery_service_client::AggregatedDiscoveryServiceClient, DeltaDiscoveryRequest,
    DeltaDiscoveryResponse,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::{Address, SILENCE};

/// One Delta stream; every request carries `node`.
pub struct Delta {
    node: Node,
    tx: mpsc::Sender<DeltaDiscoveryRequest>,
    rx: tonic::Streaming<DeltaDiscoveryResponse>,
}

impl Delta {
    /// Opens a Delta stream to `addr` as `node`.
    pub async fn connect(addr: &Address, node: Node) -> Self {
        let mut ads = AggregatedDiscoveryServiceClient::new(addr.channel().await);
        let (tx, rx) = mpsc::channel(16);
        let rx = ads
            .delta_aggregated_resources(ReceiverStream::new(rx))
            .await
            .unwrap()
            .into_inner();
        Self { node, tx, rx }
    }

    /// Sends `r` as is, but for the node.
    pub async fn send(&self, r: DeltaDiscoveryRequest) {
        self.tx
            .send(DeltaDiscoveryRequest {
                node: Some(self.node.clone()),
                ..r
            })
            .await
            .unwrap();
    }

    /// Subscribes to `names` of `type_url` (none on the first request of
    /// a type: wildcard).
    pub async fn subscribe(&self, type_url: &str, names: &[&str]) {
        self.send(DeltaDiscoveryRequest {
            type_url: type_url.into(),
            resource_names_subscribe: names.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        })
        .await;
    }

    /// ACKs `r`.
    pub async fn ack(&self, r: &DeltaDiscoveryResponse) {
        self.send(DeltaDiscoveryRequest {
            type_url: r.type_url.clone(),
            response_nonce: r.nonce.clone(),
            ..Default::default()
        })
        .await;
    }

    /// The next response; panics when none comes within 10 s.
    pub async fn recv(&mut self) -> DeltaDiscoveryResponse {
        tokio::time::timeout(Duration::from_secs(10), self.rx.message())
            .await
            .expect("a response in time")
            .unwrap()
            .expect("the stream is open")
    }

    /// Asserts the server sends nothing more (for [`SILENCE`]).
    pub async fn silent(&mut self) {
        if let Ok(m) = tokio::time::timeout(SILENCE, self.rx.message()).await {
            let r = m.unwrap().expect("the stream is open");
            let names: Vec<&str> = r.resources.iter().map(|x| x.name.as_str()).collect();
            panic!(
                "unexpected response: {} {names:?} removed {:?}",
                r.type_url, r.removed_resources
            );
        }
    }
}
