//! The CA's gRPC endpoint: Istio's
//! `istio.v1.auth.IstioCertificateService/CreateCertificate`.
//!
//! A caller authenticates in one of two ways:
//!
//! 1. **Its current mesh certificate** as the TLS client certificate
//!    (renewal). The chain is re-verified against the CA's trust bundle at
//!    request time and the new certificate gets exactly that identity.
//! 2. **A bootstrap token** in `authorization: Bearer <token>` metadata,
//!    granting the identity the token file binds it to ([`TokenStore`]).
//! 3. **Any other bearer token** the service's [`TokenVerifier`] accepts
//!    (in meshd with a Kubernetes source, a service account token checked
//!    with the API server's TokenReview), granting the identity it returns.
//!
//! A client certificate, when presented, wins over a token; the token file
//! is looked up before the verifier is asked. [`CaService::authenticate`]
//! is the synchronous part (certificate and token file, no I/O);
//! [`CaService::authenticate_async`] adds the verifier, and is what
//! `CreateCertificate` and meshd's TLS ADS port use. Whatever the
//! request asks for (CSR SANs, Istio's `ImpersonatedIdentity` metadata), the
//! certificate carries only the authenticated identity; an
//! `ImpersonatedIdentity` different from it is refused with
//! `PERMISSION_DENIED`. Errors map to gRPC codes: `UNAUTHENTICATED` (no or
//! bad credentials), `INVALID_ARGUMENT` (bad CSR or TTL),
//! `PERMISSION_DENIED` (identity not owned), `INTERNAL` (signing failed).

use mesh_core::sync::RwLockExt;
use std::future::Future;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use http::{Extensions, HeaderMap};
use rustls_pki_types::UnixTime;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
use tonic::{Request, Response, Status};

use crate::bundle::Usage;
use crate::ca::CertificateAuthority;
use crate::error::{Error, Result};
use crate::proto::{
    IstioCertificateRequest, IstioCertificateResponse, IstioCertificateService,
    IstioCertificateServiceServer,
};
use crate::spiffe::SpiffeId;
use crate::tls::{ClientAuth, PeerPolicy};
use crate::tokens::{TokenStore, TokenVerifier};
use crate::workload::WorkloadCertificate;
use crate::x509;

/// The metadata key Istio uses for a requested (impersonated) identity.
pub const IMPERSONATED_IDENTITY: &str = "ImpersonatedIdentity";

/// How long a TLS handshake on the CA port may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The `IstioCertificateService` implementation.
#[derive(Clone)]
pub struct CaService {
    ca: Arc<CertificateAuthority>,
    tokens: Arc<RwLock<Arc<TokenStore>>>,
    /// Shared by every clone, like the tokens: set once, seen by all the
    /// ports serving this CA.
    verifier: Arc<RwLock<Option<Arc<dyn TokenVerifier>>>>,
}

impl std::fmt::Debug for CaService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaService")
            .field("ca", &self.ca)
            .field("token_verifier", &self.verifier.read_locked().is_some())
            .finish_non_exhaustive()
    }
}

/// How a caller proved its identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Authenticated {
    /// By a valid mesh client certificate.
    Certificate(SpiffeId),
    /// By a bootstrap token.
    Token(SpiffeId),
    /// By a bearer token the service's [`TokenVerifier`] accepted (a
    /// Kubernetes service account token, in meshd).
    VerifiedToken(SpiffeId),
}

impl Authenticated {
    /// The proven identity.
    pub fn identity(&self) -> &SpiffeId {
        match self {
            Authenticated::Certificate(id)
            | Authenticated::Token(id)
            | Authenticated::VerifiedToken(id) => id,
        }
    }
}

/// What a caller's request proves before any I/O: an identity (client
/// certificate or a token in the token file), or a bearer token the token
/// file does not know.
enum Presented<'a> {
    Proven(Authenticated),
    UnknownToken(&'a str),
}

fn unknown_token() -> Status {
    Status::unauthenticated("unknown bootstrap token")
}

impl CaService {
    /// Serves `ca`, accepting `tokens` for bootstrap.
    pub fn new(ca: Arc<CertificateAuthority>, tokens: TokenStore) -> Self {
        CaService {
            ca,
            tokens: Arc::new(RwLock::new(Arc::new(tokens))),
            verifier: Arc::new(RwLock::new(None)),
        }
    }

    /// Replaces the bootstrap tokens (e.g. after the token file changed).
    pub fn set_tokens(&self, tokens: TokenStore) {
        *self.tokens.write_locked() = Arc::new(tokens);
    }

    /// Also accepts bearer tokens `verifier` vouches for (after the client
    /// certificate and the token file); see [`CaService::set_token_verifier`].
    pub fn with_token_verifier(self, verifier: Arc<dyn TokenVerifier>) -> Self {
        self.set_token_verifier(Some(verifier));
        self
    }

    /// Sets or removes the [`TokenVerifier`]. Every clone of this service
    /// (every port serving it) sees the change.
    pub fn set_token_verifier(&self, verifier: Option<Arc<dyn TokenVerifier>>) {
        *self.verifier.write_locked() = verifier;
    }

