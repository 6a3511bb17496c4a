//! Stock proxyless gRPC (Python `grpcio`) routed by meshd from a real
//! kube-apiserver exactly as from files: the same Service, Pods,
//! EndpointSlice, DestinationRule and VirtualService, once applied with the
//! Kubernetes API and once written as YAML files, give the same calls the
//! same backends, and an EndpointSlice change moves the stock client.
//!
//! Runs in its own network namespace (root needed): pods have 10.244.x.y
//! addresses, which EndpointSlices accept where loopback is refused.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::Duration;

use mesh_control::kube::KubeSettings;
use mesh_control::{Meshd, MeshdConfig, MeshdHandle};
use mesh_interop::backend::{Backend, Behavior};
use mesh_interop::clients::{write_bootstrap, Report};
use mesh_interop::{Lang, Tool};
use mesh_test_support::kube::netns::{self, pod_ip};
use mesh_test_support::kube::{istio_crds, KubeCluster, TestPod, ADMIN};

const NS: &str = "grpc";
const TARGET: &str = "xds:///echo.grpc.svc.cluster.local:7070";

/// The echo Service, its EndpointSlice (v2 ready or not), a DestinationRule
/// with subsets and a VirtualService: `x-canary: yes` to v2, the rest 100%
/// to v1 (deterministic, so two control planes can be compared call by
/// call).
fn config(v2_ready: bool) -> String {
    let (v1, v2) = (pod_ip(21), pod_ip(22));
    format!(
        r#"apiVersion: v1
kind: Service
metadata: {{name: echo, namespace: {NS}}}
spec:
  selector: {{app: echo}}
  ports: [{{name: grpc, port: 7070, targetPort: 7070, appProtocol: grpc}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: echo-x7k2p
  namespace: {NS}
  labels: {{kubernetes.io/service-name: echo}}
addressType: IPv4
ports: [{{name: grpc, port: 7070, protocol: TCP, appProtocol: grpc}}]
endpoints:
- addresses: ["{v1}"]
  conditions: {{ready: true}}
  targetRef: {{kind: Pod, name: echo-v1, namespace: {NS}}}
- addresses: ["{v2}"]
  conditions: {{ready: {v2_ready}}}
  targetRef: {{kind: Pod, name: echo-v2, namespace: {NS}}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: echo, namespace: {NS}}}
spec:
  host: echo
  subsets:
  - {{name: v1, labels: {{version: v1}}}}
  - {{name: v2, labels: {{version: v2}}}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: echo, namespace: {NS}}}
spec:
  hosts: [echo]
  http:
  - match: [{{headers: {{x-canary: {{exact: "yes"}}}}}}]
    route: [{{destination: {{host: echo, subset: v2}}}}]
  - route: [{{destination: {{host: echo, subset: v1}}}}]
"#
    )
}

/// The Pods as the API returns them, with their status, for the file
/// source (the Kubernetes source gets them from `create_pod`).
fn pods_yaml() -> String {
    [(21, "v1"), (22, "v2")]
        .iter()
        .map(|(n, v)| {
            format!(
                "apiVersion: v1\nkind: Pod\nmetadata: {{name: echo-{v}, namespace: {NS}, labels: {{app: echo, version: {v}}}}}\nspec: {{containers: [{{name: echo}}]}}\nstatus: {{phase: Running, podIP: \"{}\", conditions: [{{type: Ready, status: \"True\"}}]}}\n---\n",
                pod_ip(*n)
            )
        })
        .collect()
}

async fn run(meshd: &MeshdHandle, dir: &std::path::Path, extra: &[&str]) -> Report {
    let tool = Tool::find(Lang::Python).unwrap();
    let bootstrap = write_bootstrap(
        dir,
        "client",
        meshd.xds_addr(),
        &["--namespace", NS, "--workload-name", "client"],
    )
    .unwrap();
    let mut args = vec![
        "--target".to_string(),
        TARGET.to_string(),
        "--count".to_string(),
        "20".to_string(),
    ];
    args.extend(extra.iter().map(ToString::to_string));
    tool.run_client(&bootstrap, &args, Duration::from_secs(60))
        .await
        .unwrap()
}

fn in_private_netns<F: std::future::Future<Output = ()>>(test: impl FnOnce() -> F) {
    netns::enter_private();
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(test());
}

#[test]
fn stock_grpc_is_routed_from_the_api_as_from_files() {
    in_private_netns(|| async {
        let scratch = tempfile::tempdir().unwrap();
        let _v1 = Backend::start_on("v1", Behavior::Ok, SocketAddr::new(pod_ip(21), 7070))
            .await
            .unwrap();
        let _v2 = Backend::start_on("v2", Behavior::Ok, SocketAddr::new(pod_ip(22), 7070))
            .await
            .unwrap();

        // The file source: the same objects as YAML.
        let files = tempfile::tempdir().unwrap();
        std::fs::write(
            files.path().join("echo.yaml"),
            format!("{}{}", pods_yaml(), config(true)),
        )
        .unwrap();
        let from_files = Meshd::start(MeshdConfig::new(files.path())).await.unwrap();

        // The Kubernetes source.
        let cluster = KubeCluster::start().await;
        cluster.apply_yaml(&istio_crds()).await;
        cluster.create_namespace("istio-system").await;
        cluster.create_namespace(NS).await;
        for (n, v) in [(21, "v1"), (22, "v2")] {
            cluster
                .create_pod(
                    &TestPod::new(NS, &format!("echo-{v}"), pod_ip(n))
                        .label("app", "echo")
                        .label("version", v),
                )
                .await;
        }
        cluster.apply_yaml(&config(true)).await;
        let mut settings = MeshdConfig::kubernetes(KubeSettings {
            kubeconfig: Some(cluster.kubeconfig(ADMIN)),
        });
        settings.webhook_addr = None;
        let from_kube = Meshd::start(settings).await.unwrap();
        assert_eq!(
            from_kube.generation(),
            Some(1),
            "the first generation waits for the first list"
        );

        for (what, extra) in [
            ("default route", &[][..]),
            ("canary", &["--header", "x-canary=yes"][..]),
        ] {
            let files_report = run(&from_files, scratch.path(), extra).await;
            let kube_report = run(&from_kube, scratch.path(), extra).await;
            assert_eq!(kube_report.code("OK"), 20, "{what}: {kube_report}");
            assert_eq!(
                kube_report.backends(),
                files_report.backends(),
                "{what}: the API and the files route alike"
            );
        }
        let canary = run(&from_kube, scratch.path(), &["--header", "x-canary=yes"]).await;
        assert_eq!(canary.backend("v2"), 20, "{canary}");

        // v2 turns not ready in its EndpointSlice: the canary route has no
        // endpoint left, and the stock client sees UNAVAILABLE.
        cluster.apply_yaml(&config(false)).await;
        let mut report = None;
        for _ in 0..50 {
            let r = run(&from_kube, scratch.path(), &["--header", "x-canary=yes"]).await;
            if r.backend("v2") == 0 {
                report = Some(r);
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let r = report.expect("the slice change reaches the stock client");
        assert_eq!(r.code("OK"), 0, "{r}");
        from_kube.shutdown().await;
        from_files.shutdown().await;
    });
}
