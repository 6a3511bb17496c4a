//! Kubernetes service account tokens as credentials for meshd's CA and TLS
//! xDS port, checked with the API server's TokenReview, as istiod does.
//!
//! A pod sends its projected service account token (audience `istio-ca`,
//! Istio's default) as `authorization: Bearer <token>`. [`TokenReviewer`]
//! posts an `authentication.k8s.io/v1` TokenReview with `spec.audiences`
//! set to meshd's audiences and grants
//! `spiffe://<trust domain>/ns/<namespace>/sa/<service account>` only when
//! the API server answers that the token is authenticated, the user is
//! `system:serviceaccount:<namespace>:<service account>` in group
//! `system:serviceaccounts`, and the answer's audiences include one of
//! meshd's ([`decide`]). Anything else is refused with the API server's
//! reason.
//!
//! Answers are cached by the token's SHA-256 (never the token itself):
//! an accepted token for [`POSITIVE_TTL`] (less when the token's own `exp`
//! is sooner), a refused one for [`NEGATIVE_TTL`], at most
//! [`CACHE_CAPACITY`] tokens. A TokenReview that fails (API server away,
//! meshd not allowed to create TokenReviews) is not cached: the caller is
//! refused and the next call asks again.
//!
//! meshd needs `create` on `tokenreviews.authentication.k8s.io`
//! (ClusterRole `system:auth-delegator`).
//!
//! Not here: the token file and client certificates (`mesh_ca::server`),
//! which are checked before this.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec, TokenReviewStatus};
use kube::api::{Api, PostParams};
use kube::Client;
use mesh_ca::tokens::VerifyFuture;
use mesh_ca::{SpiffeId, TokenVerifier};
use mesh_core::sync::LockExt;
use tokio::time::Instant;

/// The audience meshd asks the API server to check tokens against by
/// default: Istio's (`istio-ca`, what Istio's sidecar injector mounts).
pub const DEFAULT_AUDIENCE: &str = "istio-ca";

/// How long an accepted token is trusted without asking again (at most
/// until the token's `exp`).
pub const POSITIVE_TTL: Duration = Duration::from_secs(60);

/// How long a refused token stays refused without asking again.
pub const NEGATIVE_TTL: Duration = Duration::from_secs(5);

/// The most tokens whose answers are cached.
pub const CACHE_CAPACITY: usize = 4096;

/// How long a TokenReview may take before the caller is refused.
pub const REVIEW_TIMEOUT: Duration = Duration::from_secs(5);

/// The group the API server puts every service account in.
const SERVICE_ACCOUNTS_GROUP: &str = "system:serviceaccounts";

/// A [`TokenVerifier`] that asks the Kubernetes API server (TokenReview)
/// who a service account token belongs to; see the module docs.
pub struct TokenReviewer {
    client: Client,
    trust_domain: String,
    audiences: Vec<String>,
    cache: Mutex<ReviewCache>,
}

impl std::fmt::Debug for TokenReviewer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenReviewer")
            .field("trust_domain", &self.trust_domain)
            .field("audiences", &self.audiences)
            .finish_non_exhaustive()
    }
}

impl TokenReviewer {
    /// Reviews tokens with `client`'s API server, granting identities in
    /// `trust_domain`, for audience [`DEFAULT_AUDIENCE`].
    pub fn new(client: Client, trust_domain: impl Into<String>) -> Self {
        TokenReviewer {
            client,
            trust_domain: trust_domain.into(),
            audiences: vec![DEFAULT_AUDIENCE.to_string()],
            cache: Mutex::new(ReviewCache::new(CACHE_CAPACITY)),
        }
    }

    /// Accepts tokens for any of `audiences` instead (Istio's
    /// `TOKEN_AUDIENCES`); an empty list keeps [`DEFAULT_AUDIENCE`].
    pub fn with_audiences(mut self, audiences: impl IntoIterator<Item = String>) -> Self {
        let audiences: Vec<String> = audiences.into_iter().filter(|a| !a.is_empty()).collect();
        if !audiences.is_empty() {
            self.audiences = audiences;
        }
        self
    }

    /// The audiences tokens are checked against.
    pub fn audiences(&self) -> &[String] {
        &self.audiences
    }

    /// Posts the TokenReview; its status, or why there is none.
    async fn review(&self, token: &str) -> Result<TokenReviewStatus, String> {
        let api: Api<TokenReview> = Api::all(self.client.clone());
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: token.to_string(),
                audiences: Some(self.audiences.clone()),
            },
            ..TokenReview::default()
        };
        match tokio::time::timeout(REVIEW_TIMEOUT, api.create(&PostParams::default(), &review))
            .await
        {
            Ok(Ok(answer)) => Ok(answer.status.unwrap_or_default()),
            Ok(Err(kube::Error::Api(status))) if status.code == 403 => Err(format!(
                "meshd may not create TokenReviews ({}); bind meshd's service account to \
                 ClusterRole system:auth-delegator",
                status.message
            )),
            Ok(Err(e)) => Err(format!(
                "the TokenReview failed ({e}); the caller may retry"
            )),
            Err(_) => Err(format!(
                "the Kubernetes API server did not answer the TokenReview within \
                 {REVIEW_TIMEOUT:?}; the caller may retry"
            )),
        }
    }
}

