//! The route layer: the first stage of the client stack.
//!
//! Per request it takes a snapshot of the model (in-flight requests finish on
//! the config they started with), finds the outbound service from the
//! authority, matches the route, and then either answers locally (no route,
//! redirect, direct response) or picks the weighted destination, rewrites
//! the path and authority, applies request header operations, records the
//! decision ([`Routed`]) and the first attempt's [`Upstream`], and on the way
//! back applies response header operations. Unknown hosts go to the
//! passthrough cluster under `ALLOW_ANY` and get 503 NR under
//! `REGISTRY_ONLY`. Failures of the layers below become responses here
//! (Envoy's local replies), gRPC-shaped for gRPC requests.
//!
//! Not here: retries, timeouts, mirrors and faults (the layers below read
//! [`Routed`]), and choosing an endpoint (the endpoint stage).

use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use futures_util::future::BoxFuture;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode, Uri};
use mesh_core::model::{cluster_name, Model, OutboundPolicy};
use mesh_core::route::{Action, HeaderSource, RequestInfo};
use tower::{Layer, Service};

use crate::body::{BoxError, MeshBody};
use crate::error::{is_grpc, MeshError, ResponseFlag};
use crate::upstream::Upstream;
use crate::ModelRx;

use super::routed::Routed;
use super::{errors, headers, local, rng, target};

/// Adds the route stage in front of a service.
#[derive(Debug, Clone)]
pub struct RouteLayer {
    model: ModelRx,
}

impl RouteLayer {
    /// A route layer reading the model from `model`.
    pub fn new(model: ModelRx) -> Self {
        Self { model }
    }
}

impl<S> Layer<S> for RouteLayer {
    type Service = RouteService<S>;
    fn layer(&self, inner: S) -> RouteService<S> {
        RouteService {
            inner,
            model: self.model.clone(),
        }
    }
}

/// The route stage (see the module docs).
#[derive(Debug, Clone)]
pub struct RouteService<S> {
    inner: S,
    model: ModelRx,
}

/// Request headers as the route matcher reads them.
struct Headers<'a>(&'a HeaderMap);

impl HeaderSource for Headers<'_> {
    fn header(&self, name: &str) -> Option<&str> {
        self.0.get(name).and_then(|v| v.to_str().ok())
    }
}

/// What the route stage decided for one request.
enum Decision {
    /// Answer now.
    Local(Response<MeshBody>),
    /// Forward.
    Forward(Routed, Upstream),
}

fn no_route(reason: String, status: StatusCode, grpc: bool) -> Decision {
    Decision::Local(
        MeshError::new(ResponseFlag::NoRoute, reason)
            .with_status(status)
            .into_response(grpc),
    )
}

