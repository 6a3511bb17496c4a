//! Local rate limiting: token buckets per workload and per path prefix,
//! with Envoy `local_ratelimit` semantics and `governor` underneath.
//!
//! A [`TokenBucket`] holds at most `max_tokens`, starts full and gains
//! `tokens_per_fill` every `fill_interval`; a request takes one token or is
//! refused with 429 and flag RL (`x-mesh-response-flags: RL`; gRPC
//! UNAVAILABLE). A route bucket (longest matching path prefix) replaces the
//! workload bucket for its requests, as a per-route `local_ratelimit`
//! config replaces the listener one in Envoy.
//!
//! Deviation: governor's GCRA refills continuously (one token every
//! `fill_interval / tokens_per_fill`) instead of in discrete chunks, so
//! over any window it admits the same number of requests but spreads the
//! refill evenly. Time comes from tokio's clock ([`TokioClock`]), so tests
//! drive buckets with a paused clock.
//!
//! The layer runs after authorization, so the prefix is matched against
//! the normalized path.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use governor::clock::Clock;
use governor::middleware::NoOpMiddleware;
use governor::nanos::Nanos;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use http::{Request, Response};
use tower::{Layer, Service};

use crate::body::{BoxError, MeshBody};
use crate::error::{is_grpc, MeshError, ResponseFlag};
use crate::server::authz::BoxFuture;

/// Envoy's `token_bucket`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenBucket {
    /// Bucket size (burst).
    pub max_tokens: u32,
    /// Tokens added per fill.
    pub tokens_per_fill: u32,
    /// Time between fills.
    pub fill_interval: Duration,
}

/// Why a bucket is not usable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid token bucket {bucket:?}: max_tokens and tokens_per_fill must be at least 1 and fill_interval at least 1ms")]
pub struct BucketError {
    /// The offending bucket.
    pub bucket: TokenBucket,
}

impl TokenBucket {
    /// `max_tokens` tokens, refilled by `tokens_per_fill` every `fill_interval`.
    pub fn new(max_tokens: u32, tokens_per_fill: u32, fill_interval: Duration) -> Self {
        TokenBucket {
            max_tokens,
            tokens_per_fill,
            fill_interval,
        }
    }

    fn quota(&self) -> Result<Quota, BucketError> {
        let err = BucketError { bucket: *self };
        let max = NonZeroU32::new(self.max_tokens).ok_or(err.clone())?;
        if self.tokens_per_fill == 0 || self.fill_interval < Duration::from_millis(1) {
            return Err(err);
        }
        let period = self.fill_interval / self.tokens_per_fill;
        Ok(Quota::with_period(period).ok_or(err)?.allow_burst(max))
    }
}

/// The local rate limits of a workload.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RateLimitConfig {
    /// The bucket every request takes from (unless a route bucket applies).
    pub workload: Option<TokenBucket>,
    /// Buckets for path prefixes; the longest matching prefix wins.
    pub routes: Vec<(String, TokenBucket)>,
}

/// governor's clock on tokio time (so a paused tokio clock drives it).
#[derive(Debug, Clone, Copy)]
pub struct TokioClock {
    base: tokio::time::Instant,
}

impl Default for TokioClock {
    fn default() -> Self {
        TokioClock {
            base: tokio::time::Instant::now(),
        }
    }
}

impl Clock for TokioClock {
    type Instant = Nanos;

    fn now(&self) -> Nanos {
        Nanos::from(tokio::time::Instant::now().saturating_duration_since(self.base))
    }
}

type Limiter = RateLimiter<NotKeyed, InMemoryState, TokioClock, NoOpMiddleware<Nanos>>;

struct Buckets {
    workload: Option<Limiter>,
    /// Sorted by prefix length, longest first.
    routes: Vec<(String, Limiter)>,
}

impl Buckets {
    fn limiter_for(&self, path: &str) -> Option<&Limiter> {
        self.routes
            .iter()
            .find(|(p, _)| path.starts_with(p.as_str()))
            .map(|(_, l)| l)
            .or(self.workload.as_ref())
    }
}

