//! Serving HTTP on a gateway connection (plaintext, or after TLS
//! termination): hyper-util's auto server (HTTP/1.1 and HTTP/2, h2c on
//! plaintext), each request handed to the SDK's outbound client stack
//! with the listener's route configuration attached
//! ([`ListenerRoutes`]), so the gateway-bound VirtualServices route it
//! with the same splits, retries, timeouts and faults as any client.
//!
//! Before that, [`prepare`] decides what only the edge decides: the
//! `httpsRedirect` 301 of a plaintext server, the request's form (origin
//! form with a `Host` header, whatever HTTP version it came in) and the
//! forwarding headers (`x-forwarded-for`, `x-forwarded-proto`). Not here:
//! accepting, TLS and SNI (`listener`).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use futures_util::FutureExt;
use http::{header, HeaderValue, Request, Response, StatusCode, Uri};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use mesh_core::model::Model;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;

use crate::balance::SourceIp;
use crate::body::{self, BoxError, MeshBody};
use crate::client::listener::ListenerRoutes;
use crate::client::target;
use crate::error::{is_grpc, MeshError, ResponseFlag};
use crate::mesh::MeshClient;
use crate::server::authz::BoxFuture;

/// What a connection's requests share.
#[derive(Clone)]
pub(crate) struct HttpListener {
    /// The outbound stack.
    pub client: MeshClient,
    /// The route configuration and Gateway port.
    pub routes: ListenerRoutes,
    /// True after TLS termination.
    pub tls: bool,
    /// The downstream's address.
    pub peer: SocketAddr,
    /// The live model (for `httpsRedirect`).
    pub model: crate::ModelRx,
}

/// What the edge decided for a request.
#[derive(Debug)]
pub(crate) enum Edge {
    /// Answer now (the HTTPS redirect).
    Answer(Response<MeshBody>),
    /// Route it.
    Route(Request<MeshBody>),
}

/// Decides a request at the edge (see the module docs): pure but for the
/// model it reads.
pub(crate) fn prepare(l: &HttpListener, model: &Model, mut req: Request<MeshBody>) -> Edge {
    normalize(&mut req);
    if !l.tls {
        if let Some(location) = https_redirect(model, &l.routes, &req) {
            let mut resp = Response::new(body::empty());
            *resp.status_mut() = StatusCode::MOVED_PERMANENTLY;
            if let Ok(v) = HeaderValue::from_str(&location) {
                resp.headers_mut().insert(header::LOCATION, v);
            }
            return Edge::Answer(resp);
        }
    }
    let h = req.headers_mut();
    let ip = l.peer.ip().to_string();
    let xff = match h.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
        Some(prev) if !prev.is_empty() => format!("{prev}, {ip}"),
        _ => ip,
    };
    if let Ok(v) = HeaderValue::from_str(&xff) {
        h.insert("x-forwarded-for", v);
    }
    h.insert(
        "x-forwarded-proto",
        HeaderValue::from_static(if l.tls { "https" } else { "http" }),
    );
    req.extensions_mut().insert(l.routes.clone());
    req.extensions_mut().insert(SourceIp(l.peer.ip()));
    Edge::Route(req)
}

/// Origin form with the authority in `Host`: HTTP/2 requests arrive in
/// absolute form, and the route stage should see one shape.
fn normalize(req: &mut Request<MeshBody>) {
    let Some(authority) = req.uri().authority().cloned() else {
        return;
    };
    if !req.headers().contains_key(header::HOST) {
        if let Ok(v) = HeaderValue::from_str(authority.as_str()) {
            req.headers_mut().insert(header::HOST, v);
        }
    }
    let pq = req
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_string();
    if let Ok(uri) = pq.parse::<Uri>() {
        *req.uri_mut() = uri;
    }
}

/// The `https://` location for a request whose virtual host requires TLS.
fn https_redirect(
    model: &Model,
    routes: &ListenerRoutes,
    req: &Request<MeshBody>,
) -> Option<String> {
    let auth = target::authority(req)?;
    let vhost = model
        .gateway
        .as_ref()?
        .routes(&routes.name)?
        .virtual_host(auth.host)?;
    if !vhost.https_redirect {
        return None;
    }
    let pq = req.uri().path_and_query().map_or("/", |p| p.as_str());
    Some(format!("https://{}{pq}", auth.host))
}

/// Serves HTTP on `io` until it ends, or until `drain` starts and the
/// connection finishes gracefully.
pub(crate) async fn serve<I>(l: HttpListener, io: I, drain: watch::Receiver<bool>)
where
    I: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let peer = l.peer;
    let l = Arc::new(l);
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        dispatch(&l, req.map(body::boxed))
    });
    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    let conn = builder.serve_connection(TokioIo::new(io), service);
    tokio::pin!(conn);
    let result = tokio::select! {
        r = conn.as_mut() => r,
        () = super::drained(drain) => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        tracing::debug!(target: "mesh::gateway", %peer, error = %e, "connection ended with an error");
    }
}

/// One request: the edge decision, then the client stack.
fn dispatch(
    l: &HttpListener,
    req: Request<MeshBody>,
) -> BoxFuture<Result<Response<MeshBody>, Infallible>> {
    let grpc = is_grpc(&req);
    let model = l.model.borrow().clone();
    match prepare(l, &model, req) {
        Edge::Answer(resp) => Box::pin(std::future::ready(Ok(resp))),
        Edge::Route(req) => Box::pin(l.client.request(req).map(move |r| {
            Ok(match r {
                Ok(resp) => resp,
                Err(e) => local_error(e, grpc),
            })
        })),
    }
}

/// The response for an error the client stack returned instead of a
/// response (its local failures are responses already): a typed mesh
/// error keeps its flag, anything else is a 503.
fn local_error(e: BoxError, grpc: bool) -> Response<MeshBody> {
    match MeshError::find(e.as_ref()) {
        Some(m) => m.into_response(grpc),
        None => MeshError::new(ResponseFlag::UpstreamConnectionFailure, e.to_string())
            .into_response(grpc),
    }
}
