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

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::future::BoxFuture;
use http::{Request, Response, StatusCode};
use mesh_core::retry::{admit_retry, grpc_status, Outcome, RetryBudget, RetryOn, RetryPolicy};
use tower::{Layer, Service, ServiceExt};

use crate::body::{BoxError, MeshBody};
use crate::error::{MeshError, ResponseFlag};
use crate::upstream::Upstream;

use super::errors;
use super::rng;
use super::routed::Routed;
use super::tee::{peek_trailers, prepare, Prepared, Tee};

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
#[derive(Debug, Default)]
pub struct ClusterCounters {
    active_requests: AtomicU64,
    active_retries: AtomicU64,
}

impl ClusterCounters {
    /// Requests in flight (with a retry policy) to the cluster.
    pub fn active_requests(&self) -> u64 {
        self.active_requests.load(Ordering::Relaxed)
    }

    /// Retries in flight (waiting for their backoff or sent) to the cluster.
    pub fn active_retries(&self) -> u64 {
        self.active_retries.load(Ordering::Relaxed)
    }
}

/// Decrements a counter when dropped.
struct Held(Arc<ClusterCounters>, bool);

impl Held {
    fn request(c: &Arc<ClusterCounters>) -> Self {
        c.active_requests.fetch_add(1, Ordering::Relaxed);
        Held(c.clone(), false)
    }
    fn retry(c: &Arc<ClusterCounters>) -> Self {
        c.active_retries.fetch_add(1, Ordering::Relaxed);
        Held(c.clone(), true)
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let c = if self.1 {
            &self.0.active_retries
        } else {
            &self.0.active_requests
        };
        c.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Retry counters of every cluster, shared by all clones of a stack.
#[derive(Debug, Default)]
pub struct RetryState {
    clusters: RwLock<HashMap<String, Arc<ClusterCounters>, foldhash::fast::RandomState>>,
}

impl RetryState {
    /// The counters of `cluster`.
    pub fn cluster(&self, cluster: &str) -> Arc<ClusterCounters> {
        if let Ok(m) = self.clusters.read() {
            if let Some(c) = m.get(cluster) {
                return c.clone();
            }
        }
        match self.clusters.write() {
            Ok(mut m) => m.entry(cluster.to_string()).or_default().clone(),
            Err(_) => Arc::new(ClusterCounters::default()),
        }
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

/// How one attempt ended.
enum Attempt {
    Response(Response<MeshBody>),
    Failed(BoxError),
    TimedOut(Duration),
}

async fn attempt<S>(
    svc: &mut S,
    req: Request<MeshBody>,
    per_try: Option<Duration>,
    first: bool,
) -> Attempt
where
    S: Service<Request<MeshBody>, Response = Response<MeshBody>, Error = BoxError>,
    S::Future: Send + 'static,
{
    if !first {
        if let Err(e) = svc.ready().await {
            return Attempt::Failed(e);
        }
    }
    let fut = super::call::call(svc, req);
    let result = match per_try {
        Some(t) => match tokio::time::timeout(t, fut).await {
            Ok(r) => r,
            Err(_) => return Attempt::TimedOut(t),
        },
        None => fut.await,
    };
    match result {
        Ok(r) => Attempt::Response(r),
        Err(e) => Attempt::Failed(e),
    }
}

fn per_try_timeout_response(t: Duration, grpc: bool) -> Response<MeshBody> {
    MeshError::new(
        ResponseFlag::UpstreamRequestTimeout,
        format!("upstream request timeout: per-try timeout {t:?} expired"),
    )
    .into_response(grpc)
}

/// The request of attempt `attempt` (1-based): a copy of `parts` whose
/// [`Upstream`] carries the attempt number and the shared `tried` list.
fn request_for(parts: &http::request::Parts, body: MeshBody, attempt: u32) -> Request<MeshBody> {
    let mut req = Request::new(body);
    *req.method_mut() = parts.method.clone();
    *req.uri_mut() = parts.uri.clone();
    *req.version_mut() = parts.version;
    *req.headers_mut() = parts.headers.clone();
    *req.extensions_mut() = parts.extensions.clone();
    if attempt > 1 {
        if let Some(up) = req.extensions_mut().get_mut::<Upstream>() {
            up.attempt = attempt;
        }
    }
    req
}

// Pre-parsed: a `&str` key is parsed again on every lookup.
static GRPC_STATUS: http::HeaderName = http::HeaderName::from_static("grpc-status");
static X_ENVOY_RATELIMITED: http::HeaderName = http::HeaderName::from_static("x-envoy-ratelimited");

/// Reads the outcome of a response; when `need_trailers`, looks for
/// `grpc-status` in the trailers too (see [`peek_trailers`]).
async fn judge(
    resp: Response<MeshBody>,
    need_trailers: bool,
    limit: usize,
) -> Result<(Outcome, Response<MeshBody>), BoxError> {
    let headers = resp.headers();
    let status = resp.status().as_u16();
    let envoy_ratelimited = headers.contains_key(&X_ENVOY_RATELIMITED);
    let header_grpc = headers
        .get(&GRPC_STATUS)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u32>().ok());
    let outcome = |grpc_status| Outcome::Response {
        status,
        grpc_status,
        envoy_ratelimited,
    };
    if header_grpc.is_some() || !need_trailers || status != 200 {
        return Ok((outcome(header_grpc), resp));
    }
    let (parts, body) = resp.into_parts();
    let (trailers, body) = peek_trailers(body, limit).await?;
    let g = trailers.as_ref().and_then(|t| {
        grpc_status(
            std::iter::empty(),
            t.iter()
                .filter_map(|(k, v)| Some((k.as_str(), v.to_str().ok()?))),
        )
    });
    Ok((outcome(g), Response::from_parts(parts, body)))
}

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
    type Future = BoxFuture<'static, Result<Response<MeshBody>, BoxError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<MeshBody>) -> Self::Future {
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let routed = req.extensions().get::<Routed>();
        let (table, index, grpc) = match routed {
            Some(r) if r.table.is_some() => (r.table.clone(), r.route_index, r.grpc),
            _ => return super::call::call(&mut inner, req),
        };
        let Some(upstream) = req.extensions().get::<Upstream>() else {
            return super::call::call(&mut inner, req);
        };
        let counters = self.state.cluster(&upstream.cluster);
        let max_retries = upstream
            .model
            .clusters
            .get(&*upstream.cluster)
            .and_then(|c| c.policy.connection_pool.as_ref())
            .and_then(|p| p.http.as_ref())
            .and_then(|h| h.max_retries);
        let config = self.config;
        Box::pin(async move {
            let disabled = RetryPolicy::disabled();
            let policy = table
                .as_ref()
                .and_then(|t| t.routes.get(index))
                .map_or(&disabled, |r| &r.retries);
            let per_try = policy
                .per_try_timeout
                .map(|d| d.get())
                .filter(|d| !d.is_zero());
            let single = |inner: &mut S, req| {
                let mut inner = inner.clone();
                async move {
                    match attempt(&mut inner, req, per_try, false).await {
                        Attempt::Response(r) => Ok(r),
                        Attempt::Failed(e) => Err(e),
                        Attempt::TimedOut(t) => Ok(per_try_timeout_response(t, grpc)),
                    }
                }
            };
            if !policy.enabled() {
                return match attempt(&mut inner, req, per_try, true).await {
                    Attempt::Response(r) => Ok(r),
                    Attempt::Failed(e) => Err(e),
                    Attempt::TimedOut(t) => Ok(per_try_timeout_response(t, grpc)),
                };
            }
            let _request = Held::request(&counters);
            let (parts, body) = req.into_parts();
            let (mut replay, mut first_body, tee) = match prepare(body, config.body_limit)? {
                Prepared::Complete(r) => (Some(r), None, None),
                Prepared::Teed(b, t) => (None, Some(b), Some(t)),
                Prepared::TooLarge(b) => {
                    tracing::debug!(
                        "request body larger than {} bytes: sent once, not retried",
                        config.body_limit
                    );
                    return single(&mut inner, Request::from_parts(parts, b)).await;
                }
            };
            let need_trailers = grpc && policy.retry_on.bits() & GRPC_CONDITIONS != 0;
            let mut retries_done = 0u32;
            let mut _retry: Option<Held> = None;
            loop {
                let body = match (first_body.take(), &replay) {
                    (Some(b), _) => b,
                    (None, Some(r)) => r.body(),
                    // Unreachable: a retry needs a replay (checked below).
                    (None, None) => crate::body::empty(),
                };
                let req = request_for(&parts, body, retries_done + 1);
                let last_try = retries_done >= policy.attempts;
                let result = attempt(&mut inner, req, per_try, retries_done == 0).await;
                if replay.is_none() {
                    // A streamed body is replayable once it ended within the limit.
                    replay = tee.as_ref().and_then(Tee::replay);
                }
                // Trailers are only looked at once the request was sent whole
                // (unary-like calls); a live stream is never held.
                let peek = need_trailers && !last_try && replay.is_some();
                let (outcome, last) = match result {
                    Attempt::Response(r) => {
                        let (o, r) = judge(r, peek, config.response_buffer_limit).await?;
                        (o, Ok(r))
                    }
                    Attempt::TimedOut(t) => (
                        Outcome::PerTryTimeout,
                        Ok(per_try_timeout_response(t, grpc)),
                    ),
                    Attempt::Failed(e) => match errors::outcome_of(&e) {
                        Some(o) => (o, Err(e)),
                        None => return Err(e),
                    },
                };
                // The retry that made this attempt is over.
                _retry = None;
                // `why` is only formatted when the answer is a local error.
                let exhausted = |last: Result<Response<MeshBody>, BoxError>,
                                 why: &dyn Fn() -> String| {
                    match last {
                        Ok(r) => Ok(r),
                        Err(e) if retries_done == 0 => Err(e),
                        Err(e) => {
                            let cause = errors::mesh_error_of(&e);
                            Err(Box::new(
                                MeshError::new(
                                    ResponseFlag::UpstreamRetryLimitExceeded,
                                    format!("{}; last attempt: {cause}", why()),
                                )
                                .with_status(StatusCode::SERVICE_UNAVAILABLE),
                            ) as BoxError)
                        }
                    }
                };
                if !policy.should_retry_attempt(retries_done, &outcome) {
                    return exhausted(last, &|| {
                        format!("retries exhausted after {} attempts", retries_done + 1)
                    });
                }
                if replay.is_none() {
                    return exhausted(last, &|| {
                        format!(
                            "not retried: the request body was still streaming or larger than {} bytes",
                            config.body_limit
                        )
                    });
                }
                if let Err(refusal) = admit_retry(
                    counters.active_requests(),
                    counters.active_retries(),
                    max_retries,
                    config.budget.as_ref(),
                ) {
                    tracing::debug!("retry refused: {refusal}");
                    return exhausted(last, &|| format!("retry refused: {refusal}"));
                }
                _retry = Some(Held::retry(&counters));
                drop(last);
                retries_done += 1;
                tokio::time::sleep(policy.backoff(retries_done, rng::next_f64())).await;
            }
        })
    }
}
