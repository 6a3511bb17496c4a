//! Identity in mesh mode: `Mesh::xds(..).ca(..)` gets its SPIFFE
//! certificate from a real mesh CA (`IstioCertificateService` over TLS on
//! loopback, bootstrap token from a file), and two meshes talk mTLS with
//! the certificates they were given.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test setup

use std::sync::Arc;

use mesh_ca::tls::{self, ClientAuth, PeerPolicy};
use mesh_ca::{CaConfig, CaService, CertificateAuthority, SpiffeId, TokenStore};
use mesh_core::model::Client;
use mesh_test_support::sdk;
use mesh_tower::source::SourceError;
use mesh_tower::CaOptions;
use mesh_tower::Mesh;
use mesh_xds::server::{AdsServer, SnapshotCache};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{oneshot, watch};

const YAML: &str = "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: api, namespace: default}
spec:
  hosts: [api.example.com]
  ports: [{number: 80, name: http, protocol: HTTP}]
  resolution: STATIC
  endpoints: [{address: 127.0.0.1}]
";

struct Ca {
    ca: Arc<CertificateAuthority>,
    addr: String,
    roots: std::path::PathBuf,
    _stop: oneshot::Sender<()>,
}

async fn ca(dir: &std::path::Path) -> Ca {
    ca_with(dir, CaConfig::new("cluster.local")).await
}

async fn ca_with(dir: &std::path::Path, config: CaConfig) -> Ca {
    let ca = Arc::new(CertificateAuthority::new_self_signed(config).unwrap().0);
    let serving = ca
        .issue_local(
            &SpiffeId::parse("spiffe://cluster.local/ns/mesh-system/sa/meshd").unwrap(),
            &["meshd.mesh-system.svc"],
            None,
        )
        .unwrap();
    let tls = mesh_ca::server::server_tls_config(&ca, watch::channel(Arc::new(serving)).1).unwrap();
    let tokens = TokenStore::from_entries([
        ("token-web-0123456789", "default", "web"),
        ("token-api-0123456789", "default", "api"),
    ])
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(mesh_ca::server::serve_tls(
        listener,
        CaService::new(ca.clone(), tokens),
        Arc::new(tls),
        async {
            let _ = stopped.await;
        },
    ));
    let roots = dir.join("root-cert.pem");
    std::fs::write(&roots, ca.trust_bundle().to_pem()).unwrap();
    Ca {
        ca,
        addr,
        roots,
        _stop: stop,
    }
}

fn publish(cache: &SnapshotCache, sa: &str) {
    let mut client = Client::new("default", Default::default());
    client.service_account = Some(sa.to_string());
    sdk::publish(cache, YAML, &client);
}

async fn mesh(url: &str, ca: &Ca, dir: &std::path::Path, sa: &str) -> Result<Mesh, SourceError> {
    let token = dir.join(format!("{sa}.token"));
    std::fs::write(&token, format!("token-{sa}-0123456789\n")).unwrap();
    let mut opts = CaOptions::new(ca.addr.clone(), "meshd.mesh-system.svc", &ca.roots);
    opts.token_file = Some(token);
    opts.output_dir = Some(dir.join(sa));
    Mesh::xds([url])
        .namespace("default")
        .service_account(sa)
        .ca(opts)
        .build()
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mesh_mode_gets_its_identity_from_the_ca_and_talks_mtls() {
    let dir = tempfile::tempdir().unwrap();
    let ca = ca(dir.path()).await;
    let cache = SnapshotCache::new();
    publish(&cache, "web");
    publish(&cache, "api");
    let url = sdk::ads_server(cache).await;

    let web = mesh(&url, &ca, dir.path(), "web").await.unwrap();
    let api = mesh(&url, &ca, dir.path(), "api").await.unwrap();
    let web_id = SpiffeId::parse("spiffe://cluster.local/ns/default/sa/web").unwrap();
    let api_id = SpiffeId::parse("spiffe://cluster.local/ns/default/sa/api").unwrap();
    let web_certs = web.certificates().unwrap();
    let api_certs = api.certificates().unwrap();
    assert_eq!(web_certs.current().identity(), &web_id);
    assert_eq!(api_certs.current().identity(), &api_id);
    // The files gRPC's file_watcher provider reads are there too.
    for f in ["cert-chain.pem", "key.pem", "root-cert.pem"] {
        assert!(dir.path().join("web").join(f).exists(), "{f}");
    }
    assert!(web.current().outbound.contains_key("api.example.com:80"));
    assert!(web.tls_source().is_some());

    // api serves mTLS with its certificate; web connects with its own and
    // each side sees the other's SPIFFE identity.
    let server_cfg = tls::server_config(
        api_certs.certificates(),
        api_certs.trust_bundle(),
        PeerPolicy::new("cluster.local"),
        ClientAuth::Required,
    )
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server_cfg));
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut conn = acceptor.accept(tcp).await.unwrap();
        let peer = tls::server_peer_identity(&conn).unwrap();
        conn.write_all(peer.to_string().as_bytes()).await.unwrap();
        conn.shutdown().await.unwrap();
    });
    let client_cfg = tls::client_config(
        Some(web_certs.certificates()),
        web_certs.trust_bundle(),
        PeerPolicy::new("cluster.local").expect_identities([api_id.clone()]),
    )
    .unwrap();
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut conn = tokio_rustls::TlsConnector::from(Arc::new(client_cfg))
        .connect("api.default.svc".try_into().unwrap(), tcp)
        .await
        .unwrap();
    assert_eq!(tls::client_peer_identity(&conn).unwrap(), api_id);
    let mut seen = String::new();
    conn.read_to_string(&mut seen).await.unwrap();
    assert_eq!(seen, web_id.to_string());
    server.await.unwrap();

    // Without a service account there is no identity to ask for.
    let err = Mesh::xds([url.as_str()])
        .namespace("default")
        .ca(CaOptions::new(
            ca.addr.clone(),
            "meshd.mesh-system.svc",
            &ca.roots,
        ))
        .build()
        .await
        .err()
        .unwrap();
    assert!(
        matches!(err, SourceError::Identity { .. }) && err.to_string().contains("service_account"),
        "{err}"
    );
}

