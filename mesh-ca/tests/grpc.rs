//! The CA's gRPC API on loopback with tonic: token and certificate
//! authentication, refused impersonation, gRPC status codes.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers outside #[test] fns

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use common::{ca, id, issue};
use mesh_ca::proto::IstioCertificateRequest;
use mesh_ca::tokens::VerifyFuture;
use mesh_ca::{
    csr, server, x509, CaClient, CaClientConfig, CaService, CertificateAuthority, Error,
    TokenStore, TokenVerifier,
};
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};
use tonic::Code;

const TOKEN: &str = "tok-0123456789abcdef";
const TOKEN_API: &str = "tok-api-0123456789abcdef";
const WEB: &str = "spiffe://cluster.local/ns/default/sa/web";
const API: &str = "spiffe://cluster.local/ns/default/sa/api";

struct Running {
    addr: SocketAddr,
    ca: Arc<CertificateAuthority>,
    _stop: oneshot::Sender<()>,
}

async fn start() -> Running {
    start_with(None).await
}

async fn start_with(verifier: Option<Arc<dyn TokenVerifier>>) -> Running {
    let ca = Arc::new(ca("cluster.local"));
    let serving = ca
        .issue_local(
            &id("spiffe://cluster.local/ns/mesh-system/sa/meshd"),
            &["localhost"],
            None,
        )
        .unwrap();
    let tls = server::server_tls_config(&ca, watch::channel(Arc::new(serving)).1).unwrap();
    let tokens =
        TokenStore::from_entries([(TOKEN, "default", "web"), (TOKEN_API, "default", "api")])
            .unwrap();
    let service = CaService::new(ca.clone(), tokens);
    service.set_token_verifier(verifier);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(server::serve_tls(listener, service, Arc::new(tls), async {
        let _ = stopped.await;
    }));
    Running {
        addr,
        ca,
        _stop: stop,
    }
}

fn client(r: &Running, token: Option<&str>) -> CaClient {
    let mut cfg = CaClientConfig::new(r.addr.to_string(), "localhost", r.ca.trust_bundle().clone());
    cfg.token = token.map(str::to_string);
    CaClient::new(cfg)
}

fn code(e: Error) -> Code {
    match e {
        Error::Rpc(s) => s.code(),
        other => panic!("expected a gRPC status, got {other}"),
    }
}

#[tokio::test]
async fn token_grants_its_identity() {
    let r = start().await;
    let cert = client(&r, Some(TOKEN))
        .fetch_certificate(&id(WEB), None)
        .await
        .unwrap();
    assert_eq!(cert.identity(), &id(WEB));
    assert_eq!(cert.trust_bundle(), r.ca.trust_bundle());
}

#[tokio::test]
async fn csr_for_another_identity_still_gets_the_token_identity() {
    let r = start().await;
    let req = csr::generate(&id("spiffe://cluster.local/ns/kube-system/sa/admin")).unwrap();
    let resp = client(&r, Some(TOKEN))
        .create_certificate(
            IstioCertificateRequest {
                csr: req.csr_pem,
                validity_duration: 3600,
                metadata: None,
            },
            None,
        )
        .await
        .unwrap();
    // leaf + root bundle, leaf first
    assert_eq!(resp.cert_chain.len(), 2);
    let leaf = &x509::certs_from_pem(&resp.cert_chain[0], "t").unwrap()[0];
    assert_eq!(x509::spiffe_id(leaf).unwrap(), id(WEB));
    // fetch_certificate notices when the CA hands out another identity.
    let err = client(&r, Some(TOKEN))
        .fetch_certificate(&id("spiffe://cluster.local/ns/default/sa/other"), None)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Policy(_)), "{err}");
}

#[tokio::test]
async fn wrong_or_missing_token_is_unauthenticated() {
    let r = start().await;
    let err = client(&r, Some("tok-wrong-wrong-wrong"))
        .fetch_certificate(&id(WEB), None)
        .await
        .unwrap_err();
    assert_eq!(code(err), Code::Unauthenticated);
    let err = client(&r, None)
        .fetch_certificate(&id(WEB), None)
        .await
        .unwrap_err();
    assert_eq!(code(err), Code::Unauthenticated);
}

