//! Mesh mTLS on loopback with tokio-rustls: identities, trust domains,
//! aliases, expiry, server pinning and rotation under a live connection.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers outside #[test] fns

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use common::{ca, certs, id, issue, issue_at, trust};
use mesh_ca::tls::{self, ClientAuth, PeerPolicy};
use mesh_ca::{SpiffeId, TrustBundle, WorkloadCertificate};
use rustls_pki_types::ServerName;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};

type Conn = BufReader<tokio_rustls::client::TlsStream<TcpStream>>;

/// A server that answers every line with "<peer identity> <line>" and
/// reports each connection's handshake outcome.
async fn server(
    config: rustls::ServerConfig,
) -> (
    SocketAddr,
    mpsc::UnboundedReceiver<Result<SpiffeId, String>>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            let acceptor = acceptor.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                let tls = match acceptor.accept(tcp).await {
                    Ok(t) => t,
                    Err(e) => {
                        let _ = tx.send(Err(e.to_string()));
                        return;
                    }
                };
                let peer = tls::server_peer_identity(&tls).unwrap();
                let _ = tx.send(Ok(peer.clone()));
                let mut tls = BufReader::new(tls);
                let mut line = String::new();
                while tls.read_line(&mut line).await.unwrap_or(0) > 0 {
                    let reply = format!("{peer} {line}");
                    if tls.get_mut().write_all(reply.as_bytes()).await.is_err() {
                        return;
                    }
                    line.clear();
                }
            });
        }
    });
    (addr, rx)
}

async fn connect(addr: SocketAddr, config: rustls::ClientConfig) -> Result<Conn, String> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let name = ServerName::try_from("backend.default.svc").unwrap();
    let tls = connector
        .connect(name, tcp)
        .await
        .map_err(|e| e.to_string())?;
    Ok(BufReader::new(tls))
}

