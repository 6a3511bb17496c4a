//! Client-side TLS origination through `Mesh::http_client()` on loopback,
//! against the real inbound server and plain rustls servers: auto-mTLS to
//! in-mesh endpoints with the SPIFFE identity seen by the server,
//! plaintext to non-mesh endpoints, DestinationRule SIMPLE (CA file, SANs,
//! SNI) and MUTUAL (client certificate files), and a wrong server identity
//! refused with UF and a reason naming both identities.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::sync::atomic::Ordering;

use mesh_test_support::configs::{destination_rule, service_entry};
use mesh_test_support::identity::{ca_in, issue, TD};
use mesh_test_support::inbound::{model, peer_authn, start};
use mesh_test_support::sdk::get;
use mesh_test_support::tls::{tls_server, ExtPki};
use mesh_tower::server::TlsSource;
use mesh_tower::Mesh;

const REVIEWS: &str = "reviews.default.svc.cluster.local";
const CLIENT_ID: &str = "spiffe://cluster.local/ns/default/sa/productpage";

async fn mesh_at(dir: &Path, yaml: &str, identity: Option<TlsSource>) -> Mesh {
    std::fs::write(dir.join("mesh.yaml"), yaml).unwrap();
    let mut b = Mesh::local(dir)
        .namespace("default")
        .labels([("app", "productpage")])
        .service_account("productpage");
    if let Some(id) = identity {
        b = b.identity(id);
    }
    b.build().await.unwrap()
}

fn in_mesh(sa: &str) -> String {
    format!("    labels: {{security.istio.io/tlsMode: istio}}\n    serviceAccount: {sa}\n")
}

#[tokio::test]
async fn auto_mtls_to_a_strict_mesh_server_carries_the_client_identity() {
    let pki = tempfile::tempdir().unwrap();
    let ca = ca_in(pki.path(), TD);
    let (addr, _tx) = start(model(&peer_authn("STRICT")), issue(&ca, "reviews")).await;
    let cfg = tempfile::tempdir().unwrap();
    let yaml = service_entry(
        REVIEWS,
        9080,
        addr.port(),
        "MESH_INTERNAL",
        &in_mesh("reviews"),
    );
    let mesh = mesh_at(
        cfg.path(),
        &yaml,
        Some(TlsSource::fixed(issue(&ca, "productpage"))),
    )
    .await;
    assert!(mesh.identity().is_some());
    let client = mesh.http_client();
    let uri = format!("http://{REVIEWS}:9080/hello");
    for _ in 0..3 {
        let (status, flags, body) = get(&client, &uri).await;
        assert_eq!(status, 200, "{flags} {body}");
        assert!(body.contains(&format!("peer={CLIENT_ID}")), "{body}");
        assert!(body.contains("path=/hello"), "{body}");
    }

    // The same mesh without an identity cannot do mTLS: auto-mTLS falls
    // back to plaintext, which STRICT closes unanswered (a reset).
    let cfg2 = tempfile::tempdir().unwrap();
    let plain = mesh_at(cfg2.path(), &format!("{yaml}{}", no_retries(REVIEWS)), None).await;
    let (status, flags, _) = get(&plain.http_client(), &uri).await;
    assert_eq!(status, 503);
    assert_eq!(flags, "UR");
}

/// A VirtualService without retries, so a failed connect shows as `UF`
/// rather than the retry limit (`URX`).
fn no_retries(host: &str) -> String {
    let name = host.split('.').next().unwrap();
    format!(
        "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: {name}, namespace: default}}
spec:
  hosts: [{host}]
  http:
  - route: [{{destination: {{host: {host}}}}}]
    retries: {{attempts: 0}}
---
"
    )
}

#[tokio::test]
async fn non_mesh_endpoint_gets_plaintext() {
    let pki = tempfile::tempdir().unwrap();
    let ca = ca_in(pki.path(), TD);
    // PERMISSIVE takes both, and tells which one arrived.
    let (addr, _tx) = start(model(&peer_authn("PERMISSIVE")), issue(&ca, "reviews")).await;
    let cfg = tempfile::tempdir().unwrap();
    let host = "legacy.example.com";
    let yaml = service_entry(host, 80, addr.port(), "MESH_EXTERNAL", "");
    let mesh = mesh_at(
        cfg.path(),
        &yaml,
        Some(TlsSource::fixed(issue(&ca, "productpage"))),
    )
    .await;
    let (status, _, body) = get(&mesh.http_client(), &format!("http://{host}/")).await;
    assert_eq!(status, 200);
    assert!(body.contains("peer=none"), "plaintext expected: {body}");

    // The same endpoint labelled as in the mesh gets mTLS.
    let cfg2 = tempfile::tempdir().unwrap();
    let yaml = service_entry(host, 80, addr.port(), "MESH_EXTERNAL", &in_mesh("reviews"));
    let mesh = mesh_at(
        cfg2.path(),
        &yaml,
        Some(TlsSource::fixed(issue(&ca, "productpage"))),
    )
    .await;
    let (status, _, body) = get(&mesh.http_client(), &format!("http://{host}/")).await;
    assert_eq!(status, 200);
    assert!(body.contains(&format!("peer={CLIENT_ID}")), "{body}");
}

