//! JWS compact-serialization verification with `ring`: header, signature
//! and the time/issuer/audience claims.
//!
//! Accepted algorithms: RS256/384/512, PS256/384/512, ES256, ES384, EdDSA
//! (Ed25519). `none` and the HMAC family (HS*) are always refused: a mesh
//! key set holds public keys, and accepting HS* with a public key as the
//! secret is the classic algorithm-confusion forgery. The key must be of
//! the algorithm's type (and curve), and a key that names its own `alg`
//! must name the token's.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ring::signature::{self, UnparsedPublicKey};

use super::jwks::{Jwk, KeyMaterial};

/// Why a token was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwtError {
    /// Not three base64url parts, or a part is not JSON.
    #[error("Jwt is not in the form of Header.Payload.Signature: {0}")]
    Malformed(String),
    /// `alg` is `none`, HS*, or unknown.
    #[error("Jwt algorithm {0:?} is not allowed")]
    Algorithm(String),
    /// No key of the set fits the token (kid/alg/type).
    #[error("no key in the JWKS matches the token (kid {0:?})")]
    UnknownKey(Option<String>),
    /// The signature did not verify.
    #[error("Jwt verification fails")]
    Signature,
    /// `exp` passed.
    #[error("Jwt is expired")]
    Expired,
    /// `nbf` in the future.
    #[error("Jwt not yet valid")]
    NotYetValid,
    /// `iss` is not the rule's issuer.
    #[error("Jwt issuer {0:?} is not configured")]
    Issuer(String),
    /// No `aud` value is accepted.
    #[error("Audiences in Jwt are not allowed")]
    Audience,
    /// The key set could not be obtained.
    #[error("Jwks could not be fetched: {0}")]
    Jwks(String),
}

/// A token split and decoded, not yet verified.
#[derive(Debug, Clone)]
pub struct Decoded {
    /// `alg` of the header.
    pub alg: String,
    /// `kid` of the header.
    pub kid: Option<String>,
    /// The payload.
    pub claims: serde_json::Value,
    /// The payload part as sent (base64url).
    pub payload_b64: String,
    signing_input: String,
    signature: Vec<u8>,
}

fn b64(part: &str, what: &str) -> Result<Vec<u8>, JwtError> {
    URL_SAFE_NO_PAD
        .decode(part.trim_end_matches('='))
        .map_err(|e| JwtError::Malformed(format!("{what} is not base64url: {e}")))
}

/// Splits and decodes a compact JWS.
pub fn decode(token: &str) -> Result<Decoded, JwtError> {
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(JwtError::Malformed("expected three parts".into()));
    };
    let header: serde_json::Value = serde_json::from_slice(&b64(h, "header")?)
        .map_err(|e| JwtError::Malformed(format!("header: {e}")))?;
    let claims: serde_json::Value = serde_json::from_slice(&b64(p, "payload")?)
        .map_err(|e| JwtError::Malformed(format!("payload: {e}")))?;
    if !claims.is_object() {
        return Err(JwtError::Malformed("payload is not a JSON object".into()));
    }
    let alg = header
        .get("alg")
        .and_then(|a| a.as_str())
        .ok_or_else(|| JwtError::Malformed("header has no alg".into()))?
        .to_string();
    let kid = header
        .get("kid")
        .and_then(|k| k.as_str())
        .map(str::to_string);
    Ok(Decoded {
        alg,
        kid,
        claims,
        payload_b64: p.to_string(),
        signing_input: format!("{h}.{p}"),
        signature: b64(s, "signature")?,
    })
}

