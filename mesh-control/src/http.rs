//! meshd's HTTP port (istiod's 15014): `/healthz`, `/ready`, `/metrics`
//! and the `/debug/*` views, on hyper 1 (HTTP/1.1), served from a thread
//! of its own (see [`spawn`]).

use mesh_core::exposition::{wants_openmetrics, CLASSIC_CONTENT_TYPE, OPENMETRICS_CONTENT_TYPE};
use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};

use crate::controller::Controller;
use crate::debug;

/// What the handlers read.
#[derive(Debug, Clone)]
pub struct HttpState {
    /// The control plane.
    pub ctl: Controller,
    /// The watched directory (shown in configz).
    pub config_dir: PathBuf,
    /// True once the xDS port accepts connections.
    pub xds_serving: Arc<AtomicBool>,
    /// The Kubernetes source's store, when it is one.
    pub kube: Option<crate::kube::KubeStore>,
    /// True while this replica leads (Kubernetes source only).
    pub leader: Option<watch::Receiver<bool>>,
}

impl HttpState {
    /// Ready: a config is loaded and the xDS port is serving.
    pub fn ready(&self) -> bool {
        self.xds_serving.load(Ordering::Acquire) && self.ctl.generation().is_some()
    }
}

fn text(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    r
}

fn json(v: &impl serde::Serialize) -> Response<Full<Bytes>> {
    match serde_json::to_string_pretty(v) {
        Ok(s) => text(StatusCode::OK, "application/json", s + "\n"),
        Err(e) => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            "text/plain; charset=utf-8",
            format!("could not encode the view as JSON: {e}\n"),
        ),
    }
}

/// Answers one request.
pub fn handle(state: &HttpState, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain; charset=utf-8",
            "only GET is served here\n".into(),
        );
    }
    match req.uri().path() {
        "/healthz" => text(StatusCode::OK, "text/plain; charset=utf-8", "ok\n".into()),
        "/ready" => {
            if state.ready() {
                text(StatusCode::OK, "text/plain; charset=utf-8", "ready\n".into())
            } else {
                let why = if state.ctl.generation().is_none() {
                    match state.ctl.rejection() {
                        Some(r) => format!("no valid configuration loaded yet:\n{}\n", r.message()),
                        None => "no configuration loaded yet\n".to_string(),
                    }
                } else {
                    "the xDS port is not serving yet\n".to_string()
                };
                text(StatusCode::SERVICE_UNAVAILABLE, "text/plain; charset=utf-8", why)
            }
        }
        "/metrics" => {
            let m = state.ctl.metrics();
            let streams: usize = state.ctl.cache().connected().iter().map(|c| c.streams).sum();
            m.connected.set(i64::try_from(streams).unwrap_or(i64::MAX));
            // OpenMetrics for a scraper that asks for it (Prometheus does),
            // the classic text format otherwise (curl, promtool), as
            // istiod serves.
            let accept = req.headers().get_all(header::ACCEPT);
            if wants_openmetrics(accept.iter().filter_map(|v| v.to_str().ok())) {
                text(StatusCode::OK, OPENMETRICS_CONTENT_TYPE, m.render())
            } else {
                text(StatusCode::OK, CLASSIC_CONTENT_TYPE, m.render_text())
            }
        }
        "/debug/configz" => json(&debug::configz_with(
            &state.ctl,
            &state.config_dir,
            state.kube.as_ref(),
            state.leader.as_ref().is_some_and(|l| *l.borrow()),
        )),
        "/debug/syncz" => json(&debug::syncz(&state.ctl)),
        "/debug/adsz" => json(&debug::adsz(&state.ctl)),
        _ => text(
            StatusCode::NOT_FOUND,
            "text/plain; charset=utf-8",
            "not found; try /healthz, /ready, /metrics, /debug/configz, /debug/syncz, /debug/adsz\n"
                .into(),
        ),
    }
}

/// Serves HTTP on `listener` from a thread of its own (a single-threaded
/// runtime) until `shutdown` turns true or its sender goes away.
///
/// Health and debug answers then never queue behind the ADS streams' work
/// on the main runtime: a readiness probe or `meshctl proxy-status` during
/// a reconnect storm is answered in milliseconds, not after a few hundred
/// stream tasks have run (linkerd2-proxy runs its admin server the same
/// way). The handlers read state behind short locks only. The receiver
/// completes when the thread has stopped.
pub fn spawn(
    listener: std::net::TcpListener,
    state: HttpState,
    shutdown: watch::Receiver<bool>,
) -> std::io::Result<oneshot::Receiver<()>> {
    listener.set_nonblocking(true)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (done, stopped) = oneshot::channel();
    std::thread::Builder::new()
        .name("meshd-http".into())
        .spawn(move || {
            rt.block_on(async move {
                match TcpListener::from_std(listener) {
                    Ok(l) => serve(l, state, shutdown).await,
                    Err(e) => tracing::error!(error = %e, "cannot serve the HTTP port"),
                }
            });
            drop(rt);
            let _ = done.send(());
        })?;
    Ok(stopped)
}

/// Serves HTTP on `listener` until `shutdown` turns true.
pub async fn serve(listener: TcpListener, state: HttpState, mut shutdown: watch::Receiver<bool>) {
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.changed() => return,
        };
        let (stream, _) = match accepted {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "HTTP accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let state = state.clone();
        let mut stop = shutdown.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req: Request<Incoming>| {
                let r = handle(&state, &req);
                async move { Ok::<_, Infallible>(r) }
            });
            let conn = http1::Builder::new().serve_connection(TokioIo::new(stream), svc);
            tokio::pin!(conn);
            tokio::select! {
                r = conn.as_mut() => {
                    if let Err(e) = r {
                        tracing::debug!(error = %e, "HTTP connection ended with an error");
                    }
                }
                _ = stop.changed() => conn.as_mut().graceful_shutdown(),
            }
        });
    }
}
