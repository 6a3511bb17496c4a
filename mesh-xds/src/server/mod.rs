//! The ADS server (State of the World) over a [`SnapshotCache`].
//!
//! `meshd` compiles a model per node, encodes it, and calls
//! [`SnapshotCache::set_snapshot`]; every stream of that node is woken and
//! pushes the types that changed. An optional hook tells the control plane
//! when a node it has no snapshot for connects, with its Istio metadata.
//!
//! Delta xDS is not implemented yet (`DeltaAggregatedResources` answers
//! UNIMPLEMENTED); gRPC clients only use SotW. CSDS comes later too.

mod cache;
mod csds;
mod deps;
#[cfg(test)]
mod mbb_tests;
mod order;
mod record;
mod stream;

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use envoy_types::pb::envoy::config::core::v3::Node;

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

pub use cache::{ConnectedNode, Nack, NodeStatus, Snapshot, SnapshotCache, TypeStatus, Versioned};
pub use csds::CsdsServer;
pub use deps::Deps;
pub use stream::{RequestKind, StreamState, PUSH_ORDER};

use crate::node::NodeInfo;

/// Called with a node's metadata when its first stream names it.
pub type NodeHook = Arc<dyn Fn(&NodeInfo) + Send + Sync>;

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
    events: broadcast::Sender<ServerEvent>,
    next_stream: Arc<AtomicU64>,
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
            events: broadcast::channel(EVENT_CAPACITY).0,
            next_stream: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Calls `hook` when a node connects (every new stream, once its node is
    /// known), so the control plane can compile a snapshot for it.
    pub fn with_node_hook(mut self, hook: impl Fn(&NodeInfo) + Send + Sync + 'static) -> Self {
        self.hook = Some(Arc::new(hook));
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

    /// The tonic service to add to a `Server`.
    pub fn into_service(self) -> AggregatedDiscoveryServiceServer<Self> {
        AggregatedDiscoveryServiceServer::new(self)
    }

    fn stream_ctx(&self, peer: Option<SocketAddr>) -> StreamCtx {
        StreamCtx {
            cache: self.cache.clone(),
            hook: self.hook.clone(),
            events: self.events.clone(),
            id: self.next_stream.fetch_add(1, Ordering::Relaxed) + 1,
            peer,
            node: None,
        }
    }
}

/// What a stream task needs besides its protocol state: where to report.
struct StreamCtx {
    cache: SnapshotCache,
    hook: Option<NodeHook>,
    events: broadcast::Sender<ServerEvent>,
    id: u64,
    peer: Option<SocketAddr>,
    node: Option<String>,
}

impl StreamCtx {
    fn emit(&self, e: ServerEvent) {
        // No subscriber is fine: events are best effort.
        let _ = self.events.send(e);
    }

    /// Registers the node of the stream (first request).
    fn connected(&mut self, node: &Node) {
        let info = NodeInfo::from_node(node);
        self.cache.stream_opened(node, &info, self.peer);
        if let Some(h) = &self.hook {
            h(&info);
        }
        self.node = Some(info.id.clone());
        self.emit(ServerEvent::Connected {
            node: info,
            stream_id: self.id,
            peer: self.peer,
        });
    }

    fn node_id(&self) -> String {
        self.node.clone().unwrap_or_default()
    }

    fn request(&self, type_url: &str, kind: &RequestKind) {
        let node_id = self.node_id();
        let type_url = type_url.to_string();
        match kind {
            RequestKind::Ack(version) => self.emit(ServerEvent::Acked {
                node_id,
                type_url,
                version: version.clone(),
            }),
            RequestKind::Nack(n) => self.emit(ServerEvent::Nacked {
                node_id,
                type_url,
                version: n.rejected_version.clone(),
                message: n.message.clone(),
            }),
            RequestKind::Subscribe | RequestKind::Stale => {}
        }
    }

    fn pushed(&self, type_url: &str, version: &str, nonce: &str) {
        self.emit(ServerEvent::Pushed {
            node_id: self.node_id(),
            type_url: type_url.to_string(),
            version: version.to_string(),
            nonce: nonce.to_string(),
        });
    }
}

impl Drop for StreamCtx {
    fn drop(&mut self) {
        if let Some(node_id) = self.node.take() {
            self.cache.stream_closed(&node_id);
            self.emit(ServerEvent::Disconnected {
                node_id,
                stream_id: self.id,
            });
        }
    }
}

type ResponseStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

async fn send(
    ctx: &StreamCtx,
    tx: &mpsc::Sender<Result<DiscoveryResponse, Status>>,
    r: DiscoveryResponse,
) -> bool {
    let (t, v, n) = (r.type_url.clone(), r.version_info.clone(), r.nonce.clone());
    if tx.send(Ok(r)).await.is_err() {
        return false;
    }
    ctx.pushed(&t, &v, &n);
    true
}

async fn run_stream(
    mut ctx: StreamCtx,
    mut requests: Streaming<DiscoveryRequest>,
    tx: mpsc::Sender<Result<DiscoveryResponse, Status>>,
) {
    let cache = ctx.cache.clone();
    let mut state = StreamState::new(cache.clone());
    let mut watch: Option<tokio::sync::watch::Receiver<Option<Arc<Versioned>>>> = None;
    loop {
        let changed = async {
            match watch.as_mut() {
                Some(w) => w.changed().await.is_ok(),
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            req = requests.next() => {
                let req = match req {
                    Some(Ok(r)) => r,
                    Some(Err(e)) => {
                        tracing::debug!(error = %e, "ADS stream error");
                        return;
                    }
                    None => return,
                };
                if state.node().is_none() {
                    let Some(node) = req.node.as_ref() else {
                        let _ = tx.send(Err(Status::invalid_argument(
                            "the first DiscoveryRequest of a stream must carry `node` (the client's id and metadata)",
                        ))).await;
                        return;
                    };
                    state.set_node(&node.id);
                    ctx.connected(node);
                    watch = Some(cache.watch(&node.id));
                }
                let snap = watch.as_mut().and_then(|w| w.borrow_and_update().clone());
                let (kind, resp) = state.on_request(&req, snap.as_ref());
                ctx.request(&req.type_url, &kind);
                for r in resp {
                    if !send(&ctx, &tx, r).await {
                        return;
                    }
                }
            }
            ok = changed => {
                if !ok {
                    // The node's snapshot was cleared: keep serving what was sent.
                    watch = None;
                    continue;
                }
                let snap = watch.as_mut().and_then(|w| w.borrow_and_update().clone());
                if let Some(s) = snap {
                    for r in state.on_snapshot(&s) {
                        if !send(&ctx, &tx, r).await {
                            return;
                        }
                    }
                }
            }
        }
    }
}

#[tonic::async_trait]
impl AggregatedDiscoveryService for AdsServer {
    type StreamAggregatedResourcesStream = ResponseStream<DiscoveryResponse>;

    async fn stream_aggregated_resources(
        &self,
        request: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<Self::StreamAggregatedResourcesStream>, Status> {
        let (tx, rx) = mpsc::channel(16);
        let ctx = self.stream_ctx(request.remote_addr());
        tokio::spawn(run_stream(ctx, request.into_inner(), tx));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    type DeltaAggregatedResourcesStream = ResponseStream<DeltaDiscoveryResponse>;

    async fn delta_aggregated_resources(
        &self,
        _request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaAggregatedResourcesStream>, Status> {
        Err(Status::unimplemented(
            "Delta xDS is not supported yet; use State of the World (StreamAggregatedResources)",
        ))
    }
}
