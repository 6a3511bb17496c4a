//! Bearer tokens and key sets.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use mesh_tower::server::jwt::jwks::parse_jwks;
use mesh_tower::server::jwt::verify::{check_claims, decode, verify_signature};

/// The issuer the seeds' tokens name.
pub const ISSUER: &str = "https://issuer.fuzz.test";
/// The audience the seeds' tokens name.
pub const AUDIENCE: &str = "reviews.fuzz.test";
/// "Now" for claim checks, so a seed's verdict does not change with time.
pub const NOW: u64 = 1_800_000_000;
/// The public half of [`crate::seeds::SIGNING_KEY`].
pub const JWKS: &str = r#"{"keys":[{"kty":"EC","crv":"P-256","kid":"fuzz","alg":"ES256","use":"sig","x":"pJUE5y5s0AVpw7E3e2MqMJNNloyfqp7sFhO7uT4x4EQ","y":"tsREqztDG0mYLSjl3W1_65khLcZ7Pg67t9EkvW1MTFI"}]}"#;

/// An input starting with `{` is a key set, verifying nothing but parsed
/// as the JWKS fetcher does; anything else is a token.
pub fn jwt(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if text.starts_with('{') {
        let _ = parse_jwks(text);
        return;
    }
    let Ok(token) = decode(text) else {
        return;
    };
    let _ = check_claims(&token.claims, ISSUER, &[AUDIENCE.to_string()], NOW, 60);
    let keys = match parse_jwks(JWKS) {
        Ok(k) => k,
        Err(e) => panic!("the fixed JWKS does not parse: {e}"),
    };
    if verify_signature(&token, &keys).is_err() {
        return;
    }
    // It verified: it is one of the seeds (or the fuzzer forged ES256).
    // Every single-byte change of the signature must break it.
    let Some((signed, sig)) = text.rsplit_once('.') else {
        panic!("a verified token without a signature part: {text:?}");
    };
    let Ok(sig) = URL_SAFE_NO_PAD.decode(sig.trim_end_matches('=')) else {
        panic!("a verified token whose signature is not base64url: {text:?}");
    };
    for i in 0..sig.len() {
        let mut bad = sig.clone();
        bad[i] ^= 0x01;
        let forged = format!("{signed}.{}", URL_SAFE_NO_PAD.encode(&bad));
        if let Ok(t) = decode(&forged) {
            assert!(
                verify_signature(&t, &keys).is_err(),
                "a token still verifies with signature byte {i} changed: {forged}"
            );
        }
    }
}
