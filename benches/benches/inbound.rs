//! The inbound stack and mTLS handshakes, each beside its baseline in the
//! same run.
//!
//! 1. Requests, in-process (no sockets): the mesh-tower inbound stack
//!    (JWT authentication + authorization with 50 policies + the rate-limit
//!    pass-through) around a trivial service, against the bare service,
//!    and the same stack with telemetry on (Istio's metrics for requests
//!    carrying a mesh client's peer metadata).
//!    Measured without a token (authn finds none, authz decides on the
//!    mTLS principal) and with an ES256 JWT (signature verification
//!    included).
//! 2. mTLS handshakes, in memory: mesh-ca's rustls configs (SPIFFE
//!    verification against a watched trust bundle) against plain rustls
//!    with the standard webpki verifiers on the same certificates and key
//!    types. Session resumption is off on both sides, so every handshake is
//!    a full one.
//!
//! Prints ns per request, handshakes per second and the ratios.
#![allow(clippy::unwrap_used, clippy::expect_used)] // setup failures should abort the bench

use std::convert::Infallible;
use std::hint::black_box;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use criterion::Criterion;
use http::{Request, Response};
use mesh_ca::tls::{self, ClientAuth, PeerPolicy};
use mesh_ca::{CaConfig, CertificateAuthority, SpiffeId, WorkloadCertificate};
use mesh_core::model::{Client, Model};
use mesh_tower::body::{self, MeshBody};
use mesh_tower::server::{ConnectionInfo, InboundLayer, PeerIdentity};
use mesh_tower::telemetry::exchange::LocalMetadata;
use mesh_tower::telemetry::{MeshMetrics, Telemetry, WorkloadInfo};
use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, KeyPair};
use rustls::pki_types::ServerName;
use rustls::{ClientConnection, RootCertStore, ServerConnection};
use tokio::sync::watch;
use tower::{Layer, Service, ServiceExt};

const POLICIES: usize = 50;
const DENIES: usize = 10;
const ISS: &str = "https://issuer.bench";

fn b64(b: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(b)
}

/// 10 DENY and 40 ALLOW policies (the authz bench's set) and a
/// RequestAuthentication with an inline EC key.
fn yaml(jwk: &serde_json::Value) -> String {
    let mut y = String::new();
    for i in 0..POLICIES {
        let spec = if i < DENIES {
            format!(
                "  action: DENY\n  rules:\n  - from:\n    - source: {{notNamespaces: [\"shop\", \"ops{i}\"]}}\n    to:\n    - operation: {{paths: [\"/internal/svc{i}/*\"]}}\n  - when:\n    - key: \"request.headers[x-debug-{i}]\"\n      values: [\"*\"]\n"
            )
        } else {
            format!(
                "  rules:\n  - from:\n    - source: {{principals: [\"cluster.local/ns/ns{i}/sa/sa{i}\", \"cluster.local/ns/ns{i}/sa/batch-*\"]}}\n    to:\n    - operation: {{methods: [\"GET\", \"HEAD\"], paths: [\"/api/v{i}/*\", \"/health\"]}}\n    - operation: {{methods: [\"POST\"], paths: [\"/api/v{i}/orders\"]}}\n    when:\n    - key: \"request.headers[x-tenant]\"\n      values: [\"t{i}\", \"t{i}-*\"]\n"
            )
        };
        y.push_str(&format!(
            "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata:\n  name: p{i:02}\n  namespace: shop\nspec:\n{spec}---\n"
        ));
    }
    let jwks = serde_json::json!({ "keys": [jwk] }).to_string();
    y.push_str(&format!(
        "apiVersion: security.istio.io/v1\nkind: RequestAuthentication\nmetadata:\n  name: ra\n  namespace: shop\nspec:\n  jwtRules:\n  - issuer: {ISS}\n    jwks: '{jwks}'\n"
    ));
    y
}

fn model(yaml: &str) -> Arc<Model> {
    let loaded = mesh_core::config::load_str(yaml, "bench.yaml");
    assert!(loaded.errors.is_empty(), "{:?}", loaded.errors);
    Arc::new(mesh_core::compile::compile(
        &loaded.resources,
        &mesh_core::config::MeshConfig::default(),
        &Client::new("shop", Default::default()),
    ))
}

