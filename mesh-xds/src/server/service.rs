//! The I/O around one ADS stream, shared by SotW and Delta: read requests,
//! watch the node's snapshot, feed both to the protocol state machine, send
//! what it answers, and report events and connection state.

use std::net::SocketAddr;
use std::sync::Arc;

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use tokio::sync::{broadcast, mpsc, watch};
use tokio_stream::StreamExt;
use tonic::{Status, Streaming};

use super::cache::{SnapshotCache, Versioned};
use super::delta::DeltaState;
use super::stream::{RequestKind, StreamState};
use super::{NodeCheck, NodeHook, ServerEvent};
use crate::node::NodeInfo;

/// A protocol state machine the stream loop drives.
pub(crate) trait Protocol: Send + 'static {
    type Req: Send + 'static;
    type Resp: Send + 'static;
    fn node_of(req: &Self::Req) -> Option<&Node>;
    fn type_url(req: &Self::Req) -> &str;
    /// Type URL, version and nonce of a response, for events.
    fn meta(resp: &Self::Resp) -> (String, String, String);
    /// Encoded size of a response's resources.
    fn size(resp: &Self::Resp) -> usize;
    fn has_node(&self) -> bool;
    fn set_node(&mut self, id: &str);
    fn on_request(
        &mut self,
        req: &Self::Req,
        snap: Option<&Arc<Versioned>>,
    ) -> (RequestKind, Vec<Self::Resp>);
    fn on_snapshot(&mut self, snap: &Arc<Versioned>) -> Vec<Self::Resp>;
}

impl Protocol for StreamState {
    type Req = DiscoveryRequest;
    type Resp = DiscoveryResponse;
    fn node_of(req: &Self::Req) -> Option<&Node> {
        req.node.as_ref()
    }
    fn type_url(req: &Self::Req) -> &str {
        &req.type_url
    }
    fn meta(r: &Self::Resp) -> (String, String, String) {
        (r.type_url.clone(), r.version_info.clone(), r.nonce.clone())
    }
    fn size(r: &Self::Resp) -> usize {
        r.resources.iter().map(|a| a.value.len()).sum()
    }
    fn has_node(&self) -> bool {
        self.node().is_some()
    }
    fn set_node(&mut self, id: &str) {
        StreamState::set_node(self, id);
    }
    fn on_request(
        &mut self,
        req: &Self::Req,
        snap: Option<&Arc<Versioned>>,
    ) -> (RequestKind, Vec<Self::Resp>) {
        StreamState::on_request(self, req, snap)
    }
    fn on_snapshot(&mut self, snap: &Arc<Versioned>) -> Vec<Self::Resp> {
        StreamState::on_snapshot(self, snap)
    }
}

impl Protocol for DeltaState {
    type Req = DeltaDiscoveryRequest;
    type Resp = DeltaDiscoveryResponse;
    fn node_of(req: &Self::Req) -> Option<&Node> {
        req.node.as_ref()
    }
    fn type_url(req: &Self::Req) -> &str {
        &req.type_url
    }
    fn meta(r: &Self::Resp) -> (String, String, String) {
        (
            r.type_url.clone(),
            r.system_version_info.clone(),
            r.nonce.clone(),
        )
    }
    fn size(r: &Self::Resp) -> usize {
        r.resources
            .iter()
            .filter_map(|x| x.resource.as_ref())
            .map(|a| a.value.len())
            .sum()
    }
    fn has_node(&self) -> bool {
        self.node().is_some()
    }
    fn set_node(&mut self, id: &str) {
        DeltaState::set_node(self, id);
    }
    fn on_request(
        &mut self,
        req: &Self::Req,
        snap: Option<&Arc<Versioned>>,
    ) -> (RequestKind, Vec<Self::Resp>) {
        DeltaState::on_request(self, req, snap)
    }
    fn on_snapshot(&mut self, snap: &Arc<Versioned>) -> Vec<Self::Resp> {
        DeltaState::on_snapshot(self, snap)
    }
}

