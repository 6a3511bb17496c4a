//! The upstream every row ends at: a hyper server on loopback answering
//! every request with `200 ok`, HTTP/1.1 and HTTP/2 prior knowledge on the
//! same port (so the direct row can be measured with both wrk and h2load).
//! It runs in its own process (`shim-bench upstream PORT`), one thread, so
//! its CPU never mixes with the bench's or a proxy's.

use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

/// What the upstream answers: small, so the rows measure the proxies'
/// per-request work and not copying.
const BODY: &[u8] = b"ok\n";

/// Serves on 127.0.0.1:`port` until killed.
pub fn run(port: u16) -> Result<(), String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("upstream runtime: {e}"))?;
    rt.block_on(async move {
        let listener = TcpListener::bind(("127.0.0.1", port))
            .await
            .map_err(|e| format!("upstream bind 127.0.0.1:{port}: {e}"))?;
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let svc = service_fn(|_req: Request<hyper::body::Incoming>| async {
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(BODY))))
                });
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    })
}
