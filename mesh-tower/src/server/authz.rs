//! Authorization (AuthorizationPolicy) with mesh-core's engine.
//!
//! For every request, [`AuthzService`]:
//!
//! 1. normalizes the path per MeshConfig `pathNormalization` and rewrites
//!    the request URI to the normalized path (query kept, fragment dropped),
//!    so the policies and the application see the same path; a path Envoy
//!    would refuse (`%00`, not starting with `/`) is a 400 with flag DPE;
//! 2. builds an [`authz::Request`] from the request, the connection
//!    ([`ConnectionInfo`]: peer identity, addresses, SNI) and the JWT result
//!    ([`JwtAuthn`]);
//! 3. asks [`PolicySet::check`] of the current model; a CUSTOM match is sent
//!    to the [`ExternalAuthorizer`] (denied when none is configured);
//! 4. denies with 403 `RBAC: access denied` (flag RBAC; gRPC
//!    PERMISSION_DENIED) or passes the request on;
//! 5. when dry-run or AUDIT policies apply, runs the explained evaluation
//!    too and logs what they would do (never changing the outcome).
//!
//! The decision is recorded in an [`AuthzDecision`] extension on the
//! response (and on the request passed to the application).
//!
//! `remote.ip` (`remoteIpBlocks`): with [`AuthzConfig::xff_trusted_hops`] 0
//! (Istio's default `numTrustedProxies: 0`) it is the direct peer and
//! `X-Forwarded-For` is ignored, so a client cannot spoof it; with `n > 0`
//! it is the `n`-th address from the right of `X-Forwarded-For`, as Envoy's
//! `xff_num_trusted_hops` does.
//!
//! For opaque TCP ports, [`check_connection`] evaluates the connection at
//! accept time; the caller closes it on deny.

use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response, Uri};
use mesh_core::authz::{self, Decision, DryRun, PolicySet, RuleRef, Verdict};
use mesh_core::config::security::authorization_policy::Action;
use mesh_core::model::Model;
use tower::{Layer, Service};

use crate::body::{BoxError, MeshBody};
use crate::error::{is_grpc, MeshError, ResponseFlag};
use crate::server::identity::ConnectionInfo;
use crate::server::jwt::JwtAuthn;
use crate::ModelRx;

/// A boxed future, as the hook and the services return.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// Calls `inner` and boxes its future with a combinator rather than an
/// `async` block: the boxed type hides `S::Future` from the callers' async
/// blocks (works around rustc's higher-ranked `Send` inference on
/// `Box<dyn Error>` in generic bounds).
pub(crate) fn forward<S>(
    inner: &mut S,
    req: Request<MeshBody>,
) -> BoxFuture<Result<Response<MeshBody>, BoxError>>
where
    S: Service<Request<MeshBody>, Response = Response<MeshBody>>,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
{
    use futures_util::FutureExt;
    Box::pin(inner.call(req).map(|r| r.map_err(Into::into)))
}

/// The body of a denied HTTP request, as Envoy's RBAC filter sends it.
pub const RBAC_DENIED_BODY: &str = "RBAC: access denied";

/// Decides requests that match a CUSTOM policy (Istio's ext_authz
/// extension providers). Nothing calls out by default: without an
/// authorizer, CUSTOM matches are denied.
pub trait ExternalAuthorizer: Send + Sync + 'static {
    /// True to allow `request`, which matched a CUSTOM policy naming
    /// `provider`.
    fn check(&self, provider: &str, request: &authz::Request) -> BoxFuture<bool>;
}

/// What authorization decided for a request, recorded for logs and metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthzDecision {
    /// ALLOW or DENY.
    pub verdict: Verdict,
    /// The deciding policy (`namespace/name`), if one decided.
    pub policy: Option<String>,
    /// The deciding policy's action.
    pub action: Option<Action>,
    /// The deciding rule's index.
    pub rule_index: Option<usize>,
    /// The CUSTOM provider consulted, if any.
    pub custom_provider: Option<String>,
    /// AUDIT rules that matched.
    pub audit: Vec<RuleRef>,
    /// What dry-run policies would have decided.
    pub dry_run: Option<DryRun>,
}

/// Settings of the authorization layer.
#[derive(Clone, Default)]
pub struct AuthzConfig {
    /// How many proxies in front of the workload are trusted to append to
    /// `X-Forwarded-For` (0: ignore the header, `remote.ip` is the peer).
    pub xff_trusted_hops: u32,
    /// The CUSTOM-policy hook.
    pub external: Option<Arc<dyn ExternalAuthorizer>>,
}

impl std::fmt::Debug for AuthzConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthzConfig")
            .field("xff_trusted_hops", &self.xff_trusted_hops)
            .field("external", &self.external.is_some())
            .finish()
    }
}

