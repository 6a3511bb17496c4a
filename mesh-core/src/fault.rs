//! Fault injection decisions: whether one attempt of a request is delayed
//! and/or aborted, given the route's [`Fault`] and random draws.
//!
//! Pure and deterministic: the caller passes uniform random numbers in
//! `[0, 1)`, so tests can pin every branch. Percentages are Istio's: a share
//! of requests from 0 to 100, and a missing percentage is 0% (the compiler in
//! [`crate::route`] already turns an absent `percentage` into `0.0`). Not
//! here: sleeping and building the abort response, which the SDK's fault
//! layer does.

use std::time::Duration;

use crate::route::model::Fault;

/// How an attempt is aborted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Abort {
    /// HTTP status to answer with, when the fault names one.
    pub http_status: Option<u16>,
    /// gRPC status to answer with, when the fault names one.
    pub grpc_status: Option<u32>,
}

/// What fault injection does to one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FaultDecision {
    /// Wait this long before going on (delay fault hit).
    pub delay: Option<Duration>,
    /// Answer locally instead of forwarding (abort fault hit).
    pub abort: Option<Abort>,
}

impl FaultDecision {
    /// True when the attempt is neither delayed nor aborted.
    pub fn is_none(&self) -> bool {
        self.delay.is_none() && self.abort.is_none()
    }
}

/// True when a uniform draw `rand01` in `[0, 1)` falls within `percentage`
/// (0-100). 0% never hits and 100% always does; NaN counts as 0%.
pub fn hit(percentage: f64, rand01: f64) -> bool {
    if percentage.is_nan() || percentage <= 0.0 {
        return false;
    }
    if percentage >= 100.0 {
        return true;
    }
    rand01 * 100.0 < percentage
}

/// Decides the faults of one attempt with two independent draws in
/// `[0, 1)`: `delay_draw` for the delay, `abort_draw` for the abort (Envoy
/// draws them separately, so a request may be both delayed and aborted).
pub fn decide(fault: &Fault, delay_draw: f64, abort_draw: f64) -> FaultDecision {
    FaultDecision {
        delay: fault
            .delay
            .as_ref()
            .filter(|d| hit(d.percentage, delay_draw))
            .map(|d| d.delay.get()),
        abort: fault
            .abort
            .as_ref()
            .filter(|a| hit(a.percentage, abort_draw))
            .map(|a| Abort {
                http_status: a.http_status,
                grpc_status: a.grpc_status,
            }),
    }
}

/// The gRPC status a gRPC client should see for an HTTP status, as gRPC's
/// HTTP-to-gRPC mapping defines it (used when an HTTP abort hits a gRPC
/// request).
pub fn grpc_status_for_http(status: u16) -> u32 {
    match status {
        400 => 13,             // INTERNAL
        401 => 16,             // UNAUTHENTICATED
        403 => 7,              // PERMISSION_DENIED
        404 => 12,             // UNIMPLEMENTED
        429 | 502..=504 => 14, // UNAVAILABLE
        _ => 2,                // UNKNOWN
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::common::Duration as CfgDuration;
    use crate::route::model::{AbortFault, DelayFault};

    fn fault(delay_pct: Option<f64>, abort_pct: Option<f64>) -> Fault {
        Fault {
            delay: delay_pct.map(|p| DelayFault {
                delay: CfgDuration::from_millis(100),
                percentage: p,
            }),
            abort: abort_pct.map(|p| AbortFault {
                http_status: Some(503),
                grpc_status: None,
                percentage: p,
            }),
        }
    }

    #[test]
    fn percentages() {
        assert!(!hit(0.0, 0.0));
        assert!(hit(100.0, 0.999_999));
        assert!(hit(50.0, 0.49));
        assert!(!hit(50.0, 0.5));
        assert!(!hit(f64::NAN, 0.0));
        assert!(hit(0.1, 0.0009));
        assert!(!hit(0.1, 0.001));
    }

    #[test]
    fn decisions_use_independent_draws() {
        let f = fault(Some(100.0), Some(50.0));
        let d = decide(&f, 0.3, 0.7);
        assert_eq!(d.delay, Some(Duration::from_millis(100)));
        assert_eq!(d.abort, None);
        let d = decide(&f, 0.3, 0.2);
        assert_eq!(
            d.abort,
            Some(Abort {
                http_status: Some(503),
                grpc_status: None
            })
        );
        assert!(decide(&fault(None, None), 0.0, 0.0).is_none());
    }

    #[test]
    fn zero_percent_never_fires() {
        // A missing percentage compiles to 0.0: never, not always.
        let f = fault(Some(0.0), Some(0.0));
        for i in 0..100 {
            let r = f64::from(i) / 100.0;
            assert!(decide(&f, r, r).is_none());
        }
    }

    #[test]
    fn http_to_grpc_mapping() {
        assert_eq!(grpc_status_for_http(503), 14);
        assert_eq!(grpc_status_for_http(404), 12);
        assert_eq!(grpc_status_for_http(500), 2);
    }
}
