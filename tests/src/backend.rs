//! Real gRPC backends on `127.0.0.1`: tonic servers with one byte-level
//! unary handler for every method of `echo.Echo`, so neither side needs
//! protobuf codegen. The reply body is the backend's name, which is how the
//! clients' reports tell where each call landed.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes};
use tokio::sync::oneshot;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::body::Body;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::server::{Grpc, NamedService, UnaryService};
use tonic::{Request, Response, Status};

use crate::HarnessError;

/// The gRPC service name the backends implement (`/echo.Echo/<any>`).
pub const SERVICE: &str = "echo.Echo";
/// Header gRPC clients add to retry attempts (gRFC A6).
pub const PREVIOUS_ATTEMPTS: &str = "grpc-previous-rpc-attempts";

/// How a backend answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behavior {
    /// Replies at once.
    Ok,
    /// Replies after the delay.
    Slow(Duration),
    /// Fails a call's first attempt with UNAVAILABLE and answers its retries
    /// (an attempt carrying `grpc-previous-rpc-attempts`).
    FailFirstAttempt,
}

#[derive(Debug, Default)]
struct Counters {
    calls: AtomicU64,
    failed: AtomicU64,
}

/// A running backend; dropping it stops the server.
#[derive(Debug)]
pub struct Backend {
    name: String,
    addr: SocketAddr,
    counters: Arc<Counters>,
    stop: Option<oneshot::Sender<()>>,
}

impl Backend {
    /// Starts backend `name` on `127.0.0.1:0`.
    pub async fn start(name: &str, behavior: Behavior) -> Result<Self, HarnessError> {
        Self::start_on(name, behavior, SocketAddr::from(([127, 0, 0, 1], 0))).await
    }

    /// Starts backend `name` on `addr` (a pod address in a test's network
    /// namespace, say).
    pub async fn start_on(
        name: &str,
        behavior: Behavior,
        addr: SocketAddr,
    ) -> Result<Self, HarnessError> {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| HarnessError::io(format!("binding backend {name} on {addr}"), e))?;
        let addr = listener
            .local_addr()
            .map_err(|e| HarnessError::io(format!("reading backend {name}'s port"), e))?;
        let counters = Arc::new(Counters::default());
        let svc = EchoService(Arc::new(Handler {
            name: name.to_string(),
            behavior,
            counters: Arc::clone(&counters),
        }));
        let (stop, stopped) = oneshot::channel::<()>();
        let label = name.to_string();
        tokio::spawn(async move {
            let result = tonic::transport::Server::builder()
                .add_service(svc)
                .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async {
                    let _ = stopped.await;
                })
                .await;
            if let Err(e) = result {
                tracing::error!(backend = label, error = %e, "backend stopped");
            }
        });
        Ok(Self {
            name: name.to_string(),
            addr,
            counters,
            stop: Some(stop),
        })
    }

    /// Its name (the reply body).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Attempts it received (failed ones included).
    pub fn calls(&self) -> u64 {
        self.counters.calls.load(Ordering::Relaxed)
    }

    /// Attempts it failed on purpose.
    pub fn failed(&self) -> u64 {
        self.counters.failed.load(Ordering::Relaxed)
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

#[derive(Debug)]
struct Handler {
    name: String,
    behavior: Behavior,
    counters: Arc<Counters>,
}

impl Handler {
    async fn answer(&self, req: Request<Bytes>) -> Result<Response<Bytes>, Status> {
        self.counters.calls.fetch_add(1, Ordering::Relaxed);
        match self.behavior {
            Behavior::Ok => {}
            Behavior::Slow(d) => tokio::time::sleep(d).await,
            Behavior::FailFirstAttempt => {
                if req.metadata().get(PREVIOUS_ATTEMPTS).is_none() {
                    self.counters.failed.fetch_add(1, Ordering::Relaxed);
                    return Err(Status::unavailable(format!(
                        "backend {} fails every first attempt",
                        self.name
                    )));
                }
            }
        }
        Ok(Response::new(Bytes::from(self.name.clone())))
    }
}

#[derive(Debug, Clone)]
struct EchoService(Arc<Handler>);

impl NamedService for EchoService {
    const NAME: &'static str = SERVICE;
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

struct Unary(Arc<Handler>);

impl UnaryService<Bytes> for Unary {
    type Response = Bytes;
    type Future = BoxFuture<Result<Response<Bytes>, Status>>;

    fn call(&mut self, request: Request<Bytes>) -> Self::Future {
        let h = Arc::clone(&self.0);
        Box::pin(async move { h.answer(request).await })
    }
}

impl tower::Service<http::Request<Body>> for EchoService {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Result<http::Response<Body>, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        let h = Arc::clone(&self.0);
        Box::pin(async move { Ok(Grpc::new(RawCodec).unary(Unary(h), req).await) })
    }
}

/// Messages as raw bytes: the body of a gRPC frame, untouched (no
/// protobuf codegen in the harness; clients and servers send names).
#[derive(Debug, Clone, Copy, Default)]
pub struct RawCodec;

impl Codec for RawCodec {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> Self::Encoder {
        RawCodec
    }

    fn decoder(&mut self) -> Self::Decoder {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put(item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Bytes;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}