/// Wraps a service with [`AuthzService`].
#[derive(Debug, Clone)]
pub struct AuthzLayer {
    model: ModelRx,
    config: AuthzConfig,
}

impl AuthzLayer {
    /// Enforces the policies of the current model.
    pub fn new(model: ModelRx, config: AuthzConfig) -> Self {
        AuthzLayer { model, config }
    }
}

impl<S> Layer<S> for AuthzLayer {
    type Service = AuthzService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AuthzService {
            inner,
            model: self.model.clone(),
            config: self.config.clone(),
        }
    }
}

/// Enforces AuthorizationPolicy; see the module docs.
#[derive(Debug, Clone)]
pub struct AuthzService<S> {
    inner: S,
    model: ModelRx,
    config: AuthzConfig,
}

/// The `remote.ip` per the XFF trust setting.
fn remote_ip(req: &Request<MeshBody>, peer: Option<IpAddr>, hops: u32) -> Option<IpAddr> {
    if hops == 0 {
        return peer;
    }
    let xff: Vec<&str> = req
        .headers()
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    let idx = xff.len().checked_sub(hops as usize)?;
    xff.get(idx).and_then(|s| s.parse().ok()).or(peer)
}

/// The authorization attributes of an HTTP request (its path already
/// normalized by the caller if wanted).
pub fn authz_request(req: &Request<MeshBody>, xff_trusted_hops: u32) -> authz::Request {
    let conn = req.extensions().get::<ConnectionInfo>();
    let jwt = req.extensions().get::<JwtAuthn>();
    let peer_ip = conn.map(|c| c.peer_addr.ip());
    let host = req
        .uri()
        .authority()
        .map(|a| a.as_str().to_string())
        .or_else(|| {
            req.headers()
                .get(http::header::HOST)
                .and_then(|h| h.to_str().ok())
                .map(str::to_string)
        })
        .unwrap_or_default();
    authz::Request {
        protocol: authz::Protocol::Http,
        method: req.method().as_str().to_string(),
        path: req
            .uri()
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .unwrap_or_else(|| "/".to_string()),
        host,
        headers: req
            .headers()
            .iter()
            .map(|(n, v)| {
                (
                    n.as_str().to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        port: conn
            .map(|c| c.port)
            .or_else(|| req.uri().port_u16())
            .unwrap_or(0),
        source_principal: conn
            .and_then(|c| c.identity.as_ref())
            .map(|i| i.uri().to_string()),
        source_ip: peer_ip,
        remote_ip: remote_ip(req, peer_ip, xff_trusted_hops),
        destination_ip: conn.map(|c| c.local_addr.ip()),
        request_principal: jwt.map(|j| j.principal.clone()),
        claims: jwt
            .map(|j| j.claims.clone())
            .unwrap_or(serde_json::Value::Null),
        audiences: jwt.map(|j| j.audiences.clone()).unwrap_or_default(),
        presenter: jwt.and_then(|j| j.presenter.clone()),
        sni: conn.and_then(|c| c.sni.clone()),
    }
}

/// Rewrites the request's path to its normalized form (query kept). Returns
/// the error Envoy answers 400 for.
pub fn normalize_request_path(
    req: &mut Request<MeshBody>,
    mode: authz::Normalization,
) -> Result<(), MeshError> {
    let Some(pq) = req.uri().path_and_query() else {
        return Ok(());
    };
    let raw = pq.as_str();
    let normalized = authz::normalize(raw, mode)
        .map_err(|e| MeshError::new(ResponseFlag::DownstreamProtocolError, e.to_string()))?;
    let query = pq.query();
    if normalized == pq.path() && !raw.contains('#') {
        return Ok(());
    }
    let new_pq = match query {
        Some(q) => format!("{normalized}?{q}"),
        None => normalized.into_owned(),
    };
    let mut parts = req.uri().clone().into_parts();
    parts.path_and_query = Some(new_pq.parse().map_err(|e: http::uri::InvalidUri| {
        MeshError::new(ResponseFlag::DownstreamProtocolError, e.to_string())
    })?);
    *req.uri_mut() = Uri::from_parts(parts)
        .map_err(|e| MeshError::new(ResponseFlag::DownstreamProtocolError, e.to_string()))?;
    Ok(())
}

fn action_of(set: &PolicySet, name: Option<&str>) -> Option<Action> {
    let name = name?;
    set.policies()
        .iter()
        .find(|p| p.name == name)
        .map(|p| p.action)
}

/// Logs dry-run and AUDIT outcomes of an explained decision.
fn log_shadow(decision: &Decision, what: &str) {
    if let Some(d) = &decision.dry_run {
        tracing::info!(
            target: "mesh::authz",
            %what,
            dry_run_verdict = ?d.decision,
            policy = d.policy.as_deref().unwrap_or("-"),
            reason = %d.reason,
            "dry-run authorization result (not enforced)"
        );
    }
    for a in &decision.audit {
        tracing::info!(target: "mesh::authz", %what, policy = %a.policy, rule = a.rule_index, "AUDIT policy matched");
    }
}

/// Runs the policies of `model` against one request: the shared core of the
/// HTTP layer and [`check_connection`].
async fn decide(
    set: &PolicySet,
    areq: &authz::Request,
    external: Option<&Arc<dyn ExternalAuthorizer>>,
    what: &str,
) -> AuthzDecision {
    let shadow = set
        .policies()
        .iter()
        .any(|p| p.dry_run || p.action == Action::Audit);
    let check = set.check(areq);
    let mut out = AuthzDecision {
        verdict: check.verdict,
        policy: check.policy.map(str::to_string),
        action: action_of(set, check.policy),
        rule_index: check.rule_index,
        custom_provider: check.custom_provider.map(str::to_string),
        audit: Vec::new(),
        dry_run: None,
    };
    if shadow {
        let d = set.evaluate(areq);
        log_shadow(&d, what);
        out.audit = d.audit;
        out.dry_run = d.dry_run;
    }
    if let (Verdict::Allow, Some(provider)) = (out.verdict, out.custom_provider.as_deref()) {
        let allowed = match external {
            Some(ext) => ext.check(provider, areq).await,
            None => {
                tracing::warn!(target: "mesh::authz", provider, "CUSTOM policy matched but no external authorizer is configured; denying");
                false
            }
        };
        if !allowed {
            out.verdict = Verdict::Deny;
        }
    }
    out
}

/// Authorizes an opaque TCP connection at accept time (policies with
/// HTTP-only fields follow Istio's TCP semantics). The caller closes the
/// connection when the verdict is [`Verdict::Deny`].
pub async fn check_connection(
    model: &Model,
    conn: &ConnectionInfo,
    external: Option<&Arc<dyn ExternalAuthorizer>>,
) -> AuthzDecision {
    let mut req = authz::Request::tcp(conn.port);
    req.source_principal = conn.identity.as_ref().map(|i| i.uri().to_string());
    req.source_ip = Some(conn.peer_addr.ip());
    req.remote_ip = Some(conn.peer_addr.ip());
    req.destination_ip = Some(conn.local_addr.ip());
    req.sni = conn.sni.clone();
    let d = decide(&model.inbound.authz, &req, external, "tcp").await;
    if d.verdict == Verdict::Deny {
        tracing::info!(target: "mesh::authz", peer = %conn.peer_addr, port = conn.port, policy = d.policy.as_deref().unwrap_or("-"), "connection denied by authorization policy");
    }
    d
}

impl<S> Service<Request<MeshBody>> for AuthzService<S>
where
    S: Service<Request<MeshBody>, Response = Response<MeshBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
{
    type Response = Response<MeshBody>;
    type Error = BoxError;
    type Future = BoxFuture<Result<Response<MeshBody>, BoxError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut req: Request<MeshBody>) -> Self::Future {
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let model = self.model.borrow().clone();
        let config = self.config.clone();
        Box::pin(async move {
            let grpc = is_grpc(&req);
            if let Err(e) = normalize_request_path(&mut req, model.mesh.path_normalization) {
                return Ok(e.into_response(grpc));
            }
            let set = &model.inbound.authz;
            let areq = authz_request(&req, config.xff_trusted_hops);
            let decision = decide(set, &areq, config.external.as_ref(), "http").await;
            if decision.verdict == Verdict::Deny {
                tracing::debug!(
                    target: "mesh::authz",
                    path = %areq.path,
                    principal = areq.source_principal.as_deref().unwrap_or("-"),
                    policy = decision.policy.as_deref().unwrap_or("-"),
                    "request denied by authorization policy"
                );
                let flag = if decision.custom_provider.is_some()
                    && decision.action == Some(Action::Custom)
                {
                    ResponseFlag::UnauthorizedExternalService
                } else {
                    ResponseFlag::RbacAccessDenied
                };
                let mut resp = MeshError::new(flag, RBAC_DENIED_BODY).into_response(grpc);
                resp.extensions_mut().insert(decision);
                return Ok(resp);
            }
            req.extensions_mut().insert(decision.clone());
            let mut resp = forward(&mut inner, req).await?;
            resp.extensions_mut().insert(decision);
            Ok(resp)
        })
    }
}
