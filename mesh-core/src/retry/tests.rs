use super::*;
use proptest::prelude::*;

fn policy(retry_on: &str) -> RetryPolicy {
    RetryPolicy::from_config(Some(&HttpRetry {
        attempts: 3,
        retry_on: Some(retry_on.to_string()),
        ..HttpRetry::default()
    }))
}

#[test]
fn parses_conditions_and_codes() {
    let (on, codes) = parse_retry_on("5xx,connect-failure,503,unavailable").unwrap();
    assert!(on.contains(RetryOn::FIVE_XX));
    assert!(on.contains(RetryOn::CONNECT_FAILURE));
    assert!(on.contains(RetryOn::UNAVAILABLE));
    assert!(
        on.contains(RetryOn::RETRIABLE_STATUS_CODES),
        "a code implies retriable-status-codes"
    );
    assert_eq!(codes, vec![503]);
    assert_eq!(
        parse_retry_on("5xx, reset").unwrap_err(),
        vec![" reset".to_string()],
        "spaces are rejected as Istio does"
    );
    assert_eq!(parse_retry_on("bogus,600,99").unwrap_err().len(), 3);
    assert_eq!(
        on.to_string(),
        "5xx,connect-failure,retriable-status-codes,unavailable"
    );
}

#[test]
fn every_documented_condition_parses() {
    for name in [
        "5xx",
        "gateway-error",
        "reset",
        "reset-before-request",
        "connect-failure",
        "envoy-ratelimited",
        "retriable-4xx",
        "refused-stream",
        "retriable-status-codes",
        "retriable-headers",
        "http3-post-connect-failure",
        "cancelled",
        "deadline-exceeded",
        "internal",
        "resource-exhausted",
        "unavailable",
    ] {
        assert!(RetryOn::from_name(name).is_some(), "{name}");
    }
}

#[test]
fn istio_default_policy_never_retries_503() {
    let p = RetryPolicy::from_config(None);
    assert_eq!(p.attempts, 2);
    assert_eq!(p.origin, RetryOrigin::Default);
    assert!(p.should_retry(&Outcome::ConnectFailure));
    assert!(p.should_retry(&Outcome::RefusedStream));
    assert!(p.should_retry(&Outcome::grpc(14)), "unavailable");
    assert!(p.should_retry(&Outcome::grpc(1)), "cancelled");
    assert!(!p.should_retry(&Outcome::status(503)));
    assert!(!p.should_retry(&Outcome::status(500)));
    assert!(!p.should_retry(&Outcome::Reset { request_sent: true }));
    assert!(!p.should_retry(&Outcome::PerTryTimeout));
    assert!(p.retry_ignore_previous_hosts);
    assert_eq!(p.backoff_base.get(), std::time::Duration::from_millis(25));
    assert_eq!(p.backoff_max.get(), std::time::Duration::from_millis(250));
}

#[test]
fn zero_attempts_disables() {
    let p = RetryPolicy::from_config(Some(&HttpRetry::default()));
    assert_eq!(p.attempts, 0);
    assert!(!p.enabled());
    assert!(!p.should_retry(&Outcome::ConnectFailure));
}

#[test]
fn unset_retry_on_keeps_default_conditions() {
    let p = RetryPolicy::from_config(Some(&HttpRetry {
        attempts: 5,
        per_try_timeout: Some(Duration::from_millis(500)),
        backoff: Some(Duration::from_millis(100)),
        retry_ignore_previous_hosts: Some(false),
        ..HttpRetry::default()
    }));
    assert_eq!(p.attempts, 5);
    assert_eq!(p.origin, RetryOrigin::Route);
    assert!(p.should_retry(&Outcome::ConnectFailure));
    assert!(!p.should_retry(&Outcome::status(503)));
    assert_eq!(p.backoff_max.get(), std::time::Duration::from_secs(1));
    assert!(!p.retry_ignore_previous_hosts);
}

#[test]
fn five_xx() {
    let p = policy("5xx");
    assert!(p.should_retry(&Outcome::status(500)));
    assert!(p.should_retry(&Outcome::status(503)));
    assert!(p.should_retry(&Outcome::status(599)));
    assert!(!p.should_retry(&Outcome::status(404)));
    assert!(!p.should_retry(&Outcome::status(200)));
    assert!(p.should_retry(&Outcome::ConnectFailure));
    assert!(p.should_retry(&Outcome::RefusedStream));
    assert!(p.should_retry(&Outcome::Reset { request_sent: true }));
    assert!(p.should_retry(&Outcome::PerTryTimeout));
}

#[test]
fn gateway_error() {
    let p = policy("gateway-error");
    for s in [502, 503, 504] {
        assert!(p.should_retry(&Outcome::status(s)), "{s}");
    }
    assert!(!p.should_retry(&Outcome::status(500)));
    assert!(p.should_retry(&Outcome::ConnectFailure));
}

#[test]
fn reset_family() {
    let p = policy("reset");
    assert!(p.should_retry(&Outcome::Reset { request_sent: true }));
    assert!(p.should_retry(&Outcome::PerTryTimeout));
    assert!(p.should_retry(&Outcome::ConnectFailure));
    assert!(!p.should_retry(&Outcome::status(503)));
    let p = policy("reset-before-request");
    assert!(p.should_retry(&Outcome::Reset {
        request_sent: false
    }));
    assert!(!p.should_retry(&Outcome::Reset { request_sent: true }));
    assert!(!p.should_retry(&Outcome::PerTryTimeout));
}

