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
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::future::BoxFuture;
use http::{Request, Response, StatusCode};
use mesh_core::retry::{admit_retry, grpc_status, Outcome, RetryBudget, RetryOn, RetryPolicy};
use pin_project_lite::pin_project;
use tokio::time::Sleep;
use tower::{Layer, Service};

use crate::body::{BoxError, MeshBody};
use crate::error::{MeshError, ResponseFlag};
use crate::upstream::Upstream;

use super::call::{CallRef, Via};
use super::errors;
use super::replay::Replay;
use super::rng;
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

fn per_try_timeout_response(t: Duration, grpc: bool) -> Response<MeshBody> {
    MeshError::new(
        ResponseFlag::UpstreamRequestTimeout,
        format!("upstream request timeout: per-try timeout {t:?} expired"),
    )
    .into_response(grpc)
}

// Pre-parsed: a `&str` key is parsed again on every lookup.
static GRPC_STATUS: http::HeaderName = http::HeaderName::from_static("grpc-status");
static X_ENVOY_RATELIMITED: http::HeaderName = http::HeaderName::from_static("x-envoy-ratelimited");

/// A response judged by its headers.
enum Judged {
    /// The outcome is known.
    Now(Outcome, Response<MeshBody>),
    /// Only the trailers can tell (see [`judge_trailers`]).
    NeedsTrailers(Response<MeshBody>),
}

/// The outcome of a response read from its headers, when they tell it.
/// Headers the policy has no condition on are not looked up (`on`).
fn judge_headers(resp: Response<MeshBody>, on: RetryOn, need_trailers: bool) -> Judged {
    let headers = resp.headers();
    let status = resp.status().as_u16();
    let header_grpc = if on.bits() & GRPC_CONDITIONS != 0 {
        headers
            .get(&GRPC_STATUS)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u32>().ok())
    } else {
        None
    };
    if header_grpc.is_some() || !need_trailers || status != 200 {
        let outcome = Outcome::Response {
            status,
            grpc_status: header_grpc,
            envoy_ratelimited: on.contains(RetryOn::ENVOY_RATELIMITED)
                && headers.contains_key(&X_ENVOY_RATELIMITED),
        };
        return Judged::Now(outcome, resp);
    }
    Judged::NeedsTrailers(resp)
}

/// Looks for `grpc-status` in the trailers of a 200 response without one in
/// its headers (see [`peek_trailers`]).
async fn judge_trailers(
    resp: Response<MeshBody>,
    limit: usize,
) -> Result<(Outcome, Response<MeshBody>), BoxError> {
    let envoy_ratelimited = resp.headers().contains_key(&X_ENVOY_RATELIMITED);
    let (parts, body) = resp.into_parts();
    let (trailers, body) = peek_trailers(body, limit).await?;
    let grpc_status = trailers.as_ref().and_then(|t| {
        grpc_status(
            std::iter::empty(),
            t.iter()
                .filter_map(|(k, v)| Some((k.as_str(), v.to_str().ok()?))),
        )
    });
    let outcome = Outcome::Response {
        status: parts.status.as_u16(),
        grpc_status,
        envoy_ratelimited,
    };
    Ok((outcome, Response::from_parts(parts, body)))
}

/// How one attempt ended.
enum Attempt {
    Response(Response<MeshBody>),
    Failed(BoxError),
    TimedOut(Duration),
}

/// What later attempts are built from: the request as it came, minus its
/// body. The first attempt takes the request's own extensions; when they
/// hold nothing but the routing stage's [`Upstream`], later attempts
/// rebuild that instead of every request paying for a copy of the map.
struct Template {
    method: http::Method,
    uri: http::Uri,
    version: http::Version,
    headers: http::HeaderMap,
    extensions: Option<http::Extensions>,
    upstream: Upstream,
}

impl Template {
    /// Splits `parts` into the first attempt's and the template of later ones.
    fn new(parts: http::request::Parts, upstream: Upstream) -> (Self, http::request::Parts) {
        let extensions = (parts.extensions.len() > 1).then(|| parts.extensions.clone());
        let template = Template {
            method: parts.method.clone(),
            uri: parts.uri.clone(),
            version: parts.version,
            headers: parts.headers.clone(),
            extensions,
            upstream,
        };
        // The first attempt keeps the request's own extensions.
        (template, parts)
    }

    /// The request of attempt `attempt` (2 and later): a copy whose
    /// [`Upstream`] carries the attempt number and the shared `tried` list.
    fn request(&self, body: MeshBody, attempt: u32) -> Request<MeshBody> {
        let mut req = Request::new(body);
        *req.method_mut() = self.method.clone();
        *req.uri_mut() = self.uri.clone();
        *req.version_mut() = self.version;
        *req.headers_mut() = self.headers.clone();
        let ext = req.extensions_mut();
        if let Some(e) = &self.extensions {
            *ext = e.clone();
        }
        let mut up = self.upstream.clone();
        up.attempt = attempt;
        ext.insert(up);
        req
    }
}

