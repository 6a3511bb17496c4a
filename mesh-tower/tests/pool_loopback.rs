//! The endpoint stage's connection pools against real hyper servers on
//! loopback: reuse, connections a server or a reader ends, the idle
//! timeout, and one shared HTTP/2 connection. Bounded in requests and
//! time; concurrency comes from requests held at the backend, not from
//! sleeps.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::service::{service_fn, Service};
use hyper_util::rt::{TokioExecutor, TokioIo};
use mesh_test_support::backends::backend;
use mesh_test_support::endpoints::{model, model_with, request, send, CLUSTER};
use mesh_tower::balance::Endpoints;

/// One service on `addr` speaking `protocol`, default pool settings.
fn plain(addr: SocketAddr, protocol: &str) -> Arc<mesh_core::model::Model> {
    model_with(
        &[(addr, "r/z/s")],
        protocol,
        "    tls: {mode: DISABLE}\n",
        &[],
    )
}

/// Waits (bounded) until the cluster's open connections reach `n`.
async fn connections_reach(ep: &Endpoints, n: u64) {
    mesh_test_support::wait::until(&format!("{n} open connections"), || {
        ep.stats(CLUSTER).unwrap().connections == n
    })
    .await;
}

#[tokio::test]
async fn sequential_requests_reuse_one_connection() {
    let b = backend().await;
    let m = model(&[&b], "    loadBalancer: {simple: ROUND_ROBIN}\n");
    let ep = Endpoints::new();
    for _ in 0..50 {
        send(&ep, request(&m, &[])).await.unwrap();
    }
    assert_eq!(b.accepts.load(Ordering::SeqCst), 1);
    assert_eq!(ep.stats(CLUSTER).unwrap().connections, 1);
}

#[tokio::test]
async fn concurrent_requests_open_no_more_connections_than_they_need() {
    let b = backend().await;
    let m = model(&[&b], "    loadBalancer: {simple: ROUND_ROBIN}\n");
    let ep = Endpoints::new();
    for n in 1..=3 {
        // All four of a wave are at the backend at once.
        let holds: Vec<_> = (0..4).map(|_| b.hold_next()).collect();
        let wave: Vec<_> = (0..4)
            .map(|_| {
                let (ep, m) = (ep.clone(), m.clone());
                tokio::spawn(async move { send(&ep, request(&m, &[])).await.unwrap() })
            })
            .collect();
        b.hits_reach(4 * n).await;
        drop(holds);
        for w in wave {
            w.await.unwrap();
        }
    }
    // Each wave of 4 finds the previous wave's 4 connections idle.
    assert_eq!(b.accepts.load(Ordering::SeqCst), 4);
}

/// How a [`server`] misbehaves.
#[derive(Clone, Copy)]
enum Quirk {
    /// HTTP/1.1, answers with a 1 MiB body, for readers that stop early.
    BigBody,
    /// HTTP/1.1 with `Connection: close` on every response.
    CloseEach,
    /// HTTP/2; closes each connection (GOAWAY) as soon as its first
    /// request arrives, and still answers that one.
    ShortH2,
}

/// A loopback server answering with its address (repeated for
/// `BigBody`), and its count of accepted connections.
async fn server(quirk: Quirk) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepts = Arc::new(AtomicUsize::new(0));
    let acc = accepts.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            acc.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let svc = service_fn(move |_req: Request<hyper::body::Incoming>| async move {
                    let times = if matches!(quirk, Quirk::BigBody) {
                        1 << 16
                    } else {
                        1
                    };
                    let body = Bytes::from(addr.to_string().repeat(times));
                    Ok::<_, Infallible>(Response::new(Full::new(body)))
                });
                let io = TokioIo::new(stream);
                let _ = match quirk {
                    Quirk::BigBody | Quirk::CloseEach => {
                        hyper::server::conn::http1::Builder::new()
                            .keep_alive(matches!(quirk, Quirk::BigBody))
                            .serve_connection(io, svc)
                            .await
                    }
                    Quirk::ShortH2 => {
                        let (first, closing) = tokio::sync::oneshot::channel();
                        let first = std::sync::Mutex::new(Some(first));
                        let svc = service_fn(move |req| {
                            if let Some(tx) = first.lock().unwrap().take() {
                                let _ = tx.send(());
                            }
                            svc.call(req)
                        });
                        let conn = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                            .serve_connection(io, svc);
                        tokio::pin!(conn);
                        tokio::select! {
                            r = conn.as_mut() => r,
                            _ = closing => {
                                conn.as_mut().graceful_shutdown();
                                conn.await
                            }
                        }
                    }
                };
            });
        }
    });
    (addr, accepts)
}

