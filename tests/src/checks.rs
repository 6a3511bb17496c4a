//! The client-side checks, shared by the Python and Node tests: each
//! starts a fresh [`Scenario`], runs the stock client, and asserts what a
//! user of that client would notice. They panic on a failed assertion (they
//! are test bodies) and return harness errors as `Err`.

use crate::clients::{Lang, Tool};
use crate::scenario::Scenario;
use crate::HarnessError;

/// `xds:///` resolves through LDS/RDS/CDS/EDS and calls succeed.
pub async fn resolves(tool: &Tool) -> Result<(), HarnessError> {
    let s = Scenario::start().await?;
    let r = s.run(tool, "fault", 20, &[]).await?;
    assert_eq!(r.code("OK"), 20, "every call must succeed: {r}");
    assert_eq!(r.backend("v1"), 20, "the only endpoint is v1: {r}");
    Ok(())
}

/// An 80/20 split over two subsets holds within 4 binomial sigmas over
/// 1000 calls, and the header route always takes the other subset.
pub async fn weighted_split_and_header_route(tool: &Tool) -> Result<(), HarnessError> {
    let s = Scenario::start().await?;
    let n = 1000u32;
    let r = s.run(tool, "echo", n, &[]).await?;
    assert_eq!(r.code("OK"), u64::from(n), "every call must succeed: {r}");
    let expected = f64::from(n) * 0.2;
    let sigma = (f64::from(n) * 0.2 * 0.8).sqrt();
    #[allow(clippy::cast_precision_loss)] // counts are at most 1000
    let v2 = r.backend("v2") as f64;
    assert!(
        (v2 - expected).abs() <= 4.0 * sigma,
        "v2 got {v2} of {n} calls, expected {expected} +- {:.0} (80/20 split): {r}",
        4.0 * sigma
    );
    let h = s
        .run(tool, "echo", 50, &["--header", "x-canary=yes"])
        .await?;
    assert_eq!(
        h.backend("v2"),
        50,
        "x-canary: yes must always route to subset v2: {h}"
    );
    Ok(())
}

/// `retries: {attempts: 3, retryOn: unavailable}` masks a backend that
/// fails every first attempt; with `attempts: 0` every call fails.
pub async fn retries(tool: &Tool) -> Result<(), HarnessError> {
    let s = Scenario::start().await?;
    let r = s.run(tool, "retry", 50, &[]).await?;
    assert_eq!(r.code("OK"), 50, "retries must mask the failures: {r}");
    let flaky = s.backend("flaky").map_or(0, |b| b.failed());
    assert!(
        flaky >= 50,
        "the backend failed {flaky} first attempts, so the client did retry"
    );
    let nr = s.run(tool, "noretry", 20, &[]).await?;
    assert_eq!(
        nr.code("UNAVAILABLE"),
        20,
        "without retries every call fails: {nr}"
    );
    Ok(())
}

/// A `timeout: 0.2s` route on a backend that takes 1s: DEADLINE_EXCEEDED
/// well before the backend answers; the same backend without the route
/// timeout answers OK.
///
/// Only grpc-js is held to "not before 0.2s". grpcio (C-core) applies a
/// service-config timeout from a call start time that, on some hosts, lies
/// about a second in the past, so a 0.2s timeout expires at once: the same
/// happens with a plain `grpc.service_config` `timeout` and no xDS at all
/// (checked with grpcio 1.71 and 1.85), so it is not ours to fix.
pub async fn timeout(tool: &Tool) -> Result<(), HarnessError> {
    let s = Scenario::start().await?;
    let r = s.run(tool, "slow", 5, &[]).await?;
    assert_eq!(r.code("DEADLINE_EXCEEDED"), 5, "route timeout 0.2s: {r}");
    let min_ms = match tool.lang() {
        Lang::Node => 150.0,
        Lang::Python => 0.0,
    };
    assert!(
        r.latency_ms("min") >= min_ms && r.latency_ms("max") < 900.0,
        "calls must end near 200ms, not at the backend's 1s: {r}"
    );
    let ok = s.run(tool, "slowok", 1, &[]).await?;
    assert!(
        ok.code("OK") == 1 && ok.latency_ms("min") >= 900.0,
        "without the route timeout the slow backend answers after 1s: {ok}"
    );
    Ok(())
}

/// Fault injection: abort with a gRPC status, abort with an HTTP status
/// (mapped as gRPC maps HTTP codes: 403 -> PERMISSION_DENIED), and a fixed
/// delay.
pub async fn faults(tool: &Tool) -> Result<(), HarnessError> {
    let s = Scenario::start().await?;
    let g = s
        .run(tool, "fault", 10, &["--header", "x-fault=abort-grpc"])
        .await?;
    assert_eq!(g.code("RESOURCE_EXHAUSTED"), 10, "grpcStatus abort: {g}");
    let h = s
        .run(tool, "fault", 10, &["--header", "x-fault=abort-http"])
        .await?;
    assert_eq!(h.code("PERMISSION_DENIED"), 10, "httpStatus 403 abort: {h}");
    // percentage 50 (sent per million): about half abort. Retries are off
    // on that route, so an aborted call is not retried into a success.
    let half = s
        .run(tool, "fault", 200, &["--header", "x-fault=half"])
        .await?;
    #[allow(clippy::cast_precision_loss)] // counts are at most 200
    let aborted = half.code("UNAVAILABLE") as f64;
    assert!(
        (aborted - 100.0).abs() <= 4.0 * 50f64.sqrt()
            && half.code("OK") + half.code("UNAVAILABLE") == 200,
        "a 50% abort aborts about half of 200 calls: {half}"
    );
    let d = s
        .run(tool, "fault", 5, &["--header", "x-fault=delay"])
        .await?;
    assert_eq!(d.code("OK"), 5, "a delay still answers: {d}");
    assert!(
        d.latency_ms("min") >= 290.0,
        "every call must be delayed by the fixed 0.3s: {d}"
    );
    let plain = s.run(tool, "fault", 5, &[]).await?;
    assert!(
        plain.code("OK") == 5 && plain.latency_ms("p50") < 290.0,
        "without the header no fault applies: {plain}"
    );
    Ok(())
}

