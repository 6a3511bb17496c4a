//! Connection pools, one per endpoint, on hyper's connection API.
//!
//! The endpoint stage has already picked the endpoint when it sends, so
//! each endpoint owns its pool and a request finds its connections without
//! a lookup. (hyper-util's pooled client keys one shared pool by scheme and
//! authority: two byte-by-byte hashes of the authority under one lock per
//! request, and for HTTP/1.1 a task spawned per request to wait until the
//! connection can take the next one.)
//!
//! - HTTP/1.1: idle connections in a list, newest last. A connection goes
//!   back when its response body ends; one whose body is dropped early is
//!   closed (hyper cannot reuse it). A request takes the newest idle
//!   connection still open, waiting for it to be ready if its connection
//!   task has not caught up yet, else opens one. A request a reused
//!   connection refused before writing anything (the server closed it
//!   meanwhile) moves on to the next, ending on a fresh connection.
//! - HTTP/2: one shared connection per endpoint, opened once however many
//!   requests wait for it, replaced when it closes.
//! - `maxConnections` bounds the idle list, `maxRequestsPerConnection`
//!   retires a connection after that many requests (it finishes what it
//!   carries), and the idle timeout closes connections that carried no
//!   request for that long (a reaper task per endpoint runs while
//!   something is idle).

use mesh_core::sync::LockExt;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use futures_util::future::{BoxFuture, FutureExt, Shared};
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tokio::time::Instant;

use super::cluster::Proto;
use super::connector::Dialer;
use crate::{BoxError, MeshBody};

/// A pool's settings, shared by the endpoints of one cluster.
pub(crate) struct PoolConfig {
    pub dialer: Dialer,
    /// Close connections idle this long; `None` keeps them.
    pub idle_timeout: Option<Duration>,
    /// Idle HTTP/1.1 connections kept per endpoint.
    pub max_idle: usize,
    /// Requests one connection carries before it is retired.
    pub max_requests: Option<u32>,
}

/// Why a request got no response from its endpoint.
#[derive(Debug, Clone)]
pub(crate) struct PoolError {
    connect: bool,
    source: Arc<dyn std::error::Error + Send + Sync>,
}

impl PoolError {
    fn connect(e: impl Into<BoxError>) -> Self {
        Self {
            connect: true,
            source: Arc::from(e.into()),
        }
    }

    fn request(e: hyper::Error) -> Self {
        Self {
            connect: false,
            source: Arc::new(e),
        }
    }

    /// True when no connection could be opened (as opposed to a request
    /// failing on an open one).
    pub fn is_connect(&self) -> bool {
        self.connect
    }
}

impl std::fmt::Display for PoolError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.source.fmt(f)
    }
}

impl std::error::Error for PoolError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.source()
    }
}

/// The future of one request handed to a pool.
pub(crate) type SendFuture =
    Pin<Box<dyn Future<Output = Result<(Response<Incoming>, Lease), PoolError>> + Send>>;

/// The connections to one endpoint.
pub(crate) struct EndpointPool {
    addr: SocketAddr,
    config: Arc<PoolConfig>,
    http1: Mutex<H1>,
    http2: Mutex<H2>,
}

#[derive(Default)]
struct H1 {
    idle: Vec<Idle>,
    reaping: bool,
}

/// An idle HTTP/1.1 connection.
struct Idle {
    tx: http1::SendRequest<MeshBody>,
    served: u32,
    since: Instant,
}

#[derive(Default)]
struct H2 {
    conn: Option<H2Conn>,
    connecting: Option<Shared<BoxFuture<'static, Result<(), PoolError>>>>,
    reaping: bool,
}

struct H2Conn {
    tx: http2::SendRequest<MeshBody>,
    /// One clone per request in flight on the connection.
    streams: Arc<()>,
    served: u32,
    /// Requests started, for the reaper to tell an idle connection.
    uses: u64,
}

/// A request's hold on its connection until the response body ends.
pub(crate) enum Lease {
    Http1 {
        pool: Arc<EndpointPool>,
        tx: http1::SendRequest<MeshBody>,
        served: u32,
    },
    Http2 {
        _stream: Arc<()>,
    },
}

impl Lease {
    /// The response ended cleanly: an HTTP/1.1 connection can take the
    /// next request. (Dropping the lease instead closes it.)
    pub fn reuse(self) {
        if let Lease::Http1 { pool, tx, served } = self {
            pool.put_idle(tx, served);
        }
    }
}

