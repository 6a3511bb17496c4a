//! Bootstrap tokens: the way a workload without a mesh certificate proves
//! who it is to the CA for its first certificate.
//!
//! Tokens are configured in a JSON file that binds each token to a
//! namespace and service account (the trust domain is the CA's):
//!
//! ```json
//! {
//!   "tokens": [
//!     { "token": "3f1c…random…", "namespace": "default", "serviceAccount": "productpage" },
//!     { "token": "9b7e…random…", "namespace": "shop",    "serviceAccount": "cart" }
//!   ]
//! }
//! ```
//!
//! Callers send `authorization: Bearer <token>` as gRPC metadata. Tokens are
//! kept only as SHA-256 digests in memory and looked up by digest, so lookup
//! time does not depend on how many leading characters of a guess match.
//! Treat the file like a key: mode 0600, generated with a CSPRNG.
//!
//! Tokens the file does not list may still be good: a [`TokenVerifier`]
//! (meshd's checks Kubernetes service account tokens with the API server's
//! TokenReview, as istiod does) is asked next, when the CA has one.

use std::collections::HashMap;
use std::future::Future;
use std::path::Path;
use std::pin::Pin;

use serde::Deserialize;

use crate::error::{Error, Result};
use crate::fsutil;
use crate::spiffe::SpiffeId;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenFile {
    tokens: Vec<TokenEntry>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct TokenEntry {
    token: String,
    namespace: String,
    service_account: String,
}

type Digest = [u8; 32];

fn digest(token: &str) -> Digest {
    let d = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// The configured bootstrap tokens and the identity each one grants.
#[derive(Debug, Clone, Default)]
pub struct TokenStore {
    by_digest: HashMap<Digest, (String, String)>,
}

/// The shortest token accepted, to keep guessing impractical.
pub const MIN_TOKEN_LEN: usize = 16;

impl TokenStore {
    /// No tokens: only certificate-based renewal is possible.
    pub fn empty() -> Self {
        TokenStore::default()
    }

    /// Builds from `(token, namespace, service account)` triples.
    pub fn from_entries<'a>(
        entries: impl IntoIterator<Item = (&'a str, &'a str, &'a str)>,
    ) -> Result<Self> {
        let mut by_digest = HashMap::new();
        for (i, (token, ns, sa)) in entries.into_iter().enumerate() {
            if token.len() < MIN_TOKEN_LEN {
                return Err(Error::Config(format!(
                    "token #{} is shorter than {MIN_TOKEN_LEN} characters; generate a random one",
                    i + 1
                )));
            }
            // Validate the namespace and service account as SPIFFE segments.
            SpiffeId::new("placeholder.td", ns, sa)?;
            if by_digest
                .insert(digest(token), (ns.to_string(), sa.to_string()))
                .is_some()
            {
                return Err(Error::Config(format!(
                    "token #{} is listed twice; each token must grant exactly one identity",
                    i + 1
                )));
            }
        }
        Ok(TokenStore { by_digest })
    }

    /// Parses the JSON token file format described in the module docs.
    pub fn from_json(text: &str, what: &str) -> Result<Self> {
        let file: TokenFile = serde_json::from_str(text)
            .map_err(|e| Error::Config(format!("{what}: {e} (expected {{\"tokens\": [{{\"token\", \"namespace\", \"serviceAccount\"}}]}})")))?;
        TokenStore::from_entries(file.tokens.iter().map(|t| {
            (
                t.token.as_str(),
                t.namespace.as_str(),
                t.service_account.as_str(),
            )
        }))
        .map_err(|e| Error::Config(format!("{what}: {e}")))
    }

    /// Reads and parses a token file.
    pub fn load(path: &Path) -> Result<Self> {
        TokenStore::from_json(&fsutil::read_string(path)?, &path.display().to_string())
    }

    /// The identity `token` grants in `trust_domain`, if the token is known.
    pub fn lookup(&self, token: &str, trust_domain: &str) -> Option<SpiffeId> {
        let (ns, sa) = self.by_digest.get(&digest(token))?;
        SpiffeId::new(trust_domain, ns.as_str(), sa.as_str()).ok()
    }

    /// How many tokens are configured.
    pub fn len(&self) -> usize {
        self.by_digest.len()
    }

    /// Whether no token is configured.
    pub fn is_empty(&self) -> bool {
        self.by_digest.is_empty()
    }
}

/// What [`TokenVerifier::verify`] returns: a boxed future, since
/// verifiers are trait objects (and a verification is off the hot path:
/// once per ADS stream or certificate request).
pub type VerifyFuture<'a> =
    Pin<Box<dyn Future<Output = std::result::Result<Option<SpiffeId>, String>> + Send + 'a>>;

/// A pluggable check of bearer tokens the [`TokenStore`] does not know,
/// such as Kubernetes service account tokens. The CA asks it after the
/// client certificate and the token file, and grants the identity it
/// returns (which must be in the CA's trust domain).
pub trait TokenVerifier: Send + Sync + 'static {
    /// Checks `token`: `Ok(Some(id))` when it proves `id`, `Ok(None)` when
    /// it is not a token this verifier knows anything about, `Err(why)` when
    /// it is refused or cannot be checked right now. `why` reaches the
    /// caller in an `UNAUTHENTICATED` status, so it should say what to fix
    /// and never echo the token.
    fn verify<'a>(&'a self, token: &'a str) -> VerifyFuture<'a>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_looks_up() {
        let store = TokenStore::from_json(
            r#"{"tokens":[{"token":"0123456789abcdef","namespace":"default","serviceAccount":"web"}]}"#,
            "t.json",
        )
        .unwrap();
        assert_eq!(
            store.lookup("0123456789abcdef", "td").unwrap().to_string(),
            "spiffe://td/ns/default/sa/web"
        );
        assert!(store.lookup("0123456789abcdeX", "td").is_none());
    }

    #[test]
    fn rejects_short_duplicate_and_unknown_fields() {
        let short = r#"{"tokens":[{"token":"abc","namespace":"a","serviceAccount":"b"}]}"#;
        assert!(TokenStore::from_json(short, "t").is_err());
        let dup = r#"{"tokens":[{"token":"0123456789abcdef","namespace":"a","serviceAccount":"b"},
                               {"token":"0123456789abcdef","namespace":"a","serviceAccount":"c"}]}"#;
        assert!(TokenStore::from_json(dup, "t").is_err());
        let unknown = r#"{"tokens":[{"token":"0123456789abcdef","namespace":"a","sa":"b"}]}"#;
        assert!(TokenStore::from_json(unknown, "t").is_err());
    }
}
