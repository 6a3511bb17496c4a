//! The endpoint stage against real hyper servers on loopback: balancing,
//! outlier ejection and return, overflow, ring-hash stickiness, locality
//! failover, HTTP/2 and connect failures. Every test is bounded in
//! requests and in time, and waits for events (a request held at a
//! backend, an ejection ending) rather than for guessed sleeps.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use mesh_test_support::backends::backend;
use mesh_test_support::endpoints::{model, model_with, request, send, CLUSTER, HOST};
use mesh_test_support::wait;
use mesh_tower::balance::Endpoints;
use mesh_tower::{body, ResponseFlag, Upstream};

#[tokio::test]
async fn round_robin_spreads_evenly_and_keeps_host() {
    let bs = [backend().await, backend().await, backend().await];
    let m = model(
        &[&bs[0], &bs[1], &bs[2]],
        "    loadBalancer: {simple: ROUND_ROBIN}\n",
    );
    let ep = Endpoints::new();
    let mut count: HashMap<SocketAddr, usize> = HashMap::new();
    for _ in 0..30 {
        let a = send(&ep, request(&m, &[])).await.unwrap();
        assert_eq!(a.status, StatusCode::OK);
        assert_eq!(a.headers["x-host"], HOST);
        assert_eq!(a.headers["x-version"], "HTTP/1.1");
        *count.entry(a.served_by).or_default() += 1;
    }
    for b in &bs {
        assert_eq!(count.get(&b.addr), Some(&10), "{count:?}");
    }
    let s = ep.stats(CLUSTER).unwrap();
    assert_eq!(s.requests, 30);
    assert_eq!(s.active_requests, 0);
    // Keep-alive: far fewer connections than requests.
    assert!(s.connections <= 3, "{s:?}");
}

#[tokio::test]
async fn least_request_default_spreads() {
    let bs = [backend().await, backend().await, backend().await];
    let m = model(
        &[&bs[0], &bs[1], &bs[2]],
        "    connectionPool: {http: {idleTimeout: 30s}}\n",
    );
    let seed = mesh_test_support::seed::seed();
    let ep = Endpoints::builder().seed(seed).build();
    for _ in 0..300 {
        send(&ep, request(&m, &[])).await.unwrap();
    }
    // One request at a time, so every pick is a tie broken at random: 300
    // at 1/3 each give 100 +- 8.2, so at least 50 each is 6 sd.
    let hits: Vec<usize> = bs.iter().map(|b| b.hits.load(Ordering::SeqCst)).collect();
    assert!(
        hits.iter().all(|h| *h >= 50),
        "MESH_TEST_SEED={seed}: uneven: {hits:?}"
    );
}

#[tokio::test]
async fn outlier_ejects_failing_backend_and_it_returns() {
    let bs = [backend().await, backend().await, backend().await];
    bs[1].status.store(500, Ordering::SeqCst);
    let m = model(
        &[&bs[0], &bs[1], &bs[2]],
        "    loadBalancer: {simple: ROUND_ROBIN}
    outlierDetection:
      consecutive5xxErrors: 2
      interval: 50ms
      baseEjectionTime: 400ms
      maxEjectionPercent: 100
",
    );
    let ep = Endpoints::new();
    let before_ejection = tokio::time::Instant::now();
    let mut failures = 0;
    for _ in 0..15 {
        let a = send(&ep, request(&m, &[])).await.unwrap();
        if a.status == StatusCode::INTERNAL_SERVER_ERROR {
            failures += 1;
        }
    }
    assert_eq!(failures, 2, "ejected after two consecutive 5xx");
    assert_eq!(ep.ejected(CLUSTER), vec![bs[1].addr]);
    assert_eq!(ep.stats(CLUSTER).unwrap().ejections, 1);
    let hits_while_ejected = bs[1].hits.load(Ordering::SeqCst);
    assert_eq!(hits_while_ejected, 2);
    // It recovers and comes back after its ejection time, not before.
    bs[1].status.store(200, Ordering::SeqCst);
    wait::until("the ejection ends", || ep.ejected(CLUSTER).is_empty()).await;
    assert!(
        before_ejection.elapsed() >= Duration::from_millis(400),
        "back after {:?}, before its 400ms ejection time",
        before_ejection.elapsed()
    );
    for _ in 0..9 {
        let a = send(&ep, request(&m, &[])).await.unwrap();
        assert_eq!(a.status, StatusCode::OK);
    }
    assert!(ep.ejected(CLUSTER).is_empty());
    assert!(bs[1].hits.load(Ordering::SeqCst) >= hits_while_ejected + 2);
}

