//! Pods' Kubernetes service account tokens as credentials for meshd's TLS
//! xDS port and CA, checked with a real kube-apiserver's TokenReview (as
//! istiod does): a token from the TokenRequest API for audience
//! `istio-ca` gets the real SDK its config and a certificate for its
//! service account; a token for another service account cannot claim this
//! one's node (PERMISSION_DENIED); a token for another audience, a forged
//! one, the API server's own static user token and garbage are
//! UNAUTHENTICATED, saying why.
//!
//! Each test runs in its own network namespace (root needed), as
//! tests/kube.rs.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::kube::{in_private_netns, meshd};

use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::api::{Api, PostParams};
use mesh_ca::{CaClient, CaClientConfig, SpiffeId};
use mesh_control::MeshdHandle;
use mesh_test_support::kube::{istio_crds, KubeCluster, ADMIN};
use mesh_tower::{CaOptions, Mesh};
use mesh_xds::pb::envoy::config::core::v3::Node;
use mesh_xds::pb::envoy::service::discovery::v3::{
    aggregated_discovery_service_client::AggregatedDiscoveryServiceClient, DiscoveryRequest,
    DiscoveryResponse,
};
use tokio_stream::StreamExt as _;
use tonic::transport::Channel;

const NS: &str = "shop";
const SA: &str = "cart";
const OTHER_SA: &str = "payments";
const HOST: &str = "api.shop.example";

/// A cluster with Istio's CRDs, namespace [`NS`], its service accounts
/// [`SA`] and [`OTHER_SA`], and a ServiceEntry meshd serves.
async fn cluster() -> KubeCluster {
    let cluster = KubeCluster::start().await;
    cluster.apply_yaml(&istio_crds()).await;
    cluster.create_namespace(NS).await;
    cluster
        .apply_yaml(&format!(
            r#"apiVersion: v1
kind: ServiceAccount
metadata: {{name: {SA}, namespace: {NS}}}
---
apiVersion: v1
kind: ServiceAccount
metadata: {{name: {OTHER_SA}, namespace: {NS}}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: api, namespace: {NS}}}
spec:
  hosts: [{HOST}]
  location: MESH_EXTERNAL
  resolution: STATIC
  ports: [{{name: http, number: 80, protocol: HTTP}}]
  endpoints:
  - address: 127.0.0.1
    ports: {{http: 8080}}
"#
        ))
        .await;
    cluster
}

/// A token for `sa` in [`NS`] from the TokenRequest API (what the kubelet
/// mounts in a pod as its projected token), for `audiences`.
async fn token(cluster: &KubeCluster, sa: &str, audiences: &[&str]) -> String {
    let request = TokenRequest {
        spec: Some(TokenRequestSpec {
            audiences: Some(audiences.iter().map(|a| a.to_string()).collect()),
            expiration_seconds: Some(3600),
            ..TokenRequestSpec::default()
        }),
        ..TokenRequest::default()
    };
    Api::<ServiceAccount>::namespaced(cluster.client(), NS)
        .create_token_request(sa, &PostParams::default(), &request)
        .await
        .unwrap_or_else(|e| panic!("TokenRequest for {NS}/{sa}: {e}"))
        .status
        .and_then(|s| s.token)
        .expect("the TokenRequest answer has a token")
}

fn token_file(dir: &Path, name: &str, token: &str) -> PathBuf {
    let f = dir.join(format!("{name}.token"));
    std::fs::write(&f, format!("{token}\n")).unwrap();
    f
}

fn id(ns: &str, sa: &str) -> SpiffeId {
    SpiffeId::new("cluster.local", ns, sa).unwrap()
}

fn node(ns: &str, sa: &str) -> Node {
    common::node(
        &format!("sidecar~10.244.0.7~{sa}-1.{ns}~{ns}.svc.cluster.local"),
        ns,
        &[("app", sa)],
        &[("SERVICE_ACCOUNT", sa)],
    )
}

/// Opens an ADS stream as `node` with `token` as its bearer token and
/// returns the first response, or the status it was refused with.
async fn first_response(
    channel: Channel,
    node: Node,
    token: &str,
) -> Result<DiscoveryResponse, tonic::Status> {
    let req = DiscoveryRequest {
        node: Some(node),
        type_url: mesh_xds::types::CLUSTER.to_string(),
        ..Default::default()
    };
    let mut request = tonic::Request::new(tokio_stream::iter([req]).chain(tokio_stream::pending()));
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    let mut stream = AggregatedDiscoveryServiceClient::new(channel)
        .stream_aggregated_resources(request)
        .await?
        .into_inner();
    tokio::time::timeout(Duration::from_secs(10), stream.message())
        .await
        .expect("an answer within 10 s")?
        .ok_or_else(|| tonic::Status::unknown("the stream ended without an answer"))
}

/// A CA client for meshd's TLS port presenting `token`.
fn ca_client(meshd: &MeshdHandle, token: &str) -> CaClient {
    let mut cfg = CaClientConfig::new(
        meshd.secure_xds_addr().unwrap().to_string(),
        "localhost",
        meshd.ca().trust_bundle().clone(),
    );
    cfg.token = Some(token.to_string());
    CaClient::new(cfg)
}

