//! The retry layer: Envoy's retry semantics driven by the route's
//! [`RetryPolicy`] (Istio's default when the route has none).
//!
//! Per request: the body is buffered up to a limit so it can be replayed (a
//! larger or streaming body is sent once and never retried); every attempt
//! gets a fresh [`Upstream`] with the attempt number increased and the same
//! `tried` list, so the endpoint stage can prefer endpoints not tried yet;
//! each attempt is bounded by `perTryTimeout`; the outcome (status,
//! `grpc-status` from headers or, for gRPC conditions, from trailers of a
//! response buffered up to a limit, connect failure, reset, per-try timeout)
//! is judged by [`RetryPolicy::should_retry_attempt`]; a retry waits
//! Envoy's exponential backoff with full jitter. Before each retry the
//! cluster's concurrent-retry limit (`connectionPool.http.maxRetries`) and
//! the retry budget are checked with [`admit_retry`] on counters shared by
//! every request to that cluster, so retries cannot multiply load during an
//! outage.
//!
//! When retries end, the last upstream response is passed on as it is (as
//! Envoy does); when the last attempt failed locally the answer is 503 with
//! flag URX (504 UT for a per-try timeout). The route timeout is the timeout
//! layer's, around this one.

mod future;

use mesh_core::sync::{LockExt, RwLockExt};
use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::task::{Context, Poll};

use http::{Request, Response};
use mesh_core::retry::{RetryBudget, RetryOn};
use tower::{Layer, Service};

use crate::body::{BoxError, MeshBody};
use crate::thread_cache::ThreadCache;
use crate::upstream::Upstream;

use super::call::{CallRef, Via};
use super::replay::Replay;
use super::tee::{prepare, Prepared};

pub use future::RetryFuture;
use future::{Phase, Retrying, Template};

/// Limits of the retry layer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryConfig {
    /// Largest request body buffered for replay (default 64 KiB).
    pub body_limit: usize,
    /// Largest response buffered to read gRPC trailers when a gRPC retry
    /// condition needs them (default 64 KiB).
    pub response_buffer_limit: usize,
    /// The retry budget per cluster; `None` disables it (default 20% of
    /// active requests, at least 3 concurrent retries).
    pub budget: Option<RetryBudget>,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            body_limit: 64 * 1024,
            response_buffer_limit: 64 * 1024,
            budget: Some(RetryBudget::default()),
        }
    }
}

/// Requests and retries in flight for one cluster.
///
/// Each thread counts in a share of its own (one cache line),
/// so requests on different cores never write the same line; the
/// cluster's figures are the sums, read only when a retry is considered.
#[derive(Debug, Default)]
pub struct ClusterCounters {
    shards: Mutex<Vec<Weak<Shard>>>,
}

impl ClusterCounters {
    /// Requests in flight (with a retry policy) to the cluster.
    pub fn active_requests(&self) -> u64 {
        self.sum(|s| &s.requests)
    }

    /// Retries in flight (waiting for their backoff or sent) to the cluster.
    pub fn active_retries(&self) -> u64 {
        self.sum(|s| &s.retries)
    }

    fn sum(&self, counter: impl Fn(&Shard) -> &AtomicI64) -> u64 {
        let mut shards = self.shards.locked();
        let mut n = 0i64;
        // A share is dropped once nothing holds it, and then it counts 0.
        shards.retain(|w| match w.upgrade() {
            Some(s) => {
                n += counter(&s).load(Ordering::Relaxed);
                true
            }
            None => false,
        });
        u64::try_from(n).unwrap_or(0)
    }

    /// A new share of these counters, for one thread.
    fn shard(self: &Arc<Self>) -> Arc<Shard> {
        let s = Arc::new(Shard {
            requests: AtomicI64::new(0),
            retries: AtomicI64::new(0),
            cluster: self.clone(),
        });
        self.shards.locked().push(Arc::downgrade(&s));
        s
    }
}

/// One thread's share of a cluster's counters. A hold decrements the
/// share it incremented, on whatever thread it ends.
#[derive(Debug)]
#[repr(align(64))]
pub(crate) struct Shard {
    requests: AtomicI64,
    retries: AtomicI64,
    cluster: Arc<ClusterCounters>,
}

impl Shard {
    /// The counters this is a share of.
    pub(crate) fn cluster(&self) -> &ClusterCounters {
        &self.cluster
    }
}

