//! The Kubernetes harness (`mesh_test_support::kube`) against the real
//! kube-apiserver and etcd built by `scripts/kube-peers.sh`: objects written
//! as a kubelet and controllers would are read back with kube-rs, the API
//! server restarts under the same clients, a workload address from the
//! private network namespace is reachable, the non-admin `meshd` user has
//! only what RBAC grants it, and a compacted etcd history answers 410 Gone
//! when the watch cache is off.
//!
//! Each test enters its own network namespace (needs root) and fails,
//! never skips, when the binaries or the privileges are missing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::future::Future;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Node, Pod, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, DynamicObject, ListParams, Patch, PatchParams, WatchEvent, WatchParams};
use kube::core::{ApiResource, GroupVersionKind};
use mesh_test_support::kube::netns::{self, pod_ip};
use mesh_test_support::kube::{KubeCluster, KubeClusterOptions, SliceEndpoint, TestPod, MESHD};

/// Enters a private network namespace, then runs `test` on a runtime whose
/// threads start inside it.
fn in_private_netns<F: Future<Output = ()>>(test: impl FnOnce() -> F) {
    netns::enter_private();
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(test());
}

/// Bounds a wait on the API server.
async fn bounded<T>(what: &str, f: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(10), f)
        .await
        .unwrap_or_else(|_| panic!("{what}: no answer within 10s"))
}

const SERVICE_AND_CRD: &str = r#"
apiVersion: v1
kind: Service
metadata:
  name: reviews
  namespace: harness
  labels: {app: reviews}
spec:
  selector: {app: reviews}
  ports:
  - {name: http, port: 9080, targetPort: 9080}
---
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.harness.mesh.test
spec:
  group: harness.mesh.test
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget}
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        x-kubernetes-preserve-unknown-fields: true
---
apiVersion: harness.mesh.test/v1
kind: Widget
metadata:
  name: w1
  namespace: harness
spec:
  size: 3
"#;

#[test]
fn objects_read_back_and_the_apiserver_restarts_under_the_same_clients() {
    in_private_netns(|| async {
        let t0 = Instant::now();
        let mut cluster = KubeCluster::start().await;
        eprintln!("cluster started in {:.2}s", t0.elapsed().as_secs_f64());
        let client = cluster.client();

        cluster.create_namespace("harness").await;
        cluster
            .create_node(
                "node-a",
                &[
                    ("topology.kubernetes.io/region", "region-1"),
                    ("topology.kubernetes.io/zone", "zone-a"),
                ],
            )
            .await;
        // A core kind, a CRD and its kind in one stream: the Widget only
        // resolves once the CRD is Established.
        let applied = cluster.apply_yaml(SERVICE_AND_CRD).await;
        assert_eq!(applied.len(), 3);
        cluster
            .create_pod(
                &TestPod::new("harness", "reviews-1", pod_ip(5))
                    .label("app", "reviews")
                    .service_account("reviews")
                    .node("node-a"),
            )
            .await;
        cluster
            .create_endpoint_slice(
                "harness",
                "reviews",
                "reviews-abc",
                &[SliceEndpoint::new(pod_ip(5))
                    .pod("reviews-1")
                    .node("node-a")
                    .zone("zone-a")],
                &[("http", 9080)],
            )
            .await;

        // Read back with plain kube-rs.
        let node = Api::<Node>::all(client.clone())
            .get("node-a")
            .await
            .unwrap();
        let labels = node.metadata.labels.unwrap();
        assert_eq!(labels["topology.kubernetes.io/zone"], "zone-a");
        assert_eq!(labels["topology.kubernetes.io/region"], "region-1");

        let services = Api::<Service>::namespaced(client.clone(), "harness")
            .list(&ListParams::default())
            .await
            .unwrap();
        assert_eq!(services.items.len(), 1);
        let spec = services.items[0].spec.clone().unwrap();
        assert!(spec.cluster_ip.unwrap().starts_with("10.96."));
        assert_eq!(spec.ports.unwrap()[0].port, 9080);

        let pods = Api::<Pod>::namespaced(client.clone(), "harness");
        let pod = pods.get("reviews-1").await.unwrap();
        let (spec, status) = (pod.spec.unwrap(), pod.status.unwrap());
        assert_eq!(spec.node_name.as_deref(), Some("node-a"));
        assert_eq!(spec.service_account_name.as_deref(), Some("reviews"));
        assert_eq!(status.phase.as_deref(), Some("Running"));
        assert_eq!(status.pod_ip.as_deref(), Some("10.244.0.5"));
        assert_eq!(status.pod_ips.unwrap()[0].ip, "10.244.0.5");
        let ready = |p: &Pod| {
            p.status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
                .map(|c| c.status.clone())
        };
        assert_eq!(
            ready(&pods.get("reviews-1").await.unwrap()).as_deref(),
            Some("True")
        );
        cluster.set_pod_ready("harness", "reviews-1", false).await;
        assert_eq!(
            ready(&pods.get("reviews-1").await.unwrap()).as_deref(),
            Some("False")
        );

        let slices = Api::<EndpointSlice>::namespaced(client.clone(), "harness")
            .list(&ListParams::default().labels("kubernetes.io/service-name=reviews"))
            .await
            .unwrap();
        assert_eq!(slices.items.len(), 1);
        let endpoint = &slices.items[0].endpoints.as_ref().unwrap()[0];
        assert_eq!(endpoint.addresses, ["10.244.0.5"]);
        assert_eq!(endpoint.zone.as_deref(), Some("zone-a"));
        assert_eq!(endpoint.node_name.as_deref(), Some("node-a"));
        assert_eq!(
            endpoint.target_ref.as_ref().unwrap().name.as_deref(),
            Some("reviews-1")
        );
        assert_eq!(slices.items[0].ports.as_ref().unwrap()[0].port, Some(9080));

        let widget =
            ApiResource::from_gvk(&GroupVersionKind::gvk("harness.mesh.test", "v1", "Widget"));
        let w1 = Api::<DynamicObject>::namespaced_with(client.clone(), "harness", &widget)
            .get("w1")
            .await
            .unwrap();
        assert_eq!(w1.data["spec"]["size"], 3);

        // The slice's address is a real, reachable one in this namespace.
        let workload = tokio::net::TcpListener::bind((pod_ip(5), 9080))
            .await
            .unwrap();
        let connect = tokio::net::TcpStream::connect((pod_ip(5), 9080));
        let (accepted, connected) = bounded("connecting to 10.244.0.5:9080", async {
            tokio::join!(workload.accept(), connect)
        })
        .await;
        accepted.unwrap();
        connected.unwrap();

        // What meshd will do: load the kubeconfig file, as another process.
        let path = cluster.kubeconfig(MESHD);
        let kubeconfig = kube::config::Kubeconfig::read_from(&path).unwrap();
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
            .await
            .unwrap();
        let from_file = kube::Client::try_from(config).unwrap();
        let version = bounded("GET /version", from_file.apiserver_version())
            .await
            .unwrap();
        assert_eq!(version.git_version, "v1.37.2");

        // The API server goes away and comes back on the same port; the
        // same client works again.
        let t = Instant::now();
        cluster.stop_apiserver().await;
        eprintln!(
            "kube-apiserver stopped in {:.2}s",
            t.elapsed().as_secs_f64()
        );
        let down = bounded(
            "listing Pods while the API server is down",
            pods.list(&ListParams::default()),
        )
        .await;
        assert!(
            down.is_err(),
            "a list succeeded with the API server stopped"
        );
        let t = Instant::now();
        cluster.start_apiserver().await;
        eprintln!(
            "kube-apiserver restarted in {:.2}s",
            t.elapsed().as_secs_f64()
        );
        let listed = bounded(
            "listing Pods after the restart",
            pods.list(&ListParams::default()),
        )
        .await
        .unwrap();
        assert_eq!(listed.items.len(), 1);

        // A Pod with a node is gone at once (gracePeriodSeconds=0).
        cluster.delete_pod("harness", "reviews-1").await;
        assert!(pods.get_opt("reviews-1").await.unwrap().is_none());
    });
}

