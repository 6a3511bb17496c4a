//! JSON Web Key Sets: parsing (RSA, EC P-256/P-384, Ed25519 public keys)
//! and a cache for inline and remote (`jwksUri`) sets.
//!
//! Remote sets are fetched on first use, kept for
//! [`JwksConfig::refresh_interval`] and then refetched on the next use (a
//! failed refresh keeps serving the previous keys). A token whose `kid` is
//! not in the cached set triggers one refetch, at most once per
//! [`JwksConfig::min_refetch_interval`] per URI, which picks up rotated
//! keys without letting unknown-`kid` tokens hammer the issuer.
//!
//! Under load the issuer sees one fetch at a time per URI, not one per
//! request: concurrent requests that need a fetch wait for the one in
//! flight and take its result (single flight). A failed fetch is
//! remembered: until a backoff passes (1 s, doubling per consecutive
//! failure, capped at [`JwksConfig::max_failure_backoff`]) requests get
//! the previous keys, or the failure itself when there are none, without a
//! new fetch.
//!
//! Fetching goes through a [`JwksFetcher`]; the built-in [`HttpFetcher`]
//! speaks `http://` and `https://` (system CA bundle by default, or
//! [`HttpFetcher::with_ca_file`] for an issuer with a private CA).

use mesh_core::sync::LockExt;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use tokio::time::Instant;

pub use super::fetch::{FetcherError, HttpFetcher, MAX_JWKS_BYTES};
use super::verify::JwtError;
use crate::server::authz::BoxFuture;

/// The key material of one JWK.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyMaterial {
    /// An RSA public key (big-endian modulus and exponent).
    Rsa {
        /// Modulus.
        n: Vec<u8>,
        /// Public exponent.
        e: Vec<u8>,
    },
    /// An EC public key as an uncompressed point (`04 || x || y`).
    Ec {
        /// `P-256` or `P-384`.
        crv: String,
        /// The uncompressed point.
        point: Vec<u8>,
    },
    /// An Ed25519 public key.
    Ed25519 {
        /// The 32-byte key.
        x: Vec<u8>,
    },
}

/// One public key of a set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Jwk {
    /// Key id.
    pub kid: Option<String>,
    /// The algorithm the key is restricted to, if it says.
    pub alg: Option<String>,
    /// `use` (`sig` or `enc`).
    pub use_: Option<String>,
    /// The key.
    pub material: KeyMaterial,
}

fn field(key: &serde_json::Value, name: &str) -> Option<String> {
    key.get(name).and_then(|v| v.as_str()).map(str::to_string)
}

fn bytes(key: &serde_json::Value, name: &str) -> Result<Vec<u8>, String> {
    let s = key
        .get(name)
        .and_then(|v| v.as_str())
        .ok_or_else(|| format!("key is missing {name:?}"))?;
    URL_SAFE_NO_PAD
        .decode(s.trim_end_matches('='))
        .map_err(|e| format!("{name:?} is not base64url: {e}"))
}

fn parse_key(key: &serde_json::Value) -> Result<Option<Jwk>, String> {
    let material = match key.get("kty").and_then(|v| v.as_str()) {
        Some("RSA") => KeyMaterial::Rsa {
            n: bytes(key, "n")?,
            e: bytes(key, "e")?,
        },
        Some("EC") => {
            let crv = field(key, "crv").unwrap_or_default();
            let len = match crv.as_str() {
                "P-256" => 32,
                "P-384" => 48,
                _ => return Ok(None),
            };
            let (x, y) = (bytes(key, "x")?, bytes(key, "y")?);
            if x.len() != len || y.len() != len {
                return Err(format!("{crv} key coordinates must be {len} bytes"));
            }
            let mut point = Vec::with_capacity(1 + 2 * len);
            point.push(4);
            point.extend_from_slice(&x);
            point.extend_from_slice(&y);
            KeyMaterial::Ec { crv, point }
        }
        Some("OKP") if field(key, "crv").as_deref() == Some("Ed25519") => KeyMaterial::Ed25519 {
            x: bytes(key, "x")?,
        },
        // Symmetric (`oct`) and other keys are never used: see `verify`.
        _ => return Ok(None),
    };
    Ok(Some(Jwk {
        kid: field(key, "kid"),
        alg: field(key, "alg"),
        use_: field(key, "use"),
        material,
    }))
}

