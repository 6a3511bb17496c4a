//! meshd's TLS port (istiod's 15012) on loopback, real TLS, real SDK: a
//! workload bootstraps with a token, gets its certificate and its config
//! over the TLS port and routes a request; callers without credentials,
//! with a wrong token, or claiming another identity than their
//! certificate's are refused; renewal with the workload certificate works;
//! a client that trusts another root fails saying so.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use mesh_ca::proto::{IstioCertificateRequest, IstioCertificateServiceClient};
use mesh_ca::{CaClient, CaClientConfig, CaConfig, CertificateAuthority, SpiffeId};
use mesh_control::{Meshd, MeshdConfig, MeshdHandle};
use mesh_test_support::{backends, configs, sdk};
use mesh_tower::source::SourceError;
use mesh_tower::{CaOptions, Mesh};
use mesh_xds::pb::envoy::config::core::v3::Node;
use mesh_xds::pb::envoy::service::discovery::v3::{
    aggregated_discovery_service_client::AggregatedDiscoveryServiceClient, DiscoveryRequest,
    DiscoveryResponse,
};
use tokio_stream::StreamExt as _;
use tonic::transport::{Channel, Endpoint};

const WEB_TOKEN: &str = "token-web-0123456789";

/// meshd over a config that routes `api.example.com` to `backend`, with a
/// bootstrap token for `demo/web`.
async fn start(dir: &Path, backend: SocketAddr) -> MeshdHandle {
    let conf = dir.join("conf");
    std::fs::create_dir_all(&conf).unwrap();
    std::fs::write(
        conf.join("api.yaml"),
        configs::service_entry("api.example.com", 80, backend.port(), "MESH_EXTERNAL", ""),
    )
    .unwrap();
    let tokens = dir.join("tokens.json");
    std::fs::write(
        &tokens,
        format!(
            r#"{{"tokens":[{{"token":"{WEB_TOKEN}","namespace":"demo","serviceAccount":"web"}}]}}"#
        ),
    )
    .unwrap();
    let mut c = MeshdConfig::new(&conf);
    c.ca_tokens = Some(tokens);
    c.poll_interval = Duration::from_millis(50);
    c.debounce = Duration::from_millis(50);
    Meshd::start(c).await.expect("meshd starts")
}

fn token_file(dir: &Path, token: &str) -> PathBuf {
    let f = dir.join(format!("{}.token", &token[..8]));
    std::fs::write(&f, format!("{token}\n")).unwrap();
    f
}

fn id(ns: &str, sa: &str) -> SpiffeId {
    SpiffeId::new("cluster.local", ns, sa).unwrap()
}

/// Opens an ADS stream as `node` (with `token` as a bearer token, if
/// given) and returns the first response, or the status it was refused
/// with.
async fn first_response(
    channel: Channel,
    node: Node,
    token: Option<&str>,
) -> Result<DiscoveryResponse, tonic::Status> {
    let req = DiscoveryRequest {
        node: Some(node),
        type_url: mesh_xds::types::CLUSTER.to_string(),
        ..Default::default()
    };
    let mut request = tonic::Request::new(tokio_stream::iter([req]).chain(tokio_stream::pending()));
    if let Some(t) = token {
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {t}").parse().unwrap());
    }
    let mut stream = AggregatedDiscoveryServiceClient::new(channel)
        .stream_aggregated_resources(request)
        .await?
        .into_inner();
    tokio::time::timeout(Duration::from_secs(10), stream.message())
        .await
        .expect("an answer within 10 s")?
        .ok_or_else(|| tonic::Status::unknown("the stream ended without an answer"))
}

fn node(ns: &str, sa: &str) -> Node {
    common::node(
        &format!("sidecar~127.0.0.1~{sa}-1.{ns}~{ns}.svc.cluster.local"),
        ns,
        &[("app", sa)],
        &[("SERVICE_ACCOUNT", sa)],
    )
}

