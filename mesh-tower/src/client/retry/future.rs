//! The retry loop of one request, written out by hand so a request costs
//! no allocation here: the attempt in flight with its per-try timer, the
//! judgement of each answer, the backoff, and the template later attempts
//! are built from.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::future::BoxFuture;
use http::{Request, Response, StatusCode};
use mesh_core::retry::{admit_retry, grpc_status, Outcome, RetryOn, RetryPolicy};
use pin_project_lite::pin_project;
use tower::Service;

use crate::body::{BoxError, MeshBody};
use crate::error::{MeshError, ResponseFlag};
use crate::upstream::Upstream;

use super::super::errors;
use super::super::replay::Replay;
use super::super::rng;
use super::super::tee::{peek_trailers, Tee};
use super::{Held, RetryConfig, GRPC_CONDITIONS};
use crate::client::deadline::Timer;

pub(super) fn per_try_timeout_response(t: Duration, grpc: bool) -> Response<MeshBody> {
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
pub(super) enum Judged {
    /// The outcome is known.
    Now(Outcome, Response<MeshBody>),
    /// Only the trailers can tell (see [`judge_trailers`]).
    NeedsTrailers(Response<MeshBody>),
}

/// The outcome of a response read from its headers, when they tell it.
/// Headers the policy has no condition on are not looked up (`on`).
pub(super) fn judge_headers(resp: Response<MeshBody>, on: RetryOn, need_trailers: bool) -> Judged {
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
pub(super) enum Attempt {
    Response(Response<MeshBody>),
    Failed(BoxError),
    TimedOut(Duration),
}

/// What later attempts are built from: the request as it came, minus its
/// body. The first attempt takes the request's own extensions; when they
/// hold nothing but the routing stage's [`Upstream`], later attempts
/// rebuild that instead of every request paying for a copy of the map.
pub(super) struct Template {
    pub(super) method: http::Method,
    pub(super) uri: http::Uri,
    pub(super) version: http::Version,
    pub(super) headers: http::HeaderMap,
    pub(super) extensions: Option<http::Extensions>,
    pub(super) upstream: Upstream,
}

impl Template {
    /// Splits `parts` into the first attempt's and the template of later ones.
    pub(super) fn new(
        parts: http::request::Parts,
        upstream: Upstream,
    ) -> (Self, http::request::Parts) {
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
pub(super) enum Phase {
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
pub(super) struct Retrying<S> {
    pub(super) inner: S,
    pub(super) template: Template,
    pub(super) replay: Option<Replay>,
    pub(super) tee: Option<Tee>,
    pub(super) config: RetryConfig,
    pub(super) need_trailers: bool,
    pub(super) retries_done: u32,
    pub(super) phase: Phase,
    /// This request counted in flight (and its thread's share of the
    /// cluster's counters).
    pub(super) request: Held,
    pub(super) retry: Option<Held>,
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
        if !self
            .policy()
            .should_retry_attempt(self.retries_done, &outcome)
        {
            return match last {
                // The common case: an answer nobody retries.
                Ok(r) => Next::Answer(Ok(r)),
                Err(e) => self.give_up(e),
            };
        }
        self.try_retry(last)
    }

    /// The answer for an attempt's error when no retry follows.
    #[cold]
    #[inline(never)]
    fn give_up(&self, e: BoxError) -> Next {
        let n = self.retries_done + 1;
        Next::Answer(self.exhausted(Err(e), || format!("retries exhausted after {n} attempts")))
    }

    /// A retry when the body can be replayed and the limits admit one,
    /// else the answer. (Out of line: rare, and the request's common path
    /// then fits in fewer instruction cache lines.)
    #[cold]
    #[inline(never)]
    fn try_retry(&mut self, last: Result<Response<MeshBody>, BoxError>) -> Next {
        if self.replay.is_none() {
            let limit = self.config.body_limit;
            return Next::Answer(self.exhausted(last, || {
                format!("not retried: the request body was still streaming or larger than {limit} bytes")
            }));
        }
        let up = &self.template.upstream;
        let max_retries = up
            .model
            .clusters
            .get(&*up.cluster)
            .and_then(|c| c.policy.connection_pool.as_ref())
            .and_then(|p| p.http.as_ref())
            .and_then(|h| h.max_retries);
        if let Err(refusal) = admit_retry(
            self.request.shard().cluster().active_requests(),
            self.request.shard().cluster().active_retries(),
            max_retries,
            self.config.budget.as_ref(),
        ) {
            tracing::debug!("retry refused: {refusal}");
            return Next::Answer(self.exhausted(last, || format!("retry refused: {refusal}")));
        }
        self.retry = Some(Held::retry(self.request.shard()));
        drop(last);
        self.retries_done += 1;
        Next::Retry(self.policy().backoff(self.retries_done, rng::next_f64()))
    }
}

/// What follows an attempt.
pub(super) enum Next {
    /// Another attempt after this backoff.
    Retry(Duration),
    /// No more attempts: the answer.
    Answer(Result<Response<MeshBody>, BoxError>),
}

pub(super) static DISABLED: std::sync::LazyLock<RetryPolicy> =
    std::sync::LazyLock::new(RetryPolicy::disabled);

pin_project! {
    /// The response future of [`RetryService`]: one attempt (no retry
    /// policy, or a body too large to replay) or the retry loop, written
    /// out by hand so a request costs no allocation here.
    #[project = RetryProj]
    pub struct RetryFuture<S>
    where
        S: Service<Request<MeshBody>>,
    {
        #[pin]
        attempt: Option<S::Future>,
        // The per-try timeout while an attempt is in flight; the backoff
        // between attempts.
        // On this thread's deadline list, like the route timeout (no tokio
        // timer per attempt).
        timer: Option<Timer>,
        per_try: Option<Duration>,
        grpc: bool,
        retrying: Option<Box<Retrying<S>>>,
        failed: Option<BoxError>,
    }
}

impl<S> RetryFuture<S>
where
    S: Service<Request<MeshBody>>,
{
    /// The answer is already known (the request could not be prepared).
    pub(super) fn failed(e: BoxError) -> Self {
        RetryFuture {
            attempt: None,
            timer: None,
            per_try: None,
            grpc: false,
            retrying: None,
            failed: Some(e),
        }
    }

    /// The first attempt of a request with a retry policy, in flight.
    pub(super) fn retrying(
        fut: S::Future,
        per_try: Option<Duration>,
        grpc: bool,
        state: Retrying<S>,
    ) -> Self {
        RetryFuture {
            attempt: Some(fut),
            timer: per_try.map(Timer::after),
            per_try,
            grpc,
            retrying: Some(Box::new(state)),
            failed: None,
        }
    }

    /// One attempt, with no retry.
    pub(super) fn single(fut: S::Future, per_try: Option<Duration>, grpc: bool) -> Self {
        RetryFuture {
            attempt: Some(fut),
            timer: per_try.map(Timer::after),
            per_try,
            grpc,
            retrying: None,
            failed: None,
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
        if let Some(e) = this.failed.take() {
            return Poll::Ready(Err(e));
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
                            let expired = this.timer.as_mut().is_some_and(|t| t.expired(cx));
                            if !expired {
                                return Poll::Pending;
                            }
                            Attempt::TimedOut(this.per_try.unwrap_or_default())
                        }
                    };
                    this.attempt.set(None);
                    *this.timer = None;
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
                                    r.phase = judging(resp, r.config.response_buffer_limit);
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
                Some(_) => match poll_phase(&mut this, cx) {
                    Step::Pending => return Poll::Pending,
                    Step::Done(r) => return Poll::Ready(r),
                    Step::Ended(o, last) => Some((o, last)),
                    Step::Next => None,
                },
            };
            let Some((outcome, last)) = ended else {
                continue;
            };
            let Some(r) = this.retrying.as_mut() else {
                return Poll::Ready(last);
            };
            match r.decide(outcome, last) {
                Next::Retry(backoff) => {
                    *this.timer = Some(Timer::after(backoff));
                    r.phase = Phase::Backoff;
                }
                Next::Answer(answer) => return Poll::Ready(answer),
            }
        }
    }
}

/// What [`poll_phase`] got to.
enum Step {
    Pending,
    /// The final answer.
    Done(Result<Response<MeshBody>, BoxError>),
    /// An attempt ended: decide on a retry.
    Ended(Outcome, Result<Response<MeshBody>, BoxError>),
    /// Moved to the next phase: poll again.
    Next,
}

/// The phases between attempts (reading trailers, backoff, waiting for
/// the service), all of which follow a failure or a gRPC answer. Out of
/// line: the request's common path (one attempt, answered) then fits in
/// fewer instruction cache lines.
#[cold]
#[inline(never)]
fn poll_phase<S>(this: &mut RetryProj<'_, S>, cx: &mut Context<'_>) -> Step
where
    S: Service<Request<MeshBody>, Response = Response<MeshBody>, Error = BoxError>,
{
    let Some(r) = this.retrying.as_mut() else {
        return Step::Done(Err("retry future polled in no phase".into()));
    };
    match &mut r.phase {
        Phase::Attempting => Step::Next,
        Phase::Judging(f) => match f.as_mut().poll(cx) {
            Poll::Pending => Step::Pending,
            Poll::Ready(Ok((o, resp))) => Step::Ended(o, Ok(resp)),
            Poll::Ready(Err(e)) => Step::Done(Err(e)),
        },
        Phase::Backoff => {
            if let Some(t) = this.timer.as_mut() {
                if !t.expired(cx) {
                    return Step::Pending;
                }
            }
            *this.timer = None;
            r.phase = Phase::Readying;
            Step::Next
        }
        Phase::Readying => match r.inner.poll_ready(cx) {
            Poll::Pending => Step::Pending,
            Poll::Ready(Ok(())) => {
                let body = r
                    .replay
                    .as_ref()
                    .map_or_else(crate::body::empty, Replay::body);
                let req = r.template.request(body, r.retries_done + 1);
                this.attempt.set(Some(r.inner.call(req)));
                *this.timer = this.per_try.map(Timer::after);
                r.phase = Phase::Attempting;
                Step::Next
            }
            Poll::Ready(Err(e)) => match errors::outcome_of(&e) {
                Some(o) => Step::Ended(o, Err(e)),
                None => Step::Done(Err(e)),
            },
        },
    }
}

/// The phase that reads a response's trailers for its gRPC status.
#[cold]
#[inline(never)]
fn judging(resp: Response<MeshBody>, limit: usize) -> Phase {
    Phase::Judging(Box::pin(judge_trailers(resp, limit)))
}
