//! Helpers shared by the examples: small real HTTP backends on loopback and
//! a request loop, so each example reads as what a user would write.

pub mod canary;
pub mod legacy;
pub mod mesh_demo;
pub mod resilience;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;

/// The error type of the examples.
pub type Error = Box<dyn std::error::Error + Send + Sync>;

/// How a backend answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behaviour {
    /// 200 with the backend's name as the body.
    Healthy,
    /// 503 to every request.
    Failing,
}

/// A backend server on 127.0.0.1 that answers with its name.
#[derive(Debug, Clone)]
pub struct Backend {
    /// Its address.
    pub addr: SocketAddr,
    /// Requests it has served.
    pub served: Arc<AtomicU64>,
}

/// Starts a backend named `name` on an ephemeral loopback port.
pub async fn backend(name: &'static str, behaviour: Behaviour) -> std::io::Result<Backend> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let served = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&served);
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let counter = Arc::clone(&counter);
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |_req: Request<Incoming>| {
                    counter.fetch_add(1, Ordering::Relaxed);
                    let status = match behaviour {
                        Behaviour::Healthy => StatusCode::OK,
                        Behaviour::Failing => StatusCode::SERVICE_UNAVAILABLE,
                    };
                    let mut resp = Response::new(Full::new(Bytes::from_static(name.as_bytes())));
                    *resp.status_mut() = status;
                    async move { Ok::<_, Infallible>(resp) }
                });
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Ok(Backend { addr, served })
}