/// Ring hash on a header: a key always reaches the same backend, and keys
/// spread over more than one backend.
pub async fn ring_hash(tool: &Tool) -> Result<(), HarnessError> {
    let s = Scenario::start().await?;
    let r = s
        .run(
            tool,
            "hash",
            300,
            &["--key-header", "x-user", "--keys", "30"],
        )
        .await?;
    assert_eq!(r.code("OK"), 300, "every call must succeed: {r}");
    let by_key = r.by_key();
    assert_eq!(by_key.len(), 30, "30 keys were sent: {r}");
    for (key, backends) in &by_key {
        assert_eq!(
            backends.len(),
            1,
            "key {key} must stick to one backend, it reached {backends:?}"
        );
    }
    assert!(
        r.backends().len() >= 2,
        "30 keys must spread over more than one of 3 backends: {r}"
    );
    Ok(())
}

/// A route and clusters using most of what Istio can say (localities and
/// weights, least request, maglev, circuit breakers, outlier detection,
/// header operations, mirror, per-try timeouts, a redirect route) are
/// accepted, not NACKed, and still route; the redirect route's calls fail.
pub async fn kitchen_sink_is_accepted(tool: &Tool) -> Result<(), HarnessError> {
    let s = Scenario::start().await?;
    // x-skip: 0 takes the withoutHeaders route whether or not a stock
    // client honours treat_missing_header_as_empty (grpcio does not).
    let r = s
        .run(tool, "kitchen", 40, &["--header", "x-skip=0"])
        .await?;
    assert_eq!(r.code("OK"), 40, "every call must succeed: {r}");
    assert!(
        r.backend("v1") > 0 && r.backend("v2") > 0,
        "the 50/50 split reaches both subsets: {r}"
    );
    // gRPC cannot follow the redirect route: its calls fail UNAVAILABLE
    // (a route meshd sends as an abort; grpcio answers istiod's redirect
    // the same way), rather than fall through to the next route.
    let refused = s
        .run(
            tool,
            "kitchen",
            5,
            &["--header", "x-skip=0", "--header", "x-redirect=1"],
        )
        .await?;
    assert_eq!(
        refused.code("UNAVAILABLE"),
        5,
        "the redirect route fails its calls: {refused}"
    );
    Ok(())
}

/// A config change reaches a running client: service `live` moves from
/// subset v1 to v2 while the client calls it every 10ms; every call
/// succeeds, and once on v2 the client never goes back.
pub async fn live_shift(tool: &Tool) -> Result<(), HarnessError> {
    let s = Scenario::start().await?;
    let run = s.run(tool, "live", 400, &["--interval-ms", "10", "--sequence"]);
    let shift = async {
        // Shift once the client is making calls on v1 (bounded: a client
        // that never gets there fails the sequence checks below).
        let v1_calls = || s.backend("v1").map_or(0, |b| b.calls());
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
        while v1_calls() < 20 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        s.shift_live().await
    };
    let (r, shifted) = tokio::join!(run, shift);
    shifted?;
    let r = r?;
    assert_eq!(r.code("OK"), 400, "no call may fail across the change: {r}");
    let seq = r.sequence();
    let first_v2 = seq.iter().position(|b| b == "v2");
    let Some(first_v2) = first_v2 else {
        panic!("the client never moved to v2: {r}");
    };
    assert!(first_v2 > 0, "the client started on v1: {r}");
    assert!(
        seq[first_v2..].iter().all(|b| b == "v2"),
        "once moved, every call goes to v2: {r}"
    );
    Ok(())
}

/// Endpoint weights in two localities (3 and 1) become locality weights the
/// client's `wrr_locality` policy honours: 75/25 within 4 binomial sigmas
/// over 400 calls.
pub async fn locality_weights(tool: &Tool) -> Result<(), HarnessError> {
    let s = Scenario::start().await?;
    let n = 400u32;
    let r = s.run(tool, "weighted", n, &[]).await?;
    assert_eq!(r.code("OK"), u64::from(n), "every call must succeed: {r}");
    let expected = f64::from(n) * 0.25;
    let sigma = (f64::from(n) * 0.25 * 0.75).sqrt();
    #[allow(clippy::cast_precision_loss)] // counts are at most 400
    let v2 = r.backend("v2") as f64;
    assert!(
        (v2 - expected).abs() <= 4.0 * sigma,
        "the weight-1 locality got {v2} of {n} calls, expected {expected} +- {:.0}: {r}",
        4.0 * sigma
    );
    Ok(())
}