fn es256_token(key: &EcdsaKeyPair) -> String {
    let header = b64(br#"{"alg":"ES256","kid":"k","typ":"JWT"}"#);
    let claims = serde_json::json!({"iss": ISS, "sub": "bench", "exp": 4_000_000_000u64});
    let input = format!("{header}.{}", b64(claims.to_string().as_bytes()));
    let sig = key.sign(&SystemRandom::new(), input.as_bytes()).unwrap();
    format!("{input}.{}", b64(sig.as_ref()))
}

fn conn_info() -> ConnectionInfo {
    let id = PeerIdentity::new(SpiffeId::parse("spiffe://cluster.local/ns/ns47/sa/sa47").unwrap());
    let peer: SocketAddr = "10.0.0.7:40000".parse().unwrap();
    let local: SocketAddr = "10.0.0.9:8080".parse().unwrap();
    ConnectionInfo {
        peer_addr: peer,
        local_addr: local,
        port: 8080,
        identity: Some(id),
        sni: None,
    }
}

/// The request an mTLS peer sends, as the acceptor hands it to the stack.
fn request(info: &ConnectionInfo, token: Option<&str>) -> Request<MeshBody> {
    let mut b = Request::builder()
        .uri("/api/v47/items?page=2")
        .header("host", "shop.example.com")
        .header("user-agent", "curl/8")
        .header("accept", "*/*")
        .header("x-tenant", "t47");
    if let Some(t) = token {
        b = b.header("authorization", format!("Bearer {t}"));
    }
    let mut req = b.body(body::empty()).unwrap();
    req.extensions_mut().insert(info.clone());
    if let Some(id) = &info.identity {
        req.extensions_mut().insert(id.clone());
    }
    req
}

async fn trivial(_req: Request<MeshBody>) -> Result<Response<MeshBody>, Infallible> {
    Ok(Response::new(body::empty()))
}

/// Mean ns per `f` call, run inside one `block_on`, over about `budget`.
fn ns_per_request<S>(
    rt: &tokio::runtime::Runtime,
    budget: Duration,
    svc: S,
    make: impl Fn() -> Request<MeshBody>,
) -> f64
where
    S: Service<Request<MeshBody>, Response = Response<MeshBody>> + Clone,
    S::Error: std::fmt::Debug,
{
    rt.block_on(async {
        let mut iters: u64 = 1_000;
        loop {
            let start = Instant::now();
            for _ in 0..iters {
                let resp = svc.clone().oneshot(make()).await.unwrap();
                black_box(resp.status());
            }
            let elapsed = start.elapsed();
            if elapsed >= budget || iters >= 1 << 26 {
                return elapsed.as_nanos() as f64 / iters as f64;
            }
            iters *= 2;
        }
    })
}

// ---------------------------------------------------------------- TLS

struct Pair {
    client: Arc<rustls::ClientConfig>,
    server: Arc<rustls::ServerConfig>,
}

fn issue(ca: &CertificateAuthority, sa: &str, dns: &[&str]) -> WorkloadCertificate {
    let id = SpiffeId::new("cluster.local", "default", sa).unwrap();
    ca.issue_local(&id, dns, None).unwrap()
}

fn mesh_pair(server: &WorkloadCertificate, client: &WorkloadCertificate) -> Pair {
    let trust = watch::channel(Arc::new(server.trust_bundle().clone())).1;
    let s_certs = watch::channel(Arc::new(
        WorkloadCertificate::new(
            server.chain().to_vec(),
            server.key().clone_key(),
            server.trust_bundle().clone(),
        )
        .unwrap(),
    ))
    .1;
    let c_certs = watch::channel(Arc::new(
        WorkloadCertificate::new(
            client.chain().to_vec(),
            client.key().clone_key(),
            client.trust_bundle().clone(),
        )
        .unwrap(),
    ))
    .1;
    let policy = PeerPolicy::new("cluster.local");
    Pair {
        server: Arc::new(
            tls::server_config(s_certs, trust.clone(), policy.clone(), ClientAuth::Required)
                .unwrap(),
        ),
        client: Arc::new(tls::client_config(Some(c_certs), trust, policy).unwrap()),
    }
}

fn plain_pair(server: &WorkloadCertificate, client: &WorkloadCertificate) -> Pair {
    let provider = mesh_ca::crypto::provider();
    let mut roots = RootCertStore::empty();
    for r in server.trust_bundle().roots() {
        roots.add(r.clone()).unwrap();
    }
    let roots = Arc::new(roots);
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        roots.clone(),
        provider.clone(),
    )
    .build()
    .unwrap();
    let mut s = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(server.chain().to_vec(), server.key().clone_key())
        .unwrap();
    s.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    s.send_tls13_tickets = 0;
    s.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let mut c = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(client.chain().to_vec(), client.key().clone_key())
        .unwrap();
    c.resumption = rustls::client::Resumption::disabled();
    c.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Pair {
        server: Arc::new(s),
        client: Arc::new(c),
    }
}