/// Decrements a counter when dropped.
struct Held(Arc<Shard>, bool);

impl Held {
    fn request(s: Arc<Shard>) -> Self {
        s.requests.fetch_add(1, Ordering::Relaxed);
        Held(s, false)
    }
    fn retry(s: &Arc<Shard>) -> Self {
        s.retries.fetch_add(1, Ordering::Relaxed);
        Held(s.clone(), true)
    }
    /// The share this holds.
    fn shard(&self) -> &Arc<Shard> {
        &self.0
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let c = if self.1 {
            &self.0.retries
        } else {
            &self.0.requests
        };
        c.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Retry counters of every cluster, shared by all clones of a stack.
#[derive(Debug)]
pub struct RetryState {
    /// Tells states apart in the per-thread cache (an address can be
    /// reused by a later state).
    id: u64,
    clusters: RwLock<HashMap<String, Arc<ClusterCounters>, foldhash::fast::RandomState>>,
}

impl Default for RetryState {
    fn default() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        Self {
            id: NEXT.fetch_add(1, Ordering::Relaxed),
            clusters: RwLock::default(),
        }
    }
}

thread_local! {
    /// This thread's shares of the counters, by the state's id and the
    /// cluster name: a client sends to few clusters, and the shared map's
    /// lock is a cache line every thread would write per request.
    static SHARDS: ThreadCache<(u64, Box<str>), Arc<Shard>> = const { ThreadCache::new() };
}

impl RetryState {
    /// The counters of `cluster`.
    pub fn cluster(&self, cluster: &str) -> Arc<ClusterCounters> {
        self.shared(cluster)
    }

    /// This thread's share of the counters of `cluster`.
    pub(crate) fn shard(&self, cluster: &str) -> Arc<Shard> {
        let hit = SHARDS.with(|c| {
            c.find(|(id, name), shard| {
                (*id == self.id && &**name == cluster).then(|| shard.clone())
            })
        });
        if let Some(shard) = hit {
            return shard;
        }
        let shard = self.shared(cluster).shard();
        SHARDS.with(|c| c.insert((self.id, cluster.into()), shard.clone(), |_| true));
        shard
    }

    fn shared(&self, cluster: &str) -> Arc<ClusterCounters> {
        if let Some(c) = self.clusters.read_locked().get(cluster) {
            return c.clone();
        }
        self.clusters
            .write_locked()
            .entry(cluster.to_string())
            .or_default()
            .clone()
    }
}

/// Adds retries in front of a service.
#[derive(Debug, Clone, Default)]
pub struct RetryLayer {
    config: RetryConfig,
    state: Arc<RetryState>,
}

impl RetryLayer {
    /// A retry layer with `config` and fresh counters.
    pub fn new(config: RetryConfig) -> Self {
        Self {
            config,
            state: Arc::default(),
        }
    }

    /// A retry layer sharing counters `state` with other stacks.
    pub fn with_state(config: RetryConfig, state: Arc<RetryState>) -> Self {
        Self { config, state }
    }
}

impl<S> Layer<S> for RetryLayer {
    type Service = RetryService<S>;
    fn layer(&self, inner: S) -> RetryService<S> {
        RetryService {
            inner,
            config: self.config,
            state: self.state.clone(),
        }
    }
}

/// The retry stage (see the module docs).
#[derive(Debug, Clone)]
pub struct RetryService<S> {
    inner: S,
    config: RetryConfig,
    state: Arc<RetryState>,
}

const GRPC_CONDITIONS: u32 = RetryOn::CANCELLED.bits()
    | RetryOn::DEADLINE_EXCEEDED.bits()
    | RetryOn::INTERNAL.bits()
    | RetryOn::RESOURCE_EXHAUSTED.bits()
    | RetryOn::UNAVAILABLE.bits();

impl<S> Service<Request<MeshBody>> for RetryService<S>
where
    S: Service<Request<MeshBody>, Response = Response<MeshBody>, Error = BoxError>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Response = Response<MeshBody>;
    type Error = BoxError;
    type Future = RetryFuture<S>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<MeshBody>) -> Self::Future {
        retry_call(Via::Ready(&mut self.inner), self.config, &self.state, req)
    }
}

impl<S> CallRef for RetryService<S>
where
    S: CallRef + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    fn call_ref(&self, req: Request<MeshBody>) -> Self::Future {
        retry_call(
            Via::Shared(&self.inner, S::call_ref),
            self.config,
            &self.state,
            req,
        )
    }
}

