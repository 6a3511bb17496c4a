//! The shim's own ports, as Istio's sidecar has them:
//!
//! - admin (127.0.0.1:15000): `/config_dump` (the compiled model and the
//!   xDS sync state as JSON), `/ready`, `/logging`, `POST /quitquitquit`
//!   (shut down, for Jobs whose app has finished), `/stats/prometheus`;
//! - merged metrics (15020): `/stats/prometheus`, the mesh's series and
//!   whatever the app registered in the same registry;
//! - readiness (15021): `/healthz/ready`, 200 once config and certificate
//!   are in, 503 before and while draining.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use http::{header, Method, Request, Response, StatusCode};
use mesh_tower::body::{full, MeshBody};
use mesh_tower::server::PlainServer;
use mesh_tower::telemetry::STATS_PATH;
use serde_json::json;
use tokio::net::TcpListener;

use crate::app::Lifecycle;

fn text(status: StatusCode, body: impl Into<String>) -> Response<MeshBody> {
    let mut r = Response::new(full(body.into()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

fn ready(life: &Lifecycle) -> Response<MeshBody> {
    if life.is_ready() {
        text(StatusCode::OK, "ready\n")
    } else if life.is_shutting_down() {
        text(StatusCode::SERVICE_UNAVAILABLE, "draining\n")
    } else {
        text(
            StatusCode::SERVICE_UNAVAILABLE,
            "waiting for the first config and certificate\n",
        )
    }
}

fn metrics(life: &Lifecycle) -> Response<MeshBody> {
    match life.mesh() {
        Some(mesh) => {
            let mut r = text(StatusCode::OK, mesh.metrics().render());
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            r
        }
        None => text(StatusCode::SERVICE_UNAVAILABLE, "no mesh yet\n"),
    }
}

/// The `/config_dump` document.
pub fn config_dump(life: &Lifecycle) -> serde_json::Value {
    let Some(mesh) = life.mesh() else {
        return json!({"ready": false});
    };
    let model =
        serde_json::to_value(&*mesh.current()).unwrap_or_else(|e| json!({"error": e.to_string()}));
    let xds = mesh.xds_status().map(|s| {
        json!({
            "connected": s.connected,
            "last_error": s.last_error,
            "serving_cache": s.serving_cache,
            "models_published": s.models_published,
            "types": s.types.iter().map(|(t, sync)| (t.clone(), json!({
                "acked_version": sync.acked_version,
                "nacks": sync.nacks,
                "last_nack": sync.last_nack.as_ref().map(|n| format!("{n:?}")),
                "subscribed": sync.subscribed,
            }))).collect::<serde_json::Map<_, _>>(),
        })
    });
    let source = mesh
        .source_status()
        .map(|s| json!({"applied": s.applied, "rejected": s.rejected, "last_error": s.last_error}));
    let client = mesh.client();
    json!({
        "ready": life.is_ready(),
        "workload": {
            "namespace": client.namespace,
            "labels": client.labels,
            "service_account": client.service_account,
        },
        "identity": mesh.certificates().map(|c| c.current().identity().to_string()),
        "xds": xds,
        "local_source": source,
        "model": model,
    })
}

async fn admin(life: Arc<Lifecycle>, req: Request<MeshBody>) -> Response<MeshBody> {
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/config_dump") => {
            let mut r = text(
                StatusCode::OK,
                serde_json::to_string_pretty(&config_dump(&life)).unwrap_or_default(),
            );
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static("application/json"),
            );
            r
        }
        (&Method::GET, "/ready") | (&Method::GET, "/healthz/ready") => ready(&life),
        (&Method::GET, STATS_PATH) => metrics(&life),
        (&Method::POST, "/quitquitquit") => {
            life.shut_down();
            text(StatusCode::OK, "OK\n")
        }
        (_, "/logging") => logging(&req),
        (_, "/quitquitquit") => text(StatusCode::METHOD_NOT_ALLOWED, "use POST\n"),
        _ => text(
            StatusCode::NOT_FOUND,
            "admin paths: /config_dump /ready /logging /stats/prometheus POST /quitquitquit\n",
        ),
    }
}

/// `/logging?level=debug` changes the log filter; without a query it
/// shows the current one.
fn logging(req: &Request<MeshBody>) -> Response<MeshBody> {
    let level = req
        .uri()
        .query()
        .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("level=")));
    match level {
        None => text(StatusCode::OK, format!("{}\n", crate::logging::current())),
        Some(l) => match crate::logging::set(l) {
            Ok(()) => text(StatusCode::OK, format!("{l}\n")),
            Err(e) => text(StatusCode::BAD_REQUEST, format!("{e}\n")),
        },
    }
}

fn service<F, Fut>(
    life: Arc<Lifecycle>,
    f: F,
) -> impl tower::Service<
    Request<MeshBody>,
    Response = Response<MeshBody>,
    Error = Infallible,
    Future = impl std::future::Future<Output = Result<Response<MeshBody>, Infallible>> + Send,
> + Clone
       + Send
       + 'static
where
    F: Fn(Arc<Lifecycle>, Request<MeshBody>) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = Response<MeshBody>> + Send + 'static,
{
    tower::service_fn(move |req| {
        let fut = f(life.clone(), req);
        async move { Ok::<_, Infallible>(fut.await) }
    })
}

/// Serves the admin port until shutdown.
pub async fn serve_admin(listener: TcpListener, life: Arc<Lifecycle>, drain: Duration) {
    let signal = life.signaled();
    let svc = service(life, admin);
    PlainServer::new("admin")
        .drain_timeout(drain)
        .serve_with_shutdown(listener, svc, signal)
        .await;
}

/// Serves the merged metrics port until shutdown.
pub async fn serve_metrics(listener: TcpListener, life: Arc<Lifecycle>, drain: Duration) {
    let signal = life.signaled();
    let svc = service(life, |life, req: Request<MeshBody>| async move {
        if req.uri().path() == STATS_PATH {
            metrics(&life)
        } else {
            text(StatusCode::NOT_FOUND, "see /stats/prometheus\n")
        }
    });
    PlainServer::new("metrics")
        .drain_timeout(drain)
        .serve_with_shutdown(listener, svc, signal)
        .await;
}

/// Serves the readiness port until the process exits: while draining it
/// answers 503 rather than refusing connections, so a probe sees "not
/// ready" and not a crash.
pub async fn serve_ready(listener: TcpListener, life: Arc<Lifecycle>, drain: Duration) {
    let svc = service(life, |life, req: Request<MeshBody>| async move {
        if req.uri().path() == "/healthz/ready" {
            ready(&life)
        } else {
            text(StatusCode::NOT_FOUND, "see /healthz/ready\n")
        }
    });
    PlainServer::new("ready")
        .drain_timeout(drain)
        .serve_with_shutdown(listener, svc, std::future::pending())
        .await;
}