impl TokenVerifier for TokenReviewer {
    fn verify<'a>(&'a self, token: &'a str) -> VerifyFuture<'a> {
        Box::pin(async move {
            // Service account tokens are JWTs; anything else is not ours
            // (and not worth a call to the API server).
            if !looks_like_jwt(token) {
                return Ok(None);
            }
            let key = digest(token);
            if let Some(cached) = self.cache.locked().get(&key, Instant::now()) {
                return cached.map(Some);
            }
            let status = self.review(token).await?;
            let decided = decide(&status, &self.audiences, &self.trust_domain);
            let ttl = match &decided {
                Ok(id) => {
                    tracing::debug!(%id, "TokenReview accepted a service account token");
                    positive_ttl(token, SystemTime::now())
                }
                Err(why) => {
                    tracing::debug!(%why, "TokenReview refused a token");
                    NEGATIVE_TTL
                }
            };
            let now = Instant::now();
            self.cache
                .locked()
                .insert(key, decided.clone(), now + ttl, now);
            decided.map(Some)
        })
    }
}

/// The namespace and service account of a service account's user name
/// (`system:serviceaccount:<namespace>:<name>`); `None` for any other user.
pub fn service_account(username: &str) -> Option<(&str, &str)> {
    let rest = username.strip_prefix("system:serviceaccount:")?;
    let (ns, sa) = rest.split_once(':')?;
    (!ns.is_empty() && !sa.is_empty() && !sa.contains(':')).then_some((ns, sa))
}

/// The identity a TokenReview's `status` proves for a token reviewed for
/// `audiences`, or why it proves none.
pub fn decide(
    status: &TokenReviewStatus,
    audiences: &[String],
    trust_domain: &str,
) -> Result<SpiffeId, String> {
    if status.authenticated != Some(true) {
        let why = status
            .error
            .as_deref()
            .filter(|e| !e.is_empty())
            .unwrap_or("no reason given");
        return Err(format!(
            "the Kubernetes API server did not authenticate the token for audience {audiences:?} \
             ({why}); send the pod's projected service account token for that audience"
        ));
    }
    let user = status.user.clone().unwrap_or_default();
    let username = user.username.as_deref().unwrap_or_default();
    let in_group = user
        .groups
        .iter()
        .flatten()
        .any(|g| g == SERVICE_ACCOUNTS_GROUP);
    let (ns, sa) = service_account(username)
        .filter(|_| in_group)
        .ok_or_else(|| {
            format!(
                "the token is user {username:?}'s, not a service account's; only service \
             account tokens (system:serviceaccount:<namespace>:<name>) get mesh identities"
            )
        })?;
    let confirmed = status
        .audiences
        .iter()
        .flatten()
        .any(|a| audiences.contains(a));
    if !confirmed {
        return Err(format!(
            "the Kubernetes API server did not confirm the token is for audience {audiences:?} \
             (it answered {:?}); send a token requested for that audience",
            status.audiences.as_deref().unwrap_or_default()
        ));
    }
    SpiffeId::new(trust_domain, ns, sa)
        .map_err(|e| format!("service account {ns}/{sa} is no SPIFFE identity: {e}"))
}

/// How long an accepted `token` may be cached at `now`: [`POSITIVE_TTL`],
/// or less when its `exp` claim (read, not verified: it can only shorten
/// the time) is sooner.
fn positive_ttl(token: &str, now: SystemTime) -> Duration {
    let Some(exp) = expiry(token) else {
        return POSITIVE_TTL;
    };
    let left = exp.duration_since(now).unwrap_or(Duration::ZERO);
    left.min(POSITIVE_TTL)
}

/// The `exp` claim of a JWT, if it has a readable one.
fn expiry(token: &str) -> Option<SystemTime> {
    #[derive(serde::Deserialize)]
    struct Claims {
        exp: Option<u64>,
    }
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let exp = serde_json::from_slice::<Claims>(&bytes).ok()?.exp?;
    UNIX_EPOCH.checked_add(Duration::from_secs(exp))
}

/// Three non-empty base64url segments separated by dots.
fn looks_like_jwt(token: &str) -> bool {
    let segments: Vec<&str> = token.split('.').collect();
    segments.len() == 3
        && segments.iter().all(|s| {
            !s.is_empty()
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'='))
        })
}