fn retry_call<S>(
    via: Via<'_, S>,
    config: RetryConfig,
    state: &RetryState,
    req: Request<MeshBody>,
) -> RetryFuture<S>
where
    S: Service<Request<MeshBody>, Response = Response<MeshBody>, Error = BoxError> + Clone,
{
    let Some(upstream) = req.extensions().get::<Upstream>() else {
        return RetryFuture::single(via.call(req), None, false);
    };
    let routed = upstream.routed.as_ref();
    let (policy, grpc) = match routed.and_then(|r| Some((r.route()?, r.grpc))) {
        Some((route, grpc)) => (&route.retries, grpc),
        None => return RetryFuture::single(via.call(req), None, false),
    };
    let per_try = policy
        .per_try_timeout
        .map(|d| d.get())
        .filter(|d| !d.is_zero());
    if !policy.enabled() {
        return RetryFuture::single(via.call(req), per_try, grpc);
    }
    let shard = state.shard(&upstream.cluster);
    let need_trailers = grpc && policy.retry_on.bits() & GRPC_CONDITIONS != 0;
    let (parts, body) = req.into_parts();
    let (replay, first_body, tee) = match prepare(body, config.body_limit) {
        Ok(Prepared::Empty(b)) => (Some(Replay::empty()), b, None),
        Ok(Prepared::Complete(r)) => {
            let b = r.body();
            (Some(r), b, None)
        }
        Ok(Prepared::Teed(b, t)) => (None, b, Some(t)),
        Ok(Prepared::TooLarge(b)) => {
            tracing::debug!(
                "request body larger than {} bytes: sent once, not retried",
                config.body_limit
            );
            let req = Request::from_parts(parts, b);
            return RetryFuture::single(via.call(req), per_try, grpc);
        }
        Err(e) => return RetryFuture::failed(e),
    };
    let request = Held::request(shard);
    let Some(upstream) = parts.extensions.get::<Upstream>().cloned() else {
        return RetryFuture::single(
            via.call(Request::from_parts(parts, first_body)),
            per_try,
            grpc,
        );
    };
    let (template, first) = Template::new(parts, upstream);
    // The ready service serves this request; an instance is kept for
    // the later attempts (made ready before each).
    let (fut, inner) = via.call_and_keep(Request::from_parts(first, first_body));
    RetryFuture::retrying(
        fut,
        per_try,
        grpc,
        Retrying {
            inner,
            template,
            replay,
            tee,
            config,
            need_trailers,
            retries_done: 0,
            phase: Phase::Attempting,
            request,
            retry: None,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_of_threads_add_up_and_end_at_zero() {
        let state = Arc::new(RetryState::default());
        let here = Held::request(state.shard("c"));
        let s2 = state.clone();
        let there = std::thread::spawn(move || Held::request(s2.shard("c")))
            .join()
            .unwrap();
        let counters = state.cluster("c");
        assert_eq!(counters.active_requests(), 2);
        assert!(
            !Arc::ptr_eq(here.shard(), there.shard()),
            "one share per thread"
        );
        assert!(
            Arc::ptr_eq(here.shard(), &state.shard("c")),
            "kept per thread"
        );
        let retry = Held::retry(there.shard());
        assert_eq!(counters.active_retries(), 1);
        // A hold may end on another thread than the one it started on.
        drop(there);
        assert_eq!(counters.active_requests(), 1);
        drop(retry);
        drop(here);
        assert_eq!(
            (counters.active_requests(), counters.active_retries()),
            (0, 0)
        );
    }

    #[test]
    fn counters_are_per_state_and_shared_across_threads() {
        let a = Arc::new(RetryState::default());
        let b = RetryState::default();
        let first = a.cluster("outbound|80||reviews");
        assert!(Arc::ptr_eq(&first, &a.cluster("outbound|80||reviews")));
        // Another state (even at a reused address) has its own counters.
        assert!(!Arc::ptr_eq(&first, &b.cluster("outbound|80||reviews")));
        assert!(!Arc::ptr_eq(&first, &a.cluster("outbound|80||ratings")));
        // Another thread sees the same counters for the same state.
        let a2 = a.clone();
        let there = std::thread::spawn(move || a2.cluster("outbound|80||reviews"))
            .join()
            .unwrap();
        assert!(Arc::ptr_eq(&first, &there));
    }
}