#[tokio::test]
async fn a_success_ends_the_failure_streak() {
    let b = backend().await;
    let m = model(
        &[&b],
        "    outlierDetection:
      consecutive5xxErrors: 3
      interval: 10s
      baseEjectionTime: 30s
      maxEjectionPercent: 100
",
    );
    let ep = Endpoints::new();
    // 2 failures, a success, 2 failures, a success...: never 3 in a row.
    for _ in 0..4 {
        b.status.store(503, Ordering::SeqCst);
        for _ in 0..2 {
            let a = send(&ep, request(&m, &[])).await.unwrap();
            assert_eq!(a.status, StatusCode::SERVICE_UNAVAILABLE);
        }
        b.status.store(200, Ordering::SeqCst);
        let a = send(&ep, request(&m, &[])).await.unwrap();
        assert_eq!(a.status, StatusCode::OK);
    }
    assert!(ep.ejected(CLUSTER).is_empty());
    // Many successes, then 3 failures in a row: ejected.
    for _ in 0..5 {
        send(&ep, request(&m, &[])).await.unwrap();
    }
    b.status.store(503, Ordering::SeqCst);
    for _ in 0..3 {
        send(&ep, request(&m, &[])).await.unwrap();
    }
    assert_eq!(ep.ejected(CLUSTER), vec![b.addr]);
}

#[tokio::test]
async fn overflow_fails_fast_without_queueing() {
    let b = backend().await;
    let m = model(
        &[&b],
        "    connectionPool:
      tcp: {maxConnections: 1}
      http: {http1MaxPendingRequests: 1}
",
    );
    let ep = Endpoints::new();
    let spawn = |ep: &Endpoints| {
        let (ep, req) = (ep.clone(), request(&m, &[]));
        tokio::spawn(async move { send(&ep, req).await.map(|a| a.status) })
    };
    // The first request holds the only connection; the second waits for
    // it, the only pending slot.
    let hold = b.hold_next();
    let first = spawn(&ep);
    b.hits_reach(1).await;
    let second = spawn(&ep);
    wait::until("a pending request", || {
        ep.stats(CLUSTER).unwrap().pending_requests == 1
    })
    .await;
    // Two more overflow at once: answered while the first is still held,
    // so they did not queue.
    for _ in 0..2 {
        let e = tokio::time::timeout(Duration::from_secs(2), send(&ep, request(&m, &[])))
            .await
            .expect("UO must not wait for a slot")
            .err()
            .expect("overflow");
        assert_eq!(e.flag, ResponseFlag::UpstreamOverflow, "{e}");
        assert_eq!(e.status, StatusCode::SERVICE_UNAVAILABLE);
    }
    hold.release();
    assert_eq!(first.await.unwrap().unwrap(), StatusCode::OK);
    assert_eq!(second.await.unwrap().unwrap(), StatusCode::OK);
    assert_eq!(b.hits.load(Ordering::SeqCst), 2);
    let s = ep.stats(CLUSTER).unwrap();
    assert_eq!(s.overflows, 2);
    assert_eq!(s.pending_requests, 0);
    assert!(s.connections <= 1, "{s:?}");
}

#[tokio::test]
async fn max_requests_overflow() {
    let b = backend().await;
    let m = model(&[&b], "    connectionPool: {http: {http2MaxRequests: 1}}\n");
    let ep = Endpoints::new();
    let hold = b.hold_next();
    let first = tokio::spawn({
        let (ep, req) = (ep.clone(), request(&m, &[]));
        async move { send(&ep, req).await.map(|a| a.status) }
    });
    b.hits_reach(1).await;
    let e = send(&ep, request(&m, &[])).await.err().expect("overflow");
    assert_eq!(e.flag, ResponseFlag::UpstreamOverflow);
    hold.release();
    assert_eq!(first.await.unwrap().unwrap(), StatusCode::OK);
    // The slot is free again once the first response finished.
    assert!(send(&ep, request(&m, &[])).await.is_ok());
}

