//! The client side's routing stage: everything that decides where an
//! outbound request goes and how it is retried, timed out, faulted,
//! mirrored and rewritten, as Tower layers executing the compiled model.
//!
//! The stack, outermost first:
//!
//! 1. [`route`]: model snapshot, service lookup by authority (or, on a
//!    gateway, virtual host lookup in the listener's routes: [`listener`]), route match,
//!    local answers (NR, redirect, direct response), weighted split,
//!    rewrites, header operations;
//! 2. telemetry ([`crate::telemetry`]): Istio's metrics and access logs,
//!    `reporter="source"`, once per request whatever its retries;
//! 3. [`mirror`]: fire-and-forget copies by percentage;
//! 4. [`timeout`]: route timeout (and `grpc-timeout`) over all attempts;
//! 5. [`retry`]: attempts, per-try timeout, backoff, body replay,
//!    concurrent-retry limit and retry budget;
//! 6. [`fault`]: delay/abort per attempt (inside the retry loop, unlike
//!    Istio; see that module);
//!
//! then the endpoint stage ([`crate::balance`]) or any inner service that
//! reads the [`crate::Upstream`] extension. [`layer`] assembles it; each
//! layer is also usable alone (they read the [`Routed`] extension the route
//! layer sets and pass requests without it through untouched).
//!
//! Not here: choosing and connecting to an endpoint.
//!
//! # Assembling
//!
//! ```ignore
//! use mesh_tower::client::{self, ClientOptions};
//! // `model_rx`: the watch of the compiled model; `endpoints`: the endpoint
//! // stage (any Clone service reading the `Upstream` extension).
//! let client = client::layer(model_rx, ClientOptions::default()).boxed(endpoints);
//! let resp = client.oneshot(request).await?; // Request<MeshBody> -> Response<MeshBody>
//! ```
//!
//! Failures are answered as Envoy's local replies (status, flag header
//! `x-mesh-response-flags`, reason), gRPC-shaped for gRPC requests, so the
//! service's error is reserved for the caller's own misuse.
//!
//! # Differences from Istio/Envoy, on purpose
//!
//! - Faults are decided per attempt, inside the retry loop, and coexist with
//!   retries and timeouts on the same route (Istio drops retries/timeouts on
//!   faulted routes and faults once per request).
//! - A retry needs the whole request body: a body ready at once, or a stream
//!   that ended within the limit before the retry decision (copied while it
//!   streams, never held back). Envoy can also retry a request whose body is
//!   still arriving.
//! - `grpc-status` is also read from trailers (Envoy only reads it from
//!   headers once the response has started): the first response frame is
//!   awaited and frames already available are read, so a live stream is
//!   never held; a status in trailers arriving later is not seen.
//! - The retry budget counts requests in flight that have a retry policy
//!   through this stack (Envoy counts all the cluster's active and pending
//!   requests); it applies in addition to `maxRetries`.
//! - Passthrough requests (unknown host under ALLOW_ANY) are not retried and
//!   have no timeout unless [`ClientOptions::default_timeout`] is set.

pub(crate) mod call;
mod deadline;
pub mod errors;
pub mod fault;
pub mod headers;
pub mod listener;
pub mod local;
pub mod mirror;
mod names;
pub(crate) mod replay;
pub mod retry;
pub(crate) mod rng;
pub mod route;
pub mod routed;
mod snapshot;
pub mod target;
pub(crate) mod tee;
pub mod timeout;

#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use mesh_core::retry::RetryBudget;
use tower::util::BoxCloneService;
use tower::{Layer, Service};

use crate::body::{BoxError, MeshBody};
use crate::telemetry::{Reporter, Telemetry, TelemetryLayer, TelemetryService};
use crate::ModelRx;

pub use fault::{FaultLayer, FaultService};
pub use listener::ListenerRoutes;
pub use mirror::{MirrorLayer, MirrorService};
pub use retry::{RetryConfig, RetryLayer, RetryService, RetryState};
pub use route::{RouteLayer, RouteService};
pub use routed::Routed;
pub use timeout::{TimeoutLayer, TimeoutService};

/// Options of the client stack.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ClientOptions {
    /// Largest request body buffered for retries (default 64 KiB); larger
    /// or streaming bodies are sent once and never retried.
    pub retry_body_limit: usize,
    /// Largest response buffered to read gRPC trailers for a retry decision
    /// (default 64 KiB).
    pub retry_response_buffer_limit: usize,
    /// Largest request body mirrored (default 64 KiB).
    pub mirror_body_limit: usize,
    /// The retry budget per cluster (default: Envoy's 20% of active
    /// requests, at least 3); `None` disables it.
    pub retry_budget: Option<RetryBudget>,
    /// Timeout for routes without one (default none, as in Istio).
    pub default_timeout: Option<Duration>,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            retry_body_limit: 64 * 1024,
            retry_response_buffer_limit: 64 * 1024,
            mirror_body_limit: 64 * 1024,
            retry_budget: Some(RetryBudget::default()),
            default_timeout: None,
        }
    }
}

/// The assembled stack around an endpoint service `S`.
pub type ClientService<S> =
    RouteService<TelemetryService<MirrorService<TimeoutService<RetryService<FaultService<S>>>, S>>>;

/// The boxed client service.
pub type BoxClient = BoxCloneService<Request<MeshBody>, Response<MeshBody>, BoxError>;

/// Builds [`ClientService`]s: the whole routing stage as one layer. Clones
/// share the retry counters (concurrent retries and budget per cluster).
#[derive(Debug, Clone)]
pub struct ClientLayer {
    model: ModelRx,
    options: ClientOptions,
    retry_state: Arc<RetryState>,
    telemetry: Option<Telemetry>,
}

/// The routing stage reading the model from `model`.
pub fn layer(model: ModelRx, options: ClientOptions) -> ClientLayer {
    ClientLayer {
        model,
        options,
        retry_state: Arc::default(),
        telemetry: None,
    }
}

impl ClientLayer {
    /// Reports every request (`reporter="source"`) to `telemetry`.
    pub fn with_telemetry(mut self, telemetry: Telemetry) -> Self {
        self.telemetry = Some(telemetry);
        self
    }

    /// Reports nothing.
    pub fn without_telemetry(mut self) -> Self {
        self.telemetry = None;
        self
    }

    /// The retry counters this layer's services share.
    pub fn retry_state(&self) -> &Arc<RetryState> {
        &self.retry_state
    }

    /// The stack around `inner`, boxed.
    pub fn boxed<S>(&self, inner: S) -> BoxClient
    where
        S: Service<Request<MeshBody>, Response = Response<MeshBody>, Error = BoxError>
            + Clone
            + Send
            + 'static,
        S::Future: Send + 'static,
    {
        BoxCloneService::new(self.layer(inner))
    }
}

impl<S: Clone> Layer<S> for ClientLayer {
    type Service = ClientService<S>;

    fn layer(&self, inner: S) -> ClientService<S> {
        let o = &self.options;
        let attempts = FaultLayer.layer(inner.clone());
        let retries = RetryLayer::with_state(
            RetryConfig {
                body_limit: o.retry_body_limit,
                response_buffer_limit: o.retry_response_buffer_limit,
                budget: o.retry_budget,
            },
            self.retry_state.clone(),
        )
        .layer(attempts);
        let timed = TimeoutLayer::new(o.default_timeout).layer(retries);
        let mirrored = MirrorLayer::new(inner, o.mirror_body_limit).layer(timed);
        let reported =
            TelemetryLayer::new(self.telemetry.clone(), Reporter::Source).layer(mirrored);
        RouteLayer::new(self.model.clone()).layer(reported)
    }
}
