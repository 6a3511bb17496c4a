//! Admission of retries: Envoy's `max_retries` circuit breaker (a cap on
//! concurrent retries per cluster) and its `retry_budget` (concurrent retries
//! limited to a share of active requests, with a floor).
//!
//! Pure: the SDK keeps the counters (per cluster, shared by every request)
//! and asks [`admit_retry`] before starting a retry. The point is that during
//! an outage retries cannot multiply the load on a failing cluster.

use serde::Serialize;

/// Envoy's `retry_budget` for a cluster.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct RetryBudget {
    /// Concurrent retries allowed as a percentage of active requests
    /// (Envoy's default 20%).
    pub budget_percent: f64,
    /// Concurrent retries always allowed whatever the active requests
    /// (Envoy's default 3).
    pub min_retry_concurrency: u32,
}

impl Default for RetryBudget {
    fn default() -> Self {
        Self {
            budget_percent: 20.0,
            min_retry_concurrency: 3,
        }
    }
}

impl RetryBudget {
    /// The number of concurrent retries the budget allows with
    /// `active_requests` requests in flight:
    /// `max(min_retry_concurrency, budget_percent% of active_requests)`.
    pub fn max_concurrent_retries(&self, active_requests: u64) -> u64 {
        let pct = if self.budget_percent.is_nan() {
            0.0
        } else {
            self.budget_percent.clamp(0.0, 100.0)
        };
        let share = ((active_requests as f64) * pct / 100.0) as u64;
        share.max(u64::from(self.min_retry_concurrency))
    }
}

/// Why a retry was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryRefusal {
    /// The cluster's `maxRetries` concurrent retries are already running.
    MaxRetries {
        /// The configured limit.
        limit: u64,
    },
    /// The retry budget is spent.
    Budget {
        /// Retries the budget allows right now.
        allowed: u64,
        /// Active requests the budget was computed from.
        active_requests: u64,
    },
}

impl std::fmt::Display for RetryRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RetryRefusal::MaxRetries { limit } => write!(
                f,
                "the cluster already has {limit} concurrent retries (connectionPool.http.maxRetries)"
            ),
            RetryRefusal::Budget {
                allowed,
                active_requests,
            } => write!(
                f,
                "retry budget spent: {allowed} concurrent retries allowed for {active_requests} active requests"
            ),
        }
    }
}

/// Whether one more retry may start on a cluster that has `active_retries`
/// retries and `active_requests` requests in flight, under the cluster's
/// `max_retries` limit (`None` = unlimited, Istio's default) and an optional
/// budget. Both limits apply when both are given.
pub fn admit_retry(
    active_requests: u64,
    active_retries: u64,
    max_retries: Option<u32>,
    budget: Option<&RetryBudget>,
) -> Result<(), RetryRefusal> {
    if let Some(limit) = max_retries.map(u64::from) {
        if active_retries >= limit {
            return Err(RetryRefusal::MaxRetries { limit });
        }
    }
    if let Some(b) = budget {
        let allowed = b.max_concurrent_retries(active_requests);
        if active_retries >= allowed {
            return Err(RetryRefusal::Budget {
                allowed,
                active_requests,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_has_a_floor_and_a_share() {
        let b = RetryBudget::default();
        assert_eq!(b.max_concurrent_retries(0), 3);
        assert_eq!(b.max_concurrent_retries(10), 3);
        assert_eq!(b.max_concurrent_retries(100), 20);
        assert_eq!(b.max_concurrent_retries(1000), 200);
    }

    #[test]
    fn admission() {
        let b = RetryBudget::default();
        assert!(admit_retry(100, 19, None, Some(&b)).is_ok());
        assert_eq!(
            admit_retry(100, 20, None, Some(&b)),
            Err(RetryRefusal::Budget {
                allowed: 20,
                active_requests: 100
            })
        );
        assert_eq!(
            admit_retry(100, 2, Some(2), Some(&b)),
            Err(RetryRefusal::MaxRetries { limit: 2 })
        );
        assert!(admit_retry(1, 1_000, None, None).is_ok());
        assert!(admit_retry(1, 2, None, Some(&b)).is_ok());
        assert!(admit_retry(1, 3, None, Some(&b)).is_err());
    }
}