#[tokio::test]
async fn ring_hash_sticks_and_moves_only_removed_keys() {
    let bs = [backend().await, backend().await, backend().await];
    let policy = "    loadBalancer: {consistentHash: {httpHeaderName: x-user}}\n";
    let m = model(&[&bs[0], &bs[1], &bs[2]], policy);
    let ep = Endpoints::new();
    let mut owner: HashMap<String, SocketAddr> = HashMap::new();
    for u in 0..40 {
        let user = format!("user-{u}");
        let a = send(&ep, request(&m, &[("x-user", &user)])).await.unwrap();
        let b = send(&ep, request(&m, &[("x-user", &user)])).await.unwrap();
        assert_eq!(a.served_by, b.served_by, "sticky for {user}");
        owner.insert(user, a.served_by);
    }
    let used: std::collections::HashSet<_> = owner.values().collect();
    assert_eq!(used.len(), 3, "keys spread over all endpoints");
    // Remove backend 2 from the model.
    let m2 = model(&[&bs[0], &bs[1]], policy);
    for (user, before) in &owner {
        let a = send(&ep, request(&m2, &[("x-user", user)])).await.unwrap();
        if *before != bs[2].addr {
            assert_eq!(a.served_by, *before, "{user} moved needlessly");
        } else {
            assert_ne!(a.served_by, bs[2].addr);
        }
    }
}

#[tokio::test]
async fn maglev_and_generated_cookie_stick() {
    let bs = [backend().await, backend().await, backend().await];
    let m = model(
        &[&bs[0], &bs[1], &bs[2]],
        "    loadBalancer:
      consistentHash:
        httpCookie: {name: sid, path: /, ttl: 60s}
        maglev: {tableSize: 65537}
",
    );
    let ep = Endpoints::new();
    let first = send(&ep, request(&m, &[])).await.unwrap();
    let set = first.headers[http::header::SET_COOKIE]
        .to_str()
        .unwrap()
        .to_string();
    assert!(set.starts_with("sid=\""), "{set}");
    assert!(
        set.contains("Max-Age=60") && set.contains("Path=/"),
        "{set}"
    );
    let cookie = set.split(';').next().unwrap().to_string();
    for _ in 0..10 {
        let a = send(&ep, request(&m, &[("cookie", &cookie)]))
            .await
            .unwrap();
        assert_eq!(a.served_by, first.served_by);
        assert!(a.headers.get(http::header::SET_COOKIE).is_none());
    }
}

