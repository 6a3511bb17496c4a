//! The route layer: the first stage of the client stack.
//!
//! Per request it takes a snapshot of the model (in-flight requests finish on
//! the config they started with), finds the outbound service from the
//! authority (or, for a gateway, the virtual host of the listener's routes:
//! [`super::listener`]), matches the route, and then either answers locally (no route,
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

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use http::{HeaderMap, HeaderValue, Request, Response, StatusCode, Uri};
use mesh_core::model::{Model, OutboundPolicy};
use mesh_core::route::RouteTable;
use mesh_core::route::{Action, HeaderSource, RequestInfo};
use pin_project_lite::pin_project;
use tower::{Layer, Service};

use crate::body::{BoxError, MeshBody};
use crate::error::{is_grpc, MeshError, ResponseFlag};
use crate::handle::Handle;
use crate::upstream::Upstream;
use crate::ModelRx;

use super::call::{CallRef, Via};
use super::listener::ListenerRoutes;
use super::routed::Routed;
use super::snapshot::{self, RouteCache};
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
    fn header(&self, name: &str) -> Option<std::borrow::Cow<'_, str>> {
        // A value that is not visible ASCII reads as absent rather than as
        // a lossy string a route could be matched against.
        mesh_core::matcher::join_values(self.0.get_all(name).iter().map_while(|v| v.to_str().ok()))
    }
}

/// What the route stage decided for one request.
enum Decision {
    /// Answer now.
    Local(Response<MeshBody>),
    /// Forward.
    Forward(Upstream),
}

#[cold]
fn no_route(reason: String, status: StatusCode, grpc: bool) -> Decision {
    Decision::Local(
        MeshError::new(ResponseFlag::NoRoute, reason)
            .with_status(status)
            .into_response(grpc),
    )
}

/// The decision for a host the registry does not know: 503 NR under
/// REGISTRY_ONLY, the passthrough cluster under ALLOW_ANY.
// The rare paths of `decide` are out of line, so its common path fits in
// fewer instruction cache lines.
#[cold]
#[inline(never)]
fn unknown_host(model: &Handle<Model>, auth: &target::Authority<'_>, grpc: bool) -> Decision {
    match model.mesh.outbound_policy {
        OutboundPolicy::RegistryOnly => no_route(
            format!(
                "no route to {}: not in the mesh registry and outboundTrafficPolicy is REGISTRY_ONLY",
                auth.raw
            ),
            StatusCode::SERVICE_UNAVAILABLE,
            grpc,
        ),
        OutboundPolicy::AllowAny => Decision::Forward(Upstream {
            cluster: Arc::from(Upstream::PASSTHROUGH),
            host: Arc::from(auth.host),
            port: auth.port,
            subset: None,
            model: model.clone(),
            attempt: 1,
            tried: Arc::default(),
            routed: Some(Routed {
                table: None,
                route_index: 0,
                destination_index: 0,
                port: auth.port,
                grpc,
            }),
        }),
    }
}

/// 404 NR: no rule of the service's routes matched the request.
#[cold]
#[inline(never)]
fn no_rule(
    model: &Model,
    table: &RouteTable,
    auth: &target::Authority<'_>,
    svc_port: u16,
    info: &RequestInfo<'_>,
    grpc: bool,
) -> Decision {
    let host = target::resolve(model, auth.host, auth.port).map_or(auth.host, |s| &s.host);
    no_route(
        format!(
            "no route: no rule of {} matched {} {} for {host}:{svc_port}",
            table
                .virtual_service
                .as_deref()
                .unwrap_or("the default route"),
            info.method,
            info.path,
        ),
        StatusCode::NOT_FOUND,
        grpc,
    )
}

/// 503 NR: the matched rule's destinations all weigh zero.
#[cold]
#[inline(never)]
fn no_weight(table: &RouteTable, grpc: bool) -> Decision {
    no_route(
        format!(
            "no route: the matched rule of {} has no destination with a positive weight",
            table
                .virtual_service
                .as_deref()
                .unwrap_or("the default route")
        ),
        StatusCode::SERVICE_UNAVAILABLE,
        grpc,
    )
}

/// The virtual host of a gateway listener's routes that `auth` names, as
/// a service to route by.
#[cold]
#[inline(never)]
fn gateway_service(
    model: &Model,
    listener: &ListenerRoutes,
    auth: &target::Authority<'_>,
) -> Option<snapshot::Service> {
    let vhost = model
        .gateway
        .as_ref()?
        .routes(&listener.name)?
        .virtual_host(auth.host)?;
    Some(snapshot::Service {
        routes: Handle::new(vhost.routes.clone()),
        port: listener.port,
    })
}

/// 404 NR: no virtual host of the gateway listener's routes serves the
/// host (Envoy's answer).
#[cold]
#[inline(never)]
fn no_virtual_host(
    listener: &ListenerRoutes,
    auth: &target::Authority<'_>,
    grpc: bool,
) -> Decision {
    no_route(
        format!(
            "no route: no virtual host of the gateway's route configuration {} serves host {}",
            listener.name, auth.host
        ),
        StatusCode::NOT_FOUND,
        grpc,
    )
}

