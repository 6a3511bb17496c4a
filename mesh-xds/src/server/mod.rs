//! The ADS server (State of the World and Delta) and CSDS over a
//! [`SnapshotCache`].
//!
//! `meshd` compiles a model per node, encodes it, and calls
//! [`SnapshotCache::set_snapshot`]; every stream of that node is woken and
//! pushes what changed. An optional hook tells the control plane when a
//! node connects, with its Istio metadata; [`AdsServer::events`] reports
//! connects, disconnects, pushes, ACKs and NACKs as they happen.
//!
//! - `stream`: the SotW protocol of one stream (what gRPC clients speak).
//! - `delta`: the incremental protocol of one stream (Envoy's Delta ADS).
//! - `order`: make-before-break, shared by both: a listener or route that
//!   references a cluster the client has not ACKed is held back until it
//!   has (CDS, then EDS); a removed cluster keeps being sent while routes
//!   the client has still use it.
//! - `service`: the I/O loop around either protocol.
//! - [`CsdsServer`]: `ClientStatusDiscoveryService`, what each connected
//!   client holds, per resource.
//!
//! Not here: compiling snapshots (the control plane does that per node).

mod cache;
mod csds;
mod delta;
#[cfg(test)]
mod delta_tests;
mod deps;
#[cfg(test)]
mod mbb_tests;
mod order;
mod record;
mod service;
mod stream;

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use envoy_types::pb::envoy::service::discovery::v3::{
    aggregated_discovery_service_server::{
        AggregatedDiscoveryService, AggregatedDiscoveryServiceServer,
    },
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

pub use cache::{
    same_resource, ConnectedNode, Content, Nack, NodeStatus, ResourceView, Snapshot, SnapshotCache,
    TypeStatus, Versioned,
};
pub use csds::CsdsServer;
pub use delta::DeltaState;
pub use deps::Deps;
pub use stream::{RequestKind, StreamState, PUSH_ORDER};

use crate::node::NodeInfo;

/// Called with a node's metadata when its first stream names it.
pub type NodeHook = Arc<dyn Fn(&NodeInfo) + Send + Sync>;

/// Decides whether a stream may go on as the node it names: called with
/// the node and the stream request's extensions (where a layer in front,
/// such as an authenticating interceptor, left what it proved about the
/// caller). An error ends the stream with that status before the node is
/// registered or sent anything.
pub type NodeCheck = Arc<dyn Fn(&NodeInfo, &tonic::Extensions) -> Result<(), Status> + Send + Sync>;

/// Something that happened on an ADS stream, for the control plane's
/// metrics, logs and debug views (see [`AdsServer::events`]).
#[derive(Debug, Clone)]
pub enum ServerEvent {
    /// A stream named its node (first request). `peer` is the TCP peer
    /// address when tonic knows it.
    Connected {
        /// What the node said about itself.
        node: NodeInfo,
        /// Unique per stream for the life of the server.
        stream_id: u64,
        /// TCP peer.
        peer: Option<SocketAddr>,
    },
    /// The stream ended (client went away or error).
    Disconnected {
        /// Node id.
        node_id: String,
        /// The stream.
        stream_id: u64,
    },
    /// A response was sent.
    Pushed {
        /// Node id.
        node_id: String,
        /// Resource type.
        type_url: String,
        /// `version_info` (SotW) or `system_version_info` (Delta).
        version: String,
        /// The response nonce.
        nonce: String,
        /// Encoded size of the resources it carried, in bytes.
        bytes: usize,
    },
    /// The client ACKed `version` of `type_url`.
    Acked {
        /// Node id.
        node_id: String,
        /// Resource type.
        type_url: String,
        /// The version ACKed.
        version: String,
    },
    /// The client NACKed; `message` is its error_detail.
    Nacked {
        /// Node id.
        node_id: String,
        /// Resource type.
        type_url: String,
        /// The version rejected.
        version: String,
        /// The client's `error_detail.message`.
        message: String,
    },
}

/// How many events a slow subscriber may fall behind before it loses the
/// oldest ones.
const EVENT_CAPACITY: usize = 1024;

/// The ADS service.
#[derive(Clone)]
pub struct AdsServer {
    cache: SnapshotCache,
    hook: Option<NodeHook>,
    check: Option<NodeCheck>,
    events: broadcast::Sender<ServerEvent>,
    next_stream: Arc<AtomicU64>,
    closing: Option<tokio::sync::watch::Receiver<bool>>,
}

impl std::fmt::Debug for AdsServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdsServer")
            .field("cache", &self.cache)
            .field("hook", &self.hook.is_some())
            .finish()
    }
}