#[tokio::test]
async fn a_body_dropped_unread_does_not_poison_the_next_request() {
    let (addr, accepts) = server(Quirk::BigBody).await;
    let m = plain(addr, "HTTP");
    let ep = Endpoints::new();
    let resp = tower::Service::call(&mut ep.clone(), request(&m, &[]))
        .await
        .unwrap();
    drop(resp);
    // The next request gets a whole, clean answer, on a new connection
    // (the first still held unread bytes).
    for _ in 0..3 {
        let resp = tower::Service::call(&mut ep.clone(), request(&m, &[]))
            .await
            .unwrap();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body.len(), addr.to_string().len() << 16);
    }
    assert_eq!(accepts.load(Ordering::SeqCst), 2);
    connections_reach(&ep, 1).await;
}

#[tokio::test]
async fn a_server_closing_each_connection_is_transparent() {
    let (addr, accepts) = server(Quirk::CloseEach).await;
    let m = plain(addr, "HTTP");
    let ep = Endpoints::new();
    for _ in 0..20 {
        send(&ep, request(&m, &[])).await.unwrap();
    }
    assert_eq!(accepts.load(Ordering::SeqCst), 20);
    connections_reach(&ep, 0).await;
}

#[tokio::test]
async fn idle_connections_close_after_the_idle_timeout() {
    let b = backend().await;
    let m = model(&[&b], "    connectionPool: {http: {idleTimeout: 200ms}}\n");
    let ep = Endpoints::new();
    send(&ep, request(&m, &[])).await.unwrap();
    assert_eq!(ep.stats(CLUSTER).unwrap().connections, 1);
    // Still open right after, and reused.
    send(&ep, request(&m, &[])).await.unwrap();
    assert_eq!(b.accepts.load(Ordering::SeqCst), 1);
    connections_reach(&ep, 0).await;
    send(&ep, request(&m, &[])).await.unwrap();
    assert_eq!(b.accepts.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn http2_requests_share_one_connection_opened_once() {
    let b = backend().await;
    b.delay_ms.store(20, Ordering::SeqCst);
    let m = model_with(
        &[(b.addr, "r/z/s")],
        "HTTP2",
        "    connectionPool: {http: {idleTimeout: 300ms}}\n",
        &[],
    );
    let ep = Endpoints::new();
    // All start before any connection exists: they wait for one.
    let all: Vec<_> = (0..20)
        .map(|_| {
            let (ep, m) = (ep.clone(), m.clone());
            tokio::spawn(async move { send(&ep, request(&m, &[])).await.unwrap() })
        })
        .collect();
    for a in all {
        assert_eq!(a.await.unwrap().headers["x-version"], "HTTP/2.0");
    }
    assert_eq!(b.accepts.load(Ordering::SeqCst), 1);
    // Idle, it closes; the next request opens a new one.
    connections_reach(&ep, 0).await;
    send(&ep, request(&m, &[])).await.unwrap();
    assert_eq!(b.accepts.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn http2_connection_is_replaced_when_the_server_closes_it() {
    let (addr, accepts) = server(Quirk::ShortH2).await;
    let m = plain(addr, "HTTP2");
    let ep = Endpoints::new();
    send(&ep, request(&m, &[])).await.unwrap();
    connections_reach(&ep, 0).await;
    send(&ep, request(&m, &[])).await.unwrap();
    assert_eq!(accepts.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn changed_pool_settings_move_requests_to_new_connections() {
    let b = backend().await;
    let m = plain(b.addr, "HTTP2");
    let ep = Endpoints::new();
    send(&ep, request(&m, &[])).await.unwrap();
    send(&ep, request(&m, &[])).await.unwrap();
    assert_eq!(b.accepts.load(Ordering::SeqCst), 1);
    // Other pool settings: the old connection closes and requests go on
    // over a new one.
    let m2 = model_with(
        &[(b.addr, "r/z/s")],
        "HTTP2",
        "    connectionPool: {http: {idleTimeout: 30s}}\n",
        &[],
    );
    send(&ep, request(&m2, &[])).await.unwrap();
    assert_eq!(b.accepts.load(Ordering::SeqCst), 2);
    connections_reach(&ep, 1).await;
}