/// Where a request with a retry policy stands between polls.
enum Phase {
    /// An attempt is in flight (`attempt`, with the per-try timer).
    Attempting,
    /// A 200 response's trailers are being read for a gRPC status.
    Judging(BoxFuture<'static, Result<(Outcome, Response<MeshBody>), BoxError>>),
    /// Waiting out the backoff (`timer`).
    Backoff,
    /// Waiting for the inner service to be ready for the next attempt.
    Readying,
}

/// The state of a request with a retry policy.
struct Retrying<S> {
    inner: S,
    template: Template,
    replay: Option<Replay>,
    tee: Option<Tee>,
    counters: Arc<ClusterCounters>,
    max_retries: Option<u32>,
    config: RetryConfig,
    need_trailers: bool,
    retries_done: u32,
    phase: Phase,
    _request: Held,
    retry: Option<Held>,
}

impl<S> Retrying<S> {
    fn policy(&self) -> &RetryPolicy {
        self.template
            .upstream
            .routed
            .as_ref()
            .and_then(|r| r.route())
            .map_or(&DISABLED, |r| &r.retries)
    }

    /// The answer when no retry follows `last`. `why` is only formatted
    /// when the answer is a local error.
    fn exhausted(
        &self,
        last: Result<Response<MeshBody>, BoxError>,
        why: impl FnOnce() -> String,
    ) -> Result<Response<MeshBody>, BoxError> {
        match last {
            Ok(r) => Ok(r),
            Err(e) if self.retries_done == 0 => Err(e),
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
    }

    /// After an attempt ended with `outcome`: the final answer, or the
    /// backoff before the next attempt.
    fn decide(&mut self, outcome: Outcome, last: Result<Response<MeshBody>, BoxError>) -> Next {
        // The retry that made this attempt is over.
        self.retry = None;
        let policy = self.policy();
        if !policy.should_retry_attempt(self.retries_done, &outcome) {
            let n = self.retries_done + 1;
            return Next::Answer(
                self.exhausted(last, || format!("retries exhausted after {n} attempts")),
            );
        }
        if self.replay.is_none() {
            let limit = self.config.body_limit;
            return Next::Answer(self.exhausted(last, || {
                format!("not retried: the request body was still streaming or larger than {limit} bytes")
            }));
        }
        if let Err(refusal) = admit_retry(
            self.counters.active_requests(),
            self.counters.active_retries(),
            self.max_retries,
            self.config.budget.as_ref(),
        ) {
            tracing::debug!("retry refused: {refusal}");
            return Next::Answer(self.exhausted(last, || format!("retry refused: {refusal}")));
        }
        self.retry = Some(Held::retry(&self.counters));
        drop(last);
        self.retries_done += 1;
        Next::Retry(self.policy().backoff(self.retries_done, rng::next_f64()))
    }
}

/// What follows an attempt.
enum Next {
    /// Another attempt after this backoff.
    Retry(Duration),
    /// No more attempts: the answer.
    Answer(Result<Response<MeshBody>, BoxError>),
}

static DISABLED: std::sync::LazyLock<RetryPolicy> = std::sync::LazyLock::new(RetryPolicy::disabled);

pin_project! {
    /// The response future of [`RetryService`]: one attempt (no retry
    /// policy, or a body too large to replay) or the retry loop, written
    /// out by hand so a request costs no allocation here.
    pub struct RetryFuture<S>
    where
        S: Service<Request<MeshBody>>,
    {
        #[pin]
        attempt: Option<S::Future>,
        // The per-try timeout while an attempt is in flight; the backoff
        // between attempts.
        #[pin]
        timer: Option<Sleep>,
        per_try: Option<Duration>,
        grpc: bool,
        retrying: Option<Retrying<S>>,
        ready: Option<Result<Response<MeshBody>, BoxError>>,
    }
}

impl<S> RetryFuture<S>
where
    S: Service<Request<MeshBody>>,
{
    fn single(fut: S::Future, per_try: Option<Duration>, grpc: bool) -> Self {
        RetryFuture {
            attempt: Some(fut),
            timer: per_try.map(tokio::time::sleep),
            per_try,
            grpc,
            retrying: None,
            ready: None,
        }
    }
}

impl<S> Future for RetryFuture<S>
where
    S: Service<Request<MeshBody>, Response = Response<MeshBody>, Error = BoxError>,
{
    type Output = Result<Response<MeshBody>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        if let Some(r) = this.ready.take() {
            return Poll::Ready(r);
        }
        loop {
            let phase = this.retrying.as_ref().map(|r| &r.phase);
            let ended = match phase {
                None | Some(Phase::Attempting) => {
                    let Some(fut) = this.attempt.as_mut().as_pin_mut() else {
                        return Poll::Ready(Err("retry future polled after completion".into()));
                    };
                    let ended = match fut.poll(cx) {
                        Poll::Ready(Ok(r)) => Attempt::Response(r),
                        Poll::Ready(Err(e)) => Attempt::Failed(e),
                        Poll::Pending => {
                            let expired = this
                                .timer
                                .as_mut()
                                .as_pin_mut()
                                .is_some_and(|t| t.poll(cx).is_ready());
                            if !expired {
                                return Poll::Pending;
                            }
                            Attempt::TimedOut(this.per_try.unwrap_or_default())
                        }
                    };
                    this.attempt.set(None);
                    this.timer.set(None);
                    let Some(r) = this.retrying.as_mut() else {
                        return Poll::Ready(match ended {
                            Attempt::Response(r) => Ok(r),
                            Attempt::Failed(e) => Err(e),
                            Attempt::TimedOut(t) => Ok(per_try_timeout_response(t, *this.grpc)),
                        });
                    };
                    if r.replay.is_none() {
                        // A streamed body is replayable once it ended within the limit.
                        r.replay = r.tee.as_ref().and_then(Tee::replay);
                    }
                    match ended {
                        Attempt::Response(resp) => {
                            // Trailers are only looked at once the request was
                            // sent whole (unary-like calls); a live stream is
                            // never held.
                            let last_try = r.retries_done >= r.policy().attempts;
                            let peek = r.need_trailers && !last_try && r.replay.is_some();
                            match judge_headers(resp, r.policy().retry_on, peek) {
                                Judged::Now(o, resp) => Some((o, Ok(resp))),
                                Judged::NeedsTrailers(resp) => {
                                    let limit = r.config.response_buffer_limit;
                                    r.phase = Phase::Judging(Box::pin(judge_trailers(resp, limit)));
                                    None
                                }
                            }
                        }
                        Attempt::TimedOut(t) => Some((
                            Outcome::PerTryTimeout,
                            Ok(per_try_timeout_response(t, *this.grpc)),
                        )),
                        Attempt::Failed(e) => match errors::outcome_of(&e) {
                            Some(o) => Some((o, Err(e))),
                            None => return Poll::Ready(Err(e)),
                        },
                    }
                }
                Some(Phase::Judging(_)) => {
                    let Some(r) = this.retrying.as_mut() else {
                        continue;
                    };
                    let Phase::Judging(f) = &mut r.phase else {
                        continue;
                    };
                    match std::task::ready!(f.as_mut().poll(cx)) {
                        Ok((o, resp)) => Some((o, Ok(resp))),
                        Err(e) => return Poll::Ready(Err(e)),
                    }
                }
                Some(Phase::Backoff) => {
                    if let Some(t) = this.timer.as_mut().as_pin_mut() {
                        std::task::ready!(t.poll(cx));
                    }
                    this.timer.set(None);
                    if let Some(r) = this.retrying.as_mut() {
                        r.phase = Phase::Readying;
                    }
                    None
                }
                Some(Phase::Readying) => {
                    let Some(r) = this.retrying.as_mut() else {
                        continue;
                    };
                    match std::task::ready!(r.inner.poll_ready(cx)) {
                        Ok(()) => {
                            let body = r
                                .replay
                                .as_ref()
                                .map_or_else(crate::body::empty, Replay::body);
                            let req = r.template.request(body, r.retries_done + 1);
                            this.attempt.set(Some(r.inner.call(req)));
                            this.timer.set(this.per_try.map(tokio::time::sleep));
                            r.phase = Phase::Attempting;
                            None
                        }
                        Err(e) => match errors::outcome_of(&e) {
                            Some(o) => Some((o, Err(e))),
                            None => return Poll::Ready(Err(e)),
                        },
                    }
                }
            };
            let Some((outcome, last)) = ended else {
                continue;
            };
            let Some(r) = this.retrying.as_mut() else {
                return Poll::Ready(last);
            };
            match r.decide(outcome, last) {
                Next::Retry(backoff) => {
                    this.timer.set(Some(tokio::time::sleep(backoff)));
                    r.phase = Phase::Backoff;
                }
                Next::Answer(answer) => return Poll::Ready(answer),
            }
        }
    }
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
    let counters = state.cluster(&upstream.cluster);
    let max_retries = upstream
        .model
        .clusters
        .get(&*upstream.cluster)
        .and_then(|c| c.policy.connection_pool.as_ref())
        .and_then(|p| p.http.as_ref())
        .and_then(|h| h.max_retries);
    let need_trailers = grpc && policy.retry_on.bits() & GRPC_CONDITIONS != 0;
    let (parts, body) = req.into_parts();
    let (replay, first_body, tee) = match prepare(body, config.body_limit) {
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
        Err(e) => {
            return RetryFuture {
                attempt: None,
                timer: None,
                per_try,
                grpc,
                retrying: None,
                ready: Some(Err(e)),
            }
        }
    };
    let _request = Held::request(&counters);
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
    RetryFuture {
        attempt: Some(fut),
        timer: per_try.map(tokio::time::sleep),
        per_try,
        grpc,
        retrying: Some(Retrying {
            inner,
            template,
            replay,
            tee,
            counters,
            max_retries,
            config,
            need_trailers,
            retries_done: 0,
            phase: Phase::Attempting,
            _request,
            retry: None,
        }),
        ready: None,
    }
}
