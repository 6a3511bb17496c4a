//! One request through the endpoint stage, after the pick: the futures
//! and guards that carry it to the pool and back. A request that needs no
//! waiting is handed to the pool inside `Endpoints::call` and its future
//! only awaits the pool's answer; what must wait (host-name lookups,
//! passthrough, a connection slot) is the boxed slow path.

use mesh_core::sync::LockExt;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{HeaderValue, Request, Response};
use mesh_core::lb::{HostView, Hosts};
use mesh_core::outlier::{grpc_to_http_status, Outcome, OutlierDetector};

use super::body::GuardedBody;
use super::cluster::{ClusterState, Proto, Target, TargetShared};
use super::limits::{self, Admission};
use super::pool::{EndpointPool, Lease, PoolError, SendFuture};
use super::request::prepare;
use super::{error_chain, GRPC_STATUS};
use crate::body as mesh_body;
use crate::upstream::Tried;
use crate::{BoxError, MeshBody, MeshError, ResponseFlag, ServedBy};

/// The response future of [`Endpoints`]. A request that needed no waiting
/// before it was handed to the pool (the common case) costs no allocation
/// of its own here.
pub struct EndpointsFuture(pub(super) Flight);

pub(super) enum Flight {
    Sent(InFlight),
    Failed(Option<BoxError>),
    Slow(Pin<Box<dyn Future<Output = Result<Response<MeshBody>, BoxError>> + Send>>),
}

impl EndpointsFuture {
    pub(super) fn failed(e: impl Into<BoxError>) -> Self {
        EndpointsFuture(Flight::Failed(Some(e.into())))
    }

    pub(super) fn slow(
        f: impl Future<Output = Result<Response<MeshBody>, BoxError>> + Send + 'static,
    ) -> Self {
        EndpointsFuture(Flight::Slow(Box::pin(f)))
    }
}

impl std::fmt::Debug for EndpointsFuture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EndpointsFuture").finish_non_exhaustive()
    }
}

impl Future for EndpointsFuture {
    type Output = Result<Response<MeshBody>, BoxError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match &mut self.0 {
            Flight::Sent(f) => Pin::new(f).poll(cx),
            Flight::Failed(e) => Poll::Ready(Err(e
                .take()
                .unwrap_or_else(|| "endpoint future polled after completion".into()))),
            Flight::Slow(f) => f.as_mut().poll(cx),
        }
    }
}

/// A request with its endpoint chosen and counted, not yet sent.
pub(super) struct Pick {
    pub(super) req: Request<MeshBody>,
    pub(super) state: Arc<ClusterState>,
    pub(super) addr: SocketAddr,
    pub(super) proto: Proto,
    pub(super) set_cookie: Option<String>,
    pub(super) active: ActiveCount,
    pub(super) pool: Arc<EndpointPool>,
}

impl Pick {
    /// Points the request at the endpoint and hands it to the pool.
    pub(super) fn send(self, admission: Admission) -> Result<InFlight, BoxError> {
        let Pick {
            mut req,
            state,
            addr,
            proto,
            set_cookie,
            active,
            pool,
        } = self;
        let authority = match proto {
            Proto::Http2 => active.0.authority.clone(),
            Proto::Http1 => None,
        };
        let guard = ActiveGuard {
            active,
            _admission: admission,
            lease: None,
        };
        prepare(&mut req, addr, authority, proto)?;
        Ok(InFlight {
            fut: pool.send(proto, req),
            done: Some(Sent {
                state,
                addr,
                proto,
                guard,
                set_cookie,
            }),
        })
    }
}

/// A picked request waiting for a connection slot (`maxConnections`).
pub(super) struct Waiting {
    pub(super) picked: Pick,
    pub(super) wait: limits::Wait,
}

impl Waiting {
    pub(super) async fn send(self) -> Result<InFlight, BoxError> {
        let admission = self.wait.admitted().await?;
        self.picked.state.stats.inc_requests();
        self.picked.send(admission)
    }
}

/// A request handed to the pool, and what its answer is checked against.
pub(super) struct InFlight {
    pub(super) fut: SendFuture,
    pub(super) done: Option<Sent>,
}

pub(super) struct Sent {
    pub(super) state: Arc<ClusterState>,
    pub(super) addr: SocketAddr,
    pub(super) proto: Proto,
    pub(super) guard: ActiveGuard,
    pub(super) set_cookie: Option<String>,
}

impl Future for InFlight {
    type Output = Result<Response<MeshBody>, BoxError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let result = std::task::ready!(Pin::new(&mut self.fut).poll(cx));
        Poll::Ready(match self.done.take() {
            Some(sent) => sent.finish(result),
            None => Err("endpoint future polled after completion".into()),
        })
    }
}

