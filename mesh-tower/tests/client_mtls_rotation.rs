//! Certificate rotation under traffic: the client's mesh certificate lives
//! two seconds and rotates every second while requests flow over auto-mTLS
//! to a STRICT server. New connections (one per request on one cluster)
//! keep succeeding after the first certificate has expired, so they use
//! the rotated one; a pooled connection opened with the first certificate
//! keeps serving past its expiry; no request fails. Bounded to ~5 s.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;
use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{Request, Response};
use mesh_ca::{
    csr, CaConfig, CertificateAuthority, CertificateFetcher, CertificateProvider, RotationConfig,
    SpiffeId, WorkloadCertificate,
};
use mesh_test_support::configs::{destination_rule, service_entry};
use mesh_test_support::identity::{issue, TD};
use mesh_test_support::inbound::{model, peer_authn};
use mesh_test_support::sdk::get;
use mesh_tower::body::{self, MeshBody};
use mesh_tower::server::{AcceptConfig, ConnectionInfo, PeerIdentity, Server, TlsSource};
use mesh_tower::Mesh;

const TTL: Duration = Duration::from_secs(2);

#[derive(Clone)]
struct Issuer {
    ca: Arc<CertificateAuthority>,
    fetches: Arc<AtomicUsize>,
}

impl CertificateFetcher for Issuer {
    async fn fetch(
        &self,
        identity: &SpiffeId,
        _current: Option<Arc<WorkloadCertificate>>,
    ) -> mesh_ca::Result<WorkloadCertificate> {
        self.fetches.fetch_add(1, Ordering::SeqCst);
        let req = csr::generate(identity)?;
        let issued = self.ca.sign_csr(&req.csr_pem, identity, Some(TTL))?;
        WorkloadCertificate::from_ca_response(&issued.chain_pem, None, req.key)
    }
}

/// Echoes the caller's identity and source port (one port per connection).
async fn who(req: Request<MeshBody>) -> Result<Response<MeshBody>, Infallible> {
    let peer = req
        .extensions()
        .get::<PeerIdentity>()
        .map(|p| p.to_string())
        .unwrap_or_else(|| "none".into());
    let port = req
        .extensions()
        .get::<ConnectionInfo>()
        .map_or(0, |c| c.peer_addr.port());
    Ok(Response::new(body::full(format!("{peer} {port}"))))
}

fn in_mesh() -> &'static str {
    "    labels: {security.istio.io/tlsMode: istio}\n    serviceAccount: reviews\n"
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_under_traffic_loses_no_request() {
    // No backdating, so the certificate's lifetime is exactly TTL.
    let ca = Arc::new(
        CertificateAuthority::new_self_signed(CaConfig {
            backdate: Duration::ZERO,
            ..CaConfig::new(TD)
        })
        .unwrap()
        .0,
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (_model_tx, model_rx) = tokio::sync::watch::channel(model(&peer_authn("STRICT")));
    let server = Server::new(model_rx, TlsSource::fixed(issue(&ca, "reviews"))).accept_config(
        AcceptConfig {
            port: Some(8080),
            ..AcceptConfig::default()
        },
    );
    tokio::spawn(server.serve(listener, tower::service_fn(who)));

    let fetches = Arc::new(AtomicUsize::new(0));
    let issuer = Issuer {
        ca: ca.clone(),
        fetches: fetches.clone(),
    };
    let id = SpiffeId::parse("spiffe://cluster.local/ns/default/sa/productpage").unwrap();
    let provider = CertificateProvider::start(
        issuer,
        RotationConfig {
            initial_backoff: Duration::from_millis(100),
            ..RotationConfig::new(id.clone())
        },
    )
    .await
    .unwrap();
    let first_expiry = provider.current().not_after();

    // `fresh` opens a connection per request; `pooled` keeps one.
    let fresh = "fresh.default.svc.cluster.local";
    let pooled = "pooled.default.svc.cluster.local";
    let yaml = format!(
        "{}{}{}",
        service_entry(fresh, 80, addr.port(), "MESH_INTERNAL", in_mesh()),
        service_entry(pooled, 80, addr.port(), "MESH_INTERNAL", in_mesh()),
        destination_rule(
            fresh,
            "    connectionPool: {http: {maxRequestsPerConnection: 1}}\n"
        ),
    );
    let cfg = tempfile::tempdir().unwrap();
    std::fs::write(cfg.path().join("mesh.yaml"), yaml).unwrap();
    let mesh = Mesh::local(cfg.path())
        .namespace("default")
        .service_account("productpage")
        .identity(TlsSource::from_provider(&provider))
        .build()
        .await
        .unwrap();

    let start = Instant::now();
    let run_for = TTL * 2 + Duration::from_millis(500);
    let mut workers = Vec::new();
    for (host, n) in [(fresh, 3), (pooled, 1)] {
        for _ in 0..n {
            let client = mesh.http_client();
            let uri = format!("http://{host}/");
            workers.push(tokio::spawn(async move {
                let mut results = Vec::new();
                while start.elapsed() < run_for && results.len() < 5000 {
                    results.push(get(&client, &uri).await);
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                (host, results)
            }));
        }
    }
    let mut fresh_ports = HashSet::new();
    let mut pooled_ports = HashSet::new();
    let mut total = 0;
    for w in workers {
        let (host, results) = w.await.unwrap();
        for (status, flags, body) in results {
            assert_eq!(status, 200, "{host}: {flags} {body}");
            let (peer, port) = body.split_once(' ').unwrap();
            assert_eq!(peer, id.to_string());
            if host == fresh {
                fresh_ports.insert(port.to_string());
            } else {
                pooled_ports.insert(port.to_string());
            }
            total += 1;
        }
    }
    assert!(
        std::time::SystemTime::now() > first_expiry,
        "the run must outlast the first certificate"
    );
    assert!(
        fetches.load(Ordering::SeqCst) >= 3,
        "expected several rotations, got {} fetches",
        fetches.load(Ordering::SeqCst)
    );
    assert!(provider.current().not_after() > first_expiry);
    assert!(total > 50, "too little traffic: {total}");
    // A new connection per request, all of them verified by the server.
    assert!(fresh_ports.len() > 30, "{}", fresh_ports.len());
    // The pooled connection from before the rotations kept serving.
    assert_eq!(pooled_ports.len(), 1, "{pooled_ports:?}");
}