/// What a stream task needs besides its protocol state: where to report.
pub(crate) struct StreamCtx {
    pub(crate) cache: SnapshotCache,
    pub(crate) hook: Option<NodeHook>,
    pub(crate) check: Option<(NodeCheck, tonic::Extensions)>,
    pub(crate) events: broadcast::Sender<ServerEvent>,
    pub(crate) id: u64,
    pub(crate) peer: Option<SocketAddr>,
    pub(crate) node: Option<String>,
    pub(crate) closing: Option<watch::Receiver<bool>>,
}

impl StreamCtx {
    fn emit(&self, e: ServerEvent) {
        // No subscriber is fine: events are best effort.
        let _ = self.events.send(e);
    }

    /// Admits and registers the node of the stream (first request).
    fn connected(&mut self, node: &Node) -> Result<(), Status> {
        let info = NodeInfo::from_node(node);
        if let Some((check, extensions)) = &self.check {
            if let Err(status) = check(&info, extensions) {
                tracing::warn!(node = %info.id, peer = ?self.peer, code = ?status.code(), reason = status.message(), "ADS stream refused");
                return Err(status);
            }
        }
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
        Ok(())
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

    fn pushed(&self, type_url: &str, version: &str, nonce: &str, bytes: usize) {
        self.emit(ServerEvent::Pushed {
            node_id: self.node_id(),
            type_url: type_url.to_string(),
            version: version.to_string(),
            nonce: nonce.to_string(),
            bytes,
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

/// What a stream's task hands its response stream. Boxed: the channel
/// allocates its slots in blocks of 32, and a block of unboxed responses
/// and `Status`es is about 5 KiB per stream, held for the stream's life.
pub(crate) type Outgoing<T> = Box<Result<T, Status>>;

async fn send<P: Protocol>(
    ctx: &StreamCtx,
    tx: &mpsc::Sender<Outgoing<P::Resp>>,
    r: P::Resp,
) -> bool {
    let (t, v, n) = P::meta(&r);
    let bytes = P::size(&r);
    if tx.send(Box::new(Ok(r))).await.is_err() {
        return false;
    }
    ctx.pushed(&t, &v, &n, bytes);
    true
}

/// Serves one stream until the client goes away.
pub(crate) async fn run<P: Protocol>(
    mut ctx: StreamCtx,
    mut state: P,
    mut requests: Streaming<P::Req>,
    tx: mpsc::Sender<Outgoing<P::Resp>>,
) {
    let cache = ctx.cache.clone();
    let mut closing = ctx.closing.clone();
    let mut watch: Option<watch::Receiver<Option<Arc<Versioned>>>> = None;
    loop {
        // The server is going away: end the stream so the client
        // reconnects (to us again, or its next server) instead of holding
        // a stream nobody serves.
        let closed = async {
            match closing.as_mut() {
                Some(c) => {
                    let _ = c.wait_for(|closing| *closing).await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        let changed = async {
            match watch.as_mut() {
                Some(w) => w.changed().await.is_ok(),
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = closed => {
                let _ = tx.send(Box::new(Err(Status::unavailable("the xDS server is shutting down")))).await;
                return;
            }
            req = requests.next() => {
                let req = match req {
                    Some(Ok(r)) => r,
                    Some(Err(e)) => {
                        tracing::debug!(error = %e, "ADS stream error");
                        return;
                    }
                    None => return,
                };
                if !state.has_node() {
                    let Some(node) = P::node_of(&req) else {
                        let _ = tx.send(Box::new(Err(Status::invalid_argument(
                            "the first request of an ADS stream must carry `node` (the client's id and metadata)",
                        )))).await;
                        return;
                    };
                    if let Err(status) = ctx.connected(node) {
                        let _ = tx.send(Box::new(Err(status))).await;
                        return;
                    }
                    state.set_node(&node.id);
                    watch = Some(cache.watch(&node.id));
                }
                let snap = watch.as_mut().and_then(|w| w.borrow_and_update().clone());
                let (kind, resp) = state.on_request(&req, snap.as_ref());
                ctx.request(P::type_url(&req), &kind);
                for r in resp {
                    if !send::<P>(&ctx, &tx, r).await {
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
                        if !send::<P>(&ctx, &tx, r).await {
                            return;
                        }
                    }
                }
            }
        }
    }
}
