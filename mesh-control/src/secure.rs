//! meshd's TLS port (istiod's 15012): the same ADS and CA services as the
//! plaintext port, behind TLS with a serving certificate meshd's own CA
//! issues and rotates, and with every caller authenticated.
//!
//! A caller proves who it is with a mesh client certificate (verified
//! against the mesh root; its SPIFFE ID is the identity), with a
//! bootstrap token (`authorization: Bearer`, the CA's token file) or, with
//! a Kubernetes source, with its pod's service account token (checked by
//! TokenReview, [`crate::kube::tokenreview`]). On ADS a caller with none
//! is refused (`UNAUTHENTICATED`), and the node it names must be that
//! identity's namespace and service account (`PERMISSION_DENIED`
//! otherwise). The CA authenticates by itself ([`mesh_ca::server`]): a
//! certificate caller gets only its own identity.
//!
//! Not here: the TLS accept loop and server config (`mesh_ca::server`),
//! the ADS protocol (`mesh_xds::server`).

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use mesh_ca::server::Authenticated;
use mesh_ca::{CaService, SpiffeId};
use mesh_xds::node::NodeInfo;
use tonic::server::NamedService;
use tonic::Status;

/// The names on meshd's serving certificate: Istio's service names for the
/// control plane, and the loopback ones. Dial meshd by one of them.
pub const SERVING_NAMES: [&str; 4] = [
    "meshd.istio-system.svc",
    "istiod.istio-system.svc",
    "localhost",
    "127.0.0.1",
];

/// Lifetime of meshd's serving certificate; it is replaced at half-life.
pub const SERVING_TTL: Duration = Duration::from_secs(24 * 3600);

/// meshd's own SPIFFE identity, on its serving certificate.
pub fn serving_identity(trust_domain: &str) -> Result<SpiffeId, mesh_ca::spiffe::SpiffeIdError> {
    SpiffeId::new(trust_domain, "istio-system", "meshd")
}

/// The names on the serving certificate for a port bound to `addr`:
/// [`SERVING_NAMES`], plus the bound IP when it is a specific one.
pub fn serving_names(addr: SocketAddr) -> Vec<String> {
    let mut names: Vec<String> = SERVING_NAMES.iter().map(|s| s.to_string()).collect();
    let ip = addr.ip().to_string();
    if !addr.ip().is_unspecified() && !names.contains(&ip) {
        names.push(ip);
    }
    names
}

/// Authenticates every call of the TLS port's ADS service (client
/// certificate first, else bootstrap token, else the CA's token verifier:
/// [`CaService::authenticate_async`]) and leaves the [`Authenticated`]
/// caller in the request's extensions, where tonic hands it to the ADS
/// server and [`admit_node`]. A caller that proves nothing gets an
/// `UNAUTHENTICATED` response and never reaches `inner`.
///
/// The future is boxed: authentication may ask the API server, and runs
/// once per stream, not per message.
#[derive(Clone)]
pub struct Authenticate<S> {
    inner: S,
    ca: CaService,
    addr: SocketAddr,
}

impl<S> Authenticate<S> {
    /// Authenticates calls to `inner` with `ca`'s root, tokens and token
    /// verifier; `addr` names the port in errors.
    pub fn new(inner: S, ca: CaService, addr: SocketAddr) -> Self {
        Self { inner, ca, addr }
    }
}

/// The [`tower::Layer`] of [`Authenticate`].
#[derive(Clone)]
pub struct AuthenticateLayer {
    ca: CaService,
    addr: SocketAddr,
}

impl AuthenticateLayer {
    /// See [`Authenticate::new`].
    pub fn new(ca: CaService, addr: SocketAddr) -> Self {
        Self { ca, addr }
    }
}

impl<S> tower::Layer<S> for AuthenticateLayer {
    type Service = Authenticate<S>;

    fn layer(&self, inner: S) -> Authenticate<S> {
        Authenticate::new(inner, self.ca.clone(), self.addr)
    }
}

impl<S: NamedService> NamedService for Authenticate<S> {
    const NAME: &'static str = S::NAME;
}

impl<S, B, ResBody> tower::Service<http::Request<B>> for Authenticate<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<ResBody>>
        + Clone
        + Send
        + 'static,
    S::Future: Send,
    B: Send + 'static,
    ResBody: Default,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        // The service that was polled ready serves this call; the clone
        // takes its place for the next.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let ca = self.ca.clone();
        let addr = self.addr;
        Box::pin(async move {
            let proven = ca
                .authenticate_async(request.headers(), request.extensions())
                .await;
            match proven {
                Ok(caller) => {
                    request.extensions_mut().insert(caller);
                    inner.call(request).await
                }
                Err(e) => Ok(refusal(addr, &e, ca.has_token_verifier()).into_http()),
            }
        })
    }
}