#[tokio::test]
async fn locality_failover_when_local_backend_is_ejected() {
    let bs = [backend().await, backend().await, backend().await];
    let eps = [
        (bs[0].addr, "r1/z1/s1"),
        (bs[1].addr, "r1/z2/s1"),
        (bs[2].addr, "r2/z1/s1"),
    ];
    let m = model_with(
        &eps,
        "HTTP",
        "    loadBalancer: {simple: ROUND_ROBIN}
    outlierDetection:
      consecutive5xxErrors: 1
      interval: 1s
      baseEjectionTime: 30s
      maxEjectionPercent: 100
",
        &[
            ("app", "client"),
            ("topology.kubernetes.io/region", "r1"),
            ("topology.kubernetes.io/zone", "z1"),
            ("topology.istio.io/subzone", "s1"),
        ],
    );
    let ep = Endpoints::new();
    for _ in 0..5 {
        assert_eq!(
            send(&ep, request(&m, &[])).await.unwrap().served_by,
            bs[0].addr
        );
    }
    bs[0].status.store(503, Ordering::SeqCst);
    let a = send(&ep, request(&m, &[])).await.unwrap();
    assert_eq!(
        (a.served_by, a.status),
        (bs[0].addr, StatusCode::SERVICE_UNAVAILABLE)
    );
    for _ in 0..5 {
        let a = send(&ep, request(&m, &[])).await.unwrap();
        assert_eq!(a.served_by, bs[1].addr, "same region fails over first");
    }
    bs[1].status.store(503, Ordering::SeqCst);
    send(&ep, request(&m, &[])).await.unwrap();
    for _ in 0..3 {
        assert_eq!(
            send(&ep, request(&m, &[])).await.unwrap().served_by,
            bs[2].addr
        );
    }
    assert_eq!(bs[2].hits.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn http2_prior_knowledge_for_http2_ports() {
    let b = backend().await;
    let m = model_with(
        &[(b.addr, "r/z/s")],
        "HTTP2",
        "    loadBalancer: {simple: RANDOM}\n",
        &[],
    );
    let ep = Endpoints::new();
    for _ in 0..3 {
        let a = send(&ep, request(&m, &[])).await.unwrap();
        assert_eq!(a.headers["x-version"], "HTTP/2.0");
        assert_eq!(a.headers["x-host"], HOST);
    }
    assert_eq!(ep.stats(CLUSTER).unwrap().connections, 1);
}

#[tokio::test]
async fn connect_failure_is_uf_and_retries_avoid_it() {
    let good = backend().await;
    let dead = {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        l.local_addr().unwrap()
    };
    let m = model_with(
        &[(dead, "r/z/s"), (good.addr, "r/z/s")],
        "HTTP",
        "    loadBalancer: {simple: ROUND_ROBIN}\n    connectionPool: {tcp: {connectTimeout: 1s}}\n",
        &[],
    );
    let ep = Endpoints::new();
    let mut saw_uf = false;
    for _ in 0..4 {
        let req = request(&m, &[]);
        let up = req.extensions().get::<Upstream>().unwrap().clone();
        match send(&ep, req).await {
            Err(e) => {
                assert_eq!(e.flag, ResponseFlag::UpstreamConnectionFailure, "{e}");
                assert!(e.reason.contains(&dead.to_string()), "{}", e.reason);
                saw_uf = true;
                // A retry carrying the same `tried` list goes elsewhere.
                assert_eq!(up.tried_endpoints(), vec![dead]);
                let mut retry = request(&m, &[]);
                let mut again = up.clone();
                again.attempt = 2;
                retry.extensions_mut().insert(again);
                assert_eq!(send(&ep, retry).await.unwrap().served_by, good.addr);
            }
            Ok(a) => assert_eq!(a.served_by, good.addr),
        }
    }
    assert!(saw_uf);
    assert!(ep.stats(CLUSTER).unwrap().connect_failures >= 1);
}

#[tokio::test]
async fn unknown_cluster_and_empty_cluster_are_uh() {
    let b = backend().await;
    let m = model(&[&b], "    loadBalancer: {simple: ROUND_ROBIN}\n");
    let ep = Endpoints::new();
    let mut req = request(&m, &[]);
    req.extensions_mut().get_mut::<Upstream>().unwrap().cluster = "outbound|81||nope".into();
    let e = send(&ep, req).await.err().unwrap();
    assert_eq!(e.flag, ResponseFlag::NoHealthyUpstream);
    let req = Request::new(body::empty());
    let e = send(&ep, req).await.err().unwrap();
    assert_eq!(e.flag, ResponseFlag::NoHealthyUpstream);
}

#[tokio::test]
async fn passthrough_connects_to_the_requested_address() {
    let b = backend().await;
    let m = model(&[&b], "    loadBalancer: {simple: ROUND_ROBIN}\n");
    let ep = Endpoints::new();
    let mut req = request(&m, &[]);
    {
        let up = req.extensions_mut().get_mut::<Upstream>().unwrap();
        up.cluster = Upstream::PASSTHROUGH.into();
        up.host = "127.0.0.1".into();
        up.port = b.addr.port();
    }
    let a = send(&ep, req).await.unwrap();
    assert_eq!(a.served_by, b.addr);
}

#[tokio::test]
async fn model_updates_keep_pools_and_outlier_state() {
    let bs = [
        backend().await,
        backend().await,
        backend().await,
        backend().await,
    ];
    let policy = "    loadBalancer: {simple: ROUND_ROBIN}
    outlierDetection:
      consecutive5xxErrors: 1
      baseEjectionTime: 30s
      maxEjectionPercent: 100
";
    let m1 = model(&[&bs[0], &bs[1], &bs[2]], policy);
    let ep = Endpoints::new();
    for _ in 0..3 {
        send(&ep, request(&m1, &[])).await.unwrap();
    }
    bs[1].status.store(500, Ordering::SeqCst);
    for _ in 0..3 {
        send(&ep, request(&m1, &[])).await.unwrap();
    }
    assert_eq!(ep.ejected(CLUSTER), vec![bs[1].addr]);
    let hits1 = bs[1].hits.load(Ordering::SeqCst);
    // A new model adds an endpoint: the ejection and the connections of
    // the surviving endpoints carry over.
    let m2 = model(&[&bs[0], &bs[1], &bs[2], &bs[3]], policy);
    for _ in 0..9 {
        let a = send(&ep, request(&m2, &[])).await.unwrap();
        assert_eq!(a.status, StatusCode::OK);
    }
    assert_eq!(bs[1].hits.load(Ordering::SeqCst), hits1);
    assert_eq!(bs[3].hits.load(Ordering::SeqCst), 3);
    assert_eq!(bs[0].accepts.load(Ordering::SeqCst), 1, "pool kept");
    assert_eq!(bs[2].accepts.load(Ordering::SeqCst), 1, "pool kept");
    // In-flight style: a request still carrying the old model is served
    // from the old model's endpoints.
    let a = send(&ep, request(&m1, &[])).await.unwrap();
    assert_ne!(a.served_by, bs[3].addr);
    assert_ne!(a.served_by, bs[1].addr);
    // New pool settings get new pools.
    let m3 = model(
        &[&bs[0], &bs[1], &bs[2], &bs[3]],
        &format!("{policy}    connectionPool: {{http: {{idleTimeout: 20s}}}}\n"),
    );
    for _ in 0..3 {
        send(&ep, request(&m3, &[])).await.unwrap();
    }
    let total: usize = [0, 2, 3]
        .iter()
        .map(|i| bs[*i].accepts.load(Ordering::SeqCst))
        .sum();
    assert_eq!(total, 6);
}

#[tokio::test]
async fn max_requests_per_connection_one_disables_reuse() {
    let b = backend().await;
    let m = model(
        &[&b],
        "    connectionPool: {http: {maxRequestsPerConnection: 1}}\n",
    );
    let ep = Endpoints::new();
    for _ in 0..3 {
        send(&ep, request(&m, &[])).await.unwrap();
    }
    assert_eq!(b.accepts.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn h2_upgrade_policy_and_client_protocol() {
    let b = backend().await;
    let m = model(
        &[&b],
        "    connectionPool: {http: {h2UpgradePolicy: UPGRADE}}\n",
    );
    let ep = Endpoints::new();
    let a = send(&ep, request(&m, &[])).await.unwrap();
    assert_eq!(a.headers["x-version"], "HTTP/2.0");
    let m = model(
        &[&b],
        "    connectionPool: {http: {useClientProtocol: true}}\n",
    );
    let a = send(&ep, request(&m, &[])).await.unwrap();
    assert_eq!(a.headers["x-version"], "HTTP/1.1");
    let mut req = request(&m, &[]);
    *req.version_mut() = http::Version::HTTP_2;
    let a = send(&ep, req).await.unwrap();
    assert_eq!(a.headers["x-version"], "HTTP/2.0");
}

#[tokio::test]
async fn max_requests_per_connection_retires_connections() {
    let b = backend().await;
    let m = model(
        &[&b],
        "    connectionPool: {http: {maxRequestsPerConnection: 2}}\n",
    );
    let ep = Endpoints::new();
    for _ in 0..6 {
        send(&ep, request(&m, &[])).await.unwrap();
    }
    assert_eq!(b.accepts.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn upstream_reset_is_ur_and_counts_as_local_origin_failure() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                use tokio::io::AsyncReadExt;
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await;
                // Close without answering.
            });
        }
    });
    let m = model_with(
        &[(addr, "r/z/s")],
        "HTTP",
        "    outlierDetection:
      consecutive5xxErrors: 2
      maxEjectionPercent: 100
",
        &[],
    );
    let ep = Endpoints::new();
    for _ in 0..2 {
        let e = send(&ep, request(&m, &[])).await.err().expect("reset");
        assert_eq!(e.flag, ResponseFlag::UpstreamRemoteReset, "{e}");
    }
    assert_eq!(ep.ejected(CLUSTER), vec![addr]);
    let e = send(&ep, request(&m, &[])).await.err().expect("no healthy");
    assert_eq!(e.flag, ResponseFlag::NoHealthyUpstream, "{e}");
    assert_eq!(ep.stats(CLUSTER).unwrap().no_healthy, 1);
}

