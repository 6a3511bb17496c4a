//! `jwksUri` over https: a rustls JWKS server on loopback with a
//! certificate from a private CA. The fetcher verifies it against the
//! configured CA file (and refuses it with another CA or the system
//! bundle); through the inbound stack the key set is fetched, cached,
//! refreshed after its interval, and a rotated `kid` is picked up.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use http::{Request, Response};
use hyper_util::rt::TokioIo;
use mesh_test_support::inbound;
use mesh_test_support::tls::ExtPki;
use mesh_tower::body::{self, MeshBody};
use mesh_tower::server::jwt::{HttpFetcher, JwksCache, JwksConfig, JwksFetcher, JwtConfig};
use mesh_tower::server::InboundLayer;
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tower::{Layer, ServiceExt};

const ISS: &str = "https://issuer.test";

fn b64(b: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(b)
}

struct Key {
    kid: String,
    pair: EcdsaKeyPair,
}

impl Key {
    fn new(kid: &str) -> Key {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
            .unwrap();
        Key {
            kid: kid.into(),
            pair,
        }
    }

    fn jwk(&self) -> serde_json::Value {
        let p = self.pair.public_key().as_ref();
        serde_json::json!({"kty": "EC", "crv": "P-256", "kid": self.kid, "x": b64(&p[1..33]), "y": b64(&p[33..65])})
    }

    fn token(&self) -> String {
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let header = serde_json::json!({"alg": "ES256", "kid": self.kid, "typ": "JWT"});
        let claims = serde_json::json!({"iss": ISS, "sub": "alice", "exp": now + 600});
        let input = format!(
            "{}.{}",
            b64(header.to_string().as_bytes()),
            b64(claims.to_string().as_bytes())
        );
        let sig = self
            .pair
            .sign(&SystemRandom::new(), input.as_bytes())
            .unwrap();
        format!("{input}.{}", b64(sig.as_ref()))
    }
}

fn jwks(keys: &[&Key]) -> String {
    serde_json::json!({"keys": keys.iter().map(|k| k.jwk()).collect::<Vec<_>>()}).to_string()
}