/// Sends a line and returns the reply; an error means the peer refused us.
async fn ping(conn: &mut Conn, msg: &str) -> Result<String, String> {
    conn.get_mut()
        .write_all(format!("{msg}\n").as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut line = String::new();
    match conn.read_line(&mut line).await {
        Ok(0) => Err("closed".into()),
        Ok(_) => Ok(line.trim_end().to_string()),
        Err(e) => Err(e.to_string()),
    }
}

fn server_cfg(
    cert: WorkloadCertificate,
    bundle: TrustBundle,
    policy: PeerPolicy,
) -> rustls::ServerConfig {
    tls::server_config(certs(cert).1, trust(bundle), policy, ClientAuth::Required).unwrap()
}

fn client_cfg(
    cert: WorkloadCertificate,
    bundle: TrustBundle,
    policy: PeerPolicy,
) -> rustls::ClientConfig {
    tls::client_config(Some(certs(cert).1), trust(bundle), policy).unwrap()
}

const FRONT: &str = "spiffe://cluster.local/ns/default/sa/frontend";
const BACK: &str = "spiffe://cluster.local/ns/default/sa/backend";

#[tokio::test]
async fn two_workloads_talk_and_see_each_other() {
    let ca = ca("cluster.local");
    let bundle = ca.trust_bundle().clone();
    let (addr, mut seen) = server(server_cfg(
        issue(&ca, BACK),
        bundle.clone(),
        PeerPolicy::new("cluster.local"),
    ))
    .await;
    let client = client_cfg(
        issue(&ca, FRONT),
        bundle,
        PeerPolicy::new("cluster.local").expect_identities([id(BACK)]),
    );
    let mut conn = connect(addr, client).await.unwrap();
    assert_eq!(tls::client_peer_identity(conn.get_ref()).unwrap(), id(BACK));
    assert_eq!(conn.get_ref().get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    assert_eq!(
        conn.get_ref().get_ref().1.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_3)
    );
    assert_eq!(ping(&mut conn, "hi").await.unwrap(), format!("{FRONT} hi"));
    assert_eq!(seen.recv().await.unwrap().unwrap(), id(FRONT));
}

#[tokio::test]
async fn client_without_certificate_is_refused_when_required() {
    let ca = ca("cluster.local");
    let bundle = ca.trust_bundle().clone();
    let (addr, mut seen) = server(server_cfg(
        issue(&ca, BACK),
        bundle.clone(),
        PeerPolicy::new("cluster.local"),
    ))
    .await;
    let client = tls::client_config(None, trust(bundle), PeerPolicy::new("cluster.local")).unwrap();
    if let Ok(mut conn) = connect(addr, client).await {
        assert!(ping(&mut conn, "hi").await.is_err());
    }
    assert!(seen.recv().await.unwrap().is_err());
}

#[tokio::test]
async fn other_trust_domain_refused_unless_aliased() {
    let local = ca("cluster.local");
    let foreign = ca("legacy.example");
    // The server trusts both roots; only the identity check differs.
    let bundle = local.trust_bundle().merged(foreign.trust_bundle());
    let client_cert = || issue(&foreign, "spiffe://legacy.example/ns/default/sa/frontend");

    let (addr, mut seen) = server(server_cfg(
        issue(&local, BACK),
        bundle.clone(),
        PeerPolicy::new("cluster.local"),
    ))
    .await;
    let client = client_cfg(
        client_cert(),
        bundle.clone(),
        PeerPolicy::new("cluster.local"),
    );
    if let Ok(mut conn) = connect(addr, client).await {
        assert!(ping(&mut conn, "hi").await.is_err());
    }
    let err = seen.recv().await.unwrap().unwrap_err();
    assert!(err.contains("UntrustedDomain"), "{err}");

    let (addr, mut seen) = server(server_cfg(
        issue(&local, BACK),
        bundle.clone(),
        PeerPolicy::new("cluster.local").with_aliases(["legacy.example"]),
    ))
    .await;
    let client = client_cfg(client_cert(), bundle, PeerPolicy::new("cluster.local"));
    let mut conn = connect(addr, client).await.unwrap();
    assert!(ping(&mut conn, "hi").await.is_ok());
    assert_eq!(
        seen.recv().await.unwrap().unwrap(),
        id("spiffe://legacy.example/ns/default/sa/frontend")
    );
}

#[tokio::test]
async fn root_not_in_bundle_refused() {
    let local = ca("cluster.local");
    let stranger = ca("cluster.local");
    let (addr, mut seen) = server(server_cfg(
        issue(&local, BACK),
        local.trust_bundle().clone(),
        PeerPolicy::new("cluster.local"),
    ))
    .await;
    let client = client_cfg(
        issue(&stranger, FRONT),
        local.trust_bundle().clone(),
        PeerPolicy::new("cluster.local"),
    );
    if let Ok(mut conn) = connect(addr, client).await {
        assert!(ping(&mut conn, "hi").await.is_err());
    }
    let err = seen.recv().await.unwrap().unwrap_err();
    assert!(
        err.contains("UnknownIssuer") || err.contains("BadSignature"),
        "{err}"
    );
}

#[tokio::test]
async fn expired_certificate_refused() {
    let ca = ca("cluster.local");
    let bundle = ca.trust_bundle().clone();
    let two_days_ago = SystemTime::now() - Duration::from_secs(2 * 86400);
    let expired = issue_at(&ca, FRONT, two_days_ago, Some(Duration::from_secs(3600)));
    let (addr, mut seen) = server(server_cfg(
        issue(&ca, BACK),
        bundle.clone(),
        PeerPolicy::new("cluster.local"),
    ))
    .await;
    let client = client_cfg(expired, bundle.clone(), PeerPolicy::new("cluster.local"));
    if let Ok(mut conn) = connect(addr, client).await {
        assert!(ping(&mut conn, "hi").await.is_err());
    }
    let err = seen.recv().await.unwrap().unwrap_err();
    assert!(err.contains("Expired"), "{err}");

    // And an expired server certificate is refused by the client.
    let expired_server = issue_at(&ca, BACK, two_days_ago, Some(Duration::from_secs(3600)));
    let (addr, _seen) = server(server_cfg(
        expired_server,
        bundle.clone(),
        PeerPolicy::new("cluster.local"),
    ))
    .await;
    let client = client_cfg(issue(&ca, FRONT), bundle, PeerPolicy::new("cluster.local"));
    let err = connect(addr, client).await.err().unwrap();
    assert!(err.contains("Expired"), "{err}");
}

#[tokio::test]
async fn pinned_server_identity_mismatch_refused() {
    let ca = ca("cluster.local");
    let bundle = ca.trust_bundle().clone();
    let (addr, _seen) = server(server_cfg(
        issue(&ca, "spiffe://cluster.local/ns/default/sa/impostor"),
        bundle.clone(),
        PeerPolicy::new("cluster.local"),
    ))
    .await;
    let pinned = PeerPolicy::new("cluster.local").expect_identities([
        id(BACK),
        id("spiffe://cluster.local/ns/default/sa/backend-v2"),
    ]);
    let client = client_cfg(issue(&ca, FRONT), bundle, pinned);
    let err = connect(addr, client).await.err().unwrap();
    assert!(err.contains("NotExpected"), "{err}");
}

#[tokio::test]
async fn rotation_keeps_open_connections_and_applies_to_new_ones() {
    let ca = ca("cluster.local");
    let bundle = ca.trust_bundle().clone();
    let first = issue(&ca, BACK);
    let first_leaf = first.leaf().clone();
    let (cert_tx, cert_rx) = certs(first);
    let (trust_tx, trust_rx) = watch::channel(Arc::new(bundle.clone()));
    let config = tls::server_config(
        cert_rx,
        trust_rx,
        PeerPolicy::new("cluster.local"),
        ClientAuth::Required,
    )
    .unwrap();
    let (addr, _seen) = server(config).await;
    let client = || {
        client_cfg(
            issue(&ca, FRONT),
            bundle.clone(),
            PeerPolicy::new("cluster.local"),
        )
    };

    let mut old_conn = connect(addr, client()).await.unwrap();
    assert_eq!(
        ping(&mut old_conn, "one").await.unwrap(),
        format!("{FRONT} one")
    );
    assert_eq!(
        old_conn.get_ref().get_ref().1.peer_certificates().unwrap()[0],
        first_leaf
    );

    // Rotate the server certificate and the trust bundle (root rotation:
    // old and new roots both trusted).
    let second = issue(&ca, BACK);
    let second_leaf = second.leaf().clone();
    cert_tx.send(Arc::new(second)).unwrap();
    let next_root = common::ca("cluster.local");
    trust_tx
        .send(Arc::new(bundle.merged(next_root.trust_bundle())))
        .unwrap();

    // The open connection goes on.
    assert_eq!(
        ping(&mut old_conn, "two").await.unwrap(),
        format!("{FRONT} two")
    );
    // A new connection sees the new certificate.
    let mut new_conn = connect(addr, client()).await.unwrap();
    assert_eq!(
        new_conn.get_ref().get_ref().1.peer_certificates().unwrap()[0],
        second_leaf
    );
    assert!(ping(&mut new_conn, "three").await.is_ok());
    // A client of the new root is accepted too.
    let mut newer = connect(
        addr,
        client_cfg(
            issue(&next_root, FRONT),
            bundle.clone(),
            PeerPolicy::new("cluster.local"),
        ),
    )
    .await
    .unwrap();
    assert!(ping(&mut newer, "four").await.is_ok());
    assert_eq!(
        ping(&mut old_conn, "five").await.unwrap(),
        format!("{FRONT} five")
    );
}
