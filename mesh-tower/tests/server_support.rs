//! Helpers shared by the `server_*` integration tests (included with
//! `#[path]`; compiled on its own it has no tests).
#![allow(dead_code, missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::{Request, Response};
use mesh_ca::tls::{self, PeerPolicy};
use mesh_ca::{csr, CaConfig, CertificateAuthority, SpiffeId, TrustBundle, WorkloadCertificate};
use mesh_core::config::mesh_config::{NormalizationType, ProxyPathNormalization};
use mesh_core::config::MeshConfig;
use mesh_core::model::{Client, Model};
use mesh_tower::body::{self, MeshBody};
use mesh_tower::server::{AcceptConfig, ConnectionInfo, PeerIdentity, Server, TlsSource};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

pub const TD: &str = "cluster.local";

/// A CA persisted in a temporary directory.
pub fn ca_in(dir: &std::path::Path, td: &str) -> CertificateAuthority {
    mesh_ca::ca_store::load_or_create(dir, CaConfig::new(td))
        .unwrap()
        .0
}

pub fn issue_at(
    ca: &CertificateAuthority,
    identity: &str,
    at: SystemTime,
    ttl: Option<Duration>,
) -> WorkloadCertificate {
    let identity = SpiffeId::parse(identity).unwrap();
    let req = csr::generate(&identity).unwrap();
    let issued = ca.sign_csr_at(&req.csr_pem, &identity, ttl, at).unwrap();
    WorkloadCertificate::from_ca_response(&issued.chain_pem, None, req.key).unwrap()
}

pub fn issue(ca: &CertificateAuthority, sa: &str) -> WorkloadCertificate {
    let td = ca.trust_domain().to_string();
    issue_at(
        ca,
        &format!("spiffe://{td}/ns/default/sa/{sa}"),
        SystemTime::now(),
        None,
    )
}

pub fn mesh_config(norm: NormalizationType) -> MeshConfig {
    MeshConfig {
        path_normalization: Some(ProxyPathNormalization {
            normalization: norm,
        }),
        ..MeshConfig::default()
    }
}

/// Compiles `yaml` for the workload `app=server` in `default`.
pub fn model_with(yaml: &str, mesh: &MeshConfig) -> Arc<Model> {
    let loaded = mesh_core::config::load_str(yaml, "t.yaml");
    assert!(loaded.errors.is_empty(), "{:?}", loaded.errors);
    let labels = [("app".to_string(), "server".to_string())]
        .into_iter()
        .collect();
    Arc::new(mesh_core::compile::compile(
        &loaded.resources,
        mesh,
        &Client::new("default", labels),
    ))
}

pub fn model(yaml: &str) -> Arc<Model> {
    model_with(yaml, &MeshConfig::default())
}

pub fn peer_authn(mode: &str) -> String {
    format!(
        "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata:\n  name: pa\n  namespace: default\nspec:\n  mtls:\n    mode: {mode}\n"
    )
}

/// The app: echoes what it received (path, peer identity).
pub async fn echo(req: Request<MeshBody>) -> Result<Response<MeshBody>, Infallible> {
    let path = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_default();
    let peer = req
        .extensions()
        .get::<PeerIdentity>()
        .map(|p| p.to_string())
        .unwrap_or_else(|| "none".into());
    let conn = req.extensions().get::<ConnectionInfo>().is_some();
    Ok(Response::new(body::full(format!(
        "path={path}\npeer={peer}\nconn={conn}\n"
    ))))
}

/// Starts a server for `model` with `cert`; returns its address and the
/// model sender.
pub async fn start(
    model: Arc<Model>,
    cert: WorkloadCertificate,
) -> (SocketAddr, watch::Sender<Arc<Model>>) {
    let (tx, rx) = watch::channel(model);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = Server::new(rx, TlsSource::fixed(cert)).accept_config(AcceptConfig {
        port: Some(8080),
        ..AcceptConfig::default()
    });
    tokio::spawn(server.serve(listener, tower::service_fn(echo)));
    (addr, tx)
}

/// A parsed response (status 0: the server closed without answering).
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub head: String,
    pub body: String,
}

async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(mut s: S, raw: &str) -> Reply {
    if s.write_all(raw.as_bytes()).await.is_err() {
        return Reply {
            status: 0,
            head: String::new(),
            body: String::new(),
        };
    }
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    Reply {
        status,
        head: head.to_string(),
        body: body.to_string(),
    }
}

/// A raw HTTP/1.1 request line and headers, exactly as written.
pub fn raw_get(path: &str, extra_headers: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: server.default.svc:8080\r\n{extra_headers}Connection: close\r\n\r\n")
}

pub async fn plain(addr: SocketAddr, raw: &str) -> Reply {
    exchange(TcpStream::connect(addr).await.unwrap(), raw).await
}

/// Sends `raw` over mTLS presenting `cert` and trusting `server_roots`
/// (servers of trust domain [`TD`]); `Err` when the handshake fails.
pub async fn mtls(
    addr: SocketAddr,
    cert: WorkloadCertificate,
    server_roots: &TrustBundle,
    raw: &str,
) -> Result<Reply, String> {
    let trust = watch::channel(Arc::new(server_roots.clone())).1;
    let td = TD.to_string();
    let certs = watch::channel(Arc::new(cert)).1;
    let config = tls::client_config(Some(certs), trust, PeerPolicy::new(td)).unwrap();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from("server.default.svc").unwrap();
    let tls = connector
        .connect(name, tcp)
        .await
        .map_err(|e| e.to_string())?;
    Ok(exchange(tls, raw).await)
}