#[tokio::test]
async fn grpc_unavailable_counts_as_503_for_outlier_detection() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let svc = service_fn(|_req: Request<hyper::body::Incoming>| async {
                    let mut r = Response::new(Full::new(Bytes::new()));
                    r.headers_mut()
                        .insert("content-type", "application/grpc".parse().unwrap());
                    r.headers_mut().insert("grpc-status", "14".parse().unwrap());
                    Ok::<_, Infallible>(r)
                });
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    let m = model_with(
        &[(addr, "r/z/s")],
        "GRPC",
        "    outlierDetection:
      consecutiveGatewayErrors: 2
      consecutive5xxErrors: 0
      maxEjectionPercent: 100
",
        &[],
    );
    let ep = Endpoints::new();
    for _ in 0..2 {
        let req = request(&m, &[("content-type", "application/grpc")]);
        let resp = tower::Service::call(&mut ep.clone(), req).await.unwrap();
        assert_eq!(resp.headers()["grpc-status"], "14");
    }
    assert_eq!(ep.ejected(CLUSTER), vec![addr]);
}

#[tokio::test]
async fn a_cluster_that_leaves_the_model_comes_back_with_fresh_state() {
    let b = backend().await;
    let m1 = model(&[&b], "    loadBalancer: {simple: ROUND_ROBIN}\n");
    let ep = Endpoints::new();
    for _ in 0..3 {
        send(&ep, request(&m1, &[])).await.unwrap();
    }
    assert_eq!(ep.stats(CLUSTER).unwrap().requests, 3);
    // A request held at the backend keeps the old state alive throughout.
    let hold = b.hold_next();
    let slow = {
        let (ep, m1) = (ep.clone(), m1.clone());
        tokio::spawn(async move { send(&ep, request(&m1, &[])).await.unwrap() })
    };
    b.hits_reach(4).await;
    // A model without the cluster: a request carrying it (for whatever
    // cluster) makes the stage forget the cluster's state.
    let loaded = mesh_core::config::load_str(
        "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: other, namespace: default}
spec:
  hosts: [other.example.com]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{name: http, number: 80, protocol: HTTP}]
  endpoints: [{address: 127.0.0.1}]
",
        "other.yaml",
    );
    let m2 = Arc::new(mesh_core::compile::compile(
        &loaded.resources,
        &Default::default(),
        &mesh_core::model::Client::new("default", Default::default()),
    ));
    assert!(!m2.clusters.contains_key(CLUSTER));
    let mut req = request(&m2, &[]);
    req.extensions_mut().get_mut::<Upstream>().unwrap().cluster =
        "outbound|80||other.example.com".into();
    let _ = tower::Service::call(&mut ep.clone(), req).await;
    assert!(ep.stats(CLUSTER).is_none(), "forgotten");
    // Back again: a new state, counting from zero (not a copy this thread
    // kept from before).
    let m3 = model(&[&b], "    loadBalancer: {simple: ROUND_ROBIN}\n");
    send(&ep, request(&m3, &[])).await.unwrap();
    assert_eq!(ep.stats(CLUSTER).unwrap().requests, 1);
    hold.release();
    slow.await.unwrap();
}
