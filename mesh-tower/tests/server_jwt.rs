//! JWT test vectors through the inbound stack: every rejection is a 401
//! with `www-authenticate`, a missing token reaches authorization, and
//! key rotation via a JWKS server on loopback.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use http::{Request, Response};
use mesh_test_support::inbound::model;
use mesh_tower::body::{self, MeshBody};
use mesh_tower::server::jwt::{JwksConfig, JwtAuthn, JwtConfig};
use mesh_tower::server::InboundLayer;
use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, Ed25519KeyPair, KeyPair, RsaKeyPair};
use rustls_pki_types::pem::PemObject;
use tokio::sync::watch;
use tower::{Layer, ServiceExt};

/// A 2048-bit RSA test key (ring cannot generate RSA keys).
const RSA_PKCS8_PEM: &str = "-----BEGIN PRIVATE KEY-----\nMIIEvgIBADANBgkqhkiG9w0BAQEFAASCBKgwggSkAgEAAoIBAQDtpFv2sl1O/5d4\n36bJnZ0gCXbSrS0eCXHZq/OKaZE9PuDJu/7tTujbJIM4IseP2OzUSoErx22iy4QV\nFLz+OJxvigR2ZP25bWLUt0z7EHXjow0wNCRYwK5hMbE8TUp77JtxozLVH1YrHh7q\niFEiE+6V7rH7P5ifNARHYx6R5Vyn2rxkPKfc2YW8I+q4ZMaN3kVK961oi0KLym2l\nUyzGmYeCtimV/5Z+2b/tsZ7ucwNZVSn2bFao/yUlHMV5c/DmZcXDYXeHznmepcq9\nlbtWgAgiaKdbzf/7srdfjhQFSLvMpMAh26vppRyNeLLCOs3SOFcmVsEMA4srDaoQ\ntJFbu+gpAgMBAAECggEABNVj/XeRSEsQlKfP56fqCz3GCfD1yvecNjY2JOmSx7Eg\nt1m4jLEfMV3jwV+LuZRK9OJzECXlR/tlu1wJoA4cuHQRNStGsd/Us8jqquyhyTiG\nyyU0XA3HPjjZhwV3b1/XpY8ROJ6DjSr2rASLyeqn3qrVOewIOazALYeJlqQYp11U\nj0RTQTIgED43ombBaiSwmFQ0+XDODbDqxthslpO1w4H2shuxM+eNdJcJ06T0jsZM\naLD8AkhV85X9vdZhE8lJV6pP0MtyP+8JB0HzeZc5qvjB5Oam5Jcw3/SylX0vYKI/\n2tJazlhclMOHRVQBvJCTljMz8g0yRZ3FrVKxAtezAQKBgQD/4EaLvmMn3AFPEeHa\nG1AmLg5k97Nma5so70Syu/mIbGIQYBT9xton9DYIMr2c16Jb+d9zW3zxRdiEdHZE\n42+KN3cqX2D9w32YAiidKZUz8CZ6IaBVSwlKwfFxE6tlP6dzA6qJZ5J7HS1P/XB3\nBlIM8xQhh2/R5ZfzPo56+BO7SQKBgQDtwdKsPzrIMwvHIGMUOIle3oif4+wfP01U\ngTRrQOrUaSdP7jU+V3H8Mjvw3VveAyqbetem8su2SawWzUYXJIAZLeDMdx33p3D9\n3Ni3U2Js1i+S4uI7QXMtZ1gp6u/xwqR7Mh/sBitrQcw+TqCm9nlemamIbFoMFHqm\nq6sc0Pzl4QKBgQCQ33jR0l/tx4DuNd+8T86Xb2gy/pQSn0ZgbOhmkkt8VHFJeD0q\nWpZWHM0i4ye8T9LbZKSBegFJ0hP/GrmD04nppfHQieQuiarokABSy6Jwn74JVFSl\nNjDypNCBB3P5hYrXcfHyjjO/hQuMyKAOpAN81XxGZ5qGKwpXbMnbEe6KEQKBgDKC\noeIsEK3lglQMgmASXsTD3ByzzD8bMK+KP3ulr/3uVQa7IZ6b70BX37odHN4+p/ee\nEmCKZlLUtfWmKITUIU64G3D0wW4SqYOVPok78sYSfsri3pMeJXz43pcRLWacJltx\n26xF50WDFgQKqkCuTjyVwpmUA1FbrG7qO5EEqSWhAoGBAJJTOM8+jw9VECFhWmtM\nTTE2EymByNUGiFip7ix5jQ8SoBqG9uKXQQ9Tr+Awdoej259OutcbcvX2/IyEEf4b\nbxqDaEVwgbVXRe6uvP0dicpTkBYYPpBXOzVq6G2WxDAswyLZ4oNMWkxXpYvL7LNS\n4VrdgzwiLTJPOZQ+g/MSqA/U\n-----END PRIVATE KEY-----\n";

