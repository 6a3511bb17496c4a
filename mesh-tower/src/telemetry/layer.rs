//! [`TelemetryLayer`]: one layer for both sides. On the client stack
//! (`reporter=source`) it sits under the route layer, where the request
//! already names its destination service; on the server stack
//! (`reporter=destination`) it is the outermost layer, so requests the
//! inbound layers refuse (403, 401, 429) are counted too.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Instant;

use http::{Request, Response};
use http_body::Body;
use mesh_core::telemetry::TelemetryPolicy;
use mesh_core::trace::TraceContext;
use pin_project_lite::pin_project;
use tower::{Layer, Service};

use super::access_log::AccessInfo;
use super::body::{CountedRequest, Finishing, Messages, RecordedResponse, RequestCounts};
use super::exchange;
use super::plan::{self, Plan};
use super::record::{now, Flags, Outcome, Pending, Protocol};
use super::span;
use super::{Reporter, Telemetry};
use crate::body::{boxed, MeshBody};
use crate::client::call::{CallRef, Via};
use crate::error::{is_grpc, RESPONSE_FLAGS_HEADER};
use crate::handle::Handle;

static FLAGS: http::HeaderName = http::HeaderName::from_static(RESPONSE_FLAGS_HEADER);
use crate::server::ConnectionInfo;
use crate::upstream::{ServedBy, Upstream};

/// Adds telemetry for one side; without a [`Telemetry`] it adds nothing.
#[derive(Debug, Clone)]
pub struct TelemetryLayer {
    telemetry: Option<Telemetry>,
    reporter: Reporter,
}

impl TelemetryLayer {
    /// A layer reporting as `reporter` into `telemetry`.
    pub fn new(telemetry: Option<Telemetry>, reporter: Reporter) -> Self {
        Self {
            telemetry,
            reporter,
        }
    }
}

impl<S> Layer<S> for TelemetryLayer {
    type Service = TelemetryService<S>;

    fn layer(&self, inner: S) -> TelemetryService<S> {
        TelemetryService {
            inner,
            telemetry: self.telemetry.clone(),
            reporter: self.reporter,
        }
    }
}

/// The service [`TelemetryLayer`] makes.
#[derive(Debug, Clone)]
pub struct TelemetryService<S> {
    inner: S,
    telemetry: Option<Telemetry>,
    reporter: Reporter,
}

impl<S, E> Service<Request<MeshBody>> for TelemetryService<S>
where
    S: Service<Request<MeshBody>, Response = Response<MeshBody>, Error = E>,
{
    type Response = Response<MeshBody>;
    type Error = E;
    type Future = TelemetryFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), E>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<MeshBody>) -> Self::Future {
        telemetry_call(
            Via::Ready(&mut self.inner),
            self.telemetry.as_ref(),
            self.reporter,
            req,
        )
    }
}

impl<S> CallRef for TelemetryService<S>
where
    S: CallRef,
{
    fn call_ref(&self, req: Request<MeshBody>) -> Self::Future {
        telemetry_call(
            Via::Shared(&self.inner, S::call_ref),
            self.telemetry.as_ref(),
            self.reporter,
            req,
        )
    }
}

fn telemetry_call<S: Service<Request<MeshBody>>>(
    via: Via<'_, S>,
    telemetry: Option<&Telemetry>,
    reporter: Reporter,
    req: Request<MeshBody>,
) -> TelemetryFuture<S::Future> {
    let Some(t) = telemetry else {
        return TelemetryFuture {
            inner: via.call(req),
            state: None,
        };
    };
    // The policy of the model this request runs on: the route's snapshot
    // on the client, the latest on the server. Held past this point only
    // when the plan needs it (its count is shared by every thread).
    let (plan, policy) = {
        let model;
        let policy = match (reporter, req.extensions().get::<Upstream>()) {
            (Reporter::Source, Some(up)) => &up.model().telemetry,
            _ => {
                model = t.inner.model.borrow();
                &model.telemetry
            }
        };
        let plan = Plan::cached(policy, reporter);
        let keep = plan.tagged || plan.access || plan.tracing;
        (plan, keep.then(|| plan::handle(policy)))
    };
    if plan.is_off() {
        return TelemetryFuture {
            inner: via.call(req),
            state: None,
        };
    }
    start(via, t, reporter, plan, policy, req)
}