/// One full handshake in memory; returns whether the client presented a
/// certificate the server accepted.
fn handshake(pair: &Pair) -> bool {
    let name = ServerName::try_from("server.mesh.test").unwrap();
    let mut c = ClientConnection::new(pair.client.clone(), name).unwrap();
    let mut s = ServerConnection::new(pair.server.clone()).unwrap();
    let mut buf = Vec::with_capacity(8192);
    while c.is_handshaking() || s.is_handshaking() {
        buf.clear();
        while c.wants_write() {
            c.write_tls(&mut buf).unwrap();
        }
        let mut rd = &buf[..];
        while !rd.is_empty() {
            s.read_tls(&mut rd).unwrap();
        }
        s.process_new_packets().unwrap();
        buf.clear();
        while s.wants_write() {
            s.write_tls(&mut buf).unwrap();
        }
        let mut rd = &buf[..];
        while !rd.is_empty() {
            c.read_tls(&mut rd).unwrap();
        }
        c.process_new_packets().unwrap();
    }
    s.peer_certificates().is_some()
}

fn handshakes_per_sec(budget: Duration, pair: &Pair) -> f64 {
    let mut n = 0u64;
    let start = Instant::now();
    while start.elapsed() < budget {
        black_box(handshake(pair));
        n += 1;
    }
    n as f64 / start.elapsed().as_secs_f64()
}