#[tokio::test]
async fn destination_rule_simple_verifies_ca_san_and_sends_sni() {
    let files = tempfile::tempdir().unwrap();
    let ext = ExtPki::new("external-ca");
    let (ca_path, cert, key) = ext.write(files.path(), "srv", &["api.external.test"]);
    let (addr, seen) = tls_server(
        &std::fs::read_to_string(cert).unwrap(),
        &std::fs::read_to_string(key).unwrap(),
        None,
        "simple",
    )
    .await;
    let host = "api.external.test";
    let se = service_entry(host, 443, addr.port(), "MESH_EXTERNAL", "");
    let ca = ca_path.display();
    let uri = format!("http://{host}:443/");

    // SNI defaults to the host, and the certificate is checked against it.
    let cfg = tempfile::tempdir().unwrap();
    let dr = destination_rule(
        host,
        &format!("    tls: {{mode: SIMPLE, caCertificates: {ca}}}\n"),
    );
    let m = mesh_at(cfg.path(), &format!("{se}{dr}"), None).await;
    let (status, flags, body) = get(&m.http_client(), &uri).await;
    assert_eq!(status, 200, "{flags} {body}");
    assert_eq!(body, "tls-ok client-cert=no body=simple");
    assert_eq!(seen.sni.lock().unwrap()[0].as_deref(), Some(host));
    assert_eq!(
        seen.alpn.lock().unwrap()[0].as_deref(),
        Some(&b"http/1.1"[..])
    );

    // subjectAltNames that match, with an explicit SNI.
    let cfg = tempfile::tempdir().unwrap();
    let dr = destination_rule(
        host,
        &format!("    tls: {{mode: SIMPLE, caCertificates: {ca}, sni: front.external.test, subjectAltNames: [other.test, api.external.test]}}\n"),
    );
    let m = mesh_at(cfg.path(), &format!("{se}{dr}"), None).await;
    let (status, _, body) = get(&m.http_client(), &uri).await;
    assert_eq!(status, 200, "{body}");
    assert!(seen
        .sni
        .lock()
        .unwrap()
        .contains(&Some("front.external.test".into())));

    // A SAN the certificate lacks: refused before any request is sent.
    let before = seen.handshakes.load(Ordering::SeqCst);
    let cfg = tempfile::tempdir().unwrap();
    let dr = destination_rule(
        host,
        &format!("    tls: {{mode: SIMPLE, caCertificates: {ca}, subjectAltNames: [billing.external.test]}}\n"),
    );
    let m = mesh_at(cfg.path(), &format!("{se}{dr}{}", no_retries(host)), None).await;
    let (status, flags, body) = get(&m.http_client(), &uri).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(flags, "UF", "{body}");
    assert!(body.contains("billing.external.test"), "{body}");
    assert!(body.contains("api.external.test"), "{body}");
    assert_eq!(seen.handshakes.load(Ordering::SeqCst), before);

    // A CA that did not sign the server certificate.
    let other = ExtPki::new("other-ca");
    let (other_ca, _, _) = other.write(files.path(), "other", &["x.test"]);
    let cfg = tempfile::tempdir().unwrap();
    let dr = destination_rule(
        host,
        &format!(
            "    tls: {{mode: SIMPLE, caCertificates: {}}}\n",
            other_ca.display()
        ),
    );
    let m = mesh_at(cfg.path(), &format!("{se}{dr}{}", no_retries(host)), None).await;
    let (status, flags, body) = get(&m.http_client(), &uri).await;
    assert_eq!(status, 503);
    assert_eq!(flags, "UF", "{body}");
    assert!(body.contains("SIMPLE handshake with upstream"), "{body}");
    assert!(body.contains("UnknownIssuer"), "{body}");
}