    /// Whether a [`TokenVerifier`] is set.
    pub fn has_token_verifier(&self) -> bool {
        self.verifier.read_locked().is_some()
    }

    /// Wraps the service for a tonic `Server`.
    pub fn into_server(self) -> IstioCertificateServiceServer<Self> {
        IstioCertificateServiceServer::new(self)
    }

    /// Decides who the caller is from its TLS client certificate or a token
    /// in the token file, without I/O: the [`TokenVerifier`] is not asked
    /// (use [`CaService::authenticate_async`] for that).
    pub fn authenticate<T>(&self, request: &Request<T>) -> Result<Authenticated, Status> {
        self.authenticate_parts(request.metadata().as_ref(), request.extensions())
    }

    /// [`CaService::authenticate`] from the parts of a request, tonic's
    /// (`metadata().as_ref()`, `extensions()`) or an `http::Request`'s
    /// (`headers()`, `extensions()`): the client certificate is the
    /// `TlsConnectInfo` tonic leaves in the extensions, the token the
    /// `authorization` header.
    pub fn authenticate_parts(
        &self,
        headers: &HeaderMap,
        extensions: &Extensions,
    ) -> Result<Authenticated, Status> {
        match self.presented(headers, extensions)? {
            Presented::Proven(caller) => Ok(caller),
            Presented::UnknownToken(_) => Err(unknown_token()),
        }
    }

    /// Decides who the caller is: its client certificate, else its bearer
    /// token looked up in the token file, else the token checked by the
    /// [`TokenVerifier`] (when one is set). Takes the same parts as
    /// [`CaService::authenticate_parts`].
    pub async fn authenticate_async(
        &self,
        headers: &HeaderMap,
        extensions: &Extensions,
    ) -> Result<Authenticated, Status> {
        let token = match self.presented(headers, extensions)? {
            Presented::Proven(caller) => return Ok(caller),
            Presented::UnknownToken(token) => token,
        };
        // Not held across the await: a verifier set meanwhile is used from
        // the next call on.
        let verifier = self.verifier.read_locked().clone();
        let Some(verifier) = verifier else {
            return Err(unknown_token());
        };
        match verifier.verify(token).await {
            Ok(Some(id)) if id.trust_domain() == self.ca.trust_domain() => {
                Ok(Authenticated::VerifiedToken(id))
            }
            Ok(Some(id)) => {
                tracing::warn!(%id, trust_domain = self.ca.trust_domain(), "a token verifier granted an identity outside the CA's trust domain");
                Err(Status::unauthenticated(format!(
                    "the token grants {id}, which is not in trust domain {:?}",
                    self.ca.trust_domain()
                )))
            }
            Ok(None) => Err(Status::unauthenticated(
                "unknown bootstrap token, and not one the token verifier checks",
            )),
            Err(why) => Err(Status::unauthenticated(format!("token refused: {why}"))),
        }
    }

    /// The synchronous part of authentication: the client certificate
    /// (verified), or the bearer token looked up in the token file.
    fn presented<'r>(
        &self,
        headers: &'r HeaderMap,
        extensions: &Extensions,
    ) -> Result<Presented<'r>, Status> {
        let certs = extensions
            .get::<TlsConnectInfo<TcpConnectInfo>>()
            .and_then(|info| info.peer_certs());
        if let Some(certs) = certs.filter(|c| !c.is_empty()) {
            return self
                .authenticate_cert(certs.as_slice())
                .map(|id| Presented::Proven(Authenticated::Certificate(id)));
        }
        let Some(header) = headers.get(http::header::AUTHORIZATION) else {
            return Err(Status::unauthenticated(
                "no client certificate and no `authorization: Bearer <token>` metadata",
            ));
        };
        let token = header
            .to_str()
            .ok()
            .and_then(|h| {
                let (scheme, token) = h.split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
            })
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                Status::unauthenticated("authorization metadata must be `Bearer <token>`")
            })?;
        let store = self.tokens.read_locked().clone();
        Ok(match store.lookup(token, self.ca.trust_domain()) {
            Some(id) => Presented::Proven(Authenticated::Token(id)),
            None => Presented::UnknownToken(token),
        })
    }

    fn authenticate_cert(
        &self,
        certs: &[rustls_pki_types::CertificateDer<'static>],
    ) -> Result<SpiffeId, Status> {
        let (leaf, intermediates) = certs
            .split_first()
            .ok_or_else(|| Status::unauthenticated("empty client certificate chain"))?;
        self.ca
            .trust_bundle()
            .verify(leaf, intermediates, UnixTime::now(), Usage::ClientAuth)
            .map_err(|e| Status::unauthenticated(format!("client certificate rejected: {e}")))?;
        let id = x509::spiffe_id(leaf)
            .map_err(|e| Status::unauthenticated(format!("client certificate rejected: {e}")))?;
        if id.trust_domain() != self.ca.trust_domain() {
            return Err(Status::unauthenticated(format!(
                "client certificate identity {id} is not in trust domain {:?}",
                self.ca.trust_domain()
            )));
        }
        Ok(id)
    }
}

