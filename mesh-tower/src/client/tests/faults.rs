//! Fault injection, per attempt.

use std::time::Duration;

use http::StatusCode;
use tokio::time::Instant;

use super::*;

#[tokio::test(start_paused = true)]
async fn abort_answers_locally_with_fi() {
    let vs = reviews_vs(
        r#"
  - fault: {abort: {httpStatus: 418, percentage: {value: 100}}}
    route: [{destination: {host: reviews}}]
"#,
    );
    let (inner, log) = ok_service();
    let svc = stack(model(&vs), ClientOptions::default(), inner);
    let r = send(&svc, get("http://reviews:9080/")).await;
    assert_eq!(r.status(), StatusCode::IM_A_TEAPOT);
    assert_eq!(flag(&r), Some("FI"));
    assert_eq!(log.len(), 0);
}

#[tokio::test(start_paused = true)]
async fn grpc_abort_gives_grpc_status() {
    let vs = reviews_vs(
        r#"
  - fault: {abort: {grpcStatus: UNAVAILABLE, percentage: {value: 100}}}
    route: [{destination: {host: reviews}}]
"#,
    );
    let (inner, _) = ok_service();
    let svc = stack(model(&vs), ClientOptions::default(), inner);
    let r = send(&svc, grpc("http://reviews:9080/pkg.S/M")).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["grpc-status"], "14");
    assert_eq!(flag(&r), Some("FI"));
}

#[tokio::test(start_paused = true)]
async fn missing_percentage_means_zero() {
    let vs = reviews_vs(
        r#"
  - fault:
      abort: {httpStatus: 500}
      delay: {fixedDelay: 5s}
    route: [{destination: {host: reviews}}]
"#,
    );
    let (inner, log) = ok_service();
    let svc = stack(model(&vs), ClientOptions::default(), inner);
    let start = Instant::now();
    for _ in 0..200 {
        assert_eq!(send(&svc, get("http://reviews:9080/")).await.status(), 200);
    }
    assert_eq!(start.elapsed(), Duration::ZERO);
    assert_eq!(log.len(), 200);
}

#[tokio::test(start_paused = true)]
async fn abort_percentage_within_bounds() {
    let vs = reviews_vs(
        r#"
  - fault: {abort: {httpStatus: 500, percentage: {value: 30}}}
    retries: {attempts: 0}
    route: [{destination: {host: reviews}}]
"#,
    );
    let seed = rng::seed_for_test();
    let (inner, log) = ok_service();
    let svc = stack(model(&vs), ClientOptions::default(), inner);
    for _ in 0..4000 {
        send(&svc, get("http://reviews:9080/")).await;
    }
    let reached = log.len();
    // 70% of 4000 = 2800, sd 29: +-150 is over 5 sd.
    assert!(
        (2650..=2950).contains(&reached),
        "MESH_TEST_SEED={seed}: {reached} of 4000 passed a 30% abort"
    );
}

#[tokio::test(start_paused = true)]
async fn delay_waits_then_forwards_with_di() {
    let vs = reviews_vs(
        r#"
  - fault: {delay: {fixedDelay: 2s, percentage: {value: 100}}}
    route: [{destination: {host: reviews}}]
"#,
    );
    let (inner, log) = ok_service();
    let svc = stack(model(&vs), ClientOptions::default(), inner);
    let start = Instant::now();
    let r = send(&svc, get("http://reviews:9080/")).await;
    assert_eq!(start.elapsed(), Duration::from_secs(2));
    assert_eq!(r.status(), 200);
    assert_eq!(flag(&r), Some("DI"));
    assert_eq!(log.len(), 1);
}

#[tokio::test(start_paused = true)]
async fn faults_apply_per_attempt_so_retries_mask_them() {
    // Unlike Istio, the abort is decided per attempt inside the retry loop.
    let vs = reviews_vs(
        r#"
  - fault: {abort: {httpStatus: 503, percentage: {value: 50}}}
    retries: {attempts: 20, retryOn: 5xx}
    route: [{destination: {host: reviews}}]
"#,
    );
    // Each request fails only if 21 draws in a row abort (2^-21).
    let seed = rng::seed_for_test();
    let (inner, log) = ok_service();
    let svc = stack(model(&vs), ClientOptions::default(), inner);
    for _ in 0..200 {
        assert_eq!(
            send(&svc, get("http://reviews:9080/")).await.status(),
            200,
            "MESH_TEST_SEED={seed}"
        );
    }
    assert_eq!(log.len(), 200, "MESH_TEST_SEED={seed}");
}

#[tokio::test(start_paused = true)]
async fn delay_longer_than_per_try_timeout_is_retried() {
    let vs = reviews_vs(
        r#"
  - fault: {delay: {fixedDelay: 1s, percentage: {value: 100}}}
    retries: {attempts: 2, perTryTimeout: 100ms, retryOn: reset}
    route: [{destination: {host: reviews}}]
"#,
    );
    let (inner, log) = ok_service();
    let svc = stack(model(&vs), ClientOptions::default(), inner);
    let r = send(&svc, get("http://reviews:9080/")).await;
    assert_eq!(r.status(), StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(flag(&r), Some("UT"));
    assert_eq!(log.len(), 0);
}