type Digest = [u8; 32];

fn digest(token: &str) -> Digest {
    let d = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// Review answers by token digest, each until its deadline; at most
/// `capacity` of them. Time is an input: every call takes `now`.
#[derive(Debug)]
struct ReviewCache {
    entries: HashMap<Digest, (Result<SpiffeId, String>, Instant)>,
    capacity: usize,
}

impl ReviewCache {
    fn new(capacity: usize) -> Self {
        ReviewCache {
            entries: HashMap::new(),
            capacity: capacity.max(1),
        }
    }

    /// The answer for `key`, unless it is missing or expired at `now`.
    fn get(&mut self, key: &Digest, now: Instant) -> Option<Result<SpiffeId, String>> {
        match self.entries.get(key) {
            Some((answer, until)) if now < *until => Some(answer.clone()),
            Some(_) => {
                self.entries.remove(key);
                None
            }
            None => None,
        }
    }

    /// Keeps `answer` for `key` until `until`. When full, drops what has
    /// expired at `now`, then the answers that expire soonest.
    fn insert(
        &mut self,
        key: Digest,
        answer: Result<SpiffeId, String>,
        until: Instant,
        now: Instant,
    ) {
        if until <= now {
            self.entries.remove(&key);
            return;
        }
        if self.entries.len() >= self.capacity && !self.entries.contains_key(&key) {
            self.entries.retain(|_, (_, u)| now < *u);
            while self.entries.len() >= self.capacity {
                let Some(soonest) = self
                    .entries
                    .iter()
                    .min_by_key(|(_, (_, u))| *u)
                    .map(|(k, _)| *k)
                else {
                    break;
                };
                self.entries.remove(&soonest);
            }
        }
        self.entries.insert(key, (answer, until));
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use k8s_openapi::api::authentication::v1::UserInfo;

    fn aud() -> Vec<String> {
        vec![DEFAULT_AUDIENCE.to_string()]
    }

    fn reviewed(username: &str, groups: &[&str], audiences: &[&str]) -> TokenReviewStatus {
        TokenReviewStatus {
            authenticated: Some(true),
            audiences: Some(audiences.iter().map(|a| a.to_string()).collect()),
            user: Some(UserInfo {
                username: Some(username.to_string()),
                groups: Some(groups.iter().map(|g| g.to_string()).collect()),
                ..UserInfo::default()
            }),
            error: None,
        }
    }

    const SA_GROUPS: &[&str] = &[
        "system:serviceaccounts",
        "system:serviceaccounts:shop",
        "system:authenticated",
    ];

    #[test]
    fn service_account_user_names() {
        assert_eq!(
            service_account("system:serviceaccount:shop:cart"),
            Some(("shop", "cart"))
        );
        for other in [
            "mesh-admin",
            "system:serviceaccount:shop",
            "system:serviceaccount::cart",
            "system:serviceaccount:shop:",
            "system:serviceaccount:shop:cart:extra",
            "system:serviceaccounts:shop:cart",
            "system:node:node-a",
            "",
        ] {
            assert_eq!(service_account(other), None, "{other:?}");
        }
    }

    #[test]
    fn an_authenticated_service_account_for_our_audience_is_its_identity() {
        let status = reviewed("system:serviceaccount:shop:cart", SA_GROUPS, &["istio-ca"]);
        let id = decide(&status, &aud(), "cluster.local").unwrap();
        assert_eq!(id.to_string(), "spiffe://cluster.local/ns/shop/sa/cart");
        // Any of several configured audiences will do.
        let both = vec!["api".to_string(), "istio-ca".to_string()];
        assert!(decide(&status, &both, "cluster.local").is_ok());
    }

    #[test]
    fn everything_else_is_refused_saying_why() {
        // Not authenticated: the API server's reason is passed on.
        let refused = TokenReviewStatus {
            authenticated: Some(false),
            error: Some("token audiences [\"api\"] is invalid for the target audiences".into()),
            ..TokenReviewStatus::default()
        };
        let e = decide(&refused, &aud(), "cluster.local").unwrap_err();
        assert!(
            e.contains("is invalid for the target audiences") && e.contains("istio-ca"),
            "{e}"
        );
        let e = decide(&TokenReviewStatus::default(), &aud(), "cluster.local").unwrap_err();
        assert!(e.contains("no reason given"), "{e}");
        // A user that is not a service account (a static token, a person).
        let e = decide(
            &reviewed("mesh-admin", &["system:masters"], &["istio-ca"]),
            &aud(),
            "td",
        )
        .unwrap_err();
        assert!(
            e.contains("\"mesh-admin\"") && e.contains("not a service account"),
            "{e}"
        );
        // A user merely named like a service account, outside the group.
        let e = decide(
            &reviewed(
                "system:serviceaccount:shop:cart",
                &["system:authenticated"],
                &["istio-ca"],
            ),
            &aud(),
            "td",
        )
        .unwrap_err();
        assert!(e.contains("not a service account"), "{e}");
        // An API server that did not confirm our audience (or none).
        for answered in [
            &[][..],
            &["https://kubernetes.default.svc.cluster.local"][..],
        ] {
            let e = decide(
                &reviewed("system:serviceaccount:shop:cart", SA_GROUPS, answered),
                &aud(),
                "td",
            )
            .unwrap_err();
            assert!(
                e.contains("did not confirm") && e.contains("istio-ca"),
                "{e}"
            );
        }
    }

    fn jwt(claims: &str) -> String {
        let enc = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        format!("{}.{}.c2ln", enc(r#"{"alg":"RS256"}"#), enc(claims))
    }

    #[test]
    fn accepted_tokens_are_cached_no_longer_than_they_live() {
        let now = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let exp = |secs: u64| jwt(&format!(r#"{{"exp":{secs},"sub":"x"}}"#));
        assert_eq!(positive_ttl(&exp(1_000_600), now), POSITIVE_TTL);
        assert_eq!(positive_ttl(&exp(1_000_010), now), Duration::from_secs(10));
        assert_eq!(positive_ttl(&exp(999_000), now), Duration::ZERO);
        // No readable exp: the full time.
        assert_eq!(positive_ttl(&jwt(r#"{"sub":"x"}"#), now), POSITIVE_TTL);
        assert_eq!(positive_ttl("a.%%%.c", now), POSITIVE_TTL);
    }

    #[test]
    fn only_jwt_shaped_tokens_are_reviewed() {
        assert!(looks_like_jwt(&jwt(r#"{"exp":1}"#)));
        for not in [
            "garbage-token-0123456789",
            "a.b",
            "a..c",
            "a.b.c.d",
            "a b.c.d",
            "",
        ] {
            assert!(!looks_like_jwt(not), "{not:?}");
        }
    }

    fn id(sa: &str) -> Result<SpiffeId, String> {
        Ok(SpiffeId::new("td", "ns", sa).unwrap())
    }

    #[test]
    fn cache_answers_until_the_deadline() {
        let t0 = Instant::now();
        let mut cache = ReviewCache::new(8);
        let (a, b) = (digest("a"), digest("b"));
        cache.insert(a, id("a"), t0 + POSITIVE_TTL, t0);
        cache.insert(b, Err("refused".into()), t0 + NEGATIVE_TTL, t0);
        assert_eq!(cache.get(&a, t0), Some(id("a")));
        assert_eq!(
            cache.get(&b, t0 + Duration::from_secs(4)),
            Some(Err("refused".into()))
        );
        // Expired: gone, and removed.
        assert_eq!(cache.get(&b, t0 + NEGATIVE_TTL), None);
        assert_eq!(cache.len(), 1);
        assert_eq!(cache.get(&a, t0 + Duration::from_secs(59)), Some(id("a")));
        assert_eq!(cache.get(&a, t0 + POSITIVE_TTL), None);
        // A deadline already passed is not kept (and replaces nothing).
        cache.insert(a, id("a"), t0, t0);
        assert_eq!(cache.get(&a, t0), None);
        assert_eq!(cache.len(), 0);
    }

    #[test]
    fn a_full_cache_drops_the_expired_then_the_soonest_to_expire() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut cache = ReviewCache::new(3);
        let keys: Vec<Digest> = ["a", "b", "c", "d", "e"].map(digest).to_vec();
        cache.insert(keys[0], id("a"), t0 + s(5), t0);
        cache.insert(keys[1], id("b"), t0 + s(60), t0);
        cache.insert(keys[2], id("c"), t0 + s(30), t0);
        // At t0+10, a has expired: it makes room.
        cache.insert(keys[3], id("d"), t0 + s(70), t0 + s(10));
        assert_eq!(cache.len(), 3);
        assert_eq!(cache.get(&keys[1], t0 + s(10)), Some(id("b")));
        // Nothing expired: c (t0+30) is the soonest to go.
        cache.insert(keys[4], id("e"), t0 + s(80), t0 + s(11));
        assert_eq!(cache.len(), 3);
        assert_eq!(cache.get(&keys[2], t0 + s(11)), None);
        for k in [1, 3, 4] {
            assert!(cache.get(&keys[k], t0 + s(11)).is_some(), "{k}");
        }
        // Replacing a held key makes no room.
        cache.insert(keys[1], Err("revoked".into()), t0 + s(90), t0 + s(12));
        assert_eq!(cache.len(), 3);
        assert_eq!(cache.get(&keys[1], t0 + s(12)), Some(Err("revoked".into())));
    }
}