#[tokio::test]
async fn destination_rule_mutual_presents_the_client_certificate_files() {
    let files = tempfile::tempdir().unwrap();
    let server_pki = ExtPki::new("server-ca");
    let client_pki = ExtPki::new("client-ca");
    let (ca_path, cert, key) = server_pki.write(files.path(), "srv", &["db.external.test"]);
    let (client_ca, client_cert, client_key) =
        client_pki.write(files.path(), "cli", &["productpage.client.test"]);
    let (addr, _) = tls_server(
        &std::fs::read_to_string(cert).unwrap(),
        &std::fs::read_to_string(key).unwrap(),
        Some(&std::fs::read_to_string(client_ca).unwrap()),
        "mutual",
    )
    .await;
    let host = "db.external.test";
    let se = service_entry(host, 443, addr.port(), "MESH_EXTERNAL", "");
    let uri = format!("http://{host}:443/");

    let cfg = tempfile::tempdir().unwrap();
    let dr = destination_rule(
        host,
        &format!(
            "    tls: {{mode: MUTUAL, caCertificates: {}, clientCertificate: {}, privateKey: {}}}\n",
            ca_path.display(),
            client_cert.display(),
            client_key.display()
        ),
    );
    let m = mesh_at(cfg.path(), &format!("{se}{dr}"), None).await;
    let (status, flags, body) = get(&m.http_client(), &uri).await;
    assert_eq!(status, 200, "{flags} {body}");
    assert_eq!(body, "tls-ok client-cert=yes body=mutual");

    // SIMPLE (no client certificate) to the same server fails.
    let cfg = tempfile::tempdir().unwrap();
    let dr = destination_rule(
        host,
        &format!(
            "    tls: {{mode: SIMPLE, caCertificates: {}}}\n",
            ca_path.display()
        ),
    );
    let m = mesh_at(cfg.path(), &format!("{se}{dr}"), None).await;
    let (status, _, body) = get(&m.http_client(), &uri).await;
    assert_ne!(status, 200, "{body}");

    // A missing key file is reported with the field and the path.
    let cfg = tempfile::tempdir().unwrap();
    let dr = destination_rule(
        host,
        &format!(
            "    tls: {{mode: MUTUAL, caCertificates: {}, clientCertificate: {}, privateKey: /nonexistent/key.pem}}\n",
            ca_path.display(),
            client_cert.display()
        ),
    );
    let m = mesh_at(cfg.path(), &format!("{se}{dr}{}", no_retries(host)), None).await;
    let (status, flags, body) = get(&m.http_client(), &uri).await;
    assert_eq!(status, 503);
    assert_eq!(flags, "UF", "{body}");
    assert!(body.contains("privateKey /nonexistent/key.pem"), "{body}");
}

#[tokio::test]
async fn istio_mutual_to_the_wrong_identity_fails_with_uf_and_both_identities() {
    let pki = tempfile::tempdir().unwrap();
    let ca = ca_in(pki.path(), TD);
    // The endpoint claims to run as `reviews` but presents `ratings`.
    let (addr, _tx) = start(model(&peer_authn("STRICT")), issue(&ca, "ratings")).await;
    let cfg = tempfile::tempdir().unwrap();
    let se = service_entry(
        REVIEWS,
        9080,
        addr.port(),
        "MESH_INTERNAL",
        &in_mesh("reviews"),
    );
    let se = format!("{se}{}", no_retries(REVIEWS));
    let dr = destination_rule(REVIEWS, "    tls: {mode: ISTIO_MUTUAL}\n");
    let m = mesh_at(
        cfg.path(),
        &format!("{se}{dr}"),
        Some(TlsSource::fixed(issue(&ca, "productpage"))),
    )
    .await;
    let (status, flags, body) = get(&m.http_client(), &format!("http://{REVIEWS}:9080/")).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(flags, "UF", "{body}");
    assert!(
        body.contains(&format!(
            "upstream {addr} of cluster outbound|9080||{REVIEWS}: upstream presented spiffe://cluster.local/ns/default/sa/ratings, expected spiffe://cluster.local/ns/default/sa/reviews"
        )),
        "{body}"
    );

    // Pinning the identity the server really has (subjectAltNames) works.
    let cfg = tempfile::tempdir().unwrap();
    let dr = destination_rule(
        REVIEWS,
        "    tls: {mode: ISTIO_MUTUAL, subjectAltNames: [spiffe://cluster.local/ns/default/sa/ratings]}\n",
    );
    let m = mesh_at(
        cfg.path(),
        &format!("{se}{dr}"),
        Some(TlsSource::fixed(issue(&ca, "productpage"))),
    )
    .await;
    let (status, _, body) = get(&m.http_client(), &format!("http://{REVIEWS}:9080/")).await;
    assert_eq!(status, 200, "{body}");

    // Explicit ISTIO_MUTUAL without a workload certificate says so.
    let cfg = tempfile::tempdir().unwrap();
    let dr = destination_rule(REVIEWS, "    tls: {mode: ISTIO_MUTUAL}\n");
    let m = mesh_at(cfg.path(), &format!("{se}{dr}"), None).await;
    let (status, flags, body) = get(&m.http_client(), &format!("http://{REVIEWS}:9080/")).await;
    assert_eq!(status, 503);
    assert_eq!(flags, "UF", "{body}");
    assert!(body.contains("has no mesh certificate"), "{body}");
}

