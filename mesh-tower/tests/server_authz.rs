//! Authorization details in-process: dry-run and AUDIT never change the
//! outcome, CUSTOM goes to the external-authorizer hook (denied without
//! one), the decision is recorded on the response, and TCP connections are
//! checked with TCP semantics.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use http::Request;
use mesh_ca::SpiffeId;
use mesh_core::authz::Verdict;
use mesh_core::config::security::authorization_policy::Action;
use mesh_test_support::inbound;
use mesh_tower::body;
use mesh_tower::server::authz::BoxFuture;
use mesh_tower::server::{
    check_connection, AuthzConfig, AuthzDecision, ConnectionInfo, ExternalAuthorizer, InboundLayer,
    PeerIdentity,
};
use tokio::sync::watch;
use tower::{Layer, ServiceExt};

fn ap(name: &str, annotations: &str, spec: &str) -> String {
    format!(
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata:\n  name: {name}\n  namespace: default\n{annotations}spec:\n{spec}---\n"
    )
}

fn conn(principal: Option<&str>) -> ConnectionInfo {
    ConnectionInfo {
        peer_addr: "10.1.2.3:5555".parse().unwrap(),
        local_addr: "10.1.2.4:8080".parse().unwrap(),
        port: 8080,
        identity: principal.map(|p| PeerIdentity::new(SpiffeId::parse(p).unwrap())),
        sni: None,
    }
}

async fn send(yaml: &str, config: AuthzConfig, path: &str) -> (u16, Option<AuthzDecision>) {
    let (_tx, rx) = watch::channel(inbound::model(yaml));
    let svc = InboundLayer::new(rx.clone())
        .with_authz(rx, config)
        .layer(tower::service_fn(inbound::echo));
    let mut req = Request::builder().uri(path).body(body::empty()).unwrap();
    req.extensions_mut().insert(conn(None));
    let resp = svc.oneshot(req).await.unwrap();
    (
        resp.status().as_u16(),
        resp.extensions().get::<AuthzDecision>().cloned(),
    )
}

#[tokio::test]
async fn dry_run_and_audit_only_record() {
    let yaml = format!(
        "{}{}",
        ap(
            "shadow-deny",
            "  annotations:\n    istio.io/dry-run: \"true\"\n",
            "  action: DENY\n  rules:\n  - to:\n    - operation:\n        paths: [\"/x\"]\n"
        ),
        ap(
            "audit",
            "",
            "  action: AUDIT\n  rules:\n  - to:\n    - operation:\n        paths: [\"/x\"]\n"
        )
    );
    let (status, decision) = send(&yaml, AuthzConfig::default(), "/x").await;
    assert_eq!(status, 200);
    let d = decision.unwrap();
    assert_eq!(d.verdict, Verdict::Allow);
    assert_eq!(d.dry_run.as_ref().unwrap().decision, Verdict::Deny);
    assert_eq!(d.audit.len(), 1);
}

#[tokio::test]
async fn deny_decision_is_recorded() {
    let yaml = ap(
        "block",
        "",
        "  action: DENY\n  rules:\n  - to:\n    - operation:\n        paths: [\"/x\"]\n",
    );
    let (status, decision) = send(&yaml, AuthzConfig::default(), "/x").await;
    assert_eq!(status, 403);
    let d = decision.unwrap();
    assert_eq!(d.policy.as_deref(), Some("default/block"));
    assert_eq!(d.action, Some(Action::Deny));
    assert_eq!(d.rule_index, Some(0));
}

struct AllowIfPath(&'static str);

impl ExternalAuthorizer for AllowIfPath {
    fn check(&self, provider: &str, request: &mesh_core::authz::Request) -> BoxFuture<bool> {
        let ok = provider == "ext" && request.path.starts_with(self.0);
        Box::pin(async move { ok })
    }
}

#[tokio::test]
async fn custom_goes_to_the_hook() {
    let yaml = ap(
        "ext",
        "",
        "  action: CUSTOM\n  provider:\n    name: ext\n  rules:\n  - to:\n    - operation:\n        paths: [\"/ext/*\"]\n",
    );
    // No hook: denied.
    assert_eq!(send(&yaml, AuthzConfig::default(), "/ext/a").await.0, 403);
    // Not matching the CUSTOM rule: not asked.
    assert_eq!(send(&yaml, AuthzConfig::default(), "/other").await.0, 200);
    let hook = AuthzConfig {
        external: Some(Arc::new(AllowIfPath("/ext/ok"))),
        ..AuthzConfig::default()
    };
    assert_eq!(send(&yaml, hook.clone(), "/ext/ok").await.0, 200);
    assert_eq!(send(&yaml, hook, "/ext/no").await.0, 403);
}

#[tokio::test]
async fn bad_paths_are_400_before_authorization() {
    let (status, _) = send("", AuthzConfig::default(), "/a%00b").await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn tcp_connections_use_tcp_semantics() {
    let yaml = ap(
        "tcp",
        "",
        "  rules:\n  - from:\n    - source:\n        principals: [\"cluster.local/ns/default/sa/db-client\"]\n",
    );
    let model = inbound::model(&yaml);
    let ok = check_connection(
        &model,
        &conn(Some("spiffe://cluster.local/ns/default/sa/db-client")),
        None,
    )
    .await;
    assert_eq!(ok.verdict, Verdict::Allow);
    let other = check_connection(
        &model,
        &conn(Some("spiffe://cluster.local/ns/default/sa/web")),
        None,
    )
    .await;
    assert_eq!(other.verdict, Verdict::Deny);
    assert_eq!(
        check_connection(&model, &conn(None), None).await.verdict,
        Verdict::Deny
    );

    // An ALLOW rule with HTTP-only fields never matches a TCP connection.
    let http_only = inbound::model(&ap(
        "paths",
        "",
        "  rules:\n  - to:\n    - operation:\n        paths: [\"/\"]\n",
    ));
    let d = check_connection(
        &http_only,
        &conn(Some("spiffe://cluster.local/ns/default/sa/db-client")),
        None,
    )
    .await;
    assert_eq!(d.verdict, Verdict::Deny);
}
