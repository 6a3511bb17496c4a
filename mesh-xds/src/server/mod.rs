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
mod stream;

use std::pin::Pin;
use std::sync::Arc;

use envoy_types::pb::envoy::service::discovery::v3::{
    aggregated_discovery_service_server::{
        AggregatedDiscoveryService, AggregatedDiscoveryServiceServer,
    },
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

pub use cache::{Nack, NodeStatus, Snapshot, SnapshotCache, TypeStatus, Versioned};
pub use stream::{RequestKind, StreamState, PUSH_ORDER};

use crate::node::NodeInfo;

/// Called with a node's metadata when its first stream names it.
pub type NodeHook = Arc<dyn Fn(&NodeInfo) + Send + Sync>;

/// The ADS service.
#[derive(Clone)]
pub struct AdsServer {
    cache: SnapshotCache,
    hook: Option<NodeHook>,
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
        Self { cache, hook: None }
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

    /// The tonic service to add to a `Server`.
    pub fn into_service(self) -> AggregatedDiscoveryServiceServer<Self> {
        AggregatedDiscoveryServiceServer::new(self)
    }
}

type ResponseStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

async fn run_stream(
    cache: SnapshotCache,
    hook: Option<NodeHook>,
    mut requests: Streaming<DiscoveryRequest>,
    tx: mpsc::Sender<Result<DiscoveryResponse, Status>>,
) {
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
                        let _ = tx.send(Err(Status::invalid_argument("the first request must carry node"))).await;
                        return;
                    };
                    state.set_node(&node.id);
                    if let Some(h) = &hook {
                        h(&NodeInfo::from_node(node));
                    }
                    watch = Some(cache.watch(&node.id));
                }
                let snap = watch.as_mut().and_then(|w| w.borrow_and_update().clone());
                let (_, resp) = state.on_request(&req, snap.as_deref());
                if let Some(r) = resp {
                    if tx.send(Ok(r)).await.is_err() {
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
                        if tx.send(Ok(r)).await.is_err() {
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
        tokio::spawn(run_stream(
            self.cache.clone(),
            self.hook.clone(),
            request.into_inner(),
            tx,
        ));
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