/// The `UNAUTHENTICATED` status for a caller of the port at `addr`
/// refused with `e`, saying what credentials would do.
fn refusal(addr: SocketAddr, e: &Status, kubernetes: bool) -> Status {
    let service_account = if kubernetes {
        ", or its pod's Kubernetes service account token for meshd's audience (istio-ca by default)"
    } else {
        ""
    };
    Status::unauthenticated(format!(
        "meshd's TLS xDS port {addr}: {}; present a mesh workload certificate (mTLS) or \
         `authorization: Bearer <token>` with a token from meshd's --ca-tokens file\
         {service_account}",
        e.message()
    ))
}

/// Whether the stream's node may go on: the caller [`Authenticate`]
/// proved must be the namespace and service account the node claims. No
/// proven caller ([`Authenticate`] did not run) is refused too.
pub fn admit_node(node: &NodeInfo, extensions: &tonic::Extensions) -> Result<(), Status> {
    let Some(caller) = extensions.get::<Authenticated>() else {
        return Err(Status::unauthenticated(format!(
            "node {}: the caller was not authenticated; meshd's TLS port needs a mesh client \
             certificate or a bootstrap token",
            node.id
        )));
    };
    check_node(node, caller).map_err(Status::permission_denied)
}

/// The decision of [`admit_node`], as the refusal's text.
pub fn check_node(node: &NodeInfo, caller: &Authenticated) -> Result<(), String> {
    let id = caller.identity();
    // The namespace meshd compiles for (the id's, else `default`).
    let namespace = node.client().namespace;
    let sa = node.service_account.as_deref();
    if namespace == id.namespace() && sa == Some(id.service_account()) {
        return Ok(());
    }
    let proof = match caller {
        Authenticated::Certificate(_) => "its client certificate is",
        Authenticated::Token(_) => "its bootstrap token grants",
        Authenticated::VerifiedToken(_) => "its service account token proves",
    };
    Err(format!(
        "node {:?} claims namespace {namespace:?} and service account {} but {proof} {id}; \
         set the node's NAMESPACE and SERVICE_ACCOUNT metadata to {:?} and {:?}, or connect with \
         the credentials of {namespace}/{}",
        node.id,
        sa.map_or("(none)".to_string(), |s| format!("{s:?}")),
        id.namespace(),
        id.service_account(),
        sa.unwrap_or("<service account>"),
    ))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn node(ns: Option<&str>, sa: Option<&str>) -> NodeInfo {
        NodeInfo {
            id: "sidecar~127.0.0.1~web.demo~demo.svc.cluster.local".into(),
            namespace: ns.map(str::to_string),
            service_account: sa.map(str::to_string),
            ..NodeInfo::default()
        }
    }

    #[test]
    fn node_must_claim_the_proven_identity() {
        let id = SpiffeId::new("cluster.local", "demo", "web").unwrap();
        let cert = Authenticated::Certificate(id.clone());
        assert!(check_node(&node(Some("demo"), Some("web")), &cert).is_ok());
        let e = check_node(&node(Some("demo"), Some("api")), &cert).unwrap_err();
        assert!(
            e.contains("\"api\"") && e.contains("spiffe://cluster.local/ns/demo/sa/web"),
            "{e}"
        );
        assert!(e.contains("client certificate"), "{e}");
        // A missing service account is not a match: fail closed.
        let e = check_node(&node(Some("demo"), None), &cert).unwrap_err();
        assert!(e.contains("(none)"), "{e}");
        // The namespace meshd would compile for is what counts.
        let other = Authenticated::Token(SpiffeId::new("cluster.local", "default", "web").unwrap());
        assert!(check_node(&node(None, Some("web")), &other).is_ok());
        let e = check_node(&node(Some("demo"), Some("web")), &other).unwrap_err();
        assert!(e.contains("bootstrap token"), "{e}");
    }

    #[test]
    fn unauthenticated_streams_are_refused() {
        let s =
            admit_node(&node(Some("demo"), Some("web")), &tonic::Extensions::new()).unwrap_err();
        assert_eq!(s.code(), tonic::Code::Unauthenticated);
    }

    #[test]
    fn serving_names_add_a_specific_bound_address() {
        let names = serving_names("10.1.2.3:15012".parse().unwrap());
        assert!(names.contains(&"10.1.2.3".to_string()));
        assert_eq!(serving_names("0.0.0.0:15012".parse().unwrap()).len(), 4);
        assert_eq!(serving_names("127.0.0.1:0".parse().unwrap()).len(), 4);
    }
}