/// Parses a JWKS document (`{"keys": [...]}`), skipping key types the
/// mesh never verifies with.
pub fn parse_jwks(json: &str) -> Result<Vec<Jwk>, String> {
    let doc: serde_json::Value =
        serde_json::from_str(json).map_err(|e| format!("JWKS is not JSON: {e}"))?;
    let keys = doc
        .get("keys")
        .and_then(|k| k.as_array())
        .ok_or("JWKS has no \"keys\" array")?;
    let mut out = Vec::new();
    for k in keys {
        if let Some(jwk) = parse_key(k)? {
            out.push(jwk);
        }
    }
    Ok(out)
}

/// Fetches a JWKS document by URI.
pub trait JwksFetcher: Send + Sync + 'static {
    /// The body at `uri`, or why it could not be fetched.
    fn fetch(&self, uri: &str, timeout: Duration) -> BoxFuture<Result<String, String>>;
}

/// Cache settings.
#[derive(Debug, Clone)]
pub struct JwksConfig {
    /// How long a fetched set is used before it is refetched (5 min).
    pub refresh_interval: Duration,
    /// Minimum time between refetches caused by unknown `kid`s (10 s).
    pub min_refetch_interval: Duration,
    /// Fetch timeout when the rule sets none (5 s, Istio's default).
    pub default_timeout: Duration,
    /// The longest wait after failed fetches before the next one (60 s).
    pub max_failure_backoff: Duration,
}

impl Default for JwksConfig {
    fn default() -> Self {
        JwksConfig {
            refresh_interval: Duration::from_secs(300),
            min_refetch_interval: Duration::from_secs(10),
            default_timeout: Duration::from_secs(5),
            max_failure_backoff: Duration::from_secs(60),
        }
    }
}

#[derive(Default)]
struct Remote {
    keys: Option<Arc<Vec<Jwk>>>,
    fetched: Option<Instant>,
    /// The last refetch caused by an unknown `kid`.
    last_kid_refetch: Option<Instant>,
    /// Held by the one fetch in flight; waiters queue on it.
    flight: Arc<tokio::sync::Mutex<()>>,
    /// Consecutive failed fetches, and when the next may start.
    failures: u32,
    retry_at: Option<Instant>,
    last_error: Option<String>,
}

/// Inline and remote key sets, shared by every request of a server.
pub struct JwksCache {
    config: JwksConfig,
    fetcher: Arc<dyn JwksFetcher>,
    inline: Mutex<HashMap<String, Arc<Vec<Jwk>>>>,
    remote: Mutex<HashMap<String, Remote>>,
}

