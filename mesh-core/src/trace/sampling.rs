//! Whether a request's span is sampled, as a pure function of the parent's
//! decision, a trusted force flag, Istio's `randomSamplingPercentage` and a
//! random number the caller supplies.
//!
//! The order is Envoy's: its connection manager first makes a local
//! decision (forced by `x-envoy-force-trace` on a trusted request, else the
//! random percentage), and both its Zipkin and OpenTelemetry tracers then
//! let a sampled flag received from the parent override it. So a parent
//! that said "not sampled" wins even over a forced trace. The percentage
//! has Envoy's precision: it is rounded to a fraction of 10 000 (0.01 %),
//! as Envoy turns the `random_sampling` percent Istio sends into a
//! per-ten-thousand fraction.
//!
//! Not here: where the random number comes from (the caller's generator,
//! or [`super::request_id_sampling_value`] for Istio's
//! `useRequestIdForTraceSampling`), or which requests count as trusted
//! for the force flag (Envoy honours it only on internal requests).

/// `x-envoy-force-trace`: forces sampling when set on a trusted request.
pub const X_ENVOY_FORCE_TRACE: &str = "x-envoy-force-trace";

/// Istio's default sampling percentage when no Telemetry or mesh
/// config sets one (`meshConfig.defaultConfig.tracing.sampling`: 1 %).
pub const DEFAULT_SAMPLING_PERCENTAGE: f64 = 1.0;

/// Why a span was (not) sampled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SamplingReason {
    /// The parent's propagated decision.
    Parent,
    /// `x-envoy-force-trace` on a trusted request.
    Forced,
    /// The random percentage.
    Random,
}

/// A sampling decision and its reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SamplingDecision {
    /// Whether spans are reported.
    pub sampled: bool,
    /// Which rule decided.
    pub reason: SamplingReason,
}

/// Decides sampling. `parent` is the extracted sampled flag (`None` when
/// there is no parent or it deferred), `forced` whether a trusted request
/// carried [`X_ENVOY_FORCE_TRACE`], `percentage` the 0..=100 random
/// sampling percentage and `random` a uniform random number.
pub fn decide(
    parent: Option<bool>,
    forced: bool,
    percentage: f64,
    random: u64,
) -> SamplingDecision {
    let (sampled, reason) = match parent {
        Some(p) => (p, SamplingReason::Parent),
        None if forced => (true, SamplingReason::Forced),
        None => (percentage_hit(percentage, random), SamplingReason::Random),
    };
    SamplingDecision { sampled, reason }
}

/// True when `random` falls in the sampled `percentage` (rounded to
/// 0.01 %; NaN and values below 0 sample nothing, values above 100
/// everything).
pub fn percentage_hit(percentage: f64, random: u64) -> bool {
    let per_ten_thousand = if percentage.is_nan() {
        0
    } else {
        // Clamped to 0..=10 000 first, so the cast cannot truncate.
        (percentage.clamp(0.0, 100.0) * 100.0).round() as u64
    };
    random % 10_000 < per_ten_thousand
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parent_decision_wins() {
        let d = decide(Some(false), true, 100.0, 0);
        assert_eq!((d.sampled, d.reason), (false, SamplingReason::Parent));
        let d = decide(Some(true), false, 0.0, 0);
        assert_eq!((d.sampled, d.reason), (true, SamplingReason::Parent));
    }

    #[test]
    fn force_beats_percentage() {
        let d = decide(None, true, 0.0, 9_999);
        assert_eq!((d.sampled, d.reason), (true, SamplingReason::Forced));
    }

    #[test]
    fn percentage_has_a_hundredth_of_a_percent_precision() {
        assert!(!percentage_hit(0.0, 0));
        assert!(percentage_hit(100.0, 9_999));
        assert!(percentage_hit(0.01, 0));
        assert!(!percentage_hit(0.01, 1));
        assert!(!percentage_hit(0.004, 0)); // rounds to 0
        assert!(percentage_hit(0.005, 0)); // rounds to 1 / 10 000
        assert!(percentage_hit(1.0, 99));
        assert!(!percentage_hit(1.0, 100));
        assert!(percentage_hit(1.0, 10_000 + 99)); // taken modulo 10 000
        assert!(!percentage_hit(f64::NAN, 0));
        assert!(!percentage_hit(-5.0, 0));
        assert!(percentage_hit(250.0, 9_999));
        let d = decide(None, false, 50.0, 4_999);
        assert_eq!((d.sampled, d.reason), (true, SamplingReason::Random));
        assert!(!decide(None, false, 50.0, 5_000).sampled);
    }

    #[test]
    fn percentage_is_close_over_many_draws() {
        // Random draws spread uniformly: 25 % of 0..40 000 hit.
        let hits = (0..40_000u64).filter(|&r| percentage_hit(25.0, r)).count();
        assert_eq!(hits, 10_000);
    }
}