/// The SDK pointed at the TLS port only (CA and xDS): bootstraps its
/// certificate with the token, then takes its config over mTLS with it,
/// and routes a request by that config.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_gets_certificate_and_config_over_the_tls_port_and_routes() {
    let dir = tempfile::tempdir().unwrap();
    let backend = backends::backend().await;
    let meshd = start(dir.path(), backend.addr).await;
    let secure = meshd
        .secure_xds_addr()
        .expect("the TLS port is on by default");
    assert!(meshd.root_cert_file().exists());
    assert_eq!(
        std::fs::read_to_string(meshd.root_cert_file())
            .unwrap()
            .trim(),
        meshd.root_cert_pem().trim()
    );

    let mut ca = CaOptions::new(secure.to_string(), "localhost", meshd.root_cert_file());
    ca.token_file = Some(token_file(dir.path(), WEB_TOKEN));
    let url = format!("https://{secure}");
    let mesh = Mesh::xds([url.as_str()])
        .namespace("demo")
        .labels([("app", "web")])
        .service_account("web")
        .ca(ca)
        .build()
        .await
        .unwrap();
    assert_eq!(
        mesh.certificates().unwrap().current().identity(),
        &id("demo", "web")
    );
    assert_eq!(
        mesh.xds_status().unwrap().connected.as_deref(),
        Some(url.as_str())
    );
    let (status, flags, body) = sdk::get(&mesh.http_client(), "http://api.example.com/").await;
    assert_eq!((status, flags.as_str()), (200, ""), "{body}");
    assert_eq!(body, backend.addr.to_string());
    // meshd saw the node on the TLS port as the identity it proved.
    let nodes = meshd.controller().nodes();
    assert!(
        nodes
            .values()
            .any(|n| n.info.namespace.as_deref() == Some("demo")
                && n.info.service_account.as_deref() == Some("web")),
        "{:?}",
        nodes.keys()
    );
    meshd.shutdown().await;
}

/// Without a certificate, only a bootstrap token gets an ADS stream, and
/// only as the identity the token grants; the plaintext port is as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ads_on_the_tls_port_needs_credentials_for_the_claimed_identity() {
    let dir = tempfile::tempdir().unwrap();
    let backend = backends::backend().await;
    let meshd = start(dir.path(), backend.addr).await;
    let secure = meshd.secure_xds_addr().unwrap();
    let roots = meshd.ca().trust_bundle().clone();

    // No credentials: refused, saying what to present.
    let ch = common::secure_channel(secure, roots.clone(), None)
        .await
        .unwrap();
    let s = first_response(ch.clone(), node("demo", "web"), None)
        .await
        .unwrap_err();
    assert_eq!(s.code(), tonic::Code::Unauthenticated, "{s:?}");
    assert!(
        s.message().contains(&secure.to_string()) && s.message().contains("Bearer"),
        "{}",
        s.message()
    );
    // A token meshd does not know: refused.
    let s = first_response(
        ch.clone(),
        node("demo", "web"),
        Some("not-a-token-0123456789"),
    )
    .await
    .unwrap_err();
    assert_eq!(s.code(), tonic::Code::Unauthenticated, "{s:?}");
    assert!(
        s.message().contains("unknown bootstrap token"),
        "{}",
        s.message()
    );
    // A good token for another identity than the node claims: refused.
    let s = first_response(ch.clone(), node("demo", "api"), Some(WEB_TOKEN))
        .await
        .unwrap_err();
    assert_eq!(s.code(), tonic::Code::PermissionDenied, "{s:?}");
    assert!(
        s.message()
            .contains("spiffe://cluster.local/ns/demo/sa/web")
            && s.message().contains("\"api\""),
        "{}",
        s.message()
    );
    // The token's own identity: served.
    let r = first_response(ch, node("demo", "web"), Some(WEB_TOKEN))
        .await
        .unwrap();
    assert_eq!(r.type_url, mesh_xds::types::CLUSTER);

    // The plaintext port still serves anyone, as istiod's 15010.
    let plain = Endpoint::from_shared(format!("http://{}", meshd.xds_addr()))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let r = first_response(plain, node("demo", "api"), None)
        .await
        .unwrap();
    assert_eq!(r.type_url, mesh_xds::types::CLUSTER);
    meshd.shutdown().await;
}

/// A certificate for one identity cannot ask for another's config.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_for_one_identity_claiming_another_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let backend = backends::backend().await;
    let meshd = start(dir.path(), backend.addr).await;
    let secure = meshd.secure_xds_addr().unwrap();
    let roots = meshd.ca().trust_bundle().clone();
    let web = meshd
        .ca()
        .issue_local(&id("demo", "web"), &[], None)
        .unwrap();

    let ch = common::secure_channel(secure, roots, Some(Arc::new(web)))
        .await
        .unwrap();
    let s = first_response(ch.clone(), node("demo", "api"), None)
        .await
        .unwrap_err();
    assert_eq!(s.code(), tonic::Code::PermissionDenied, "{s:?}");
    let msg = s.message();
    assert!(
        msg.contains("client certificate is spiffe://cluster.local/ns/demo/sa/web")
            && msg.contains("\"api\"")
            && msg.contains("SERVICE_ACCOUNT"),
        "{msg}"
    );
    // Another namespace is no better.
    let s = first_response(ch.clone(), node("shop", "web"), None)
        .await
        .unwrap_err();
    assert_eq!(s.code(), tonic::Code::PermissionDenied, "{s:?}");
    // Its own identity is served (no token needed).
    let r = first_response(ch, node("demo", "web"), None).await.unwrap();
    assert_eq!(r.type_url, mesh_xds::types::CLUSTER);

    // The same over Delta, from the SDK: its certificate is web's, its
    // node (tuned) says api; the build fails naming both.
    let mut ca = CaOptions::new(secure.to_string(), "localhost", meshd.root_cert_file());
    ca.token_file = Some(token_file(dir.path(), WEB_TOKEN));
    let err = Mesh::xds([format!("https://{secure}")])
        .namespace("demo")
        .service_account("web")
        .ca(ca)
        .xds_tuning(|c| {
            c.delta = true;
            c.node.service_account = Some("api".into());
        })
        .xds_ready_timeout(Duration::from_secs(2))
        .build()
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("PermissionDenied")
            && err.contains("spiffe://cluster.local/ns/demo/sa/web")
            && err.contains("\"api\""),
        "{err}"
    );
    meshd.shutdown().await;
}

