//! Route timeout, per-try timeout and `grpc-timeout`.

use std::time::Duration;

use http::{Request, StatusCode};
use tokio::time::Instant;

use super::*;
use crate::body;

fn slow(after: Duration) -> (BoxClient, Log) {
    scripted(move |_, _| async move {
        tokio::time::sleep(after).await;
        Ok(status(200))
    })
}

#[tokio::test(start_paused = true)]
async fn route_timeout_gives_504_ut_or_deadline_exceeded() {
    let vs = reviews_vs(
        r#"
  - timeout: 1s
    route: [{destination: {host: reviews}}]
"#,
    );
    let (inner, _) = slow(Duration::from_secs(5));
    let svc = stack(model(&vs), ClientOptions::default(), inner);
    let start = Instant::now();
    let r = send(&svc, get("http://reviews:9080/")).await;
    assert_eq!(start.elapsed(), Duration::from_secs(1));
    assert_eq!(r.status(), StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(flag(&r), Some("UT"));
    let r = send(&svc, grpc("http://reviews:9080/pkg.S/M")).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["grpc-status"], "4");
    assert_eq!(flag(&r), Some("UT"));
}

#[tokio::test(start_paused = true)]
async fn no_timeout_by_default() {
    let (inner, _) = slow(Duration::from_secs(600));
    let svc = stack(model(""), ClientOptions::default(), inner);
    let start = Instant::now();
    assert_eq!(send(&svc, get("http://reviews:9080/")).await.status(), 200);
    assert_eq!(start.elapsed(), Duration::from_secs(600));
}

#[tokio::test(start_paused = true)]
async fn grpc_timeout_header_honoured_smaller_wins() {
    let vs = reviews_vs(
        r#"
  - timeout: 1s
    route: [{destination: {host: reviews}}]
"#,
    );
    let (inner, _) = slow(Duration::from_secs(5));
    let svc = stack(model(&vs), ClientOptions::default(), inner.clone());
    let mut req = grpc("http://reviews:9080/pkg.S/M");
    req.headers_mut()
        .insert("grpc-timeout", "200m".parse().unwrap());
    let start = Instant::now();
    let r = send(&svc, req).await;
    assert_eq!(start.elapsed(), Duration::from_millis(200));
    assert_eq!(r.headers()["grpc-status"], "4");
    // A larger grpc-timeout leaves the route timeout in charge.
    let mut req = grpc("http://reviews:9080/pkg.S/M");
    req.headers_mut()
        .insert("grpc-timeout", "30S".parse().unwrap());
    let start = Instant::now();
    send(&svc, req).await;
    assert_eq!(start.elapsed(), Duration::from_secs(1));
    // Without a route timeout the header alone bounds the call.
    let svc = stack(model(""), ClientOptions::default(), inner);
    let mut req = grpc("http://ratings:9090/pkg.S/M");
    req.headers_mut()
        .insert("grpc-timeout", "3S".parse().unwrap());
    let start = Instant::now();
    let r = send(&svc, req).await;
    assert_eq!(start.elapsed(), Duration::from_secs(3));
    assert_eq!(r.headers()["grpc-status"], "4");
}

#[tokio::test(start_paused = true)]
async fn per_try_timeout_retries_then_gives_ut() {
    let vs = reviews_vs(
        r#"
  - retries: {attempts: 2, perTryTimeout: 100ms, retryOn: 5xx}
    route: [{destination: {host: reviews}}]
"#,
    );
    // First attempt hangs, second answers at once.
    let (inner, log) = scripted(|n, _| async move {
        if n == 0 {
            tokio::time::sleep(Duration::from_secs(10)).await;
        }
        Ok(status(200))
    });
    let svc = stack(model(&vs), ClientOptions::default(), inner);
    let start = Instant::now();
    assert_eq!(send(&svc, get("http://reviews:9080/")).await.status(), 200);
    // The backoff is under 25ms, but tokio's timer ends it on the next
    // whole millisecond: 24.3ms waits until 25ms.
    assert!(start.elapsed() <= Duration::from_millis(100 + 25));
    assert_eq!(log.len(), 2);

    // Every attempt hangs: 3 tries of 100ms, then 504 UT.
    let (inner, log) = slow(Duration::from_secs(10));
    let svc = stack(model(&vs), ClientOptions::default(), inner);
    let req = Request::builder()
        .uri("http://reviews:9080/")
        .body(body::empty())
        .unwrap();
    let start = Instant::now();
    let r = send(&svc, req).await;
    assert_eq!(r.status(), StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(flag(&r), Some("UT"));
    assert_eq!(log.len(), 3);
    let e = start.elapsed();
    assert!(
        e >= Duration::from_millis(300) && e <= Duration::from_millis(300 + 25 + 75),
        "{e:?}"
    );
}