/// The request path of a request whose policy reports something.
fn start<S: Service<Request<MeshBody>>>(
    via: Via<'_, S>,
    t: &Telemetry,
    reporter: Reporter,
    plan: Plan,
    policy: Option<Handle<TelemetryPolicy>>,
    mut req: Request<MeshBody>,
) -> TelemetryFuture<S::Future> {
    let start = Instant::now();
    let protocol = if is_grpc(&req) {
        Protocol::Grpc
    } else {
        Protocol::Http
    };
    if plan.access || plan.tracing {
        span::ensure_request_id(req.headers_mut());
    }
    // Logs and tag overrides read the request's details; a span does only
    // when it is sampled (decided below).
    let mut access = (plan.access || plan.tagged).then(|| Box::new(AccessInfo::of(&req, now())));
    let (service, peer, principal, mtls, exchange, span_name) = match reporter {
        Reporter::Source => {
            let up = req.extensions().get::<Upstream>();
            let service = up.map_or_else(|| t.inner.unknown.clone(), |u| u.host.clone());
            let exchange = up.is_some_and(|u| t.exchange_with(u));
            let cluster = up.map_or(0, |u| Arc::as_ptr(&u.cluster).cast::<u8>() as usize);
            let span_name = up.map(|u| (u.host.clone(), u.port));
            if let (Some(a), Some(u)) = (access.as_mut(), up) {
                a.upstream_cluster = Some(u.cluster.to_string());
                a.route_name = u
                    .routed
                    .as_ref()
                    .and_then(|r| r.route())
                    .and_then(|r| r.name.clone());
            }
            if exchange {
                t.inner.local_meta.insert(req.headers_mut());
            }
            (
                service,
                None,
                None,
                false,
                exchange.then_some(cluster),
                span_name,
            )
        }
        Reporter::Destination => {
            let peer = exchange::take(req.headers_mut());
            let exchange = peer.is_some().then_some(0);
            let conn = req.extensions().get::<ConnectionInfo>();
            let principal = conn
                .and_then(|c| c.identity.as_ref())
                .map(|id| id.uri_arc());
            let mtls = principal.is_some();
            let port = conn.map(|c| c.port);
            if let (Some(a), Some(c)) = (access.as_mut(), conn) {
                a.downstream_local = Some(c.local_addr);
                a.downstream_remote = Some(c.peer_addr);
                a.server_name = c.sni.clone();
                a.upstream_cluster = Some(format!("inbound|{}||", c.port));
            }
            let service = t.served_service(&req);
            let span_name = Some((service.clone(), port.unwrap_or(0)));
            (service, peer, principal, mtls, exchange, span_name)
        }
    };
    let span = if let Some(policy) = policy.as_ref().filter(|_| plan.tracing) {
        let tracing = &policy.direction(plan::direction(reporter)).tracing;
        let app_context = req.extensions().get::<TraceContext>().cloned();
        let name = || match span_name {
            Some((host, port)) if port != 0 => format!("{host}:{port}/*"),
            Some((host, _)) => format!("{host}/*"),
            None => "unknown".to_string(),
        };
        let (ctx, span) = span::start(t, tracing, name, req.headers_mut(), app_context.as_ref());
        // The app behind the server continues this context; on the client
        // it is in the headers going out.
        if reporter == Reporter::Destination {
            req.extensions_mut().insert(ctx);
        }
        span
    } else {
        None
    };
    if span.is_some() && access.is_none() {
        let mut a = AccessInfo::of(&req, now());
        if let Some(c) = req.extensions().get::<ConnectionInfo>() {
            a.downstream_local = Some(c.local_addr);
            a.downstream_remote = Some(c.peer_addr);
        }
        if let Some(u) = req.extensions().get::<Upstream>() {
            a.upstream_cluster = Some(u.cluster.to_string());
        }
        access = Some(Box::new(a));
    }
    let request_bytes = req.body().size_hint().exact();
    let counts = if request_bytes.is_none() || protocol == Protocol::Grpc {
        let counts = Arc::new(RequestCounts::default());
        let grpc = protocol == Protocol::Grpc;
        req = req.map(|b| boxed(CountedRequest::new(b, counts.clone(), grpc)));
        Some(counts)
    } else {
        None
    };
    let pending = Pending {
        telemetry: t.handle(),
        reporter,
        plan,
        policy: policy.filter(|_| plan.tagged || plan.access),
        start,
        protocol,
        service,
        peer,
        principal,
        mtls,
        request_bytes: if counts.is_some() {
            None
        } else {
            request_bytes
        },
        access,
        span,
    };
    TelemetryFuture {
        inner: via.call(req),
        state: Some(Box::new(Started {
            pending,
            counts,
            exchange,
        })),
    }
}

