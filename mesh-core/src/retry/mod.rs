//! Retry policy semantics: what `retries` on an HTTP route means, decided by
//! pure functions the SDK's retry layer calls. Whether an attempt outcome is
//! retriable ([`RetryPolicy::should_retry`]), Istio's default policy when a
//! route has no `retries` ([`RetryPolicy::istio_default`]) and Envoy's
//! exponential backoff with full jitter ([`backoff`]).
//!
//! Retry admission under the cluster's concurrent-retry limit and retry
//! budget is the pure [`admit_retry`] ([`budget`]). Not here: timers, body
//! buffering, the budget's counters and endpoint choice, which live in the
//! SDK layer around these decisions.

pub mod budget;
mod conditions;

use serde::Serialize;

pub use budget::{admit_retry, RetryBudget, RetryRefusal};
pub use conditions::{grpc_status, grpc_status_code, parse_retry_on, RetryOn, GRPC_STATUS};

use crate::config::common::Duration;
use crate::config::networking::virtual_service::HttpRetry;

/// Envoy's default base interval of the retry backoff.
pub const DEFAULT_BACKOFF_BASE: std::time::Duration = std::time::Duration::from_millis(25);

/// Where a route's retry policy came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RetryOrigin {
    /// The route has no `retries`: Istio's default policy.
    Default,
    /// The route's `retries` block.
    Route,
}

/// The typed retry policy of a route.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RetryPolicy {
    /// Retries allowed after the first try; 0 means retries are disabled.
    pub attempts: u32,
    /// Conditions that allow a retry.
    pub retry_on: RetryOn,
    /// Status codes retried under `retriable-status-codes`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub retriable_status_codes: Vec<u16>,
    /// Timeout of each try; `None` means the route timeout bounds every try.
    pub per_try_timeout: Option<Duration>,
    /// Base interval of the backoff.
    pub backoff_base: Duration,
    /// Cap of the backoff (Envoy: 10x the base).
    pub backoff_max: Duration,
    /// Prefer endpoints that were not tried yet.
    pub retry_ignore_previous_hosts: bool,
    /// Retry in other localities.
    pub retry_remote_localities: bool,
    /// Whether this is Istio's default or the route's own policy.
    pub origin: RetryOrigin,
}

/// What happened to one try, as the retry decision needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The upstream answered.
    Response {
        /// HTTP status.
        status: u16,
        /// `grpc-status` from the headers or trailers (see [`grpc_status`]).
        grpc_status: Option<u32>,
        /// The response carries `x-envoy-ratelimited`.
        envoy_ratelimited: bool,
    },
    /// The connection could not be established.
    ConnectFailure,
    /// The upstream refused the HTTP/2 stream (REFUSED_STREAM).
    RefusedStream,
    /// The stream or connection was reset after connecting.
    Reset {
        /// Whether the request had been fully sent before the reset.
        request_sent: bool,
    },
    /// The per-try timeout fired before a response arrived.
    PerTryTimeout,
}

impl Outcome {
    /// A plain HTTP response.
    pub fn status(status: u16) -> Self {
        Outcome::Response {
            status,
            grpc_status: None,
            envoy_ratelimited: false,
        }
    }

    /// A gRPC response (HTTP 200 with a `grpc-status`).
    pub fn grpc(grpc_status: u32) -> Self {
        Outcome::Response {
            status: 200,
            grpc_status: Some(grpc_status),
            envoy_ratelimited: false,
        }
    }
}

impl RetryPolicy {
    /// Istio's default policy for a route without `retries` (istiod's
    /// `retry.DefaultPolicy`): 2 retries on `connect-failure`,
    /// `refused-stream`, `unavailable`, `cancelled` and
    /// `retriable-status-codes` with an empty code list, so a 503 response is
    /// never retried; previous hosts avoided; Envoy's default backoff.
    /// (Older Istio releases listed 503 as a retriable code; current istiod
    /// does not, and neither do we.)
    pub fn istio_default() -> Self {
        Self {
            attempts: 2,
            retry_on: RetryOn::CONNECT_FAILURE
                | RetryOn::REFUSED_STREAM
                | RetryOn::UNAVAILABLE
                | RetryOn::CANCELLED
                | RetryOn::RETRIABLE_STATUS_CODES,
            retriable_status_codes: Vec::new(),
            per_try_timeout: None,
            backoff_base: Duration(DEFAULT_BACKOFF_BASE),
            backoff_max: Duration(DEFAULT_BACKOFF_BASE * 10),
            retry_ignore_previous_hosts: true,
            retry_remote_localities: false,
            origin: RetryOrigin::Default,
        }
    }

    /// Retries disabled (`attempts: 0`).
    pub fn disabled() -> Self {
        Self {
            attempts: 0,
            retry_on: RetryOn::NONE,
            retriable_status_codes: Vec::new(),
            origin: RetryOrigin::Route,
            ..Self::istio_default()
        }
    }

