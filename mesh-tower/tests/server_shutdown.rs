//! Graceful shutdown of the inbound server on loopback: a request in
//! flight completes while new connections are refused; HTTP/2 gets GOAWAY
//! (its open stream finishes, new streams are refused); the drain deadline
//! cuts off a request that would take too long. The slow request is held
//! by the app until the test releases it, so "in flight" is an event, not
//! a guess; each test is bounded to a few seconds.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use mesh_test_support::identity::{ca_in, issue, TD};
use mesh_test_support::inbound::model;
use mesh_tower::body::{self, MeshBody};
use mesh_tower::server::{AcceptConfig, Server, TlsSource};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

/// The app: `/slow` says it arrived, then answers `done` once released;
/// anything else at once.
async fn app(
    req: Request<MeshBody>,
    arrived: mpsc::UnboundedSender<()>,
    mut released: watch::Receiver<bool>,
) -> Result<Response<MeshBody>, Infallible> {
    if req.uri().path() == "/slow" {
        let _ = arrived.send(());
        let _ = released.wait_for(|r| *r).await;
    }
    Ok(Response::new(body::full("done")))
}

struct Running {
    addr: SocketAddr,
    stop: oneshot::Sender<()>,
    done: JoinHandle<std::io::Result<()>>,
    arrived: mpsc::UnboundedReceiver<()>,
    release: watch::Sender<bool>,
    _pki: tempfile::TempDir,
}

impl Running {
    /// Waits until a `/slow` request is at the app.
    async fn slow_arrived(&mut self) {
        tokio::time::timeout(Duration::from_secs(5), self.arrived.recv())
            .await
            .expect("the slow request reaches the app")
            .unwrap();
    }
}

async fn run(drain: Duration) -> Running {
    let pki = tempfile::tempdir().unwrap();
    let ca = ca_in(pki.path(), TD);
    let (_tx, rx) = tokio::sync::watch::channel(model(""));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let (arrived_tx, arrived) = mpsc::unbounded_channel();
    let (release, released) = watch::channel(false);
    let server = Server::new(rx, TlsSource::fixed(issue(&ca, "server")))
        .accept_config(AcceptConfig {
            port: Some(8080),
            ..AcceptConfig::default()
        })
        .drain_timeout(drain);
    let svc = tower::service_fn(move |req| app(req, arrived_tx.clone(), released.clone()));
    let done = tokio::spawn(async move {
        let _tx = _tx;
        server
            .serve_with_shutdown(listener, svc, async {
                let _ = stopped.await;
            })
            .await
    });
    Running {
        addr,
        stop,
        done,
        arrived,
        release,
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
    let mut srv = run(Duration::from_secs(5)).await;
    // An idle keep-alive connection is closed by the drain, not waited for.
    let mut idle = send(srv.addr, "/").await;
    let mut buf = [0u8; 1024];
    let n = idle.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));

    let mut slow = send(srv.addr, "/slow").await;
    srv.slow_arrived().await;
    srv.stop.send(()).unwrap();

    // New connections are refused while the slow request is held.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while TcpStream::connect(srv.addr).await.is_ok() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the listener must be closed once shutdown starts"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // Released, the slow request completes, then the server closes the
    // connection.
    srv.release.send_replace(true);
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(3), slow.read_to_end(&mut out))
        .await
        .expect("the drained connection must close")
        .unwrap();
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.ends_with("done"), "{text}");
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
}

#[tokio::test]
async fn http2_gets_goaway_and_its_open_stream_finishes() {
    let mut srv = run(Duration::from_secs(5)).await;
    let tcp = TcpStream::connect(srv.addr).await.unwrap();
    let (mut h2, conn) = hyper::client::conn::http2::handshake::<_, _, Empty<Bytes>>(
        TokioExecutor::new(),
        TokioIo::new(tcp),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let slow = h2.send_request(
        Request::get("http://server/slow")
            .body(Empty::new())
            .unwrap(),
    );
    let slow = tokio::spawn(slow);
    srv.slow_arrived().await;
    srv.stop.send(()).unwrap();
    // Once the GOAWAY reaches the client, the connection takes no new
    // stream (one sent before it arrived may still be served), all while
    // the slow stream is held open.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let late = h2
            .send_request(Request::get("http://server/").body(Empty::new()).unwrap())
            .await;
        if late.is_err() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "new streams are still taken after GOAWAY"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    srv.release.send_replace(true);
    let resp = slow.await.unwrap().unwrap();
    assert_eq!(resp.status(), 200);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], b"done");
    tokio::time::timeout(Duration::from_secs(2), srv.done)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn the_drain_deadline_closes_what_is_left() {
    let drain = Duration::from_millis(300);
    let mut srv = run(drain).await;
    let mut stuck = send(srv.addr, "/slow").await;
    srv.slow_arrived().await;
    // From here on nothing waits for the network (the request is held,
    // never released): on a paused clock the deadline is exact.
    tokio::time::pause();
    let started = tokio::time::Instant::now();
    srv.stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(2), srv.done)
        .await
        .expect("shutdown must end at the drain deadline")
        .unwrap()
        .unwrap();
    let took = started.elapsed();
    assert!(
        took >= drain && took < drain + Duration::from_millis(50),
        "{took:?}"
    );
    tokio::time::resume();
    // The request was cut off: the connection closes without a response.
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(1), stuck.read_to_end(&mut out))
        .await
        .unwrap()
        .unwrap();
    assert!(out.is_empty(), "{}", String::from_utf8_lossy(&out));
}