fn main() {
    // Requests.
    let rng = SystemRandom::new();
    let alg = &signature::ECDSA_P256_SHA256_FIXED_SIGNING;
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(alg, &rng).unwrap();
    let key = EcdsaKeyPair::from_pkcs8(alg, pkcs8.as_ref(), &rng).unwrap();
    let p = key.public_key().as_ref();
    let jwk = serde_json::json!({"kty": "EC", "crv": "P-256", "kid": "k", "x": b64(&p[1..33]), "y": b64(&p[33..65])});
    let (_tx, rx) = watch::channel(model(&yaml(&jwk)));
    let token = es256_token(&key);
    let info = conn_info();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let bare = tower::service_fn(trivial);
    let stack = InboundLayer::new(rx.clone()).layer(tower::service_fn(trivial));
    // The same stack reporting Istio's metrics (reporter=destination), for
    // requests that carry a mesh client's peer metadata, as SDK clients
    // and sidecars send it.
    let workload = |app: &str| WorkloadInfo {
        name: Some(format!("{app}-v1")),
        namespace: Some("shop".into()),
        labels: [("app".to_string(), app.to_string())].into_iter().collect(),
        service_account: Some(app.into()),
        cluster: Some("Kubernetes".into()),
        principal: None,
    };
    let telemetry = Telemetry::new(&workload("items"), rx.clone(), MeshMetrics::new());
    let reported = InboundLayer::new(rx)
        .with_telemetry(telemetry.clone())
        .layer(tower::service_fn(trivial));
    let caller = LocalMetadata::encode(&workload("web"));
    let from_mesh = || {
        let mut r = request(&info, None);
        caller.insert(r.headers_mut());
        r
    };

    // The stack must actually allow these (and deny a wrong tenant).
    rt.block_on(async {
        for t in [None, Some(token.as_str())] {
            let r = stack.clone().oneshot(request(&info, t)).await.unwrap();
            assert_eq!(r.status(), 200);
        }
        let mut denied = request(&info, None);
        denied
            .headers_mut()
            .insert("x-tenant", "t3".parse().unwrap());
        assert_eq!(stack.clone().oneshot(denied).await.unwrap().status(), 403);
        let mut forged = request(&info, None);
        forged
            .headers_mut()
            .insert("authorization", format!("Bearer {token}x").parse().unwrap());
        assert_eq!(stack.clone().oneshot(forged).await.unwrap().status(), 401);
    });

    // TLS.
    let ca = CertificateAuthority::new_self_signed(CaConfig::new("cluster.local"))
        .unwrap()
        .0;
    let server_cert = issue(&ca, "server", &["server.mesh.test"]);
    let client_cert = issue(&ca, "client", &[]);
    let mesh = mesh_pair(&server_cert, &client_cert);
    let plain = plain_pair(&server_cert, &client_cert);
    assert!(handshake(&mesh) && handshake(&plain));

    let mut c = Criterion::default()
        .measurement_time(Duration::from_secs(2))
        .warm_up_time(Duration::from_millis(300))
        .configure_from_args();
    {
        let mut g = c.benchmark_group("inbound");
        g.bench_function("bare_service", |b| {
            b.iter(|| rt.block_on(bare.oneshot(request(&info, None))))
        });
        g.bench_function("stack_authz_50_no_token", |b| {
            b.iter(|| rt.block_on(stack.clone().oneshot(request(&info, None))))
        });
        g.bench_function("stack_authz_50_telemetry", |b| {
            b.iter(|| rt.block_on(reported.clone().oneshot(from_mesh())))
        });
        g.bench_function("stack_authz_50_es256_jwt", |b| {
            b.iter(|| rt.block_on(stack.clone().oneshot(request(&info, Some(&token)))))
        });
        g.finish();
        let mut g = c.benchmark_group("mtls_handshake");
        g.sample_size(30);
        g.bench_function("mesh_spiffe", |b| b.iter(|| handshake(&mesh)));
        g.bench_function("plain_rustls_webpki", |b| b.iter(|| handshake(&plain)));
        g.finish();
    }
    c.final_summary();

    let budget = Duration::from_millis(1500);
    let bare_ns = ns_per_request(&rt, budget, bare, || request(&info, None));
    // Each side twice, interleaved, so a slow swing of the machine is seen
    // by both; the means are reported.
    let stack_ns = ns_per_request(&rt, budget, stack.clone(), || request(&info, None));
    let tel_ns = ns_per_request(&rt, budget, reported.clone(), from_mesh);
    let bare_again_ns = ns_per_request(&rt, budget, bare, || request(&info, None));
    let stack_again_ns = ns_per_request(&rt, budget, stack.clone(), || request(&info, None));
    let jwt_ns = ns_per_request(&rt, budget, stack, || request(&info, Some(&token)));
    let mesh_hs = handshakes_per_sec(budget, &mesh);
    let plain_hs = handshakes_per_sec(budget, &plain);
    println!();
    println!("inbound stack, in-process, 50 authorization policies:");
    println!("  bare service                     {bare_ns:>10.0} ns/request");
    println!(
        "  stack, mTLS principal, no JWT    {stack_ns:>10.0} ns/request   stack/bare = {:.1}x (+{:.0} ns)",
        stack_ns / bare_ns,
        stack_ns - bare_ns
    );
    let (bare_ns, stack_ns) = (
        (bare_ns + bare_again_ns) / 2.0,
        (stack_ns + stack_again_ns) / 2.0,
    );
    println!(
        "  stack + Istio metrics (peer metadata in, out) {tel_ns:>10.0} ns/request   +{:.0} ns over the stack, {:.2}x of it",
        tel_ns - stack_ns,
        tel_ns / stack_ns
    );
    println!(
        "  stack + ES256 JWT                {jwt_ns:>10.0} ns/request   stack/bare = {:.1}x (+{:.0} ns)",
        jwt_ns / bare_ns,
        jwt_ns - bare_ns
    );
    println!("mTLS handshakes (TLS 1.3, ECDSA P-256, client auth, in memory, one core):");
    println!("  mesh-ca SPIFFE verification      {mesh_hs:>10.0} handshakes/s");
    println!(
        "  plain rustls + webpki            {plain_hs:>10.0} handshakes/s   mesh/plain = {:.2}",
        mesh_hs / plain_hs
    );
}