#[test]
fn connect_failure_and_refused_stream_are_distinct() {
    let p = policy("connect-failure");
    assert!(p.should_retry(&Outcome::ConnectFailure));
    assert!(!p.should_retry(&Outcome::RefusedStream));
    assert!(!p.should_retry(&Outcome::Reset { request_sent: true }));
    let p = policy("refused-stream");
    assert!(p.should_retry(&Outcome::RefusedStream));
    assert!(!p.should_retry(&Outcome::ConnectFailure));
}

#[test]
fn retriable_4xx_means_409_only() {
    let p = policy("retriable-4xx");
    assert!(p.should_retry(&Outcome::status(409)));
    for s in [400, 404, 408, 429] {
        assert!(!p.should_retry(&Outcome::status(s)), "{s}");
    }
}

#[test]
fn numeric_codes() {
    let p = policy("503,429");
    assert!(p.should_retry(&Outcome::status(503)));
    assert!(p.should_retry(&Outcome::status(429)));
    assert!(!p.should_retry(&Outcome::status(502)));
    let p = policy("retriable-status-codes");
    assert!(!p.should_retry(&Outcome::status(503)), "no codes listed");
}

#[test]
fn ratelimited_header() {
    let p = policy("envoy-ratelimited");
    assert!(p.should_retry(&Outcome::Response {
        status: 429,
        grpc_status: None,
        envoy_ratelimited: true
    }));
    assert!(!p.should_retry(&Outcome::status(429)));
}

#[test]
fn grpc_conditions_from_headers_and_trailers() {
    let p = policy("cancelled,deadline-exceeded,internal,resource-exhausted,unavailable");
    for code in [1, 4, 8, 13, 14] {
        assert!(p.should_retry(&Outcome::grpc(code)), "{code}");
    }
    for code in [0, 2, 3, 5, 16] {
        assert!(!p.should_retry(&Outcome::grpc(code)), "{code}");
    }
    // Trailers-only response: grpc-status in the headers.
    let h = [("content-type", "application/grpc"), ("Grpc-Status", "14")];
    assert_eq!(grpc_status(h, []), Some(14));
    // Normal response: grpc-status in the trailers.
    let t = [("grpc-status", "4"), ("grpc-message", "slow")];
    assert_eq!(
        grpc_status([("content-type", "application/grpc")], t),
        Some(4)
    );
    assert_eq!(grpc_status([], []), None);
    let only_unavailable = policy("unavailable");
    assert!(only_unavailable.should_retry(&Outcome::grpc(grpc_status([], t).map_or(14, |_| 14))));
    assert!(!only_unavailable.should_retry(&Outcome::grpc(4)));
    assert!(!only_unavailable.should_retry(&Outcome::status(503)));
}

#[test]
fn attempts_are_counted() {
    let p = policy("5xx");
    assert!(p.should_retry_attempt(0, &Outcome::status(500)));
    assert!(p.should_retry_attempt(2, &Outcome::status(500)));
    assert!(!p.should_retry_attempt(3, &Outcome::status(500)));
}

#[test]
fn backoff_bounds() {
    let base = std::time::Duration::from_millis(25);
    let max = std::time::Duration::from_millis(250);
    assert_eq!(backoff(1, base, max, 0.0), std::time::Duration::ZERO);
    assert!(backoff(1, base, max, 0.999_999) < base);
    assert!(backoff(2, base, max, 0.999_999) < base * 3);
    assert!(backoff(2, base, max, 0.999_999) > base * 2);
    assert!(backoff(10, base, max, 0.999_999) < max);
    assert_eq!(
        backoff(3, base, max, 0.5),
        std::time::Duration::from_micros(87_500)
    );
    let p = RetryPolicy::istio_default();
    assert!(p.backoff(1, 0.5) <= std::time::Duration::from_micros(12_500));
}

proptest! {
    #[test]
    fn backoff_never_exceeds_max(retry in 0u32..200, base_ms in 0u64..10_000, max_ms in 0u64..100_000, r in proptest::num::f64::ANY) {
        let d = backoff(retry, std::time::Duration::from_millis(base_ms), std::time::Duration::from_millis(max_ms), r);
        prop_assert!(d <= std::time::Duration::from_millis(max_ms));
        let n = retry.clamp(1, 63);
        let cap = std::time::Duration::from_millis(base_ms).saturating_mul(((1u64 << n) - 1).min(u64::from(u32::MAX)) as u32);
        prop_assert!(d <= cap);
    }

    #[test]
    fn retry_on_round_trips(bits in 0u32..(1 << 16)) {
        let set = RetryOn::ALL.iter().filter(|(c, _)| bits & c.bits() != 0).fold(RetryOn::NONE, |a, (c, _)| a | *c);
        let text = set.to_string();
        if !text.is_empty() {
            let (parsed, codes) = parse_retry_on(&text).unwrap();
            prop_assert_eq!(parsed, set);
            prop_assert!(codes.is_empty());
        }
    }
}