impl std::fmt::Debug for JwksCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwksCache")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl JwksCache {
    /// A cache fetching with `fetcher`.
    pub fn new(config: JwksConfig, fetcher: Arc<dyn JwksFetcher>) -> Self {
        JwksCache {
            config,
            fetcher,
            inline: Mutex::new(HashMap::new()),
            remote: Mutex::new(HashMap::new()),
        }
    }

    /// The parsed keys of an inline JWKS (parsed once per distinct text).
    pub fn inline(&self, jwks: &str) -> Result<Arc<Vec<Jwk>>, JwtError> {
        let mut map = self.inline.locked();
        if let Some(k) = map.get(jwks) {
            return Ok(k.clone());
        }
        let keys = Arc::new(parse_jwks(jwks).map_err(JwtError::Jwks)?);
        if map.len() > 256 {
            map.clear();
        }
        map.insert(jwks.to_string(), keys.clone());
        Ok(keys)
    }

    /// What a caller may use without fetching: fresh keys; or, while a
    /// failure's backoff runs, the previous keys or that failure.
    fn settled(&self, r: &Remote) -> Option<Result<Arc<Vec<Jwk>>, JwtError>> {
        let fresh = r
            .fetched
            .is_some_and(|t| t.elapsed() < self.config.refresh_interval);
        if let (true, Some(k)) = (fresh, &r.keys) {
            return Some(Ok(k.clone()));
        }
        if r.retry_at.is_some_and(|t| Instant::now() < t) {
            return Some(match (&r.keys, &r.last_error) {
                (Some(k), _) => Ok(k.clone()),
                (None, e) => Err(JwtError::Jwks(e.clone().unwrap_or_default())),
            });
        }
        None
    }

    /// Fetches `uri` unless `settled` says another fetch made it needless
    /// while this one waited for the flight (single flight per URI).
    async fn fetch(
        &self,
        uri: &str,
        timeout: Duration,
        settled: impl Fn(&Remote) -> Option<Result<Arc<Vec<Jwk>>, JwtError>>,
    ) -> Result<Arc<Vec<Jwk>>, JwtError> {
        let flight = self
            .remote
            .locked()
            .entry(uri.to_string())
            .or_default()
            .flight
            .clone();
        let _turn = flight.lock().await;
        if let Some(done) = self.remote.locked().get(uri).and_then(&settled) {
            return done;
        }
        let result = self
            .fetcher
            .fetch(uri, timeout)
            .await
            .and_then(|body| parse_jwks(&body));
        let mut map = self.remote.locked();
        let entry = map.entry(uri.to_string()).or_default();
        match result {
            Ok(keys) => {
                let keys = Arc::new(keys);
                entry.keys = Some(keys.clone());
                entry.fetched = Some(Instant::now());
                entry.failures = 0;
                entry.retry_at = None;
                entry.last_error = None;
                Ok(keys)
            }
            Err(e) => {
                entry.failures = entry.failures.saturating_add(1);
                let backoff = Duration::from_secs(1)
                    .saturating_mul(1 << entry.failures.min(16).saturating_sub(1))
                    .min(self.config.max_failure_backoff);
                entry.retry_at = Some(Instant::now() + backoff);
                entry.last_error = Some(e.clone());
                tracing::warn!(target: "mesh::jwt", %uri, error = %e, failures = entry.failures, retry_in = ?backoff, "JWKS fetch failed");
                entry.keys.clone().ok_or(JwtError::Jwks(e))
            }
        }
    }

    /// The keys at `uri`: cached, or fetched when missing or stale.
    pub async fn remote(
        &self,
        uri: &str,
        timeout: Option<Duration>,
    ) -> Result<Arc<Vec<Jwk>>, JwtError> {
        let timeout = timeout.unwrap_or(self.config.default_timeout);
        if let Some(done) = self.remote.locked().get(uri).and_then(|r| self.settled(r)) {
            return done;
        }
        self.fetch(uri, timeout, |r| self.settled(r)).await
    }

    /// Refetches `uri` because a token named a `kid` the cached set lacks;
    /// `None` when a refetch happened too recently.
    pub async fn refetch_for_unknown_kid(
        &self,
        uri: &str,
        timeout: Option<Duration>,
    ) -> Option<Arc<Vec<Jwk>>> {
        let asked = {
            let mut map = self.remote.locked();
            let entry = map.entry(uri.to_string()).or_default();
            if entry
                .last_kid_refetch
                .is_some_and(|t| t.elapsed() < self.config.min_refetch_interval)
                || entry.retry_at.is_some_and(|t| Instant::now() < t)
            {
                return None;
            }
            let now = Instant::now();
            entry.last_kid_refetch = Some(now);
            now
        };
        // A fetch that finished after this one asked already has the
        // newest keys.
        self.fetch(uri, timeout.unwrap_or(self.config.default_timeout), |r| {
            r.fetched
                .filter(|t| *t >= asked)
                .and(r.keys.clone())
                .map(Ok)
        })
        .await
        .ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_skips() {
        let keys = parse_jwks(
            r#"{"keys":[{"kty":"oct","k":"c2VjcmV0"},{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo","kid":"e"}]}"#,
        )
        .unwrap();
        assert_eq!(keys.len(), 1);
        assert_eq!(keys[0].kid.as_deref(), Some("e"));
        assert!(parse_jwks("{}").is_err());
        assert!(parse_jwks(r#"{"keys":[{"kty":"RSA","n":"!!","e":"AQAB"}]}"#).is_err());
    }
}

#[cfg(test)]
mod stress_tests {
    //! The issuer under load: one fetch at a time per URI, and a failure
    //! remembered for its backoff (paused clock).
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    const JWKS: &str = r#"{"keys":[{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo","kid":"e"}]}"#;

    /// Counts fetches; each takes `delay`, then answers the JWKS or fails.
    struct Counting {
        fetches: AtomicUsize,
        delay: Duration,
        ok: std::sync::atomic::AtomicBool,
    }

    impl JwksFetcher for Counting {
        fn fetch(&self, _uri: &str, _timeout: Duration) -> BoxFuture<Result<String, String>> {
            self.fetches.fetch_add(1, Ordering::SeqCst);
            let delay = self.delay;
            let ok = self.ok.load(Ordering::SeqCst);
            Box::pin(async move {
                tokio::time::sleep(delay).await;
                if ok {
                    Ok(JWKS.to_string())
                } else {
                    Err("issuer down".to_string())
                }
            })
        }
    }

    fn cache(ok: bool) -> (Arc<JwksCache>, Arc<Counting>) {
        let f = Arc::new(Counting {
            fetches: AtomicUsize::new(0),
            delay: Duration::from_millis(200),
            ok: std::sync::atomic::AtomicBool::new(ok),
        });
        (
            Arc::new(JwksCache::new(JwksConfig::default(), f.clone())),
            f,
        )
    }

    async fn burst(c: &Arc<JwksCache>, n: usize) -> Vec<Result<Arc<Vec<Jwk>>, JwtError>> {
        let tasks: Vec<_> = (0..n)
            .map(|_| {
                let c = c.clone();
                tokio::spawn(async move { c.remote("https://issuer/jwks", None).await })
            })
            .collect();
        let mut out = Vec::new();
        for t in tasks {
            out.push(t.await.unwrap());
        }
        out
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_requests_share_one_fetch() {
        let (c, f) = cache(true);
        let all = burst(&c, 100).await;
        assert!(all.iter().all(|r| r.as_ref().is_ok_and(|k| k.len() == 1)));
        assert_eq!(f.fetches.load(Ordering::SeqCst), 1);
        // Stale after the refresh interval: again one fetch for a burst.
        tokio::time::advance(Duration::from_secs(301)).await;
        burst(&c, 50).await;
        assert_eq!(f.fetches.load(Ordering::SeqCst), 2);
        // Unknown kids: one refetch however many tokens name them.
        tokio::time::advance(Duration::from_secs(11)).await;
        let kid: Vec<_> = (0..20)
            .map(|_| {
                let c = c.clone();
                tokio::spawn(
                    async move { c.refetch_for_unknown_kid("https://issuer/jwks", None).await },
                )
            })
            .collect();
        for t in kid {
            t.await.unwrap();
        }
        assert_eq!(f.fetches.load(Ordering::SeqCst), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn a_down_issuer_is_asked_once_per_backoff() {
        let (c, f) = cache(false);
        let all = burst(&c, 100).await;
        assert!(all.iter().all(Result::is_err));
        assert_eq!(
            f.fetches.load(Ordering::SeqCst),
            1,
            "one fetch for the burst"
        );
        // Within the 1 s backoff: the failure, no fetch.
        burst(&c, 100).await;
        assert_eq!(f.fetches.load(Ordering::SeqCst), 1);
        tokio::time::advance(Duration::from_millis(1100)).await;
        burst(&c, 100).await;
        assert_eq!(f.fetches.load(Ordering::SeqCst), 2);
        // The backoff doubles: 1.1 s later is still inside it.
        tokio::time::advance(Duration::from_millis(1100)).await;
        burst(&c, 100).await;
        assert_eq!(f.fetches.load(Ordering::SeqCst), 2);
        // The issuer recovers; after the backoff the keys come back.
        f.ok.store(true, Ordering::SeqCst);
        tokio::time::advance(Duration::from_secs(2)).await;
        assert!(burst(&c, 10).await.iter().all(Result::is_ok));
        assert_eq!(f.fetches.load(Ordering::SeqCst), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn stale_keys_serve_while_the_issuer_is_down() {
        let (c, f) = cache(true);
        burst(&c, 1).await;
        f.ok.store(false, Ordering::SeqCst);
        tokio::time::advance(Duration::from_secs(301)).await;
        let all = burst(&c, 100).await;
        assert!(all.iter().all(|r| r.as_ref().is_ok_and(|k| k.len() == 1)));
        assert_eq!(
            f.fetches.load(Ordering::SeqCst),
            2,
            "one failed refresh for the burst"
        );
        burst(&c, 100).await;
        assert_eq!(f.fetches.load(Ordering::SeqCst), 2, "inside the backoff");
    }
}
