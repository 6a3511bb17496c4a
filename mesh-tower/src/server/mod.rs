//! The inbound side: what a workload runs in front of its own HTTP/gRPC
//! service, in Istio's order.
//!
//! 0. **Telemetry** ([`crate::telemetry`]): Istio's metrics and access
//!    logs, `reporter="destination"`, for refused requests too.
//! 1. **Peer identity** ([`accept`]): each connection is accepted under the
//!    PeerAuthentication mode of its port (STRICT, PERMISSIVE with TLS
//!    detected from the first bytes, DISABLE); mTLS peers are verified with
//!    mesh-ca's SPIFFE verifier and every request carries a
//!    [`ConnectionInfo`] and, over mTLS, a [`PeerIdentity`] extension.
//! 2. **JWT authentication** ([`jwt`]): RequestAuthentication.
//! 3. **Authorization** ([`authz`]): AuthorizationPolicy with mesh-core's
//!    engine, after path normalization (the app receives the normalized
//!    path).
//! 4. **Local rate limit** ([`ratelimit`]): token buckets, 429 RL.
//! 5. The application.
//!
//! Every layer reads the current model from the [`ModelRx`] per request (and
//! the acceptor per connection), so a config change applies to the next
//! request; in-flight requests and open connections keep going.
//!
//! [`Server`] (or the [`serve`] shorthand) runs hyper-util's HTTP/1.1 + HTTP/2
//! server over accepted connections with [`InboundLayer`] around the app.
//! To use another server loop, accept with [`Acceptor`], insert the
//! [`ConnectionInfo`] into each request and wrap the app with
//! [`InboundLayer`] yourself. Opaque TCP servers call
//! [`authz::check_connection`] after accepting.
//!
//! Usage, with a rotating certificate from mesh-ca and a model channel:
//!
//! ```text
//! let tls = TlsSource::from_provider(&provider);          // mesh_ca::CertificateProvider
//! let stack = InboundLayer::new(model.clone())
//!     .with_rate_limit(RateLimitLayer::new(&limits)?);     // optional
//! Server::new(model, tls)
//!     .layer(stack)
//!     .serve(TcpListener::bind("0.0.0.0:8080").await?, app)
//!     .await?;
//! ```
//!
//! `app` is any `Service<Request<MeshBody>, Response = Response<MeshBody>>`;
//! a hyper handler or tonic `Routes` fits once its response body is mapped
//! with [`crate::body::boxed`] (e.g. `ServiceBuilder::new().map_response(|r|
//! r.map(boxed))`). The handler reads `PeerIdentity`, `JwtAuthn` and
//! `AuthzDecision` from the request extensions.
//!
//! Graceful shutdown: [`Server::serve_with_shutdown`] takes a signal
//! future (a `oneshot` receiver, `tokio::signal::ctrl_c()`, ...), stops
//! accepting when it fires and drains open connections for up to
//! [`Server::drain_timeout`].
//!
//! For an app in another process (the shim), [`LocalApp`] is the app:
//! it forwards to the app's loopback port. [`PlainServer`] serves the
//! plaintext ports the local app itself talks to, with the same drain.
//!
//! Not here: client-side mTLS origination (see [`crate::tls`]).

pub mod accept;
mod app;
pub mod authz;
pub mod identity;
pub mod jwt;
pub mod listen;
pub mod original_dst;
mod plain;
pub mod ratelimit;
mod serve;
pub mod sniff;
pub mod stream;

use tower::Layer;

pub use accept::{AcceptConfig, AcceptError, Acceptor, TlsSource};
pub use app::{strip_hop_by_hop, LocalApp};
pub use authz::{
    check_connection, AuthzConfig, AuthzDecision, AuthzLayer, AuthzService, ExternalAuthorizer,
};
pub use identity::{ConnectionInfo, PeerIdentity};
pub use jwt::{JwtAuthn, JwtConfig, JwtLayer, JwtService};
pub use listen::{Drain, DEFAULT_HEADER_TIMEOUT};
pub use plain::PlainServer;
pub use ratelimit::{RateLimitConfig, RateLimitLayer, RateLimitService, TokenBucket};
pub use serve::{serve, serve_with_shutdown, Handler, Server, DEFAULT_DRAIN_TIMEOUT};
pub use stream::MeshStream;

use crate::telemetry::{Reporter, Telemetry, TelemetryLayer, TelemetryService};
use crate::ModelRx;

/// The inbound service stack around an application service `S`:
/// telemetry, JWT authentication, then authorization, then the rate limit.
pub type InboundService<S> = TelemetryService<JwtService<AuthzService<RateLimitService<S>>>>;

/// Builds [`InboundService`]s: JWT, authorization and rate limiting, fed
/// by one model channel.
#[derive(Debug, Clone)]
pub struct InboundLayer {
    jwt: JwtLayer,
    authz: AuthzLayer,
    rate_limit: RateLimitLayer,
    telemetry: Option<Telemetry>,
}

impl InboundLayer {
    /// The default stack: JWT and authorization from the model, no rate
    /// limit, no external authorizer.
    pub fn new(model: ModelRx) -> Self {
        InboundLayer {
            jwt: JwtLayer::new(model.clone(), JwtConfig::default()),
            authz: AuthzLayer::new(model, AuthzConfig::default()),
            rate_limit: RateLimitLayer::empty(),
            telemetry: None,
        }
    }

    /// Replaces the JWT settings (key-set caching, fetcher, clock skew).
    pub fn with_jwt(mut self, model: ModelRx, config: JwtConfig) -> Self {
        self.jwt = JwtLayer::new(model, config);
        self
    }

    /// Replaces the authorization settings (XFF trust, CUSTOM hook).
    pub fn with_authz(mut self, model: ModelRx, config: AuthzConfig) -> Self {
        self.authz = AuthzLayer::new(model, config);
        self
    }

    /// Reports every request (`reporter="destination"`) to `telemetry`,
    /// refused ones included.
    pub fn with_telemetry(mut self, telemetry: Telemetry) -> Self {
        self.telemetry = Some(telemetry);
        self
    }

    /// Adds local rate limits.
    pub fn with_rate_limit(mut self, layer: RateLimitLayer) -> Self {
        self.rate_limit = layer;
        self
    }
}

impl<S> Layer<S> for InboundLayer {
    type Service = InboundService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        let stack = self
            .jwt
            .layer(self.authz.layer(self.rate_limit.layer(inner)));
        TelemetryLayer::new(self.telemetry.clone(), Reporter::Destination).layer(stack)
    }
}
