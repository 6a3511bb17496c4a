//! Graceful shutdown of the inbound server on loopback: a slow request in
//! flight completes while new connections are refused; HTTP/2 gets GOAWAY
//! (its open stream finishes, new streams are refused); the drain deadline
//! cuts off a request that would take too long. Each test is bounded to a
//! few seconds.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "server_support.rs"]
mod support;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use mesh_tower::body::{self, MeshBody};
use mesh_tower::server::{AcceptConfig, Server, TlsSource};
use support::{ca_in, issue, model, TD};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// `/slow?ms=N` answers after N milliseconds; anything else at once.
async fn app(req: Request<MeshBody>) -> Result<Response<MeshBody>, Infallible> {
    let ms = req
        .uri()
        .query()
        .and_then(|q| q.strip_prefix("ms="))
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    tokio::time::sleep(Duration::from_millis(ms)).await;
    Ok(Response::new(body::full(format!("done after {ms}ms"))))
}

struct Running {
    addr: SocketAddr,
    stop: oneshot::Sender<()>,
    done: JoinHandle<std::io::Result<()>>,
    _pki: tempfile::TempDir,
}

async fn run(drain: Duration) -> Running {
    let pki = tempfile::tempdir().unwrap();
    let ca = ca_in(pki.path(), TD);
    let (_tx, rx) = tokio::sync::watch::channel(model(""));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let server = Server::new(rx, TlsSource::fixed(issue(&ca, "server")))
        .accept_config(AcceptConfig {
            port: Some(8080),
            ..AcceptConfig::default()
        })
        .drain_timeout(drain);
    let done = tokio::spawn(async move {
        let _tx = _tx;
        server
            .serve_with_shutdown(listener, tower::service_fn(app), async {
                let _ = stopped.await;
            })
            .await
    });
    Running {
        addr,
        stop,
        done,
        _pki: pki,
    }
}

/// Sends a keep-alive HTTP/1.1 request; returns the stream.
async fn send(addr: SocketAddr, path: &str) -> TcpStream {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: server\r\n\r\n").as_bytes())
        .await
        .unwrap();
    s
}

#[tokio::test]
async fn in_flight_request_completes_and_new_connections_are_refused() {
    let srv = run(Duration::from_secs(5)).await;
    // An idle keep-alive connection is closed by the drain, not waited for.
    let mut idle = send(srv.addr, "/").await;
    let mut buf = [0u8; 1024];
    let n = idle.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));

    let mut slow = send(srv.addr, "/slow?ms=600").await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = Instant::now();
    srv.stop.send(()).unwrap();

    // New connections are refused while the slow request is still running.
    let mut refused = false;
    for _ in 0..50 {
        if TcpStream::connect(srv.addr).await.is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(refused, "the listener must be closed once shutdown starts");
    assert!(started.elapsed() < Duration::from_millis(400));

    // The slow request completes, then the server closes the connection.
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(3), slow.read_to_end(&mut out))
        .await
        .expect("the drained connection must close")
        .unwrap();
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.ends_with("done after 600ms"), "{text}");
    let n = tokio::time::timeout(Duration::from_secs(1), idle.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(n, 0, "the idle connection must be closed");

    // serve_with_shutdown returns once the last connection is done.
    let res = tokio::time::timeout(Duration::from_secs(2), srv.done)
        .await
        .unwrap()
        .unwrap();
    assert!(res.is_ok());
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn http2_gets_goaway_and_its_open_stream_finishes() {
    let srv = run(Duration::from_secs(5)).await;
    let tcp = TcpStream::connect(srv.addr).await.unwrap();
    let (mut h2, conn) = hyper::client::conn::http2::handshake::<_, _, Empty<Bytes>>(
        TokioExecutor::new(),
        TokioIo::new(tcp),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let slow = h2.send_request(
        Request::get("http://server/slow?ms=500")
            .body(Empty::new())
            .unwrap(),
    );
    let slow = tokio::spawn(slow);
    tokio::time::sleep(Duration::from_millis(100)).await;
    srv.stop.send(()).unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;

    // After GOAWAY the connection takes no new stream.
    let late = h2
        .send_request(Request::get("http://server/").body(Empty::new()).unwrap())
        .await;
    assert!(late.is_err(), "a stream opened after GOAWAY must fail");

    let resp = slow.await.unwrap().unwrap();
    assert_eq!(resp.status(), 200);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], b"done after 500ms");
    tokio::time::timeout(Duration::from_secs(2), srv.done)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn the_drain_deadline_closes_what_is_left() {
    let srv = run(Duration::from_millis(300)).await;
    let mut stuck = send(srv.addr, "/slow?ms=10000").await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = Instant::now();
    srv.stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(2), srv.done)
        .await
        .expect("shutdown must end at the drain deadline")
        .unwrap()
        .unwrap();
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_millis(1500),
        "{took:?}"
    );
    // The request was cut off: the connection closes without a response.
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(1), stuck.read_to_end(&mut out))
        .await
        .unwrap()
        .unwrap();
    assert!(out.is_empty(), "{}", String::from_utf8_lossy(&out));
}