#[tokio::test]
async fn renewal_with_mesh_certificate_keeps_the_identity() {
    let r = start().await;
    let first = Arc::new(
        client(&r, Some(TOKEN))
            .fetch_certificate(&id(WEB), None)
            .await
            .unwrap(),
    );
    // No token: the presented certificate is the only credential. The CSR
    // asks for another identity; the CA answers with the presented one.
    let req = csr::generate(&id("spiffe://cluster.local/ns/default/sa/admin")).unwrap();
    let resp = client(&r, None)
        .create_certificate(
            IstioCertificateRequest {
                csr: req.csr_pem,
                validity_duration: 0,
                metadata: None,
            },
            Some(first.clone()),
        )
        .await
        .unwrap();
    let leaf = &x509::certs_from_pem(&resp.cert_chain[0], "t").unwrap()[0];
    assert_eq!(x509::spiffe_id(leaf).unwrap(), id(WEB));
    assert_ne!(leaf, first.leaf());

    // Another workload's certificate renews as that workload, not as the
    // token holder, even when the token is also sent.
    let other = Arc::new(issue(&r.ca, "spiffe://cluster.local/ns/shop/sa/cart"));
    let renewed = client(&r, Some(TOKEN))
        .fetch_certificate(&id("spiffe://cluster.local/ns/shop/sa/cart"), Some(other))
        .await
        .unwrap();
    assert_eq!(
        renewed.identity(),
        &id("spiffe://cluster.local/ns/shop/sa/cart")
    );
}

#[tokio::test]
async fn impersonation_is_refused() {
    let r = start().await;
    let metadata = |who: &str| {
        let mut s = prost_types::Struct::default();
        s.fields.insert(
            "ImpersonatedIdentity".to_string(),
            prost_types::Value {
                kind: Some(prost_types::value::Kind::StringValue(who.to_string())),
            },
        );
        Some(s)
    };
    let request = |who: &str| IstioCertificateRequest {
        csr: csr::generate(&id(WEB)).unwrap().csr_pem,
        validity_duration: 0,
        metadata: metadata(who),
    };
    let c = client(&r, Some(TOKEN));
    let err = c
        .create_certificate(
            request("spiffe://cluster.local/ns/kube-system/sa/admin"),
            None,
        )
        .await
        .unwrap_err();
    assert_eq!(code(err), Code::PermissionDenied);
    // Asking for the identity you already own is fine.
    c.create_certificate(request(WEB), None).await.unwrap();
}

#[tokio::test]
async fn bad_csr_and_ttl_are_invalid_arguments() {
    let r = start().await;
    let c = client(&r, Some(TOKEN));
    let err = c
        .create_certificate(
            IstioCertificateRequest {
                csr: "not a csr".into(),
                validity_duration: 0,
                metadata: None,
            },
            None,
        )
        .await
        .unwrap_err();
    assert_eq!(code(err), Code::InvalidArgument);
    let err = c
        .create_certificate(
            IstioCertificateRequest {
                csr: csr::generate(&id(WEB)).unwrap().csr_pem,
                validity_duration: -5,
                metadata: None,
            },
            None,
        )
        .await
        .unwrap_err();
    assert_eq!(code(err), Code::InvalidArgument);
}

#[tokio::test]
async fn certificate_from_another_ca_is_refused() {
    let r = start().await;
    let stranger = common::ca("cluster.local");
    let forged = Arc::new(issue(
        &stranger,
        "spiffe://cluster.local/ns/kube-system/sa/admin",
    ));
    let req = csr::generate(&id(WEB)).unwrap();
    let result = client(&r, None)
        .create_certificate(
            IstioCertificateRequest {
                csr: req.csr_pem,
                validity_duration: 0,
                metadata: None,
            },
            Some(forged),
        )
        .await;
    assert!(
        result.is_err(),
        "a certificate from another root must not authenticate"
    );
}

