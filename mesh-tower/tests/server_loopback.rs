//! The inbound server on loopback with real mTLS: PeerAuthentication modes,
//! refused peers, peer identity for the app, authorization by principal,
//! live mode changes, and the authorization bypass corpus sent as raw
//! request lines.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, SystemTime};

use mesh_core::config::mesh_config::NormalizationType;
use mesh_test_support::identity::{ca_in, issue, issue_at, TD};
use mesh_test_support::inbound::{echo, mesh_config, model, model_with, peer_authn, start};
use mesh_test_support::raw_http::{mtls, plain, raw_get};

const ALLOWED: &str = "spiffe://cluster.local/ns/default/sa/allowed";

struct Pki {
    _dir: tempfile::TempDir,
    ca: mesh_ca::CertificateAuthority,
}

fn pki() -> Pki {
    let dir = tempfile::tempdir().unwrap();
    let ca = ca_in(dir.path(), TD);
    Pki { _dir: dir, ca }
}

#[tokio::test]
async fn strict_refuses_plaintext_and_the_app_sees_the_peer() {
    let p = pki();
    let (addr, _tx) = start(model(&peer_authn("STRICT")), issue(&p.ca, "server")).await;
    let r = plain(addr, &raw_get("/", "")).await;
    assert_eq!(r.status, 0, "plaintext must be refused: {r:?}");
    let r = mtls(
        addr,
        issue(&p.ca, "client"),
        p.ca.trust_bundle(),
        &raw_get("/hello?x=1", ""),
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200, "{r:?}");
    assert!(
        r.body
            .contains("peer=spiffe://cluster.local/ns/default/sa/client"),
        "{}",
        r.body
    );
    assert!(r.body.contains("path=/hello?x=1"));
    assert!(r.body.contains("conn=true"));
}

#[tokio::test]
async fn permissive_accepts_both_on_one_port() {
    let p = pki();
    let (addr, _tx) = start(model(&peer_authn("PERMISSIVE")), issue(&p.ca, "server")).await;
    let r = plain(addr, &raw_get("/", "")).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.body.contains("peer=none"));
    let r = mtls(
        addr,
        issue(&p.ca, "client"),
        p.ca.trust_bundle(),
        &raw_get("/", ""),
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200);
    assert!(r
        .body
        .contains("peer=spiffe://cluster.local/ns/default/sa/client"));
}

#[tokio::test]
async fn no_policy_is_permissive_and_disable_is_plaintext_only() {
    let p = pki();
    let (addr, _tx) = start(model(""), issue(&p.ca, "server")).await;
    assert_eq!(plain(addr, &raw_get("/", "")).await.status, 200);

    let (addr, _tx) = start(model(&peer_authn("DISABLE")), issue(&p.ca, "server")).await;
    assert_eq!(plain(addr, &raw_get("/", "")).await.status, 200);
    let tls = mtls(
        addr,
        issue(&p.ca, "client"),
        p.ca.trust_bundle(),
        &raw_get("/", ""),
    )
    .await;
    assert!(
        tls.is_err() || tls.as_ref().unwrap().status != 200,
        "DISABLE must not terminate TLS: {tls:?}"
    );
}