const MESHD_READS_SECRETS: &str = r#"
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: meshd-secrets}
rules:
- apiGroups: [""]
  resources: [secrets]
  verbs: [get, list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: meshd-secrets}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: meshd-secrets}
subjects:
- {apiGroup: rbac.authorization.k8s.io, kind: User, name: meshd}
"#;

#[test]
fn meshd_has_only_what_rbac_grants_and_compaction_answers_410_without_watch_cache() {
    in_private_netns(|| async {
        let cluster = KubeCluster::start_with(KubeClusterOptions {
            watch_cache: false,
            ..KubeClusterOptions::default()
        })
        .await;

        // meshd: 403 on secrets until a ClusterRole is bound to it.
        let secrets = Api::<Secret>::all(cluster.client_as(MESHD));
        match bounded("meshd lists secrets", secrets.list(&ListParams::default())).await {
            Err(kube::Error::Api(status)) => assert_eq!(status.code, 403, "{status:?}"),
            other => panic!("meshd listed secrets without RBAC: {other:?}"),
        }
        cluster.apply_yaml(MESHD_READS_SECRETS).await;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match bounded("meshd lists secrets", secrets.list(&ListParams::default())).await {
                Ok(_) => break,
                Err(e) => assert!(
                    Instant::now() < deadline,
                    "meshd still cannot list secrets 10s after the binding: {e}"
                ),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // ... and still nothing else.
        let configmaps = Api::<ConfigMap>::all(cluster.client_as(MESHD));
        match bounded(
            "meshd lists configmaps",
            configmaps.list(&ListParams::default()),
        )
        .await
        {
            Err(kube::Error::Api(status)) => assert_eq!(status.code, 403, "{status:?}"),
            other => panic!("meshd listed configmaps without RBAC: {other:?}"),
        }

        // A watch from a compacted resourceVersion: 410 Gone.
        cluster.create_namespace("compact").await;
        let cms = Api::<ConfigMap>::namespaced(cluster.client(), "compact");
        let apply = |n: u32| {
            let cm = serde_json::json!({
                "apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "c1"}, "data": {"n": n.to_string()},
            });
            let cms = cms.clone();
            async move {
                cms.patch(
                    "c1",
                    &PatchParams::apply("harness-test").force(),
                    &Patch::Apply(&cm),
                )
                .await
                .unwrap()
            }
        };
        let first = apply(0).await.metadata.resource_version.unwrap();
        for n in 1..4 {
            apply(n).await;
        }
        let revision = cluster.compact_etcd().await;
        assert!(
            revision > first.parse::<i64>().unwrap(),
            "{revision} vs {first}"
        );
        let gone = bounded("watching from a compacted resourceVersion", async {
            match cms.watch(&WatchParams::default(), &first).await {
                Err(kube::Error::Api(status)) => status.code,
                Ok(stream) => match Box::pin(stream).next().await {
                    Some(Ok(WatchEvent::Error(status))) => status.code,
                    Some(Err(kube::Error::Api(status))) => status.code,
                    other => panic!("watch from compacted {first}: {other:?}"),
                },
                Err(e) => panic!("watch from compacted {first}: {e}"),
            }
        })
        .await;
        assert_eq!(gone, 410);
    });
}