/// Routes `req` against `model` (`cache`: this thread's resolutions
/// against it), rewriting it in place when it is forwarded.
fn decide(
    model: &Handle<Model>,
    cache: &mut RouteCache,
    req: &mut Request<MeshBody>,
    grpc: bool,
) -> Decision {
    let Some(auth) = target::authority(req) else {
        return no_route(
            "no route: the request has neither a URI authority nor a Host header".into(),
            StatusCode::SERVICE_UNAVAILABLE,
            grpc,
        );
    };
    let default_port = if auth.explicit_port {
        auth.port
    } else {
        target::default_port(req)
    };
    let svc = match req.extensions().get::<ListenerRoutes>() {
        Some(listener) => match gateway_service(model, listener, &auth) {
            Some(svc) => svc,
            None => return no_virtual_host(listener, &auth, grpc),
        },
        None => match cache.service(model, &auth, default_port) {
            Some(svc) => svc,
            None => return unknown_host(model, &auth, grpc),
        },
    };
    let table = svc.routes;
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
        return no_rule(model, &table, &auth, svc_port, &info, grpc);
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
        return no_weight(&table, grpc);
    };
    let destination_index = weighted
        .destinations
        .iter()
        .position(|d| std::ptr::eq(d, dest))
        .unwrap_or(0);
    let port = dest.port.unwrap_or(svc_port);
    let mut upstream = cache.names(dest, port).upstream(port, model);
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
    upstream.routed = Some(Routed {
        table: Some(table),
        route_index,
        destination_index,
        port,
        grpc,
    });
    Decision::Forward(upstream)
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
    type Future = RouteFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<MeshBody>) -> Self::Future {
        route_call(Via::Ready(&mut self.inner), &self.model, req)
    }
}

impl<S> CallRef for RouteService<S>
where
    S: CallRef + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    fn call_ref(&self, req: Request<MeshBody>) -> Self::Future {
        route_call(Via::Shared(&self.inner, S::call_ref), &self.model, req)
    }
}

fn route_call<S>(
    via: Via<'_, S>,
    model: &ModelRx,
    mut req: Request<MeshBody>,
) -> RouteFuture<S::Future>
where
    S: Service<Request<MeshBody>, Response = Response<MeshBody>, Error = BoxError>,
{
    let grpc = is_grpc(&req);
    let decision =
        snapshot::with_latest(model, |model, cache| decide(model, cache, &mut req, grpc));
    let upstream = match decision {
        Decision::Local(resp) => {
            return RouteFuture {
                inner: None,
                local: Some(Box::new(resp)),
                grpc,
                table: None,
                route_index: 0,
                destination_index: 0,
            }
        }
        Decision::Forward(u) => u,
    };
    // The table rides along for the response header operations only when
    // the route has some.
    let (table, route_index, destination_index) = match &upstream.routed {
        Some(r) if r.route().is_some_and(has_response_ops) => {
            (r.table.clone(), r.route_index, r.destination_index)
        }
        _ => (None, 0, 0),
    };
    req.extensions_mut().insert(upstream);
    RouteFuture {
        inner: Some(via.call(req)),
        local: None,
        grpc,
        table,
        route_index,
        destination_index,
    }
}

/// True when `route` or one of its destinations changes response headers.
fn has_response_ops(route: &mesh_core::route::Route) -> bool {
    !route.response_headers.is_empty()
        || route
            .destinations()
            .iter()
            .any(|d| !d.response_headers.is_empty())
}

pin_project! {
    /// The response future of [`RouteService`]: a local answer (no route,
    /// redirect, direct response), or the upstream's response with the
    /// route's response header operations applied and errors turned into
    /// responses carrying their flag.
    pub struct RouteFuture<F> {
        #[pin]
        inner: Option<F>,
        // Boxed: local answers are rare, and a future this size is moved
        // through the layers above.
        local: Option<Box<Response<MeshBody>>>,
        grpc: bool,
        table: Option<Handle<RouteTable>>,
        route_index: usize,
        destination_index: usize,
    }
}

impl<F> Future for RouteFuture<F>
where
    F: Future<Output = Result<Response<MeshBody>, BoxError>>,
{
    type Output = Result<Response<MeshBody>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Some(resp) = this.local.take() {
            return Poll::Ready(Ok(*resp));
        }
        let Some(inner) = this.inner.as_pin_mut() else {
            return Poll::Ready(Err("route future polled after completion".into()));
        };
        let mut resp = match ready!(inner.poll(cx)) {
            Ok(r) => r,
            Err(e) => errors::mesh_error_of(&e).into_response(*this.grpc),
        };
        let route = this
            .table
            .as_ref()
            .and_then(|t| t.routes.get(*this.route_index));
        if let Some(route) = route {
            if let Some(d) = route.destinations().get(*this.destination_index) {
                headers::apply(&d.response_headers, resp.headers_mut());
            }
            headers::apply(&route.response_headers, resp.headers_mut());
        }
        Poll::Ready(Ok(resp))
    }
}
