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
}

impl Default for JwksConfig {
    fn default() -> Self {
        JwksConfig {
            refresh_interval: Duration::from_secs(300),
            min_refetch_interval: Duration::from_secs(10),
            default_timeout: Duration::from_secs(5),
        }
    }
}

struct Remote {
    keys: Option<Arc<Vec<Jwk>>>,
    fetched: Option<Instant>,
    /// The last refetch caused by an unknown `kid`.
    last_kid_refetch: Option<Instant>,
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

    async fn fetch(&self, uri: &str, timeout: Duration) -> Result<Arc<Vec<Jwk>>, JwtError> {
        let result = self
            .fetcher
            .fetch(uri, timeout)
            .await
            .and_then(|body| parse_jwks(&body));
        let mut map = self.remote.locked();
        let entry = map.entry(uri.to_string()).or_insert(Remote {
            keys: None,
            fetched: None,
            last_kid_refetch: None,
        });
        match result {
            Ok(keys) => {
                let keys = Arc::new(keys);
                entry.keys = Some(keys.clone());
                entry.fetched = Some(Instant::now());
                Ok(keys)
            }
            Err(e) => {
                tracing::warn!(target: "mesh::jwt", %uri, error = %e, "JWKS fetch failed");
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
        let cached = {
            let map = self.remote.locked();
            map.get(uri).and_then(|r| {
                let keys = r.keys.clone()?;
                let fresh = r
                    .fetched
                    .is_some_and(|t| t.elapsed() < self.config.refresh_interval);
                Some((keys, fresh))
            })
        };
        match cached {
            Some((keys, true)) => Ok(keys),
            _ => self.fetch(uri, timeout).await,
        }
    }

    /// Refetches `uri` because a token named a `kid` the cached set lacks;
    /// `None` when a refetch happened too recently.
    pub async fn refetch_for_unknown_kid(
        &self,
        uri: &str,
        timeout: Option<Duration>,
    ) -> Option<Arc<Vec<Jwk>>> {
        {
            let mut map = self.remote.locked();
            let entry = map.entry(uri.to_string()).or_insert(Remote {
                keys: None,
                fetched: None,
                last_kid_refetch: None,
            });
            if entry
                .last_kid_refetch
                .is_some_and(|t| t.elapsed() < self.config.min_refetch_interval)
            {
                return None;
            }
            entry.last_kid_refetch = Some(Instant::now());
        }
        self.fetch(uri, timeout.unwrap_or(self.config.default_timeout))
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