const ISS: &str = "https://issuer.test";

fn b64(b: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(b)
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

enum Signer {
    Rsa(RsaKeyPair),
    Ec(EcdsaKeyPair),
    Ed(Ed25519KeyPair),
}

struct Key {
    kid: String,
    signer: Signer,
}

impl Key {
    fn rsa(kid: &str) -> Key {
        let der =
            rustls_pki_types::PrivatePkcs8KeyDer::from_pem_slice(RSA_PKCS8_PEM.as_bytes()).unwrap();
        Key {
            kid: kid.into(),
            signer: Signer::Rsa(RsaKeyPair::from_pkcs8(der.secret_pkcs8_der()).unwrap()),
        }
    }

    fn ec(kid: &str) -> Key {
        let rng = SystemRandom::new();
        let alg = &signature::ECDSA_P256_SHA256_FIXED_SIGNING;
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(alg, &rng).unwrap();
        Key {
            kid: kid.into(),
            signer: Signer::Ec(EcdsaKeyPair::from_pkcs8(alg, pkcs8.as_ref(), &rng).unwrap()),
        }
    }

    fn ed(kid: &str) -> Key {
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
        Key {
            kid: kid.into(),
            signer: Signer::Ed(Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap()),
        }
    }

    fn jwk(&self) -> serde_json::Value {
        match &self.signer {
            Signer::Rsa(k) => {
                let c = ring::rsa::PublicKeyComponents::<Vec<u8>>::from(k.public());
                serde_json::json!({"kty": "RSA", "kid": self.kid, "n": b64(&c.n), "e": b64(&c.e)})
            }
            Signer::Ec(k) => {
                let p = k.public_key().as_ref();
                serde_json::json!({"kty": "EC", "crv": "P-256", "kid": self.kid, "x": b64(&p[1..33]), "y": b64(&p[33..65])})
            }
            Signer::Ed(k) => {
                serde_json::json!({"kty": "OKP", "crv": "Ed25519", "kid": self.kid, "x": b64(k.public_key().as_ref())})
            }
        }
    }

    /// The raw public key bytes an attacker would use as an HMAC secret.
    fn public_bytes(&self) -> Vec<u8> {
        match &self.signer {
            Signer::Rsa(k) => k.public().as_ref().to_vec(),
            Signer::Ec(k) => k.public_key().as_ref().to_vec(),
            Signer::Ed(k) => k.public_key().as_ref().to_vec(),
        }
    }

    fn sign_alg(&self, alg: &str, claims: &serde_json::Value) -> String {
        let header = serde_json::json!({"alg": alg, "kid": self.kid, "typ": "JWT"});
        let input = format!(
            "{}.{}",
            b64(header.to_string().as_bytes()),
            b64(claims.to_string().as_bytes())
        );
        let rng = SystemRandom::new();
        let sig = match (&self.signer, alg) {
            (Signer::Rsa(k), "PS256") => {
                let mut sig = vec![0; k.public().modulus_len()];
                k.sign(&signature::RSA_PSS_SHA256, &rng, input.as_bytes(), &mut sig)
                    .unwrap();
                sig
            }
            (Signer::Rsa(k), _) => {
                let mut sig = vec![0; k.public().modulus_len()];
                k.sign(
                    &signature::RSA_PKCS1_SHA256,
                    &rng,
                    input.as_bytes(),
                    &mut sig,
                )
                .unwrap();
                sig
            }
            (Signer::Ec(k), _) => k.sign(&rng, input.as_bytes()).unwrap().as_ref().to_vec(),
            (Signer::Ed(k), _) => k.sign(input.as_bytes()).as_ref().to_vec(),
        };
        format!("{input}.{}", b64(&sig))
    }

    fn sign(&self, claims: &serde_json::Value) -> String {
        let alg = match self.signer {
            Signer::Rsa(_) => "RS256",
            Signer::Ec(_) => "ES256",
            Signer::Ed(_) => "EdDSA",
        };
        self.sign_alg(alg, claims)
    }
}

fn claims() -> serde_json::Value {
    serde_json::json!({"iss": ISS, "sub": "alice", "aud": ["svc"], "exp": now() + 600, "nbf": now() - 10, "group": "admins", "nested": {"tier": "gold"}})
}

fn jwks(keys: &[&Key]) -> String {
    serde_json::json!({"keys": keys.iter().map(|k| k.jwk()).collect::<Vec<_>>()}).to_string()
}

fn request_authn(keys_field: &str, extra: &str) -> String {
    format!(
        "apiVersion: security.istio.io/v1\nkind: RequestAuthentication\nmetadata:\n  name: ra\n  namespace: default\nspec:\n  jwtRules:\n  - issuer: {ISS}\n    audiences: [svc]\n    {keys_field}\n{extra}"
    )
}

const REQUIRE_PRINCIPAL: &str = "---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata:\n  name: need-jwt\n  namespace: default\nspec:\n  rules:\n  - from:\n    - source:\n        requestPrincipals: [\"*\"]\n";

async fn app(req: Request<MeshBody>) -> Result<Response<MeshBody>, Infallible> {
    let principal = req
        .extensions()
        .get::<JwtAuthn>()
        .map(|j| j.principal.clone())
        .unwrap_or_else(|| "none".into());
    let h = |n: &str| {
        req.headers()
            .get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-")
            .to_string()
    };
    Ok(Response::new(body::full(format!(
        "principal={principal}\nauth={}\npayload={}\ntier={}\n",
        h("authorization"),
        h("x-jwt-payload"),
        h("x-tier")
    ))))
}

struct Reply {
    status: u16,
    www: Option<String>,
    flag: Option<String>,
    body: String,
}

async fn call(yaml: &str, config: JwtConfig, uri: &str, token: Option<&str>) -> Reply {
    let (_tx, rx) = watch::channel(model(yaml));
    call_rx(rx, config, uri, token).await
}

async fn call_rx(
    rx: watch::Receiver<Arc<mesh_core::model::Model>>,
    config: JwtConfig,
    uri: &str,
    token: Option<&str>,
) -> Reply {
    let svc = InboundLayer::new(rx.clone())
        .with_jwt(rx, config)
        .layer(tower::service_fn(app));
    let mut req = Request::builder().uri(uri).header("host", "svc.default");
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let resp = svc.oneshot(req.body(body::empty()).unwrap()).await.unwrap();
    let get = |n: &str| {
        resp.headers()
            .get(n)
            .map(|v| v.to_str().unwrap().to_string())
    };
    let (status, www, flag) = (
        resp.status().as_u16(),
        get("www-authenticate"),
        get("x-mesh-response-flags"),
    );
    let body = http_body_util::BodyExt::collect(resp.into_body())
        .await
        .unwrap()
        .to_bytes();
    Reply {
        status,
        www,
        flag,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

fn inline(keys: &[&Key]) -> String {
    format!("jwks: '{}'", jwks(keys))
}

#[tokio::test]
async fn valid_tokens_of_every_key_type() {
    let (rsa, ec, ed) = (Key::rsa("r"), Key::ec("e"), Key::ed("d"));
    let yaml = request_authn(&inline(&[&rsa, &ec, &ed]), "");
    for token in [
        rsa.sign(&claims()),
        rsa.sign_alg("PS256", &claims()),
        ec.sign(&claims()),
        ed.sign(&claims()),
    ] {
        let r = call(&yaml, JwtConfig::default(), "/", Some(&token)).await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert!(
            r.body.contains("principal=https://issuer.test/alice"),
            "{}",
            r.body
        );
        // forwardOriginalToken defaults to false: the header is removed.
        assert!(r.body.contains("auth=-"), "{}", r.body);
    }
}

#[tokio::test]
async fn every_bad_token_is_401() {
    let (rsa, ec) = (Key::rsa("r"), Key::ec("e"));
    let yaml = request_authn(&inline(&[&rsa, &ec]), "");
    let with = |f: &dyn Fn(&mut serde_json::Value)| {
        let mut c = claims();
        f(&mut c);
        c
    };
    let attacker = Key::ec("e"); // same kid, different key
    let none_token = format!(
        "{}.{}.",
        b64(br#"{"alg":"none","typ":"JWT"}"#),
        b64(claims().to_string().as_bytes())
    );
    let hs256 = {
        let header = serde_json::json!({"alg": "HS256", "kid": "r"});
        let input = format!(
            "{}.{}",
            b64(header.to_string().as_bytes()),
            b64(claims().to_string().as_bytes())
        );
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &rsa.public_bytes());
        format!(
            "{input}.{}",
            b64(ring::hmac::sign(&key, input.as_bytes()).as_ref())
        )
    };
    let hs256_jwks_text = {
        let header = serde_json::json!({"alg": "HS256"});
        let input = format!(
            "{}.{}",
            b64(header.to_string().as_bytes()),
            b64(claims().to_string().as_bytes())
        );
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, jwks(&[&rsa]).as_bytes());
        format!(
            "{input}.{}",
            b64(ring::hmac::sign(&key, input.as_bytes()).as_ref())
        )
    };
    let vectors: Vec<(&str, String)> = vec![
        (
            "expired",
            rsa.sign(&with(&|c| c["exp"] = (now() - 3600).into())),
        ),
        (
            "not yet valid",
            rsa.sign(&with(&|c| c["nbf"] = (now() + 3600).into())),
        ),
        (
            "wrong audience",
            rsa.sign(&with(&|c| c["aud"] = "other".into())),
        ),
        (
            "wrong issuer",
            rsa.sign(&with(&|c| c["iss"] = "https://evil.test".into())),
        ),
        ("wrong key", attacker.sign(&claims())),
        ("alg none", none_token),
        ("HS256 with the RSA public key", hs256),
        ("HS256 with the JWKS text", hs256_jwks_text),
        ("RS256 header on an EC key", ec.sign_alg("RS256", &claims())),
        ("garbage", "not.a.jwt".to_string()),
        ("tampered", {
            let t = rsa.sign(&claims());
            let mut parts: Vec<String> = t.split('.').map(str::to_string).collect();
            parts[1] = b64(with(&|c| c["sub"] = "root".into()).to_string().as_bytes());
            parts.join(".")
        }),
    ];
    for (what, token) in vectors {
        let r = call(&yaml, JwtConfig::default(), "/", Some(&token)).await;
        assert_eq!(r.status, 401, "{what}: {}", r.body);
        assert_eq!(r.flag.as_deref(), Some("UAuth"), "{what}");
        let www = r.www.unwrap_or_default();
        assert!(
            www.starts_with("Bearer realm=\"http://svc.default/")
                && www.contains("error=\"invalid_token\""),
            "{what}: {www}"
        );
    }
}

#[tokio::test]
async fn missing_token_goes_to_authorization() {
    let rsa = Key::rsa("r");
    let open = request_authn(&inline(&[&rsa]), "");
    let r = call(&open, JwtConfig::default(), "/", None).await;
    assert_eq!(r.status, 200);
    assert!(r.body.contains("principal=none"));
    let guarded = format!("{open}{REQUIRE_PRINCIPAL}");
    let r = call(&guarded, JwtConfig::default(), "/", None).await;
    assert_eq!(r.status, 403, "{}", r.body);
    let r = call(
        &guarded,
        JwtConfig::default(),
        "/",
        Some(&rsa.sign(&claims())),
    )
    .await;
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn params_outputs_and_forwarding() {
    let ec = Key::ec("e");
    let extra = "    forwardOriginalToken: true\n    outputPayloadToHeader: x-jwt-payload\n    outputClaimToHeaders:\n    - header: x-tier\n      claim: nested.tier\n    fromHeaders:\n    - name: Authorization\n      prefix: \"Bearer \"\n    fromParams: [token]\n";
    let yaml = request_authn(&inline(&[&ec]), extra);
    let token = ec.sign(&claims());
    let r = call(&yaml, JwtConfig::default(), "/", Some(&token)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(
        r.body.contains(&format!("auth=Bearer {token}")),
        "{}",
        r.body
    );
    assert!(r.body.contains("tier=gold"));
    let payload = token.split('.').nth(1).unwrap();
    assert!(r.body.contains(&format!("payload={payload}")));
    let r = call(
        &yaml,
        JwtConfig::default(),
        &format!("/x?token={token}"),
        None,
    )
    .await;
    assert_eq!(r.status, 200);
    assert!(r.body.contains("principal=https://issuer.test/alice"));
    let bad = format!("/x?token={}", Key::ec("e").sign(&claims()));
    assert_eq!(
        call(&yaml, JwtConfig::default(), &bad, None).await.status,
        401
    );
}

/// A JWKS server on loopback whose key set can be swapped; counts fetches.
async fn jwks_server(initial: String) -> (String, Arc<Mutex<String>>, Arc<AtomicUsize>) {
    let doc = Arc::new(Mutex::new(initial));
    let hits = Arc::new(AtomicUsize::new(0));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (d, h) = (doc.clone(), hits.clone());
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            let (d, h) = (d.clone(), h.clone());
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |_req| {
                    h.fetch_add(1, Ordering::SeqCst);
                    let body = d.lock().unwrap().clone();
                    async move {
                        Ok::<_, Infallible>(Response::new(http_body_util::Full::new(
                            bytes::Bytes::from(body),
                        )))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
    (format!("http://{addr}/jwks.json"), doc, hits)
}

#[tokio::test]
async fn jwks_uri_caching_and_rotation_by_kid() {
    let (old, new, unknown) = (Key::ec("old"), Key::rsa("new"), Key::ec("nope"));
    let (uri, doc, hits) = jwks_server(jwks(&[&old])).await;
    let yaml = request_authn(&format!("jwksUri: {uri}"), "");
    let (_tx, rx) = watch::channel(model(&yaml));
    let config = JwtConfig {
        jwks: JwksConfig {
            min_refetch_interval: Duration::from_secs(3600),
            ..JwksConfig::default()
        },
        ..JwtConfig::default()
    };
    // One stack, so one cache.
    let svc = InboundLayer::new(rx.clone())
        .with_jwt(rx, config)
        .layer(tower::service_fn(app));
    let send = |token: String| {
        let svc = svc.clone();
        async move {
            let req = Request::builder()
                .uri("/")
                .header("authorization", format!("Bearer {token}"))
                .body(body::empty())
                .unwrap();
            svc.oneshot(req).await.unwrap().status().as_u16()
        }
    };
    assert_eq!(send(old.sign(&claims())).await, 200);
    assert_eq!(send(old.sign(&claims())).await, 200);
    assert_eq!(hits.load(Ordering::SeqCst), 1, "the set is cached");
    // The issuer rotates to a new key; a token with the new kid triggers
    // one refetch.
    *doc.lock().unwrap() = jwks(&[&old, &new]);
    assert_eq!(send(new.sign(&claims())).await, 200);
    assert_eq!(hits.load(Ordering::SeqCst), 2);
    // Unknown kids cannot make the server refetch again right away.
    assert_eq!(send(unknown.sign(&claims())).await, 401);
    assert_eq!(send(unknown.sign(&claims())).await, 401);
    assert_eq!(hits.load(Ordering::SeqCst), 2, "refetch is rate limited");
}