#[tokio::test]
async fn alpn_follows_the_pool_protocol() {
    let files = tempfile::tempdir().unwrap();
    let ext = ExtPki::new("external-ca");
    let (ca_path, cert, key) = ext.write(files.path(), "srv", &["grpc.external.test"]);
    let (addr, seen) = tls_server(
        &std::fs::read_to_string(cert).unwrap(),
        &std::fs::read_to_string(key).unwrap(),
        None,
        "h2",
    )
    .await;
    let host = "grpc.external.test";
    // An HTTP2 port: the pool speaks HTTP/2, so TLS offers only h2.
    let se = service_entry(host, 443, addr.port(), "MESH_EXTERNAL", "")
        .replace("protocol: HTTP}", "protocol: HTTP2}");
    let dr = destination_rule(
        host,
        &format!(
            "    tls: {{mode: SIMPLE, caCertificates: {}}}\n",
            ca_path.display()
        ),
    );
    let cfg = tempfile::tempdir().unwrap();
    let m = mesh_at(cfg.path(), &format!("{se}{dr}"), None).await;
    let (status, flags, body) = get(&m.http_client(), &format!("http://{host}:443/")).await;
    assert_eq!(status, 200, "{flags} {body}");
    assert_eq!(seen.alpn.lock().unwrap()[0].as_deref(), Some(&b"h2"[..]));
}

#[tokio::test]
async fn mesh_config_can_turn_auto_mtls_off() {
    let pki = tempfile::tempdir().unwrap();
    let ca = ca_in(pki.path(), TD);
    let (addr, _tx) = start(model(&peer_authn("PERMISSIVE")), issue(&ca, "reviews")).await;
    let cfg = tempfile::tempdir().unwrap();
    let yaml = service_entry(
        REVIEWS,
        9080,
        addr.port(),
        "MESH_INTERNAL",
        &in_mesh("reviews"),
    );
    std::fs::write(cfg.path().join("mesh.yaml"), yaml).unwrap();
    let mesh_config = pki.path().join("meshconfig.yaml");
    std::fs::write(&mesh_config, "enableAutoMtls: false\n").unwrap();
    let m = Mesh::local(cfg.path())
        .mesh_config(&mesh_config)
        .namespace("default")
        .identity(TlsSource::fixed(issue(&ca, "productpage")))
        .build()
        .await
        .unwrap();
    let uri = format!("http://{REVIEWS}:9080/");
    let (status, _, body) = get(&m.http_client(), &uri).await;
    assert_eq!(status, 200);
    assert!(body.contains("peer=none"), "auto-mTLS is off: {body}");
    // An explicit DestinationRule still asks for mesh mTLS.
    let dr = destination_rule(REVIEWS, "    tls: {mode: ISTIO_MUTUAL}\n");
    let cfg2 = tempfile::tempdir().unwrap();
    std::fs::write(
        cfg2.path().join("mesh.yaml"),
        format!(
            "{}{dr}",
            service_entry(
                REVIEWS,
                9080,
                addr.port(),
                "MESH_INTERNAL",
                &in_mesh("reviews")
            )
        ),
    )
    .unwrap();
    let m = Mesh::local(cfg2.path())
        .mesh_config(&mesh_config)
        .namespace("default")
        .identity(TlsSource::fixed(issue(&ca, "productpage")))
        .build()
        .await
        .unwrap();
    let (status, _, body) = get(&m.http_client(), &uri).await;
    assert_eq!(status, 200);
    assert!(body.contains(&format!("peer={CLIENT_ID}")), "{body}");
}
