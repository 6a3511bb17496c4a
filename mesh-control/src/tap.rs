//! Reading the raw `Node` of each ADS stream on its way into the ADS
//! server.
//!
//! The ADS server reports nodes as [`mesh_xds::node::NodeInfo`] (the keys
//! compilation needs); auto-registration needs more of the metadata
//! (`AUTO_REGISTER_GROUP`, `POD_PORTS`, `NETWORK`, locality). Rather than a
//! second ADS implementation, this wraps the tonic service and decodes a
//! copy of the first gRPC message of each `StreamAggregatedResources` call
//! as its bytes pass through; the bytes reach the server unchanged.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use mesh_xds::pb::envoy::config::core::v3::Node;
use mesh_xds::pb::envoy::service::discovery::v3::DiscoveryRequest;
use prost::Message;
use tonic::server::NamedService;

const ADS_PATH: &str =
    "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources";
/// gRPC frame header: compressed flag + 4-byte length.
const HEADER: usize = 5;
/// A first request larger than this is not inspected (it still passes).
const MAX_PEEK: usize = 4 << 20;

/// Called with the node of each new ADS stream.
pub type NodeSink = Arc<dyn Fn(Node) + Send + Sync>;

/// A tonic service wrapper that reports each ADS stream's `Node`.
#[derive(Clone)]
pub struct NodeTap<S> {
    inner: S,
    sink: NodeSink,
}

impl<S> NodeTap<S> {
    /// Wraps `inner`, calling `sink` once per stream.
    pub fn new(inner: S, sink: NodeSink) -> Self {
        Self { inner, sink }
    }
}

impl<S: NamedService> NamedService for NodeTap<S> {
    const NAME: &'static str = S::NAME;
}

impl<S> tower::Service<http::Request<tonic::body::Body>> for NodeTap<S>
where
    S: tower::Service<http::Request<tonic::body::Body>, Error = Infallible>,
{
    type Response = S::Response;
    type Error = Infallible;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        if req.uri().path() != ADS_PATH {
            return self.inner.call(req);
        }
        let sink = self.sink.clone();
        let req = req.map(|body| {
            tonic::body::Body::new(TapBody {
                inner: body,
                buf: BytesMut::new(),
                sink: Some(sink),
            })
        });
        self.inner.call(req)
    }
}

struct TapBody {
    inner: tonic::body::Body,
    buf: BytesMut,
    /// `None` once the first message was seen (or inspection gave up).
    sink: Option<NodeSink>,
}

impl TapBody {
    fn inspect(&mut self, data: &Bytes) {
        if self.sink.is_none() {
            return;
        }
        self.buf.extend_from_slice(data);
        if self.buf.len() < HEADER {
            return;
        }
        let compressed = self.buf[0] != 0;
        let len = (&self.buf[1..HEADER]).get_u32() as usize;
        if compressed || len > MAX_PEEK {
            // A compressed first message is rare for xDS; the stream still
            // works, only auto-registration metadata is not read.
            self.sink = None;
            self.buf = BytesMut::new();
            return;
        }
        if self.buf.len() < HEADER + len {
            return;
        }
        let sink = self.sink.take();
        let msg = DiscoveryRequest::decode(&self.buf[HEADER..HEADER + len]);
        self.buf = BytesMut::new();
        if let (
            Some(sink),
            Ok(DiscoveryRequest {
                node: Some(node), ..
            }),
        ) = (sink, msg)
        {
            sink(node);
        }
    }
}

impl Body for TapBody {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled {
            if let Some(data) = frame.data_ref() {
                let data = data.clone();
                self.inspect(&data);
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