    /// The policy a route gets from its `retries` field, as istiod's
    /// `ConvertPolicy`: absent gives [`RetryPolicy::istio_default`];
    /// `attempts <= 0` disables retries; otherwise the default with the
    /// given fields overriding it (an unset `retryOn` keeps the default
    /// conditions; `backoff` sets the base and the cap is 10x the base).
    /// Invalid `retryOn` items are ignored here (validation reports them).
    pub fn from_config(retries: Option<&HttpRetry>) -> Self {
        let Some(r) = retries else {
            return Self::istio_default();
        };
        if r.attempts <= 0 {
            return Self::disabled();
        }
        let mut p = Self::istio_default();
        p.origin = RetryOrigin::Route;
        p.attempts = r.attempts.unsigned_abs();
        if let Some(on) = r.retry_on.as_deref().filter(|s| !s.is_empty()) {
            let (flags, codes) = match parse_retry_on(on) {
                Ok(v) => v,
                Err(_) => on.split(',').filter_map(|i| parse_retry_on(i).ok()).fold(
                    (RetryOn::NONE, Vec::new()),
                    |(f, mut c), (f2, c2)| {
                        c.extend(c2);
                        (f | f2, c)
                    },
                ),
            };
            p.retry_on = flags;
            p.retriable_status_codes = codes;
        }
        p.per_try_timeout = r.per_try_timeout;
        if let Some(b) = r.retry_ignore_previous_hosts {
            p.retry_ignore_previous_hosts = b;
        }
        p.retry_remote_localities = r.retry_remote_localities.unwrap_or(false);
        if let Some(b) = r.backoff {
            p.backoff_base = b;
            p.backoff_max = Duration(b.get().saturating_mul(10));
        }
        p
    }

    /// True when retries are enabled at all.
    pub fn enabled(&self) -> bool {
        self.attempts > 0 && !self.retry_on.is_empty()
    }

    /// Whether `outcome` is retriable under this policy, with Envoy's
    /// meanings: `5xx` and `gateway-error` include every failure without a
    /// response; `reset` covers resets, connect failures and per-try timeouts;
    /// `reset-before-request` only resets before the request was sent;
    /// `retriable-4xx` is 409 only; gRPC conditions read `grpc-status`.
    /// Does not count attempts: see [`RetryPolicy::should_retry_attempt`].
    pub fn should_retry(&self, outcome: &Outcome) -> bool {
        if self.attempts == 0 {
            return false;
        }
        let on = self.retry_on;
        let has = |c| on.contains(c);
        match *outcome {
            Outcome::Response {
                status,
                grpc_status,
                envoy_ratelimited,
            } => {
                (has(RetryOn::FIVE_XX) && (500..=599).contains(&status))
                    || (has(RetryOn::GATEWAY_ERROR) && matches!(status, 502..=504))
                    || (has(RetryOn::RETRIABLE_4XX) && status == 409)
                    || (has(RetryOn::RETRIABLE_STATUS_CODES)
                        && self.retriable_status_codes.contains(&status))
                    || (has(RetryOn::ENVOY_RATELIMITED) && envoy_ratelimited)
                    || grpc_status.is_some_and(|g| {
                        (has(RetryOn::CANCELLED) && g == 1)
                            || (has(RetryOn::DEADLINE_EXCEEDED) && g == 4)
                            || (has(RetryOn::RESOURCE_EXHAUSTED) && g == 8)
                            || (has(RetryOn::INTERNAL) && g == 13)
                            || (has(RetryOn::UNAVAILABLE) && g == 14)
                    })
            }
            Outcome::ConnectFailure => {
                has(RetryOn::CONNECT_FAILURE)
                    || has(RetryOn::FIVE_XX)
                    || has(RetryOn::GATEWAY_ERROR)
                    || has(RetryOn::RESET)
                    || has(RetryOn::RESET_BEFORE_REQUEST)
            }
            Outcome::RefusedStream => {
                has(RetryOn::REFUSED_STREAM)
                    || has(RetryOn::FIVE_XX)
                    || has(RetryOn::GATEWAY_ERROR)
                    || has(RetryOn::RESET)
            }
            Outcome::Reset { request_sent } => {
                has(RetryOn::RESET)
                    || has(RetryOn::FIVE_XX)
                    || has(RetryOn::GATEWAY_ERROR)
                    || (!request_sent && has(RetryOn::RESET_BEFORE_REQUEST))
            }
            Outcome::PerTryTimeout => {
                has(RetryOn::RESET) || has(RetryOn::FIVE_XX) || has(RetryOn::GATEWAY_ERROR)
            }
        }
    }

    /// Whether to retry after `retries_done` retries (0 after the first
    /// try) ended with `outcome`.
    pub fn should_retry_attempt(&self, retries_done: u32, outcome: &Outcome) -> bool {
        retries_done < self.attempts && self.should_retry(outcome)
    }

    /// The wait before retry number `retry` (1 for the first retry), given a
    /// uniform random number in `[0, 1)`; see [`backoff`].
    pub fn backoff(&self, retry: u32, rand01: f64) -> std::time::Duration {
        backoff(
            retry,
            self.backoff_base.get(),
            self.backoff_max.get(),
            rand01,
        )
    }
}

/// Envoy's exponential backoff with full jitter, as a pure function: retry
/// number `retry` (1-based) waits a uniformly random time in
/// `[0, min((2^retry - 1) * base, max))`, where `rand01` in `[0, 1)` is the
/// random draw (values outside are clamped). Never exceeds `max`.
pub fn backoff(
    retry: u32,
    base: std::time::Duration,
    max: std::time::Duration,
    rand01: f64,
) -> std::time::Duration {
    let n = retry.clamp(1, 63);
    let factor = (1u64 << n) - 1;
    let base_ns = base.as_nanos().min(u128::from(u64::MAX)) as u64;
    let max_ns = max.as_nanos().min(u128::from(u64::MAX)) as u64;
    let upper = base_ns.saturating_mul(factor).min(max_ns);
    let r = if rand01.is_nan() {
        0.0
    } else {
        rand01.clamp(0.0, 1.0)
    };
    let ns = ((upper as f64) * r) as u64;
    std::time::Duration::from_nanos(ns.min(upper.saturating_sub(1)).min(max_ns))
}

#[cfg(test)]
mod tests;