/// An https JWKS server for `localhost`, whose document can be swapped;
/// counts fetches. Returns (uri, CA file, document, hits).
async fn jwks_server(
    dir: &std::path::Path,
    initial: String,
) -> (
    String,
    std::path::PathBuf,
    Arc<Mutex<String>>,
    Arc<AtomicUsize>,
) {
    let pki = ExtPki::new("issuer-ca");
    let (ca, cert, key) = pki.write(dir, "jwks", &["localhost"]);
    let chain = CertificateDer::pem_file_iter(&cert)
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(&key).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(mesh_ca::crypto::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let doc = Arc::new(Mutex::new(initial));
    let hits = Arc::new(AtomicUsize::new(0));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (d, h) = (doc.clone(), hits.clone());
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let (d, h, acceptor) = (d.clone(), h.clone(), acceptor.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let svc = hyper::service::service_fn(move |req: Request<_>| {
                    let ok = req.uri().path() == "/jwks.json";
                    if ok {
                        h.fetch_add(1, Ordering::SeqCst);
                    }
                    let body = d.lock().unwrap().clone();
                    async move {
                        let mut r =
                            Response::new(http_body_util::Full::new(bytes::Bytes::from(body)));
                        if !ok {
                            *r.status_mut() = http::StatusCode::NOT_FOUND;
                        }
                        Ok::<_, Infallible>(r)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    (format!("https://localhost:{port}/jwks.json"), ca, doc, hits)
}

#[tokio::test]
async fn fetcher_verifies_the_issuer_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let k1 = Key::new("k1");
    let (uri, ca, _, hits) = jwks_server(dir.path(), jwks(&[&k1])).await;
    let t = Duration::from_secs(5);

    let body = HttpFetcher::with_ca_file(&ca)
        .unwrap()
        .fetch(&uri, t)
        .await
        .unwrap();
    assert!(body.contains("\"kid\":\"k1\""), "{body}");
    assert_eq!(hits.load(Ordering::SeqCst), 1);

    // Another CA, or the system bundle, does not trust the issuer.
    let other = ExtPki::new("other");
    let (other_ca, _, _) = other.write(dir.path(), "other", &["x.test"]);
    let err = HttpFetcher::with_ca_file(&other_ca)
        .unwrap()
        .fetch(&uri, t)
        .await
        .unwrap_err();
    assert!(err.contains("TLS handshake with localhost"), "{err}");
    assert!(err.contains("UnknownIssuer"), "{err}");
    assert!(HttpFetcher::default().fetch(&uri, t).await.is_err());
    assert_eq!(hits.load(Ordering::SeqCst), 1);

    // A wrong path is an HTTP error, a bad CA file a typed error.
    let missing = uri.replace("jwks.json", "nope");
    let err = HttpFetcher::with_ca_file(&ca)
        .unwrap()
        .fetch(&missing, t)
        .await
        .unwrap_err();
    assert_eq!(err, "HTTP 404 Not Found");
    let err = HttpFetcher::with_ca_file(dir.path().join("absent.pem")).unwrap_err();
    assert!(err.to_string().contains("absent.pem"), "{err}");
}

#[tokio::test]
async fn cache_refreshes_after_its_interval() {
    let dir = tempfile::tempdir().unwrap();
    let (k1, k2) = (Key::new("k1"), Key::new("k2"));
    let (uri, ca, doc, hits) = jwks_server(dir.path(), jwks(&[&k1])).await;
    let interval = Duration::from_secs(300);
    let cache = JwksCache::new(
        JwksConfig {
            refresh_interval: interval,
            ..JwksConfig::default()
        },
        Arc::new(HttpFetcher::with_ca_file(&ca).unwrap()),
    );
    let keys = cache.remote(&uri, None).await.unwrap();
    assert_eq!(keys[0].kid.as_deref(), Some("k1"));
    // The cache reads tokio's clock: paused while no fetch is due, it
    // moves only when the test says so.
    tokio::time::pause();
    *doc.lock().unwrap() = jwks(&[&k2]);
    let keys = cache.remote(&uri, None).await.unwrap();
    assert_eq!(keys[0].kid.as_deref(), Some("k1"), "still cached");
    tokio::time::advance(interval - Duration::from_secs(1)).await;
    let keys = cache.remote(&uri, None).await.unwrap();
    assert_eq!(keys[0].kid.as_deref(), Some("k1"), "still cached");
    assert_eq!(hits.load(Ordering::SeqCst), 1);
    tokio::time::advance(Duration::from_secs(1)).await;
    // The refetch goes over the network: real time again.
    tokio::time::resume();
    let keys = cache.remote(&uri, None).await.unwrap();
    assert_eq!(keys[0].kid.as_deref(), Some("k2"), "refreshed");
    assert_eq!(hits.load(Ordering::SeqCst), 2);
}

async fn app(req: Request<MeshBody>) -> Result<Response<MeshBody>, Infallible> {
    let principal = req
        .extensions()
        .get::<mesh_tower::server::JwtAuthn>()
        .map(|j| j.principal.clone())
        .unwrap_or_else(|| "none".into());
    Ok(Response::new(body::full(principal)))
}

#[tokio::test]
async fn inbound_stack_validates_tokens_with_https_keys_and_follows_kid_rotation() {
    let dir = tempfile::tempdir().unwrap();
    let (k1, k2, rogue) = (Key::new("k1"), Key::new("k2"), Key::new("rogue"));
    let (uri, ca, doc, hits) = jwks_server(dir.path(), jwks(&[&k1])).await;
    let yaml = format!(
        "apiVersion: security.istio.io/v1\nkind: RequestAuthentication\nmetadata:\n  name: ra\n  namespace: default\nspec:\n  jwtRules:\n  - issuer: {ISS}\n    jwksUri: {uri}\n"
    );
    let (_tx, rx) = tokio::sync::watch::channel(inbound::model(&yaml));
    let config = JwtConfig {
        fetcher: Arc::new(HttpFetcher::with_ca_file(&ca).unwrap()),
        ..JwtConfig::default()
    };
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
            let resp = svc.oneshot(req).await.unwrap();
            let status = resp.status().as_u16();
            let body = http_body_util::BodyExt::collect(resp.into_body())
                .await
                .unwrap()
                .to_bytes();
            (status, String::from_utf8_lossy(&body).into_owned())
        }
    };
    assert_eq!(
        send(k1.token()).await,
        (200, "https://issuer.test/alice".to_string())
    );
    assert_eq!(send(k1.token()).await.0, 200);
    assert_eq!(hits.load(Ordering::SeqCst), 1, "the key set is cached");
    // The issuer rotates to k2: the unknown kid triggers one refetch.
    *doc.lock().unwrap() = jwks(&[&k2]);
    assert_eq!(send(k2.token()).await.0, 200);
    assert_eq!(hits.load(Ordering::SeqCst), 2);
    // A key the issuer never published is refused.
    assert_eq!(send(rogue.token()).await.0, 401);
}