/// A request's telemetry between its call and its response head.
struct Started {
    pending: Pending,
    counts: Option<Arc<RequestCounts>>,
    /// Peer metadata is exchanged with the other end: on the client, with
    /// the cluster at this address (see `Telemetry::exchange_with`).
    exchange: Option<usize>,
}

pin_project! {
    /// The response future of [`TelemetryService`].
    pub struct TelemetryFuture<F> {
        #[pin]
        inner: F,
        state: Option<Box<Started>>,
    }
}

impl<F, E> Future for TelemetryFuture<F>
where
    F: Future<Output = Result<Response<MeshBody>, E>>,
{
    type Output = Result<Response<MeshBody>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = ready!(this.inner.poll(cx));
        let Some(started) = this.state.take() else {
            return Poll::Ready(result);
        };
        Poll::Ready(match result {
            Ok(resp) => Ok(respond(*started, resp)),
            Err(e) => {
                let Started {
                    pending, counts, ..
                } = *started;
                Finishing {
                    pending,
                    outcome: outcome(0, None, Flags::NONE),
                    counts,
                    messages: None,
                }
                .finish_now();
                Err(e)
            }
        })
    }
}

fn outcome(code: u16, grpc_status: Option<u16>, flags: Flags) -> Outcome {
    Outcome {
        code,
        grpc_status,
        flags,
        request_bytes: 0,
        response_bytes: 0,
        request_messages: 0,
        response_messages: 0,
    }
}

fn respond(started: Started, mut resp: Response<MeshBody>) -> Response<MeshBody> {
    let Started {
        mut pending,
        counts,
        exchange,
    } = started;
    let flags = resp
        .headers()
        .get(&FLAGS)
        .map_or(Flags::NONE, |v| Flags::new(v.as_bytes()));
    let grpc_status = super::grpc_status(resp.headers());
    match pending.reporter {
        Reporter::Source => {
            if let Some(cluster) = exchange {
                let peer = exchange::take(resp.headers_mut());
                super::exchange_answered(cluster, peer.is_some());
                pending.peer = peer;
            }
            if let Some(a) = pending.access.as_mut() {
                a.upstream_host = resp.extensions().get::<ServedBy>().map(|s| s.0);
            }
        }
        Reporter::Destination => {
            if exchange.is_some() {
                pending.telemetry.local_meta.insert(resp.headers_mut());
            }
        }
    }
    let grpc = pending.protocol == Protocol::Grpc;
    let state = Finishing {
        pending,
        outcome: outcome(resp.status().as_u16(), grpc_status, flags),
        counts,
        messages: grpc.then(Messages::default),
    };
    if resp.body().is_end_stream() {
        state.finish_now();
        return resp;
    }
    resp.map(|b| boxed(RecordedResponse::new(b, state)))
}