/// Routes `req` against `model`, rewriting it in place when it is forwarded.
fn decide(model: &Arc<Model>, req: &mut Request<MeshBody>, grpc: bool) -> Decision {
    let Some(auth) = target::authority(req) else {
        return no_route(
            "no route: the request has neither a URI authority nor a Host header".into(),
            StatusCode::SERVICE_UNAVAILABLE,
            grpc,
        );
    };
    let Some(svc) = target::resolve(model, auth.host, auth.port) else {
        return match model.mesh.outbound_policy {
            OutboundPolicy::RegistryOnly => no_route(
                format!(
                    "no route to {}: not in the mesh registry and outboundTrafficPolicy is REGISTRY_ONLY",
                    auth.raw
                ),
                StatusCode::SERVICE_UNAVAILABLE,
                grpc,
            ),
            OutboundPolicy::AllowAny => Decision::Forward(
                Routed {
                    model: model.clone(),
                    table: None,
                    route_index: 0,
                    destination_index: 0,
                    port: auth.port,
                    grpc,
                },
                Upstream {
                    cluster: Upstream::PASSTHROUGH.to_string(),
                    host: auth.host.to_string(),
                    port: auth.port,
                    subset: None,
                    model: model.clone(),
                    attempt: 1,
                    tried: Arc::new(Mutex::new(Vec::new())),
                },
            ),
        };
    };
    let table = svc.routes.clone();
    let svc_port = svc.port;
    let scheme = target::scheme(req);
    let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
    let hdrs = Headers(req.headers());
    let info = RequestInfo {
        method: req.method().as_str(),
        path,
        authority: auth.raw,
        scheme,
        port: Some(auth.port),
        headers: &hdrs,
    };
    let Some((route_index, block)) = table
        .routes
        .iter()
        .enumerate()
        .find_map(|(i, r)| r.matches(&info).map(|b| (i, b)))
    else {
        return no_route(
            format!(
                "no route: no rule of {} matched {} {} for {}:{}",
                table
                    .virtual_service
                    .as_deref()
                    .unwrap_or("the default route"),
                info.method,
                info.path,
                svc.host,
                svc_port
            ),
            StatusCode::NOT_FOUND,
            grpc,
        );
    };
    let Some(route) = table.routes.get(route_index) else {
        return no_route("no route".into(), StatusCode::NOT_FOUND, grpc);
    };
    let weighted = match &route.action {
        Action::Redirect(r) => {
            return Decision::Local(local::redirect_response(r, scheme, &auth, path));
        }
        Action::DirectResponse(d) => return Decision::Local(local::direct_response(d)),
        Action::Forward(w) => w,
    };
    let Some(dest) = weighted.pick(rng::next_u64()) else {
        return no_route(
            format!(
                "no route: the matched rule of {} has no destination with a positive weight",
                table
                    .virtual_service
                    .as_deref()
                    .unwrap_or("the default route")
            ),
            StatusCode::SERVICE_UNAVAILABLE,
            grpc,
        );
    };
    let destination_index = weighted
        .destinations
        .iter()
        .position(|d| std::ptr::eq(d, dest))
        .unwrap_or(0);
    let port = dest.port.unwrap_or(svc_port);
    let upstream = Upstream {
        cluster: cluster_name(&dest.host, port, dest.subset.as_deref()),
        host: dest.host.clone(),
        port,
        subset: dest.subset.clone(),
        model: model.clone(),
        attempt: 1,
        tried: Arc::new(Mutex::new(Vec::new())),
    };
    // Rewrites, computed while the request is borrowed, applied after.
    let (new_path, new_authority) = match &route.rewrite {
        Some(rw) => (rw.rewrite_path(route, block, path), rw.authority.clone()),
        None => (None, None),
    };
    if new_path.is_some() || new_authority.is_some() {
        rewrite(req, new_path.as_deref(), new_authority.as_deref());
    }
    headers::apply(&dest.request_headers, req.headers_mut());
    headers::apply(&route.request_headers, req.headers_mut());
    Decision::Forward(
        Routed {
            model: model.clone(),
            table: Some(table.clone()),
            route_index,
            destination_index,
            port,
            grpc,
        },
        upstream,
    )
}

/// Replaces the path (with query) and/or the authority of a request. The
/// authority goes into the URI when it has one and into the `Host` header
/// when the request has one (or nothing else names the host).
fn rewrite(req: &mut Request<MeshBody>, path: Option<&str>, authority: Option<&str>) {
    let mut parts = req.uri().clone().into_parts();
    if let Some(p) = path.and_then(|p| p.parse().ok()) {
        parts.path_and_query = Some(p);
    }
    if let Some(a) = authority {
        if parts.authority.is_some() {
            if let Ok(a) = a.parse() {
                parts.authority = Some(a);
            }
        }
        let has_uri_authority = parts.authority.is_some();
        if req.headers().contains_key(http::header::HOST) || !has_uri_authority {
            if let Ok(v) = HeaderValue::from_str(a) {
                req.headers_mut().insert(http::header::HOST, v);
            }
        }
    }
    if let Ok(uri) = Uri::from_parts(parts) {
        *req.uri_mut() = uri;
    }
}

impl<S> Service<Request<MeshBody>> for RouteService<S>
where
    S: Service<Request<MeshBody>, Response = Response<MeshBody>, Error = BoxError>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Response = Response<MeshBody>;
    type Error = BoxError;
    type Future = BoxFuture<'static, Result<Response<MeshBody>, BoxError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<MeshBody>) -> Self::Future {
        let model = self.model.borrow().clone();
        let grpc = is_grpc(&req);
        let (routed, upstream) = match decide(&model, &mut req, grpc) {
            Decision::Local(resp) => return Box::pin(async move { Ok(resp) }),
            Decision::Forward(r, u) => (r, u),
        };
        req.extensions_mut().insert(upstream);
        let table = routed.table.clone();
        let (route_index, destination_index) = (routed.route_index, routed.destination_index);
        req.extensions_mut().insert(routed);
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let fut = super::call::call(&mut inner, req);
        Box::pin(async move {
            let mut resp = match fut.await {
                Ok(r) => r,
                Err(e) => errors::mesh_error_of(&e).into_response(grpc),
            };
            if let Some(route) = table.as_ref().and_then(|t| t.routes.get(route_index)) {
                if let Some(d) = route.destinations().get(destination_index) {
                    headers::apply(&d.response_headers, resp.headers_mut());
                }
                headers::apply(&route.response_headers, resp.headers_mut());
            }
            Ok(resp)
        })
    }
}