/// Wraps a service with [`RateLimitService`]; the buckets are shared by
/// every service the layer builds.
#[derive(Clone)]
pub struct RateLimitLayer {
    buckets: Arc<Buckets>,
}

impl std::fmt::Debug for RateLimitLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimitLayer")
            .field("workload", &self.buckets.workload.is_some())
            .field("routes", &self.buckets.routes.len())
            .finish()
    }
}

impl RateLimitLayer {
    /// No limits: every request passes.
    pub fn empty() -> Self {
        RateLimitLayer {
            buckets: Arc::new(Buckets {
                workload: None,
                routes: Vec::new(),
            }),
        }
    }

    /// Builds the buckets (full) of `config`.
    pub fn new(config: &RateLimitConfig) -> Result<Self, BucketError> {
        let clock = TokioClock::default();
        let make = |b: &TokenBucket| -> Result<Limiter, BucketError> {
            Ok(RateLimiter::direct_with_clock(b.quota()?, clock))
        };
        let workload = config.workload.as_ref().map(make).transpose()?;
        let mut routes = config
            .routes
            .iter()
            .map(|(p, b)| Ok((p.clone(), make(b)?)))
            .collect::<Result<Vec<_>, BucketError>>()?;
        routes.sort_by_key(|r| std::cmp::Reverse(r.0.len()));
        Ok(RateLimitLayer {
            buckets: Arc::new(Buckets { workload, routes }),
        })
    }
}

impl<S> Layer<S> for RateLimitLayer {
    type Service = RateLimitService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RateLimitService {
            inner,
            buckets: self.buckets.clone(),
        }
    }
}

/// Refuses requests when their bucket is empty; see the module docs.
#[derive(Clone)]
pub struct RateLimitService<S> {
    inner: S,
    buckets: Arc<Buckets>,
}

impl<S: std::fmt::Debug> std::fmt::Debug for RateLimitService<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimitService")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<S> Service<Request<MeshBody>> for RateLimitService<S>
where
    S: Service<Request<MeshBody>, Response = Response<MeshBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
{
    type Response = Response<MeshBody>;
    type Error = BoxError;
    type Future = BoxFuture<Result<Response<MeshBody>, BoxError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Request<MeshBody>) -> Self::Future {
        if let Some(limiter) = self.buckets.limiter_for(req.uri().path()) {
            if limiter.check().is_err() {
                let resp = MeshError::new(ResponseFlag::RateLimited, "local_rate_limited")
                    .into_response(is_grpc(&req));
                return Box::pin(async move { Ok(resp) });
            }
        }
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        crate::server::authz::forward(&mut inner, req)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_buckets() {
        assert!(TokenBucket::new(0, 1, Duration::from_secs(1))
            .quota()
            .is_err());
        assert!(TokenBucket::new(1, 0, Duration::from_secs(1))
            .quota()
            .is_err());
        assert!(TokenBucket::new(1, 1, Duration::ZERO).quota().is_err());
        assert!(TokenBucket::new(10, 5, Duration::from_secs(1))
            .quota()
            .is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn bucket_on_paused_clock() {
        let layer = RateLimitLayer::new(&RateLimitConfig {
            workload: Some(TokenBucket::new(3, 1, Duration::from_secs(1))),
            routes: vec![(
                "/api/".into(),
                TokenBucket::new(1, 1, Duration::from_secs(10)),
            )],
        })
        .unwrap();
        let b = &layer.buckets;
        let take = |path: &str| b.limiter_for(path).unwrap().check().is_ok();
        assert!(take("/") && take("/") && take("/"));
        assert!(!take("/"));
        tokio::time::advance(Duration::from_millis(1000)).await;
        assert!(take("/"));
        assert!(!take("/"));
        assert!(take("/api/x"));
        assert!(!take("/api/x"));
        tokio::time::advance(Duration::from_secs(9)).await;
        assert!(!take("/api/x"));
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(take("/api/x"));
    }
}