#[tokio::test]
async fn strict_refuses_foreign_expired_and_unknown_root_peers() {
    let p = pki();
    let server_cert = issue(&p.ca, "server");
    let (addr, _tx) = start(model(&peer_authn("STRICT")), server_cert).await;
    let roots = p.ca.trust_bundle().clone();

    // Another trust domain, whose root the server does not trust.
    let other_dir = tempfile::tempdir().unwrap();
    let other_td = ca_in(other_dir.path(), "other.domain");
    let foreign = issue(&other_td, "client");
    // Expired: issued two hours ago for one hour.
    let expired = issue_at(
        &p.ca,
        "spiffe://cluster.local/ns/default/sa/client",
        SystemTime::now() - Duration::from_secs(7200),
        Some(Duration::from_secs(3600)),
    );
    // Same trust domain name, unknown root.
    let rogue_dir = tempfile::tempdir().unwrap();
    let rogue = issue(&ca_in(rogue_dir.path(), TD), "client");

    for (what, cert) in [
        ("foreign", foreign),
        ("expired", expired),
        ("unknown root", rogue),
    ] {
        let r = mtls(addr, cert, &roots, &raw_get("/", "")).await;
        assert!(
            r.is_err() || r.as_ref().unwrap().status == 0,
            "{what} peer accepted: {r:?}"
        );
    }
    // The server keeps serving good peers.
    let r = mtls(addr, issue(&p.ca, "client"), &roots, &raw_get("/", ""))
        .await
        .unwrap();
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn mode_changes_apply_to_new_connections() {
    let p = pki();
    let (addr, tx) = start(model(&peer_authn("PERMISSIVE")), issue(&p.ca, "server")).await;
    assert_eq!(plain(addr, &raw_get("/", "")).await.status, 200);
    tx.send(model(&peer_authn("STRICT"))).unwrap();
    assert_eq!(plain(addr, &raw_get("/", "")).await.status, 0);
    let r = mtls(
        addr,
        issue(&p.ca, "client"),
        p.ca.trust_bundle(),
        &raw_get("/", ""),
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200);
}

fn allow_only(principal: &str) -> String {
    format!(
        "{}---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata:\n  name: only\n  namespace: default\nspec:\n  selector:\n    matchLabels:\n      app: server\n  action: ALLOW\n  rules:\n  - from:\n    - source:\n        principals: [\"{}\"]\n",
        peer_authn("PERMISSIVE"),
        principal.trim_start_matches("spiffe://")
    )
}

#[tokio::test]
async fn authz_by_principal() {
    let p = pki();
    let (addr, _tx) = start(model(&allow_only(ALLOWED)), issue(&p.ca, "server")).await;
    let roots = p.ca.trust_bundle().clone();
    let ok = mtls(addr, issue(&p.ca, "allowed"), &roots, &raw_get("/", ""))
        .await
        .unwrap();
    assert_eq!(ok.status, 200, "{ok:?}");
    let other = mtls(addr, issue(&p.ca, "other"), &roots, &raw_get("/", ""))
        .await
        .unwrap();
    assert_eq!(other.status, 403);
    assert_eq!(other.body.trim(), "RBAC: access denied");
    assert!(other
        .head
        .to_ascii_lowercase()
        .contains("x-mesh-response-flags: rbac"));
    let anon = plain(addr, &raw_get("/", "")).await;
    assert_eq!(anon.status, 403);
    assert_eq!(anon.body.trim(), "RBAC: access denied");
}

#[tokio::test]
async fn grpc_denial_is_permission_denied() {
    let p = pki();
    let (addr, _tx) = start(model(&allow_only(ALLOWED)), issue(&p.ca, "server")).await;
    let r = plain(
        addr,
        &raw_get("/pkg.Svc/Method", "content-type: application/grpc\r\n"),
    )
    .await;
    assert_eq!(r.status, 200);
    assert!(r.head.contains("grpc-status: 7"), "{}", r.head);
}

// ---------------------------------------------------------------------
// Bypass corpus.

const CORPUS: [&str; 10] = [
    "//admin",
    "/%2Fadmin",
    "/%2fadmin",
    "/%5Cadmin",
    "/./admin",
    "/foo/../admin",
    "/ADMIN",
    "/admin?x=1",
    "/admin#frag",
    "/admin/",
];

fn policy(
    action: &str,
    paths: &str,
    mode: NormalizationType,
) -> std::sync::Arc<mesh_core::model::Model> {
    let yaml = format!(
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata:\n  name: p\n  namespace: default\nspec:\n  action: {action}\n  rules:\n  - to:\n    - operation:\n        paths: {paths}\n"
    );
    model_with(&yaml, &mesh_config(mode))
}

/// The corpus entries each mode must deny (DENY `/admin`, `/admin/*`).
fn expected_denied(mode: NormalizationType) -> Vec<&'static str> {
    let mut v = vec!["/admin?x=1", "/admin#frag", "/admin/"];
    if mode != NormalizationType::None {
        v.extend(["/./admin", "/foo/../admin"]);
    }
    if matches!(
        mode,
        NormalizationType::MergeSlashes | NormalizationType::DecodeAndMergeSlashes
    ) {
        v.push("//admin");
    }
    if mode == NormalizationType::DecodeAndMergeSlashes {
        v.extend(["/%2Fadmin", "/%2fadmin", "/%5Cadmin"]);
    }
    v
}

fn app_path(body: &str) -> &str {
    body.lines()
        .find_map(|l| l.strip_prefix("path="))
        .unwrap_or("")
}

fn is_admin(path: &str) -> bool {
    let p = path.split(['?', '#']).next().unwrap_or("");
    p == "/admin" || p.starts_with("/admin/")
}

const MODES: [NormalizationType; 4] = [
    NormalizationType::None,
    NormalizationType::Base,
    NormalizationType::MergeSlashes,
    NormalizationType::DecodeAndMergeSlashes,
];