impl super::body::Release for Lease {
    fn release(self, clean: bool) {
        if clean {
            self.reuse();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.locked()
}

impl EndpointPool {
    pub fn new(addr: SocketAddr, config: Arc<PoolConfig>) -> Self {
        Self {
            addr,
            config,
            http1: Mutex::default(),
            http2: Mutex::default(),
        }
    }

    /// Sends `req` (its URI already in the form `proto` needs) on a
    /// connection of this pool.
    pub fn send(self: Arc<Self>, proto: Proto, req: Request<MeshBody>) -> SendFuture {
        match proto {
            Proto::Http1 => match self.take_idle() {
                // The usual case: the request goes to the connection now,
                // and the future only waits for the answer.
                Some(mut idle) if idle.tx.is_ready() => {
                    let sent = idle.tx.try_send_request(req);
                    let pool = self;
                    Box::pin(async move {
                        // Nothing but the answer is held across an await:
                        // this future is allocated for every request.
                        let req = match sent.await {
                            Ok(resp) => {
                                let lease = Lease::Http1 {
                                    pool,
                                    tx: idle.tx,
                                    served: idle.served + 1,
                                };
                                return Ok((resp, lease));
                            }
                            Err(mut e) => match e.take_message() {
                                // Refused before a byte was written.
                                Some(req) => req,
                                None => return Err(PoolError::request(e.into_error())),
                            },
                        };
                        drop(idle);
                        Box::pin(pool.send1(None, req)).await
                    })
                }
                idle => Box::pin(self.send1(idle, req)),
            },
            Proto::Http2 => Box::pin(self.send2(req)),
        }
    }

    /// Sends on `first`, else on the newest idle connection, else on a new
    /// one; a request a reused connection refused goes to the next.
    async fn send1(
        self: Arc<Self>,
        mut first: Option<Idle>,
        mut req: Request<MeshBody>,
    ) -> Result<(Response<Incoming>, Lease), PoolError> {
        loop {
            let (mut tx, served, reused) = match first.take().or_else(|| self.take_idle()) {
                Some(idle) => (idle.tx, idle.served, true),
                None => (self.open1().await?, 0, false),
            };
            if !tx.is_ready() && std::future::poll_fn(|cx| tx.poll_ready(cx)).await.is_err() {
                continue;
            }
            match tx.try_send_request(req).await {
                Ok(resp) => {
                    let lease = Lease::Http1 {
                        pool: self,
                        tx,
                        served: served + 1,
                    };
                    return Ok((resp, lease));
                }
                Err(mut e) => match e.take_message() {
                    // Refused before a byte was written: safe to resend.
                    Some(r) if reused => req = r,
                    _ => return Err(PoolError::request(e.into_error())),
                },
            }
        }
    }

    /// The newest idle connection still open.
    fn take_idle(&self) -> Option<Idle> {
        let mut h1 = lock(&self.http1);
        while let Some(idle) = h1.idle.pop() {
            if !idle.tx.is_closed() {
                return Some(idle);
            }
        }
        None
    }

    fn put_idle(self: &Arc<Self>, tx: http1::SendRequest<MeshBody>, served: u32) {
        let retired = self.config.max_requests.is_some_and(|m| served >= m);
        if retired || tx.is_closed() {
            return;
        }
        let since = Instant::now();
        let mut h1 = lock(&self.http1);
        if h1.idle.len() >= self.config.max_idle {
            drop(h1);
            return;
        }
        h1.idle.push(Idle { tx, served, since });
        if let Some(idle) = self.config.idle_timeout {
            if !h1.reaping && spawn(reap1(Arc::downgrade(self), idle)) {
                h1.reaping = true;
            }
        }
    }

    async fn open1(&self) -> Result<http1::SendRequest<MeshBody>, PoolError> {
        let io = self
            .config
            .dialer
            .dial(self.addr, false)
            .await
            .map_err(PoolError::connect)?;
        let (mut tx, conn) = http1::Builder::new()
            .handshake(io)
            .await
            .map_err(PoolError::connect)?;
        tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!(error = %e, "upstream HTTP/1.1 connection ended");
            }
        });
        tx.ready().await.map_err(PoolError::connect)?;
        Ok(tx)
    }

    async fn send2(
        self: Arc<Self>,
        mut req: Request<MeshBody>,
    ) -> Result<(Response<Incoming>, Lease), PoolError> {
        // A connection that refuses the stream is replaced, once: a server
        // that refuses every new connection gets an error, not a loop.
        let mut refusals = 0;
        loop {
            let (mut tx, stream) = self.checkout2().await?;
            match tx.try_send_request(req).await {
                Ok(resp) => return Ok((resp, Lease::Http2 { _stream: stream })),
                Err(mut e) => match e.take_message() {
                    Some(r) if refusals < 1 => {
                        refusals += 1;
                        let mut h2 = lock(&self.http2);
                        if h2
                            .conn
                            .as_ref()
                            .is_some_and(|c| Arc::ptr_eq(&c.streams, &stream))
                        {
                            h2.conn = None;
                        }
                        req = r;
                    }
                    _ => return Err(PoolError::request(e.into_error())),
                },
            }
        }
    }

    /// The shared connection, opened (once, whoever else waits) when
    /// there is none.
    async fn checkout2(
        self: &Arc<Self>,
    ) -> Result<(http2::SendRequest<MeshBody>, Arc<()>), PoolError> {
        loop {
            let wait = {
                let mut h2 = lock(&self.http2);
                if let Some(c) = h2.conn.as_mut() {
                    if !c.tx.is_closed() {
                        c.served += 1;
                        c.uses += 1;
                        let out = (c.tx.clone(), c.streams.clone());
                        if self.config.max_requests.is_some_and(|m| c.served >= m) {
                            h2.conn = None;
                        }
                        return Ok(out);
                    }
                    h2.conn = None;
                }
                match &h2.connecting {
                    Some(f) => f.clone(),
                    None => {
                        let f = open2(Arc::downgrade(self), self.config.clone(), self.addr)
                            .boxed()
                            .shared();
                        h2.connecting = Some(f.clone());
                        f
                    }
                }
            };
            wait.await?;
        }
    }
}

