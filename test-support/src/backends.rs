//! Plain HTTP backends on loopback: one that counts what it serves and
//! answers as the test scripts (status, delay, requests held until
//! released), and one that answers with its name.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use mesh_core::sync::LockExt;
use tokio::sync::oneshot;

/// A hyper backend (HTTP/1.1 and h2c) answering with its own address as
/// the body, the request's `Host` in `x-host` and its HTTP version in
/// `x-version`.
pub struct Backend {
    /// Where it listens.
    pub addr: SocketAddr,
    /// The status it answers with (200 to start with).
    pub status: Arc<AtomicU16>,
    /// How long it waits before answering, in milliseconds.
    pub delay_ms: Arc<AtomicU64>,
    /// Requests received.
    pub hits: Arc<AtomicUsize>,
    /// Connections accepted.
    pub accepts: Arc<AtomicUsize>,
    holds: Arc<Mutex<VecDeque<oneshot::Receiver<()>>>>,
}

/// A request a [`Backend`] holds until this is released or dropped.
pub struct Hold(oneshot::Sender<()>);

impl Hold {
    /// Lets the held request be answered.
    pub fn release(self) {
        let _ = self.0.send(());
    }
}

impl Backend {
    /// The next request to arrive waits, before it is answered, until
    /// the returned [`Hold`] is released or dropped. It counts in `hits`
    /// as soon as it arrives, so `hits_reach` says it is being held.
    pub fn hold_next(&self) -> Hold {
        let (tx, rx) = oneshot::channel();
        self.holds.locked().push_back(rx);
        Hold(tx)
    }

    /// Waits (bounded) until `n` requests have arrived.
    pub async fn hits_reach(&self, n: usize) {
        crate::wait::until(&format!("{n} requests at {}", self.addr), || {
            self.hits.load(Ordering::SeqCst) >= n
        })
        .await;
    }
}

/// Starts a [`Backend`].
pub async fn backend() -> Backend {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let b = Backend {
        addr,
        status: Arc::new(AtomicU16::new(200)),
        delay_ms: Arc::new(AtomicU64::new(0)),
        hits: Arc::new(AtomicUsize::new(0)),
        accepts: Arc::new(AtomicUsize::new(0)),
        holds: Arc::default(),
    };
    let (s, d, h, acc, holds) = (
        b.status.clone(),
        b.delay_ms.clone(),
        b.hits.clone(),
        b.accepts.clone(),
        b.holds.clone(),
    );
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            acc.fetch_add(1, Ordering::SeqCst);
            let (s, d, h, holds) = (s.clone(), d.clone(), h.clone(), holds.clone());
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<hyper::body::Incoming>| {
                    let (s, d, h) = (s.clone(), d.clone(), h.clone());
                    // Taken before the hit counts: a test that sees the
                    // hit knows whether this request is held.
                    let hold = holds.locked().pop_front();
                    h.fetch_add(1, Ordering::SeqCst);
                    async move {
                        if let Some(hold) = hold {
                            let _ = hold.await;
                        }
                        let delay = d.load(Ordering::SeqCst);
                        if delay > 0 {
                            tokio::time::sleep(Duration::from_millis(delay)).await;
                        }
                        let host = req
                            .headers()
                            .get(http::header::HOST)
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("")
                            .to_string();
                        let mut r = Response::new(Full::new(Bytes::from(addr.to_string())));
                        *r.status_mut() = StatusCode::from_u16(s.load(Ordering::SeqCst)).unwrap();
                        r.headers_mut().insert("x-host", host.parse().unwrap());
                        r.headers_mut()
                            .insert("x-version", format!("{:?}", req.version()).parse().unwrap());
                        Ok::<_, Infallible>(r)
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    b
}

/// A hyper HTTP/1.1 server answering every request with `name`.
pub async fn named(name: &'static str) -> SocketAddr {
    named_on("127.0.0.1:0".parse().unwrap(), name).await
}

/// [`named`] on `addr` (a pod address in a test's network namespace, say).
pub async fn named_on(addr: SocketAddr, name: &'static str) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let svc = service_fn(move |_req| async move {
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(name))))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}