fn mode_of(m: NormalizationType) -> mesh_core::authz::Normalization {
    use mesh_core::authz::Normalization as N;
    match m {
        NormalizationType::None => N::None,
        NormalizationType::MergeSlashes => N::MergeSlashes,
        NormalizationType::DecodeAndMergeSlashes => N::DecodeAndMergeSlashes,
        _ => N::Base,
    }
}

#[tokio::test]
async fn bypass_corpus_against_deny() {
    let p = pki();
    let mut bypasses = Vec::new();
    for mode in MODES {
        let (addr, _tx) = start(
            policy("DENY", "[\"/admin\", \"/admin/*\"]", mode),
            issue(&p.ca, "server"),
        )
        .await;
        let denied = expected_denied(mode);
        for path in CORPUS {
            let r = plain(addr, &raw_get(path, "")).await;
            let want = if denied.contains(&path) { 403 } else { 200 };
            assert_eq!(r.status, want, "{mode:?} {path}: {r:?}");
            if r.status == 200 {
                let got = app_path(&r.body);
                // The app receives exactly the normalized path (query kept).
                let norm = mesh_core::authz::normalize(path, mode_of(mode)).unwrap();
                assert_eq!(got.split('?').next().unwrap(), norm, "{mode:?} {path}");
                if is_admin(got) {
                    bypasses.push(format!("{mode:?} {path} -> {got}"));
                }
            } else {
                assert_eq!(r.body.trim(), "RBAC: access denied");
            }
        }
    }
    assert!(bypasses.is_empty(), "bypasses: {bypasses:?}");
}

#[tokio::test]
async fn bypass_corpus_against_allow() {
    let p = pki();
    let mut bypasses = Vec::new();
    let escapes = [
        "/public/../admin",
        "/public/%2e%2e/admin",
        "/public/..%2fadmin",
        "/public/..%5cadmin",
        "/public\\..\\admin",
        "/public//../../admin",
        "/public/./../admin",
    ];
    for mode in MODES {
        let (addr, _tx) = start(
            policy("ALLOW", "[\"/public/*\"]", mode),
            issue(&p.ca, "server"),
        )
        .await;
        assert_eq!(plain(addr, &raw_get("/public/x", "")).await.status, 200);
        for path in CORPUS.iter().chain(escapes.iter()) {
            let r = plain(addr, &raw_get(path, "")).await;
            assert!(r.status == 200 || r.status == 403, "{mode:?} {path}: {r:?}");
            if r.status == 200 {
                let got = app_path(&r.body);
                // Whatever passed must be under /public/ as the app sees it.
                if mode != NormalizationType::None && !got.starts_with("/public/") {
                    bypasses.push(format!("{mode:?} {path} -> {got}"));
                }
            }
        }
        // Every non-/public/ corpus entry is denied in every mode.
        for path in CORPUS {
            assert_eq!(
                plain(addr, &raw_get(path, "")).await.status,
                403,
                "{mode:?} {path}"
            );
        }
    }
    assert!(bypasses.is_empty(), "bypasses: {bypasses:?}");
}

#[tokio::test]
async fn rotation_under_steady_traffic_loses_no_request() {
    use mesh_tower::server::{Server, TlsSource};
    use std::sync::Arc;
    let p = pki();
    let (cert_tx, certs) = tokio::sync::watch::channel(Arc::new(issue(&p.ca, "server")));
    let trust = tokio::sync::watch::channel(Arc::new(p.ca.trust_bundle().clone())).1;
    let (_tx, rx) = tokio::sync::watch::channel(model(&peer_authn("STRICT")));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        Server::new(rx, TlsSource::new(certs, trust)).serve(listener, tower::service_fn(echo)),
    );
    let rotations = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let r2 = rotations.clone();
    let ca_dir = p._dir.path().to_path_buf();
    let rotator = tokio::spawn(async move {
        let ca = ca_in(&ca_dir, TD);
        loop {
            tokio::time::sleep(Duration::from_millis(20)).await;
            cert_tx.send_replace(Arc::new(issue(&ca, "server")));
            r2.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    });
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let cert_ca = ca_in(p._dir.path(), TD);
            let roots = p.ca.trust_bundle().clone();
            tokio::spawn(async move {
                let mut ok = 0;
                for _ in 0..15 {
                    let r = mtls(addr, issue(&cert_ca, "client"), &roots, &raw_get("/", ""))
                        .await
                        .unwrap();
                    assert_eq!(r.status, 200, "{r:?}");
                    ok += 1;
                }
                ok
            })
        })
        .collect();
    let mut total = 0;
    for c in clients {
        total += c.await.unwrap();
    }
    rotator.abort();
    assert_eq!(total, 60);
    assert!(rotations.load(std::sync::atomic::Ordering::SeqCst) >= 3);
}
