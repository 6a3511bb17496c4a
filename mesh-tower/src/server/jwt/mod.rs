//! JWT authentication (RequestAuthentication).
//!
//! Every rule of every RequestAuthentication that applies to the workload
//! looks for tokens in its locations ([`token`]). Then, as Istio's Envoy
//! configuration does:
//!
//! - no token anywhere: the request passes unauthenticated (authorization
//!   decides, e.g. with `requestPrincipals: ["*"]`);
//! - a token that is malformed, from an issuer no rule for that location
//!   names, expired, not yet valid, for another audience, signed with an
//!   unknown or wrong key, or using `alg: none`/HS*: 401 with
//!   `www-authenticate: Bearer realm="<url>", error="invalid_token"` and
//!   flag UAuth (gRPC UNAUTHENTICATED);
//! - a valid token: a [`JwtAuthn`] extension carries the request principal
//!   (`iss/sub`), claims, audiences and presenter for authorization; the
//!   token header is removed unless `forwardOriginalToken`, and
//!   `outputPayloadToHeader` / `outputClaimToHeaders` are applied.
//!
//! `failureMode: IGNORE` lets invalid tokens through unauthenticated;
//! `STRICT` also refuses requests without a token.
//!
//! Expiry checks allow 60 s of clock skew, Envoy's default.

mod fetch;
pub mod jwks;
pub mod token;
pub mod verify;

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use http::{HeaderName, HeaderValue, Request, Response};
use mesh_core::config::security::request_authentication::{JwtFailureMode, JwtRule};
use mesh_core::model::Model;
use tower::{Layer, Service};

use crate::body::{BoxError, MeshBody};
use crate::error::{is_grpc, MeshError, ResponseFlag};
use crate::server::authz::BoxFuture;
use crate::ModelRx;

pub use jwks::{HttpFetcher, JwksCache, JwksConfig, JwksFetcher};
pub use token::Location;
pub use verify::JwtError;

/// The result of a successful JWT authentication, as a request extension.
#[derive(Debug, Clone, PartialEq)]
pub struct JwtAuthn {
    /// `iss/sub`, what `requestPrincipals` match.
    pub principal: String,
    /// The `iss` claim.
    pub issuer: String,
    /// The `sub` claim.
    pub subject: String,
    /// The verified payload.
    pub claims: serde_json::Value,
    /// The `aud` values.
    pub audiences: Vec<String>,
    /// The `azp` claim.
    pub presenter: Option<String>,
    /// The RequestAuthentication (`namespace/name`) whose rule accepted it.
    pub policy: String,
}

/// Settings of the JWT layer.
#[derive(Clone)]
pub struct JwtConfig {
    /// Key-set caching.
    pub jwks: JwksConfig,
    /// How remote key sets are fetched.
    pub fetcher: Arc<dyn JwksFetcher>,
    /// Tolerance for `exp`/`nbf` (60 s).
    pub clock_skew: Duration,
}

impl Default for JwtConfig {
    fn default() -> Self {
        JwtConfig {
            jwks: JwksConfig::default(),
            fetcher: Arc::new(HttpFetcher::default()),
            clock_skew: Duration::from_secs(60),
        }
    }
}

impl std::fmt::Debug for JwtConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtConfig")
            .field("jwks", &self.jwks)
            .field("clock_skew", &self.clock_skew)
            .finish_non_exhaustive()
    }
}

/// Wraps a service with [`JwtService`].
#[derive(Debug, Clone)]
pub struct JwtLayer {
    model: ModelRx,
    cache: Arc<JwksCache>,
    skew: Duration,
}

impl JwtLayer {
    /// Authenticates with the RequestAuthentications of the current model.
    pub fn new(model: ModelRx, config: JwtConfig) -> Self {
        JwtLayer {
            model,
            cache: Arc::new(JwksCache::new(config.jwks, config.fetcher)),
            skew: config.clock_skew,
        }
    }
}

impl<S> Layer<S> for JwtLayer {
    type Service = JwtService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        JwtService {
            inner,
            model: self.model.clone(),
            cache: self.cache.clone(),
            skew: self.skew,
        }
    }
}