/// Opens the HTTP/2 connection of the pool behind `pool` and installs it.
async fn open2(
    pool: Weak<EndpointPool>,
    config: Arc<PoolConfig>,
    addr: SocketAddr,
) -> Result<(), PoolError> {
    let opened = async {
        let io = config
            .dialer
            .dial(addr, true)
            .await
            .map_err(PoolError::connect)?;
        let (mut tx, conn) = http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .handshake(io)
            .await
            .map_err(PoolError::connect)?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "upstream HTTP/2 connection ended");
            }
        });
        tx.ready().await.map_err(PoolError::connect)?;
        Ok(tx)
    }
    .await;
    let Some(pool) = pool.upgrade() else {
        return opened.map(drop);
    };
    let mut h2 = lock(&pool.http2);
    h2.connecting = None;
    let tx = opened?;
    h2.conn = Some(H2Conn {
        tx,
        streams: Arc::new(()),
        served: 0,
        uses: 0,
    });
    if let Some(idle) = config.idle_timeout {
        if !h2.reaping && spawn(reap2(Arc::downgrade(&pool), idle)) {
            h2.reaping = true;
        }
    }
    Ok(())
}

/// Spawns `f` on the current runtime; false when there is none.
fn spawn(f: impl Future<Output = ()> + Send + 'static) -> bool {
    match tokio::runtime::Handle::try_current() {
        Ok(h) => {
            h.spawn(f);
            true
        }
        Err(_) => false,
    }
}

/// Closes HTTP/1.1 connections idle for `idle`; ends when none is idle.
async fn reap1(pool: Weak<EndpointPool>, idle: Duration) {
    let mut wait = idle;
    loop {
        tokio::time::sleep(wait).await;
        let Some(pool) = pool.upgrade() else { return };
        let now = Instant::now();
        let mut h1 = lock(&pool.http1);
        // Newest last: the expired ones are a prefix.
        let expired = h1
            .idle
            .iter()
            .take_while(|i| now.duration_since(i.since) >= idle)
            .count();
        let closed: Vec<Idle> = h1.idle.drain(..expired).collect();
        match h1.idle.first() {
            Some(oldest) => wait = idle.saturating_sub(now.duration_since(oldest.since)),
            None => {
                h1.reaping = false;
                return;
            }
        }
        drop(h1);
        drop(closed);
    }
}

/// Closes the HTTP/2 connection once it carried no stream and started
/// none for a whole `idle` period; ends with the connection.
async fn reap2(pool: Weak<EndpointPool>, idle: Duration) {
    let mut seen = None;
    loop {
        tokio::time::sleep(idle).await;
        let Some(pool) = pool.upgrade() else { return };
        let mut h2 = lock(&pool.http2);
        let Some(c) = h2.conn.as_ref() else {
            h2.reaping = false;
            return;
        };
        let busy = Arc::strong_count(&c.streams) > 1;
        if !busy && seen == Some(c.uses) {
            let closed = h2.conn.take();
            h2.reaping = false;
            drop(h2);
            drop(closed);
            return;
        }
        seen = (!busy).then_some(c.uses);
    }
}