impl AdsServer {
    /// A server over `cache`.
    pub fn new(cache: SnapshotCache) -> Self {
        Self {
            cache,
            hook: None,
            check: None,
            events: broadcast::channel(EVENT_CAPACITY).0,
            next_stream: Arc::new(AtomicU64::new(0)),
            closing: None,
        }
    }

    /// Calls `hook` when a node connects (every new stream, once its node is
    /// known), so the control plane can compile a snapshot for it.
    pub fn with_node_hook(mut self, hook: impl Fn(&NodeInfo) + Send + Sync + 'static) -> Self {
        self.hook = Some(Arc::new(hook));
        self
    }

    /// Admits each stream's node with `check` (see [`NodeCheck`]), e.g.
    /// that the identity a TLS port authenticated is the one the node
    /// claims. Clones made before this call do not check.
    pub fn with_node_check(
        mut self,
        check: impl Fn(&NodeInfo, &tonic::Extensions) -> Result<(), Status> + Send + Sync + 'static,
    ) -> Self {
        self.check = Some(Arc::new(check));
        self
    }

    /// The cache.
    pub fn cache(&self) -> &SnapshotCache {
        &self.cache
    }

    /// Subscribes to stream events. Lagging subscribers lose the oldest
    /// events (`RecvError::Lagged`) rather than slowing the server down.
    pub fn events(&self) -> broadcast::Receiver<ServerEvent> {
        self.events.subscribe()
    }

    /// A CSDS server reporting on the same cache (add its
    /// [`CsdsServer::into_service`] next to this one).
    pub fn csds(&self) -> CsdsServer {
        CsdsServer::new(self.cache.clone())
    }

    /// The tonic service to add to a `Server`.
    pub fn into_service(self) -> AggregatedDiscoveryServiceServer<Self> {
        AggregatedDiscoveryServiceServer::new(self)
    }

    fn stream_ctx<T>(&self, request: &Request<T>) -> service::StreamCtx {
        service::StreamCtx {
            cache: self.cache.clone(),
            hook: self.hook.clone(),
            // Only a checking server needs them past the call.
            check: self
                .check
                .clone()
                .map(|c| (c, request.extensions().clone())),
            events: self.events.clone(),
            id: self.next_stream.fetch_add(1, Ordering::Relaxed) + 1,
            peer: request.remote_addr(),
            node: None,
            closing: self.closing.clone(),
        }
    }

    /// Ends every stream (with UNAVAILABLE, so clients reconnect) once
    /// `closing` turns true or its sender goes away: a server shutting down
    /// must not leave streams that outlive it.
    pub fn with_shutdown(mut self, closing: tokio::sync::watch::Receiver<bool>) -> Self {
        self.closing = Some(closing);
        self
    }
}

type ResponseStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl AggregatedDiscoveryService for AdsServer {
    type StreamAggregatedResourcesStream = ResponseStream<DiscoveryResponse>;

    async fn stream_aggregated_resources(
        &self,
        request: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<Self::StreamAggregatedResourcesStream>, Status> {
        let (tx, rx) = mpsc::channel(16);
        let ctx = self.stream_ctx(&request);
        let state = StreamState::new(self.cache.clone());
        tokio::spawn(service::run(ctx, state, request.into_inner(), tx));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx).map(|b| *b))))
    }

    type DeltaAggregatedResourcesStream = ResponseStream<DeltaDiscoveryResponse>;

    async fn delta_aggregated_resources(
        &self,
        request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaAggregatedResourcesStream>, Status> {
        let (tx, rx) = mpsc::channel(16);
        let ctx = self.stream_ctx(&request);
        let state = DeltaState::new(self.cache.clone());
        tokio::spawn(service::run(ctx, state, request.into_inner(), tx));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx).map(|b| *b))))
    }
}