/// Validates JWTs; see the module docs.
#[derive(Debug, Clone)]
pub struct JwtService<S> {
    inner: S,
    model: ModelRx,
    cache: Arc<JwksCache>,
    skew: Duration,
}

/// A token found by a rule.
struct Found<'m> {
    token: String,
    location: Location,
    rule: &'m JwtRule,
    policy: &'m str,
}

/// Verifies one token against one rule.
async fn validate(
    cache: &JwksCache,
    rule: &JwtRule,
    decoded: &verify::Decoded,
    skew: Duration,
) -> Result<(), JwtError> {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    verify::check_claims(
        &decoded.claims,
        &rule.issuer,
        &rule.audiences,
        now,
        skew.as_secs(),
    )?;
    let timeout = rule.timeout.map(|t| t.0);
    if let Some(jwks) = &rule.jwks {
        let keys = cache.inline(jwks)?;
        return verify::verify_signature(decoded, &keys);
    }
    let Some(uri) = &rule.jwks_uri else {
        return Err(JwtError::Jwks(
            "the rule has neither jwks nor jwksUri".into(),
        ));
    };
    let keys = cache.remote(uri, timeout).await?;
    match verify::verify_signature(decoded, &keys) {
        Err(JwtError::UnknownKey(kid)) => match cache.refetch_for_unknown_kid(uri, timeout).await {
            Some(keys) => verify::verify_signature(decoded, &keys),
            None => Err(JwtError::UnknownKey(kid)),
        },
        other => other,
    }
}