/// The real SDK with only its pod's service account token: config over
/// the TLS xDS port, and a certificate for its service account from the
/// CA (then config over mTLS with it).
#[test]
fn a_service_account_token_gets_the_sdk_config_and_its_certificate() {
    in_private_netns(|| async {
        let cluster = cluster().await;
        let meshd = meshd(&cluster).await;
        let secure = meshd.secure_xds_addr().expect("the TLS port is on");
        let url = format!("https://{secure}");
        let dir = tempfile::tempdir().unwrap();
        let sa_token = token_file(dir.path(), SA, &token(&cluster, SA, &["istio-ca"]).await);

        // xDS with the token alone (no CA on the builder).
        let mesh = Mesh::xds([url.as_str()])
            .namespace(NS)
            .service_account(SA)
            .labels([("app", SA)])
            .xds_roots(meshd.root_cert_file())
            .xds_token_file(&sa_token)
            .build()
            .await
            .unwrap();
        assert!(
            mesh.current().outbound.contains_key(&format!("{HOST}:80")),
            "{:?}",
            mesh.current().outbound.keys().collect::<Vec<_>>()
        );
        assert_eq!(
            mesh.xds_status().unwrap().connected.as_deref(),
            Some(url.as_str())
        );
        let nodes = meshd.controller().nodes();
        assert!(
            nodes
                .values()
                .any(|n| n.info.namespace.as_deref() == Some(NS)
                    && n.info.service_account.as_deref() == Some(SA)),
            "{:?}",
            nodes.keys()
        );

        // The CA bootstraps the workload certificate with the same token,
        // for the token's service account; xDS then runs over mTLS.
        let mut ca = CaOptions::new(secure.to_string(), "localhost", meshd.root_cert_file());
        ca.token_file = Some(sa_token.clone());
        let mesh = Mesh::xds([url.as_str()])
            .namespace(NS)
            .service_account(SA)
            .labels([("app", SA)])
            .ca(ca)
            .build()
            .await
            .unwrap();
        let cert = mesh.certificates().unwrap().current();
        assert_eq!(cert.identity(), &id(NS, SA));
        assert_eq!(
            cert.identity().to_string(),
            format!("spiffe://cluster.local/ns/{NS}/sa/{SA}")
        );
        assert!(mesh.current().outbound.contains_key(&format!("{HOST}:80")));

        // Whatever the CSR asks for, the certificate is the token's.
        let err = ca_client(&meshd, std::fs::read_to_string(&sa_token).unwrap().trim())
            .fetch_certificate(&id(NS, OTHER_SA), None)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("issued"), "{err}");
        meshd.shutdown().await;
    });
}

/// Every other token is refused: another service account's for this one's
/// node (PERMISSION_DENIED), and (UNAUTHENTICATED) a token for another
/// audience, a forged one, a user's that is no service account, and
/// garbage.
#[test]
fn other_tokens_are_refused_saying_why() {
    in_private_netns(|| async {
        let cluster = cluster().await;
        let meshd = meshd(&cluster).await;
        let secure = meshd.secure_xds_addr().unwrap();
        let ch = common::secure_channel(secure, meshd.ca().trust_bundle().clone(), None)
            .await
            .unwrap();

        // (b) payments' token, claiming cart's node: refused, naming both.
        let payments = token(&cluster, OTHER_SA, &["istio-ca"]).await;
        let s = first_response(ch.clone(), node(NS, SA), &payments)
            .await
            .unwrap_err();
        assert_eq!(s.code(), tonic::Code::PermissionDenied, "{s:?}");
        assert!(
            s.message().contains(&format!(
                "service account token proves spiffe://cluster.local/ns/{NS}/sa/{OTHER_SA}"
            )) && s.message().contains(&format!("\"{SA}\"")),
            "{}",
            s.message()
        );
        // ... while its own node is served.
        let r = first_response(ch.clone(), node(NS, OTHER_SA), &payments)
            .await
            .unwrap();
        assert_eq!(r.type_url, mesh_xds::types::CLUSTER);

        // (c) cart's token for another audience: the API server does not
        // authenticate it for istio-ca.
        let wrong_audience = token(&cluster, SA, &["api"]).await;
        let s = first_response(ch.clone(), node(NS, SA), &wrong_audience)
            .await
            .unwrap_err();
        assert_eq!(s.code(), tonic::Code::Unauthenticated, "{s:?}");
        assert!(
            s.message().contains(&secure.to_string())
                && s.message().contains("did not authenticate the token")
                && s.message().contains("istio-ca")
                && s.message().contains("service account token"),
            "{}",
            s.message()
        );
        // The CA refuses it too.
        let err = ca_client(&meshd, &wrong_audience)
            .fetch_certificate(&id(NS, SA), None)
            .await
            .unwrap_err();
        assert!(
            matches!(&err, mesh_ca::Error::Rpc(s) if s.code() == tonic::Code::Unauthenticated),
            "{err}"
        );

        // (d) A forged token (cart's, its signature altered), the API
        // server's static admin user (no service account), and garbage.
        let good = token(&cluster, SA, &["istio-ca"]).await;
        let (head, sig) = good.rsplit_once('.').unwrap();
        let forged = format!("{head}.{}", "A".repeat(sig.len()));
        let refused: [(&str, &str); 3] = [
            (forged.as_str(), "did not authenticate the token"),
            (cluster.token_for(ADMIN), "unknown bootstrap token"),
            ("garbage-0123456789", "unknown bootstrap token"),
        ];
        for (token, why) in refused {
            let s = first_response(ch.clone(), node(NS, SA), token)
                .await
                .unwrap_err();
            assert_eq!(s.code(), tonic::Code::Unauthenticated, "{s:?}");
            assert!(s.message().contains(why), "{why}: {}", s.message());
            assert!(!s.message().contains(token), "{}", s.message());
        }

        // The good token still works, for its own identity.
        let r = first_response(ch, node(NS, SA), &good).await.unwrap();
        assert_eq!(r.type_url, mesh_xds::types::CLUSTER);
        meshd.shutdown().await;
    });
}
