//! `meshctl install`'s CRDs and RBAC on a real kube-apiserver (built by
//! `scripts/kube-peers.sh`): meshd, holding only the rules the install
//! grants, lists every kind it watches, creates the CA Secret, wins the
//! leader Lease, publishes `istio-ca-root-cert` and writes analysis into
//! status; the API server refuses by schema what meshd would refuse.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::future::Future;
use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::api::rbac::v1::{ClusterRoleBinding, RoleBinding, Subject};
use kube::api::{Api, DynamicObject, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use mesh_control::kube::KubeSettings;
use mesh_control::{Meshd, MeshdConfig};
use mesh_test_support::kube::{KubeCluster, MESHD};
use meshctl::install::{self, rbac, InstallOptions};

/// Polls `f` for up to 20 s.
async fn eventually<F, Fut>(what: &str, f: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    mesh_test_support::wait::eventually(what, Duration::from_secs(20), f).await;
}

/// The install's bindings, with the harness's `meshd` user as subject in
/// place of the meshd ServiceAccount (no pod runs to hold its token).
fn bind_to_user(opts: &InstallOptions) -> (ClusterRoleBinding, RoleBinding) {
    let user = Subject {
        kind: "User".into(),
        name: MESHD.into(),
        api_group: Some("rbac.authorization.k8s.io".into()),
        namespace: None,
    };
    let mut crb = rbac::cluster_role_binding(opts);
    crb.subjects = Some(vec![user.clone()]);
    let mut rb = rbac::role_binding(opts);
    rb.subjects = Some(vec![user]);
    (crb, rb)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn meshd_runs_on_exactly_what_the_install_grants() {
    let cluster = KubeCluster::start().await;
    let opts = InstallOptions::default();
    // CRDs, Namespace, RBAC: everything but the workload (no kubelet).
    let yaml: String = install::objects(&opts)
        .into_iter()
        .filter(|o| {
            !matches!(
                o["kind"].as_str(),
                Some("Deployment" | "Service" | "ServiceAccount")
            )
        })
        .map(|o| format!("{o}\n---\n"))
        .collect();
    cluster.apply_yaml(&yaml).await;
    let (crb, rb) = bind_to_user(&opts);
    let admin = cluster.client();
    Api::<ClusterRoleBinding>::all(admin.clone())
        .patch(
            "meshd",
            &kube::api::PatchParams::apply("test").force(),
            &kube::api::Patch::Apply(&crb),
        )
        .await
        .unwrap();
    Api::<RoleBinding>::namespaced(admin.clone(), &opts.namespace)
        .patch(
            "meshd",
            &kube::api::PatchParams::apply("test").force(),
            &kube::api::Patch::Apply(&rb),
        )
        .await
        .unwrap();
    cluster.create_namespace("bookinfo").await;
    cluster
        .apply_yaml(
            r#"apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: bookinfo}
spec:
  selector: {app: reviews}
  ports: [{name: http, port: 9080}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow-all, namespace: bookinfo}
spec:
  action: ALLOW
  rules: [{}]
"#,
        )
        .await;

    // The schema refuses by shape: a duration that is not one.
    let vs_ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("networking.istio.io", "v1", "VirtualService"),
        "virtualservices",
    );
    let bad: DynamicObject = serde_json::from_value(serde_json::json!({
        "apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
        "metadata": {"name": "slow", "namespace": "bookinfo"},
        "spec": {"hosts": ["reviews"], "http": [{"timeout": "10 seconds", "route": [{"destination": {"host": "reviews"}}]}]}
    }))
    .unwrap();
    let refused = Api::<DynamicObject>::namespaced_with(admin.clone(), "bookinfo", &vs_ar)
        .create(&PostParams::default(), &bad)
        .await
        .unwrap_err()
        .to_string();
    assert!(refused.contains("spec.http[0].timeout"), "{refused}");

    // meshd as the `meshd` user: only the install's rules.
    let mut config = MeshdConfig::kubernetes(KubeSettings {
        kubeconfig: Some(cluster.kubeconfig(MESHD)),
    });
    config.kube_lease = Duration::from_secs(2);
    config.kube_sync_timeout = Duration::from_secs(20);
    let meshd = Meshd::start(config)
        .await
        .expect("meshd starts on the install's RBAC");
    let store = meshd.kube_store().unwrap().clone();
    assert!(
        store.synced(),
        "every kind listed: missing {:?}",
        store.unsynced()
    );
    assert!(meshd.generation().is_some());

    let secret = Api::<Secret>::namespaced(admin.clone(), &opts.namespace)
        .get("istio-ca-secret")
        .await
        .unwrap();
    assert!(secret.data.unwrap().contains_key("ca-key.pem"));
    eventually("meshd leads", || async { meshd.is_leader() }).await;
    let root = meshd.root_cert_pem();
    eventually("istio-ca-root-cert is published", || async {
        Api::<ConfigMap>::namespaced(admin.clone(), "bookinfo")
            .get_opt("istio-ca-root-cert")
            .await
            .unwrap()
            .and_then(|c| c.data)
            .and_then(|d| d.get("root-cert.pem").cloned())
            .as_deref()
            == Some(root.as_str())
    })
    .await;
    let ap_ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("security.istio.io", "v1", "AuthorizationPolicy"),
        "authorizationpolicies",
    );
    let policies = Api::<DynamicObject>::namespaced_with(admin.clone(), "bookinfo", &ap_ar);
    eventually("the analysis is in the policy's status", || async {
        policies.get("allow-all").await.unwrap().data["status"]["validationMessages"]
            .as_array()
            .is_some_and(|m| !m.is_empty())
    })
    .await;
    meshd.shutdown().await;
}