fn claim_to_string(v: &serde_json::Value) -> Option<String> {
    match v {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        serde_json::Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn set_header(req: &mut Request<MeshBody>, name: &str, value: &str) {
    if let (Ok(n), Ok(v)) = (
        HeaderName::from_bytes(name.as_bytes()),
        HeaderValue::from_str(value),
    ) {
        req.headers_mut().insert(n, v);
    }
}

/// Applies a successful rule's header effects.
fn apply_outputs(
    req: &mut Request<MeshBody>,
    rule: &JwtRule,
    location: &Location,
    decoded: &verify::Decoded,
) {
    if !rule.forward_original_token.unwrap_or(false) {
        if let Location::Header(name) = location {
            req.headers_mut().remove(name.as_str());
        }
    }
    if let Some(h) = &rule.output_payload_to_header {
        set_header(req, h, &decoded.payload_b64);
    }
    for c in &rule.output_claim_to_headers {
        let mut v = &decoded.claims;
        let mut found = true;
        for part in c.claim.split('.') {
            match v.get(part) {
                Some(next) => v = next,
                None => {
                    found = false;
                    break;
                }
            }
        }
        if let Some(s) = found.then(|| claim_to_string(v)).flatten() {
            set_header(req, &c.header, &s);
        }
    }
}

fn unauthorized(req: &Request<MeshBody>, reason: &str) -> Response<MeshBody> {
    let mut resp =
        MeshError::new(ResponseFlag::JwtAuthenticationFailed, reason).into_response(is_grpc(req));
    let host = req
        .uri()
        .authority()
        .map(|a| a.as_str())
        .or_else(|| {
            req.headers()
                .get(http::header::HOST)
                .and_then(|h| h.to_str().ok())
        })
        .unwrap_or("");
    let realm = format!("http://{host}{}", req.uri().path()).replace('"', "%22");
    if let Ok(v) = HeaderValue::from_str(&format!(
        "Bearer realm=\"{realm}\", error=\"invalid_token\""
    )) {
        resp.headers_mut().insert(http::header::WWW_AUTHENTICATE, v);
    }
    resp
}

/// The outcome of authenticating one request.
enum Outcome {
    /// Pass on (maybe with an identity).
    Pass(Option<JwtAuthn>),
    /// 401 with this reason.
    Reject(String),
}

async fn authenticate(
    model: &Model,
    cache: &JwksCache,
    skew: Duration,
    req: &mut Request<MeshBody>,
) -> Outcome {
    let query = req.uri().query().map(str::to_string);
    let mut found: Vec<Found<'_>> = Vec::new();
    let mut strict = false;
    let mut ignore = true;
    for p in &model.inbound.jwt {
        for rule in &p.rules {
            match rule.failure_mode.unwrap_or_default() {
                JwtFailureMode::Strict => {
                    strict = true;
                    ignore = false;
                }
                JwtFailureMode::Permissive => ignore = false,
                JwtFailureMode::Ignore => {}
            }
            for (token, location) in token::find(rule, req.headers(), query.as_deref()) {
                found.push(Found {
                    token,
                    location,
                    rule,
                    policy: &p.policy,
                });
            }
        }
    }
    if found.is_empty() {
        return if strict {
            Outcome::Reject("Jwt is missing".into())
        } else {
            Outcome::Pass(None)
        };
    }
    let mut result: Option<JwtAuthn> = None;
    let mut failure: Option<String> = None;
    let mut tokens: Vec<&str> = found.iter().map(|f| f.token.as_str()).collect();
    tokens.dedup();
    for token in tokens {
        let decoded = match verify::decode(token) {
            Ok(d) => d,
            Err(e) => {
                failure.get_or_insert(e.to_string());
                continue;
            }
        };
        let iss = decoded
            .claims
            .get("iss")
            .and_then(|v| v.as_str())
            .unwrap_or("");
        let candidates: Vec<&Found<'_>> = found
            .iter()
            .filter(|f| f.token == token && f.rule.issuer == iss)
            .collect();
        if candidates.is_empty() {
            failure.get_or_insert(JwtError::Issuer(iss.to_string()).to_string());
            continue;
        }
        let mut last_err = None;
        let mut ok = None;
        for f in candidates {
            match validate(cache, f.rule, &decoded, skew).await {
                Ok(()) => {
                    ok = Some(f);
                    break;
                }
                Err(e) => last_err = Some(e),
            }
        }
        match ok {
            Some(f) => {
                let (rule, location, policy) = (f.rule, f.location.clone(), f.policy.to_string());
                apply_outputs(req, rule, &location, &decoded);
                if result.is_none() {
                    let sub = decoded
                        .claims
                        .get("sub")
                        .and_then(|v| v.as_str())
                        .unwrap_or("")
                        .to_string();
                    result = Some(JwtAuthn {
                        principal: format!("{iss}/{sub}"),
                        issuer: iss.to_string(),
                        subject: sub,
                        audiences: verify::audiences(&decoded.claims),
                        presenter: decoded
                            .claims
                            .get("azp")
                            .and_then(|v| v.as_str())
                            .map(str::to_string),
                        claims: decoded.claims.clone(),
                        policy,
                    });
                }
            }
            None => {
                let e = last_err.map(|e| e.to_string()).unwrap_or_default();
                failure.get_or_insert(e);
            }
        }
    }
    match failure {
        Some(reason) if !ignore => Outcome::Reject(reason),
        Some(reason) => {
            tracing::debug!(target: "mesh::jwt", %reason, "invalid token ignored (failureMode IGNORE)");
            Outcome::Pass(result)
        }
        None => Outcome::Pass(result),
    }
}

impl<S> Service<Request<MeshBody>> for JwtService<S>
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
        let cache = self.cache.clone();
        let skew = self.skew;
        Box::pin(async move {
            if !model.inbound.jwt.is_empty() {
                // Never trust a principal the caller set itself.
                req.extensions_mut().remove::<JwtAuthn>();
                match authenticate(&model, &cache, skew, &mut req).await {
                    Outcome::Reject(reason) => {
                        tracing::debug!(target: "mesh::jwt", %reason, "JWT rejected");
                        return Ok(unauthorized(&req, &reason));
                    }
                    Outcome::Pass(Some(authn)) => {
                        req.extensions_mut().insert(authn);
                    }
                    Outcome::Pass(None) => {}
                }
            }
            crate::server::authz::forward(&mut inner, req).await
        })
    }
}