/// The CA on the TLS port renews with the workload certificate alone, for
/// its own identity only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewal_with_the_workload_certificate_over_the_tls_port() {
    let dir = tempfile::tempdir().unwrap();
    let backend = backends::backend().await;
    let meshd = start(dir.path(), backend.addr).await;
    let secure = meshd.secure_xds_addr().unwrap();
    let roots = meshd.ca().trust_bundle().clone();
    let web = Arc::new(
        meshd
            .ca()
            .issue_local(&id("demo", "web"), &[], None)
            .unwrap(),
    );

    // No token configured: the certificate is the only credential.
    let client = CaClient::new(CaClientConfig::new(
        secure.to_string(),
        "meshd.istio-system.svc",
        roots.clone(),
    ));
    let renewed = client
        .fetch_certificate(&id("demo", "web"), Some(web.clone()))
        .await
        .unwrap();
    assert_eq!(renewed.identity(), &id("demo", "web"));
    assert_ne!(renewed.leaf(), web.leaf());

    // Asking for another identity with it is refused.
    let ch = common::secure_channel(secure, roots.clone(), Some(web.clone()))
        .await
        .unwrap();
    let csr = mesh_ca::csr::generate(&id("demo", "api")).unwrap();
    let mut metadata = prost_types::Struct::default();
    metadata.fields.insert(
        mesh_ca::server::IMPERSONATED_IDENTITY.into(),
        prost_types::Value {
            kind: Some(prost_types::value::Kind::StringValue(
                id("demo", "api").to_string(),
            )),
        },
    );
    let s = IstioCertificateServiceClient::new(ch)
        .create_certificate(IstioCertificateRequest {
            csr: csr.csr_pem,
            validity_duration: 0,
            metadata: Some(metadata),
        })
        .await
        .unwrap_err();
    assert_eq!(s.code(), tonic::Code::PermissionDenied, "{s:?}");
    // And whatever the CSR asks, a renewal carries the caller's identity.
    let err = client
        .fetch_certificate(&id("demo", "api"), Some(web))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("issued"), "{err}");
    meshd.shutdown().await;
}

/// A workload that trusts another root fails, and the error names the
/// server, the roots it used and what to give instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_server_certificate_fails_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let backend = backends::backend().await;
    let meshd = start(dir.path(), backend.addr).await;
    let secure = meshd.secure_xds_addr().unwrap();
    let other = CertificateAuthority::new_self_signed(CaConfig::new("cluster.local"))
        .unwrap()
        .0;
    let other_root = dir.path().join("other-root.pem");
    std::fs::write(&other_root, other.trust_bundle().to_pem()).unwrap();

    let url = format!("https://{secure}");
    let err = Mesh::xds([url.as_str()])
        .namespace("demo")
        .service_account("web")
        .xds_roots(&other_root)
        .xds_token_file(token_file(dir.path(), WEB_TOKEN))
        .xds_ready_timeout(Duration::from_secs(2))
        .build()
        .await
        .err()
        .unwrap();
    let msg = err.to_string();
    assert!(matches!(err, SourceError::Xds(_)), "{msg}");
    assert!(
        msg.contains(&url)
            && msg.contains(&other_root.display().to_string())
            && msg.contains("root-cert.pem"),
        "{msg}"
    );

    // The same root works, with the token alone (no CA on the builder).
    let mesh = Mesh::xds([url.as_str()])
        .namespace("demo")
        .service_account("web")
        .xds_roots(meshd.root_cert_file())
        .xds_token_file(token_file(dir.path(), WEB_TOKEN))
        .build()
        .await
        .unwrap();
    assert!(mesh.current().outbound.contains_key("api.example.com:80"));

    // The CA client says which CA and why.
    let client = CaClient::new(CaClientConfig::new(
        secure.to_string(),
        "localhost",
        other.trust_bundle().clone(),
    ));
    let err = client
        .fetch_certificate(&id("demo", "web"), None)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(&secure.to_string())
            && err.contains("root-cert.pem")
            && err.contains("localhost"),
        "{err}"
    );
    meshd.shutdown().await;
}
