//! Local rate limiting through the inbound stack on tokio's paused clock.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use http::Request;
use mesh_test_support::inbound;
use mesh_tower::body;
use mesh_tower::server::{InboundLayer, RateLimitConfig, RateLimitLayer, TokenBucket};
use tokio::sync::watch;
use tower::{Layer, ServiceExt};

#[tokio::test(start_paused = true)]
async fn token_buckets_per_workload_and_route() {
    let (_tx, rx) = watch::channel(inbound::model(""));
    let limits = RateLimitLayer::new(&RateLimitConfig {
        workload: Some(TokenBucket::new(2, 2, Duration::from_secs(1))),
        routes: vec![(
            "/slow/".to_string(),
            TokenBucket::new(1, 1, Duration::from_secs(60)),
        )],
    })
    .unwrap();
    let svc = InboundLayer::new(rx)
        .with_rate_limit(limits)
        .layer(tower::service_fn(inbound::echo));
    let send = |path: &str, grpc: bool| {
        let svc = svc.clone();
        let mut req = Request::builder().uri(path);
        if grpc {
            req = req.header("content-type", "application/grpc");
        }
        let req = req.body(body::empty()).unwrap();
        async move { svc.oneshot(req).await.unwrap() }
    };
    assert_eq!(send("/a", false).await.status(), 200);
    assert_eq!(send("/b", false).await.status(), 200);
    let limited = send("/c", false).await;
    assert_eq!(limited.status(), 429);
    assert_eq!(limited.headers()["x-mesh-response-flags"], "RL");
    let grpc = send("/pkg.S/M", true).await;
    assert_eq!(grpc.status(), 200);
    assert_eq!(grpc.headers()["grpc-status"], "14");

    tokio::time::advance(Duration::from_secs(1)).await;
    assert_eq!(send("/a", false).await.status(), 200);
    assert_eq!(send("/a", false).await.status(), 200);
    assert_eq!(send("/a", false).await.status(), 429);

    // The route bucket is separate and slower; the path is matched after
    // normalization.
    assert_eq!(send("/slow/x", false).await.status(), 200);
    assert_eq!(send("/x/../slow/y", false).await.status(), 429);
    tokio::time::advance(Duration::from_secs(59)).await;
    assert_eq!(send("/slow/x", false).await.status(), 429);
    tokio::time::advance(Duration::from_secs(1)).await;
    assert_eq!(send("/slow/x", false).await.status(), 200);
}
