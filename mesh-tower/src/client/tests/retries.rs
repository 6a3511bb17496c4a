//! Retries: conditions, backoff, body replay, concurrent-retry limit and
//! retry budget.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::BodyExt;

use super::*;
use crate::body;
use crate::error::{MeshError, ResponseFlag};

fn connect_failure() -> BoxError {
    Box::new(MeshError::new(
        ResponseFlag::UpstreamConnectionFailure,
        "connection refused",
    ))
}

#[tokio::test(start_paused = true)]
async fn default_policy_masks_a_flaky_upstream() {
    // Istio's default: 2 retries on connect-failure (among others).
    let (inner, log) = scripted(|n, _| async move {
        if n < 2 {
            Err(connect_failure())
        } else {
            Ok(status(200))
        }
    });
    let svc = stack(model(""), ClientOptions::default(), inner);
    let r = send(&svc, get("http://reviews:9080/")).await;
    assert_eq!(r.status(), 200);
    let seen = log.all();
    let attempts: Vec<u32> = seen.iter().map(|s| s.upstream.attempt).collect();
    assert_eq!(attempts, [1, 2, 3]);
    // Every attempt shares the `tried` list, so the endpoint stage can
    // prefer other endpoints.
    assert!(Arc::ptr_eq(
        &seen[0].upstream.tried,
        &seen[2].upstream.tried
    ));
}

#[tokio::test(start_paused = true)]
async fn exhausted_local_failures_give_urx() {
    let (inner, log) = scripted(|_, _| async { Err(connect_failure()) });
    let svc = stack(model(""), ClientOptions::default(), inner);
    let r = send(&svc, get("http://reviews:9080/")).await;
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(flag(&r), Some("URX"));
    assert_eq!(log.len(), 3);
}

#[tokio::test(start_paused = true)]
async fn no_retry_on_503_by_default() {
    let (inner, log) = scripted(|_, _| async { Ok(status(503)) });
    let svc = stack(model(""), ClientOptions::default(), inner);
    let r = send(&svc, get("http://reviews:9080/")).await;
    assert_eq!(r.status(), 503);
    assert_eq!(flag(&r), None, "an upstream response passes through as is");
    assert_eq!(log.len(), 1);
}