/// The ADS server behind mesh mTLS (as istiod's port 15012): its own
/// certificate naming the address it is dialed by, client certificates
/// required.
async fn xds_mtls(cache: SnapshotCache, ca: &CertificateAuthority) -> String {
    let serving = ca
        .issue_local(
            &SpiffeId::parse("spiffe://cluster.local/ns/mesh-system/sa/meshd").unwrap(),
            &["meshd.mesh-system.svc", "127.0.0.1"],
            None,
        )
        .unwrap();
    let cfg = tls::server_config(
        watch::channel(Arc::new(serving)).1,
        watch::channel(Arc::new(ca.trust_bundle().clone())).1,
        PeerPolicy::new("cluster.local"),
        ClientAuth::Required,
    )
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let incoming = futures_util::stream::unfold((listener, acceptor), |(l, a)| async move {
        loop {
            let tcp = match l.accept().await {
                Ok((tcp, _)) => tcp,
                Err(e) => return Some((Err(e), (l, a))),
            };
            // A client without a mesh certificate fails here and is dropped.
            if let Ok(conn) = a.accept(tcp).await {
                return Some((Ok::<_, std::io::Error>(conn), (l, a)));
            }
        }
    });
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(AdsServer::new(cache).into_service())
            .serve_with_incoming(incoming),
    );
    format!("https://{addr}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn xds_over_mesh_mtls_with_the_workload_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let ca = ca(dir.path()).await;
    let cache = SnapshotCache::new();
    publish(&cache, "web");
    let url = xds_mtls(cache, &ca.ca).await;

    let web = mesh(&url, &ca, dir.path(), "web").await.unwrap();
    assert!(web.current().outbound.contains_key("api.example.com:80"));
    assert_eq!(
        web.xds_status().unwrap().connected.as_deref(),
        Some(url.as_str())
    );

    // https without a root to verify the server with is refused up front,
    // and so is https with nothing to authenticate with.
    let err = Mesh::xds([url.as_str()])
        .namespace("default")
        .build()
        .await
        .err()
        .unwrap();
    assert!(
        matches!(err, SourceError::XdsTls { .. }) && err.to_string().contains("xds_roots"),
        "{err}"
    );
    let err = Mesh::xds([url.as_str()])
        .namespace("default")
        .xds_roots(&ca.roots)
        .build()
        .await
        .err()
        .unwrap();
    assert!(
        matches!(err, SourceError::XdsTls { .. }) && err.to_string().contains("xds_token_file"),
        "{err}"
    );
}

/// A Mesh lives as long as what was built from it: with the `Mesh` dropped
/// and a client kept, its certificate keeps rotating; with the client gone
/// too, the rotation stops (the provider is dropped).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_keep_rotating_while_a_client_outlives_the_mesh() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = CaConfig::new("cluster.local");
    config.workload_cert_ttl = std::time::Duration::from_secs(2);
    config.backdate = std::time::Duration::ZERO;
    let ca = ca_with(dir.path(), config).await;
    let cache = SnapshotCache::new();
    publish(&cache, "web");
    let url = sdk::ads_server(cache).await;
    let web = mesh(&url, &ca, dir.path(), "web").await.unwrap();
    let provider = Arc::downgrade(web.certificates().unwrap());
    let first = web.certificates().unwrap().current().leaf().clone();
    let client = web.http_client();
    drop(web);
    // Half-life rotation of a 2 s certificate: a new one within ~1 s.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(8);
    loop {
        let p = provider.upgrade().expect("the client keeps the provider");
        if *p.current().leaf() != first {
            break;
        }
        drop(p);
        assert!(
            std::time::Instant::now() < deadline,
            "no rotation with the Mesh dropped and a client alive"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    drop(client);
    assert!(
        provider.upgrade().is_none(),
        "the last holder gone, rotation stops"
    );
}
