//! TLS outside the mesh: a private PKI made with rcgen (what a
//! DestinationRule's `caCertificates` points at) and a plain rustls HTTPS
//! server that records what each handshake carried.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper_util::rt::{TokioExecutor, TokioIo};
use mesh_core::sync::LockExt;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, ExtendedKeyUsagePurpose, IsCa, KeyPair,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use tokio::net::TcpListener;

/// A private CA outside the mesh.
pub struct ExtPki {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl ExtPki {
    /// A self-signed CA with common name `name`.
    pub fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        ExtPki { issuer }
    }

    /// The CA certificate, PEM.
    pub fn ca_pem(&self) -> String {
        self.issuer.pem()
    }

    /// A leaf for `names` (DNS names, or IPs), for server and client use.
    /// Returns (chain PEM, key PEM).
    pub fn leaf(&self, names: &[&str]) -> (String, String) {
        let mut params =
            CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap();
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    /// Writes the CA and a leaf for `names` into `dir`; returns the paths
    /// (ca, cert, key).
    pub fn write(&self, dir: &Path, prefix: &str, names: &[&str]) -> (PathBuf, PathBuf, PathBuf) {
        let (cert, key) = self.leaf(names);
        let ca_path = dir.join(format!("{prefix}-ca.pem"));
        let cert_path = dir.join(format!("{prefix}-cert.pem"));
        let key_path = dir.join(format!("{prefix}-key.pem"));
        std::fs::write(&ca_path, self.ca_pem()).unwrap();
        std::fs::write(&cert_path, cert).unwrap();
        std::fs::write(&key_path, key).unwrap();
        (ca_path, cert_path, key_path)
    }
}

fn certs(pem: &str) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .unwrap()
}

/// What a plain TLS server saw.
#[derive(Default)]
pub struct Seen {
    /// Completed handshakes.
    pub handshakes: AtomicUsize,
    /// The SNI of each handshake.
    pub sni: Mutex<Vec<Option<String>>>,
    /// The ALPN protocol agreed in each handshake.
    pub alpn: Mutex<Vec<Option<Vec<u8>>>>,
}

/// A rustls HTTPS server (not a mesh server) presenting `cert`/`key`,
/// requiring client certificates from `client_ca` when given. Every
/// response body is `tls-ok client-cert=<yes|no> body=<body>`.
pub async fn tls_server(
    cert_pem: &str,
    key_pem: &str,
    client_ca: Option<&str>,
    body: &'static str,
) -> (SocketAddr, Arc<Seen>) {
    let provider = mesh_ca::crypto::provider();
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap();
    let builder = match client_ca {
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            roots.add_parsable_certificates(certs(ca));
            let v = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .unwrap();
            builder.with_client_cert_verifier(v)
        }
        None => builder.with_no_client_auth(),
    };
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).unwrap();
    let mut config = builder.with_single_cert(certs(cert_pem), key).unwrap();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Seen::default());
    let seen2 = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            let seen = seen2.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                seen.handshakes.fetch_add(1, Ordering::SeqCst);
                let conn = tls.get_ref().1;
                seen.sni
                    .locked()
                    .push(conn.server_name().map(str::to_string));
                seen.alpn
                    .locked()
                    .push(conn.alpn_protocol().map(<[u8]>::to_vec));
                let client_cert = conn.peer_certificates().is_some_and(|c| !c.is_empty());
                let svc = hyper::service::service_fn(
                    move |_req: Request<hyper::body::Incoming>| {
                        let text = format!(
                            "tls-ok client-cert={} body={body}",
                            if client_cert { "yes" } else { "no" }
                        );
                        async move { Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(text)))) }
                    },
                );
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    (addr, seen)
}