/// The whole workload path: providers fetch over gRPC, then two workloads
/// talk mTLS with the certificates and bundles the providers publish.
#[tokio::test]
async fn providers_over_grpc_feed_mtls() {
    use mesh_ca::tls::{self, ClientAuth, PeerPolicy};
    use mesh_ca::{CertificateProvider, RotationConfig};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let r = start().await;
    let web = CertificateProvider::start(client(&r, Some(TOKEN)), RotationConfig::new(id(WEB)))
        .await
        .unwrap();
    let api = CertificateProvider::start(client(&r, Some(TOKEN_API)), RotationConfig::new(id(API)))
        .await
        .unwrap();

    let server_cfg = tls::server_config(
        api.certificates(),
        api.trust_bundle(),
        PeerPolicy::new("cluster.local"),
        ClientAuth::Required,
    )
    .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server_cfg));
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut tls = acceptor.accept(tcp).await.unwrap();
        let peer = tls::server_peer_identity(&tls).unwrap();
        tls.write_all(peer.to_string().as_bytes()).await.unwrap();
        tls.shutdown().await.unwrap();
    });

    let client_cfg = tls::client_config(
        Some(web.certificates()),
        web.trust_bundle(),
        PeerPolicy::new("cluster.local").expect_identities([id(API)]),
    )
    .unwrap();
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(Arc::new(client_cfg))
        .connect("api.default.svc".try_into().unwrap(), tcp)
        .await
        .unwrap();
    assert_eq!(tls::client_peer_identity(&tls).unwrap(), id(API));
    let mut seen = String::new();
    tls.read_to_string(&mut seen).await.unwrap();
    assert_eq!(seen, WEB);
    server.await.unwrap();
}

/// A verifier with a fixed answer per token, counting what it is asked.
#[derive(Default)]
struct FakeVerifier {
    asked: AtomicUsize,
}

impl TokenVerifier for FakeVerifier {
    fn verify<'a>(&'a self, token: &'a str) -> VerifyFuture<'a> {
        Box::pin(async move {
            self.asked.fetch_add(1, Ordering::Relaxed);
            match token {
                "sa-token-web" => Ok(Some(id(WEB))),
                "sa-token-other-domain" => Ok(Some(id("spiffe://other.td/ns/default/sa/web"))),
                "sa-token-expired" => Err("the token has expired; mount a fresh one".into()),
                _ => Ok(None),
            }
        })
    }
}

/// Tokens the file does not list go to the verifier: its identity is
/// granted, its refusal and its silence are UNAUTHENTICATED, and an
/// identity outside the trust domain is refused. Token-file tokens and
/// certificates never reach it.
#[tokio::test]
async fn a_token_verifier_vouches_for_tokens_the_file_does_not_list() {
    let verifier = Arc::new(FakeVerifier::default());
    let r = start_with(Some(verifier.clone())).await;

    let cert = client(&r, Some("sa-token-web"))
        .fetch_certificate(&id(WEB), None)
        .await
        .unwrap();
    assert_eq!(cert.identity(), &id(WEB));
    assert_eq!(verifier.asked.load(Ordering::Relaxed), 1);

    // The verifier's reason reaches the caller.
    let err = client(&r, Some("sa-token-expired"))
        .fetch_certificate(&id(WEB), None)
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert_eq!(code(err), Code::Unauthenticated);
    assert!(msg.contains("has expired"), "{msg}");
    for token in ["sa-token-other-domain", "tok-unknown-to-everyone"] {
        let err = client(&r, Some(token))
            .fetch_certificate(&id(WEB), None)
            .await
            .unwrap_err();
        assert_eq!(code(err), Code::Unauthenticated, "{token}");
    }
    assert_eq!(verifier.asked.load(Ordering::Relaxed), 4);

    // A token from the file, and a certificate: the verifier is not asked.
    let first = Arc::new(
        client(&r, Some(TOKEN_API))
            .fetch_certificate(&id(API), None)
            .await
            .unwrap(),
    );
    client(&r, None)
        .fetch_certificate(&id(API), Some(first))
        .await
        .unwrap();
    assert_eq!(verifier.asked.load(Ordering::Relaxed), 4);
}