#[tokio::test(start_paused = true)]
async fn retry_on_5xx_when_asked_and_last_response_passes_through() {
    let vs = reviews_vs(
        r#"
  - retries: {attempts: 3, retryOn: 5xx}
    route: [{destination: {host: reviews}}]
"#,
    );
    let (inner, log) = scripted(|n, _| async move { Ok(status(if n < 3 { 503 } else { 200 })) });
    let svc = stack(model(&vs), ClientOptions::default(), inner);
    assert_eq!(
        svc.oneshot(get("http://reviews:9080/"))
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(log.len(), 4);

    let (inner, log) = scripted(|_, _| async { Ok(status(502)) });
    let svc = stack(model(&vs), ClientOptions::default(), inner);
    let r = send(&svc, get("http://reviews:9080/")).await;
    assert_eq!(r.status(), 502);
    assert_eq!(read(r).await.0, "ok");
    assert_eq!(log.len(), 4);
}

#[tokio::test(start_paused = true)]
async fn grpc_status_in_trailers_triggers_retry() {
    // The default policy retries `unavailable`; the status is in trailers.
    let (inner, log) =
        scripted(|n, _| async move { Ok(grpc_trailers(if n == 0 { 14 } else { 0 })) });
    let svc = stack(model(""), ClientOptions::default(), inner);
    let r = send(&svc, grpc("http://ratings:9090/pkg.S/M")).await;
    assert_eq!(log.len(), 2);
    let (data, trailers) = read(r).await;
    assert_eq!(data.len(), 5);
    assert_eq!(trailers.unwrap()["grpc-status"], "0");
    // In headers (trailers-only) too.
    let (inner, log) = scripted(|n, _| async move {
        let mut r = status(200);
        r.headers_mut()
            .insert("grpc-status", if n == 0 { 14 } else { 0 }.into());
        Ok(r)
    });
    let svc = stack(model(""), ClientOptions::default(), inner);
    let r = send(&svc, grpc("http://ratings:9090/pkg.S/M")).await;
    assert_eq!(r.headers()["grpc-status"], "0");
    assert_eq!(log.len(), 2);
}

#[tokio::test(start_paused = true)]
async fn backoff_grows_exponentially_with_jitter_and_cap() {
    let vs = reviews_vs(
        r#"
  - retries: {attempts: 6, retryOn: 5xx}
    route: [{destination: {host: reviews}}]
"#,
    );
    let seed = rng::seed_for_test();
    for _ in 0..20 {
        let (inner, log) = scripted(|_, _| async { Ok(status(503)) });
        let svc = stack(model(&vs), ClientOptions::default(), inner);
        send(&svc, get("http://reviews:9080/")).await;
        let at: Vec<_> = log.all().iter().map(|s| s.at).collect();
        assert_eq!(at.len(), 7);
        for (i, w) in at.windows(2).enumerate() {
            let gap = w[1] - w[0];
            let n = i as u32 + 1;
            // Retry n waits in [0, min((2^n - 1) * 25ms, 250ms)).
            let upper =
                Duration::from_millis(((1u64 << n) - 1) * 25).min(Duration::from_millis(250));
            assert!(
                gap <= upper,
                "MESH_TEST_SEED={seed}: retry {n} waited {gap:?}, cap {upper:?}"
            );
        }
    }
}

#[tokio::test(start_paused = true)]
async fn small_bodies_replay_and_large_ones_are_sent_once() {
    let vs = reviews_vs(
        r#"
  - retries: {attempts: 2, retryOn: 5xx}
    route: [{destination: {host: reviews}}]
"#,
    );
    let bodies = Arc::new(std::sync::Mutex::new(Vec::<Bytes>::new()));
    let b = bodies.clone();
    let (inner, log) = scripted(move |_, req: Request<MeshBody>| {
        let b = b.clone();
        async move {
            let data = req.into_body().collect().await?.to_bytes();
            b.lock().unwrap().push(data);
            Ok(status(503))
        }
    });
    let options = ClientOptions {
        retry_body_limit: 1024,
        ..ClientOptions::default()
    };
    let svc = stack(model(&vs), options, inner);
    let post = |data: Vec<u8>| {
        Request::builder()
            .method("POST")
            .uri("http://reviews:9080/")
            .body(body::full(data))
            .unwrap()
    };
    send(&svc, post(vec![7u8; 100])).await;
    assert_eq!(log.len(), 3);
    assert!(bodies.lock().unwrap().iter().all(|b| b.len() == 100));
    let r = send(&svc, post(vec![7u8; 4096])).await;
    assert_eq!(r.status(), 503);
    assert_eq!(log.len(), 4, "a body over the limit is sent once");
    assert_eq!(bodies.lock().unwrap()[3].len(), 4096);
}

/// Runs `n` concurrent requests against an upstream that always fails
/// after 10ms, returning (calls, max concurrent retries seen upstream).
async fn outage(vs: &str, options: ClientOptions, n: usize) -> (usize, usize) {
    outage_on(model(vs), options, n).await
}

async fn outage_on(model: Arc<Model>, options: ClientOptions, n: usize) -> (usize, usize) {
    let in_flight = Arc::new(AtomicUsize::new(0));
    let max = Arc::new(AtomicUsize::new(0));
    let (f, m) = (in_flight.clone(), max.clone());
    let (inner, log) = scripted(move |_, req: Request<MeshBody>| {
        let (f, m) = (f.clone(), m.clone());
        async move {
            let retry = req.extensions().get::<Upstream>().unwrap().attempt > 1;
            if retry {
                let now = f.fetch_add(1, Ordering::SeqCst) + 1;
                m.fetch_max(now, Ordering::SeqCst);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
            if retry {
                f.fetch_sub(1, Ordering::SeqCst);
            }
            Ok(status(503))
        }
    });
    let svc = stack(model, options, inner);
    let mut tasks = Vec::new();
    for _ in 0..n {
        let fut = crate::client::call::oneshot(svc.clone(), get("http://reviews:9080/"));
        tasks.push(tokio::spawn(fut));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap().status(), 503);
    }
    (log.len(), max.load(Ordering::SeqCst))
}

#[tokio::test(start_paused = true)]
async fn retry_budget_refuses_retries_during_an_outage() {
    let vs = reviews_vs(
        r#"
  - retries: {attempts: 5, retryOn: 5xx}
    route: [{destination: {host: reviews}}]
"#,
    );
    let (calls, max_retries) = outage(&vs, ClientOptions::default(), 100).await;
    // 20% of 100 active requests: at most 20 retries at once, far from the
    // 600 calls unlimited retries would make.
    assert!(max_retries <= 20, "{max_retries}");
    assert!(calls < 250, "{calls}");
    // Without a budget every request retries 5 times.
    let no_budget = ClientOptions {
        retry_budget: None,
        ..ClientOptions::default()
    };
    let (calls, _) = outage(&vs, no_budget, 100).await;
    assert_eq!(calls, 600);
}

#[tokio::test(start_paused = true)]
async fn max_retries_limits_concurrent_retries_per_cluster() {
    let vs = reviews_vs(
        r#"
  - retries: {attempts: 5, retryOn: 5xx}
    route: [{destination: {host: reviews}}]
"#,
    );
    let base = BASE.replace(
        "  host: reviews\n",
        "  host: reviews\n  trafficPolicy:\n    connectionPool: {http: {maxRetries: 2}}\n",
    );
    let m = model_from(&base, &vs);
    let has_limit = m
        .clusters
        .get("outbound|9080||reviews.default.svc.cluster.local")
        .and_then(|c| c.policy.connection_pool.as_ref())
        .and_then(|p| p.http.as_ref())
        .and_then(|h| h.max_retries);
    assert_eq!(has_limit, Some(2), "DestinationRule applied");
    let no_budget = ClientOptions {
        retry_budget: None,
        ..ClientOptions::default()
    };
    let (calls, max_retries) = outage_on(m, no_budget, 50).await;
    assert!(max_retries <= 2, "{max_retries}");
    assert!(calls < 150, "{calls}");
}

#[tokio::test(start_paused = true)]
async fn streaming_bodies_are_sent_at_once_and_replayed_once_complete() {
    let vs = reviews_vs(
        r#"
  - retries: {attempts: 1, retryOn: 5xx}
    route: [{destination: {host: reviews}}]
"#,
    );
    let bodies = Arc::new(std::sync::Mutex::new(Vec::<Bytes>::new()));
    let b = bodies.clone();
    let (inner, log) = scripted(move |n, req: Request<MeshBody>| {
        let b = b.clone();
        async move {
            let data = req.into_body().collect().await?.to_bytes();
            b.lock().unwrap().push(data);
            Ok(status(if n == 0 { 503 } else { 200 }))
        }
    });
    let svc = stack(model(&vs), ClientOptions::default(), inner);
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(4);
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|d| (Ok::<_, BoxError>(http_body::Frame::data(d)), rx))
    });
    let req = Request::builder()
        .method("POST")
        .uri("http://reviews:9080/upload")
        .body(http_body_util::StreamBody::new(stream).boxed_unsync())
        .unwrap();
    tx.send(Bytes::from_static(b"ab")).await.unwrap();
    let call = tokio::spawn(crate::client::call::oneshot(svc, req));
    // The upstream gets the request while the body is still open: a stream
    // is never held back to be buffered.
    tokio::task::yield_now().await;
    assert_eq!(log.len(), 1);
    tx.send(Bytes::from_static(b"cd")).await.unwrap();
    drop(tx);
    let r = call.await.unwrap().unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(log.len(), 2);
    assert_eq!(*bodies.lock().unwrap(), ["abcd", "abcd"]);
}
