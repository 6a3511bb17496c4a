//! meshd's injection webhook (`POST /inject`) on a real kube-apiserver and
//! etcd (built by `scripts/kube-peers.sh`): with a
//! MutatingWebhookConfiguration pointing at meshd, a pod created in a
//! namespace labelled `istio-injection=enabled` is stored with `mesh-init`
//! before the native sidecar `mesh-shim`, the token and root certificate
//! volumes, the mesh labels and the status annotation; a `grpc-agent` pod
//! gets the agent and `GRPC_XDS_BOOTSTRAP`; an opted-out pod and a pod in
//! a namespace nobody enabled are stored as sent. The API server's own
//! validation of the patched pods is part of the test.
//!
//! No kubelet runs, so the pods are only stored. Root is needed (a private
//! network namespace per test).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::kube::{eventually, in_private_netns, meshd};

use base64::prelude::{Engine, BASE64_STANDARD};
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{Api, PostParams};
use mesh_control::kube::inject::{namespace_labels, STATUS_ANNOTATION};
use mesh_test_support::kube::KubeCluster;
use serde_json::{json, Value};

const NS: &str = "shop";
const PLAIN_NS: &str = "plain";

async fn namespace(cluster: &KubeCluster, name: &str, labels: Value) {
    let ns: Namespace = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": name, "labels": labels},
    }))
    .unwrap();
    Api::<Namespace>::all(cluster.client())
        .create(&PostParams::default(), &ns)
        .await
        .unwrap();
}

/// A pod as a ReplicaSet would create it (no node: it is only stored).
fn pod(name: &str, labels: Value, annotations: Value) -> Pod {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": labels, "annotations": annotations},
        "spec": {"containers": [
            {"name": "app", "image": "mesh-test/none", "ports": [{"containerPort": 9080, "name": "http"}]},
            {"name": "sidekick", "image": "mesh-test/none"}
        ]}
    }))
    .unwrap()
}

async fn create(cluster: &KubeCluster, ns: &str, pod: &Pod) -> Value {
    let stored = Api::<Pod>::namespaced(cluster.client(), ns)
        .create(&PostParams::default(), pod)
        .await
        .unwrap_or_else(|e| panic!("creating {:?}: {e}", pod.metadata.name));
    serde_json::to_value(stored).unwrap()
}

fn names(list: &Value) -> Vec<&str> {
    list.as_array()
        .map(|a| a.iter().map(|c| c["name"].as_str().unwrap()).collect())
        .unwrap_or_default()
}

fn injected(p: &Value) -> bool {
    p["metadata"]["annotations"]
        .get(STATUS_ANNOTATION)
        .is_some()
}