fn requested_identity(req: &IstioCertificateRequest) -> Option<String> {
    use prost_types::value::Kind;
    let value = req.metadata.as_ref()?.fields.get(IMPERSONATED_IDENTITY)?;
    match &value.kind {
        Some(Kind::StringValue(s)) => Some(s.clone()),
        _ => Some(String::new()),
    }
}

fn status_for(e: Error) -> Status {
    match e {
        Error::Csr(_) | Error::Identity(_) => Status::invalid_argument(e.to_string()),
        Error::Policy(_) => Status::permission_denied(e.to_string()),
        other => {
            tracing::error!(error = %other, "certificate signing failed");
            Status::internal("certificate signing failed")
        }
    }
}

#[tonic::async_trait]
impl IstioCertificateService for CaService {
    async fn create_certificate(
        &self,
        request: Request<IstioCertificateRequest>,
    ) -> Result<Response<IstioCertificateResponse>, Status> {
        let caller = self
            .authenticate_async(request.metadata().as_ref(), request.extensions())
            .await?;
        let identity = caller.identity().clone();
        let req = request.into_inner();
        if let Some(asked) = requested_identity(&req) {
            if asked != identity.to_string() {
                tracing::warn!(%identity, requested = %asked, "refused impersonation");
                return Err(Status::permission_denied(format!(
                    "caller {identity} may not obtain a certificate for {asked:?}"
                )));
            }
        }
        let ttl = match req.validity_duration {
            d if d < 0 => {
                return Err(Status::invalid_argument(
                    "validity_duration must not be negative",
                ))
            }
            0 => None,
            d => Some(Duration::from_secs(d.unsigned_abs())),
        };
        let issued = self
            .ca
            .sign_csr_at(&req.csr, &identity, ttl, SystemTime::now())
            .map_err(status_for)?;
        Ok(Response::new(IstioCertificateResponse {
            cert_chain: issued.chain_pem,
            root_cert: None,
        }))
    }
}

/// The TLS config for the CA's own port: presents `serving` (see
/// [`CertificateAuthority::issue_local`]), asks for but does not require a
/// client certificate, and verifies one if presented.
pub fn server_tls_config(
    ca: &CertificateAuthority,
    serving: watch::Receiver<Arc<WorkloadCertificate>>,
) -> Result<rustls::ServerConfig> {
    let trust = watch::channel(Arc::new(ca.trust_bundle().clone())).1;
    crate::tls::server_config(
        serving,
        trust,
        PeerPolicy::new(ca.trust_domain()),
        ClientAuth::Optional,
    )
}

/// The TLS connections accepted on `listener`, handshaken with `tls`,
/// for tonic's `serve_with_incoming*`. Each handshake runs on its own task
/// with a deadline, so a client that stalls or fails its handshake is
/// dropped without holding up others; Nagle is off, so a response's last
/// segment does not wait for the peer's delayed ACK. `what` names the port
/// in logs. The accept loop stops when the stream is dropped.
pub fn tls_incoming(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    what: &'static str,
) -> impl tokio_stream::Stream<Item = std::io::Result<TlsStream<TcpStream>>> + Send + 'static {
    let acceptor = TlsAcceptor::from(tls);
    let (tx, rx) = mpsc::channel(64);
    let accept_loop = tokio::spawn(async move {
        loop {
            let (tcp, peer) = match listener.accept().await {
                Ok(conn) => conn,
                Err(e) => {
                    tracing::warn!(port = what, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            if let Err(e) = tcp.set_nodelay(true) {
                tracing::debug!(port = what, error = %e, "cannot turn off Nagle");
            }
            let acceptor = acceptor.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(stream)) => {
                        let _ = tx.send(Ok::<_, std::io::Error>(stream)).await;
                    }
                    Ok(Err(e)) => {
                        tracing::debug!(port = what, %peer, error = %e, "TLS handshake failed")
                    }
                    Err(_) => tracing::debug!(port = what, %peer, "TLS handshake timed out"),
                }
            });
        }
    });
    AbortOnDrop {
        inner: ReceiverStream::new(rx),
        task: accept_loop,
    }
}

/// A stream that stops its producer task when dropped.
struct AbortOnDrop<S> {
    inner: S,
    task: tokio::task::JoinHandle<()>,
}

impl<S> Drop for AbortOnDrop<S> {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl<S: tokio_stream::Stream + Unpin> tokio_stream::Stream for AbortOnDrop<S> {
    type Item = S::Item;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<S::Item>> {
        std::pin::Pin::new(&mut self.inner).poll_next(cx)
    }
}

/// Serves `service` over TLS on `listener` until `shutdown` completes.
/// Connections whose handshake fails or stalls are dropped without
/// affecting others.
pub async fn serve_tls(
    listener: TcpListener,
    service: CaService,
    tls: Arc<rustls::ServerConfig>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    tonic::transport::Server::builder()
        .add_service(service.into_server())
        .serve_with_incoming_shutdown(tls_incoming(listener, tls, "CA"), shutdown)
        .await
}