impl Sent {
    /// Feeds outlier detection and turns the pool's answer into the
    /// stage's; the response body keeps the request's slots and its
    /// connection until it ends.
    fn finish(
        self,
        result: Result<(Response<hyper::body::Incoming>, Lease), PoolError>,
    ) -> Result<Response<MeshBody>, BoxError> {
        let Sent {
            state,
            addr,
            proto,
            mut guard,
            set_cookie,
        } = self;
        let outcome = match &result {
            // A trailers-only gRPC error counts as its HTTP equivalent
            // (gRPC is HTTP/2 only).
            Ok((r, _)) if proto == Proto::Http2 => Outcome::Status(
                r.headers()
                    .get(&GRPC_STATUS)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<u32>().ok())
                    .map_or(r.status().as_u16(), grpc_to_http_status),
            ),
            Ok((r, _)) => Outcome::Status(r.status().as_u16()),
            Err(e) if e.is_connect() => Outcome::ConnectFailed,
            Err(_) => Outcome::Reset,
        };
        // A success ends a failure streak; with none to end, outlier
        // detection has nothing to do and the cluster lock is not taken.
        let success = matches!(outcome, Outcome::Status(s) if s < 500);
        if !success || guard.active.0.failing.load(Ordering::Relaxed) {
            feed_outlier(&state, &guard.active.0, addr, outcome, success);
        }
        match result {
            Ok((resp, lease)) => {
                let (mut parts, body) = resp.into_parts();
                parts.extensions.insert(ServedBy(addr));
                if let Some(c) = set_cookie.and_then(|c| HeaderValue::from_str(&c).ok()) {
                    parts.headers.append(http::header::SET_COOKIE, c);
                }
                guard.lease = Some(lease);
                let body = mesh_body::boxed(GuardedBody::new(body, guard));
                Ok(Response::from_parts(parts, body))
            }
            Err(e) => Err(pool_failure(&e, addr, &state)),
        }
    }
}

/// Tells outlier detection how a request ended, for a failure or the
/// first success after failures (the rest need no lock).
// Out of line, like the other rare paths of a request: the common path
// then fits in fewer instruction cache lines.
#[cold]
#[inline(never)]
fn feed_outlier(
    state: &ClusterState,
    target: &TargetShared,
    addr: SocketAddr,
    outcome: Outcome,
    success: bool,
) {
    let mut core = state.core.locked();
    if let Some(d) = core.outlier.as_mut() {
        if let Some(ej) = d.on_result(&addr, outcome, super::now()) {
            state.stats.inc_ejections();
            tracing::info!(cluster = %state.name, endpoint = %addr, reason = ?ej.reason, duration = ?ej.duration, "outlier ejected endpoint");
        }
    }
    target.failing.store(!success, Ordering::Relaxed);
}

/// The stage's error for a request the pool could not carry.
#[cold]
#[inline(never)]
fn pool_failure(e: &PoolError, addr: SocketAddr, state: &ClusterState) -> BoxError {
    let chain = error_chain(e);
    let err = if e.is_connect() {
        MeshError::new(
            ResponseFlag::UpstreamConnectionFailure,
            format!(
                "connecting to {addr} of cluster {} failed: {chain}",
                state.name
            ),
        )
    } else {
        MeshError::new(
            ResponseFlag::UpstreamRemoteReset,
            format!(
                "{addr} of cluster {} reset the request: {chain}",
                state.name
            ),
        )
    };
    err.into()
}

/// The endpoints as a pick sees them: health from outlier detection,
/// requests in flight, and what earlier attempts of this request tried.
pub(super) struct HostsNow<'a> {
    pub(super) targets: &'a [Target],
    pub(super) outlier: Option<&'a OutlierDetector<SocketAddr>>,
    pub(super) tried: Option<&'a Tried>,
    pub(super) now: std::time::Instant,
}

impl Hosts for HostsNow<'_> {
    fn view(&self, i: usize) -> HostView {
        let Some(t) = self.targets.get(i) else {
            return HostView::default();
        };
        HostView {
            healthy: self
                .outlier
                .is_none_or(|d| !d.is_ejected(&t.addr, self.now)),
            active: t.shared.active.load(Ordering::Relaxed),
            tried: self.tried.is_some_and(|tr| tr.contains(&t.addr)),
        }
    }

    fn all_healthy_untried(&self) -> bool {
        self.tried.is_none_or(Tried::is_empty)
            && self.outlier.is_none_or(|d| d.none_ejected(self.now))
    }
}

/// Holds a request's place (active count per endpoint, circuit-breaker
/// slots, its connection) until its response body ends.
pub(super) struct ActiveGuard {
    pub(super) active: ActiveCount,
    pub(super) _admission: Admission,
    pub(super) lease: Option<Lease>,
}

impl super::body::Release for ActiveGuard {
    fn release(mut self, clean: bool) {
        if let (true, Some(lease)) = (clean, self.lease.take()) {
            lease.reuse();
        }
    }
}

/// One request counted as active on its endpoint (counted when the
/// endpoint was picked); released on drop.
pub(super) struct ActiveCount(pub(super) Arc<TargetShared>);

impl Drop for ActiveCount {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::Relaxed);
    }
}