#[test]
fn pods_join_the_mesh_by_namespace_label_and_annotation() {
    in_private_netns(|| async {
        let cluster = KubeCluster::start().await;
        namespace(&cluster, NS, json!({"istio-injection": "enabled"})).await;
        namespace(&cluster, PLAIN_NS, json!({})).await;
        let meshd = meshd(&cluster).await;
        let webhook = meshd.webhook_addr().unwrap();
        let ca_bundle = BASE64_STANDARD.encode(meshd.root_cert_pem());
        cluster
            .apply_yaml(&format!(
                r#"apiVersion: admissionregistration.k8s.io/v1
kind: MutatingWebhookConfiguration
metadata: {{name: meshd-injector}}
webhooks:
- name: sidecar-injector.istio.io
  clientConfig:
    url: https://{webhook}/inject
    caBundle: {ca_bundle}
  rules:
  - apiGroups: [""]
    apiVersions: [v1]
    operations: [CREATE]
    resources: [pods]
  reinvocationPolicy: Never
  sideEffects: None
  failurePolicy: Fail
  admissionReviewVersions: [v1]
"#
            ))
            .await;

        // meshd reads the namespace's label from the cluster.
        eventually("meshd sees the namespace label", || async {
            namespace_labels(meshd.controller(), NS)
                .is_some_and(|l| l.get("istio-injection").map(String::as_str) == Some("enabled"))
        })
        .await;
        // The webhook configuration takes a moment to reach the API
        // server's admission chain: probe pods until one is injected.
        let mut n = 0;
        eventually("the API server asks meshd", || {
            n += 1;
            let probe = pod(&format!("probe-{n}"), json!({}), json!({}));
            let cluster = &cluster;
            async move { injected(&create(cluster, NS, &probe).await) }
        })
        .await;

        // The namespace label: the sidecar template, native sidecar.
        let stored = create(
            &cluster,
            NS,
            &pod(
                "reviews",
                json!({"app": "reviews", "version": "v1"}),
                json!({"traffic.sidecar.istio.io/excludeOutboundPorts": "3306"}),
            ),
        )
        .await;
        let spec = &stored["spec"];
        assert_eq!(
            names(&spec["initContainers"]),
            ["mesh-init", "mesh-shim"],
            "{stored:#}"
        );
        assert_eq!(names(&spec["containers"]), ["app", "sidekick"]);
        let init = &spec["initContainers"][0];
        assert!(init.get("restartPolicy").is_none());
        let init_args: Vec<&str> = init["args"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap())
            .collect();
        assert_eq!(init_args[0], "iptables");
        let i = init_args
            .iter()
            .position(|a| *a == "--exclude-outbound-ports")
            .unwrap();
        assert_eq!(init_args[i + 1], "3306");
        assert_eq!(
            init["securityContext"]["capabilities"]["add"],
            json!(["NET_ADMIN", "NET_RAW"])
        );
        let shim = &spec["initContainers"][1];
        assert_eq!(shim["restartPolicy"], "Always");
        assert_eq!(shim["securityContext"]["runAsUser"], 1337);
        assert_eq!(shim["readinessProbe"]["httpGet"]["path"], "/healthz/ready");
        let volumes = &spec["volumes"];
        let token = volumes
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == "istio-token")
            .unwrap();
        assert_eq!(
            token["projected"]["sources"][0]["serviceAccountToken"]["audience"],
            "istio-ca"
        );
        assert!(names(volumes).contains(&"istiod-ca-cert"));
        let labels = &stored["metadata"]["labels"];
        assert_eq!(labels["security.istio.io/tlsMode"], "istio");
        assert_eq!(labels["service.istio.io/canonical-name"], "reviews");
        assert_eq!(labels["service.istio.io/canonical-revision"], "v1");
        let status: Value = serde_json::from_str(
            stored["metadata"]["annotations"][STATUS_ANNOTATION]
                .as_str()
                .unwrap(),
        )
        .unwrap();
        assert_eq!(status["initContainers"], json!(["mesh-init", "mesh-shim"]));

        // grpc-agent by annotation, in a namespace nobody enabled.
        let stored = create(
            &cluster,
            PLAIN_NS,
            &pod(
                "greeter",
                json!({"app": "greeter", "sidecar.istio.io/inject": "true"}),
                json!({"inject.istio.io/templates": "grpc-agent"}),
            ),
        )
        .await;
        let spec = &stored["spec"];
        assert_eq!(names(&spec["initContainers"]), ["mesh-agent"]);
        assert_eq!(spec["initContainers"][0]["restartPolicy"], "Always");
        for c in spec["containers"].as_array().unwrap() {
            assert!(
                c["env"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|e| e["name"] == "GRPC_XDS_BOOTSTRAP"
                        && e["value"] == "/etc/istio/proxy/grpc-bootstrap.json"),
                "{c:#}"
            );
        }

        // Opted out, and not asked for: stored exactly as sent.
        for (ns, p) in [
            (
                NS,
                pod(
                    "legacy",
                    json!({"app": "legacy", "sidecar.istio.io/inject": "false"}),
                    json!({}),
                ),
            ),
            (
                PLAIN_NS,
                pod("bystander", json!({"app": "bystander"}), json!({})),
            ),
        ] {
            let stored = create(&cluster, ns, &p).await;
            assert!(!injected(&stored), "{stored:#}");
            assert!(stored["spec"].get("initContainers").is_none());
            assert!(stored["spec"].get("volumes").is_none());
            assert!(stored["metadata"]["labels"]
                .get("security.istio.io/tlsMode")
                .is_none());
        }
        meshd.shutdown().await;
    });
}