/// How an `alg` is verified, and with which key type.
#[derive(Clone, Copy)]
enum Verifier {
    Rsa(&'static signature::RsaParameters),
    Ec(&'static signature::EcdsaVerificationAlgorithm, &'static str),
    Ed25519,
}

fn algorithm(alg: &str) -> Result<Verifier, JwtError> {
    Ok(match alg {
        "RS256" => Verifier::Rsa(&signature::RSA_PKCS1_2048_8192_SHA256),
        "RS384" => Verifier::Rsa(&signature::RSA_PKCS1_2048_8192_SHA384),
        "RS512" => Verifier::Rsa(&signature::RSA_PKCS1_2048_8192_SHA512),
        "PS256" => Verifier::Rsa(&signature::RSA_PSS_2048_8192_SHA256),
        "PS384" => Verifier::Rsa(&signature::RSA_PSS_2048_8192_SHA384),
        "PS512" => Verifier::Rsa(&signature::RSA_PSS_2048_8192_SHA512),
        "ES256" => Verifier::Ec(&signature::ECDSA_P256_SHA256_FIXED, "P-256"),
        "ES384" => Verifier::Ec(&signature::ECDSA_P384_SHA384_FIXED, "P-384"),
        "EdDSA" => Verifier::Ed25519,
        other => return Err(JwtError::Algorithm(other.to_string())),
    })
}

fn key_fits(key: &Jwk, alg: &str, verifier: Verifier) -> bool {
    if key.alg.as_deref().is_some_and(|a| a != alg) {
        return false;
    }
    if key.use_.as_deref().is_some_and(|u| u != "sig") {
        return false;
    }
    match (&key.material, verifier) {
        (KeyMaterial::Rsa { .. }, Verifier::Rsa(_)) => true,
        (KeyMaterial::Ed25519 { .. }, Verifier::Ed25519) => true,
        (KeyMaterial::Ec { crv, .. }, Verifier::Ec(_, c)) => crv == c,
        _ => false,
    }
}

fn verify_with(key: &Jwk, verifier: Verifier, msg: &[u8], sig: &[u8]) -> bool {
    match (&key.material, verifier) {
        (KeyMaterial::Rsa { n, e }, Verifier::Rsa(params)) => {
            signature::RsaPublicKeyComponents { n, e }
                .verify(params, msg, sig)
                .is_ok()
        }
        (KeyMaterial::Ec { point, .. }, Verifier::Ec(alg, _)) => {
            UnparsedPublicKey::new(alg, point).verify(msg, sig).is_ok()
        }
        (KeyMaterial::Ed25519 { x }, Verifier::Ed25519) => {
            UnparsedPublicKey::new(&signature::ED25519, x)
                .verify(msg, sig)
                .is_ok()
        }
        _ => false,
    }
}

/// Verifies the signature of `token` with the keys of a set. Returns
/// [`JwtError::UnknownKey`] when no key fits (the caller may refetch the
/// set) and [`JwtError::Signature`] when keys fit but none verifies.
pub fn verify_signature(token: &Decoded, keys: &[Jwk]) -> Result<(), JwtError> {
    let verifier = algorithm(&token.alg)?;
    let mut candidates = keys
        .iter()
        .filter(|k| match (&token.kid, &k.kid) {
            (Some(t), Some(k)) => t == k,
            _ => true,
        })
        .filter(|k| key_fits(k, &token.alg, verifier))
        .peekable();
    if candidates.peek().is_none() {
        return Err(JwtError::UnknownKey(token.kid.clone()));
    }
    let msg = token.signing_input.as_bytes();
    if candidates.any(|k| verify_with(k, verifier, msg, &token.signature)) {
        Ok(())
    } else {
        Err(JwtError::Signature)
    }
}

/// The `aud` claim as a list (a string or an array of strings).
pub fn audiences(claims: &serde_json::Value) -> Vec<String> {
    match claims.get("aud") {
        Some(serde_json::Value::String(s)) => vec![s.clone()],
        Some(serde_json::Value::Array(a)) => a
            .iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect(),
        _ => Vec::new(),
    }
}

/// Checks `iss`, `exp`, `nbf` (with `skew_secs` of tolerance) and `aud`
/// (any of `accepted`; an empty list accepts any audience).
pub fn check_claims(
    claims: &serde_json::Value,
    issuer: &str,
    accepted: &[String],
    now_secs: u64,
    skew_secs: u64,
) -> Result<(), JwtError> {
    let iss = claims.get("iss").and_then(|v| v.as_str()).unwrap_or("");
    if iss != issuer {
        return Err(JwtError::Issuer(iss.to_string()));
    }
    // A time claim that is present must be a whole number of seconds, as
    // Envoy requires: `"exp": "1"` read as "no expiry" would accept a
    // token forever.
    let time = |name: &str| match claims.get(name) {
        None => Ok(None),
        Some(v) => v.as_u64().map(Some).ok_or_else(|| {
            JwtError::Malformed(format!("claim {name} is not a non-negative integer: {v}"))
        }),
    };
    if let Some(exp) = time("exp")? {
        if now_secs > exp.saturating_add(skew_secs) {
            return Err(JwtError::Expired);
        }
    }
    if let Some(nbf) = time("nbf")? {
        if now_secs.saturating_add(skew_secs) < nbf {
            return Err(JwtError::NotYetValid);
        }
    }
    time("iat")?;
    if !accepted.is_empty() && !audiences(claims).iter().any(|a| accepted.contains(a)) {
        return Err(JwtError::Audience);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claims_checks() {
        let c = serde_json::json!({"iss": "i", "exp": 1000, "nbf": 500, "aud": ["a", "b"]});
        assert_eq!(check_claims(&c, "i", &[], 900, 60), Ok(()));
        assert_eq!(check_claims(&c, "i", &[], 1050, 60), Ok(()));
        assert_eq!(check_claims(&c, "i", &[], 1061, 60), Err(JwtError::Expired));
        assert_eq!(
            check_claims(&c, "i", &[], 400, 60),
            Err(JwtError::NotYetValid)
        );
        // Time claims of the wrong type are refused, not ignored.
        for bad in [
            serde_json::json!({"iss": "i", "exp": "1000"}),
            serde_json::json!({"iss": "i", "exp": 1000.5}),
            serde_json::json!({"iss": "i", "nbf": -1}),
            serde_json::json!({"iss": "i", "iat": null}),
            serde_json::json!({"iss": "i", "exp": [1]}),
        ] {
            assert!(
                matches!(
                    check_claims(&bad, "i", &[], 900, 60),
                    Err(JwtError::Malformed(_))
                ),
                "{bad}"
            );
        }
        let far = serde_json::json!({"iss": "i", "exp": u64::MAX, "nbf": 0});
        assert_eq!(check_claims(&far, "i", &[], u64::MAX - 1, 60), Ok(()));
        assert_eq!(
            check_claims(&c, "x", &[], 900, 60),
            Err(JwtError::Issuer("i".into()))
        );
        assert_eq!(check_claims(&c, "i", &["b".into()], 900, 60), Ok(()));
        assert_eq!(
            check_claims(&c, "i", &["z".into()], 900, 60),
            Err(JwtError::Audience)
        );
    }

    #[test]
    fn refuses_none_and_hmac() {
        for alg in ["none", "HS256", "HS384", "HS512", "RS1", ""] {
            assert!(
                matches!(algorithm(alg), Err(JwtError::Algorithm(_))),
                "{alg}"
            );
        }
    }

    #[test]
    fn malformed() {
        assert!(matches!(decode("a.b"), Err(JwtError::Malformed(_))));
        assert!(matches!(decode("a.b.c.d"), Err(JwtError::Malformed(_))));
        assert!(matches!(decode("!!.e30.x"), Err(JwtError::Malformed(_))));
    }
}
