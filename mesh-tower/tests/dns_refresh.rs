//! DNS clusters end to end: a `resolution: DNS` ServiceEntry whose
//! endpoint is a host name, a resolver the test controls, and two real
//! HTTP backends on loopback (127.0.0.2 and 127.0.0.3, same port). When
//! the name's answer moves from one to the other, requests keep
//! succeeding, land on the new backend after the refresh, and a request
//! in flight on the old one completes. Everything waits for events (the
//! resolver's lookups, a request's arrival), never for wall-clock sleeps.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test setup

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use mesh_tower::{Answer, Mesh, MeshClient, Resolve, ResolveFuture};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch, Semaphore};

const NAME: &str = "backend.dns.test";
/// Generous bound for each awaited event on a busy machine.
const PATIENCE: Duration = Duration::from_secs(20);

/// Answers `NAME` with the address the test sets and counts lookups.
struct Scripted {
    ip: Mutex<IpAddr>,
    lookups: watch::Sender<usize>,
}

impl Resolve for Scripted {
    fn lookup<'a>(&'a self, host: &'a str, port: u16) -> ResolveFuture<'a> {
        let answer = if host == NAME {
            Ok(Answer::new([SocketAddr::new(
                *self.ip.lock().unwrap(),
                port,
            )]))
        } else {
            Err(std::io::Error::other(format!("NXDOMAIN {host}")))
        };
        self.lookups.send_modify(|n| *n += 1);
        Box::pin(async move { answer })
    }
}

/// A backend answering with its own address; `/slow` tells `arrived` and
/// waits for a permit of `gate` first.
struct Backend {
    addr: SocketAddr,
    arrived: mpsc::UnboundedReceiver<()>,
    gate: Arc<Semaphore>,
}

fn serve(listener: TcpListener) -> Backend {
    let addr = listener.local_addr().unwrap();
    let (tx, arrived) = mpsc::unbounded_channel();
    let gate = Arc::new(Semaphore::new(0));
    let g = gate.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let (tx, g) = (tx.clone(), g.clone());
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<hyper::body::Incoming>| {
                    let (tx, g) = (tx.clone(), g.clone());
                    async move {
                        if req.uri().path() == "/slow" {
                            let _ = tx.send(());
                            g.acquire().await.unwrap().forget();
                        }
                        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(addr.to_string()))))
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Backend {
        addr,
        arrived,
        gate,
    }
}

/// Backends on 127.0.0.2 and 127.0.0.3 sharing one port (the endpoint has
/// one port, whatever its name resolves to).
async fn two_backends() -> (Backend, Backend) {
    for _ in 0..20 {
        let a = TcpListener::bind("127.0.0.2:0").await.unwrap();
        let port = a.local_addr().unwrap().port();
        if let Ok(b) = TcpListener::bind(("127.0.0.3", port)).await {
            return (serve(a), serve(b));
        }
    }
    panic!("no port free on both 127.0.0.2 and 127.0.0.3");
}

/// GET `path` of the service; its status and the backend that answered.
async fn get(client: &MeshClient, path: &str) -> (StatusCode, String) {
    let req = Request::get(format!("http://api.dns.test{path}"))
        .body(Empty::<Bytes>::new())
        .unwrap();
    let resp = tokio::time::timeout(PATIENCE, client.request(req))
        .await
        .expect("an answer")
        .unwrap();
    let status = resp.status();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_follow_a_changed_dns_answer_without_failing() {
    let (mut old, new) = two_backends().await;
    let port = old.addr.port();
    let resolver = Arc::new(Scripted {
        ip: Mutex::new(old.addr.ip()),
        lookups: watch::channel(0).0,
    });
    let mut lookups = resolver.lookups.subscribe();

    let config = tempfile::tempdir().unwrap();
    std::fs::write(
        config.path().join("api.yaml"),
        format!(
            "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: api, namespace: default}}
spec:
  hosts: [api.dns.test]
  location: MESH_EXTERNAL
  resolution: DNS
  ports: [{{number: 80, name: http, protocol: HTTP}}]
  endpoints:
  - address: {NAME}
    ports: {{http: {port}}}
"
        ),
    )
    .unwrap();
    // A short refresh rate keeps the test quick; it waits for lookups, not
    // for the clock.
    let mesh_dir = tempfile::tempdir().unwrap();
    let mesh_config = mesh_dir.path().join("mesh.yaml");
    std::fs::write(&mesh_config, "dnsRefreshRate: 50ms\n").unwrap();
    let mesh = Mesh::local(config.path())
        .mesh_config(&mesh_config)
        .namespace("default")
        .resolver(resolver.clone())
        .build()
        .await
        .unwrap();
    let client = mesh.http_client();

    // The first request waits for the first answer.
    assert_eq!(
        get(&client, "/").await,
        (StatusCode::OK, old.addr.to_string())
    );

    // A request in flight on the old backend.
    let slow = {
        let client = client.clone();
        tokio::spawn(async move { get(&client, "/slow").await })
    };
    tokio::time::timeout(PATIENCE, old.arrived.recv())
        .await
        .expect("the slow request reaches the old backend")
        .unwrap();

    // Requests keep going while the answer changes.
    let (stop, mut stopped) = watch::channel(false);
    let steady = {
        let client = client.clone();
        let (old, new) = (old.addr.to_string(), new.addr.to_string());
        tokio::spawn(async move {
            let mut served = 0;
            while !*stopped.borrow_and_update() {
                let (status, by) = get(&client, "/").await;
                assert_eq!(status, StatusCode::OK, "a request failed across the switch");
                assert!(by == old || by == new, "served by {by}");
                served += 1;
            }
            served
        })
    };

    // The name moves. Once the resolver has been asked twice more, the
    // first of those answers has been applied.
    *resolver.ip.lock().unwrap() = new.addr.ip();
    let seen = *lookups.borrow_and_update();
    tokio::time::timeout(PATIENCE, lookups.wait_for(|n| *n >= seen + 2))
        .await
        .expect("the name is looked up again")
        .unwrap();
    for _ in 0..5 {
        assert_eq!(
            get(&client, "/").await,
            (StatusCode::OK, new.addr.to_string()),
            "after the refresh, requests land on the new backend"
        );
    }

    stop.send(true).unwrap();
    let served = steady.await.unwrap();
    assert!(served > 0);

    // The request in flight on the removed endpoint completes.
    old.gate.add_permits(1);
    let (status, by) = tokio::time::timeout(PATIENCE, slow)
        .await
        .expect("the in-flight request completes")
        .unwrap();
    assert_eq!((status, by), (StatusCode::OK, old.addr.to_string()));
}
